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
    size_t n = candidates.size();
    if (n == 1) return size_t{0};
    uint64_t r = context.Random();
    size_t a = static_cast<size_t>(r % n);
    size_t b = static_cast<size_t>((r >> 32) % (n - 1));
    if (b >= a) ++b;
    double la = RelativeLoad(candidates[a]);
    double lb = RelativeLoad(candidates[b]);
    if (la == lb) return (r & (1ULL << 31)) ? a : b;
    return la < lb ? a : b;
  }
};

}  // namespace

absl::StatusOr<std::unique_ptr<Strategy>> MakeP2C(const StrategyParams& params) {
  if (absl::Status s = CheckParams("p2c", params, {}); !s.ok()) return s;
  return std::make_unique<P2CStrategy>();
}

}  // namespace approute::internal
