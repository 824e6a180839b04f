// session_table.h — one record per routed call, by call id: its node, app,
// resource, affinity claim, attempts and the nodes it already tried.
//
// Owns: the session shards (Header::session_shards) and
// Header::expired_sessions. The live count is the sum of the shards' counts
// (kept under their locks, exact again after a rebuild), so an insert or a
// removal adds no atomic read-modify-write on a line every process shares.
// Locking: each operation takes one shard's robust mutex, never two; it
// holds no other lock meanwhile.
// Crash: entries are committed and removed with one flag (shard.h), so a
// record is either wholly live or gone. The counts a record explains (its
// node's count, its claim's reference) are changed by the caller around the
// record's insertion and removal; if a process dies between the two, the
// recount (recovery.h) derives them from the records again.
#ifndef APPROUTE_SRC_STATE_SESSION_TABLE_H_
#define APPROUTE_SRC_STATE_SESSION_TABLE_H_

#include <cstdint>
#include <cstring>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/inlined_vector.h"
#include "absl/functional/function_ref.h"
#include "approute/types.h"
#include "state/region.h"

namespace approute::internal {

// A key copied out of a record, in place (no allocation on the end path).
class KeyCopy {
 public:
  KeyCopy() = default;
  KeyCopy(std::string_view k) { Set(k); }  // NOLINT: converts like a string
  void Set(std::string_view k) {
    len_ = k.size() < sizeof(buf_) ? k.size() : sizeof(buf_) - 1;
    CopyBytes(buf_, k.data(), len_);
  }
  operator std::string_view() const { return std::string_view(buf_, len_); }  // NOLINT
  bool empty() const { return len_ == 0; }

 private:
  size_t len_ = 0;
  char buf_[kMaxKeyLen + 1];
};

// What a removed session held, to be given back: its node's count and its claim.
struct Held {
  uint32_t app = 0, resource = 0, node = kNil, epoch = 0;
  uint64_t claim = 0;
  uint64_t pref_claim = 0, pref_hash = 0;  // the preference claim held (0: none) and its value's hash
  KeyCopy key;
  uint32_t extra = 0;  // bit r: a unit of resource r held too (SessionEntry::extra)
};

// A new session's fields.
struct SessionInit {
  std::string_view call_id, key;  // key empty when the session holds no claim
  uint64_t call_id_hash = 0;      // Hash(call_id) when the caller has it; 0: computed by Add
  uint32_t app = 0, resource = 0, node = kNil, epoch = 0;
  uint32_t extra = 0;  // bit r: a unit of resource r reserved too
  uint64_t claim = 0;
  uint64_t pref_claim = 0, pref_hash = 0;  // the preference claim the session holds (0: none)
  int64_t created_ms = 0, expires_ms = 0;
  const uint32_t* tried = nullptr;  // nodes to record as already tried
  size_t n_tried = 0;
  const std::map<std::string, std::string>* attrs = nullptr;  // the request's, kept for retry()
};

// A session as the API lists it.
struct SessionRow {
  std::string call_id, key;
  uint32_t app = 0, node = kNil, epoch = 0;
  int64_t created_ms = 0, expires_ms = 0;
  int attempt = 0;
  bool confirmed = false;
};

class SessionTable {
 public:
  explicit SessionTable(const Region& region) : region_(region) {}

  static uint64_t Hash(std::string_view call_id);

  // Starts loading the bucket of the call id whose Hash() is `hash`, without
  // a lock (the bucket array never moves): Route() asks for it before the
  // placement, so that its cache miss overlaps the affinity lookup's
  // instead of following it. Only a hint; reads nothing.
  void Prefetch(uint64_t hash) const;

  enum class Insert { kInserted, kDuplicate, kFull };
  // Inserts a session for `init.call_id`. A live session of that call id is
  // left as it is (kDuplicate, copied into *existing); an expired one is
  // replaced. When the shard is full its expired entries are swept first.
  // Expired sessions removed on the way are appended to *expired.
  Insert Add(const SessionInit& init, int64_t now, SessionEntry* existing, std::vector<Held>* expired);

  // A copy of the live session of `call_id`.
  std::optional<SessionEntry> Get(std::string_view call_id, int64_t now);

  // Removes the session of `call_id` (live or expired); what it held goes to *held.
  bool Remove(std::string_view call_id, Held* held);

  // Runs fn on the live session of `call_id` under the shard lock. fn returns
  // true to remove it (what it held then goes to *held). False when absent.
  bool Modify(std::string_view call_id, int64_t now, absl::FunctionRef<bool(SessionEntry&)> fn, Held* held);

  // Marks the session answered; what it holds goes to *held.
  bool Confirm(std::string_view call_id, Held* held);

  // Removes the expired sessions of shard `s`, appending what they held:
  // all of them with max_buckets 0, else those of the next max_buckets
  // buckets (Shard::RemoveIfBounded).
  int64_t Expire(size_t s, int64_t now, std::vector<Held>* held, uint32_t max_buckets = 0);

  // Live sessions passing `keep`, at most `limit` (0 = all).
  std::vector<SessionRow> List(int64_t now, absl::FunctionRef<bool(const SessionEntry&)> keep, size_t limit);

  // Session entries in the table now (live or expired, not yet swept); takes
  // each shard's lock in turn.
  int64_t Count();

  static Held HeldBy(const SessionEntry& e);
  static void HeldBy(const SessionEntry& e, Held* out);  // in place: no copy of the key buffer

  // The request attrs a session keeps: whole pairs in key order while they
  // fit in kSessionAttrsLen bytes (one length byte before each key and
  // value); a pair that does not fit, and every one after it, is not kept.
  static void PackAttrs(const std::map<std::string, std::string>* attrs, char (&out)[kSessionAttrsLen]);
  static std::map<std::string, std::string> UnpackAttrs(const char (&in)[kSessionAttrsLen]);

 private:
  const Region& region_;
};

}  // namespace approute::internal

#endif  // APPROUTE_SRC_STATE_SESSION_TABLE_H_
