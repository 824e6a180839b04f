// priority: serial failover. The candidate with the lowest priority value
// takes every call; ties go to the higher weight, then to configuration
// order. When it is full, down or tried, the next one takes over.
#include "routing/strategies/strategies.h"

namespace approute::internal {
namespace {

class PriorityStrategy final : public Strategy {
 public:
  std::vector<std::string> RequestAttrs() const override { return {}; }
  absl::StatusOr<size_t> Pick(const PickRequest&, absl::Span<const Candidate> candidates, StrategyContext&) override {
    size_t best = 0;
    for (size_t i = 1; i < candidates.size(); ++i) {
      const Candidate& c = candidates[i];
      const Candidate& b = candidates[best];
      if (c.priority < b.priority || (c.priority == b.priority && c.weight > b.weight)) best = i;
    }
    return best;
  }
};

}  // namespace

absl::StatusOr<std::unique_ptr<Strategy>> MakePriority(const StrategyParams& params) {
  if (absl::Status s = CheckParams("priority", params, {}); !s.ok()) return s;
  return std::make_unique<PriorityStrategy>();
}

}  // namespace approute::internal
