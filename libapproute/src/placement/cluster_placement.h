// cluster_placement.h — the placement shared by every proxy of one
// deployment, through Redis (cluster_scripts.h for the keys and scripts).
//
// This host's region stays the workers' fast path, cache and fallback: every
// reservation and claim is made there first (RegionPlacement), then in Redis:
//   Reserve   this proxy's share of the node's count, checked against the
//             node's capacity over every live proxy's share (one script);
//             full there: the local unit is given back. A node without a
//             capacity has nothing to check: no round trip, the share goes
//             out with the next Maintain.
//   Release   no round trip: this proxy's absolute share goes out with the
//             next Maintain (within kRefreshMs) or the next reservation on
//             the node; meanwhile the node looks fuller, never emptier.
//   Reservation blocks (cluster.reserve_block = B > 1): the script of a
//             Reserve (kReserveBlock) also takes up to B - 1 spare units
//             for this proxy, at most a quarter of the room left over the
//             live proxies (none near full: then one script per call, as
//             without blocks). They count in this proxy's share at once;
//             NodeRecord::quota holds that share host-wide, and the next
//             reservations on the node checked against the same capacity
//             take a unit from it with a compare-and-swap, no round trip
//             (TakeFromBlock). Ends give their unit back to the block. The
//             republish (kPublishHeld) keeps of the unused units at most as
//             many as this host reserved there since the previous one (an
//             idle block goes back within a second or two), no more than a
//             new block would get (near full they go back), and never
//             writes more than Redis still holds for this proxy, so a block
//             lost with Redis's data or with this proxy's lease is gone, not
//             rewritten unchecked. What raises the quota (a script) and what
//             lowers it (a republish) hold ClusterRecord::block_mu with
//             their round trip; the keyed scripts never lower this proxy's
//             share with blocks on (a unit inside the block is not counted
//             twice). A node whose reported usage counts gets no blocks.
//   JoinAndReserve  this host's claim for the key, its node's unit
//             reserved by one script that also checks that the deployment's
//             claim names the same node (kJoinReserve); otherwise the
//             deployment's claim (kJoin), then the local claim if it names
//             the same node, reserved as Reserve.
//   Claim     one script: the key's live claim, or this node's claim; when
//             another proxy claimed the key first, the call moves to its node
//             (reserved and joined by kJoinReserve).
//   ReserveAndClaim  one script (kReserveClaim): the unit, the check that
//             no other node holds the key's claim, and the claim.
//   DropClaim the last session of the key here: this proxy's hold dropped,
//             the last live holder starting the claim's grace TTL, at once
//             (one round trip); while other sessions here still hold the
//             key, no round trip (the hold's number is written again by the
//             key's next call or last end).
//   EndSession  Release and DropClaim of one session: one script (kEnd)
//             for the key's last session here, else no round trip.
//   SetAdminState  here and in the deployment; every proxy applies the
//             deployment's admin states at its next Maintain (within a second),
//             over its YAML's `state:`. One set while Redis is out is pushed
//             when it is back, with this host's other admin states, and wins.
//   NodeChanged  a node's join, refresh or leave by status report here is
//             stored as its record in the deployment (cluster_members.h).
//   Maintain  once a second per host: renews this proxy's lease, republishes
//             every share (absolute, idempotent: after an outage, a recount or
//             a Redis restarted empty the counts are right again), exchanges
//             the records of nodes by status report (this host's, if newer,
//             and every other proxy's merged here) and applies the
//             deployment's admin states.
//
// Faults: a failed or timed-out round trip opens the host's breaker
// (cluster_breaker.h); while it is open the placement is the local one and
// each such placement is counted (ClusterRecord::degraded_placements).
// Capacity during an outage: this proxy holds on a node at most the share
// it last wrote to Redis (NodeRecord::synced_share) plus the headroom,
// ceil(outage_headroom% x capacity / proxies seen at the last republish),
// and never more than the capacity; a reservation past that is refused as
// full and counted (ClusterRecord::outage_refusals). So over the deployment
// a node holds at most about capacity x (1 + outage_headroom%) (plus one
// unit per proxy for the rounding) however long Redis is out.
//
// Shares are owned: each proxy writes only its own field of a count, as an
// absolute value read from the region, never an increment. A proxy that
// stops renewing its lease (kLeaseMs) counts for nothing: its shares and its
// holds on claims lapse.
//
// Leases: routing (the router's sweep) and Router::Sweep() call Maintain; a
// proxy that takes no call must have Sweep() called more often than every
// kLeaseMs (the example configuration's rtimer: every 5 s) or its shares
// stop counting.
// Locking: the reservation of a join or a claim runs under an affinity
// shard lock (AffinityTable's callbacks), so that lock may be held for one
// round trip, at most timeout_ms.
//
// Thread-safety: as Placement. One Redis connection per process (redis_client.h).
#ifndef APPROUTE_SRC_PLACEMENT_CLUSTER_PLACEMENT_H_
#define APPROUTE_SRC_PLACEMENT_CLUSTER_PLACEMENT_H_

