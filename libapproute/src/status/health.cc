#include "status/health.h"

#include <algorithm>

namespace approute::internal {

void HealthMonitor::UpdateEwma(std::atomic<double>& v, double sample, double alpha) {
  double cur = v.load(std::memory_order_relaxed);
  double next = cur == 0 ? sample : alpha * sample + (1 - alpha) * cur;
  v.store(next, std::memory_order_relaxed);
}

bool HealthMonitor::ProbeFailed(int code) {
  return code == 0 || code == 408 || (code >= 500 && code < 600 && code != 503);
}

void HealthMonitor::MarkBusy(NodeHot& n, int64_t retry_after_ms, const HealthConfig& h, int64_t now) {
  const int64_t span = retry_after_ms < 0 ? h.busy_for_ms : std::min(retry_after_ms, h.busy_max_ms);
  if (span <= 0) return;
  n.busy_until_ms.store(now + span, std::memory_order_relaxed);
  n.shed.fetch_or(kShedBusy, std::memory_order_relaxed);
}

bool HealthMonitor::Busy(NodeHot& n, int64_t now) {
  if (n.busy_until_ms.load(std::memory_order_relaxed) > now) return true;
  n.shed.fetch_and(static_cast<uint16_t>(~kShedBusy), std::memory_order_relaxed);
  // A MarkBusy between the load and the clear: keep its bit.
  if (n.busy_until_ms.load(std::memory_order_relaxed) > now) {
    n.shed.fetch_or(kShedBusy, std::memory_order_relaxed);
    return true;
  }
  return false;
}

void HealthMonitor::OnProbe(uint32_t slot, int code, double rtt_ms, int64_t retry_after_ms, const HealthConfig& h,
                            int64_t now) {
  NodeRecord& n = region_.node(slot);
  NodeHot& hot = region_.hot(slot);
  if (code == 503) MarkBusy(hot, retry_after_ms, h, now);
  if (code >= 200 && code < 300) ClearBusy(hot);  // taking calls again: at once, no slow start
  if (!ProbeFailed(code)) {
    n.probe_failures.store(0, std::memory_order_relaxed);
    int32_t oks = n.probe_successes.fetch_add(1, std::memory_order_relaxed) + 1;
    if (oks >= h.probe_up_after && n.report_down.load(std::memory_order_relaxed) == 0) {
      uint32_t was = hot.health.exchange(static_cast<uint32_t>(Health::kUp), std::memory_order_relaxed);
      if (was != static_cast<uint32_t>(Health::kUp)) hot.up_since_ms.store(now, std::memory_order_relaxed);
    }
    UpdateEwma(n.latency_ewma_ms, rtt_ms, h.latency_ewma_alpha);
  } else {
    n.probe_successes.store(0, std::memory_order_relaxed);
    int32_t fails = n.probe_failures.fetch_add(1, std::memory_order_relaxed) + 1;
    if (fails >= h.probe_down_after) hot.health.store(static_cast<uint32_t>(Health::kDown), std::memory_order_relaxed);
  }
}

void HealthMonitor::OnReportedHealth(NodeRecord& n, NodeHot& hot, bool down, int64_t now) {
  const uint32_t was = n.report_down.exchange(down ? 1 : 0, std::memory_order_relaxed);
  if (down) {
    hot.health.store(static_cast<uint32_t>(Health::kDown), std::memory_order_relaxed);
  } else if (was != 0 && n.probe_failures.load(std::memory_order_relaxed) == 0) {
    hot.health.store(static_cast<uint32_t>(Health::kUp), std::memory_order_relaxed);
    hot.up_since_ms.store(now, std::memory_order_relaxed);
  }
}

bool HealthMonitor::Ejected(NodeHot& n, int64_t now) {
  int64_t until = n.ejected_until_ms.load(std::memory_order_relaxed);
  if (until == 0) return false;
  if (until > now) return true;
  if (n.ejected_until_ms.compare_exchange_strong(until, 0, std::memory_order_relaxed)) {
    n.up_since_ms.store(now, std::memory_order_relaxed);
  }
  return false;
}

void HealthMonitor::OnResult(uint32_t slot, const Snapshot& snap, const std::vector<size_t>& pool, int code,
                             double latency_ms, int64_t retry_after_ms, const HealthConfig& h, int64_t now) {
  NodeRecord& n = region_.node(slot);
  NodeHot& hot = region_.hot(slot);
  if (code == 503) MarkBusy(hot, retry_after_ms, h, now);
  bool failed =
      std::find(h.outlier_failure_codes.begin(), h.outlier_failure_codes.end(), code) != h.outlier_failure_codes.end();
  double a = h.latency_ewma_alpha;
  double err = n.error_ewma.load(std::memory_order_relaxed);
  n.error_ewma.store(a * (failed ? 1.0 : 0.0) + (1 - a) * err, std::memory_order_relaxed);
  if (!failed) {
    n.consecutive_failures.store(0, std::memory_order_relaxed);
    if (code > 0 && latency_ms > 0) UpdateEwma(n.latency_ewma_ms, latency_ms, a);
    return;
  }
  int32_t fails = n.consecutive_failures.fetch_add(1, std::memory_order_relaxed) + 1;
  if (fails < h.outlier_consecutive_failures || Ejected(hot, now)) return;
  // Eject, unless that would take out more of the pool than allowed.
  RegistryLock g(region_.header());
  size_t total = 0, ejected = 0;
  for (size_t i : pool) {
    const NodeHot& o = region_.hot(snap.nodes[i].slot);
    if (o.epoch.load(std::memory_order_relaxed) != snap.nodes[i].epoch) continue;
    ++total;
    if (o.ejected_until_ms.load(std::memory_order_relaxed) > now) ++ejected;
  }
  if ((ejected + 1) * 100 > static_cast<size_t>(h.outlier_max_ejected_percent) * total) return;
  int32_t times = n.ejections.fetch_add(1, std::memory_order_relaxed) + 1;
  int64_t span = std::min(h.outlier_base_ejection_ms * times, h.outlier_max_ejection_ms);
  hot.ejected_until_ms.store(now + span, std::memory_order_relaxed);
  n.consecutive_failures.store(0, std::memory_order_relaxed);
}

bool HealthMonitor::SkipForSlowStart(const NodeHot& n, const HealthConfig& h, int64_t now, double uniform) {
  if (h.slow_start_ms <= 0) return false;
  int64_t up = n.up_since_ms.load(std::memory_order_relaxed);
  if (up <= 0 || now - up >= h.slow_start_ms) return false;
  double share = std::max(0.05, static_cast<double>(now - up) / static_cast<double>(h.slow_start_ms));
  return uniform >= share;
}

bool HealthMonitor::Panic(const Snapshot& snap, const std::vector<size_t>& pool, const HealthConfig& h,
                          int64_t now) const {
  if (h.panic_threshold <= 0) return false;
  size_t total = 0, healthy = 0;
  for (size_t i : pool) {
    NodeHot& n = region_.hot(snap.nodes[i].slot);
    if (n.epoch.load(std::memory_order_relaxed) != snap.nodes[i].epoch) continue;
    ++total;
    if (n.health.load(std::memory_order_relaxed) != static_cast<uint32_t>(Health::kDown) && !Ejected(n, now)) ++healthy;
  }
  return total > 0 && healthy * 100 < static_cast<size_t>(h.panic_threshold) * total;
}

}  // namespace approute::internal
