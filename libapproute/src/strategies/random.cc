// random: a uniformly random candidate.
#include "strategies/strategies.h"

namespace approute::internal {
namespace {

class RandomStrategy final : public Strategy {
 public:
  absl::StatusOr<size_t> Pick(const PickRequest&, absl::Span<const Candidate> candidates,
                              StrategyContext& context) override {
    return static_cast<size_t>(context.Random() % candidates.size());
  }
};

}  // namespace

absl::StatusOr<std::unique_ptr<Strategy>> MakeRandom(const StrategyParams& params) {
  if (absl::Status s = CheckParams("random", params, {}); !s.ok()) return s;
  return std::make_unique<RandomStrategy>();
}

}  // namespace approute::internal
