// round_robin: candidates in turn. The ticket counter lives in the state
// region, so every process of a router shares one rotation.
#include "routing/compact_pick.h"
#include "routing/strategies/strategies.h"

namespace approute::internal {
namespace {

class RoundRobinStrategy final : public Strategy, public CompactStrategy {
 public:
  std::vector<std::string> RequestAttrs() const override { return {}; }
  absl::StatusOr<size_t> Pick(const PickRequest&, absl::Span<const Candidate> candidates,
                              StrategyContext& context) override {
    return static_cast<size_t>(context.NextTicket() % candidates.size());
  }
  std::optional<size_t> PickCompact(const PickRequest&, const Eligible& e, StrategyContext& context) const override {
    return static_cast<size_t>(context.NextTicket() % e.n);
  }
  // Ticket t goes to member t % members; a member that cannot take the call
  // lets the next ticket go instead, so over a rotation every member that
  // can takes one call (as ticket % candidates does when all can).
  std::optional<size_t> PickSampled(const PickRequest&, size_t members, MemberProbe probe,
                                    StrategyContext& context) const override {
    return FirstAccepted(members, probe, [&] { return context.NextTicket(); });
  }
};

}  // namespace

absl::StatusOr<std::unique_ptr<Strategy>> MakeRoundRobin(const StrategyParams& params) {
  if (absl::Status s = CheckParams("round_robin", params, {}); !s.ok()) return s;
  return std::make_unique<RoundRobinStrategy>();
}

}  // namespace approute::internal
