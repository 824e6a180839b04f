// p2c: the power of two choices. Two distinct random candidates; the one with
// the lower load (sessions / capacity, or sessions when unlimited) wins, a
// tie either way at random.
// Max load stays O(log log n) above the mean instead of random's O(log n / log log n).
#include "routing/strategies/pick_views.h"
#include "routing/strategies/strategies.h"

namespace approute::internal {
namespace {

class P2CStrategy final : public BuiltinPick<P2CStrategy> {
 public:
  std::vector<std::string> RequestAttrs() const override { return {}; }
  template <typename View>
  std::optional<size_t> Choose(const PickRequest&, const View& v, StrategyContext& context) const {
    Two t;
    if (!v.DrawTwo(context, &t)) return std::nullopt;
    return LowerOfTwo(t.a.member, t.b.member, t.tie_to_a, RelativeLoadOf(t.a.sessions, t.a.capacity),
                      RelativeLoadOf(t.b.sessions, t.b.capacity));
  }
};

}  // namespace

absl::StatusOr<std::unique_ptr<Strategy>> MakeP2C(const StrategyParams& params) {
  if (absl::Status s = CheckParams("p2c", params, {}); !s.ok()) return s;
  return std::make_unique<P2CStrategy>();
}

}  // namespace approute::internal
