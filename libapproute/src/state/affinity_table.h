// affinity_table.h — (app, key) -> node claims: held while sessions use
// them, kept for a grace time after the last one ends.
//
// Owns: the affinity shards (Header::affinity_shards), Header::claim_seq and
// Header::affinity_count.
// Locking: each operation takes one shard's robust mutex, never two. The
// callbacks it takes (whether a node is usable, reserving capacity) run
// under that lock and must take no table lock themselves (they read node
// atomics only).
// Crash: a new claim is committed with one flag (shard.h), so a key maps to
// one node at most; a claim's reference count is repaired by the recount
// (recovery.h) from the sessions that hold it.
#ifndef APPROUTE_SRC_STATE_AFFINITY_TABLE_H_
#define APPROUTE_SRC_STATE_AFFINITY_TABLE_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "state/region.h"

namespace approute::internal {

// Keys given to route() never start with this byte; keys the router derives
// (PreferKey) always do, so the two never meet in the table.
inline constexpr char kDerivedKeyMark = '\x1f';

// An app's preference value (route()'s `prefer`) is kept as a claim like a
// key's, under a key derived from the value's hash: the node that holds it,
// a reference per session placed under it on that node, and a grace time.
// Sessions keep the hash (SessionEntry::pref_hash), so the key can be
// rebuilt when they end.
uint64_t PreferHash(std::string_view prefer);  // never 0
struct PreferKey {
  explicit PreferKey(uint64_t prefer_hash);
  std::string_view view() const { return std::string_view(text, sizeof(text)); }
  char text[18];  // the mark, 'p', 16 hex digits
};

struct AffinityKey {
  uint32_t app = 0;
  std::string_view key;
  uint64_t hash = 0;
  AffinityKey(uint32_t a, std::string_view k);
};

// A node incarnation and, once claimed, the claim a session refers to.
struct ClaimRef {
  uint32_t slot = kNil;
  uint32_t epoch = 0;
  uint64_t claim = 0;  // 0 = the session holds no claim
};

struct AffinityRow {
  uint32_t app = 0;
  std::string key;
  uint32_t node = kNil, epoch = 0;
  int64_t refs = 0;
  int64_t expires_ms = 0;  // INT64_MAX while refs > 0
};

class AffinityTable {
 public:
  explicit AffinityTable(const Region& region) : region_(region) {}

  // Affinity hit: if the key's claim is live and `take(slot, epoch)` accepts
  // its node (usable, and a unit of capacity reserved), the caller joins the
  // claim (a reference is added). nullopt otherwise.
  std::optional<ClaimRef> Join(const AffinityKey& k, int64_t now,
                               absl::FunctionRef<bool(uint32_t slot, uint32_t epoch)> take);

  struct ClaimOutcome {
    ClaimRef ref;        // where the call goes and the claim it holds (claim 0: none)
    bool moved = false;  // joined another process's claim: `chosen`'s reservation must be given back
  };
  // After the strategy chose (and reserved) `chosen`: claims the key for it.
  // If another process claimed it meanwhile for a node `alive` accepts and
  // `take` reserves, the call joins that claim instead (moved); if the key's
  // node is alive with live sessions but not for this call, the call goes to
  // `chosen` without the key. A full shard first drops claims past their
  // grace time, then the claim nearest the end of its grace time (never one
  // with live sessions): ResourceExhausted only when every claim is live.
  absl::StatusOr<ClaimOutcome> Claim(const AffinityKey& k, ClaimRef chosen, int64_t grace_ms, int64_t now,
                                     absl::FunctionRef<bool(uint32_t slot, uint32_t epoch)> alive,
                                     absl::FunctionRef<bool(uint32_t slot, uint32_t epoch)> take);

  enum class DropMode {
    kGrace,      // the last reference starts the claim's grace time (a grace of 0 deletes it)
    kNoGrace,    // the last reference deletes the claim (its node is leaving)
    kRelease,    // the claim goes now, whatever its references (the node said it is full)
    kAbandoned,  // the session ended unanswered: the last reference deletes the claim
                 // unless a session holding it was ever answered (then: grace), so
                 // callers cannot fill the table with keys of calls that never got through
  };
  // Drops one reference on `claim` of the key, then as `mode` says. Returns
  // whether the claim was deleted.
  bool Drop(const AffinityKey& k, uint64_t claim, DropMode mode, int64_t now);
  bool Drop(const AffinityKey& k, uint64_t claim, bool release, int64_t now, bool abandoned = false) {
    return Drop(k, claim, release ? DropMode::kRelease : abandoned ? DropMode::kAbandoned : DropMode::kGrace, now);
  }
  // A session holding `claim` was answered: the claim is a real one.
  void MarkAnswered(const AffinityKey& k, uint64_t claim);

  // The key's claim here: live sessions holding it (0: none, or in its grace
  // time), its grace time and its node.
  struct Hold {
    int64_t refs = 0;
    int64_t grace_ms = 0;
    uint32_t slot = kNil, epoch = 0;  // the claim's node (kNil: no claim)
    int64_t expires_ms = 0;           // the end of its grace time (INT64_MAX while refs > 0)
  };
  // A claim past its grace time counts as none (now = 0: any claim still in the table).
  Hold HoldOf(const AffinityKey& k, int64_t now = 0);

  // Deletes every claim on (slot, epoch) that no session holds; returns how many.
  int64_t ForgetIdle(uint32_t slot, uint32_t epoch);

  // Forgets the claims of shard `s` past their grace time: all of them with
  // max_buckets 0, else those of the next max_buckets buckets.
  int64_t Sweep(size_t s, int64_t now, uint32_t max_buckets = 0);

  // The claims `keep` accepts, derived keys (PreferKey) left out.
  std::vector<AffinityRow> List(int64_t now, absl::FunctionRef<bool(const AffinityEntry&)> keep, size_t limit);

 private:
  const Region& region_;
};

}  // namespace approute::internal

#endif  // APPROUTE_SRC_STATE_AFFINITY_TABLE_H_