#include <array>
#include <atomic>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "approute/config.h"
#include "placement/cluster_breaker.h"
#include "placement/cluster_members.h"
#include "placement/cluster_scripts.h"
#include "placement/placement.h"
#include "placement/redis_client.h"

namespace approute::internal {

class ClusterPlacement final : public Placement {
 public:
  // A proxy silent this long counts for nothing: three times the 5 s rtimer
  // of the example Kamailio configuration, which calls Router::Sweep().
  static constexpr int64_t kLeaseMs = 15000;
  static constexpr int64_t kRefreshMs = 1000;  // lease renewal and republishing, per host

  // The slot and epoch of the node with this id here now, if any.
  using FindNode = std::function<std::optional<ClaimRef>(std::string_view id)>;

  ClusterPlacement(const Region& region, AffinityTable& affinity, NodeTable& nodes, StatusReports& reports,
                   const ClusterConfig& cfg, RedisUrl url, FindNode find);

  bool Reserve(uint32_t slot, uint32_t res, int64_t capacity) override;
  void Release(uint32_t slot, uint32_t epoch, uint32_t res) override;
  std::optional<ClaimRef> JoinAndReserve(const AffinityKey& k, uint32_t res, int64_t now, bool defer,
                                         Admit admit) override;
  // As JoinAndReserve, `take` deciding (and reserving nothing through
  // kJoinReserve): kJoin when this host has no claim for the key's node.
  std::optional<ClaimRef> JoinClaim(const AffinityKey& k, int64_t now, bool defer, NodeCheck take) override;
  absl::StatusOr<AffinityTable::ClaimOutcome> Claim(const AffinityKey& k, ClaimRef chosen, uint32_t res,
                                                    int64_t grace_ms, int64_t now, NodeCheck alive,
                                                    Admit admit) override;
  // The unit, the check that no other node holds the key's claim and the
  // claim, in one round trip (kReserveClaim); a claim for another node made
  // meanwhile is followed (its node reserved and this proxy's hold on it
  // registered in one more, kJoinReserve).
  std::optional<absl::StatusOr<AffinityTable::ClaimOutcome>> ReserveAndClaim(const AffinityKey& k, ClaimRef chosen,
                                                                             uint32_t res, int64_t capacity,
                                                                             int64_t grace_ms, int64_t now,
                                                                             NodeCheck alive, Admit admit) override;
  // kClaim taking over the deployment's claim (force, or held by no live
  // proxy's session), then the same here.
  absl::StatusOr<AffinityTable::ClaimOutcome> TakeOver(const AffinityKey& k, ClaimRef chosen, int64_t grace_ms,
                                                       int64_t now, bool force) override;
  void DropClaim(const AffinityKey& k, uint64_t claim, AffinityTable::DropMode mode, int64_t now) override;
  // Release and DropClaim in one round trip (kEnd) when the session holds a claim.
  void EndSession(uint32_t slot, uint32_t epoch, uint32_t res, const AffinityKey& k, uint64_t claim,
                  AffinityTable::DropMode mode, int64_t now) override;
  // Claims in their grace time on a node starting to drain: forgotten here;
  // the deployment's copies lapse with their grace TTL.
  int64_t ForgetIdleClaims(uint32_t slot, uint32_t epoch) override { return local_.ForgetIdleClaims(slot, epoch); }
  // The drain is published as the node's admin state (the deadline is this
  // proxy's: each proxy's operator sets its own).
  void SetDraining(uint32_t slot, int64_t deadline_ms) override;
  void MarkAnswered(const AffinityKey& k, uint64_t claim) override { local_.MarkAnswered(k, claim); }
  // The deployment's claim (kHolder): its node and the live proxies'
  // sessions on it; this host's while Redis is out.
  AffinityTable::Hold HolderOf(const AffinityKey& k, int64_t now) override;
  void SetAdminState(uint32_t slot, AdminState state) override;
  void PublishAdmin(uint32_t slot, AdminState state);
  void NodeChanged(uint32_t slot, int64_t now) override;
  // The deployment's counts as the report's base: one round trip; while
  // Redis is out this host's counts stay the base (lower: the report then
  // leaves less room, never more).
  void UsageReported(uint32_t slot) override;
  void Maintain(int64_t now) override;
  // Stores this host's records of nodes by status report where newer and
  // merges the deployment's (cluster_members.h), in one round trip; false
  // while Redis is out.
  bool SyncMembers(int64_t now);
  // The most this proxy may hold of `res` on the node in `slot` while Redis
  // is out (INT64_MAX for an unlimited capacity).
  int64_t OutageShare(uint32_t slot, uint32_t res, int64_t capacity) const;

