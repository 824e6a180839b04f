// The cluster placement (cluster_placement.h).
#include "placement/cluster_placement.h"

#include <algorithm>
#include <chrono>
#include <tuple>
#include <vector>

#include "absl/strings/numbers.h"
#include "placement/cluster_scripts.h"
#include "util/str_util.h"

namespace approute::internal {
namespace {

const RedisScript& Script(const char* body) {
  // One RedisScript (text and SHA-1) per script, built once per process.
  static const auto* scripts = new std::vector<std::pair<const char*, RedisScript>>{
      {cluster_lua::kReserve, RedisScript(cluster_lua::kReserve)},
      {cluster_lua::kReserveBlock, RedisScript(cluster_lua::kReserveBlock)},
      {cluster_lua::kPublishHeld, RedisScript(cluster_lua::kPublishHeld)},
      {cluster_lua::kJoinReserve, RedisScript(cluster_lua::kJoinReserve)},
      {cluster_lua::kReserveClaim, RedisScript(cluster_lua::kReserveClaim)},
      {cluster_lua::kPublish, RedisScript(cluster_lua::kPublish)},
      {cluster_lua::kCounts, RedisScript(cluster_lua::kCounts)},
      {cluster_lua::kJoin, RedisScript(cluster_lua::kJoin)},
      {cluster_lua::kClaim, RedisScript(cluster_lua::kClaim)},
      {cluster_lua::kHolder, RedisScript(cluster_lua::kHolder)},
      {cluster_lua::kDrop, RedisScript(cluster_lua::kDrop)},
      {cluster_lua::kEnd, RedisScript(cluster_lua::kEnd)},
      {cluster_lua::kProxies, RedisScript(cluster_lua::kProxies)},
      {cluster_lua::kSetAdmin, RedisScript(cluster_lua::kSetAdmin)},
      {cluster_lua::kGetAdmin, RedisScript(cluster_lua::kGetAdmin)},
      {cluster_lua::kMembers, RedisScript(cluster_lua::kMembers)},
  };
  for (const auto& [p, s] : *scripts) {
    if (p == body) return s;
  }
  return scripts->front().second;  // unreachable: every caller passes one of the above
}

int64_t WallMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// The flag of a script's {flag, value} reply (*value: a copy of the value's
// string, as the reply is usually a temporary), nullopt without a reply of
// that shape (Redis out, or a malformed reply).
template <typename Flag>
std::optional<Flag> FlagOf(const absl::StatusOr<RedisValue>& r, std::string* value = nullptr) {
  if (!r.ok() || r->type != RedisValue::Type::kArray || r->elements.size() != 2) return std::nullopt;
  if (value != nullptr) *value = r->elements[1].str;
  return cluster_lua::ParseFlag<Flag>(r->elements[0].integer);
}

// A claim's `take` that accepts no node: the call stays on its own node.
bool NoOtherNode(uint32_t, uint32_t) { return false; }

}  // namespace

ClusterPlacement::ClusterPlacement(const Region& region, AffinityTable& affinity, NodeTable& nodes,
                                   StatusReports& reports, const ClusterConfig& cfg, RedisUrl url, FindNode find)
    : region_(region),
      affinity_(affinity),
      local_(region, affinity),
      members_(region, nodes, reports),
      headroom_pct_(cfg.outage_headroom_pct),
      block_(std::max<int64_t>(1, cfg.reserve_block)),
      name_(cfg.name),
      prefix_(DeploymentPrefix(cfg.name)),
      proxies_key_(prefix_ + "proxies"),
      admin_key_(prefix_ + "admin"),
      members_key_(prefix_ + "members"),
      proxy_(cfg.proxy),
      lease_(Cat(kLeaseMs)),
      find_(std::move(find)),
      client_(std::move(url), cfg.timeout_ms),
      breaker_(region.header().cluster) {}

std::string ClusterPlacement::CountKey(uint32_t slot, uint32_t res) const {
  return Cat(prefix_, "n:", GetFixed(region_.node(slot).id), "|", GetFixed(region_.header().resource_names[res]));
}

std::string ClusterPlacement::ClaimKey(const AffinityKey& k) const {
  return Cat(prefix_, "c:", GetFixed(region_.header().apps[k.app].name), "|", k.key);
}

absl::StatusOr<RedisValue> ClusterPlacement::Run(const RedisScript& s, absl::Span<const std::string_view> keys,
                                                 absl::Span<const std::string_view> args) {
  if (!breaker_.Allow()) return absl::UnavailableError("redis: circuit breaker open");
  auto t0 = std::chrono::steady_clock::now();
  absl::StatusOr<RedisValue> r = client_.Eval(s, keys, args);
  int64_t us = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0).count();
  if (r.ok() || r.status().code() == absl::StatusCode::kUnknown) {
    // An error reply still proves Redis answers; only transport failures trip the breaker.
    breaker_.OnSuccess(us, WallMs());
  } else {
    Failed(r.status());
  }
  return r;
}

void ClusterPlacement::Failed(const absl::Status& s) {
  breaker_.OnFailure();
  absl::MutexLock l(&error_mu_);
  last_error_.assign(s.message().data(), s.message().size());
}

std::string ClusterPlacement::ProbeError() {
  absl::StatusOr<RedisValue> r = client_.Command({std::string_view("TIME")});
  if (r.ok()) return "";
  absl::MutexLock l(&error_mu_);
  last_error_.assign(r.status().message().data(), r.status().message().size());
  return last_error_;
}

std::string ClusterPlacement::last_error() const {
  absl::MutexLock l(&error_mu_);
  return last_error_;
}

