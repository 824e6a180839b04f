// recovery.h — puts the region right after a process died inside a state
// change: every count is recomputed from the records that explain it.
//
// Owns: nothing; it writes the node counters (and re-syncs each hot entry's
// epoch mirror from its record), the affinity reference counts,
// the table counts and, for shards whose chains a dead process may have
// left half-linked, the chains and free lists (shard.h Rebuild).
//
// What holds afterwards: for every node and resource, the count equals the
// number of live session records on that node (same slot and epoch); every
// claim's reference count equals the number of sessions that hold it, and a
// claim no session holds enters its grace time; no entry is lost from or
// doubly linked into a table.
//
// Locking: Recount() must run with every live process outside its state
// changes (Owners::RunExclusive) and, for the epoch mirrors, with the
// registry mutex held (the router does both); it takes each shard's lock in
// turn, never two at once.
#ifndef APPROUTE_SRC_STATE_RECOVERY_H_
#define APPROUTE_SRC_STATE_RECOVERY_H_

#include <cstdint>

#include "state/region.h"

namespace approute::internal {

struct RecountResult {
  int64_t sessions = 0;
  int64_t affinities = 0;
  int64_t drift = 0;  // sum over nodes and resources of |old count - new count|
};

RecountResult Recount(const Region& region, int64_t now_ms);

}  // namespace approute::internal

#endif  // APPROUTE_SRC_STATE_RECOVERY_H_
