// The placement of one call (Router::Impl::Place), in named steps:
//
//   BoundFor        affinity.bound: the app's candidates and the bound over them
//   JoinKey         the key's live claim, joined when its node takes the call
//   StrictRefusal   a strict key whose node cannot take the call: refused
//   NextHome        the key's node above the bound: its next home within it
//   Preferred       a new key with a preference: the preference's node
//   PickNode        the strategy's node (a compact pick, else the full one),
//                   reserved (within the headroom for a new key); a new key
//                   is claimed in the same step
//   ClaimFor        the key's claim for a node reserved without one
//   FollowPreference  the preference follows a new key's node
//
// Each step takes the call's inputs (PlaceCall) and returns what it found;
// the only state a step leaves behind is what it reserved or claimed, which
// its result names. The callbacks handed to the placement (KeyAdmit,
// Reserver) run under a table lock and only read node atomics and reserve.
#include <cmath>
#include <optional>

#include "absl/strings/str_join.h"
#include "router/router_impl.h"
#include "state/usage.h"

namespace approute {

bool Router::Impl::Usable(uint32_t slot, uint32_t epoch, const Policy& p, const Snapshot& snap, int64_t now) {
  if (slot == kNil || slot >= region_->max_nodes()) return false;
  NodeHot& n = region_->hot(slot);
  if (n.epoch.load(std::memory_order_relaxed) != epoch) return false;
  uint32_t admin = n.admin.load(std::memory_order_relaxed);
  if (admin == static_cast<uint32_t>(AdminState::kDisabled)) return false;
  if (admin == static_cast<uint32_t>(AdminState::kDraining)) {
    int64_t deadline = n.drain_deadline_ms.load(std::memory_order_relaxed);
    if (deadline != 0 && now >= deadline) return false;  // past its drain deadline: its keys go elsewhere
  }
  if (n.health.load(std::memory_order_relaxed) == static_cast<uint32_t>(Health::kDown)) return false;
  if (NodeTable::LeaseExpired(n, now) || HealthMonitor::Ejected(n, now)) return false;
  const NodeView* v = snap.At(slot, epoch);
  return v != nullptr && v->pool == p.config.pool;
}

int64_t Router::Impl::CapacityOf(const Snapshot& snap, uint32_t slot, uint32_t epoch, uint32_t res) const {
  const NodeView* v = snap.At(slot, epoch);
  return v ? v->capacity[res] : 0;
}

void Router::Impl::Candidates(const Policy& p, const Snapshot& snap, const SlotList& avoid, int64_t now,
                              uint64_t shed_seed, CandidateList* out, Tally* tally) {
  const PoolView* pv = snap.Pool(p.config.pool);
  if (pv == nullptr) {
    out->list.clear();
    return;
  }
  if (out->pool != pv || out->router != id_ || out->generation != snap.generation) {
    *out = CandidateList{std::move(out->list), pv, id_, snap.generation, 0};
  }
  const bool panic = Panic(p, snap, now);
  CandidateSink sink(out, *pv, snap.resources.size());
  ScanPool(*pv, &region_->hot(0), p.resource, p.extra, avoid, panic, now, shed_seed, sink, tally);
}

// ---- steps ------------------------------------------------------------------

Router::Impl::Bounded Router::Impl::BoundFor(const PlaceCall& c) {
  Bounded b;
  const double bound = c.keyed ? c.p.config.affinity_bound : 0;
  if (bound <= 1.0) return b;
  b.on = true;
  b.cands = &CandidateBuffer();
  Candidates(c.p, c.snap, c.avoid, c.now, c.shed_seed, b.cands, &b.tally);
  b.lb = LoadBound(b.cands->list, bound, c.k.hash);
  return b;
}

std::optional<int64_t> Router::Impl::KeyAdmit::operator()(uint32_t slot, uint32_t epoch) const {
  asked_ = true;
  asked_about_ = ClaimRef{slot, epoch, 0};
  if (!r_.Usable(slot, epoch, c_.p, c_.snap, c_.now) || Contains(c_.avoid, slot)) return std::nullopt;
  if (b_.on && !c_.strict && !b_.lb.Within(slot)) {
    over_bound_ = true;
    return std::nullopt;
  }
  const uint32_t res = c_.p.resource;
  if (c_.p.extra != 0 && r_.FullExtraAt(c_, slot, epoch) != kNil) return std::nullopt;  // full for another resource
  return UsageCap(r_.region_->hot(slot), res, r_.CapacityOf(c_.snap, slot, epoch, res), c_.now);
}

std::optional<ClaimRef> Router::Impl::JoinKey(const PlaceCall& c, KeyAdmit& admit) {
  // With a bound, the key's node must be known now (for its next home); a
  // strict key's, to refuse the call when that node cannot take it.
  const bool defer = c.p.config.affinity_bound <= 1.0 && !c.strict;
  return placement_->JoinAndReserve(c.k, c.p.resource, c.now, defer, admit);
}

std::optional<ClaimRef> Router::Impl::NextHome(const PlaceCall& c, const Bounded& b) {
  for (const LoadBound::Entry& e : b.lb.NextHomes()) {
    const Candidate& cand = b.cands->list[e.index];
    const int64_t cap = UsageCap(region_->hot(cand.slot), c.p.resource, cand.capacity, c.now);
    if (placement_->Reserve(cand.slot, c.p.resource, cap)) {
      return ClaimRef{cand.slot, EpochOf(c.snap, cand.slot), 0};
    }
  }
  return std::nullopt;
}

int64_t Router::Impl::HeadroomCap(const Policy& p, int64_t capacity) {
  const double h = p.config.affinity_headroom;
  if (h <= 0 || capacity <= 0) return capacity;
  return static_cast<int64_t>(std::ceil((1.0 - h) * static_cast<double>(capacity) - 1e-9));
}

bool Router::Impl::Reserver::operator()(uint32_t slot, uint32_t epoch, int64_t configured) {
  // The capacity as the node's own report leaves it (usage.h), and for a
  // new key within the headroom.
  const uint32_t res = c_.p.resource;
  const NodeHot& hot = r_.region_->hot(slot);
  const int64_t capacity = UsageCap(hot, res, configured, c_.now);
  if (!claim_new_) return r_.placement_->Reserve(slot, res, capacity);
  const int64_t cap = UsageCap(hot, res, HeadroomCap(c_.p, configured), c_.now);
  auto alive = [this](uint32_t s, uint32_t e) { return r_.Usable(s, e, c_.p, c_.snap, c_.now); };
  claimed_ = r_.placement_->ReserveAndClaim(c_.k, ClaimRef{slot, epoch, 0}, res, cap, c_.p.config.affinity_grace_ms,
                                            c_.now, alive, admit_);
  if (!claimed_.has_value() && cap != capacity &&
      r_.region_->hot(slot).sessions[res].load(std::memory_order_relaxed) < capacity) {
    ++headroom_;  // room for a call of a key it holds, none for a new one
  }
  return claimed_.has_value();
}

Router::Impl::CompactOutcome Router::Impl::PickCompact(const PlaceCall& c, const PickRequest& pr, StrategyContext& ctx,
                                                       Reserver& reserve, Picked* out) {
  const Policy& p = c.p;
  const PoolView* pvp = c.snap.Pool(p.config.pool);
  if (pvp == nullptr) return CompactOutcome::kPicked;  // no pool: no node
  const PoolView& pv = *pvp;
  const uint32_t res = p.resource;
  const bool panic = Panic(p, c.snap, c.now);
  NodeHot* hot = &region_->hot(0);
  const int64_t* caps = pv.CapacityRow(res);
  const bool slow_start = p.health.slow_start_ms > 0;
  auto take = [&](size_t member, int64_t capacity) {
    const uint32_t slot = pv.slot[member];
    if (!reserve(slot, pv.epoch[member], capacity)) return false;
    out->ref = ClaimRef{slot, pv.epoch[member], 0};
    out->reason = c.strategy_reason;
    return true;
  };
  // A draw first: no scan while the members it draws can take the call. A
  // drawn member that cannot be reserved (filled meanwhile) or sits out its
  // slow start costs another draw; a few failed draws hand over to the scan.
  auto probe = [&](size_t m, int64_t* s, int64_t* cap) {
    *cap = caps[m];
    return CheckMember(hot[pv.slot[m]], pv.slot[m], pv.epoch[m], caps[m], res, c.avoid, panic, false, c.now,
                       c.shed_seed, s, p.extra, pv, m) == Verdict::kTake;
  };
  // While overload control may shed a member, no draws: a drawn member
  // shed for this call would cost a cursor strategy a second ticket, and
  // the node shed would be offered the next call again.
  const int draws = Overload::AnyInForce(H(), c.now) ? 0 : 4;
  for (int draw = 0; draw < draws; ++draw) {
    std::optional<size_t> m = p.compact->PickSampled(pr, pv.slot.size(), probe, ctx);
    if (!m.has_value() || *m >= pv.slot.size()) break;
    if (slow_start && HealthMonitor::SkipForSlowStart(hot[pv.slot[*m]], p.health, c.now, UniformFrom(ThreadRandom()))) {
      continue;
    }
    if (take(*m, caps[*m])) return CompactOutcome::kPicked;
  }
  static thread_local EligibleList eligible_tl;
  EligibleList& el = eligible_tl;
  EligibleSink sink(&el);
  ScanPool(pv, hot, res, p.extra, c.avoid, panic, c.now, c.shed_seed, sink, &out->tally);
  // As the full path: a pick that cannot be reserved (filled up by another
  // process meanwhile, or skipped for slow start) leaves the list.
  while (el.n > 0) {
    std::optional<size_t> pick = p.compact->PickCompact(pr, el.View(), ctx);
    if (!pick.has_value()) return CompactOutcome::kNeedsFull;
    if (*pick >= el.n) {
      out->chose_none = true;
      out->detail = Cat("strategy ", p.config.strategy, " chose no node: index out of range");
      return CompactOutcome::kChoseNone;
    }
    const uint32_t member = el.member[*pick];
    if (el.n > 1 && slow_start &&
        HealthMonitor::SkipForSlowStart(hot[pv.slot[member]], p.health, c.now, UniformFrom(ThreadRandom()))) {
      el.Erase(*pick);
      continue;
    }
    if (take(member, el.capacity[*pick])) return CompactOutcome::kPicked;
    ++out->tally.full;  // filled up by another process meanwhile
    el.Erase(*pick);
  }
  return CompactOutcome::kPicked;  // nobody left: no node
}

void Router::Impl::PickFull(const PlaceCall& c, const PickRequest& pr, StrategyContext& ctx, CandidateList& cl,
                            bool built, ReserveFn reserve, Picked* out, std::vector<PickStep>* log) {
  std::vector<Candidate>& cands = cl.list;
  if (!built) Candidates(c.p, c.snap, c.avoid, c.now, c.shed_seed, &cl, &out->tally);
  while (!cands.empty()) {
    absl::StatusOr<size_t> pick = c.p.strategy->Pick(pr, absl::MakeConstSpan(cands), ctx);
    if (!pick.ok() || *pick >= cands.size()) {
      out->chose_none = true;
      out->detail = Cat("strategy ", c.p.config.strategy,
                        " chose no node: ", pick.ok() ? "index out of range" : pick.status().message());
      return;
    }
    const Candidate& cand = cands[*pick];
    if (cands.size() > 1 && c.p.health.slow_start_ms > 0 &&
        HealthMonitor::SkipForSlowStart(region_->hot(cand.slot), c.p.health, c.now, UniformFrom(ThreadRandom()))) {
      if (log != nullptr) log->push_back(PickStep{cand.slot, Exclusion::kSlowStart});
      cl.Erase(*pick);
      continue;
    }
    const uint32_t epoch = EpochOf(c.snap, cand.slot);
    if (reserve(cand.slot, epoch, cand.capacity)) {
      if (log != nullptr) log->push_back(PickStep{cand.slot, Exclusion::kNone});
      out->ref = ClaimRef{cand.slot, epoch, 0};
      out->reason = c.strategy_reason;
      return;
    }
    if (log != nullptr) log->push_back(PickStep{cand.slot, Exclusion::kFull});
    ++out->tally.full;  // filled up by another process meanwhile
    cl.Erase(*pick);
  }
}

Router::Impl::Picked Router::Impl::PickNode(const PlaceCall& c, Bounded& b, Reserver& reserve) {
  Picked out;
  if (b.on) out.tally = b.tally;
  RegionStrategyContext ctx(*region_, nodes_, c.p.app_slot, c.snap, c.now, seeded_ ? &rng_ : nullptr);
  PickRequest pr{.app = c.p.config.name,
                 .resource = c.p.config.resource,
                 .call_id = c.call_id,
                 .key = c.key,
                 .attrs = &c.attrs,
                 .attempt = c.attempt};
  if (!b.on && c.p.compact != nullptr && PickCompact(c, pr, ctx, reserve, &out) != CompactOutcome::kNeedsFull) {
    return out;
  }
  auto take = [&reserve](uint32_t slot, uint32_t epoch, int64_t capacity) { return reserve(slot, epoch, capacity); };
  PickFull(c, pr, ctx, b.on ? *b.cands : CandidateBuffer(), b.on, take, &out);
  return out;
}

std::string Router::Impl::NoNodeDetail(const Policy& p, const Tally& t, size_t headroom) {
  if (t.pool == 0) return Cat("pool \"", p.config.pool, "\" has no nodes");
  const size_t full = t.full > headroom ? t.full - headroom : 0;
  return Cat("no candidate in pool \"", p.config.pool, "\" (", t.pool, " nodes: ", t.disabled, " disabled, ",
             t.draining, " draining, ", t.down, " down, ", t.avoid, " excluded or tried, ", full, " full for \"",
             absl::StrJoin(p.config.resources, "\" or \""), "\"",
             t.busy ? Cat(", ", t.busy, " busy (answered 503)") : std::string(),
             t.shed ? Cat(", ", t.shed, " shed by overload control") : std::string(),
             headroom ? Cat(", ", headroom, " above the headroom for a new key") : std::string(), ")");
}

// ---- strict keys ------------------------------------------------------------

std::optional<Router::Impl::KeyRefusal> Router::Impl::StrictRefusal(const PlaceCall& c, const KeyAdmit& admit) {
  if (!admit.asked()) return std::nullopt;  // no claim: a new key
  AffinityTable::Hold h = placement_->HolderOf(c.k, c.now);
  if (h.slot == kNil || h.refs <= 0) return std::nullopt;  // only its grace left: the key may move
  // With cluster:, this host's claim may be stale (the deployment's names
  // another node): the placement follows the deployment's claim, or the
  // call is refused after it (Place).
  if (h.slot != admit.asked_about().slot || h.epoch != admit.asked_about().epoch) return std::nullopt;
  return Diagnose(c, h);
}

Router::Impl::KeyRefusal Router::Impl::Diagnose(const PlaceCall& c, const AffinityTable::Hold& h) {
  const NodeView* v = h.slot == kNil ? nullptr : c.snap.At(h.slot, h.epoch);
  std::string where = Cat("key '", c.key, "' lives on ", v != nullptr ? v->id : std::string("another node"));
  if (h.refs > 0) where += Cat(" (", h.refs, h.refs == 1 ? " live session)" : " live sessions)");
  if (v == nullptr) {
    if (h.slot == kNil) return KeyRefusal{"key_full", where + ", which cannot take it"};
    return KeyRefusal{"key_disabled", where + ", which was removed"};
  }
  NodeHot& n = region_->hot(h.slot);
  const uint32_t admin = n.admin.load(std::memory_order_relaxed);
  if (Contains(c.avoid, h.slot)) return KeyRefusal{"key_tried", where + ", which this call already tried or excludes"};
  if (admin == static_cast<uint32_t>(AdminState::kDisabled))
    return KeyRefusal{"key_disabled", where + ", which is disabled"};
  if (v->pool != c.p.config.pool) return KeyRefusal{"key_disabled", where + ", which left pool " + c.p.config.pool};
  if (NodeTable::LeaseExpired(n, c.now)) return KeyRefusal{"key_draining", where + ", which left (its lease ran out)"};
  if (admin == static_cast<uint32_t>(AdminState::kDraining)) {
    const int64_t deadline = n.drain_deadline_ms.load(std::memory_order_relaxed);
    if (deadline != 0 && c.now >= deadline) {
      return KeyRefusal{"key_draining", where + ", which is draining past its deadline"};
    }
  }
  if (n.health.load(std::memory_order_relaxed) == static_cast<uint32_t>(Health::kDown)) {
    return KeyRefusal{"key_down", where + ", which is down"};
  }
  if (HealthMonitor::Ejected(n, c.now)) return KeyRefusal{"key_down", where + ", which is ejected for errors"};
  // Full for another resource of the app, else for its first (the
  // deployment's count, with cluster:, by the node's own report if it counts).
  const uint32_t other = c.p.extra != 0 ? FullExtraAt(c, h.slot, h.epoch) : kNil;
  return KeyRefusal{
      "key_full",
      Cat(where, ", which is full: ", CountText(c, h.slot, h.epoch, other != kNil ? other : c.p.resource, true))};
}

absl::StatusOr<ClaimRef> Router::Impl::TakeOver(const PlaceCall& c, ClaimRef at) {
  absl::StatusOr<AffinityTable::ClaimOutcome> claim =
      placement_->TakeOver(c.k, at, c.p.config.affinity_grace_ms, c.now, /*force=*/false);
  if (!claim.ok()) return claim.status();
  return claim->ref;
}

absl::Status Router::Impl::Refuse(const PlaceCall& c, KeyRefusal no, Placed* out) {
  counters_.KeyRefusal(c.p.app_slot, no.reason);
  out->decision.ok = false;
  out->decision.reason = no.reason;
  out->decision.detail = std::move(no.detail);
  return absl::OkStatus();
}

// ---- preferences ------------------------------------------------------------

std::optional<ClaimRef> Router::Impl::PreferredNode(const PlaceCall& c, const Bounded& b, int64_t* cap,
                                                    std::string* why) {
  const PreferKey pk(c.prefer);
  const AffinityTable::Hold h = placement_->HolderOf(AffinityKey(c.p.app_slot, pk.view()), c.now);
  auto no = [why](const char* text) -> std::optional<ClaimRef> {
    if (why != nullptr) *why = text;
    return std::nullopt;
  };
  if (h.slot == kNil) return no("no node holds the preference");
  if (!Usable(h.slot, h.epoch, c.p, c.snap, c.now)) return no("its node cannot take calls of the app now");
  if (Contains(c.avoid, h.slot)) return no("its node is excluded or tried");
  if (b.on && !b.lb.Within(h.slot)) return no("its node is above the load bound");
  if (c.p.extra != 0 && FullExtraAt(c, h.slot, h.epoch) != kNil) return no("its node is full for another resource");
  *cap = UsageCap(region_->hot(h.slot), c.p.resource,
                  HeadroomCap(c.p, CapacityOf(c.snap, h.slot, h.epoch, c.p.resource)), c.now);
  return ClaimRef{h.slot, h.epoch, 0};
}

std::optional<ClaimRef> Router::Impl::Preferred(const PlaceCall& c, const Bounded& b) {
  int64_t cap = 0;
  std::optional<ClaimRef> at = PreferredNode(c, b, &cap, nullptr);
  if (!at || !placement_->Reserve(at->slot, c.p.resource, cap)) return std::nullopt;
  return at;
}

uint64_t Router::Impl::FollowPreference(const PlaceCall& c, ClaimRef at, bool new_key) {
  const PreferKey pk(c.prefer);
  const AffinityKey k(c.p.app_slot, pk.view());
  if (!new_key) {
    // A known key's call holds the preference on its own node only: joined
    // there, made there when it had none (or only its grace left), never
    // moved from another node's live rooms. No unit is reserved for it.
    auto always = [](uint32_t, uint32_t) { return true; };
    auto none = [](uint32_t, uint32_t) -> std::optional<int64_t> { return std::nullopt; };
    absl::StatusOr<AffinityTable::ClaimOutcome> held =
        placement_->Claim(k, at, c.p.resource, c.p.config.affinity_grace_ms, c.now, always, none);
    return held.ok() && held->ref.slot == at.slot ? held->ref.claim : 0;
  }
  // A new key: the preference is claimed for its node (moved there if it
  // was another's). Soft: no room for the claim costs only the preference.
  absl::StatusOr<AffinityTable::ClaimOutcome> claim =
      placement_->TakeOver(k, ClaimRef{at.slot, at.epoch, 0}, c.p.config.affinity_grace_ms, c.now, /*force=*/true);
  return claim.ok() && claim->ref.slot == at.slot ? claim->ref.claim : 0;
}

void Router::Impl::DropPreference(const Held& h, int64_t now) {
  if (h.pref_claim == 0) return;
  const PreferKey pk(h.pref_hash);
  using Mode = AffinityTable::DropMode;
  placement_->DropClaim(AffinityKey(h.app, pk.view()), h.pref_claim,
                        Leaving(h.node, h.epoch, now) ? Mode::kNoGrace : Mode::kGrace, now);
}

absl::StatusOr<ClaimRef> Router::Impl::ClaimFor(const PlaceCall& c, ClaimRef chosen, KeyAdmit& admit, bool* moved) {
  auto alive = [&](uint32_t s, uint32_t e) { return Usable(s, e, c.p, c.snap, c.now); };
  absl::StatusOr<AffinityTable::ClaimOutcome> claim =
      placement_->Claim(c.k, chosen, c.p.resource, c.p.config.affinity_grace_ms, c.now, alive, admit);
  if (!claim.ok()) {
    placement_->Release(chosen.slot, chosen.epoch, c.p.resource);
    return claim.status();
  }
  if (claim->moved) placement_->Release(chosen.slot, chosen.epoch, c.p.resource);
  *moved = claim->moved;
  return claim->ref;
}

absl::StatusOr<ClaimRef> Router::Impl::Claimed(absl::StatusOr<AffinityTable::ClaimOutcome> outcome, bool* moved) {
  // Reserved and claimed in one step; nothing is held on error or when the
  // call followed another node's claim.
  if (!outcome.ok()) return outcome.status();
  *moved = outcome->moved;
  return outcome->ref;
}

// ---- the flow ---------------------------------------------------------------

absl::Status Router::Impl::PlaceOne(const PlaceCall& c, Placed* out) {
  out->decision.app = c.p.config.name;
  out->decision.attempt = c.attempt;
  Bounded b = BoundFor(c);
  KeyAdmit admit(*this, c, b);
  std::optional<ClaimRef> ref;
  const char* reason = nullptr;
  bool joined = false;
  if (c.keyed) {
    ref = JoinKey(c, admit);
    joined = ref.has_value();
    reason = "affinity";
    if (!ref && c.strict) {
      if (std::optional<KeyRefusal> no = StrictRefusal(c, admit)) return Refuse(c, *std::move(no), out);
    }
    if (!ref && admit.over_bound()) {
      ref = NextHome(c, b);
      reason = "affinity_bound";
    }
    if (!ref && c.prefer != 0 && !admit.asked()) {
      ref = Preferred(c, b);
      reason = "prefer";
      out->new_key = ref.has_value();
    }
  }
  bool moved = false;
  absl::StatusOr<ClaimRef> placed = ClaimRef{};
  if (!ref) {
    Reserver reserve(*this, c, c.keyed, admit);
    out->new_key = c.keyed;
    Picked picked = PickNode(c, b, reserve);
    if (picked.ref.slot == kNil) {
      // A strict key that lives elsewhere (another proxy's claim, unknown
      // to this host's table): refused for its node, not for the pool.
      if (c.strict) {
        if (AffinityTable::Hold h = placement_->HolderOf(c.k, c.now); h.slot != kNil && h.refs > 0) {
          return Refuse(c, Diagnose(c, h), out);
        }
      }
      if (reserve.headroom() > 0) counters_.HeadroomRefusal(c.p.app_slot);
      out->decision.reason = "no_node";
      out->decision.detail =
          picked.chose_none ? std::move(picked.detail) : NoNodeDetail(c.p, picked.tally, reserve.headroom());
      return absl::OkStatus();
    }
    reason = picked.reason;
    placed = reserve.claimed() ? Claimed(*std::move(reserve.claimed()), &moved) : absl::StatusOr<ClaimRef>(picked.ref);
  } else {
    // The key's next home within the bound, or its preference's node: claimed now.
    placed = joined ? *ref : ClaimFor(c, *ref, admit, &moved);
  }
  if (!placed.ok()) return placed.status();
  if (c.strict && placed->claim == 0) {
    // The key is claimed for a node that cannot take this call (by another
    // process or proxy, meanwhile): never beside it. A claim no session
    // holds any more is taken over (the key moves); one with live
    // sessions refuses the call.
    const ClaimRef beside = *placed;
    placed = TakeOver(c, beside);
    if (!placed.ok() || placed->claim == 0) {
      placement_->Release(beside.slot, beside.epoch, c.p.resource);
      return Refuse(c, Diagnose(c, placement_->HolderOf(c.k, c.now)), out);
    }
  }
  if (moved) {
    reason = "affinity";
    out->new_key = false;
  }
  out->ref = *placed;
  if (c.prefer != 0) out->pref_claim = FollowPreference(c, out->ref, !joined && !moved);
  const NodeView& v = c.snap.nodes[static_cast<size_t>(c.snap.index_of_slot[out->ref.slot])];
  out->decision.ok = true;
  out->decision.reason = reason;
  out->decision.node_id = v.id;
  out->decision.uri = v.uri;
  return absl::OkStatus();
}

}  // namespace approute
