// router_impl.h — Router::Impl: the router's components wired together, and
// its entry points other than the routing flow (configuration, operator
// commands, feedback, views). The flow itself is in router.cc.
//
// Owns: one mapped region and, over it, one of each component (see the list
// in router.cc); per process, the last snapshot and the seeded random state.
// Thread-safety: as Router (approute/router.h). Private: included by
// router.cc and router_api.cc only.
#ifndef APPROUTE_SRC_ROUTER_ROUTER_IMPL_H_
#define APPROUTE_SRC_ROUTER_ROUTER_IMPL_H_

#include <time.h>
#include <mutex>
#include <shared_mutex>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/inlined_vector.h"
#include "absl/functional/function_ref.h"
#include "approute/explain.h"
#include "approute/router.h"
#include "placement/cluster_placement.h"
#include "placement/placement.h"
#include "router/candidate_scan.h"
#include "router/explain.h"
#include "routing/load_bound.h"
#include "routing/policies.h"
#include "routing/retry_budget.h"
#include "routing/strategy_context.h"
#include "state/affinity_table.h"
#include "state/node_table.h"
#include "state/owners.h"
#include "state/recovery.h"
#include "state/region.h"
#include "state/session_table.h"
#include "state/stats.h"
#include "status/health.h"
#include "status/overload.h"
#include "status/status_reports.h"
#include "util/str_util.h"
#include "util/ticker.h"

namespace approute {

// The implementation's own namespace; this header is private to two files.
using namespace internal;  // NOLINT

namespace internal {

inline int64_t RealNowMs() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME_COARSE, &ts);  // ms resolution is plenty for expiry, at a fraction of the cost
  return int64_t{ts.tv_sec} * 1000 + ts.tv_nsec / 1000000;
}

inline ReportResult ServerError(std::string reason) {
  ReportResult r;
  r.code = 500;
  r.reason = std::move(reason);
  return r;
}

}  // namespace internal

class Router::Impl {
 public:
  Impl(std::unique_ptr<Region> region, const RouterOptions& o)
      : region_(std::move(region)),
        now_(o.now_ms ? o.now_ms : RealNowMs),
        nodes_(*region_),
        sessions_(*region_),
        affinity_(*region_),
        health_(*region_),
        reports_(*region_, nodes_),
        id_(NextRouterId()),
        policies_(*region_, nodes_, id_),
        owners_(*region_),
        counters_(*region_),
        placement_(std::make_unique<RegionPlacement>(*region_, affinity_)),
        seeded_(o.random_seed != 0),
        rng_(o.random_seed) {
    policies_.SetResolver(o.strategies);
  }

  static uint64_t NextRouterId() {
    static std::atomic<uint64_t> next{1};
    return next.fetch_add(1, std::memory_order_relaxed);
  }
  Header& H() const { return region_->header(); }

  // ---- configuration -------------------------------------------------------

  absl::Status Apply(const Config& cfg) {
    absl::StatusOr<Owners::Op> op = owners_.Enter();
    if (!op.ok()) return op.status();
    RegistryLock g(H());
    if (absl::Status s = nodes_.ApplyConfigLocked(cfg); !s.ok()) return s;
    policies_.StoreLocked(cfg);
    return absl::OkStatus();
  }
  absl::Status Prepare(const Config& cfg, std::string_view source) { return policies_.Prepare(cfg, source); }