bool ClusterPlacement::Reserve(uint32_t slot, uint32_t res, int64_t capacity) {
  if (blocks() && TakeFromBlock(slot, res, capacity)) return true;
  if (!local_.Reserve(slot, res, capacity)) return false;
  return ReserveShared(slot, res, capacity);
}

bool ClusterPlacement::BlockServes(uint32_t slot, uint32_t res, int64_t capacity) const {
  // A block was checked against one capacity (block_cap); a reservation
  // against a lower bound (a new key's headroom) or a different capacity
  // (a reload changed it) runs the exact script. A node's reported usage
  // (state/usage.h) is compared with the deployment's count, which would
  // count a block's unused units as calls: no blocks on such a node.
  if (capacity < 0) return false;
  if ((region_.hot(slot).usage_mask.load(std::memory_order_relaxed) & (1u << res)) != 0) return false;
  return region_.node(slot).block_cap[res].load(std::memory_order_relaxed) == capacity;
}

bool ClusterPlacement::TakeFromBlock(uint32_t slot, uint32_t res, int64_t capacity) {
  if (!BlockServes(slot, res, capacity)) return false;
  NodeRecord& rec = region_.node(slot);
  NodeHot& hot = region_.hot(slot);
  std::atomic<int64_t>& count = hot.sessions[res];
  // Sequentially consistent with the republish that returns unused units
  // (PublishHeld: quota lowered, then sessions read): either it sees this
  // unit, or this check after the increment sees the lowered quota.
  int64_t cur = count.load();
  int64_t mine = 0;
  do {
    if (cur >= std::min(capacity, rec.quota[res].load())) return false;
    mine = cur + 1;
  } while (!count.compare_exchange_weak(cur, mine));
  if (mine > rec.quota[res].load()) {  // returned meanwhile: the exact script decides
    NodeTable::Release(hot, hot.epoch.load(std::memory_order_relaxed), res);
    return false;
  }
  rec.block_used[res].fetch_add(1, std::memory_order_relaxed);
  region_.header().cluster.block_reservations.fetch_add(1, std::memory_order_relaxed);
  return true;
}

int64_t ClusterPlacement::BlockWanted(uint32_t slot, uint32_t res, int64_t capacity) const {
  // Without a report of the node's usage, up to reserve_block - 1 units
  // beside the call's (the script grants at most a quarter of the room left
  // over the live proxies).
  if (capacity < 0 || (region_.hot(slot).usage_mask.load(std::memory_order_relaxed) & (1u << res)) != 0) return 0;
  return block_ - 1;
}

bool ClusterPlacement::RefillBlock(uint32_t slot, uint32_t res, int64_t capacity) {
  NodeRecord& rec = region_.node(slot);
  NodeHot& hot = region_.hot(slot);
  ClusterRecord& cr = region_.header().cluster;
  LockGuard g(cr.block_mu);
  const int64_t need = hot.sessions[res].load();
  if (BlockServes(slot, res, capacity) && need <= rec.quota[res].load()) {
    // Another process took a block while this one waited: the unit is in it.
    rec.block_used[res].fetch_add(1, std::memory_order_relaxed);
    cr.block_reservations.fetch_add(1, std::memory_order_relaxed);
    return true;
  }
  const std::string key = CountKey(slot, res);
  // A reservation against a lower bound than the block's (a new key's
  // headroom) takes no spare: its block would serve only that bound, which
  // the other proxies' reservations against the capacity do not keep.
  const int64_t want = capacity >= rec.block_cap[res].load() ? BlockWanted(slot, res, capacity) : 0;
  absl::StatusOr<RedisValue> r = Run(Script(cluster_lua::kReserveBlock), {key, proxies_key_},
                                     {proxy_, Cat(need), Cat(capacity), lease_, Cat(want)});
  std::optional<cluster_lua::ReserveFlag> flag;
  if (r.ok() && r->type == RedisValue::Type::kArray && r->elements.size() == 4) {
    flag = cluster_lua::ParseFlag<cluster_lua::ReserveFlag>(r->elements[0].integer);
  }
  if (!flag) return KeepOffline(slot, res, capacity);
  if (*flag != cluster_lua::ReserveFlag::kReserved) {
    local_.Release(slot, hot.epoch.load(std::memory_order_relaxed), res);
    return false;
  }
  const int64_t held = r->elements[2].integer;
  // The whole share was checked against `capacity` when a spare was granted:
  // every unit of it may serve calls checked against the same capacity.
  if (r->elements[3].integer > 0) rec.block_cap[res].store(capacity);
  rec.quota[res].store(held);
  rec.block_used[res].fetch_add(1, std::memory_order_relaxed);
  Synced(slot, res, held);
  return true;
}

bool ClusterPlacement::ReserveShared(uint32_t slot, uint32_t res, int64_t capacity) {
  // A node without a capacity has nothing to check over the deployment: the
  // unit is this host's at once and its share goes out with the next
  // republish (Maintain, within kRefreshMs), as a release's does.
  if (capacity < 0) return true;
  if (blocks()) return RefillBlock(slot, res, capacity);
  const int64_t share = region_.hot(slot).sessions[res].load(std::memory_order_relaxed);
  const std::string key = CountKey(slot, res), v = Cat(share), cap = Cat(capacity);
  const std::optional<cluster_lua::ReserveFlag> flag = FlagOf<cluster_lua::ReserveFlag>(
      Run(Script(cluster_lua::kReserve), {key, proxies_key_}, {proxy_, v, cap, lease_}));
  if (!flag) return KeepOffline(slot, res, capacity);
  return Settle(slot, res, share, *flag == cluster_lua::ReserveFlag::kReserved);
}

