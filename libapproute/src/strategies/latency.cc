// latency: the power of two choices on each node's EWMA of response times
// (probe round trips and the proxy's reported call latencies). A node with no
// sample yet counts as fastest, so it gets measured.
#include "strategies/strategies.h"

namespace approute::internal {
namespace {

class LatencyStrategy final : public Strategy {
 public:
  absl::StatusOr<size_t> Pick(const PickRequest&, absl::Span<const Candidate> candidates,
                              StrategyContext& context) override {
    size_t n = candidates.size();
    if (n == 1) return size_t{0};
    uint64_t r = context.Random();
    size_t a = static_cast<size_t>(r % n);
    size_t b = static_cast<size_t>((r >> 32) % (n - 1));
    if (b >= a) ++b;
    double la = context.Feedback(candidates[a]).latency_ewma_ms;
    double lb = context.Feedback(candidates[b]).latency_ewma_ms;
    if (la == lb) return (r & (1ULL << 31)) ? a : b;
    return la < lb ? a : b;
  }
};

}  // namespace

absl::StatusOr<std::unique_ptr<Strategy>> MakeLatency(const StrategyParams& params) {
  if (absl::Status s = CheckParams("latency", params, {}); !s.ok()) return s;
  return std::make_unique<LatencyStrategy>();
}

}  // namespace approute::internal
