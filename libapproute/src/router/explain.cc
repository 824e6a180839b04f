// Router::Impl::Explain: the placement of place.cc as a dry run, traced.
//
// The steps are the flow's own (BoundFor, the KeyAdmit predicate, Diagnose,
// PreferredNode, the pool scan, PickFull with the app's strategy); what
// differs is only that nothing is taken: the scan's verdicts are recorded
// (ExplainSink), a reservation is NodeTable::HasRoom over the counts the
// real one tests (DryCounts: the deployment's with cluster:), within
// HeadroomCap for a new key as the Reserver, and the strategy sees a dry-run context (no
// ticket taken, shared slots copied). No Owners::Op is entered: nothing is
// changed that a dead process could leave half-done.
#include <algorithm>

#include "router/explain.h"
#include "router/router_impl.h"
#include "state/usage.h"
#include "util/stored_name.h"

namespace approute {
namespace {

// Records each pool member's scan verdict (the last tier's).
class ExplainSink {
 public:
  void Begin(size_t members) {
    verdicts_.assign(members, Verdict::kGone);
    taken_ = 0;
  }
  void Add(size_t i, const NodeHot&, int64_t, int64_t) {
    verdicts_[i] = Verdict::kTake;
    ++taken_;
  }
  void Skip(size_t i, Verdict v) { verdicts_[i] = v; }
  void End() {}
  bool Empty() const { return taken_ == 0; }
  Verdict At(size_t i) const { return verdicts_[i]; }

 private:
  std::vector<Verdict> verdicts_;
  size_t taken_ = 0;
};

std::string Count(std::string_view resource, int64_t sessions, int64_t capacity) {
  return Cat(resource, " ", sessions, "/", capacity < 0 ? std::string("unlimited") : Cat(capacity));
}

}  // namespace

const std::vector<std::string>& ExclusionNames() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> out;
    for (const ExclusionRow& r : kExclusions) {
      if (r.e != Exclusion::kNone) out.emplace_back(r.name);
    }
    return out;
  }();
  return names;
}

Router::Impl::DryCounts::DryCounts(Impl& r, const Policy& p, const Snapshot& snap) : r_(r), res_(p.resource) {
  const PoolView* pv = snap.Pool(p.config.pool);
  if (r.cluster_ == nullptr || pv == nullptr) return;
  std::vector<std::pair<uint32_t, uint32_t>> want;
  for (uint32_t slot : pv->slot) want.emplace_back(slot, res_);
  if (std::optional<std::vector<int64_t>> counts = r.cluster_->DeploymentCounts(want)) {
    for (size_t i = 0; i < want.size(); ++i) deployment_[want[i].first] = (*counts)[i];
  }
}

int64_t Router::Impl::DryCounts::Of(uint32_t slot) const {
  if (auto it = deployment_.find(slot); it != deployment_.end()) return it->second;
  return r_.region_->hot(slot).sessions[res_].load(std::memory_order_relaxed);
}