bool ClusterPlacement::ReserveJoining(uint32_t slot, uint32_t epoch, uint32_t res, Admit admit, ClaimHold hold,
                                      std::optional<cluster_lua::JoinReserveFlag>* flag) {
  const std::optional<int64_t> capacity = admit(slot, epoch);
  if (!capacity || !local_.Reserve(slot, res, *capacity)) return false;
  const int64_t share = region_.hot(slot).sessions[res].load(std::memory_order_relaxed);
  const std::string count = CountKey(slot, res);
  const std::optional<cluster_lua::JoinReserveFlag> joined = FlagOf<cluster_lua::JoinReserveFlag>(
      Run(Script(cluster_lua::kJoinReserve), {hold.key, proxies_key_, count},
          {proxy_, lease_, hold.refs, NodeId(slot), Cat(share), Cat(*capacity), blocks() ? "1" : "0"}));
  if (flag != nullptr) *flag = joined;
  if (!joined) return KeepOffline(slot, res, *capacity);
  return Settle(slot, res, share, *joined == cluster_lua::JoinReserveFlag::kJoined);
}

bool ClusterPlacement::Settle(uint32_t slot, uint32_t res, int64_t share, bool reserved) {
  if (!reserved) {  // full over the deployment, or the claim is not this node's: nothing written there
    local_.Release(slot, region_.hot(slot).epoch.load(std::memory_order_relaxed), res);
    return false;
  }
  SharePublished(slot, res, share);
  return true;
}

