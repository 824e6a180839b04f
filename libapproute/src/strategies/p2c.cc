// p2c: the power of two choices. Two distinct random candidates; the one with
// the lower load (sessions / capacity, or sessions when unlimited) wins.
// Max load stays O(log log n) above the mean instead of random's O(log n / log log n).
#include "strategies/strategies.h"

namespace approute::internal {
namespace {

class P2CStrategy final : public Strategy {
 public:
  absl::StatusOr<size_t> Pick(const PickRequest&, absl::Span<const Candidate> candidates,
                              StrategyContext& context) override {
    return PowerOfTwo(candidates.size(), context.Random(),
                      [&](size_t i) { return RelativeLoad(candidates[i]); });
  }
};

}  // namespace

absl::StatusOr<std::unique_ptr<Strategy>> MakeP2C(const StrategyParams& params) {
  if (absl::Status s = CheckParams("p2c", params, {}); !s.ok()) return s;
  return std::make_unique<P2CStrategy>();
}

}  // namespace approute::internal