ExplainNode Router::Impl::ExplainMember(const PlaceCall& c, const PoolView& pv, size_t i, Verdict v,
                                        const SlotList& excluded, const DryCounts& counts) {
  const uint32_t slot = pv.slot[i];
  const NodeHot& n = region_->hot(slot);
  const NodeView* view = c.snap.At(slot, pv.epoch[i]);
  ExplainNode out;
  out.id = view != nullptr ? view->id : std::string();
  out.state = AdminStateName(static_cast<AdminState>(n.admin.load(std::memory_order_relaxed)));
  out.health = HealthName(static_cast<Health>(n.health.load(std::memory_order_relaxed)));
  out.sessions = counts.Of(slot);
  out.capacity = pv.CapacityRow(c.p.resource)[i];
  Exclusion e = Exclusion::kNone;
  std::string more;
  switch (v) {
    case Verdict::kTake:
      out.candidate = true;
      // Room as the reservation sees it: within what the node's own report leaves (usage.h).
      if (!counts.Room(slot, UsageCap(n, c.p.resource, out.capacity, c.now))) {  // full by the deployment's count
        e = Exclusion::kFull;
        more = Cat(": ", Count(c.p.config.resource, out.sessions, out.capacity), " over the deployment");
      } else if (c.keyed && !counts.Room(slot, UsageCap(n, c.p.resource, HeadroomCap(c.p, out.capacity), c.now))) {
        // A new key's call is reserved within the headroom (the Reserver).
        e = Exclusion::kHeadroom;
        more = Cat(": ", Count(c.p.config.resource, out.sessions, out.capacity), ", a new key up to ",
                   HeadroomCap(c.p, out.capacity));
      }
      break;
    case Verdict::kGone:
      e = Exclusion::kGone;
      break;
    case Verdict::kDisabled:
      e = NodeTable::LeaseExpired(n, c.now) ? Exclusion::kLeaseExpired : Exclusion::kDisabled;
      break;
    case Verdict::kDraining: {
      e = Exclusion::kDraining;
      const int64_t deadline = n.drain_deadline_ms.load(std::memory_order_relaxed);
      if (deadline != 0) {
        more =
            deadline > c.now ? Cat(" (deadline in ", (deadline - c.now + 999) / 1000, " s)") : " (past its deadline)";
      }
      break;
    }
    case Verdict::kDown:
      e = n.health.load(std::memory_order_relaxed) == static_cast<uint32_t>(Health::kDown) ? Exclusion::kDown
                                                                                           : Exclusion::kEjected;
      if (e == Exclusion::kEjected) {
        more = Cat(" (for ", (n.ejected_until_ms.load(std::memory_order_relaxed) - c.now + 999) / 1000, " s more)");
      }
      break;
    case Verdict::kSuspect:
      e = Exclusion::kSuspect;
      break;
    case Verdict::kBusy:
      e = Exclusion::kBusy;
      more = Cat(" (for ", (n.busy_until_ms.load(std::memory_order_relaxed) - c.now + 999) / 1000, " s more)");
      break;
    case Verdict::kShed: {
      NodeHot& mutable_hot = region_->hot(slot);
      e = Exclusion::kShed;
      more = Cat(" (", Overload::Percent(mutable_hot, c.now), "% of new calls)");
      break;
    }
    case Verdict::kAvoid:
      e = Contains(excluded, slot) ? Exclusion::kExcluded : Exclusion::kTried;
      break;
    case Verdict::kFull: {
      e = Exclusion::kFull;
      // Full for the first resource, or else for another of the app's.
      const uint32_t x = c.p.extra != 0 ? FullExtra(n, c.p.extra, pv, i, c.now) : kNil;
      const bool first_full = out.capacity >= 0 && UsageCount(n, c.p.resource, out.sessions, c.now) >= out.capacity;
      more = x != kNil && !first_full ? Cat(": ", CountText(c, slot, pv.epoch[i], x))
                                      : Cat(": ", Count(c.p.config.resource, out.sessions, out.capacity));
      break;
    }
  }
  const ExclusionRow& row = RowOf(e);
  out.exclusion = row.name;
  out.detail = e == Exclusion::kNone ? std::string() : Cat(row.text, more);
  return out;
}