bool ClusterPlacement::KeepOffline(uint32_t slot, uint32_t res, int64_t capacity) {
  // Routed on this host's count alone, within the outage share; Maintain
  // republishes the share when Redis is back.
  NodeHot& n = region_.hot(slot);
  if (n.sessions[res].load(std::memory_order_relaxed) > OutageShare(slot, res, capacity)) {
    local_.Release(slot, n.epoch, res);
    region_.header().cluster.outage_refusals.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  Degraded();
  return true;
}

void ClusterPlacement::SharePublished(uint32_t slot, uint32_t res, int64_t share) {
  if (blocks()) {
    // The keyed scripts never lower this proxy's share with blocks on (a
    // later one cannot undo an earlier one), and it may hold more than
    // `share` (a block): the synced share only goes up here.
    std::atomic<int64_t>& synced = region_.node(slot).synced_share[res];
    for (int64_t cur = synced.load(std::memory_order_relaxed);
         cur < share && !synced.compare_exchange_weak(cur, share, std::memory_order_relaxed);) {
    }
    return;
  }
  Synced(slot, res, share);
  // Another process of this host reserved meanwhile: its own publish may
  // have landed before ours, so ours (lower) must not be the last word. A
  // count that only fell meanwhile (releases) leaves ours too high, which
  // errs towards safe: the next republish sets it.
  if (region_.hot(slot).sessions[res].load(std::memory_order_relaxed) > share) Publish(slot, res);
}

void ClusterPlacement::Publish(uint32_t slot, uint32_t res) {
  NodeHot& n = region_.hot(slot);
  const std::string key = CountKey(slot, res);
  for (int i = 0; i < 3; ++i) {  // bounded: Maintain settles whatever is left
    const int64_t share = n.sessions[res].load(std::memory_order_relaxed);
    const std::string v = Cat(share);
    if (!Run(Script(cluster_lua::kPublish), {proxies_key_, key}, {proxy_, lease_, v}).ok()) return;
    Synced(slot, res, share);
    if (n.sessions[res].load(std::memory_order_relaxed) == share) return;
  }
}

void ClusterPlacement::Release(uint32_t slot, uint32_t epoch, uint32_t res) {
  // No round trip: the deployment keeps this proxy's higher share until the
  // next republish (Maintain, within kRefreshMs, or the next reservation on
  // the node, which writes the absolute share), so the node looks fuller
  // than it is meanwhile, never emptier. While Redis is out the outage share
  // stays the share Redis holds, which the other proxies still count.
  local_.Release(slot, epoch, res);
}

std::optional<ClaimRef> ClusterPlacement::JoinAndReserve(const AffinityKey& k, uint32_t res, int64_t now, bool defer,
                                                         Admit admit) {
  const std::string key = ClaimKey(k), refs = Cat(affinity_.HoldOf(k).refs + 1);
  // This host's claim first, its node reserved through kJoinReserve, which
  // checks that the deployment's claim names the same node (one round trip).
  std::optional<cluster_lua::JoinReserveFlag> shared;
  auto fast = [&](uint32_t slot, uint32_t epoch) {
    return ReserveJoining(slot, epoch, res, admit, {key, refs}, &shared);
  };
  auto reserve = [&](uint32_t slot, uint32_t epoch) { return AdmitAndReserve(slot, epoch, res, admit); };
  return Join(k, now, defer, {key, refs}, fast, reserve, &shared);
}

std::optional<ClaimRef> ClusterPlacement::JoinClaim(const AffinityKey& k, int64_t now, bool defer, NodeCheck take) {
  const std::string key = ClaimKey(k), refs = Cat(affinity_.HoldOf(k).refs + 1);
  return Join(k, now, defer, {key, refs}, take, take, nullptr);
}

std::optional<ClaimRef> ClusterPlacement::Join(const AffinityKey& k, int64_t now, bool defer, ClaimHold hold,
                                               NodeCheck fast_take, NodeCheck take,
                                               const std::optional<cluster_lua::JoinReserveFlag>* shared) {
  bool local_claim = false;  // this host has a claim for the key
  std::optional<ClaimRef> fast = affinity_.Join(k, now, [&](uint32_t slot, uint32_t epoch) {
    local_claim = true;
    return fast_take(slot, epoch);
  });
  if (fast) return fast;  // joined in both, or on local state while Redis is out
  if (shared != nullptr && *shared == cluster_lua::JoinReserveFlag::kFull) {
    return std::nullopt;  // the key's node is full over the deployment
  }
  // No claim here: the deployment's, if any, is found by ReserveAndClaim's
  // round trip (a new key costs one round trip, not three).
  if (defer && !local_claim) return std::nullopt;
  // No local claim, a node not usable here, or the deployment's claim is
  // another node's (or gone): the deployment's claim asked for first.
  absl::StatusOr<RedisValue> r = Run(Script(cluster_lua::kJoin), {hold.key, proxies_key_}, {proxy_, lease_, hold.refs});
  if (!r.ok()) return affinity_.Join(k, now, take);
  if (r->type != RedisValue::Type::kString) {
    // No claim in the deployment. A local one (kept while Redis was out, or
    // after Redis lost its data) is taken and published again.
    std::optional<ClaimRef> hit = affinity_.Join(k, now, take);
    if (hit) {
      AffinityTable::Hold held_here = affinity_.HoldOf(k);
      const std::string node = NodeId(hit->slot), grace = Cat(held_here.grace_ms), held = Cat(held_here.refs);
      (void)Run(Script(cluster_lua::kClaim), {hold.key, proxies_key_}, {proxy_, node, grace, lease_, held});
    }
    return hit;
  }
  const std::string& node = r->str;
  std::optional<ClaimRef> hit = affinity_.Join(k, now, [&](uint32_t slot, uint32_t epoch) {
    return GetFixed(region_.node(slot).id) == node && take(slot, epoch);
  });
  if (!hit) {
    // Not joined here: this proxy's hold is what it really has.
    const std::string held = Cat(affinity_.HoldOf(k).refs);
    (void)Run(Script(cluster_lua::kDrop), {hold.key, proxies_key_}, {proxy_, lease_, held, "0"});
  }
  return hit;
}

absl::StatusOr<AffinityTable::ClaimOutcome> ClusterPlacement::Claim(const AffinityKey& k, ClaimRef chosen, uint32_t res,
                                                                    int64_t grace_ms, int64_t now, NodeCheck alive,
                                                                    Admit admit) {
  const std::string key = ClaimKey(k), node = NodeId(chosen.slot), grace = Cat(grace_ms),
                    refs = Cat(affinity_.HoldOf(k).refs + 1);
  std::string other;
  const std::optional<cluster_lua::ClaimFlag> flag = FlagOf<cluster_lua::ClaimFlag>(
      Run(Script(cluster_lua::kClaim), {key, proxies_key_}, {proxy_, node, grace, lease_, refs}), &other);
  if (!flag) {
    // Redis out: this host's claim, a concurrent one joined as Reserve.
    return affinity_.Claim(k, chosen, grace_ms, now, alive,
                           [&](uint32_t slot, uint32_t epoch) { return AdmitAndReserve(slot, epoch, res, admit); });
  }
  if (*flag == cluster_lua::ClaimFlag::kClaimed) {
    // The deployment's claim is `chosen`'s: a local claim for another node
    // (a stale copy) is not joined; the call stays on `chosen`.
    return affinity_.Claim(k, chosen, grace_ms, now, alive, NoOtherNode);
  }
  // Another proxy claimed the key first: the call follows its claim when
  // that node can take it here, else goes to `chosen` without the key.
  AffinityTable::ClaimOutcome out;
  out.ref = ClaimRef{chosen.slot, chosen.epoch, 0};
  if (std::optional<ClaimRef> there = Follow(k, {key, refs}, other, res, grace_ms, now, alive, admit)) {
    out.ref = *there;
    out.moved = true;  // the caller gives `chosen` back
  }
  return out;
}

AffinityTable::Hold ClusterPlacement::HolderOf(const AffinityKey& k, int64_t now) {
  const AffinityTable::Hold here = local_.HolderOf(k, now);
  const std::string key = ClaimKey(k);
  absl::StatusOr<RedisValue> r = Run(Script(cluster_lua::kHolder), {key, proxies_key_}, {});
  if (!r.ok() || r->type != RedisValue::Type::kArray || r->elements.size() != 2) return here;
  const std::string& node = r->elements[0].str;
  if (node.empty()) return AffinityTable::Hold{};
  AffinityTable::Hold h;
  h.refs = r->elements[1].integer;
  h.grace_ms = here.grace_ms;
  if (std::optional<ClaimRef> at = find_(node)) {
    h.slot = at->slot;
    h.epoch = at->epoch;
  }
  return h;
}

absl::StatusOr<AffinityTable::ClaimOutcome> ClusterPlacement::TakeOver(const AffinityKey& k, ClaimRef chosen,
                                                                       int64_t grace_ms, int64_t now, bool force) {
  const std::string key = ClaimKey(k), node = NodeId(chosen.slot), grace = Cat(grace_ms),
                    refs = Cat(affinity_.HoldOf(k).refs + 1);
  const std::optional<cluster_lua::ClaimFlag> flag = FlagOf<cluster_lua::ClaimFlag>(
      Run(Script(cluster_lua::kClaim), {key, proxies_key_}, {proxy_, node, grace, lease_, refs, force ? "2" : "1"}));
  if (flag == cluster_lua::ClaimFlag::kOtherClaim) {
    // Sessions of another proxy still hold it elsewhere.
    AffinityTable::ClaimOutcome out;
    out.ref = ClaimRef{chosen.slot, chosen.epoch, 0};
    return out;
  }
  // The deployment's claim is `chosen`'s now (or Redis is out): the same here.
  return local_.TakeOver(k, chosen, grace_ms, now, force);
}

std::optional<ClaimRef> ClusterPlacement::Follow(const AffinityKey& k, ClaimHold hold, std::string_view node,
                                                 uint32_t res, int64_t grace_ms, int64_t now, NodeCheck alive,
                                                 Admit admit) {
  std::optional<ClaimRef> there = find_(node);
  if (!there || !alive(there->slot, there->epoch)) return std::nullopt;
  // The claim checked to be still `node`'s and this proxy's hold on it
  // registered with the reservation, in one round trip.
  if (!ReserveJoining(there->slot, there->epoch, res, admit, hold, nullptr)) return std::nullopt;
  // `there` is reserved now; the local claim is made for it, reusing that
  // reservation, and never moves the call to a third node.
  bool used = false;
  auto reuse = [&](uint32_t slot, uint32_t epoch) {
    if (used || slot != there->slot || epoch != there->epoch) return false;
    used = true;
    return true;
  };
  absl::StatusOr<AffinityTable::ClaimOutcome> inner =
      affinity_.Claim(k, ClaimRef{there->slot, there->epoch, 0}, grace_ms, now, alive, reuse);
  // No room for a local claim: the call still goes to the key's node, without it.
  return inner.ok() ? inner->ref : ClaimRef{there->slot, there->epoch, 0};
}

std::optional<absl::StatusOr<AffinityTable::ClaimOutcome>> ClusterPlacement::ReserveAndClaim(
    const AffinityKey& k, ClaimRef chosen, uint32_t res, int64_t capacity, int64_t grace_ms, int64_t now,
    NodeCheck alive, Admit admit) {
  using cluster_lua::ReserveClaimFlag;
  if (!local_.Reserve(chosen.slot, res, capacity)) return std::nullopt;
  NodeHot& n = region_.hot(chosen.slot);
  const int64_t share = n.sessions[res].load(std::memory_order_relaxed);
  const std::string key = ClaimKey(k), refs = Cat(affinity_.HoldOf(k).refs + 1);
  std::string other;
  const std::optional<ReserveClaimFlag> flag = FlagOf<ReserveClaimFlag>(
      Run(Script(cluster_lua::kReserveClaim), {key, proxies_key_, CountKey(chosen.slot, res)},
          {proxy_, lease_, refs, NodeId(chosen.slot), Cat(share), Cat(capacity), Cat(grace_ms), blocks() ? "1" : "0"}),
      &other);
  if (!flag) {
    // Redis out: as Reserve then Claim on local state.
    if (!KeepOffline(chosen.slot, res, capacity)) return std::nullopt;
    absl::StatusOr<AffinityTable::ClaimOutcome> c =
        affinity_.Claim(k, chosen, grace_ms, now, alive,
                        [&](uint32_t slot, uint32_t epoch) { return AdmitAndReserve(slot, epoch, res, admit); });
    if (!c.ok() || c->moved) Release(chosen.slot, chosen.epoch, res);
    return c;
  }
  switch (*flag) {
    case ReserveClaimFlag::kFull:  // nothing was written there
      local_.Release(chosen.slot, chosen.epoch, res);
      return std::nullopt;
    case ReserveClaimFlag::kClaimed:
    case ReserveClaimFlag::kJoined: {
      SharePublished(chosen.slot, res, share);
      // The deployment's claim is `chosen`'s: a stale local claim for another node is not joined.
      absl::StatusOr<AffinityTable::ClaimOutcome> c = affinity_.Claim(k, chosen, grace_ms, now, alive, NoOtherNode);
      if (!c.ok()) {
        Release(chosen.slot, chosen.epoch, res);
        return c;
      }
      c->moved = *flag == ReserveClaimFlag::kJoined;  // joined a claim made elsewhere: an affinity hit
      return c;
    }
    case ReserveClaimFlag::kOtherClaim:
      break;
  }
  // The key is another node's (another proxy placed it, or placed it first):
  // the call follows that claim when its node can take it here.
  if (std::optional<ClaimRef> there = Follow(k, {key, refs}, other, res, grace_ms, now, alive, admit)) {
    local_.Release(chosen.slot, chosen.epoch, res);  // never published
    AffinityTable::ClaimOutcome out;
    out.ref = *there;
    out.moved = true;
    return out;
  }
  // Else the call goes to `chosen` without the key, its unit now published.
  if (!ReserveShared(chosen.slot, res, capacity)) return std::nullopt;
  AffinityTable::ClaimOutcome out;
  out.ref = ClaimRef{chosen.slot, chosen.epoch, 0};
  return out;
}

std::array<std::string, 3> ClusterPlacement::DropLocal(const AffinityKey& k, uint64_t claim,
                                                       AffinityTable::DropMode mode, int64_t now) {
  using Mode = AffinityTable::DropMode;
  // The local claim went without grace (a leaving node, or an unanswered
  // call's claim): no grace in the deployment either, once no proxy holds it.
  const bool deleted = affinity_.Drop(k, claim, mode, now);
  const bool no_grace = deleted && (mode == Mode::kNoGrace || mode == Mode::kAbandoned);
  return {Cat(affinity_.HoldOf(k).refs), mode == Mode::kRelease ? "1" : "0", no_grace ? "1" : "0"};
}

bool ClusterPlacement::StillHeld(const AffinityKey& k, AffinityTable::DropMode mode) const {
  return mode != AffinityTable::DropMode::kRelease && affinity_.HoldOf(k).refs > 0;
}

void ClusterPlacement::DropClaim(const AffinityKey& k, uint64_t claim, AffinityTable::DropMode mode, int64_t now) {
  if (claim == 0) return;
  const std::array<std::string, 3> drop = DropLocal(k, claim, mode, now);
  if (StillHeld(k, mode)) return;  // the deployment's claim is unchanged for the other proxies
  const std::string key = ClaimKey(k);
  (void)Run(Script(cluster_lua::kDrop), {key, proxies_key_}, {proxy_, lease_, drop[0], drop[1], drop[2]});
}

void ClusterPlacement::EndSession(uint32_t slot, uint32_t epoch, uint32_t res, const AffinityKey& k, uint64_t claim,
                                  AffinityTable::DropMode mode, int64_t now) {
  if (claim == 0 || slot == kNil || region_.node(slot).epoch != epoch) {
    Placement::EndSession(slot, epoch, res, k, claim, mode, now);
    return;
  }
  local_.Release(slot, epoch, res);
  const std::array<std::string, 3> drop = DropLocal(k, claim, mode, now);
  // Other sessions of this host still hold the key: no round trip, as a
  // release (the share with the next republish); the deployment's claim
  // still has this proxy holding it, which is true. Only the number of
  // sessions it names for this proxy stays higher until the key's next call
  // or last end here writes it again. The last end (below) drops the hold
  // and starts the grace at once.
  if (StillHeld(k, mode)) return;
  NodeHot& n = region_.hot(slot);
  // With blocks the unit goes back to this proxy's block: the share stays
  // (the republish returns what is not used).
  const int64_t share = blocks() ? -1 : n.sessions[res].load(std::memory_order_relaxed);
  const std::string count = CountKey(slot, res), key = ClaimKey(k), v = Cat(share);
  if (!Run(Script(cluster_lua::kEnd), {proxies_key_, count, key}, {proxy_, lease_, v, drop[0], drop[1], drop[2]})
           .ok()) {
    return;  // Maintain republishes the share; the claim's hold is set again by its next call
  }
  if (share >= 0) SharePublished(slot, res, share);
}

std::optional<std::vector<int64_t>> ClusterPlacement::DeploymentCounts(
    absl::Span<const std::pair<uint32_t, uint32_t>> slot_res) {
  std::vector<std::string> keys{proxies_key_};
  for (auto [slot, res] : slot_res) keys.push_back(CountKey(slot, res));
  std::vector<std::string_view> kv(keys.begin(), keys.end());
  absl::StatusOr<RedisValue> r = Run(Script(cluster_lua::kCounts), kv, {proxy_});
  if (!r.ok() || r->type != RedisValue::Type::kArray || r->elements.size() != slot_res.size()) return std::nullopt;
  std::vector<int64_t> out;
  for (const RedisValue& v : r->elements) out.push_back(v.integer);
  return out;
}

bool ClusterPlacement::PublishAll() {
  if (blocks()) return PublishHeld();
  Header& h = region_.header();
  std::vector<std::string> keys{proxies_key_}, args{proxy_, lease_};
  std::vector<std::tuple<uint32_t, uint32_t, int64_t>> shares;
  for (uint32_t s = 0; s < region_.max_nodes(); ++s) {
    NodeRecord& n = region_.node(s);
    if (!n.in_use) continue;
    for (uint32_t res = 0; res < h.n_resources; ++res) {
      const int64_t share = region_.hot(s).sessions[res].load(std::memory_order_relaxed);
      keys.push_back(CountKey(s, res));
      args.push_back(Cat(share));
      shares.emplace_back(s, res, share);
    }
  }
  std::vector<std::string_view> kv(keys.begin(), keys.end()), av(args.begin(), args.end());
  absl::StatusOr<RedisValue> r = Run(Script(cluster_lua::kPublish), kv, av);
  if (!r.ok()) return false;
  for (auto [s, res, share] : shares) Synced(s, res, share);
  if (r->type == RedisValue::Type::kInteger) h.cluster.proxies_seen.store(r->integer, std::memory_order_relaxed);
  return true;
}

int64_t ClusterPlacement::BlockKept(uint32_t slot, uint32_t res, int64_t sessions) const {
  // The unused units a republish keeps (kPublishHeld cuts them further to
  // what a new block would get now, so near full they go back): no more than
  // this host reserved on the node with blocks since the previous republish (about a second's worth of its
  // calls there), so an idle proxy's block goes back within a second and no
  // proxy's unused units keep another from the last places for longer; none
  // on a node whose reported usage counts (BlockServes).
  const NodeRecord& rec = region_.node(slot);
  const int64_t unused = rec.quota[res].load() - sessions;
  if (unused <= 0 || (region_.hot(slot).usage_mask.load(std::memory_order_relaxed) & (1u << res)) != 0) return 0;
  return std::min(unused, rec.block_used[res].load(std::memory_order_relaxed));
}

bool ClusterPlacement::PublishHeld() {
  Header& h = region_.header();
  LockGuard g(h.cluster.block_mu);
  std::vector<std::string> keys{proxies_key_}, args{proxy_, lease_};
  std::vector<std::tuple<uint32_t, uint32_t, int64_t>> at;  // slot, resource, sessions written
  for (uint32_t s = 0; s < region_.max_nodes(); ++s) {
    NodeRecord& n = region_.node(s);
    if (!n.in_use) continue;
    NodeHot& hot = region_.hot(s);
    for (uint32_t res = 0; res < h.n_resources; ++res) {
      const int64_t before = hot.sessions[res].load();
      const int64_t keep = before + BlockKept(s, res, before);
      n.block_used[res].store(0, std::memory_order_relaxed);
      // No unit comes from the block during the round trip (the script may
      // keep fewer than `keep`): the quota is 0 until its answer, set before
      // the sessions are read (TakeFromBlock's other half), so a unit
      // reserved from the block meanwhile is in `sessions` below, or its
      // reservation sees the 0 and waits for this lock (RefillBlock).
      n.quota[res].store(0);
      const int64_t sessions = hot.sessions[res].load();
      keys.push_back(CountKey(s, res));
      args.push_back(Cat(sessions));
      args.push_back(Cat(std::max(keep, sessions)));
      args.push_back(Cat(n.block_cap[res].load(std::memory_order_relaxed)));
      at.emplace_back(s, res, sessions);
    }
  }
  std::vector<std::string_view> kv(keys.begin(), keys.end()), av(args.begin(), args.end());
  absl::StatusOr<RedisValue> r = Run(Script(cluster_lua::kPublishHeld), kv, av);
  const bool answered = r.ok() && r->type == RedisValue::Type::kArray && r->elements.size() == at.size() + 1;
  for (size_t i = 0; i < at.size(); ++i) {
    const auto [s, res, sessions] = at[i];
    NodeRecord& n = region_.node(s);
    if (!answered) {
      // Not written: Redis holds at least the sessions (its share's last
      // write, if any, as well); the block is given up, taken again checked.
      n.quota[res].store(0);
      continue;
    }
    // What Redis holds now: fewer than kept when it lost the share
    // (restarted empty, a failover, the lease lapsed) or the node is near
    // full; the block is that.
    const int64_t held = r->elements[i + 1].integer;
    n.quota[res].store(held);
    // No unused unit left: the next block may be taken against any bound
    // (a capacity lowered by a reload, say), as the first one was.
    if (held <= sessions) n.block_cap[res].store(-1);
    Synced(s, res, held);
  }
  if (!answered) return false;
  h.cluster.proxies_seen.store(r->elements[0].integer, std::memory_order_relaxed);
  return true;
}

int64_t ClusterPlacement::OutageShare(uint32_t slot, uint32_t res, int64_t capacity) const {
  if (capacity < 0) return INT64_MAX;
  const int64_t seen = std::max<int64_t>(1, region_.header().cluster.proxies_seen.load(std::memory_order_relaxed));
  const int64_t headroom = (capacity * headroom_pct_ + 100 * seen - 1) / (100 * seen);  // rounded up
  return std::min(capacity, region_.node(slot).synced_share[res].load(std::memory_order_relaxed) + headroom);
}

bool ClusterPlacement::RunMembers(const std::vector<std::pair<std::string, std::string>>& records, int64_t now,
                                  bool all, RedisValue* reply) {
  std::vector<std::string> args{proxy_, lease_, Cat(now), Cat(ClusterMembers::kForgetMs), all ? "1" : "0"};
  for (const auto& [id, rec] : records) {
    args.push_back(id);
    args.push_back(rec);
  }
  std::vector<std::string_view> av(args.begin(), args.end());
  absl::StatusOr<RedisValue> r = Run(Script(cluster_lua::kMembers), {members_key_, proxies_key_}, av);
  if (!r.ok() || r->type != RedisValue::Type::kArray) return false;
  *reply = *std::move(r);
  return true;
}

void ClusterPlacement::UsageReported(uint32_t slot) {
  NodeHot& hot = region_.hot(slot);
  const uint32_t usage = hot.usage_mask.load(std::memory_order_acquire);
  if (usage == 0) return;
  std::vector<std::pair<uint32_t, uint32_t>> counts;
  for (uint32_t r = 0; r < kMaxResources; ++r) {
    if (usage & (1u << r)) counts.emplace_back(slot, r);
  }
  std::optional<std::vector<int64_t>> base = DeploymentCounts(counts);
  if (!base) return;
  for (size_t i = 0; i < counts.size(); ++i) {
    // The deployment's count holds the unused units of reservation blocks,
    // which the node's report does not: this proxy's own are taken off (a
    // lower base leaves less room, never more), and no block serves the node
    // while its report counts (BlockServes); the other proxies' are the
    // bound's slack (docs/cluster.md, "Reservation blocks").
    const uint32_t r = counts[i].second;
    const int64_t unused =
        blocks() ? std::max<int64_t>(0, region_.node(slot).quota[r].load() - hot.sessions[r].load()) : 0;
    hot.usage_base[r].store((*base)[i] - unused, std::memory_order_relaxed);
  }
}

void ClusterPlacement::NodeChanged(uint32_t slot, int64_t now) {
  UsageReported(slot);  // before the record is encoded: it carries the base to the other proxies
  std::optional<std::string> rec = members_.Encode(slot);
  if (!rec) return;
  RedisValue reply;
  // Not stored now (Redis out): the next SyncMembers stores it.
  (void)RunMembers({{NodeId(slot), *std::move(rec)}}, now, false, &reply);
}

bool ClusterPlacement::SyncMembers(int64_t now) {
  RedisValue reply;
  if (!RunMembers(members_.EncodeAll(), now, true, &reply)) return false;
  std::vector<std::pair<std::string, std::string>> records;
  for (size_t i = 0; i + 1 < reply.elements.size(); i += 2) {
    records.emplace_back(reply.elements[i].str, reply.elements[i + 1].str);
  }
  (void)members_.Merge(records, now);
  return true;
}

absl::StatusOr<std::vector<std::string>> ClusterPlacement::LiveProxies() {
  absl::StatusOr<RedisValue> r = Run(Script(cluster_lua::kProxies), {proxies_key_}, {});
  if (!r.ok()) return r.status();
  std::vector<std::string> out;
  for (const RedisValue& v : r->elements) out.push_back(v.str);
  return out;
}

void ClusterPlacement::SetDraining(uint32_t slot, int64_t deadline_ms) {
  local_.SetDraining(slot, deadline_ms);
  PublishAdmin(slot, AdminState::kDraining);
}

void ClusterPlacement::SetAdminState(uint32_t slot, AdminState state) {
  local_.SetAdminState(slot, state);
  PublishAdmin(slot, state);
}

void ClusterPlacement::PublishAdmin(uint32_t slot, AdminState state) {
  const std::string node = NodeId(slot), v = Cat(static_cast<uint32_t>(state));
  if (!Run(Script(cluster_lua::kSetAdmin), {admin_key_, proxies_key_}, {proxy_, lease_, node, v}).ok()) {
    region_.header().cluster.admin_unpublished.store(1, std::memory_order_relaxed);
  }
}

bool ClusterPlacement::PushAdmin() {
  std::vector<std::string> args{proxy_, lease_};
  for (uint32_t s = 0; s < region_.max_nodes(); ++s) {
    NodeRecord& n = region_.node(s);
    if (!n.in_use) continue;
    args.push_back(NodeId(s));
    args.push_back(Cat(region_.hot(s).admin.load(std::memory_order_relaxed)));
  }
  std::vector<std::string_view> av(args.begin(), args.end());
  return Run(Script(cluster_lua::kSetAdmin), {admin_key_, proxies_key_}, av).ok();
}

void ClusterPlacement::PullAdmin() {
  absl::StatusOr<RedisValue> r = Run(Script(cluster_lua::kGetAdmin), {admin_key_}, {});
  if (!r.ok() || r->type != RedisValue::Type::kArray) return;
  for (size_t i = 0; i + 1 < r->elements.size(); i += 2) {
    std::optional<ClaimRef> at = find_(r->elements[i].str);
    uint32_t v = 0;
    if (!at || !absl::SimpleAtoi(r->elements[i + 1].str, &v) || v > static_cast<uint32_t>(AdminState::kDisabled))
      continue;
    NodeHot& n = region_.hot(at->slot);
    if (n.admin.load(std::memory_order_relaxed) != v) n.admin.store(v, std::memory_order_relaxed);
  }
}

bool ClusterPlacement::RepublishClaims(int64_t now) {
  std::vector<AffinityRow> rows = affinity_.List(
      now, [](const AffinityEntry& e) { return e.refs > 0; }, 0);
  std::vector<RedisClient::EvalCall> calls;
  for (const AffinityRow& row : rows) {
    if (row.node == kNil || region_.node(row.node).epoch != row.epoch) continue;
    const AffinityKey k(row.app, row.key);
    const AffinityTable::Hold hold = affinity_.HoldOf(k);
    if (hold.refs <= 0) continue;
    calls.push_back(
        {{ClaimKey(k), proxies_key_}, {proxy_, NodeId(row.node), Cat(hold.grace_ms), lease_, Cat(hold.refs)}});
  }
  constexpr size_t kBatch = 512;
  for (size_t at = 0; at < calls.size(); at += kBatch) {
    if (!breaker_.Allow()) return false;
    const auto t0 = std::chrono::steady_clock::now();
    absl::Span<const RedisClient::EvalCall> part(calls.data() + at, std::min(kBatch, calls.size() - at));
    absl::StatusOr<std::vector<absl::StatusOr<RedisValue>>> r = client_.EvalMany(Script(cluster_lua::kClaim), part);
    if (!r.ok()) {
      Failed(r.status());
      return false;
    }
    breaker_.OnSuccess(
        std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0).count(), WallMs());
  }
  return true;
}