  // With `cluster:`, placements go through Redis (cluster_placement.h). Called
  // once, before the router is handed out; without it this host's region is
  // the only state.
  absl::Status UseCluster(const ClusterConfig& c) {
    cluster_cfg_ = c;
    if (!c.enabled) return absl::OkStatus();
    absl::StatusOr<RedisUrl> url = ParseRedisUrl(c.redis);
    if (!url.ok()) return url.status();
    url->sentinel_password = c.sentinel_password;
    auto cp = std::make_unique<ClusterPlacement>(*region_, affinity_, nodes_, reports_, c, *std::move(url),
                                                 [this](std::string_view id) -> std::optional<ClaimRef> {
                                                   std::shared_ptr<const Snapshot> snap = GetSnapshot();
                                                   const NodeView* v = snap->Find(id);
                                                   if (v == nullptr) return std::nullopt;
                                                   return ClaimRef{v->slot, v->epoch, 0};
                                                 });
    cluster_ = cp.get();
    placement_ = std::move(cp);
    return absl::OkStatus();
  }
  // At start: the deployment's nodes by status report join this host's
  // table before the first call (later, the sweep keeps them in step).
  void SyncClusterMembers() {
    if (cluster_ != nullptr) (void)cluster_->SyncMembers(now_());
  }
  // A reload cannot change `cluster:` (the placement and its connection are
  // built once): FailedPrecondition naming the source.
  absl::Status CheckClusterUnchanged(const ClusterConfig& c, std::string_view source) const {
    const ClusterConfig& h = cluster_cfg_;
    if (c.enabled == h.enabled && c.redis == h.redis && c.name == h.name && c.proxy == h.proxy &&
        c.timeout_ms == h.timeout_ms && c.outage_headroom_pct == h.outage_headroom_pct &&
        c.reserve_block == h.reserve_block && c.sentinel_password == h.sentinel_password) {
      return absl::OkStatus();
    }
    return absl::FailedPreconditionError(
        Cat(source, ": cluster: cannot change on reload (restart the proxy to change it)"));
  }
  ClusterStatus ClusterView() {
    ClusterStatus s;
    if (cluster_ == nullptr) return s;
    const ClusterRecord& rec = H().cluster;
    s.name = cluster_->name();
    s.proxy = cluster_->proxy();
    if (absl::StatusOr<std::vector<std::string>> p = cluster_->LiveProxies(); p.ok()) s.proxies = *std::move(p);
    s.mode = cluster_->breaker().open() ? "degraded" : "cluster";
    s.last_sync_ms = rec.last_sync_ms.load(std::memory_order_relaxed);
    s.degraded_placements = rec.degraded_placements.load(std::memory_order_relaxed);
    s.outage_refusals = rec.outage_refusals.load(std::memory_order_relaxed);
    s.round_trips = rec.round_trips.load(std::memory_order_relaxed);
    s.failures = rec.failures.load(std::memory_order_relaxed);
    s.rtt_p50_us = cluster_->breaker().RttQuantileUs(0.5);
    s.rtt_p99_us = cluster_->breaker().RttQuantileUs(0.99);
    s.primary = cluster_->client().primary();
    if (s.mode == "degraded") {
      // The breaker is the host's; this process may never have tried: ask once.
      const std::string e = cluster_->ProbeError();
      s.last_error = e.empty() ? "Redis answers again: the next call through it closes the breaker" : e;
    } else {
      s.last_error = cluster_->last_error();
    }
    constexpr int64_t kLease = ClusterPlacement::kLeaseMs;
    if (const int64_t at = rec.refreshed_ms.load(std::memory_order_relaxed); at != 0) {
      s.lease_age_ms = ClusterBreaker::MonoMs() - at;
      if (s.lease_age_ms >= kLease / 2) {
        s.warning = Cat("lease: last renewed ", s.lease_age_ms / 1000, " s ago, lapses at ", kLease / 1000,
                        " s: route calls, call sweep() more often or turn on upkeep");
      }
    } else {
      s.warning = "lease: not renewed yet (no call routed, no sweep): this proxy counts for nothing in the deployment";
    }
    return s;
  }
  // For a router attached to an existing segment (operator tools): the
  // cluster placement of the stored configuration, if it has `cluster:`.
  void UseStoredCluster() {
    absl::StatusOr<Config> cfg = ParseConfig(policies_.StoredText(), "<stored configuration>", policies_.resolver());
    if (cfg.ok()) (void)UseCluster(cfg->cluster);  // a bad stored text: the tool works on local state
  }
  // The cluster placement, or null without `cluster:`.
  ClusterPlacement* cluster() const { return cluster_; }
  StrategyResolver* resolver() const { return policies_.resolver(); }
  StateLimits limits() const { return region_->limits(); }
  const std::string& name() const { return region_->name(); }

  std::shared_ptr<const Snapshot> GetSnapshot() {
    uint64_t gen = H().node_generation.load(std::memory_order_acquire);
    {
      std::shared_lock l(mu_);
      if (snapshot_ && snapshot_->generation == gen) return snapshot_;
    }
    std::shared_ptr<const Snapshot> snap = nodes_.BuildSnapshot();
    std::unique_lock l(mu_);
    if (!snapshot_ || snapshot_->generation < snap->generation) snapshot_ = std::move(snap);
    return snapshot_;
  }
  // What route() reads on every call, cached per thread: no lock while
  // nothing changed, and one thread_local for both (a TLS lookup in a shared
  // object is a call).
  struct HotCache {
    uint64_t router = 0;
    std::shared_ptr<const Snapshot> snap;
    PolicyStore::Cache policies;
  };
  static HotCache& ThreadCache() {
    thread_local HotCache cache;
    return cache;
  }
  // The nodes' snapshot through `cache`.
  const Snapshot& CachedSnapshot(HotCache& cache) {
    uint64_t gen = H().node_generation.load(std::memory_order_acquire);
    if (cache.router != id_) {
      cache.router = id_;
      cache.snap = nullptr;
    }
    if (!cache.snap || cache.snap->generation != gen) cache.snap = GetSnapshot();
    return *cache.snap;
  }

  // ---- placing one call (place.cc) ----------------------------------------

  struct Placed {
    Decision decision;
    ClaimRef ref;
    uint64_t pref_claim = 0;  // the preference claim the call holds (0: none)
    uint32_t extra = 0;       // bit r: a unit of resource r held on ref's node too (Policy::extra)
    bool new_key = false;     // placed as a new key's call: within affinity.headroom (HeadroomCap)
  };

  // One placement's inputs, fixed for all of its steps.
  struct PlaceCall {
    const Policy& p;
    const Snapshot& snap;
    std::string_view call_id, key;
    const std::map<std::string, std::string>& attrs;
    const SlotList& avoid;
    int attempt = 1;
    int64_t now = 0;
    const char* strategy_reason = "strategy";  // "strategy", or "retry" for retry()
    bool keyed = false;                        // the app has affinity and the call a key
    AffinityKey k;                             // (app, key), or (app, "") when not keyed
    bool strict = false;                       // keyed, of an app with affinity.strict
    uint64_t prefer = 0;                       // keyed: PreferHash of the call's `prefer` (0: none)
    uint64_t shed_seed = 0;                    // SessionTable::Hash(call_id): the call's Overload::Roll seed
  };

