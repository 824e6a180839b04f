// round_robin: candidates in turn. The ticket counter lives in the state
// region, so every process of a router shares one rotation.
#include "strategies/strategies.h"

namespace approute::internal {
namespace {

class RoundRobinStrategy final : public Strategy {
 public:
  absl::StatusOr<size_t> Pick(const PickRequest&, absl::Span<const Candidate> candidates,
                              StrategyContext& context) override {
    return static_cast<size_t>(context.NextTicket() % candidates.size());
  }
};

}  // namespace

absl::StatusOr<std::unique_ptr<Strategy>> MakeRoundRobin(const StrategyParams& params) {
  if (absl::Status s = CheckParams("round_robin", params, {}); !s.ok()) return s;
  return std::make_unique<RoundRobinStrategy>();
}

}  // namespace approute::internal
