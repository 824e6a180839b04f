// The routing flow: route, retry, confirm, end, and the sweep that expires
// what was never ended (the placement of one call is in place.cc). Everything it reads or changes lives in components:
//
//   node_table.h      nodes, admin state, counts, capacities, leases, snapshots
//   session_table.h   call id -> session
//   affinity_table.h  (app, key) -> node claims
//   placement.h       the seam to the state several proxies will share:
//                     capacity reservations, claims, node changes
//   health.h          probes, outlier ejection, slow start, panic
//   status_reports.h  approute-status reports
//   policies.h        the parsed configuration
//   owners.h          processes using the region; recovery.h recounts after a death
//
// Hot path: Route() reads a per-thread snapshot of the nodes' static fields
// and of the policies (rebuilt only when a generation moves) and the nodes'
// atomics; it takes at most one table lock at a time: an affinity shard,
// then a session shard. Capacity is reserved with a compare-and-swap, so no
// node ever holds more sessions than its capacity across processes. Every
// change of a count or a table runs inside an Owners::Op, so a process
// killed half-way is found and its half-done change recounted away.
#include <chrono>
#include <optional>

#include "router/router_impl.h"
#include "util/stored_name.h"

namespace approute {
namespace {

constexpr int64_t kSweepIntervalMs = 100;  // one shard of each table per interval, router-wide
// Buckets of that shard per visit: the whole shard while a table holds up to
// 131,072 entries (8,192 a shard); above, a slice, so a call never waits
// ~1 ms behind a full-shard walk. Each shard is visited every 1.6 s, so at a million sessions (65,536
// buckets a shard) an expired session is found within 8 visits (~13 s).
constexpr uint32_t kSweepBucketsPerVisit = 8192;
constexpr int64_t kOwnerCheckIntervalMs = 1000;  // look for processes that died mid-change
constexpr int64_t kRepairWaitMs = 2000;          // longest wait for live processes to finish their changes

absl::Status CheckInputLen(std::string_view what, std::string_view value) {
  if (value.size() <= kMaxInputLen) return absl::OkStatus();
  return absl::InvalidArgumentError(Cat(what, " is ", value.size(), " bytes long, at most ", kMaxInputLen,
                                        " (the largest SIP message) are accepted"));
}

}  // namespace

// Any call id a SIP message can carry is accepted; one longer than its
// slot is stored by digest (util/stored_name.h).
absl::Status Router::Impl::CheckCallId(std::string_view call_id) {
  if (call_id.empty()) return absl::InvalidArgumentError("call_id is empty");
  if (call_id.size() > kMaxInputLen) {
    return absl::InvalidArgumentError(Cat("call_id is ", call_id.size(), " bytes long, at most ", kMaxInputLen,
                                          " (the largest SIP message) are accepted"));
  }
  return absl::OkStatus();
}

bool Router::Impl::Leaving(uint32_t slot, uint32_t epoch, int64_t now) const {
  if (slot == kNil || slot >= region_->max_nodes()) return false;
  const NodeHot& n = region_->hot(slot);
  if (n.epoch.load(std::memory_order_relaxed) != epoch) return true;
  return n.admin.load(std::memory_order_relaxed) == static_cast<uint32_t>(AdminState::kDraining) ||
         NodeTable::LeaseExpired(n, now);
}

AffinityTable::DropMode Router::Impl::DropModeOf(const Held& h, bool full, int64_t now, bool abandoned) const {
  using Mode = AffinityTable::DropMode;
  return full                            ? Mode::kRelease
         : Leaving(h.node, h.epoch, now) ? Mode::kNoGrace  // a drain ends: no grace on a leaving node
         : abandoned                     ? Mode::kAbandoned
                                         : Mode::kGrace;
}

void Router::Impl::DropRef(const Held& h, bool full, int64_t now, bool abandoned) {
  if (h.claim == 0) return;
  placement_->DropClaim(AffinityKey(h.app, h.key), h.claim, DropModeOf(h, full, now, abandoned), now);
}

void Router::Impl::Release(const Held& h, int64_t now, bool abandoned) {
  placement_->EndSession(h.node, h.epoch, h.resource, AffinityKey(h.app, h.key), h.claim,
                         DropModeOf(h, false, now, abandoned), now);
  ReleaseExtras(h.node, h.epoch, h.extra);
  DropPreference(h, now);
}

Decision Router::Impl::SessionDecision(const Snapshot& snap, const SessionEntry& e, const Policies& pol) {
  Decision d;
  d.ok = true;
  d.reason = "session";
  d.attempt = e.attempt;
  if (pol.by_slot[e.app]) d.app = pol.by_slot[e.app]->config.name;
  if (const NodeView* v = snap.At(e.node, e.node_epoch)) {
    d.node_id = v->id;
    d.uri = v->uri;
    return d;
  }
  d.ok = false;
  d.reason = "no_node";
  d.detail = "the call's node was removed";
  return d;
}

absl::StatusOr<Decision> Router::Impl::Route(const RouteRequest& req) {
  const bool timed = counters_.Sample();
  const auto t0 = timed ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point{};
  uint32_t app = kNil;
  absl::StatusOr<Decision> d = RouteFlow(req, &app);
  if (d.ok()) counters_.Decision(app, d->reason);
  if (timed) {
    counters_.RouteLatency(
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count());
  }
  return d;
}

absl::Status Router::Impl::CheckPlaceInput(std::string_view key, std::string_view prefer, size_t n_exclude) {
  if (absl::Status s = CheckInputLen("key", key); !s.ok()) return s;
  if (!key.empty() && key[0] == kDerivedKeyMark) {
    return absl::InvalidArgumentError("key must not start with the control character 0x1f");
  }
  if (absl::Status s = CheckInputLen("prefer", prefer); !s.ok()) return s;  // only its hash is kept
  if (n_exclude > static_cast<size_t>(kMaxAttemptsLimit) / 2) {
    return absl::InvalidArgumentError(
        Cat("exclude lists ", n_exclude, " nodes, at most ", kMaxAttemptsLimit / 2, " are allowed"));
  }
  return absl::OkStatus();
}

absl::StatusOr<Decision> Router::Impl::RouteFlow(const RouteRequest& req, uint32_t* app) {
  if (absl::Status s = CheckCallId(req.call_id); !s.ok()) return s;
  if (absl::Status s = CheckPlaceInput(req.key, req.prefer, req.exclude.size()); !s.ok()) return s;
  HotCache& cache = ThreadCache();
  absl::StatusOr<const Policies*> pol = policies_.Cached(cache.policies);
  if (!pol.ok()) return pol.status();
  const Policy* p = (*pol)->Find(req.app);
  if (p != nullptr) *app = p->app_slot;
  if (p == nullptr)
    return absl::NotFoundError(Cat("unknown app \"", req.app, "\" and no \"default\" app is configured"));
  const Snapshot& snap = CachedSnapshot(cache);
  const int64_t now = now_();
  Maintain(now);  // outside the op: it may wait for every op to finish
  absl::StatusOr<Owners::Op> op = owners_.Enter();
  if (!op.ok()) return op.status();
  SlotList avoid;
  for (const auto& id : req.exclude) {
    if (const NodeView* v = snap.Find(id)) avoid.push_back(v->slot);
  }
  // What the tables keep: the values themselves, or their digest form when
  // longer than a slot (the strategy sees the key as stored).
  const StoredName call_id(req.call_id, kMaxCallIdLen);
  const StoredName key(req.key, kMaxKeyLen);
  // A call already routed is found when its session is inserted (the rare
  // case pays for an undone placement, the common case saves a lock).
  const uint64_t call_hash = SessionTable::Hash(call_id);
  sessions_.Prefetch(call_hash);
  Placed placed;
  const uint64_t prefer = req.prefer.empty() ? 0 : PreferHash(req.prefer);
  const PlaceCall call = Call(*p, snap, call_id, key, req.attrs, avoid, 1, now, "strategy", prefer, call_hash);
  if (absl::Status s = Place(call, &placed); !s.ok()) return s;
  if (!placed.decision.ok) {
    if (std::optional<SessionEntry> e = sessions_.Get(call_id, now)) return SessionDecision(snap, *e, **pol);
    return placed.decision;
  }
  const uint64_t pref_hash = placed.pref_claim ? call.prefer : 0;
  auto mine = [&] {
    return Held{p->app_slot,       p->resource, placed.ref.slot, placed.ref.epoch, placed.ref.claim,
                placed.pref_claim, pref_hash,   KeyCopy(key),    placed.extra};
  };
  SessionInit init{.call_id = call_id,
                   .key = placed.ref.claim ? key.view() : std::string_view(),
                   .call_id_hash = call_hash,
                   .app = p->app_slot,
                   .resource = p->resource,
                   .node = placed.ref.slot,
                   .epoch = placed.ref.epoch,
                   .extra = placed.extra,
                   .claim = placed.ref.claim,
                   .pref_claim = placed.pref_claim,
                   .pref_hash = pref_hash,
                   .created_ms = now,
                   .expires_ms = now + p->config.session_lifetime_ms,
                   .tried = avoid.data(),
                   .n_tried = avoid.size(),
                   .attrs = &req.attrs};
  SessionEntry existing;  // filled only for kDuplicate (no 500-byte zeroing per call)
  std::vector<Held> expired;
  SessionTable::Insert r = sessions_.Add(init, now, &existing, &expired);
  for (const Held& h : expired) Release(h, now);
  if (r == SessionTable::Insert::kDuplicate) {  // routed concurrently by another process: keep theirs
    Release(mine(), now);
    return SessionDecision(snap, existing, **pol);
  }
  if (r == SessionTable::Insert::kFull) {
    Release(mine(), now);
    return absl::ResourceExhaustedError(Cat("session table is full (state.max_sessions = ", H().max_sessions, ")"));
  }
  region_->node(placed.ref.slot).routed_total.fetch_add(1, std::memory_order_relaxed);
  return std::move(placed.decision);
}

absl::StatusOr<Decision> Router::Impl::Retry(std::string_view call_id, int code) {
  uint32_t app = kNil;
  absl::StatusOr<Decision> d = RetryFlow(call_id, code, &app);
  if (app != kNil) {
    counters_.Retry(app, code);
    if (d.ok()) counters_.Decision(app, d->reason);
  }
  return d;
}

absl::StatusOr<Decision> Router::Impl::RetryFlow(std::string_view full_call_id, int code, uint32_t* app) {
  if (absl::Status s = CheckCallId(full_call_id); !s.ok()) return s;
  const StoredName stored(full_call_id, kMaxCallIdLen);
  const std::string_view call_id = stored;
  if (code < 100 || code > 699)
    return absl::InvalidArgumentError(Cat("code ", code, " is not a SIP status code (100..699)"));
  absl::StatusOr<std::shared_ptr<const Policies>> pol = policies_.Get();
  if (!pol.ok()) return pol.status();
  std::shared_ptr<const Snapshot> snap = GetSnapshot();
  const int64_t now = now_();
  absl::StatusOr<Owners::Op> op = owners_.Enter();
  if (!op.ok()) return op.status();
  std::shared_ptr<Policy> p;
  Held old, ended;
  SlotList avoid;
  int attempt = 0;
  std::string why;
  // Or "not_retryable" (the code does not ask for another node), or
  // "retry_budget" (the app's retries for this second are spent).
  const char* reason = "no_node";
  std::map<std::string, std::string> attrs;  // the original request's, for the strategy
  // Take the bounced node off the session (or end it when it cannot go on).
  bool found = sessions_.Modify(
      call_id, now,
      [&](SessionEntry& e) {
        old = SessionTable::HeldBy(e);
        p = (*pol)->by_slot[e.app];
        *app = e.app;
        attempt = e.attempt;
        if (!p) {
          why = "the call's app is no longer configured";
        } else if (!p->IsRetryCode(code)) {
          why = Cat("code ", code, " is not a retry code of app \"", p->config.name, "\"");
          reason = "not_retryable";
        } else if (e.attempt >= p->config.max_attempts) {
          why = Cat("max_attempts (", p->config.max_attempts, ") reached for app \"", p->config.name, "\"");
        } else if (!RetryBudget::Take(H().apps[e.app].counters, p->config, now)) {
          why = Cat("retry budget of app \"", p->config.name, "\" spent for this second (",
                    p->config.retry_budget_percent, "% of calls in flight + ", p->config.retry_budget_min_per_second,
                    ")");
          reason = "retry_budget";
        }
        if (!why.empty()) return true;
        if (e.node != kNil && e.n_tried < static_cast<uint32_t>(kMaxAttemptsLimit)) e.tried[e.n_tried++] = e.node;
        for (uint32_t i = 0; i < e.n_tried; ++i) avoid.push_back(e.tried[i]);
        e.node = kNil;
        e.extra = 0;
        e.claim = 0;
        e.pref_claim = 0;
        attempt = ++e.attempt;
        attrs = SessionTable::UnpackAttrs(e.attrs);
        return false;
      },
      &ended);
  if (!found) return absl::NotFoundError(Cat("no session for call_id \"", call_id, "\""));
  // Move the counts off the node that bounced, and its claim if it is full
  // (or if this unanswered call was all the claim ever had).
  // A strict key's claim is never released for a full code: while other
  // sessions of the key live there, the key stays (the retry is refused).
  placement_->Release(old.node, old.epoch, old.resource);
  ReleaseExtras(old.node, old.epoch, old.extra);
  DropRef(old, p && p->IsFullCode(code) && !p->config.affinity_strict, now, /*abandoned=*/true);
  DropPreference(old, now);
  if (!why.empty()) {
    Decision d;
    d.reason = reason;
    d.detail = why;
    d.attempt = attempt;
    if (p) d.app = p->config.name;
    return d;
  }
  Placed placement;
  const absl::Status place_status = Place(Call(*p, *snap, call_id, old.key, attrs, avoid, attempt, now, "retry",
                                               old.pref_hash, SessionTable::Hash(call_id)),
                                          &placement);
  const bool placed = place_status.ok() && placement.decision.ok;
  if (absl::Status s = RecordRetry(call_id, now, *p, old, placement, placed); !s.ok()) return s;
  if (!place_status.ok()) return place_status;
  return std::move(placement.decision);
}

absl::Status Router::Impl::RecordRetry(std::string_view call_id, int64_t now, const Policy& p, const Held& old,
                                       const Placed& placement, bool placed) {
  Held gone;
  const bool found = sessions_.Modify(
      call_id, now,
      [&](SessionEntry& e) {
        if (!placed) return true;
        e.node = placement.ref.slot;
        e.node_epoch = placement.ref.epoch;
        e.claim = placement.ref.claim;
        e.extra = placement.extra;
        e.pref_claim = placement.pref_claim;
        e.pref_hash = placement.pref_claim ? old.pref_hash : 0;
        SetFixed(e.key, placement.ref.claim ? std::string_view(old.key) : std::string_view());
        return false;
      },
      &gone);
  if (!found) {
    // Ended while we were choosing: undo the new placement.
    if (placed) {
      Release(Held{p.app_slot, p.resource, placement.ref.slot, placement.ref.epoch, placement.ref.claim,
                   placement.pref_claim, old.pref_hash, old.key, placement.extra},
              now);
    }
    return absl::NotFoundError(Cat("call_id \"", call_id, "\" ended during retry"));
  }
  if (placed) region_->node(placement.ref.slot).routed_total.fetch_add(1, std::memory_order_relaxed);
  return absl::OkStatus();
}

absl::Status Router::Impl::Confirm(std::string_view full_call_id) {
  if (absl::Status s = CheckCallId(full_call_id); !s.ok()) return s;
  const StoredName stored(full_call_id, kMaxCallIdLen);
  const std::string_view call_id = stored;
  Held held;
  if (!sessions_.Confirm(call_id, &held)) return absl::NotFoundError(Cat("no session for call_id \"", call_id, "\""));
  if (held.claim != 0) placement_->MarkAnswered(AffinityKey(held.app, held.key), held.claim);
  return absl::OkStatus();
}

absl::Status Router::Impl::End(std::string_view full_call_id, bool abandoned) {
  if (absl::Status s = CheckCallId(full_call_id); !s.ok()) return s;
  const StoredName stored(full_call_id, kMaxCallIdLen);
  const std::string_view call_id = stored;
  const int64_t now = now_();
  {
    absl::StatusOr<Owners::Op> op = owners_.Enter();
    if (!op.ok()) return op.status();
    Held held;
    if (!sessions_.Remove(call_id, &held)) return absl::NotFoundError(Cat("no session for call_id \"", call_id, "\""));
    Release(held, now, abandoned);
  }
  // Ends keep the sweep going as routes do, and with it the cluster's
  // republish, which carries this end's share; after the op, since Maintain
  // may wait for every op to finish.
  Maintain(now);
  return absl::OkStatus();
}

int64_t Router::Impl::SweepShard(size_t s, int64_t now, uint32_t max_buckets) {
  absl::StatusOr<Owners::Op> op = owners_.Enter();
  if (!op.ok()) return 0;
  std::vector<Held> expired;
  int64_t n = sessions_.Expire(s, now, &expired, max_buckets);
  for (const Held& h : expired) Release(h, now);
  affinity_.Sweep(s, now, max_buckets);
  return n;
}

void Router::Impl::Recover(int64_t now) {
  int died_in_op = owners_.CheckDead();
  if (died_in_op == 0 && H().repair_needed.load(std::memory_order_relaxed) == 0) return;
  owners_.RunExclusive(kRepairWaitMs, [&] {
    RegistryLock g(H());
    Recount(*region_, now);
  });
}

void Router::Impl::Maintain(int64_t now) {
  std::atomic<uint64_t>& last = H().sweep_cursor;  // (ms << 4) | next shard
  uint64_t cur = last.load(std::memory_order_relaxed);
  if (now - static_cast<int64_t>(cur >> 4) < kSweepIntervalMs) return;
  size_t shard = cur & 15;
  uint64_t next = (static_cast<uint64_t>(now) << 4) | ((shard + 1) & 15);
  if (!last.compare_exchange_strong(cur, next, std::memory_order_relaxed)) return;
  int64_t checked = H().owner_check_ms.load(std::memory_order_relaxed);
  if ((now - checked >= kOwnerCheckIntervalMs || H().repair_needed.load(std::memory_order_relaxed) != 0) &&
      H().owner_check_ms.compare_exchange_strong(checked, now, std::memory_order_relaxed)) {
    Recover(now);
  }
  SweepShard(shard, now, kSweepBucketsPerVisit);
  nodes_.RemoveLapsed(now);
  placement_->Maintain(now);
}

int64_t Router::Impl::Sweep() {
  const int64_t now = now_();
  Recover(now);
  int64_t n = 0;
  for (size_t s = 0; s < kShards; ++s) n += SweepShard(s, now);
  nodes_.RemoveLapsed(now);
  placement_->Maintain(now);
  return n;
}

}  // namespace approute