  static PlaceCall Call(const Policy& p, const Snapshot& snap, std::string_view call_id, std::string_view key,
                        const std::map<std::string, std::string>& attrs, const SlotList& avoid, int attempt,
                        int64_t now, const char* strategy_reason, uint64_t prefer_hash, uint64_t call_hash) {
    const bool keyed = p.config.affinity && !key.empty();
    return PlaceCall{p,
                     snap,
                     call_id,
                     key,
                     attrs,
                     avoid,
                     attempt,
                     now,
                     strategy_reason,
                     keyed,
                     AffinityKey(p.app_slot, keyed ? key : std::string_view()),
                     keyed && p.config.affinity_strict,
                     keyed ? prefer_hash : 0,
                     call_hash};
  }

  // A claimed node still serves the app's pool and is not out for health,
  // admin state or lease (whatever this call avoids is checked separately).
  bool Usable(uint32_t slot, uint32_t epoch, const Policy& p, const Snapshot& snap, int64_t now);
  int64_t CapacityOf(const Snapshot& snap, uint32_t slot, uint32_t epoch, uint32_t res) const;
  // The slot's node's incarnation in `snap` (the slot is one of its nodes).
  static uint32_t EpochOf(const Snapshot& snap, uint32_t slot) {
    return snap.nodes[static_cast<size_t>(snap.index_of_slot[slot])].epoch;
  }

  // Whether the app's pool is in panic (health.panic_threshold): health is
  // then ignored by the scan.
  bool Panic(const Policy& p, const Snapshot& snap, int64_t now) {
    return p.health.panic_threshold > 0 && health_.Panic(snap, snap.by_pool.at(p.config.pool), p.health, now);
  }
  // The pool's nodes that may take a new key: not disabled, draining, down,
  // ejected, avoided or full; suspect ones only when no node is up.
  void Candidates(const Policy& p, const Snapshot& snap, const SlotList& avoid, int64_t now, uint64_t shed_seed,
                  CandidateList* out, Tally* t);
  // This thread's candidate list (a TLS lookup in a shared object is a
  // call: looked up only when a list is built). It keeps its pool's
  // ready-made entries between calls.
  static CandidateList& CandidateBuffer() {
    static thread_local CandidateList cands_tl;
    return cands_tl;
  }

  // Step 1, affinity.bound: the app's candidates and the bound over them,
  // built only for a keyed call of an app with a bound (`on`).
  struct Bounded {
    bool on = false;
    LoadBound lb;
    CandidateList* cands = nullptr;  // the candidates the bound was built from (when on)
    Tally tally;
  };
  Bounded BoundFor(const PlaceCall& c);

  // Whether the key's node may take this call (Placement::Admit): usable,
  // not avoided, within the bound (a strict key's node is never refused for
  // the bound); its capacity, or nullopt. Run under an affinity shard lock
  // (placement.h); it remembers the last node it was asked about and whether
  // the bound refused it.
  class KeyAdmit {
   public:
    KeyAdmit(Impl& r, const PlaceCall& c, const Bounded& b) : r_(r), c_(c), b_(b) {}
    // const: a FunctionRef calls it through a const reference.
    std::optional<int64_t> operator()(uint32_t slot, uint32_t epoch) const;
    bool over_bound() const { return over_bound_; }
    bool asked() const { return asked_; }
    ClaimRef asked_about() const { return asked_about_; }

   private:
    Impl& r_;
    const PlaceCall& c_;
    const Bounded& b_;
    mutable bool over_bound_ = false;  // the key's node was usable but above the bound
    mutable bool asked_ = false;       // the key has a claim (its node was asked about)
    mutable ClaimRef asked_about_;     // that node
  };

  // Step 2: the key's live claim, joined (nullopt: none that takes the call).
  std::optional<ClaimRef> JoinKey(const PlaceCall& c, KeyAdmit& admit);
  // Step 3, when the bound refused the key's node: its next home within the
  // bound, reserved (nullopt: none could be).
  std::optional<ClaimRef> NextHome(const PlaceCall& c, const Bounded& b);

  // Reserves the node a strategy picked; for a new key (`claim_new`) the
  // key's claim is made in the same step (Placement::ReserveAndClaim), its
  // outcome kept in `claimed`, within the app's headroom (HeadroomCap).
  // Called with the node's configured capacity: the reservation keeps
  // within what the node's own report of its count leaves (usage.h).
  class Reserver {
   public:
    Reserver(Impl& r, const PlaceCall& c, bool claim_new, KeyAdmit& admit)
        : r_(r), c_(c), claim_new_(claim_new), admit_(admit) {}
    bool operator()(uint32_t slot, uint32_t epoch, int64_t configured);
    std::optional<absl::StatusOr<AffinityTable::ClaimOutcome>>& claimed() { return claimed_; }
    size_t headroom() const { return headroom_; }