  // The deployment-wide counts of (slot, resource) pairs (live proxies'
  // shares summed), in one round trip; nullopt when Redis is not reachable.
  std::optional<std::vector<int64_t>> DeploymentCounts(absl::Span<const std::pair<uint32_t, uint32_t>> slot_res);
  // Republishes this proxy's every share now (Maintain does it periodically).
  bool PublishAll();
  // Writes again the deployment's claim of every key this host's sessions
  // hold (kClaim, pipelined; a key claimed meanwhile for another node keeps
  // that node: new calls follow it). Maintain calls it, with PublishAll, at
  // once when this process has followed a failover to another primary
  // (RedisClient::primary_changes), which may lack the last writes.
  bool RepublishClaims(int64_t now);

  // The deployment's proxies whose lease runs (Unavailable while Redis is out).
  absl::StatusOr<std::vector<std::string>> LiveProxies();
  const std::string& name() const { return name_; }
  const std::string& proxy() const { return proxy_; }

  RedisClient& client() { return client_; }
  ClusterBreaker& breaker() { return breaker_; }
  // The error of this process's last failed round trip ("" = none yet):
  // what `approute status` and the start-up warning show while degraded.
  std::string last_error() const;
  // One TIME round trip past the breaker (operators only: Cluster() while
  // degraded): "" when Redis answers, else its error, which is also kept.
  std::string ProbeError();

 private:
  // One script through the breaker: Unavailable without a round trip when open.
  absl::StatusOr<RedisValue> Run(const RedisScript& s, absl::Span<const std::string_view> keys,
                                 absl::Span<const std::string_view> args);
  void Publish(uint32_t slot, uint32_t res);
  bool PushAdmin();
  void PullAdmin();
  void Degraded() { region_.header().cluster.degraded_placements.fetch_add(1, std::memory_order_relaxed); }
  void Failed(const absl::Status& s);  // the breaker counts a failure; the error is kept
  // A claim in the deployment that a reservation joins: its key and the
  // sessions this proxy will hold on it.
  struct ClaimHold {
    const std::string& key;
    const std::string& refs;
  };
  // The unit just reserved here on `slot` published in the deployment
  // (kReserve); false (the unit given back) when the node is full over the
  // deployment or, while Redis is out, above this proxy's outage share.
  bool ReserveShared(uint32_t slot, uint32_t res, int64_t capacity);

