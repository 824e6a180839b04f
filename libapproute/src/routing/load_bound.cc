#include "routing/load_bound.h"

#include <xxhash.h>

#include <algorithm>
#include <cmath>

namespace approute::internal {
namespace {

double Norm(const Candidate& c) {
  if (c.capacity > 0) return static_cast<double>(c.capacity);
  return static_cast<double>(std::max<int32_t>(c.weight, 1));
}

uint64_t Mix(uint64_t x) {  // SplitMix64 finaliser
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

}  // namespace

LoadBound::LoadBound(const std::vector<Candidate>& cands, double bound, uint64_t key_hash) {
  double sessions = 0, norms = 0;
  for (const Candidate& c : cands) {
    sessions += static_cast<double>(c.sessions);
    norms += Norm(c);
  }
  entries_.reserve(cands.size());
  for (size_t i = 0; i < cands.size(); ++i) {
    const Candidate& c = cands[i];
    double allowed = norms > 0 ? std::ceil(bound * (sessions + 1) * Norm(c) / norms) : 1;
    uint64_t node_hash = XXH3_64bits(c.id.data(), c.id.size());
    entries_.push_back(Entry{c.slot, i, static_cast<double>(c.sessions + 1) <= allowed, Mix(key_hash ^ node_hash)});
  }
}

bool LoadBound::Within(uint32_t slot) const {
  for (const Entry& e : entries_) {
    if (e.slot == slot) return e.within;
  }
  return true;
}

std::vector<LoadBound::Entry> LoadBound::NextHomes() const {
  std::vector<Entry> out;
  for (const Entry& e : entries_) {
    if (e.within) out.push_back(e);
  }
  std::sort(out.begin(), out.end(), [](const Entry& a, const Entry& b) { return a.rank > b.rank; });
  return out;
}

}  // namespace approute::internal
