// region.h — the state region's fixed layout and the records inside it.
//
// Everything here is plain data with fixed sizes, addressed by index or by
// offset from the region's base, so that the same bytes mean the same thing
// in every process that maps them (docs/state.md). Internal: not part of the
// public API; the layout version changes whenever this file's records do.
//
// Owns: the mapping (create, attach, check, unlink) and the layout. The
// tables that live in it are reached through their own components
// (node_table.h, session_table.h, affinity_table.h, owners.h).
// Crash: records are written so that a process killed at any instruction
// leaves them either as they were or recoverable by recovery.h.
#ifndef APPROUTE_SRC_STATE_REGION_H_
#define APPROUTE_SRC_STATE_REGION_H_

#include <pthread.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "approute/config.h"
#include "approute/limits.h"

namespace approute::internal {

inline constexpr uint64_t kMagic = 0x31455455'4f525041ULL;  // "APROUTE1" little-endian
inline constexpr uint32_t kLayoutVersion = 18;
inline constexpr uint32_t kNil = 0xFFFFFFFFu;
inline constexpr size_t kShards = 16;
inline constexpr size_t kConfigBytes = 256 * 1024;
inline constexpr size_t kAttrKeyLen = 32;
inline constexpr size_t kAttrValLen = 96;
inline constexpr size_t kSessionAttrsLen = 128;  // request attrs kept per session
inline constexpr size_t kNameLen = 32;           // resource and metric names
inline constexpr size_t kMaxOwners = 1024;       // processes using one region at once

static_assert(std::atomic<int64_t>::is_always_lock_free);
static_assert(std::atomic<uint64_t>::is_always_lock_free);
static_assert(std::atomic<double>::is_always_lock_free);

// memcpy, kept out of line: for a copy whose length is bounded by a fixed
// buffer GCC expands memcpy into `rep movs`, whose start-up costs several
// times libc's memcpy for the short ids and keys stored here (a fifth of a
// session insert, measured). n may be 0 with src null.
[[gnu::noinline]] inline void CopyBytes(char* dst, const char* src, size_t n) {
  if (n != 0) std::memcpy(dst, src, n);  // an empty view's data() may be null: UB for memcpy
}

// Copies `s` into a fixed buffer, NUL-terminated (bytes after the NUL are
// left as they were: readers stop at the NUL). Callers validated the length.
template <size_t N>
void SetFixed(char (&dst)[N], std::string_view s) {
  size_t n = s.size() < N - 1 ? s.size() : N - 1;
  CopyBytes(dst, s.data(), n);
  dst[n] = 0;
}
template <size_t N>
std::string_view GetFixed(const char (&src)[N]) {
  return std::string_view(src, strnlen(src, N));
}

// A process-shared, robust pthread mutex. If the owner died holding it, the
// next Lock() marks it consistent and returns true; the caller repairs what
// the lock guards (a table shard rebuilds its chains, see shard.h) and flags
// the region for a recount (Header::repair_needed).
class RobustMutex {
 public:
  void Init();
  // True when the previous owner died holding the lock.
  bool Lock();
  void Unlock() { pthread_mutex_unlock(&mu_); }

 private:
  pthread_mutex_t mu_;
};

class LockGuard {
 public:
  explicit LockGuard(RobustMutex& mu) : mu_(mu) { died_ = mu_.Lock(); }
  ~LockGuard() { mu_.Unlock(); }
  LockGuard(const LockGuard&) = delete;
  LockGuard& operator=(const LockGuard&) = delete;
  // True when the previous owner died holding the lock.
  bool owner_died() const { return died_; }

