// approute/explain.h — the trace of a dry-run placement (Router::Explain):
// why a call would go where it would go now, and why every other node of
// the pool would not take it.
//
// Explain runs the steps of the routing flow (docs/design.md,
// "Routing flow") with the same predicates and the same strategy, but reserves,
// claims and counts nothing, advances no shared strategy cursor and writes
// nothing to Redis. The trace is a picture of one moment: a route() made
// right after it may decide otherwise when the counts move meanwhile (or a
// random strategy draws another node).
#ifndef APPROUTE_EXPLAIN_H_
#define APPROUTE_EXPLAIN_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "approute/types.h"

namespace approute {

// A call to explain: the fields of a RouteRequest, or a live session.
struct ExplainRequest {
  std::string app;
  std::string key;
  std::string prefer;
  std::vector<std::string> exclude;
  std::map<std::string, std::string> attrs;
  // Non-empty: explain the placement of this live session's call as it
  // would be made now (its app, key, attributes, tried nodes and preference;
  // the fields above are then ignored). The session's own unit still
  // counts on its node. NotFound when no such session lives.
  std::string call_id;
};

// One member of the app's pool.
struct ExplainNode {
  std::string id;
  std::string state;      // admin state: active | draining | disabled
  std::string health;     // up | suspect | down
  int64_t sessions = 0;   // of the app's resource
  int64_t capacity = -1;  // of the app's resource, -1 = unlimited
  // True when the strategy would be handed this node; else `exclusion`
  // names why not (ExclusionNames() lists them) and `detail` says it.
  bool candidate = false;
  std::string exclusion;
  std::string detail;
};

// The key's affinity lookup.
struct ExplainAffinity {
  bool keyed = false;   // the app has affinity and the call a key
  bool strict = false;  // affinity.strict
  std::string node;     // the node holding the key's claim ("" none)
  int64_t live_sessions = 0;
  int64_t grace_left_ms = 0;  // a claim no session holds: time left in its grace
  double bound = 0;           // affinity.bound (0: none)
  // "none" (no key or no affinity) | "new_key" | "join" (the key's node
  // takes the call) | "over_bound" (its node is above the bound: the next
  // home) | "refused" (strict: the call is refused) | "not_taken" (its node
  // cannot take it: the strategy picks and the key moves)
  std::string outcome = "none";
  std::string detail;
};

// One pick of the strategy, in order (a pick that cannot take the call
// leaves the list and the strategy picks again).
struct ExplainPick {
  std::string node;
  // "taken" | "slow_start" (skipped: the node is in its slow start) |
  // "headroom" (room only for calls of keys it holds) | "full"
  std::string outcome;
};

struct ExplainTrace {
  std::string app;  // the policy used (after the default fallback)
  std::string pool, resource, strategy;
  std::string key, prefer;  // as explained
  std::string call_id;      // the session explained, if any
  double headroom = 0;      // affinity.headroom
  bool panic = false;       // the pool is in panic: health is ignored
  std::vector<ExplainNode> nodes;
  ExplainAffinity affinity;
  // The candidates the strategy compared (id, sessions, capacity, weight,
  // priority: the figures Candidate carries) and its picks.
  struct Compared {
    std::string id;
    int64_t sessions = 0, capacity = -1, total_sessions = 0;
    int32_t weight = 1, priority = 0;
  };
  std::vector<Compared> compared;
  std::vector<ExplainPick> picks;
  // The flow's steps as taken, one line each, in order.
  std::vector<std::string> steps;
  // What route() would decide now.
  Decision decision;
};

// The names ExplainNode::exclusion takes, in a fixed order.
const std::vector<std::string>& ExclusionNames();

}  // namespace approute

#endif  // APPROUTE_EXPLAIN_H_
