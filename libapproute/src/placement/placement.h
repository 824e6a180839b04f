// placement.h — the seam between the routing flow and the state that
// several proxies will share: capacity reservations, affinity claims and
// node changes. The routing flow (router.cc) reaches that state only through
// this interface.
//
// RegionPlacement is this host's state region alone. The placement that
// spans proxies (ClusterPlacement, through Redis) implements the same calls:
// JoinAndReserve() and ReserveAndClaim() are one atomic step each there
// (check the key's claim, check capacity over every proxy's share, count,
// claim or join), Reserve/Release change this proxy's own share only, and
// SetAdminState/NodeChanged publish to the others (cluster_placement.h).
//
// The routing flow says which nodes may take a call (Admit); the placement
// makes every reservation itself, so the one a join or a claim needs can be
// a different step from a plain Reserve (the cluster's are).
//
// Thread-safety: every method may be called from any thread of any process
// using the region. Admit and NodeCheck callbacks run under a table lock and
// must only read node atomics.
#ifndef APPROUTE_SRC_PLACEMENT_PLACEMENT_H_
#define APPROUTE_SRC_PLACEMENT_PLACEMENT_H_

#include <cstdint>
#include <optional>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "approute/types.h"
#include "state/affinity_table.h"
#include "state/node_table.h"

namespace approute::internal {

class Placement {
 public:
  using NodeCheck = absl::FunctionRef<bool(uint32_t slot, uint32_t epoch)>;
  // Whether the node in (slot, epoch) may take the call now (as the routing
  // flow decides: usable, not avoided, within the load bound): its capacity
  // for the call's resource (-1 = unlimited), or nullopt when it may not.
  using Admit = absl::FunctionRef<std::optional<int64_t>(uint32_t slot, uint32_t epoch)>;
  virtual ~Placement() = default;

  // One unit of resource `res` on the node in `slot`, if it stays within
  // `capacity` (-1 = unlimited). False: the node is full.
  virtual bool Reserve(uint32_t slot, uint32_t res, int64_t capacity) = 0;
  // Gives back a unit reserved on (slot, epoch); nothing if the slot holds
  // another node now.
  virtual void Release(uint32_t slot, uint32_t epoch, uint32_t res) = 0;