  // Reservation blocks (cluster.reserve_block > 1; see the header comment).
  bool blocks() const { return block_ > 1; }
  // Whether this host's block on (slot, res) may serve a reservation
  // checked against `capacity`: the block was checked against it, and the
  // node reports no usage of `res`.
  bool BlockServes(uint32_t slot, uint32_t res, int64_t capacity) const;
  // One unit of the block reserved here, no round trip; false (nothing held)
  // when the block is empty or does not serve this capacity.
  bool TakeFromBlock(uint32_t slot, uint32_t res, int64_t capacity);
  // The spare units a reservation's script may take with its unit.
  int64_t BlockWanted(uint32_t slot, uint32_t res, int64_t capacity) const;
  // The unit just reserved here, in Redis under the host's block lock:
  // kReserveBlock with a spare block when there is room; as ReserveShared
  // otherwise (full: given back; Redis out: KeepOffline).
  bool RefillBlock(uint32_t slot, uint32_t res, int64_t capacity);
  // The unused units of the block a republish keeps, with `sessions` here.
  int64_t BlockKept(uint32_t slot, uint32_t res, int64_t sessions) const;
  // PublishAll with blocks: every share as sessions plus the unused units
  // kept (kPublishHeld), under the host's block lock.
  bool PublishHeld();
  // The reservation of a call joining the deployment's claim on the node in
  // (slot, epoch): `admit`'s verdict, the unit here, then in the deployment
  // with this proxy's hold on the claim, checked to still name that node
  // (kJoinReserve, one round trip). *flag: the script's answer (unset
  // without one). False: nothing held (refused, full, the claim is another
  // node's, or over the outage share while Redis is out).
  bool ReserveJoining(uint32_t slot, uint32_t epoch, uint32_t res, Admit admit, ClaimHold hold,
                      std::optional<cluster_lua::JoinReserveFlag>* flag);
  // The join of JoinAndReserve and JoinClaim: this host's claim first, its
  // node taken by `fast_take`; then (unless deferred, or `shared`, the
  // fast take's kJoinReserve answer, says the node is full) the
  // deployment's claim (kJoin) and this host's claim for the same node,
  // taken by `take`.
  std::optional<ClaimRef> Join(const AffinityKey& k, int64_t now, bool defer, ClaimHold hold, NodeCheck fast_take,
                               NodeCheck take, const std::optional<cluster_lua::JoinReserveFlag>* shared);
  // The key's claim for `node`, followed: that node reserved with this
  // proxy's hold on the claim (ReserveJoining) and the local claim made for
  // it; nullopt when the node cannot take the call here (nothing held).
  std::optional<ClaimRef> Follow(const AffinityKey& k, ClaimHold hold, std::string_view node, uint32_t res,
                                 int64_t grace_ms, int64_t now, NodeCheck alive, Admit admit);
  // The unit published (or kept offline) after the script's answer: given
  // back here unless `reserved`.
  bool Settle(uint32_t slot, uint32_t res, int64_t share, bool reserved);
  // Redis did not answer a reservation of the unit just reserved here on
  // `slot`: it stays (counted as degraded) while this proxy's count there is
  // within its outage share, else it is given back (an outage refusal).
  bool KeepOffline(uint32_t slot, uint32_t res, int64_t capacity);
  // `share` (this proxy's count of `res` on `slot`) was written to Redis:
  // recorded as synced, and published again if the count moved meanwhile.
  void SharePublished(uint32_t slot, uint32_t res, int64_t share);
  void Synced(uint32_t slot, uint32_t res, int64_t share) {
    region_.node(slot).synced_share[res].store(share, std::memory_order_relaxed);
  }
  // After the local drop of a session's claim: this host still holds the
  // key (other sessions here, and not a release for every proxy), so the
  // deployment's claim needs no write now.
  bool StillHeld(const AffinityKey& k, AffinityTable::DropMode mode) const;
  // Drops the local claim; -> kDrop's refs held, release and no-grace arguments.
  std::array<std::string, 3> DropLocal(const AffinityKey& k, uint64_t claim, AffinityTable::DropMode mode, int64_t now);
  bool RunMembers(const std::vector<std::pair<std::string, std::string>>& records, int64_t now, bool all,
                  RedisValue* reply);
  std::string CountKey(uint32_t slot, uint32_t res) const;
  std::string ClaimKey(const AffinityKey& k) const;
  std::string NodeId(uint32_t slot) const { return std::string(GetFixed(region_.node(slot).id)); }

  const Region& region_;
  AffinityTable& affinity_;
  RegionPlacement local_;
  ClusterMembers members_;
  const int64_t headroom_pct_;
  const int64_t block_;  // cluster.reserve_block (1: off)
  const std::string name_, prefix_, proxies_key_, admin_key_, members_key_, proxy_, lease_;
  FindNode find_;
  RedisClient client_;
  ClusterBreaker breaker_;
  std::atomic<int64_t> primaries_seen_{0};      // client_.primary_changes() at the last republish after a failover
  std::atomic<int64_t> primary_checked_ms_{0};  // monotonic ms of this process's last RecheckPrimary
  mutable absl::Mutex error_mu_;
  std::string last_error_ ABSL_GUARDED_BY(error_mu_);
};

}  // namespace approute::internal

#endif  // APPROUTE_SRC_PLACEMENT_CLUSTER_PLACEMENT_H_