   private:
    Impl& r_;
    const PlaceCall& c_;
    const bool claim_new_;
    KeyAdmit& admit_;
    std::optional<absl::StatusOr<AffinityTable::ClaimOutcome>> claimed_;
    size_t headroom_ = 0;  // nodes that had room, but not within the headroom for a new key
  };
  // The count a node may reach with a call for a new key: capacity with no
  // headroom (or unlimited), else ceil((1 - headroom) x capacity), so the
  // call is taken while the count before it is below (1 - headroom) x capacity.
  static int64_t HeadroomCap(const Policy& p, int64_t capacity);

  // Step 4: the strategy's node, reserved through a Reserver.
  struct Picked {
    ClaimRef ref;                  // slot kNil: no node
    const char* reason = nullptr;  // the strategy reason when a node was picked
    bool chose_none = false;       // the strategy returned no valid index (`detail` says so)
    std::string detail;
    Tally tally;  // why members were left out
  };
  Picked PickNode(const PlaceCall& c, Bounded& b, Reserver& reserve);
  // The full pick: the strategy over full candidates (already in `cl` when
  // `built`), until a pick is reserved or none is left.
  // `reserve` takes the picked node (a Reserver, or a dry run's test); a
  // dry run's `log` gets each pick and what became of it (kNone: taken,
  // kSlowStart: skipped, kFull: `reserve` said no).
  using ReserveFn = absl::FunctionRef<bool(uint32_t slot, uint32_t epoch, int64_t capacity)>;
  struct PickStep {
    uint32_t slot = kNil;
    Exclusion outcome = Exclusion::kNone;
  };
  void PickFull(const PlaceCall& c, const PickRequest& pr, StrategyContext& ctx, CandidateList& cl, bool built,
                ReserveFn reserve, Picked* out, std::vector<PickStep>* log = nullptr);
  // A pick through the strategy's compact pick (Policy::compact): a draw
  // without a scan (PickSampled) when the strategy has one, else a scan
  // into compact arrays (PickCompact). kPicked
  // (out->ref is set, or no member could be reserved), kChoseNone (the
  // strategy returned no valid index: out->detail says so) or kNeedsFull
  // (the strategy wants full candidates for this call; nothing was drawn).
  enum class CompactOutcome { kPicked, kChoseNone, kNeedsFull };
  CompactOutcome PickCompact(const PlaceCall& c, const PickRequest& pr, StrategyContext& ctx, Reserver& reserve,
                             Picked* out);
  // The decision's detail when no node could be picked (`headroom`: nodes
  // turned away for a new key by the headroom).
  static std::string NoNodeDetail(const Policy& p, const Tally& t, size_t headroom);

  // Strict keys. Why the key's node cannot take this call: a Decision
  // reason (key_full, key_down, key_draining, key_disabled, key_tried) and a
  // detail naming the key and its node.
  struct KeyRefusal {
    const char* reason = "key_full";
    std::string detail;
  };
  // After a join that failed although the key has a claim (admit.asked()):
  // the refusal while the key has live sessions; nullopt when only its
  // grace is left (the key may move).
  std::optional<KeyRefusal> StrictRefusal(const PlaceCall& c, const KeyAdmit& admit);
  KeyRefusal Diagnose(const PlaceCall& c, const AffinityTable::Hold& h);
  // A strict key's call reserved on `at` without the key's claim (the key
  // is another node's): the claim taken over for `at` when no session holds
  // it any more; claim 0 when sessions still do.
  absl::StatusOr<ClaimRef> TakeOver(const PlaceCall& c, ClaimRef at);
  // Fills the refused decision and counts it.
  absl::Status Refuse(const PlaceCall& c, KeyRefusal no, Placed* out);

  // Preferences. A new key's preferred node: the node that holds the
  // app's preference value, if it is usable, not avoided, within the bound,
  // and takes the call within the headroom (a unit reserved there).
  std::optional<ClaimRef> Preferred(const PlaceCall& c, const Bounded& b);
  // Preferred's node before the reservation: the preference's node if it
  // is usable, not avoided and within the bound; *cap the count the call
  // may bring it to (HeadroomCap). *why says why not (for a dry run).
  std::optional<ClaimRef> PreferredNode(const PlaceCall& c, const Bounded& b, int64_t* cap, std::string* why);
  // After the call was placed on `at`: a new key's node becomes (or stays)
  // the preference's, a call of a known key holds the preference only when
  // it is on the preference's node. The preference claim held, or 0.
  uint64_t FollowPreference(const PlaceCall& c, ClaimRef at, bool new_key);
  // A session's reference on its preference claim given back.
  void DropPreference(const Held& h, int64_t now);

  // Step 5: the key's claim for the node the call holds a unit on, when the
  // reservation made none (its next home): the claim, or the claim another
  // process made meanwhile, joined (the unit on `chosen` given back;
  // *moved set).
  absl::StatusOr<ClaimRef> ClaimFor(const PlaceCall& c, ClaimRef chosen, KeyAdmit& admit, bool* moved);
  // The outcome of ReserveAndClaim on the strategy's node: where the call goes.
  static absl::StatusOr<ClaimRef> Claimed(absl::StatusOr<AffinityTable::ClaimOutcome> outcome, bool* moved);

