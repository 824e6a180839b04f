// weighted_round_robin: nginx's smooth weighted round robin. Each pick adds
// every candidate's weight to its current value, takes the largest, and
// subtracts the total from it; over W picks each node gets exactly its share,
// interleaved. The current values live in the state region (one row per app,
// indexed by node slot) under the app's process-shared mutex.
#include "absl/strings/str_cat.h"
#include "routing/strategies/strategies.h"

namespace approute::internal {
namespace {

class WeightedRoundRobinStrategy final : public Strategy {
 public:
  std::vector<std::string> RequestAttrs() const override { return {}; }
  absl::StatusOr<size_t> Pick(const PickRequest&, absl::Span<const Candidate> candidates,
                              StrategyContext& context) override {
    size_t best = candidates.size();
    context.WithSharedSlots([&](absl::Span<int64_t> current) {
      int64_t total = 0;
      for (size_t i = 0; i < candidates.size(); ++i) {
        const Candidate& c = candidates[i];
        if (c.weight <= 0 || c.slot >= current.size()) continue;
        current[c.slot] += c.weight;
        total += c.weight;
        if (best == candidates.size() || current[c.slot] > current[candidates[best].slot]) best = i;
      }
      if (best != candidates.size()) current[candidates[best].slot] -= total;
    });
    if (best == candidates.size()) {
      return absl::UnavailableError("every candidate has weight 0");
    }
    return best;
  }
};

}  // namespace

absl::StatusOr<std::unique_ptr<Strategy>> MakeWeightedRoundRobin(const StrategyParams& params) {
  if (absl::Status s = CheckParams("weighted_round_robin", params, {}); !s.ok()) return s;
  return std::make_unique<WeightedRoundRobinStrategy>();
}

}  // namespace approute::internal
