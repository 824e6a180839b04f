// retry_budget.h — an app's retry budget (`retry.budget`, after Envoy's and
// Finagle's): in each wall-clock second, retry() may pick a node again for
// at most `percent` % of the app's calls in flight plus `min_per_second`
// calls; past it a retry gets no node at once, so that a pool answering 503
// to a burst sees at most that many extra INVITEs, not max_attempts x the
// burst.
//
// Owns: AppCounters::retry_window and budget_refusals (the in-flight gauge
// is the session table's).
// Scope: the counters are in the state region, so every process of the
// host (all Kamailio workers) draws on one budget. With `cluster:` each
// proxy keeps its own: the deployment as a whole retries at most percent %
// of its calls in flight plus min_per_second per proxy (docs/design.md).
// Locking: one compare-and-swap on the packed window; no lock.
// Crash: nothing to repair (a window lasts a second).
#ifndef APPROUTE_SRC_ROUTING_RETRY_BUDGET_H_
#define APPROUTE_SRC_ROUTING_RETRY_BUDGET_H_

#include <cstdint>

#include "approute/config.h"
#include "state/region.h"

namespace approute::internal {

class RetryBudget {
 public:
  // What this second allows for an app with `in_flight` calls: percent % of
  // them (rounded down) plus the floor.
  static int64_t Allowance(const AppConfig& cfg, int64_t in_flight);
  // Takes one retry from app counters `c`'s current second when the
  // allowance has room (always true for an app without a budget); false,
  // counted in budget_refusals, when it has none.
  static bool Take(AppCounters& c, const AppConfig& cfg, int64_t now_ms);
};

}  // namespace approute::internal

#endif  // APPROUTE_SRC_ROUTING_RETRY_BUDGET_H_