  // Picks a node for one placement, affinity first, then the strategy, and
  // reserves its capacity (and the key's claim). Caller is inside an Op.
  // Fills *out (a fresh Placed) in place: its Decision is moved only once
  // more, into the caller's result. An app of several resources goes
  // through PlaceAll.
  absl::Status Place(const PlaceCall& c, Placed* out) {
    if (c.p.extra != 0) [[unlikely]]
      return PlaceAll(c, out);
    return PlaceOne(c, out);
  }
  // The flow for the call's first resource (place.cc); nodes full for any
  // other resource of its app are no candidates.
  absl::Status PlaceOne(const PlaceCall& c, Placed* out);

  // ---- apps of several resources (extra_resources.cc) -----------------------

  // PlaceOne, then one unit of each other resource of the app on the node
  // it chose, all or none: a node that filled up meanwhile for one of them
  // gets back everything the call took there, and the call is placed again
  // without it (a strict key that lives there is refused as full).
  absl::Status PlaceAll(const PlaceCall& c, Placed* out);
  // One unit of each resource of `extra` on (slot, epoch), each within its
  // capacity as the node's own report leaves it (for a new key's call,
  // within the app's headroom of it): all, or none held.
  bool ReserveExtras(const PlaceCall& c, uint32_t slot, uint32_t epoch, bool new_key);
  // Gives back the units ReserveExtras took (nothing if the slot holds another node now).
  void ReleaseExtras(uint32_t slot, uint32_t epoch, uint32_t extra);
  // The first resource of the call's app besides its first that the node
  // in (slot, epoch) has no room for, or kNil.
  uint32_t FullExtraAt(const PlaceCall& c, uint32_t slot, uint32_t epoch) const;
  // "<resource> n/capacity" for resource `res` of the node in (slot, epoch):
  // this host's count, or with `deployment` and cluster: the deployment's
  // when Redis answers (one round trip), either as the node's own report
  // leaves it.
  std::string CountText(const PlaceCall& c, uint32_t slot, uint32_t epoch, uint32_t res, bool deployment = false) const;

  // Gives back what a removed session or an undone placement held.
  // `abandoned`: the session ended unanswered (AffinityTable::DropMode::kAbandoned).
  void Release(const Held& h, int64_t now, bool abandoned = false);
  // Drops a session's reference on its claim: `full` releases the claim;
  // on a leaving node (draining, lease over, removed) the last one ends it
  // without grace; `abandoned`: as in Release.
  void DropRef(const Held& h, bool full, int64_t now, bool abandoned = false);
  AffinityTable::DropMode DropModeOf(const Held& h, bool full, int64_t now, bool abandoned) const;
  bool Leaving(uint32_t slot, uint32_t epoch, int64_t now) const;

  Decision SessionDecision(const Snapshot& snap, const SessionEntry& e, const Policies& pol);

  // ---- the flow ------------------------------------------------------------

  absl::StatusOr<Decision> Route(const RouteRequest& req);  // RouteFlow, counted and timed
  absl::StatusOr<Decision> RouteFlow(const RouteRequest& req, uint32_t* app);

  // A call id's check: not empty, not too long.
  static absl::Status CheckCallId(std::string_view call_id);
  // route()'s checks of a request's key, preference and exclude list.
  static absl::Status CheckPlaceInput(std::string_view key, std::string_view prefer, size_t n_exclude);

  // ---- explain (explain.cc) ------------------------------------------------

  // The placement a call would get now, traced, as a dry run (approute/explain.h).
  absl::StatusOr<ExplainTrace> Explain(const ExplainRequest& req);
  // The counts a dry run's reservation tests, per slot: with cluster:, the
  // deployment's (as the reservation in Redis counts), else this host's.
  class DryCounts {
   public:
    DryCounts(Impl& r, const Policy& p, const Snapshot& snap);
    int64_t Of(uint32_t slot) const;
    bool Room(uint32_t slot, int64_t cap) const { return NodeTable::HasRoom(Of(slot), cap); }

   private:
    Impl& r_;
    uint32_t res_;
    absl::flat_hash_map<uint32_t, int64_t> deployment_;
  };
  // The trace's row for member i of pool `pv` with its scan verdict.
  ExplainNode ExplainMember(const PlaceCall& c, const PoolView& pv, size_t i, Verdict v, const SlotList& excluded,
                            const DryCounts& counts);

  absl::StatusOr<Decision> Retry(std::string_view call_id, int code);  // RetryFlow, counted
  absl::StatusOr<Decision> RetryFlow(std::string_view call_id, int code, uint32_t* app);
  // A retried call's new placement recorded on its session, or the session
  // ended when no node took it (`placed` false). NotFound when the call
  // ended meanwhile: the new placement is undone.
  absl::Status RecordRetry(std::string_view call_id, int64_t now, const Policy& p, const Held& old,
                           const Placed& placement, bool placed);

  absl::Status Confirm(std::string_view call_id);

  absl::Status End(std::string_view call_id, bool abandoned);

  // ---- expiry and recovery -------------------------------------------------

  // Expired sessions and lapsed claims of shard s: all (max_buckets 0) or
  // the next max_buckets buckets of each table.
  int64_t SweepShard(size_t s, int64_t now, uint32_t max_buckets = 0);

  // Finds processes that died inside a state change and recounts behind the gate.
  void Recover(int64_t now);

