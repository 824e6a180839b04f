// random: a uniformly random candidate.
#include "routing/compact_pick.h"
#include "routing/strategies/strategies.h"

namespace approute::internal {
namespace {

class RandomStrategy final : public Strategy, public CompactStrategy {
 public:
  std::vector<std::string> RequestAttrs() const override { return {}; }
  absl::StatusOr<size_t> Pick(const PickRequest&, absl::Span<const Candidate> candidates,
                              StrategyContext& context) override {
    return static_cast<size_t>(context.Random() % candidates.size());
  }
  std::optional<size_t> PickCompact(const PickRequest&, const Eligible& e, StrategyContext& context) const override {
    return static_cast<size_t>(context.Random() % e.n);
  }
  // A uniform member until one can take the call: uniform among those that can.
  std::optional<size_t> PickSampled(const PickRequest&, size_t members, MemberProbe probe,
                                    StrategyContext& context) const override {
    return FirstAccepted(members, probe, [&] { return context.Random(); });
  }
};

}  // namespace

absl::StatusOr<std::unique_ptr<Strategy>> MakeRandom(const StrategyParams& params) {
  if (absl::Status s = CheckParams("random", params, {}); !s.ok()) return s;
  return std::make_unique<RandomStrategy>();
}

}  // namespace approute::internal
