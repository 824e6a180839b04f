// strategies.h — factories of the built-in strategies, one file each.
#ifndef APPROUTE_SRC_ROUTING_STRATEGIES_STRATEGIES_H_
#define APPROUTE_SRC_ROUTING_STRATEGIES_STRATEGIES_H_

#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "approute/strategy.h"

namespace approute::internal {

absl::StatusOr<std::unique_ptr<Strategy>> MakeRoundRobin(const StrategyParams& params);
absl::StatusOr<std::unique_ptr<Strategy>> MakeWeightedRoundRobin(const StrategyParams& params);
absl::StatusOr<std::unique_ptr<Strategy>> MakeRandom(const StrategyParams& params);
absl::StatusOr<std::unique_ptr<Strategy>> MakeWeightedRandom(const StrategyParams& params);
absl::StatusOr<std::unique_ptr<Strategy>> MakePriority(const StrategyParams& params);
absl::StatusOr<std::unique_ptr<Strategy>> MakeHash(const StrategyParams& params);
absl::StatusOr<std::unique_ptr<Strategy>> MakeLeastLoaded(const StrategyParams& params);
absl::StatusOr<std::unique_ptr<Strategy>> MakeP2C(const StrategyParams& params);
absl::StatusOr<std::unique_ptr<Strategy>> MakeUtilization(const StrategyParams& params);
absl::StatusOr<std::unique_ptr<Strategy>> MakeLatency(const StrategyParams& params);
absl::StatusOr<std::unique_ptr<Strategy>> MakeConsistentBounded(const StrategyParams& params);

// InvalidArgument naming the first parameter not in `allowed`.
absl::Status CheckParams(std::string_view strategy, const StrategyParams& params,
                         std::initializer_list<std::string_view> allowed);

// The input a hashing strategy hashes, from its `by` option: call_id, key,
// from, to, ruri_user or attr:NAME (a request attribute). A request without
// that input hashes its call id.
class HashInput {
 public:
  static absl::StatusOr<HashInput> Parse(std::string_view strategy, const StrategyParams& params,
                                         std::string_view default_by);
  std::string_view Of(const PickRequest& request) const;
  // The request attribute Of() reads ({} for call_id and key).
  std::vector<std::string> Attrs() const;

 private:
  std::string attr_;  // attribute name; empty: call id or key
  bool by_key_ = false;
};

// Load of a candidate as a fraction of its capacity for the app's resource;
// with unlimited capacity, its session count scaled far below any fraction.
double RelativeLoad(const Candidate& c);

}  // namespace approute::internal

#endif  // APPROUTE_SRC_ROUTING_STRATEGIES_STRATEGIES_H_