  // One shard of each table per kSweepIntervalMs across every process of the
  // router; dead processes are looked for every kOwnerCheckIntervalMs.
  void Maintain(int64_t now);

  int64_t Sweep();

  // ---- operator and feedback entry points ----------------------------------

  // The hot entry of node `id` (and its slot).
  absl::StatusOr<NodeHot*> Live(std::string_view id, uint32_t* slot = nullptr) {
    std::shared_ptr<const Snapshot> snap = GetSnapshot();
    const NodeView* v = snap->Find(id);
    if (v == nullptr) return absl::NotFoundError(Cat("no node \"", id, "\""));
    if (slot != nullptr) *slot = v->slot;
    return &region_->hot(v->slot);
  }
  absl::Status SetState(std::string_view id, AdminState st) {
    if (st == AdminState::kDraining) return Drain(id, -1);
    uint32_t slot = kNil;
    absl::StatusOr<NodeHot*> n = Live(id, &slot);
    if (!n.ok()) return n.status();
    placement_->SetAdminState(slot, st);
    return absl::OkStatus();
  }
  absl::Status Drain(std::string_view id, int64_t deadline_after_ms) {
    if (deadline_after_ms < -1) {
      return absl::InvalidArgumentError(Cat("drain deadline must be >= 0 ms, got ", deadline_after_ms));
    }
    uint32_t slot = kNil;
    absl::StatusOr<NodeHot*> n = Live(id, &slot);
    if (!n.ok()) return n.status();
    const int64_t now = now_();
    absl::StatusOr<Owners::Op> op = owners_.Enter();
    if (!op.ok()) return op.status();
    // A deadline of 0 is "now": stored as now (at least 1, 0 means none).
    // Draining again without a deadline keeps the one set before (an
    // operator watching progress must not cancel it).
    int64_t deadline = deadline_after_ms < 0 ? 0 : std::max<int64_t>(1, now + deadline_after_ms);
    if (deadline_after_ms < 0 &&
        (*n)->admin.load(std::memory_order_relaxed) == static_cast<uint32_t>(AdminState::kDraining)) {
      deadline = (*n)->drain_deadline_ms.load(std::memory_order_relaxed);
    }
    placement_->SetDraining(slot, deadline);
    placement_->ForgetIdleClaims(slot, (*n)->epoch.load(std::memory_order_relaxed));
    return absl::OkStatus();
  }
  absl::Status SetHealth(std::string_view id, Health h) {
    absl::StatusOr<NodeHot*> n = Live(id);
    if (!n.ok()) return n.status();
    (*n)->health.store(static_cast<uint32_t>(h), std::memory_order_relaxed);
    return absl::OkStatus();
  }
  // A Retry-After in seconds as ms (-1 = none). Seconds past a day are an
  // error, not a long busy period (MarkBusy cuts valid ones to busy_max).
  static absl::StatusOr<int64_t> RetryAfterMs(std::optional<double> retry_after_s) {
    if (!retry_after_s.has_value()) return -1;
    const double v = *retry_after_s;
    if (!std::isfinite(v) || v < 0 || v > 86400) {
      return absl::InvalidArgumentError(Cat("retry_after must be a number of seconds in 0..86400, got ", v));
    }
    return static_cast<int64_t>(std::llround(v * 1000.0));
  }
  absl::Status ReportProbe(std::string_view id, int code, double rtt_ms, std::optional<double> retry_after_s) {
    if (code < 0 || code > 699)
      return absl::InvalidArgumentError(Cat("probe code ", code, " is not 0 (no answer) or a SIP status code"));
    if (!std::isfinite(rtt_ms) || rtt_ms < 0)
      return absl::InvalidArgumentError("probe rtt_ms must be a finite number >= 0");
    absl::StatusOr<int64_t> retry_after = RetryAfterMs(retry_after_s);
    if (!retry_after.ok()) return retry_after.status();
    uint32_t slot = kNil;
    absl::StatusOr<NodeHot*> rec = Live(id, &slot);
    if (!rec.ok()) return rec.status();
    absl::StatusOr<const Policies*> pol = policies_.Cached();
    if (!pol.ok()) return pol.status();
    health_.OnProbe(slot, code, rtt_ms, *retry_after, (*pol)->health, now_());
    return absl::OkStatus();
  }
  absl::Status ReportOverload(std::string_view id, int percent, int64_t validity_ms, uint64_t seq) {
    if (percent < 0 || percent > 100)
      return absl::InvalidArgumentError(Cat("overload percent must be in 0..100, got ", percent));
    if (validity_ms < 0 || validity_ms > kMaxOverloadValidityMs) {
      return absl::InvalidArgumentError(
          Cat("overload validity_ms must be in 0..", kMaxOverloadValidityMs, ", got ", validity_ms));
    }
    uint32_t slot = kNil;
    absl::StatusOr<NodeHot*> hot = Live(id, &slot);
    if (!hot.ok()) return hot.status();
    Overload::Apply(H(), region_->node(slot), **hot, percent, validity_ms, seq, now_());
    return absl::OkStatus();
  }
  absl::Status ReportCallResult(std::string_view id, int code, double latency_ms, std::optional<double> retry_after_s) {
    if (code < 0 || code > 699)
      return absl::InvalidArgumentError(Cat("result code ", code, " is not 0 (no answer) or a SIP status code"));
    if (!std::isfinite(latency_ms) || latency_ms < 0)
      return absl::InvalidArgumentError("latency_ms must be a finite number >= 0");
    absl::StatusOr<int64_t> retry_after = RetryAfterMs(retry_after_s);
    if (!retry_after.ok()) return retry_after.status();
    std::shared_ptr<const Snapshot> snap = GetSnapshot();
    const NodeView* v = snap->Find(id);
    if (v == nullptr) return absl::NotFoundError(Cat("no node \"", id, "\""));
    absl::StatusOr<const Policies*> pol = policies_.Cached();
    if (!pol.ok()) return pol.status();
    health_.OnResult(v->slot, *snap, snap->by_pool.at(v->pool), code, latency_ms, *retry_after, (*pol)->health, now_());
    return absl::OkStatus();
  }
  absl::Status ReportLoad(std::string_view id, const std::map<std::string, double>& metrics) {
    absl::Status st = nodes_.ReportLoad(id, metrics, now_());
    if (!st.ok()) return st;
    if (const NodeView* v = GetSnapshot()->Find(id)) placement_->UsageReported(v->slot);
    return st;
  }
  ReportResult ApplyReport(const ReportRequest& req) {
    absl::StatusOr<const Policies*> pol = policies_.Cached();
    if (!pol.ok()) return ServerError(std::string(pol.status().message()));
    const int64_t now = now_();
    ReportResult r = reports_.Apply(req, **pol, now, ThreadRandom());
    if (r.code == 200) {
      if (const NodeView* v = GetSnapshot()->Find(r.node_id)) {
        placement_->NodeChanged(v->slot, now);
        // A leave drains with a deadline of now: no claim of its keys is kept.
        if (req.expires == 0) placement_->ForgetIdleClaims(v->slot, v->epoch);
      }
    }
    return r;
  }

