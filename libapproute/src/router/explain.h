// explain.h — the reasons a dry-run placement (Router::Explain) gives for a
// pool member that would not take the call, one row each.
//
// A new reason is one enum value and one row of kExclusions (its name in
// the trace and the words the printed trace shows); a new scan Verdict
// (candidate_scan.h) also needs its case in ExclusionOf, which -Wswitch
// points at.
//
// Owns: nothing (constant tables). Thread-safety: read-only.
#ifndef APPROUTE_SRC_ROUTER_EXPLAIN_H_
#define APPROUTE_SRC_ROUTER_EXPLAIN_H_

#include <cstddef>
#include <cstdint>

#include "router/candidate_scan.h"

namespace approute::internal {

enum class Exclusion : uint8_t {
  kNone,          // it may take the call
  kGone,          // removed while the trace was made
  kDisabled,      // admin state disabled
  kLeaseExpired,  // a status-report node whose lease ran out
  kDraining,      // draining: takes no new key
  kDown,          // health down (probes)
  kEjected,       // ejected for errors (outlier detection)
  kSuspect,       // suspect, while another member is up
  kTried,         // this call already tried it (a retried session)
  kExcluded,      // the request's exclude list names it
  kFull,          // its count has reached its capacity
  kHeadroom,      // room only for calls of keys it holds (affinity.headroom)
  kSlowStart,     // skipped by the slow start's draw this time
};

struct ExclusionRow {
  Exclusion e;
  const char* name;  // ExplainNode::exclusion
  const char* text;  // the start of ExplainNode::detail
};

inline constexpr ExclusionRow kExclusions[] = {
    {Exclusion::kNone, "", ""},
    {Exclusion::kGone, "gone", "removed meanwhile"},
    {Exclusion::kDisabled, "disabled", "disabled by the operator"},
    {Exclusion::kLeaseExpired, "lease_expired", "its status-report lease ran out"},
    {Exclusion::kDraining, "draining", "draining: takes no new key"},
    {Exclusion::kDown, "down", "down (probes)"},
    {Exclusion::kEjected, "ejected", "ejected for errors"},
    {Exclusion::kSuspect, "suspect", "suspect while another node is up"},
    {Exclusion::kTried, "tried", "already tried by this call"},
    {Exclusion::kExcluded, "excluded", "in the request's exclude list"},
    {Exclusion::kFull, "full", "full"},
    {Exclusion::kHeadroom, "headroom", "above the headroom for a new key"},
    {Exclusion::kSlowStart, "slow_start", "skipped for its slow start"},
};

constexpr const ExclusionRow& RowOf(Exclusion e) {
  for (const ExclusionRow& r : kExclusions) {
    if (r.e == e) return r;
  }
  return kExclusions[0];
}

}  // namespace approute::internal

#endif  // APPROUTE_SRC_ROUTER_EXPLAIN_H_
