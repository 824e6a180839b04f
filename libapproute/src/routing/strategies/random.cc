// random: a uniformly random candidate.
#include "routing/strategies/pick_views.h"
#include "routing/strategies/strategies.h"

namespace approute::internal {
namespace {

class RandomStrategy final : public BuiltinPick<RandomStrategy> {
 public:
  std::vector<std::string> RequestAttrs() const override { return {}; }
  template <typename View>
  std::optional<size_t> Choose(const PickRequest&, const View& v, StrategyContext& context) const {
    return v.DrawOne([&] { return context.Random(); });
  }
};

}  // namespace

absl::StatusOr<std::unique_ptr<Strategy>> MakeRandom(const StrategyParams& params) {
  if (absl::Status s = CheckParams("random", params, {}); !s.ok()) return s;
  return std::make_unique<RandomStrategy>();
}

}  // namespace approute::internal