  // ---- views ---------------------------------------------------------------

  absl::StatusOr<NodeStatus> Node(std::string_view id) {
    std::shared_ptr<const Snapshot> snap = GetSnapshot();
    const NodeView* v = snap->Find(id);
    if (v == nullptr) return absl::NotFoundError(Cat("no node \"", id, "\""));
    std::vector<NodeStatus> one{nodes_.StatusOf(*snap, *v, now_())};
    DeploymentSessions(*snap, &one);
    return std::move(one[0]);
  }
  std::vector<NodeStatus> Nodes() {
    std::shared_ptr<const Snapshot> snap = GetSnapshot();
    std::vector<NodeStatus> out;
    int64_t now = now_();
    for (const NodeView& v : snap->nodes) out.push_back(nodes_.StatusOf(*snap, v, now));
    DeploymentSessions(*snap, &out);
    return out;
  }
  // With `cluster:`, node sessions are the deployment's (every live proxy's
  // share), in one round trip; this host's own counts while Redis is out.
  void DeploymentSessions(const Snapshot& snap, std::vector<NodeStatus>* out) {
    if (cluster_ == nullptr) return;
    const Header& h = H();
    std::vector<std::pair<uint32_t, uint32_t>> want;
    std::vector<std::pair<size_t, std::string>> where;
    for (size_t i = 0; i < out->size(); ++i) {
      const NodeView* v = snap.Find((*out)[i].spec.id);
      if (v == nullptr) continue;
      for (const auto& [res, n] : (*out)[i].sessions) {
        for (uint32_t r = 0; r < h.n_resources; ++r) {
          if (GetFixed(h.resource_names[r]) == res) {
            want.emplace_back(v->slot, r);
            where.emplace_back(i, res);
          }
        }
      }
    }
    if (want.empty()) return;
    std::optional<std::vector<int64_t>> counts = cluster_->DeploymentCounts(want);
    if (!counts) return;
    for (size_t k = 0; k < want.size(); ++k) (*out)[where[k].first].sessions[where[k].second] = (*counts)[k];
  }
  RouterStats Stats() {
    std::shared_ptr<const Snapshot> snap = GetSnapshot();
    RouterStats s;
    s.nodes = static_cast<int64_t>(snap->nodes.size());
    s.sessions = sessions_.Count();
    s.affinities = H().affinity_count.load(std::memory_order_relaxed);
    s.max_nodes = static_cast<int64_t>(H().max_nodes);
    s.max_sessions = static_cast<int64_t>(H().max_sessions);
    s.max_affinities = static_cast<int64_t>(H().max_affinities);
    s.expired_sessions = H().expired_sessions.load(std::memory_order_relaxed);
    s.reports_accepted = H().reports_accepted.load(std::memory_order_relaxed);
    for (int i = 0; i < 8; ++i)
      s.reports_refused[kRefusalNames[i]] = H().reports_refused[i].load(std::memory_order_relaxed);
    s.processes = owners_.LiveCount();
    s.repairs = static_cast<int64_t>(H().repairs.load(std::memory_order_relaxed));
    s.repaired_counts = H().recounted_drift.load(std::memory_order_relaxed);
    std::vector<std::string> apps(kMaxApps);
    if (absl::StatusOr<const Policies*> pol = policies_.Cached(); pol.ok()) {
      for (uint32_t a = 0; a < kMaxApps; ++a) {
        if ((*pol)->by_slot[a]) apps[a] = (*pol)->by_slot[a]->config.name;
      }
    }
    counters_.Fill(apps, &s);
    const int64_t now = now_();
    for (const NodeView& v : snap->nodes) {
      NodeHot& n = region_->hot(v.slot);
      if (n.epoch.load(std::memory_order_relaxed) != v.epoch) continue;
      if (n.busy_until_ms.load(std::memory_order_relaxed) > now) ++s.busy_nodes;
      if (Overload::Percent(n, now) > 0) ++s.overloaded_nodes;
    }
    return s;
  }
  // App name of an app slot, node id of (slot, epoch), and whether a filter matches.
  struct Names {
    std::shared_ptr<const Policies> pol;
    std::shared_ptr<const Snapshot> snap;
    std::string App(uint32_t a) const {
      return pol && a < kMaxApps && pol->by_slot[a] ? pol->by_slot[a]->config.name : "";
    }
    std::string NodeId(uint32_t s, uint32_t e) const {
      const NodeView* v = snap->At(s, e);
      return v ? v->id : "";
    }
  };
  Names CurrentNames() {
    absl::StatusOr<std::shared_ptr<const Policies>> pol = policies_.Get();
    return Names{pol.ok() ? *pol : nullptr, GetSnapshot()};
  }
  std::vector<SessionInfo> Sessions(const ListFilter& f) {
    Names names = CurrentNames();
    std::vector<SessionRow> rows = sessions_.List(
        now_(),
        [&](const SessionEntry& e) {
          return (f.app.empty() || names.App(e.app) == f.app) &&
                 (f.node.empty() || names.NodeId(e.node, e.node_epoch) == f.node);
        },
        f.limit);
    std::vector<SessionInfo> out;
    out.reserve(rows.size());
    for (const SessionRow& r : rows) {
      out.push_back(SessionInfo{r.call_id, names.App(r.app), names.NodeId(r.node, r.epoch), r.key, r.created_ms,
                                r.expires_ms, r.attempt, r.confirmed});
    }
    return out;
  }
  std::vector<AffinityInfo> Affinities(const ListFilter& f) {
    Names names = CurrentNames();
    std::vector<AffinityRow> rows = affinity_.List(
        now_(),
        [&](const AffinityEntry& e) {
          return (f.app.empty() || names.App(e.app) == f.app) &&
                 (f.node.empty() || names.NodeId(e.node, e.node_epoch) == f.node);
        },
        f.limit);
    std::vector<AffinityInfo> out;
    out.reserve(rows.size());
    for (const AffinityRow& r : rows) {
      out.push_back(
          AffinityInfo{names.App(r.app), r.key, names.NodeId(r.node, r.epoch), r.refs, r.refs > 0 ? 0 : r.expires_ms});
    }
    return out;
  }

