// usage.h — a node's own counts in admission: what a node reports it runs
// of a resource (a status report's load.<resource>, or Router::ReportLoad)
// bounds what approute still sends it.
//
// The rule: a node is full for a resource when
//   max(approute's count, reported + max(0, approute's count - base))
// reaches its capacity, where `base` is approute's count when the report was
// accepted (the deployment's count, with cluster:). The growth of approute's
// count since the report stands for "the calls approute placed there since":
// it needs no counter of its own on the reservation path, and as the node's
// report already includes approute's calls that were up when it was made,
// the calls of those that ended since only make the node's real count
// smaller. Calls that ended are never credited below the reported count
// (the growth is at least 0): the bound errs on the full side.
//
// The same rule as a capacity: approute's count must stay below
//   UsageCap = 0                                     if reported >= capacity
//              min(capacity, capacity - reported + base)  otherwise
// which stays constant until the next report, so a reservation's
// compare-and-swap (NodeTable::TryReserve, or the cluster's Lua script)
// checks it exactly as it checks a capacity.
//
// A report counts until NodeHot::usage_until_ms: its acceptance plus
// status.usage_max_age (Header::usage_max_age_ms); a node past its lease
// takes no calls at all anyway.
//
// Thread-safety: readers load atomics only (relaxed); a writer stores the
// counts before the mask bit, and holds the registry mutex.
#ifndef APPROUTE_SRC_STATE_USAGE_H_
#define APPROUTE_SRC_STATE_USAGE_H_

#include <algorithm>
#include <cstdint>

#include "state/region.h"

namespace approute::internal {

inline constexpr int64_t kDefaultUsageMaxAgeMs = 30'000;

// status.usage_max_age of the configuration applied last, in ms.
inline int64_t UsageMaxAgeMs(const Header& h) {
  const int64_t ms = h.usage_max_age_ms.load(std::memory_order_relaxed);
  return ms > 0 ? ms : kDefaultUsageMaxAgeMs;
}

// Whether the node's report of resource `res` counts at `now`.
inline bool UsageCounts(const NodeHot& n, uint32_t res, int64_t now) {
  return (n.usage_mask.load(std::memory_order_relaxed) & (1u << res)) != 0 &&
         now < n.usage_until_ms.load(std::memory_order_relaxed);
}

// The count admission compares with the capacity: approute's `count`, or the
// node's report grown by approute's calls since, whichever is higher.
inline int64_t UsageCount(const NodeHot& n, uint32_t res, int64_t count, int64_t now) {
  if (!UsageCounts(n, res, now)) return count;
  const int64_t reported = n.usage_reported[res].load(std::memory_order_relaxed);
  const int64_t base = n.usage_base[res].load(std::memory_order_relaxed);
  return std::max(count, reported + std::max<int64_t>(0, count - base));
}

// The capacity approute's own count must stay below for `capacity` (-1 =
// unlimited, which a report does not change) to hold with the report.
inline int64_t UsageCap(const NodeHot& n, uint32_t res, int64_t capacity, int64_t now) {
  if (capacity < 0 || !UsageCounts(n, res, now)) return capacity;
  const int64_t reported = n.usage_reported[res].load(std::memory_order_relaxed);
  const int64_t base = n.usage_base[res].load(std::memory_order_relaxed);
  if (reported >= capacity) return 0;
  return std::min(capacity, capacity - reported + base);
}

}  // namespace approute::internal

#endif  // APPROUTE_SRC_STATE_USAGE_H_
