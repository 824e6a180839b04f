// Apps of several resources (`resource: [conference, channels]`): a session
// holds one unit of each resource of its app on its node, or none.
//
// The flow places a call by the app's first resource (PlaceOne) with every
// node full for another of its resources left out of the candidates
// (CheckMember, KeyAdmit, PreferredNode), then takes one unit of each other
// resource on the node it chose (ReserveExtras, each unit within its
// capacity as Placement::Reserve checks it: a compare-and-swap in this
// host's region, the deployment's count in Redis with cluster:; a new key's
// call within affinity.headroom of each, as of the first). A node
// that filled up for one of them between the look and the reservation gets
// back everything the call took there, and the call is placed again without
// that node. While a call is being placed, the units it took may make a
// concurrent call find the node full a moment early: that errs towards
// full, never past a capacity.
#include "absl/strings/str_join.h"
#include "router/router_impl.h"
#include "state/usage.h"

namespace approute {

namespace {

// Rounds of PlaceOne for one call: each one leaves out a node that filled up
// meanwhile, so a few suffice unless the pool is filling up as fast.
constexpr int kMaxRounds = 4;

}  // namespace

uint32_t Router::Impl::FullExtraAt(const PlaceCall& c, uint32_t slot, uint32_t epoch) const {
  return FirstFull(region_->hot(slot), c.p.extra, c.now,
                   [&](uint32_t r) { return CapacityOf(c.snap, slot, epoch, r); });
}

std::string Router::Impl::CountText(const PlaceCall& c, uint32_t slot, uint32_t epoch, uint32_t res,
                                    bool deployment) const {
  const NodeHot& n = region_->hot(slot);
  const std::string_view name = res < c.snap.resources.size() ? std::string_view(c.snap.resources[res]) : "?";
  int64_t count = n.sessions[res].load(std::memory_order_relaxed);
  if (deployment && cluster_ != nullptr) {
    const std::pair<uint32_t, uint32_t> one{slot, res};
    if (std::optional<std::vector<int64_t>> counts = cluster_->DeploymentCounts({one})) count = (*counts)[0];
  }
  count = UsageCount(n, res, count, c.now);
  return Cat(name, " ", count, "/", CapacityOf(c.snap, slot, epoch, res),
             UsageCounts(n, res, c.now) ? " by its own report" : "");
}

bool Router::Impl::ReserveExtras(const PlaceCall& c, uint32_t slot, uint32_t epoch, bool new_key) {
  const NodeHot& n = region_->hot(slot);
  uint32_t taken = 0;
  for (uint32_t r = 0; r < kMaxResources; ++r) {
    if ((c.p.extra >> r & 1u) == 0) continue;
    const int64_t configured = CapacityOf(c.snap, slot, epoch, r);
    if (!placement_->Reserve(slot, r, UsageCap(n, r, new_key ? HeadroomCap(c.p, configured) : configured, c.now))) {
      ReleaseExtras(slot, epoch, taken);
      return false;
    }
    taken |= 1u << r;
  }
  return true;
}

void Router::Impl::ReleaseExtras(uint32_t slot, uint32_t epoch, uint32_t extra) {
  if (slot == kNil || extra == 0) return;
  for (uint32_t r = 0; r < kMaxResources; ++r) {
    if ((extra >> r & 1u) != 0) placement_->Release(slot, epoch, r);
  }
}

absl::Status Router::Impl::PlaceAll(const PlaceCall& c, Placed* out) {
  SlotList avoid = c.avoid;
  for (int round = 0; round < kMaxRounds; ++round) {
    const PlaceCall call{c.p,     c.snap, c.call_id, c.key,    c.attrs,    avoid, c.attempt, c.now, c.strategy_reason,
                         c.keyed, c.k,    c.strict,  c.prefer, c.shed_seed};
    *out = Placed{};
    if (absl::Status s = PlaceOne(call, out); !s.ok() || !out->decision.ok) return s;
    const ClaimRef at = out->ref;
    if (ReserveExtras(c, at.slot, at.epoch, out->new_key)) {
      out->extra = c.p.extra;
      return absl::OkStatus();
    }
    // Filled up meanwhile for another resource: the call gives back what
    // it took there (as a call never answered) and looks again without it.
    Release(Held{c.p.app_slot, c.p.resource, at.slot, at.epoch, at.claim, out->pref_claim,
                 out->pref_claim != 0 ? c.prefer : 0, KeyCopy(c.key)},
            c.now, /*abandoned=*/true);
    if (c.strict) {  // a key that lives there stays there: refused, never split
      const AffinityTable::Hold h = placement_->HolderOf(c.k, c.now);
      if (h.slot == at.slot && h.epoch == at.epoch && h.refs > 0) return Refuse(call, Diagnose(call, h), out);
    }
    avoid.push_back(at.slot);
  }
  *out = Placed{};
  out->decision.app = c.p.config.name;
  out->decision.attempt = c.attempt;
  out->decision.reason = "no_node";
  out->decision.detail = Cat("no candidate in pool \"", c.p.config.pool, "\": ", kMaxRounds, " nodes filled up for \"",
                             absl::StrJoin(c.p.config.resources, "\" or \""), "\" while the call was placed");
  return absl::OkStatus();
}

}  // namespace approute
