// weighted_random: a candidate drawn with probability weight / total weight.
#include "routing/strategies/strategies.h"

namespace approute::internal {
namespace {

class WeightedRandomStrategy final : public Strategy {
 public:
  std::vector<std::string> RequestAttrs() const override { return {}; }
  absl::StatusOr<size_t> Pick(const PickRequest&, absl::Span<const Candidate> candidates,
                              StrategyContext& context) override {
    uint64_t total = 0;
    for (const Candidate& c : candidates) total += c.weight > 0 ? static_cast<uint64_t>(c.weight) : 0;
    if (total == 0) return absl::UnavailableError("every candidate has weight 0");
    uint64_t r = context.Random() % total;
    for (size_t i = 0; i < candidates.size(); ++i) {
      uint64_t w = candidates[i].weight > 0 ? static_cast<uint64_t>(candidates[i].weight) : 0;
      if (r < w) return i;
      r -= w;
    }
    return candidates.size() - 1;  // unreachable: r < total
  }
};

}  // namespace

absl::StatusOr<std::unique_ptr<Strategy>> MakeWeightedRandom(const StrategyParams& params) {
  if (absl::Status s = CheckParams("weighted_random", params, {}); !s.ok()) return s;
  return std::make_unique<WeightedRandomStrategy>();
}

}  // namespace approute::internal
