// least_loaded: the candidate with the most available capacity for the app's
// resource, as OpenSIPS load_balancer does.
//   mode: absolute (default)  available = capacity - sessions
//   mode: relative            available = (capacity - sessions) / capacity
// A node with unlimited capacity counts as having the most room, ordered by
// its session count. Ties rotate through a shared ticket so that processes do
// not all pile onto the first of equals. Capacity itself is enforced by
// routing (a node at capacity is never a candidate), so this never overfills.
// When a node reports a load figure named like the app's resource (e.g. the
// agent's `channels`, counted by Asterisk itself, including calls that did
// not come through this router), the larger of that and the router's own
// count is the node's load.
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "routing/strategies/pick_views.h"
#include "routing/strategies/strategies.h"
#include "util/str_util.h"

namespace approute::internal {
namespace {

class LeastLoadedStrategy final : public BuiltinPick<LeastLoadedStrategy> {
 public:
  std::vector<std::string> RequestAttrs() const override { return {}; }
  explicit LeastLoadedStrategy(bool relative) : relative_(relative) {}

  // Every member's figures are read: no pick without a scan (SampledView),
  // and a resource some node reports a load figure for needs the full
  // candidates (StrategyContext::Load), checked before any ticket is taken.
  template <typename View>
  std::optional<size_t> Choose(const PickRequest& request, const View& v, StrategyContext& context) const {
    if constexpr (!View::kSeesEvery) {
      return std::nullopt;
    } else {
      auto capacity = [&](size_t i) { return v.capacity(i); };
      if (!context.Reported(request.resource)) {
        return MostRoom(
            v.size(), [&](size_t i) { return static_cast<double>(v.sessions(i)); }, capacity, context);
      }
      if constexpr (!View::kHasCandidates) {
        return std::nullopt;
      } else {
        return MostRoom(
            v.size(),
            [&](size_t i) {
              const Candidate& c = v.candidate(i);
              double sessions = static_cast<double>(c.sessions);
              double reported = context.Load(c, request.resource);
              return std::isfinite(reported) && reported > sessions ? std::ceil(reported) : sessions;
            },
            capacity, context);
      }
    }
  }

 private:
  // The index with the most room; ties rotate through the shared ticket.
  template <typename Sessions, typename Capacity>
  size_t MostRoom(size_t n, Sessions sessions, Capacity capacity, StrategyContext& context) const {
    double best = -std::numeric_limits<double>::infinity();
    size_t ties[64];
    size_t nties = 0;
    for (size_t i = 0; i < n; ++i) {
      double a = Available(sessions(i), capacity(i));
      if (a > best) {
        best = a;
        nties = 0;
      }
      if (a == best && nties < 64) ties[nties++] = i;
    }
    if (nties == 1) return ties[0];
    return ties[context.NextTicket() % nties];
  }

  double Available(double s, int64_t capacity) const {
    if (capacity < 0) return 1e18 - s;  // unlimited
    double cap = static_cast<double>(capacity);
    if (!relative_) return cap - s;
    return cap > 0 ? (cap - s) / cap : -1.0;
  }
  bool relative_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Strategy>> MakeLeastLoaded(const StrategyParams& params) {
  if (absl::Status s = CheckParams("least_loaded", params, {"mode"}); !s.ok()) return s;
  std::string mode = "absolute";
  if (auto it = params.find("mode"); it != params.end()) mode = it->second;
  if (mode != "absolute" && mode != "relative") {
    return absl::InvalidArgumentError(Cat("strategy least_loaded: mode \"", mode, "\" is not absolute or relative"));
  }
  return std::make_unique<LeastLoadedStrategy>(mode == "relative");
}

}  // namespace approute::internal
