// latency: the power of two choices on each node's EWMA of response times
// (probe round trips and the proxy's reported call latencies). A node with no
// sample yet counts as fastest, so it gets measured.
#include "routing/strategies/pick_views.h"
#include "routing/strategies/strategies.h"

namespace approute::internal {
namespace {

class LatencyStrategy final : public Strategy {
 public:
  std::vector<std::string> RequestAttrs() const override { return {}; }
  absl::StatusOr<size_t> Pick(const PickRequest&, absl::Span<const Candidate> candidates,
                              StrategyContext& context) override {
    return PowerOfTwo(candidates.size(), context.Random(),
                      [&](size_t i) { return context.Feedback(candidates[i]).latency_ewma_ms; });
  }
};

}  // namespace

absl::StatusOr<std::unique_ptr<Strategy>> MakeLatency(const StrategyParams& params) {
  if (absl::Status s = CheckParams("latency", params, {}); !s.ok()) return s;
  return std::make_unique<LatencyStrategy>();
}

}  // namespace approute::internal
