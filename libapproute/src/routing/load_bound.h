// load_bound.h — affinity within a load bound (app option affinity.bound).
//
// A node is within the bound while one more session keeps its load for the
// app's resource at most bound x the mean over the app's candidates, loads
// being sessions relative to capacity (to weight when the capacity is
// unlimited), rounded up as in consistent hashing with bounded loads:
//   sessions + 1 <= ceil(bound x (S + 1) x norm / N)
// with S the candidates' sessions, norm the node's capacity (or weight) and
// N the candidates' sum of norms. At least one candidate is always within.
//
// A key whose node is above the bound goes to its next home: the node
// within the bound that ranks first in the key's rendezvous (highest random
// weight) order, so a popular key spills over to the same one or two nodes.
//
// Thread-safety: a LoadBound is built and used by one thread during one
// placement; it reads a candidate list that thread owns.
#ifndef APPROUTE_SRC_ROUTING_LOAD_BOUND_H_
#define APPROUTE_SRC_ROUTING_LOAD_BOUND_H_

#include <cstdint>
#include <vector>

#include "approute/strategy.h"

namespace approute::internal {

class LoadBound {
 public:
  struct Entry {
    uint32_t slot = 0;
    size_t index = 0;  // in the candidate list it was built from
    bool within = false;
    uint64_t rank = 0;  // the key's rendezvous score for the node
  };

  LoadBound() = default;
  // The bound over `cands` for the key whose hash is `key_hash`.
  LoadBound(const std::vector<Candidate>& cands, double bound, uint64_t key_hash);

  // Whether the node in `slot` is within the bound; a node that is not a
  // candidate (draining, full, avoided) is not the bound's to judge: true.
  bool Within(uint32_t slot) const;

  // Candidates within the bound, best rendezvous rank first.
  std::vector<Entry> NextHomes() const;

 private:
  std::vector<Entry> entries_;
};

}  // namespace approute::internal

#endif  // APPROUTE_SRC_ROUTING_LOAD_BOUND_H_
