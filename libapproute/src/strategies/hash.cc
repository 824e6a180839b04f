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

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "strategies/strategies.h"
#include "str_util.h"

namespace approute::internal {
namespace {

class HashStrategy final : public Strategy {
 public:
  HashStrategy(std::string source, bool is_key) : source_(std::move(source)), is_key_(is_key) {}

  absl::StatusOr<size_t> Pick(const PickRequest& request, absl::Span<const Candidate> candidates,
                              StrategyContext&) override {
    std::string_view input = request.call_id;
    if (is_key_) {
      if (!request.key.empty()) input = request.key;
    } else if (!source_.empty() && request.attrs != nullptr) {
      auto it = request.attrs->find(source_);
      if (it != request.attrs->end() && !it->second.empty()) input = it->second;
    }
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
  std::string source_;  // attribute name; empty = call id
  bool is_key_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Strategy>> MakeHash(const StrategyParams& params) {
  if (absl::Status s = CheckParams("hash", params, {"by"}); !s.ok()) return s;
  std::string by = "call_id";
  if (auto it = params.find("by"); it != params.end()) by = it->second;
  if (by == "call_id") return std::make_unique<HashStrategy>("", false);
  if (by == "key") return std::make_unique<HashStrategy>("", true);
  if (by == "from" || by == "to" || by == "ruri_user") return std::make_unique<HashStrategy>(by, false);
  if (absl::StartsWith(by, "attr:") && by.size() > 5) {
    return std::make_unique<HashStrategy>(by.substr(5), false);
  }
  return absl::InvalidArgumentError(Cat(
      "strategy hash: by \"", by, "\" is not one of call_id, key, from, to, ruri_user, attr:NAME"));
}

}  // namespace approute::internal
