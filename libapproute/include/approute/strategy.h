// approute/strategy.h — the one interface every load-balancing strategy implements.
//
// Modelled on Envoy's LoadBalancer::chooseHost: a strategy sees the request
// and a list of candidates that routing already filtered (pool, health,
// admin state, exclusions, capacity), and returns the index of one of them.
// Each built-in strategy lives in its own file under src/strategies/.
//
// Thread- and process-safety: a Strategy object is owned by one Router in one
// process and may be called from several threads at once; any state that must
// be the same for every process (round-robin cursors, smooth-WRR weights)
// goes through StrategyContext, which keeps it in the router's state region.
#ifndef APPROUTE_STRATEGY_H_
#define APPROUTE_STRATEGY_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "approute/types.h"

namespace approute {

// One node that may take the call, with the figures strategies need.
struct Candidate {
  uint32_t slot = 0;  // stable index of the node in the state region
  std::string_view id;
  std::string_view uri;
  int32_t weight = 1;
  int32_t priority = 0;
  // Live sessions of the app's resource on this node: approute's count, or
  // the node's own report of it grown by approute's calls since, whichever
  // is higher (docs/design.md, "Admission: the nodes' own counts").
  int64_t sessions = 0;
  int64_t capacity = -1;                                      // capacity for that resource, -1 = unlimited
  int64_t total_sessions = 0;                                 // live sessions over all resources
  const std::map<std::string, std::string>* attrs = nullptr;  // the node's attributes
};

// Feedback the router keeps per node (docs/design.md, "Health, load and the event package").
struct NodeFeedback {
  double latency_ewma_ms = 0;   // EWMA of response times; 0 = no sample yet
  double error_rate = 0;        // smoothed share of failed results (0..1)
  int64_t load_updated_ms = 0;  // last load report, unix ms; 0 = never
  int64_t first_report_ms = 0;  // first load report since the node (re)joined; 0 = never
};

// Shared, cross-process strategy state for one app, and the router's live
// figures about candidates.
class StrategyContext {
 public:
  virtual ~StrategyContext() = default;
  // The candidate's reported load figure `metric` (report_load or a status
  // report), or NaN when it never reported it.
  virtual double Load(const Candidate& c, std::string_view metric) = 0;
  virtual NodeFeedback Feedback(const Candidate& c) = 0;
  // The router's clock, unix ms.
  virtual int64_t NowMs() = 0;
  // A ticket from a per-app counter shared by every process of the router.
  virtual uint64_t NextTicket() = 0;
  // Runs fn with exclusive access to a per-app array of int64 indexed by
  // Candidate::slot (zero-initialised, shared by every process).
  virtual void WithSharedSlots(const std::function<void(absl::Span<int64_t>)>& fn) = 0;
  // A uniform 64-bit random number (per-thread generator, or the router's
  // seeded sequence when RouterOptions::random_seed is set).
  virtual uint64_t Random() = 0;
  // Everything the router knows about one candidate: pool, admin state,
  // health, sessions and capacity per resource, reported load. Costs a few
  // map insertions: meant for strategies written in Python, not for the hot
  // path of built-ins. The default fills only what Candidate carries.
  virtual NodeStatus Describe(const Candidate& c);
  // False when no node has ever reported a figure named `metric`, so Load()
  // would return NaN for every candidate: a strategy scanning a large pool
  // may then skip the calls. The default says true (ask Load()).
  virtual bool Reported(std::string_view metric);
};

struct PickRequest {
  std::string_view app;
  std::string_view resource;  // the app's resource (what Candidate::sessions counts)
  std::string_view call_id;
  std::string_view key;
  const std::map<std::string, std::string>* attrs = nullptr;
  int attempt = 1;
};

// RequestAttrs() of a strategy that may read any request attribute.
inline constexpr std::string_view kAnyRequestAttr = "*";

class Strategy {
 public:
  virtual ~Strategy() = default;
  // Returns an index into `candidates` (never empty when called), or an error
  // that routing reports as no_node with the message.
  virtual absl::StatusOr<size_t> Pick(const PickRequest& request, absl::Span<const Candidate> candidates,
                                      StrategyContext& context) = 0;
  // The request attributes (keys of PickRequest::attrs) Pick() may read:
  // empty when it reads none, {kAnyRequestAttr} when it may read any. A
  // caller that collects the attributes for each call (the Kamailio handler
  // reads them from the SIP message) collects only these. The default is
  // {kAnyRequestAttr}: a strategy that does not say, e.g. one written in
  // Python, is given them all. Never fails; the same for the object's life.
  virtual std::vector<std::string> RequestAttrs() const { return {std::string(kAnyRequestAttr)}; }
};

// Options for a strategy as written in YAML (`strategy: {name: hash, by: from}`),
// every value as its scalar text.
using StrategyParams = std::map<std::string, std::string>;

using StrategyFactory = std::function<absl::StatusOr<std::unique_ptr<Strategy>>(const StrategyParams&)>;

// Built-in names: round_robin, weighted_round_robin, random, weighted_random,
// priority, hash, least_loaded, p2c, utilization, latency, consistent_bounded.
// Returns InvalidArgument naming the strategy or the parameter when either is unknown.
absl::StatusOr<std::unique_ptr<Strategy>> MakeStrategy(std::string_view name, const StrategyParams& params);
// Adds a strategy for every router of this process. AlreadyExists if taken.
absl::Status RegisterStrategy(std::string name, StrategyFactory factory);
// The names MakeStrategy knows, sorted.
std::vector<std::string> StrategyNames();
// RequestAttrs() of the strategy MakeStrategy(name, params) builds; for a
// Python strategy name (which only the Python package builds), {kAnyRequestAttr}.
// InvalidArgument as MakeStrategy when the name or a parameter is unknown.
absl::StatusOr<std::vector<std::string>> StrategyRequestAttrs(std::string_view name, const StrategyParams& params);

// Strategies written in Python are named "python:package.module:ClassName".
// Only the Python package can build them (through a StrategyResolver); the
// core checks their syntax. Options other than `fallback` go to the class's
// constructor; their values may be any YAML (kept as YAML text).
inline constexpr std::string_view kPythonStrategyPrefix = "python:";
bool IsPythonStrategyName(std::string_view name);
// InvalidArgument unless `name` is "python:" + dotted module + ":" + dotted attribute.
absl::Status CheckPythonStrategyName(std::string_view name);

// A router's own strategies (RouterOptions::strategies), consulted before the
// process-wide registry. The Python binding implements it for python: names
// and for router.register_strategy().
class StrategyResolver {
 public:
  virtual ~StrategyResolver() = default;
  // True when Make builds `name`: configuration that names it is valid.
  virtual bool Knows(std::string_view name) const = 0;
  // Builds the strategy of one app. `strict` is true while a configuration is
  // being loaded (an error rejects it) and false when a process rebuilds its
  // policies from the stored configuration (a resolver may degrade instead).
  virtual absl::StatusOr<std::unique_ptr<Strategy>> Make(std::string_view name, const StrategyParams& params,
                                                         bool strict) = 0;
};

// Builds `name` through `resolver` when it knows it, else through MakeStrategy.
absl::StatusOr<std::unique_ptr<Strategy>> MakeStrategyWith(StrategyResolver* resolver, std::string_view name,
                                                           const StrategyParams& params, bool strict);

}  // namespace approute

#endif  // APPROUTE_STRATEGY_H_
