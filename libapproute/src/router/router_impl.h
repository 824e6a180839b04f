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

#include <mutex>
#include <shared_mutex>
#include <time.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/inlined_vector.h"
#include "state/affinity_table.h"
#include "router/candidate_scan.h"
#include "approute/router.h"
#include "placement/cluster_placement.h"
#include "status/health.h"
#include "state/node_table.h"
#include "state/owners.h"
#include "placement/placement.h"
#include "routing/policies.h"
#include "state/recovery.h"
#include "state/region.h"
#include "state/session_table.h"
#include "state/stats.h"
#include "status/status_reports.h"
#include "util/str_util.h"
#include "routing/strategy_context.h"

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
    auto cp = std::make_unique<ClusterPlacement>(*region_, affinity_, nodes_, reports_, c, *std::move(url), [this](std::string_view id) -> std::optional<ClaimRef> {
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
        c.timeout_ms == h.timeout_ms && c.outage_headroom_pct == h.outage_headroom_pct) {
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

  // ---- placing one call ----------------------------------------------------

  struct Placed {
    Decision decision;
    ClaimRef ref;
  };

  // A claimed node still serves the app's pool and is not out for health,
  // admin state or lease (whatever this call avoids is checked separately).
  bool Usable(uint32_t slot, uint32_t epoch, const Policy& p, const Snapshot& snap, int64_t now);
  int64_t CapacityOf(const Snapshot& snap, uint32_t slot, uint32_t epoch, uint32_t res) const;

  // The pool's nodes that may take a new key: not disabled, draining, down,
  // ejected, avoided or full; suspect ones only when no node is up.
  void Candidates(const Policy& p, const Snapshot& snap, const SlotList& avoid, int64_t now, CandidateList* out,
                  Tally* t);
  // A pick through the strategy's compact pick (Policy::compact): a draw
  // without a scan (PickSampled) when the strategy has one, else a scan
  // into compact arrays (PickCompact). kPicked
  // (out->ref is set, or no member could be reserved), kChoseNone (the
  // strategy returned no valid index: out->decision says so) or kNeedsFull
  // (the strategy wants full candidates for this call; nothing was drawn).
  // `reserve_fn(slot, epoch, capacity)` reserves the picked node (false: full).
  enum class CompactOutcome { kPicked, kChoseNone, kNeedsFull };
  using ReserveFn = absl::FunctionRef<bool(uint32_t slot, uint32_t epoch, int64_t capacity)>;
  CompactOutcome PickCompact(const Policy& p, const Snapshot& snap, const SlotList& avoid, int64_t now,
                             const PickRequest& pr, StrategyContext& ctx, const char* strategy_reason,
                             ReserveFn reserve_fn, Placed* out, Tally* t);

  // Picks a node for one placement, affinity first, then the strategy, and
  // reserves its capacity (and the key's claim). Caller is inside an Op.
  // Fills *result (a fresh Placed) in place: its Decision is moved only
  // once more, into the caller's result.
  absl::Status Place(const Policy& p, const Snapshot& snap, std::string_view call_id, std::string_view key,
                     const std::map<std::string, std::string>& attrs, const SlotList& avoid, int attempt,
                     int64_t now, const char* strategy_reason, Placed* result);

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

  absl::StatusOr<Decision> Retry(std::string_view call_id, int code);  // RetryFlow, counted
  absl::StatusOr<Decision> RetryFlow(std::string_view call_id, int code, uint32_t* app);

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
    if (deadline_after_ms < 0 && (*n)->admin.load(std::memory_order_relaxed) == static_cast<uint32_t>(AdminState::kDraining)) {
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
  absl::Status ReportProbe(std::string_view id, int code, double rtt_ms) {
    if (code < 0 || code > 699) return absl::InvalidArgumentError(Cat("probe code ", code, " is not 0 (no answer) or a SIP status code"));
    if (!std::isfinite(rtt_ms) || rtt_ms < 0) return absl::InvalidArgumentError("probe rtt_ms must be a finite number >= 0");
    uint32_t slot = kNil;
    absl::StatusOr<NodeHot*> rec = Live(id, &slot);
    if (!rec.ok()) return rec.status();
    absl::StatusOr<const Policies*> pol = policies_.Cached();
    if (!pol.ok()) return pol.status();
    health_.OnProbe(slot, code, rtt_ms, (*pol)->health, now_());
    return absl::OkStatus();
  }
  absl::Status ReportCallResult(std::string_view id, int code, double latency_ms) {
    if (code < 0 || code > 699) return absl::InvalidArgumentError(Cat("result code ", code, " is not 0 (no answer) or a SIP status code"));
    if (!std::isfinite(latency_ms) || latency_ms < 0) return absl::InvalidArgumentError("latency_ms must be a finite number >= 0");
    std::shared_ptr<const Snapshot> snap = GetSnapshot();
    const NodeView* v = snap->Find(id);
    if (v == nullptr) return absl::NotFoundError(Cat("no node \"", id, "\""));
    absl::StatusOr<const Policies*> pol = policies_.Cached();
    if (!pol.ok()) return pol.status();
    health_.OnResult(v->slot, *snap, snap->by_pool.at(v->pool), code, latency_ms, (*pol)->health, now_());
    return absl::OkStatus();
  }
  absl::Status ReportLoad(std::string_view id, const std::map<std::string, double>& metrics) {
    return nodes_.ReportLoad(id, metrics, now_());
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
    for (int i = 0; i < 8; ++i) s.reports_refused[kRefusalNames[i]] = H().reports_refused[i].load(std::memory_order_relaxed);
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
    return s;
  }
  // App name of an app slot, node id of (slot, epoch), and whether a filter matches.
  struct Names {
    std::shared_ptr<const Policies> pol;
    std::shared_ptr<const Snapshot> snap;
    std::string App(uint32_t a) const { return pol && a < kMaxApps && pol->by_slot[a] ? pol->by_slot[a]->config.name : ""; }
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
    std::vector<SessionRow> rows = sessions_.List(now_(), [&](const SessionEntry& e) {
      return (f.app.empty() || names.App(e.app) == f.app) && (f.node.empty() || names.NodeId(e.node, e.node_epoch) == f.node);
    }, f.limit);
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
    std::vector<AffinityRow> rows = affinity_.List(now_(), [&](const AffinityEntry& e) {
      return (f.app.empty() || names.App(e.app) == f.app) && (f.node.empty() || names.NodeId(e.node, e.node_epoch) == f.node);
    }, f.limit);
    std::vector<AffinityInfo> out;
    out.reserve(rows.size());
    for (const AffinityRow& r : rows) {
      out.push_back(AffinityInfo{names.App(r.app), r.key, names.NodeId(r.node, r.epoch), r.refs,
                                 r.refs > 0 ? 0 : r.expires_ms});
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
};

}  // namespace approute

#endif  // APPROUTE_SRC_ROUTER_ROUTER_IMPL_H_
