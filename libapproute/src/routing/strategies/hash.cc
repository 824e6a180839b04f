// hash: weighted rendezvous (highest random weight) hashing over one input.
// Each candidate scores -weight / ln(u), u uniform in (0,1) from
// XXH3(input, seed = XXH3(node id)); the highest score wins. The same input
// maps to the same node in every process and on every host, and removing a
// node moves only the inputs that were on it.
//
// Option `by`: call_id (default), key, from, to, ruri_user, or attr:NAME
// (request attribute NAME). A request without the input hashes its call id.
#include <xxhash.h>

#include <cmath>

#include "routing/strategies/strategies.h"
#include "util/str_util.h"

namespace approute::internal {
namespace {

class HashStrategy final : public Strategy {
 public:
  std::vector<std::string> RequestAttrs() const override { return input_.Attrs(); }
  explicit HashStrategy(HashInput input) : input_(std::move(input)) {}

  absl::StatusOr<size_t> Pick(const PickRequest& request, absl::Span<const Candidate> candidates,
                              StrategyContext&) override {
    std::string_view input = input_.Of(request);
    size_t best = candidates.size();
    double best_score = 0;
    for (size_t i = 0; i < candidates.size(); ++i) {
      const Candidate& c = candidates[i];
      if (c.weight <= 0) continue;
      uint64_t seed = XXH3_64bits(c.id.data(), c.id.size());
      uint64_t h = XXH3_64bits_withSeed(input.data(), input.size(), seed);
      double u = (static_cast<double>(h >> 11) + 0.5) * (1.0 / 9007199254740992.0);  // (0,1)
      double score = -static_cast<double>(c.weight) / std::log(u);
      if (best == candidates.size() || score > best_score) {
        best = i;
        best_score = score;
      }
    }
    if (best == candidates.size()) return absl::UnavailableError("every candidate has weight 0");
    return best;
  }

 private:
  HashInput input_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Strategy>> MakeHash(const StrategyParams& params) {
  if (absl::Status s = CheckParams("hash", params, {"by"}); !s.ok()) return s;
  absl::StatusOr<HashInput> input = HashInput::Parse("hash", params, "call_id");
  if (!input.ok()) return input.status();
  return std::make_unique<HashStrategy>(*std::move(input));
}

}  // namespace approute::internal