 private:
  RobustMutex& mu_;
  bool died_ = false;
};

// One process using the region (owners.h). pid 0 = free slot.
struct OwnerRecord {
  std::atomic<int32_t> pid;
  std::atomic<int32_t> in_op;   // threads of this process inside a state change
  std::atomic<uint64_t> start;  // the process's start time (/proc/PID/stat), against pid reuse
  uint64_t pad[6];
};

struct AttrRecord {
  char key[kAttrKeyLen];
  char value[kAttrValLen];
};

// One node slot: what the API shows and changes of a node, and what only
// the chosen node's path reads. Static fields change only under
// Header::registry_mu and bump Header::node_generation; dynamic fields are
// atomics. What a placement reads of every node in a pool is in the slot's
// NodeHot entry instead (same index).
struct NodeRecord {
  uint32_t in_use;
  uint32_t epoch;        // bumped each time the slot is (re)used; sessions keep it (NodeHot::epoch mirrors it)
  uint32_t from_config;  // 1: declared in YAML (a reload may remove it)
  uint32_t n_attrs;
  char id[kMaxNodeIdLen + 1];
  char uri[kMaxUriLen + 1];
  char pool[kMaxPoolLen + 1];
  int32_t weight;
  int32_t priority;
  int64_t capacity[kMaxResources];  // -1 = unlimited
  AttrRecord attrs[kMaxAttrs];
  std::atomic<uint64_t> routed_total;
  std::atomic<int64_t> load_updated_ms;

  // Membership by status report (registry lock held to change).
  uint32_t from_report;  // 1: joined through a status report (leases apply)
  char etag[24];         // entity tag of its current report, "" = none
  // 1 while the node's latest report says "health": "down" (its agent cannot
  // reach the service): health stays down whatever the probes say.
  std::atomic<uint32_t> report_down;
  uint64_t last_seq;  // highest report seq accepted (replay protection)
  std::atomic<int64_t> first_report_ms;
  // Wall ms the latest report for the node was accepted (here, or at another
  // proxy of the cluster and merged): orders reports for one node, with last_seq.
  std::atomic<int64_t> report_at_ms;
  // With `cluster:`: this proxy's share of each count as last written to
  // Redis; while Redis is out it bounds the share (cluster_placement.h).
  std::atomic<int64_t> synced_share[kMaxResources];