void ClusterPlacement::Maintain(int64_t now) {
  ClusterRecord& rec = region_.header().cluster;
  // With Sentinel, about once a second per process: is our primary still the one the sentinels name?
  if (int64_t checked = primary_checked_ms_.load(std::memory_order_relaxed), mono = ClusterBreaker::MonoMs();
      mono - checked >= kRefreshMs && !breaker_.open() &&
      primary_checked_ms_.compare_exchange_strong(checked, mono, std::memory_order_relaxed)) {
    (void)client_.RecheckPrimary();
  }
  if (int64_t seen = primaries_seen_.load(std::memory_order_relaxed), changes = client_.primary_changes();
      changes != seen && primaries_seen_.compare_exchange_strong(seen, changes, std::memory_order_relaxed)) {
    // This process now talks to another primary (a failover), which may lack
    // the last writes of the old one: every share and claim written again now.
    if (!PublishAll() || !RepublishClaims(now)) primaries_seen_.store(seen, std::memory_order_relaxed);
  }
  int64_t last = rec.refreshed_ms.load(std::memory_order_relaxed), mono = ClusterBreaker::MonoMs();
  if (mono - last < kRefreshMs) return;
  if (!rec.refreshed_ms.compare_exchange_strong(last, mono, std::memory_order_relaxed)) return;
  if (!PublishAll()) return;
  // Members before admin states: a node that joined elsewhere gets its
  // deployment admin state in the same pass.
  if (!SyncMembers(now)) return;
  if (rec.admin_unpublished.load(std::memory_order_relaxed) != 0) {
    if (PushAdmin()) rec.admin_unpublished.store(0, std::memory_order_relaxed);
    return;
  }
  PullAdmin();
}

}  // namespace approute::internal
