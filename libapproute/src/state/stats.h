// stats.h — the router's Prometheus-style counters in the state region:
// decisions by app and reason, retries by app and SIP code, strict keys
// refused by app and reason, new keys turned away by headroom, and a sampled
// histogram of route() latency. Every process adds to the same counters, so
// `approute metrics` shows the whole proxy, not one worker.
//
// Owns: AppSlot::counters and Header::route_latency.
// Locking: lock-free (relaxed atomics); a retry code takes a free slot of
// its app with one compare-and-swap.
// Crash: each update is one atomic add; a process killed between two loses
// at most the one it had not made yet (counters are never repaired).
#ifndef APPROUTE_SRC_STATE_STATS_H_
#define APPROUTE_SRC_STATE_STATS_H_

#include <atomic>
#include <cstdint>
#include <string_view>

#include "approute/types.h"
#include "state/region.h"

namespace approute::internal {

inline constexpr std::string_view kReasonNames[kReasons] = {"affinity", "strategy", "retry",
                                                            "session",  "no_node",  "prefer"};
// Why a strict key's call was refused (Decision::reason), in AppCounters order.
inline constexpr std::string_view kKeyRefusalNames[kKeyRefusals] = {"key_full", "key_down", "key_draining",
                                                                    "key_disabled", "key_tried"};
// One route() in this many is timed (two clock reads cost about 5% of a route).
inline constexpr uint32_t kLatencySampleEvery = 16;

class RouterCounters {
 public:
  explicit RouterCounters(const Region& region) : region_(region) {}

  // Counts one decision of app slot `app` by its reason ("affinity", ...).
  void Decision(uint32_t app, std::string_view reason);
  // Counts one refusal of a strict key's call (reason one of kKeyRefusalNames).
  void KeyRefusal(uint32_t app, std::string_view reason);
  // Counts one call for a new key that found no node because affinity.headroom turned nodes away.
  void HeadroomRefusal(uint32_t app);
  // Counts one retry() of app slot `app` with SIP code `code`.
  void Retry(uint32_t app, int code);
  // Whether this route() call should be timed: about 1 in
  // kLatencySampleEvery of this process's calls. A load and a store, not a
  // read-modify-write (threads racing may skip a count: it only shifts which
  // call is timed) and no thread_local (a call in a shared object).
  bool Sample() {
    uint32_t n = sample_.load(std::memory_order_relaxed) + 1;
    sample_.store(n, std::memory_order_relaxed);
    return n % kLatencySampleEvery == 0;
  }
  void RouteLatency(int64_t ns);
  // Zeroes an app slot's counters (the slot is given to another app).
  static void Reset(AppCounters& c);
  // Fills stats.decisions, retries, key_refusals, headroom_refusals and route_seconds.
  void Fill(const std::vector<std::string>& app_names, RouterStats* stats) const;

 private:
  const Region& region_;
  std::atomic<uint32_t> sample_{0};
};

}  // namespace approute::internal

#endif  // APPROUTE_SRC_STATE_STATS_H_