  // Health feedback.
  std::atomic<int32_t> probe_failures;        // consecutive
  std::atomic<int32_t> probe_successes;       // consecutive
  std::atomic<int32_t> consecutive_failures;  // passive results
  std::atomic<int32_t> ejections;             // times ejected so far
  std::atomic<double> latency_ewma_ms;        // 0 = no sample yet
  std::atomic<double> error_ewma;             // share of failed results, smoothed
  // RFC 7339: the oc-seq of the overload report in NodeHot::overload (the
  // newest wins; status/overload.h). 0 = none yet.
  std::atomic<uint64_t> overload_seq;
};

// The fields of one node slot that a placement reads for every node of a
// pool (admin state, health, lease, ejection, counts, load), packed into one
// array apart from the 1.6 KB NodeRecords so that a scan of a large pool
// reads one cache line per node: everything but the load figures and the
// counts of resources 4 and up is in the first line. These are the only copy
// of the fields (no mirror to keep in step), except `epoch`, which mirrors
// NodeRecord::epoch: written with it under the registry mutex, and re-synced
// from the records when a holder of that mutex died (RegistryLock) and by a
// recount (recovery.h).
struct alignas(64) NodeHot {
  std::atomic<uint32_t> epoch;
  std::atomic<uint32_t> admin;
  std::atomic<uint32_t> health;
  // Bits of kShedBusy / kShedOverload: set while busy_until_ms or the
  // overload fields may hold a deadline, so that the common case (neither)
  // stays one test of the first line. Cleared lazily once they are past.
  std::atomic<uint16_t> shed;
  // Bit r set: the node reported its own count of resource r (usage_* below
  // hold it), which bounds admission until usage_until_ms (state/usage.h).
  // 16 bits, one per resource (kMaxResources), so that with `shed` it fills
  // one word and the counts of resources 0-3 stay in the first line.
  std::atomic<uint16_t> usage_mask;
  std::atomic<int64_t> lease_expires_ms;  // 0 = no lease; past = takes no new calls
  std::atomic<int64_t> ejected_until_ms;  // 0 = not ejected
  std::atomic<int64_t> sessions[kMaxResources];
  // While draining: unix ms after which the node's keys go elsewhere (their
  // claims count as gone); 0 = no deadline. Cleared by any other admin state.
  std::atomic<int64_t> drain_deadline_ms;
  std::atomic<int64_t> up_since_ms;  // start of slow start, 0 = none
  // The node answered 503: alive, taking no new keys and no key-less calls
  // until then (unix ms; 0 = not busy). status/health.h.
  std::atomic<int64_t> busy_until_ms;
  // RFC 7339 overload control (status/overload.h): the share of new calls
  // shed, packed as (until_ms << 7) | percent (percent 0..100; 0 = none).
  std::atomic<uint64_t> overload;
  std::atomic<uint64_t> load_mask;        // bit i set: load[i] is a reported load figure
  std::atomic<uint64_t> quality_mask;     // bit i set: load[i] is a reported quality figure
  std::atomic<double> load[kMaxMetrics];  // load and quality figures, by metric name index
  // The node's own counts (state/usage.h), read only for the resources in
  // usage_mask: the count it reported, the count approute had there when
  // the report was accepted (the deployment's, with cluster:), and until
  // when the report counts (unix ms).
  std::atomic<int64_t> usage_reported[kMaxResources];
  std::atomic<int64_t> usage_base[kMaxResources];
  std::atomic<int64_t> usage_until_ms;
};
static_assert(offsetof(NodeHot, sessions) + 4 * sizeof(int64_t) == 64, "resources 0-3 share the first line");
static_assert(sizeof(NodeHot) % 64 == 0);
static_assert(kMaxResources <= 16, "NodeHot::usage_mask has a bit per resource");
inline constexpr uint16_t kShedBusy = 1;
inline constexpr uint16_t kShedOverload = 2;

// Decision reasons counted per app (stats.h has the names).
inline constexpr size_t kReasons = 6;     // affinity, strategy, retry, session, no_node, prefer
inline constexpr size_t kRetryCodes = 8;  // distinct retry codes counted per app; more go to "other"
// route() latency histogram: upper bounds 1 us * 2^i, i < kLatencyBuckets - 1, then +Inf.
inline constexpr size_t kLatencyBuckets = 16;

// Why a strict key's call was refused (stats.h has the names).
inline constexpr size_t kKeyRefusals = 5;  // key_full, key_down, key_draining, key_disabled, key_tried

// Counters every process adds to (Prometheus counters: they only grow).
struct AppCounters {
  std::atomic<int64_t> decisions[kReasons];
  std::atomic<int32_t> retry_code[kRetryCodes];   // 0 = free
  std::atomic<int64_t> retries[kRetryCodes + 1];  // the last one: codes that did not fit
  std::atomic<int64_t> key_refusals[kKeyRefusals];
  std::atomic<int64_t> headroom_refusals;  // new keys that found no node because headroom turned nodes away
  // The retry budget (routing/retry_budget.h): retries past it, ever; the
  // app's live sessions (a gauge the recount repairs); and the current
  // one-second window packed as (unix second << 24) | retries in it.
  std::atomic<int64_t> budget_refusals;
  std::atomic<int64_t> in_flight;
  std::atomic<uint64_t> retry_window;
};

struct AppSlot {
  char name[kMaxAppNameLen + 1];
  uint32_t in_use;
  std::atomic<uint64_t> ticket;
  RobustMutex mu;  // guards this app's row of the shared slot array
  AppCounters counters;
};

struct LatencyHistogram {
  std::atomic<int64_t> buckets[kLatencyBuckets];  // not cumulative
  std::atomic<int64_t> sum_ns;
  std::atomic<int64_t> count;
};

// Table entries: `in_use` is the commit flag. An entry is filled while it is
// neither free nor in use, then committed; removal clears in_use first. So a
// process killed mid-operation leaves an entry that is either wholly live or
// reclaimable (shard.h Rebuild).
struct SessionEntry {
  uint32_t next;
  uint32_t in_use;
  uint64_t hash;
  char call_id[kMaxCallIdLen + 1];
  char key[kMaxKeyLen + 1];
  uint32_t app;       // AppSlot index
  uint32_t resource;  // resource index
  uint32_t extra;     // bit r: the session also holds a unit of resource r (an app of several resources)
  uint32_t node;      // node slot
  uint32_t node_epoch;
  uint64_t claim;  // affinity claim this session holds a reference on (0 = none)
  // The app's preference claim this session holds a reference on (0 =
  // none), under the key derived from the hash of the call's `prefer`
  // value (affinity_table.h, PreferKey).
  uint64_t pref_claim;
  uint64_t pref_hash;
  int64_t created_ms;
  int64_t expires_ms;
  int32_t attempt;
  int32_t confirmed;
  uint32_t n_tried;
  uint32_t tried[kMaxAttemptsLimit];
  // The request's attrs, for retry(): length-prefixed key/value pairs in key
  // order, as many whole pairs as fit (session_attrs.h).
  char attrs[kSessionAttrsLen];
};

struct AffinityEntry {
  uint32_t next;
  uint32_t in_use;
  uint64_t hash;
  uint32_t app;
  uint32_t node;
  uint32_t node_epoch;
  uint32_t answered;  // 1 once a session holding the claim was answered (confirmed)
  uint64_t claim;     // unique id of this claim; sessions refer to it
  int64_t refs;       // live sessions holding the claim
  int64_t grace_ms;
  int64_t expires_ms;  // INT64_MAX while refs > 0
  char key[kMaxKeyLen + 1];
};

// A chained hash table with an index free list, one per shard. Entries live
// in a fixed array; buckets and links are indexes.
struct ShardHeader {
  RobustMutex mu;
  uint32_t capacity;
  uint32_t nbuckets;
  uint32_t count;
  uint32_t free_head;
  uint32_t fresh;        // entries [fresh, capacity) were never used (free, off the list)
  uint32_t sweep_next;   // the bucket the routing path's bounded sweep visits next (shard.h)
  uint64_t entries_off;  // offsets from the region base
  uint64_t buckets_off;
};

// The cluster placement's state shared by this host's processes
// (cluster_breaker.h, cluster_placement.h). Unused without `cluster:`.
inline constexpr size_t kRttBuckets = 24;  // bucket i: round trips under 2^i microseconds
struct ClusterRecord {
  std::atomic<int64_t> open_until_ms;         // breaker: Redis skipped until then (monotonic ms); 0 = closed
  std::atomic<int64_t> consecutive_failures;  // failed round trips since the last good one
  std::atomic<int64_t> failures;              // failed round trips, ever
  std::atomic<int64_t> round_trips;           // good round trips, ever
  std::atomic<int64_t> degraded_placements;   // placements made on local state alone
  std::atomic<int64_t> last_sync_ms;          // wall clock of the last good round trip, 0 = never
  std::atomic<int64_t> refreshed_ms;          // monotonic ms of the last lease refresh and republish
  std::atomic<int64_t> admin_unpublished;     // 1: an admin state was set while Redis was out
  std::atomic<int64_t> proxies_seen;          // live proxies at the last republish (0 = never synced)
  std::atomic<int64_t> outage_refusals;       // reservations refused by the outage share bound, ever
  std::atomic<int64_t> rtt_us[kRttBuckets];   // histogram of good round trips
};

struct Header {
  uint64_t magic;
  uint32_t layout_version;
  uint32_t header_size;
  uint64_t total_size;
  uint64_t max_nodes;
  uint64_t max_sessions;
  uint64_t max_affinities;
  uint64_t session_entry_size;
  uint64_t affinity_entry_size;
  uint64_t node_record_size;
  uint64_t node_hot_size;
  std::atomic<uint32_t> ready;

