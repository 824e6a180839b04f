// health.h — whether a node should take calls: active probes with
// hysteresis, passive results with outlier ejection (never more than a set
// share of a pool), slow start after a node comes back, and panic mode.
//
// Owns: the health fields of the node records (probe counters, outlier
// counters, latency and error EWMAs) and of their hot entries (health,
// ejection deadline, slow-start start).
// Locking: atomics only, except an ejection, which takes the registry mutex
// so two processes cannot both eject the last node a pool may lose.
// Crash: every field is a single atomic; a process killed between two
// updates leaves a figure one sample behind, nothing to repair.
#ifndef APPROUTE_SRC_STATUS_HEALTH_H_
#define APPROUTE_SRC_STATUS_HEALTH_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "approute/config.h"
#include "state/node_table.h"

namespace approute::internal {

class HealthMonitor {
 public:
  explicit HealthMonitor(const Region& region) : region_(region) {}

  // An active probe's result (code 0 = no answer): down_after failures in a
  // row mark the node down, up_after answers bring it back (and start its
  // slow start). Failures are no answer, 408 and 5xx other than 503. A 503
  // is an answer (alive) that makes the node busy (MarkBusy); a 2xx ends a
  // busy period at once. `retry_after_ms`: the answer's Retry-After, -1 = none.
  void OnProbe(uint32_t slot, int code, double rtt_ms, int64_t retry_after_ms, const HealthConfig& h, int64_t now);

  // True when `code` from a probe says the node is not there: no answer
  // (0), 408, or a 5xx other than 503.
  static bool ProbeFailed(int code);
  // Busy: alive but taking no new keys and no key-less calls. A 503 sets it
  // for `retry_after_ms` (cut to h.busy_max_ms), or h.busy_for_ms when the
  // answer had none (-1); a later busy period replaces it.
  static void MarkBusy(NodeHot& n, int64_t retry_after_ms, const HealthConfig& h, int64_t now);
  static void ClearBusy(NodeHot& n) { n.busy_until_ms.store(0, std::memory_order_relaxed); }
  // True while the node is busy. Called when NodeHot::shed has kShedBusy;
  // clears that bit once the period is over (and sets it back if a new one
  // began meanwhile).
  static bool Busy(NodeHot& n, int64_t now);
  // What the node's own report says of its service (status report field
  // "health"): down holds the node down whatever the probes say, until a
  // report says up again (or leaves the field out); the node then comes back
  // at once with a slow start, unless its latest probe failed, in which case
  // the probes bring it back (up_after successes).
  static void OnReportedHealth(NodeRecord& n, NodeHot& hot, bool down, int64_t now);
  // A passive result for the node in `slot`: a failure code counts towards
  // ejection, the latency and error figures are smoothed, a 503 makes the
  // node busy (MarkBusy, `retry_after_ms` as for OnProbe). `pool` is the
  // node's pool in `snap`.
  void OnResult(uint32_t slot, const Snapshot& snap, const std::vector<size_t>& pool, int code, double latency_ms,
                int64_t retry_after_ms, const HealthConfig& h, int64_t now);

  // True while outlier detection keeps the node out; the first check after
  // the ejection ends starts its slow start.
  static bool Ejected(NodeHot& n, int64_t now);
  // Slow start: a node that came back within the window is skipped with
  // probability 1 - (time since it came back) / window (kept at least 5%).
  // `uniform` is a number in [0, 1).
  static bool SkipForSlowStart(const NodeHot& n, const HealthConfig& h, int64_t now, double uniform);
  // Envoy's panic mode: true when fewer than panic_threshold % of the pool's
  // nodes are healthy; routing then ignores health.
  bool Panic(const Snapshot& snap, const std::vector<size_t>& pool, const HealthConfig& h, int64_t now) const;

  static void UpdateEwma(std::atomic<double>& v, double sample, double alpha);

 private:
  const Region& region_;
};

}  // namespace approute::internal

#endif  // APPROUTE_SRC_STATUS_HEALTH_H_
