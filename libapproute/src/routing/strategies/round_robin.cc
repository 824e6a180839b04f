// round_robin: candidates in turn. The ticket counter lives in the state
// region, so every process of a router shares one rotation. Without a scan
// (SampledView), ticket t goes to member t % members and a member that
// cannot take the call lets the next ticket go instead, so over a rotation
// every member that can takes one call (as ticket % candidates does when
// all can).
#include "routing/strategies/pick_views.h"
#include "routing/strategies/strategies.h"

namespace approute::internal {
namespace {

class RoundRobinStrategy final : public BuiltinPick<RoundRobinStrategy> {
 public:
  std::vector<std::string> RequestAttrs() const override { return {}; }
  template <typename View>
  std::optional<size_t> Choose(const PickRequest&, const View& v, StrategyContext& context) const {
    return v.DrawOne([&] { return context.NextTicket(); });
  }
};

}  // namespace

absl::StatusOr<std::unique_ptr<Strategy>> MakeRoundRobin(const StrategyParams& params) {
  if (absl::Status s = CheckParams("round_robin", params, {}); !s.ok()) return s;
  return std::make_unique<RoundRobinStrategy>();
}

}  // namespace approute::internal