  RobustMutex registry_mu;  // nodes' static fields, names, apps, config text
  std::atomic<uint64_t> node_generation;
  std::atomic<uint64_t> config_generation;
  std::atomic<uint64_t> claim_seq;
  std::atomic<uint64_t> sweep_cursor;
  std::atomic<int64_t> affinity_count;
  std::atomic<int64_t> expired_sessions;
  std::atomic<int64_t> reports_accepted;
  std::atomic<int64_t> reports_refused[8];  // by Refusal (status_reports.h)

  // Crash recovery (owners.h, recovery.h).
  std::atomic<uint32_t> repair_holder;   // owner slot + 1 of the process recounting, 0 = none
  std::atomic<uint32_t> repair_needed;   // a robust mutex found its owner dead
  std::atomic<uint64_t> repairs;         // recounts done
  std::atomic<int64_t> owner_check_ms;   // last check for dead owners
  std::atomic<int64_t> recounted_drift;  // counts corrected by recounts, ever (absolute)
  // The latest end of an RFC 7339 overload report applied to any node (unix
  // ms; status/overload.h): before it, placements skip the draws that
  // precede a pool scan, so that a node shed for a call costs a cursor
  // strategy no extra ticket.
  std::atomic<int64_t> overload_until_ms;
  // status.usage_max_age: how long a node's reported counts bound its
  // admission (state/usage.h); written by each configuration applied.
  std::atomic<int64_t> usage_max_age_ms;
  LatencyHistogram route_latency;  // a sample of route() calls (stats.h)
  OwnerRecord owners[kMaxOwners];
  ClusterRecord cluster;