  NodeTable& nodes() { return nodes_; }

 private:
  std::unique_ptr<Region> region_;
  std::function<int64_t()> now_;
  NodeTable nodes_;
  SessionTable sessions_;
  AffinityTable affinity_;
  HealthMonitor health_;
  StatusReports reports_;
  const uint64_t id_;  // distinguishes routers in the per-thread caches (addresses are reused)
  PolicyStore policies_;
  Owners owners_;
  RouterCounters counters_;
  std::unique_ptr<Placement> placement_;
  ClusterPlacement* cluster_ = nullptr;  // placement_ when it is the cluster one
  ClusterConfig cluster_cfg_;            // as given when the router was built
  // guards snapshot_ (the pointer). A std (pthread) lock, not absl::Mutex: the
  // distribution's Abseil is built without TSan annotations, so ThreadSanitizer
  // cannot see absl::Mutex synchronise and reports races that are not there.
  std::shared_mutex mu_;
  std::shared_ptr<const Snapshot> snapshot_;
  bool seeded_ = false;
  std::atomic<uint64_t> rng_{0};  // SplitMix64 state when seeded_
  // Last member: destroyed first, so the upkeep thread stops before anything it sweeps goes.
  std::unique_ptr<Ticker> upkeep_;

 public:
  // RouterOptions::upkeep_interval_ms: 0 (off) or 10..half the cluster lease.
  static absl::Status CheckUpkeep(int64_t interval_ms) {
    if (interval_ms == 0 || (interval_ms >= 10 && interval_ms <= ClusterPlacement::kLeaseMs / 2)) {
      return absl::OkStatus();
    }
    return absl::InvalidArgumentError(Cat("upkeep_interval_ms ", interval_ms, " is not 0 (off) or 10..",
                                          ClusterPlacement::kLeaseMs / 2, " (under half the cluster lease)"));
  }
  // Starts the upkeep thread (an interval CheckUpkeep accepted; 0: none).
  void StartUpkeep(int64_t interval_ms) {
    if (interval_ms == 0) return;
    upkeep_ = std::make_unique<Ticker>(interval_ms, [this] {
      try {
        (void)Sweep();
      } catch (...) {  // nothing escapes the thread; the next tick tries again
      }
    });
  }
  int64_t upkeep_ticks() const { return upkeep_ ? upkeep_->ticks() : 0; }
};

}  // namespace approute

#endif  // APPROUTE_SRC_ROUTER_ROUTER_IMPL_H_