  // A keyed call joins the key's claim: when the key is claimed for a node
  // that `admit` accepts, one unit of `res` is reserved there within the
  // capacity `admit` gives, and the call holds the claim. nullopt: not
  // joined (no claim, its node refused or full), nothing held. `defer`: when
  // this host holds no claim for the key, a placement may leave the
  // deployment's claim to ReserveAndClaim (which then learns of it in the
  // same step) instead of asking for it now. This host's placement joins
  // (AffinityTable::Join) with Reserve as the join's reservation.
  virtual std::optional<ClaimRef> JoinAndReserve(const AffinityKey& k, uint32_t res, int64_t now, bool defer,
                                                 Admit admit) = 0;
  // The key's claim joined when `take` accepts its node, the placement
  // reserving nothing (for a claim whose call holds its unit already, or
  // needs none: a preference). `defer` as JoinAndReserve.
  virtual std::optional<ClaimRef> JoinClaim(const AffinityKey& k, int64_t now, bool defer, NodeCheck take) = 0;
  // Claims the key for `chosen` (already reserved), or joins a concurrent
  // claim (AffinityTable::Claim), reserving one unit of `res` on its node
  // when `admit` accepts it.
  virtual absl::StatusOr<AffinityTable::ClaimOutcome> Claim(const AffinityKey& k, ClaimRef chosen, uint32_t res,
                                                            int64_t grace_ms, int64_t now, NodeCheck alive,
                                                            Admit admit) = 0;
  // A keyed call that joined no claim, placed on `chosen` by the strategy:
  // one unit of `res` there within `capacity`, and the key's claim for it,
  // or the call follows a claim made elsewhere (outcome.moved: an affinity
  // hit; the call is on outcome.ref, reserved, and nothing else is held,
  // `chosen` included unless it is the claim's node). nullopt: `chosen` is
  // full, nothing is held. An error: nothing is held. The default is
  // Reserve then Claim; a placement may do both in one step.
  virtual std::optional<absl::StatusOr<AffinityTable::ClaimOutcome>> ReserveAndClaim(const AffinityKey& k,
                                                                                     ClaimRef chosen, uint32_t res,
                                                                                     int64_t capacity, int64_t grace_ms,
                                                                                     int64_t now, NodeCheck alive,
                                                                                     Admit admit) {
    if (!Reserve(chosen.slot, res, capacity)) return std::nullopt;
    absl::StatusOr<AffinityTable::ClaimOutcome> c = Claim(k, chosen, res, grace_ms, now, alive, admit);
    if (!c.ok() || c->moved) Release(chosen.slot, chosen.epoch, res);
    return c;
  }
  // Claims the key for `chosen` (already reserved, or needing no unit)
  // whatever node holds it now when `force`; else only when no session
  // holds the key's claim any more (its grace time left at most): claim 0
  // in the outcome when sessions still hold it elsewhere.
  virtual absl::StatusOr<AffinityTable::ClaimOutcome> TakeOver(const AffinityKey& k, ClaimRef chosen, int64_t grace_ms,
                                                               int64_t now, bool force) = 0;
  // Drops a session's reference on its claim, then as `mode` says
  // (AffinityTable::DropMode: grace, no grace for a leaving node, release
  // for a full node, abandoned for a call that was never answered).
  virtual void DropClaim(const AffinityKey& k, uint64_t claim, AffinityTable::DropMode mode, int64_t now) = 0;
  // A session ends: Release(slot, epoch, res), then, when it holds a claim
  // (claim != 0), DropClaim(k, claim, mode, now). A placement may do both in
  // one step.
  virtual void EndSession(uint32_t slot, uint32_t epoch, uint32_t res, const AffinityKey& k, uint64_t claim,
                          AffinityTable::DropMode mode, int64_t now) {
    Release(slot, epoch, res);
    if (claim != 0) DropClaim(k, claim, mode, now);
  }
  // The key's claim as the routing flow must respect it: its node and the
  // live sessions holding it (the deployment's, with cluster:); no node
  // (slot kNil) when the key has no claim or its grace ran out.
  virtual AffinityTable::Hold HolderOf(const AffinityKey& k, int64_t now) = 0;
  // A session holding the claim was answered.
  virtual void MarkAnswered(const AffinityKey& k, uint64_t claim) = 0;
  // Deletes the claims on (slot, epoch) that no session holds (in their
  // grace time): a node starting to drain takes no new calls for them.
  virtual int64_t ForgetIdleClaims(uint32_t slot, uint32_t epoch) = 0;

  // An operator's admin state for a node; clears any drain deadline.
  virtual void SetAdminState(uint32_t slot, AdminState state) = 0;
  // Drains the node; from `deadline_ms` (unix ms, 0 = never) the keys it
  // still holds count as gone, so their new calls go elsewhere.
  virtual void SetDraining(uint32_t slot, int64_t deadline_ms) = 0;
  // A node joined, refreshed, changed or left through a status report
  // accepted at `now` (registry mutex not held).
  virtual void NodeChanged(uint32_t slot, int64_t now) = 0;
  // The node in `slot` reported its own counts (state/usage.h; its region
  // entry holds them, with this host's counts as their base). The cluster's
  // placement puts the deployment's counts there as the base instead.
  virtual void UsageReported(uint32_t /*slot*/) {}

  // Periodic upkeep (leases, republishing, shared membership), called by the
  // router's sweep at most once per sweep interval host-wide, outside any
  // state change; `now` is the router's clock.
  virtual void Maintain(int64_t /*now*/) {}