  uint32_t n_resources;
  uint32_t n_metrics;
  char resource_names[kMaxResources][kNameLen];
  char metric_names[kMaxMetrics][kNameLen];
  AppSlot apps[kMaxApps];

  uint64_t nodes_off;
  uint64_t hot_off;        // NodeHot[max_nodes]
  uint64_t app_slots_off;  // int64[kMaxApps][max_nodes]
  ShardHeader session_shards[kShards];
  ShardHeader affinity_shards[kShards];

  // The stored YAML, double-buffered: a writer fills the inactive buffer,
  // then flips config_active, so a crash never leaves half a text.
  std::atomic<uint32_t> config_active;
  uint32_t config_len[2];
  char config[2][kConfigBytes];
};

// A mapped region: private (anonymous memory) or a named shared segment.
class Region {
 public:
  // Creates a private region.
  static absl::StatusOr<std::unique_ptr<Region>> CreatePrivate(const StateLimits& limits);
  // Opens `name`, creating and initialising it with `limits` if absent.
  // `created` tells which happened. When it existed, its limits must equal
  // `limits` (FailedPrecondition otherwise).
  static absl::StatusOr<std::unique_ptr<Region>> OpenShared(const std::string& name, const StateLimits& limits,
                                                            bool* created);
  // Attaches an existing segment, whatever its limits.
  static absl::StatusOr<std::unique_ptr<Region>> AttachShared(const std::string& name);
  static absl::StatusOr<bool> Unlink(const std::string& name);
  static absl::StatusOr<std::string> NormaliseName(std::string_view name);

  ~Region();

  Header& header() const { return *header_; }
  NodeRecord& node(uint32_t slot) const { return nodes_[slot]; }
  NodeHot& hot(uint32_t slot) const { return hot_[slot]; }
  uint32_t max_nodes() const { return static_cast<uint32_t>(header_->max_nodes); }
  int64_t* app_slots(uint32_t app) const { return app_slots_ + size_t{app} * header_->max_nodes; }
  char* base() const { return base_; }
  const std::string& name() const { return name_; }
  StateLimits limits() const;

  template <typename T>
  T* at(uint64_t off) const {
    return reinterpret_cast<T*>(base_ + off);
  }

 private:
  Region(char* base, size_t size, std::string name);
  static size_t ComputeLayout(const StateLimits& limits, Header* h);
  static void Initialise(char* base, const StateLimits& limits, size_t size);
  static absl::Status Check(const char* base, size_t size, const std::string& name);
  void Bind();

  char* base_;
  size_t size_;
  std::string name_;
  Header* header_ = nullptr;
  NodeRecord* nodes_ = nullptr;
  NodeHot* hot_ = nullptr;
  int64_t* app_slots_ = nullptr;
};

}  // namespace approute::internal

#endif  // APPROUTE_SRC_STATE_REGION_H_
