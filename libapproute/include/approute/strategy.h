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

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "approute/types.h"

namespace approute {

// One node that may take the call, with the figures strategies need.
struct Candidate {
  uint32_t slot = 0;            // stable index of the node in the state region
  std::string_view id;
  std::string_view uri;
  int32_t weight = 1;
  int32_t priority = 0;
  int64_t sessions = 0;         // live sessions of the app's resource on this node
  int64_t capacity = -1;        // capacity for that resource, -1 = unlimited
  int64_t total_sessions = 0;   // live sessions over all resources
  const std::map<std::string, std::string>* attrs = nullptr;  // the node's attributes
};

// Shared, cross-process strategy state for one app.
class StrategyContext {
 public:
  virtual ~StrategyContext() = default;
  // A ticket from a per-app counter shared by every process of the router.
  virtual uint64_t NextTicket() = 0;
  // Runs fn with exclusive access to a per-app array of int64 indexed by
  // Candidate::slot (zero-initialised, shared by every process).
  virtual void WithSharedSlots(const std::function<void(absl::Span<int64_t>)>& fn) = 0;
  // A uniform 64-bit random number (per-thread generator).
  virtual uint64_t Random() = 0;
};

struct PickRequest {
  std::string_view app;
  std::string_view call_id;
  std::string_view key;
  const std::map<std::string, std::string>* attrs = nullptr;
  int attempt = 1;
};

class Strategy {
 public:
  virtual ~Strategy() = default;
  // Returns an index into `candidates` (never empty when called), or an error
  // that routing reports as no_node with the message.
  virtual absl::StatusOr<size_t> Pick(const PickRequest& request,
                                      absl::Span<const Candidate> candidates,
                                      StrategyContext& context) = 0;
};

// Options for a strategy as written in YAML (`strategy: {name: hash, by: from}`),
// every value as its scalar text.
using StrategyParams = std::map<std::string, std::string>;

using StrategyFactory =
    std::function<absl::StatusOr<std::unique_ptr<Strategy>>(const StrategyParams&)>;

// Built-in names: round_robin, weighted_round_robin, random, weighted_random,
// priority, hash, least_loaded, p2c.
// Returns InvalidArgument naming the strategy or the parameter when either is unknown.
absl::StatusOr<std::unique_ptr<Strategy>> MakeStrategy(std::string_view name,
                                                       const StrategyParams& params);
// Adds a strategy for every router of this process. AlreadyExists if taken.
absl::Status RegisterStrategy(std::string name, StrategyFactory factory);
// The names MakeStrategy knows, sorted.
std::vector<std::string> StrategyNames();

}  // namespace approute

#endif  // APPROUTE_STRATEGY_H_