 protected:
  // `admit`'s verdict on the node in (slot, epoch), then Reserve within the
  // capacity it gives: the reservation of a join or claim that has no
  // step of its own.
  bool AdmitAndReserve(uint32_t slot, uint32_t epoch, uint32_t res, Admit admit) {
    const std::optional<int64_t> capacity = admit(slot, epoch);
    return capacity.has_value() && Reserve(slot, res, *capacity);
  }
};

class RegionPlacement final : public Placement {
 public:
  RegionPlacement(const Region& region, AffinityTable& affinity) : region_(region), affinity_(affinity) {}

  bool Reserve(uint32_t slot, uint32_t res, int64_t capacity) override {
    return NodeTable::TryReserve(region_.hot(slot), res, capacity);
  }
  void Release(uint32_t slot, uint32_t epoch, uint32_t res) override {
    if (slot != kNil) NodeTable::Release(region_.hot(slot), epoch, res);
  }
  std::optional<ClaimRef> JoinAndReserve(const AffinityKey& k, uint32_t res, int64_t now, bool /*defer*/,
                                         Admit admit) override {
    return affinity_.Join(k, now,
                          [&](uint32_t slot, uint32_t epoch) { return ReserveAdmitted(slot, epoch, res, admit); });
  }
  std::optional<ClaimRef> JoinClaim(const AffinityKey& k, int64_t now, bool /*defer*/, NodeCheck take) override {
    return affinity_.Join(k, now, take);
  }
  absl::StatusOr<AffinityTable::ClaimOutcome> Claim(const AffinityKey& k, ClaimRef chosen, uint32_t res,
                                                    int64_t grace_ms, int64_t now, NodeCheck alive,
                                                    Admit admit) override {
    return affinity_.Claim(k, chosen, grace_ms, now, alive,
                           [&](uint32_t slot, uint32_t epoch) { return ReserveAdmitted(slot, epoch, res, admit); });
  }
  absl::StatusOr<AffinityTable::ClaimOutcome> TakeOver(const AffinityKey& k, ClaimRef chosen, int64_t grace_ms,
                                                       int64_t now, bool force) override {
    // AffinityTable::Claim rebinds a claim whose holder is not `alive`, and
    // one that is alive but held by no session.
    auto holder_counts = [force](uint32_t, uint32_t) { return !force; };
    return affinity_.Claim(k, chosen, grace_ms, now, holder_counts, [](uint32_t, uint32_t) { return false; });
  }
  void DropClaim(const AffinityKey& k, uint64_t claim, AffinityTable::DropMode mode, int64_t now) override {
    affinity_.Drop(k, claim, mode, now);
  }
  void MarkAnswered(const AffinityKey& k, uint64_t claim) override { affinity_.MarkAnswered(k, claim); }
  AffinityTable::Hold HolderOf(const AffinityKey& k, int64_t now) override { return affinity_.HoldOf(k, now); }
  int64_t ForgetIdleClaims(uint32_t slot, uint32_t epoch) override { return affinity_.ForgetIdle(slot, epoch); }
  void SetAdminState(uint32_t slot, AdminState state) override {
    NodeHot& n = region_.hot(slot);
    n.drain_deadline_ms.store(0, std::memory_order_relaxed);
    n.admin.store(static_cast<uint32_t>(state), std::memory_order_relaxed);
  }
  void SetDraining(uint32_t slot, int64_t deadline_ms) override {
    NodeHot& n = region_.hot(slot);
    n.drain_deadline_ms.store(deadline_ms, std::memory_order_relaxed);
    n.admin.store(static_cast<uint32_t>(AdminState::kDraining), std::memory_order_relaxed);
  }
  void NodeChanged(uint32_t, int64_t) override {}  // this host's processes read the region directly

 private:
  // AdmitAndReserve without the virtual call: a join's reservation is on
  // every keyed call's path.
  bool ReserveAdmitted(uint32_t slot, uint32_t epoch, uint32_t res, Admit admit) {
    const std::optional<int64_t> capacity = admit(slot, epoch);
    return capacity.has_value() && NodeTable::TryReserve(region_.hot(slot), res, *capacity);
  }

  const Region& region_;
  AffinityTable& affinity_;
};

}  // namespace approute::internal

#endif  // APPROUTE_SRC_PLACEMENT_PLACEMENT_H_
