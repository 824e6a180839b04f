// stats.h — the router's Prometheus-style counters in the state region:
// decisions by app and reason, retries by app and SIP code, and a sampled
// histogram of route() latency. Every process adds to the same counters, so
// `approute metrics` shows the whole proxy, not one worker.
//
// Owns: AppSlot::counters and Header::route_latency.
// Locking: lock-free (relaxed atomics); a retry code takes a free slot of
// its app with one compare-and-swap.
// Crash: each update is one atomic add; a process killed between two loses
// at most the one it had not made yet (counters are never repaired).
#ifndef APPROUTE_SRC_STATS_H_
#define APPROUTE_SRC_STATS_H_

#include <cstdint>
#include <string_view>

#include "approute/types.h"
#include "region.h"

namespace approute::internal {

inline constexpr std::string_view kReasonNames[kReasons] = {"affinity", "strategy", "retry", "session",
                                                            "no_node"};
// One route() in this many is timed (two clock reads cost about 5% of a route).
inline constexpr uint32_t kLatencySampleEvery = 16;

class RouterCounters {
 public:
  explicit RouterCounters(const Region& region) : region_(region) {}

  // Counts one decision of app slot `app` by its reason ("affinity", ...).
  void Decision(uint32_t app, std::string_view reason);
  // Counts one retry() of app slot `app` with SIP code `code`.
  void Retry(uint32_t app, int code);
  // Whether this route() call should be timed (1 in kLatencySampleEvery per thread).
  static bool Sample();
  void RouteLatency(int64_t ns);
  // Zeroes an app slot's counters (the slot is given to another app).
  static void Reset(AppCounters& c);
  // Fills stats.decisions, stats.retries and stats.route_seconds.
  void Fill(const std::vector<std::string>& app_names, RouterStats* stats) const;

 private:
  const Region& region_;
};

}  // namespace approute::internal

#endif  // APPROUTE_SRC_STATS_H_
