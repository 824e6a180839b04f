// cluster_breaker.h — the circuit breaker in front of Redis, shared by every
// process of this host through the region (Header::cluster), and the round
// trip figures it keeps.
//
// Closed: every call may use Redis. One failed round trip (a timeout or a
// lost connection) opens it for kOpenMs: the host's processes route on local
// state and pay nothing for Redis. When that time is up, exactly one caller
// (the one that wins a compare-and-swap, which also re-arms the open period)
// tries Redis again; success closes the breaker, failure keeps it open.
// So a call adds at most one timeout, and an outage costs the host one
// timeout per kOpenMs after it is detected.
//
// Clock: CLOCK_MONOTONIC (system-wide, so every process agrees).
// Thread-safety: lock-free atomics; any thread of any process.
#ifndef APPROUTE_SRC_PLACEMENT_CLUSTER_BREAKER_H_
#define APPROUTE_SRC_PLACEMENT_CLUSTER_BREAKER_H_

#include <time.h>

#include <bit>
#include <cstdint>

#include "state/region.h"

namespace approute::internal {

class ClusterBreaker {
 public:
  static constexpr int64_t kOpenMs = 1000;

  explicit ClusterBreaker(ClusterRecord& rec) : rec_(rec) {}

  static int64_t MonoMs() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return int64_t{ts.tv_sec} * 1000 + ts.tv_nsec / 1000000;
  }

  // Whether this caller may use Redis now.
  bool Allow() {
    int64_t until = rec_.open_until_ms.load(std::memory_order_acquire);
    if (until == 0) return true;
    int64_t now = MonoMs();
    if (now < until) return false;
    // Half-open: one trial per open period, host-wide.
    return rec_.open_until_ms.compare_exchange_strong(until, now + kOpenMs, std::memory_order_acq_rel);
  }
  bool open() const { return rec_.open_until_ms.load(std::memory_order_acquire) != 0; }

  void OnSuccess(int64_t rtt_us, int64_t wall_ms) {
    rec_.consecutive_failures.store(0, std::memory_order_relaxed);
    if (rec_.open_until_ms.load(std::memory_order_relaxed) != 0) rec_.open_until_ms.store(0, std::memory_order_release);
    rec_.round_trips.fetch_add(1, std::memory_order_relaxed);
    rec_.last_sync_ms.store(wall_ms, std::memory_order_relaxed);
    uint64_t v = rtt_us > 0 ? static_cast<uint64_t>(rtt_us) : 0;
    size_t b = std::min<size_t>(static_cast<size_t>(std::bit_width(v)), kRttBuckets - 1);
    rec_.rtt_us[b].fetch_add(1, std::memory_order_relaxed);
  }
  void OnFailure() {
    rec_.failures.fetch_add(1, std::memory_order_relaxed);
    rec_.consecutive_failures.fetch_add(1, std::memory_order_relaxed);
    rec_.open_until_ms.store(MonoMs() + kOpenMs, std::memory_order_release);
  }

  // Upper bound (microseconds) of the bucket holding quantile q of the good round trips; 0 = none yet.
  int64_t RttQuantileUs(double q) const {
    int64_t total = 0;
    for (const auto& b : rec_.rtt_us) total += b.load(std::memory_order_relaxed);
    if (total == 0) return 0;
    int64_t rank = static_cast<int64_t>(q * static_cast<double>(total - 1)) + 1, seen = 0;
    for (size_t i = 0; i < kRttBuckets; ++i) {
      seen += rec_.rtt_us[i].load(std::memory_order_relaxed);
      if (seen >= rank) return int64_t{1} << i;
    }
    return int64_t{1} << (kRttBuckets - 1);
  }

 private:
  ClusterRecord& rec_;
};

}  // namespace approute::internal

#endif  // APPROUTE_SRC_PLACEMENT_CLUSTER_BREAKER_H_
