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
#include "strategies/strategies.h"
#include "str_util.h"

namespace approute::internal {
namespace {

class LeastLoadedStrategy final : public Strategy {
 public:
  explicit LeastLoadedStrategy(bool relative) : relative_(relative) {}

  absl::StatusOr<size_t> Pick(const PickRequest& request, absl::Span<const Candidate> candidates,
                              StrategyContext& context) override {
    double best = -std::numeric_limits<double>::infinity();
    size_t ties[64];
    size_t nties = 0;
    const bool reports = context.Reported(request.resource);
    for (size_t i = 0; i < candidates.size(); ++i) {
      const Candidate& c = candidates[i];
      double sessions = static_cast<double>(c.sessions);
      if (reports) {
        double reported = context.Load(c, request.resource);
        if (std::isfinite(reported) && reported > sessions) sessions = std::ceil(reported);
      }
      double a = Available(sessions, c.capacity);
      if (a > best) {
        best = a;
        nties = 0;
      }
      if (a == best && nties < 64) ties[nties++] = i;
    }
    if (nties == 1) return ties[0];
    return ties[context.NextTicket() % nties];
  }

 private:
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
    return absl::InvalidArgumentError(
        Cat("strategy least_loaded: mode \"", mode, "\" is not absolute or relative"));
  }
  return std::make_unique<LeastLoadedStrategy>(mode == "relative");
}

}  // namespace approute::internal
