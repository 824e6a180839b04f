// utilization: weights from reported load, in the manner of gRPC's weighted
// round robin with ORCA load reports:
//   weight = configured weight / (utilization + error_penalty x error rate)
// where utilization is the node's reported `metric` (default cpu, 0..1) and
// the error rate is the router's smoothed share of failed results. A node's
// report counts only after `blackout` seconds of reporting (so a node that
// just came back does not draw a burst on one optimistic figure) and until
// `expiry` seconds without a report; a node without a usable figure gets the
// mean weight of those with one. The picks follow smooth weighted round robin
// over those weights, with the current values shared by every process.
#include <cmath>

#include "absl/strings/numbers.h"
#include "routing/strategies/strategies.h"
#include "util/str_util.h"

namespace approute::internal {
namespace {

class UtilizationStrategy final : public Strategy {
 public:
  std::vector<std::string> RequestAttrs() const override { return {}; }
  UtilizationStrategy(std::string metric, double penalty, int64_t blackout_ms, int64_t expiry_ms)
      : metric_(std::move(metric)), penalty_(penalty), blackout_ms_(blackout_ms), expiry_ms_(expiry_ms) {}

  absl::StatusOr<size_t> Pick(const PickRequest&, absl::Span<const Candidate> candidates,
                              StrategyContext& context) override {
    const int64_t now = context.NowMs();
    thread_local std::vector<double> weights;
    weights.assign(candidates.size(), -1);
    double sum = 0;
    size_t known = 0;
    for (size_t i = 0; i < candidates.size(); ++i) {
      const Candidate& c = candidates[i];
      if (c.weight <= 0) {
        weights[i] = 0;
        continue;
      }
      double u = context.Load(c, metric_);
      NodeFeedback f = context.Feedback(c);
      bool usable = std::isfinite(u) && f.load_updated_ms > 0 && now - f.load_updated_ms <= expiry_ms_ &&
                    f.first_report_ms > 0 && now - f.first_report_ms >= blackout_ms_;
      if (!usable) continue;
      double denom = std::max(u + penalty_ * f.error_rate, 0.01);
      weights[i] = static_cast<double>(c.weight) / denom;
      sum += weights[i];
      ++known;
    }
    double mean = known ? sum / static_cast<double>(known) : 1.0;
    for (size_t i = 0; i < candidates.size(); ++i) {
      if (weights[i] < 0) weights[i] = mean * (known ? 1.0 : static_cast<double>(candidates[i].weight));
    }
    size_t best = candidates.size();
    context.WithSharedSlots([&](absl::Span<int64_t> current) {
      int64_t total = 0;
      for (size_t i = 0; i < candidates.size(); ++i) {
        const Candidate& c = candidates[i];
        auto w = static_cast<int64_t>(std::llround(weights[i] * 1000.0));
        if (w <= 0 || c.slot >= current.size()) continue;
        current[c.slot] += w;
        total += w;
        if (best == candidates.size() || current[c.slot] > current[candidates[best].slot]) best = i;
      }
      if (best != candidates.size()) current[candidates[best].slot] -= total;
    });
    if (best == candidates.size()) return absl::UnavailableError("every candidate has weight 0");
    return best;
  }

 private:
  std::string metric_;
  double penalty_;
  int64_t blackout_ms_;
  int64_t expiry_ms_;
};

absl::StatusOr<double> Number(const StrategyParams& p, const char* key, double def, double lo, double hi) {
  auto it = p.find(key);
  if (it == p.end()) return def;
  double v = 0;
  if (!absl::SimpleAtod(ToAlphaNum(it->second), &v) || !(v >= lo && v <= hi)) {
    return absl::InvalidArgumentError(
        Cat("strategy utilization: ", key, " \"", it->second, "\" must be a number in ", lo, "..", hi));
  }
  return v;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Strategy>> MakeUtilization(const StrategyParams& params) {
  if (absl::Status s = CheckParams("utilization", params, {"metric", "error_penalty", "blackout", "expiry"}); !s.ok())
    return s;
  std::string metric = "cpu";
  if (auto it = params.find("metric"); it != params.end()) metric = it->second;
  absl::StatusOr<double> penalty = Number(params, "error_penalty", 1.0, 0, 1000);
  absl::StatusOr<double> blackout = Number(params, "blackout", 10, 0, 3600);
  absl::StatusOr<double> expiry = Number(params, "expiry", 180, 1, 86400);
  for (const auto* st : {&penalty, &blackout, &expiry})
    if (!st->ok()) return st->status();
  return std::make_unique<UtilizationStrategy>(metric, *penalty, static_cast<int64_t>(*blackout * 1000),
                                               static_cast<int64_t>(*expiry * 1000));
}

}  // namespace approute::internal
