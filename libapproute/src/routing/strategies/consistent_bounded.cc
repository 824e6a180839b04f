// consistent_bounded: consistent hashing with bounded loads (Mirrokni,
// Thorup, Zadimoghaddam 2018). Nodes sit on a hash ring (`replicas` points
// each, scaled by weight); a request walks clockwise from its hash to the
// first node whose load is below ceil((1 + epsilon) x (total + 1) / n), so
// no node exceeds (1 + epsilon) x the average while keys keep their node as
// long as it has room. Load is the app's resource sessions.
//
// Options: by (as hash: call_id, key, from, to, ruri_user, attr:NAME;
// default key), epsilon (default 0.25), replicas (default 40).
#include <xxhash.h>

#include <algorithm>
#include <cmath>

#include "absl/strings/numbers.h"
#include "absl/synchronization/mutex.h"
#include "routing/strategies/strategies.h"
#include "util/str_util.h"

namespace approute::internal {
namespace {

class ConsistentBoundedStrategy final : public Strategy {
 public:
  std::vector<std::string> RequestAttrs() const override { return input_.Attrs(); }
  ConsistentBoundedStrategy(HashInput input, double epsilon, int replicas)
      : input_(std::move(input)), epsilon_(epsilon), replicas_(replicas) {}

  absl::StatusOr<size_t> Pick(const PickRequest& request, absl::Span<const Candidate> candidates,
                              StrategyContext&) override {
    std::string_view input = input_.Of(request);
    std::shared_ptr<const Ring> ring = RingFor(candidates);
    if (ring->points.empty()) return absl::UnavailableError("every candidate has weight 0");
    int64_t total = 0;
    for (const Candidate& c : candidates) total += c.sessions;
    double bound = std::ceil((1.0 + epsilon_) * static_cast<double>(total + 1) / static_cast<double>(ring->members));
    uint64_t h = XXH3_64bits(input.data(), input.size());
    auto it = std::lower_bound(ring->points.begin(), ring->points.end(), std::make_pair(h, size_t{0}));
    for (size_t step = 0; step < ring->points.size(); ++step, ++it) {
      if (it == ring->points.end()) it = ring->points.begin();
      const Candidate& c = candidates[it->second];
      if (static_cast<double>(c.sessions) + 1 <= bound) return it->second;
    }
    return absl::UnavailableError("no candidate under the load bound");  // unreachable: the bound covers total + 1
  }

 private:
  struct Ring {
    std::vector<std::pair<uint64_t, size_t>> points;  // (hash, candidate index)
    size_t members = 0;
  };

  // Rings are cached by candidate set (ids and weights): routing asks for the
  // same few sets again and again.
  std::shared_ptr<const Ring> RingFor(absl::Span<const Candidate> candidates) {
    uint64_t sig = 0x51ED27A5u;
    for (const Candidate& c : candidates) {
      sig = XXH3_64bits_withSeed(c.id.data(), c.id.size(), sig ^ static_cast<uint64_t>(c.weight));
    }
    {
      absl::MutexLock l(&mu_);
      for (const auto& [s, r] : cache_) {
        if (s == sig) return r;
      }
    }
    auto ring = std::make_shared<Ring>();
    for (size_t i = 0; i < candidates.size(); ++i) {
      const Candidate& c = candidates[i];
      if (c.weight <= 0) continue;
      ++ring->members;
      int points = std::max(1, replicas_ * std::min<int32_t>(c.weight, 100) / 10);
      uint64_t seed = XXH3_64bits(c.id.data(), c.id.size());
      for (int p = 0; p < points; ++p) ring->points.emplace_back(XXH3_64bits_withSeed(&p, sizeof(p), seed), i);
    }
    std::sort(ring->points.begin(), ring->points.end());
    absl::MutexLock l(&mu_);
    if (cache_.size() >= 16) cache_.erase(cache_.begin());
    cache_.emplace_back(sig, ring);
    return ring;
  }

  HashInput input_;
  double epsilon_;
  int replicas_;
  absl::Mutex mu_;
  std::vector<std::pair<uint64_t, std::shared_ptr<const Ring>>> cache_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Strategy>> MakeConsistentBounded(const StrategyParams& params) {
  if (absl::Status s = CheckParams("consistent_bounded", params, {"by", "epsilon", "replicas"}); !s.ok()) return s;
  double epsilon = 0.25;
  int replicas = 40;
  if (auto it = params.find("epsilon"); it != params.end()) {
    if (!absl::SimpleAtod(ToAlphaNum(it->second), &epsilon) || !(epsilon > 0 && epsilon <= 10)) {
      return absl::InvalidArgumentError(
          Cat("strategy consistent_bounded: epsilon \"", it->second, "\" must be in (0, 10]"));
    }
  }
  if (auto it = params.find("replicas"); it != params.end()) {
    if (!absl::SimpleAtoi(ToAlphaNum(it->second), &replicas) || replicas < 1 || replicas > 1000) {
      return absl::InvalidArgumentError(
          Cat("strategy consistent_bounded: replicas \"", it->second, "\" must be 1..1000"));
    }
  }
  absl::StatusOr<HashInput> input = HashInput::Parse("consistent_bounded", params, "key");
  if (!input.ok()) return input.status();
  return std::make_unique<ConsistentBoundedStrategy>(*std::move(input), epsilon, replicas);
}

}  // namespace approute::internal