absl::StatusOr<ExplainTrace> Router::Impl::Explain(const ExplainRequest& req) {
  absl::StatusOr<std::shared_ptr<const Policies>> pol = policies_.Get();
  if (!pol.ok()) return pol.status();
  std::shared_ptr<const Snapshot> snap = GetSnapshot();
  const int64_t now = now_();
  ExplainTrace t;
  const Policy* p = nullptr;
  std::string key(StoredName(req.key, kMaxKeyLen).view());  // as route() stores it
  std::map<std::string, std::string> attrs = req.attrs;
  uint64_t prefer = 0;
  SlotList avoid, excluded;
  int attempt = 1;
  std::string call_id = "explain";
  if (!req.call_id.empty()) {
    if (absl::Status s = CheckCallId(req.call_id); !s.ok()) return s;
    const StoredName stored(req.call_id, kMaxCallIdLen);
    std::optional<SessionEntry> e = sessions_.Get(stored, now);
    if (!e) return absl::NotFoundError(Cat("no session for call_id \"", req.call_id, "\""));
    p = (*pol)->by_slot[e->app].get();
    if (p == nullptr) return absl::NotFoundError(Cat("the app of call \"", req.call_id, "\" is no longer configured"));
    key = std::string(GetFixed(e->key));
    attrs = SessionTable::UnpackAttrs(e->attrs);
    for (uint32_t i = 0; i < e->n_tried; ++i) avoid.push_back(e->tried[i]);
    prefer = e->pref_hash;
    attempt = static_cast<int>(e->attempt);
    call_id = std::string(stored.view());
    t.call_id = call_id;
    t.prefer = prefer != 0 ? "(the session's preference)" : "";
    t.steps.push_back(Cat("session ", req.call_id, ": attempt ", attempt, ", on node ",
                          snap->At(e->node, e->node_epoch) ? snap->At(e->node, e->node_epoch)->id : "(none)",
                          e->n_tried ? Cat(", ", e->n_tried, " node(s) tried or excluded") : std::string()));
  } else {
    if (absl::Status s = CheckPlaceInput(req.key, req.prefer, req.exclude.size()); !s.ok()) return s;
    p = (*pol)->Find(req.app);
    if (p == nullptr)
      return absl::NotFoundError(Cat("unknown app \"", req.app, "\" and no \"default\" app is configured"));
    for (const std::string& id : req.exclude) {
      if (const NodeView* v = snap->Find(id)) {
        avoid.push_back(v->slot);
        excluded.push_back(v->slot);
      }
    }
    prefer = req.prefer.empty() ? 0 : PreferHash(req.prefer);
    t.prefer = req.prefer;
  }
  const PlaceCall c =
      Call(*p, *snap, call_id, key, attrs, avoid, attempt, now, "strategy", prefer, SessionTable::Hash(call_id));
  t.app = p->config.name;
  t.pool = p->config.pool;
  t.resource = p->config.resource;
  t.strategy = p->config.strategy;
  t.key = key;
  t.headroom = p->config.affinity_headroom;
  t.decision.app = t.app;
  t.decision.attempt = attempt;
  if (!req.call_id.empty() || req.app == t.app) {
    t.steps.push_back(
        Cat("app \"", t.app, "\": pool \"", t.pool, "\", resource \"", t.resource, "\", strategy ", t.strategy));
  } else {
    t.steps.push_back(Cat("app \"", req.app, "\" is not configured: the \"", t.app, "\" app's policy (pool \"", t.pool,
                          "\", resource \"", t.resource, "\", strategy ", t.strategy, ")"));
  }

  // The pool as the scan sees it.
  const DryCounts counts(*this, *p, *snap);
  const PoolView* pv = snap->Pool(p->config.pool);
  t.panic = Panic(*p, *snap, now);
  if (t.panic) t.steps.push_back("the pool is in panic (health.panic_threshold): health is ignored");
  if (pv != nullptr) {
    ExplainSink sink;
    Tally tally;
    ScanPool(*pv, &region_->hot(0), p->resource, p->extra, avoid, t.panic, now, c.shed_seed, sink, &tally);
    for (size_t i = 0; i < pv->slot.size(); ++i)
      t.nodes.push_back(ExplainMember(c, *pv, i, sink.At(i), excluded, counts));
  }

  // Affinity: the key's claim, its node's verdict (KeyAdmit, as the join asks it).
  ExplainAffinity& a = t.affinity;
  a.keyed = c.keyed;
  a.strict = c.strict;
  a.bound = p->config.affinity_bound;
  Bounded b = BoundFor(c);
  std::optional<ClaimRef> ref;
  const char* reason = nullptr;
  bool asked = false;
  if (!c.keyed) {
    t.steps.push_back(p->config.affinity ? "no key: no affinity lookup" : "the app has no affinity");
  } else {
    KeyAdmit admit(*this, c, b);
    const AffinityTable::Hold h = placement_->HolderOf(c.k, now);
    const NodeView* hv = h.slot == kNil ? nullptr : snap->At(h.slot, h.epoch);
    if (h.slot != kNil) {
      asked = true;
      a.node = hv != nullptr ? hv->id : std::string("(a removed node)");
      a.live_sessions = h.refs;
      if (h.refs <= 0) a.grace_left_ms = std::max<int64_t>(0, h.expires_ms - now);
      const std::optional<int64_t> cap = admit(h.slot, h.epoch);
      const std::string where = Cat(
          "key '", key, "' lives on ", a.node,
          h.refs > 0 ? Cat(" (", h.refs, " live session(s))") : Cat(" (in its grace, ", a.grace_left_ms, " ms left)"));
      if (cap.has_value() && counts.Room(h.slot, *cap)) {
        a.outcome = "join";
        a.detail = Cat(where, ": it takes the call");
        ref = ClaimRef{h.slot, h.epoch, 0};
        reason = "affinity";
      } else if (c.strict && h.refs > 0 && !admit.over_bound()) {
        KeyRefusal no = Diagnose(c, h);
        a.outcome = "refused";
        a.detail = no.detail;
        t.steps.push_back(Cat("affinity: ", no.detail, ": refused (affinity.strict)"));
        t.decision.reason = no.reason;
        t.decision.detail = std::move(no.detail);
        return t;
      } else if (admit.over_bound()) {
        a.outcome = "over_bound";
        a.detail = Cat(where, ", which is above the load bound (", a.bound, " x the mean)");
        for (const LoadBound::Entry& e : b.lb.NextHomes()) {
          const Candidate& cand = b.cands->list[e.index];
          if (counts.Room(cand.slot, UsageCap(region_->hot(cand.slot), c.p.resource, cand.capacity, c.now))) {
            ref = ClaimRef{cand.slot, EpochOf(*snap, cand.slot), 0};
            reason = "affinity_bound";
            a.detail += Cat(": its next home within the bound is ", cand.id);
            break;
          }
        }
      } else {
        a.outcome = "not_taken";
        a.detail = Cat(Diagnose(c, h).detail, ": the strategy picks and the key moves");
      }
    } else {
      a.outcome = "new_key";
      a.detail = Cat("key '", key, "' has no claim: a new key");
    }
    t.steps.push_back(Cat("affinity: ", a.detail));
  }

  // A new key's preference.
  if (!ref && c.prefer != 0 && !asked) {
    int64_t cap = 0;
    std::string why;
    std::optional<ClaimRef> at = PreferredNode(c, b, &cap, &why);
    const NodeView* v = at ? snap->At(at->slot, at->epoch) : nullptr;
    if (at && counts.Room(at->slot, cap)) {
      ref = at;
      reason = "prefer";
      t.steps.push_back(Cat("prefer: ", v ? v->id : "?", " holds the preference and takes the call"));
    } else if (at) {
      t.steps.push_back(Cat("prefer: ", v ? v->id : "?", " holds the preference but has no room for a new key"));
    } else {
      t.steps.push_back(Cat("prefer: ", why, ": the strategy picks and the preference follows"));
    }
  }

  if (ref) {
    const NodeView* v = snap->At(ref->slot, ref->epoch);
    t.decision.ok = v != nullptr;
    t.decision.reason = reason;
    t.decision.node_id = v ? v->id : "";
    t.decision.uri = v ? v->uri : "";
    return t;
  }

  // The strategy, over the candidates (a copy: the trace's picks erase from it).
  CandidateList cl;
  Tally tally;
  if (b.on) {
    cl.list = b.cands->list;
    tally = b.tally;
  } else {
    Candidates(*p, *snap, avoid, now, c.shed_seed, &cl, &tally);
  }
  for (const Candidate& cand : cl.list) {
    t.compared.push_back(ExplainTrace::Compared{std::string(cand.id), cand.sessions, cand.capacity, cand.total_sessions,
                                                cand.weight, cand.priority});
  }
  size_t headroom = 0;
  auto dry_reserve = [&](uint32_t slot, uint32_t, int64_t capacity) {
    const NodeHot& hot = region_->hot(slot);
    if (!counts.Room(slot, UsageCap(hot, p->resource, capacity, now))) return false;
    if (c.keyed && !counts.Room(slot, UsageCap(hot, p->resource, HeadroomCap(*p, capacity), now))) {
      ++headroom;
      return false;
    }
    return true;
  };
  RegionStrategyContext ctx(*region_, nodes_, p->app_slot, *snap, now, nullptr, /*dry_run=*/true);
  PickRequest pr{.app = p->config.name,
                 .resource = p->config.resource,
                 .call_id = c.call_id,
                 .key = c.key,
                 .attrs = &c.attrs,
                 .attempt = c.attempt};
  Picked picked;
  picked.tally = tally;
  std::vector<PickStep> log;
  PickFull(c, pr, ctx, cl, /*built=*/true, dry_reserve, &picked, &log);
  for (const PickStep& s : log) {
    const NodeView* v = snap->At(s.slot, EpochOf(*snap, s.slot));
    Exclusion e = s.outcome;
    // The dry reservation said no for lack of room, or only of headroom.
    if (e == Exclusion::kFull && c.keyed &&
        counts.Room(s.slot, UsageCap(region_->hot(s.slot), p->resource,
                                     CapacityOf(*snap, s.slot, EpochOf(*snap, s.slot), p->resource), now))) {
      e = Exclusion::kHeadroom;
    }
    t.picks.push_back(ExplainPick{v ? v->id : "", e == Exclusion::kNone ? "taken" : RowOf(e).name});
  }
  t.steps.push_back(
      Cat("strategy ", t.strategy, ": compared ", t.compared.size(), " candidate(s), ", log.size(), " pick(s)"));
  if (picked.ref.slot == kNil) {
    if (c.strict) {
      if (AffinityTable::Hold h = placement_->HolderOf(c.k, now); h.slot != kNil && h.refs > 0) {
        KeyRefusal no = Diagnose(c, h);
        t.decision.reason = no.reason;
        t.decision.detail = std::move(no.detail);
        return t;
      }
    }
    t.decision.reason = "no_node";
    t.decision.detail = picked.chose_none ? std::move(picked.detail) : NoNodeDetail(*p, picked.tally, headroom);
    return t;
  }
  const NodeView* v = snap->At(picked.ref.slot, picked.ref.epoch);
  t.decision.ok = v != nullptr;
  t.decision.reason = picked.reason;
  t.decision.node_id = v ? v->id : "";
  t.decision.uri = v ? v->uri : "";
  return t;
}

}  // namespace approute
