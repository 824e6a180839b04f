// p2c: the power of two choices. Two distinct random candidates; the one with
// the lower load (sessions / capacity, or sessions when unlimited) wins.
// Max load stays O(log log n) above the mean instead of random's O(log n / log log n).
#include "routing/compact_pick.h"
#include "routing/strategies/strategies.h"

namespace approute::internal {
namespace {

class P2CStrategy final : public Strategy, public CompactStrategy {
 public:
  std::vector<std::string> RequestAttrs() const override { return {}; }
  absl::StatusOr<size_t> Pick(const PickRequest&, absl::Span<const Candidate> candidates,
                              StrategyContext& context) override {
    return PowerOfTwo(candidates.size(), context.Random(),
                      [&](size_t i) { return RelativeLoad(candidates[i]); });
  }
  std::optional<size_t> PickCompact(const PickRequest&, const Eligible& e, StrategyContext& context) const override {
    return PowerOfTwo(e.n, context.Random(), [&](size_t i) { return RelativeLoadOf(e.sessions[i], e.capacity[i]); });
  }
  // Two distinct members drawn uniformly until both can take the call
  // (rejection sampling: uniform among those that can), the less loaded
  // wins. Each random number gives two draws (its halves), as PowerOfTwo.
  std::optional<size_t> PickSampled(const PickRequest&, size_t members, MemberProbe probe,
                                    StrategyContext& context) const override {
    if (members < 2) return std::nullopt;
    size_t got[2];
    int64_t s[2], c[2];
    int k = 0;
    uint64_t r = 0;
    for (int d = 0; d < kMaxSampleDraws && k < 2; ++d) {
      if (d % 2 == 0) r = context.Random();
      const uint64_t half = d % 2 == 0 ? (r & 0xffffffffULL) : (r >> 32);
      size_t m = static_cast<size_t>(half % members);
      if (k == 1 && m == got[0]) continue;
      if (probe(m, &s[k], &c[k])) got[k++] = m;
    }
    if (k < 2) return std::nullopt;
    double a = RelativeLoadOf(s[0], c[0]), b = RelativeLoadOf(s[1], c[1]);
    if (a == b) return (r & (1ULL << 31)) ? got[0] : got[1];
    return a < b ? got[0] : got[1];
  }
};

}  // namespace

absl::StatusOr<std::unique_ptr<Strategy>> MakeP2C(const StrategyParams& params) {
  if (absl::Status s = CheckParams("p2c", params, {}); !s.ok()) return s;
  return std::make_unique<P2CStrategy>();
}

}  // namespace approute::internal
