#include "state/affinity_table.h"

#include <xxhash.h>

#include <limits>

#include "state/shard.h"
#include "util/str_util.h"

namespace approute::internal {
namespace {

constexpr int64_t kNever = std::numeric_limits<int64_t>::max();
size_t ShardOf(uint64_t hash) { return static_cast<size_t>(hash >> 60) & (kShards - 1); }

bool Lapsed(const AffinityEntry& e, int64_t now) { return e.refs <= 0 && e.expires_ms <= now; }

// Deletes the claims of hash's chain whose grace ran out (shard lock held).
void PruneChain(Shard<AffinityEntry>& sh, Header& h, uint64_t hash, int64_t now) {
  uint32_t* link = sh.Head(hash);
  while (*link != kNil) {
    AffinityEntry& e = sh.at(*link);
    if (e.in_use && Lapsed(e, now)) {
      sh.Unlink(link);
      h.affinity_count.fetch_sub(1, std::memory_order_relaxed);
    } else {
      link = &e.next;
    }
  }
}

}  // namespace

uint64_t PreferHash(std::string_view prefer) {
  const uint64_t h = XXH3_64bits_withSeed(prefer.data(), prefer.size(), 0x7072656665720000ULL);
  return h != 0 ? h : 1;
}

PreferKey::PreferKey(uint64_t prefer_hash) {
  static constexpr char kHex[] = "0123456789abcdef";
  text[0] = kDerivedKeyMark;
  text[1] = 'p';
  for (int i = 0; i < 16; ++i) text[2 + i] = kHex[(prefer_hash >> (60 - 4 * i)) & 0xF];
}

AffinityKey::AffinityKey(uint32_t a, std::string_view k)
    : app(a), key(k), hash(XXH3_64bits_withSeed(k.data(), k.size(), 0x9E3779B97F4A7C15ULL + a)) {}

std::optional<ClaimRef> AffinityTable::Join(const AffinityKey& k, int64_t now,
                                            absl::FunctionRef<bool(uint32_t, uint32_t)> take) {
  Header& h = region_.header();
  LockedShard<AffinityEntry> sh(region_, h.affinity_shards[ShardOf(k.hash)]);
  PruneChain(sh, h, k.hash, now);
  uint32_t* link = sh.Find(k.hash, [&](const AffinityEntry& e) { return e.app == k.app && GetFixed(e.key) == k.key; });
  if (link == nullptr) return std::nullopt;
  AffinityEntry& e = sh.at(*link);
  if (!take(e.node, e.node_epoch)) return std::nullopt;
  ++e.refs;
  e.expires_ms = kNever;
  return ClaimRef{e.node, e.node_epoch, e.claim};
}

absl::StatusOr<AffinityTable::ClaimOutcome> AffinityTable::Claim(const AffinityKey& k, ClaimRef chosen,
                                                                 int64_t grace_ms, int64_t now,
                                                                 absl::FunctionRef<bool(uint32_t, uint32_t)> alive,
                                                                 absl::FunctionRef<bool(uint32_t, uint32_t)> take) {
  Header& h = region_.header();
  LockedShard<AffinityEntry> sh(region_, h.affinity_shards[ShardOf(k.hash)]);
  ClaimOutcome out;
  out.ref = chosen;
  auto rebind = [&](AffinityEntry& e) {
    e.answered = 0;
    e.node = chosen.slot;
    e.node_epoch = chosen.epoch;
    e.claim = h.claim_seq.fetch_add(1, std::memory_order_relaxed);
    e.refs = 1;
    e.grace_ms = grace_ms;
    e.expires_ms = kNever;
    out.ref.claim = e.claim;
  };
  uint32_t* link = sh.Find(k.hash, [&](const AffinityEntry& e) { return e.app == k.app && GetFixed(e.key) == k.key; });
  if (link != nullptr) {
    AffinityEntry& e = sh.at(*link);
    bool holder_alive = alive(e.node, e.node_epoch);
    if (e.node == chosen.slot && e.node_epoch == chosen.epoch) {
      ++e.refs;
      e.expires_ms = kNever;
      out.ref.claim = e.claim;
    } else if (holder_alive && (e.refs > 0 || e.expires_ms > now) && take(e.node, e.node_epoch)) {
      // Another process claimed the key meanwhile (or the claim is in its
      // grace time) for a node this call can use: join it, so one key never
      // spreads over two nodes.
      ++e.refs;
      e.expires_ms = kNever;
      out.ref = ClaimRef{e.node, e.node_epoch, e.claim};
      out.moved = true;
    } else if (holder_alive && e.refs > 0) {
      // The key's node is full, tried or excluded for this call and still
      // serves the key's other calls: this call goes elsewhere without the key.
      out.ref.claim = 0;
    } else {
      // The key's node is gone, down or disabled, or its claim was only in
      // its grace time: the key moves to the node just chosen.
      rebind(e);
    }
    return out;
  }
  uint32_t i = sh.Alloc();
  if (i == kNil) {
    sh.RemoveIf([now](const AffinityEntry& e) { return Lapsed(e, now); },
                [&](const AffinityEntry&) { h.affinity_count.fetch_sub(1, std::memory_order_relaxed); });
    i = sh.Alloc();
  }
  if (i == kNil) {
    // Still full: the claim nearest the end of its grace time gives way.
    uint32_t* victim = nullptr;
    int64_t soonest = kNever;
    for (uint32_t b = 0; b < sh.header().nbuckets; ++b) {
      for (uint32_t* l = &region_.at<uint32_t>(sh.header().buckets_off)[b]; *l != kNil; l = &sh.at(*l).next) {
        const AffinityEntry& e = sh.at(*l);
        if (e.in_use && e.refs <= 0 && e.expires_ms < soonest) {
          soonest = e.expires_ms;
          victim = l;
        }
      }
    }
    if (victim != nullptr) {
      sh.Unlink(victim);
      h.affinity_count.fetch_sub(1, std::memory_order_relaxed);
      i = sh.Alloc();
    }
  }
  if (i == kNil) {
    return absl::ResourceExhaustedError(Cat("affinity table is full (state.max_affinities = ", h.max_affinities, ")"));
  }
  AffinityEntry& e = sh.at(i);
  e.app = k.app;
  SetFixed(e.key, k.key);
  rebind(e);
  sh.Commit(i, k.hash);
  h.affinity_count.fetch_add(1, std::memory_order_relaxed);
  return out;
}

void AffinityTable::MarkAnswered(const AffinityKey& k, uint64_t claim) {
  if (claim == 0) return;
  Header& h = region_.header();
  LockedShard<AffinityEntry> sh(region_, h.affinity_shards[ShardOf(k.hash)]);
  uint32_t* link = sh.Find(
      k.hash, [&](const AffinityEntry& e) { return e.app == k.app && e.claim == claim && GetFixed(e.key) == k.key; });
  if (link != nullptr) sh.at(*link).answered = 1;
}

bool AffinityTable::Drop(const AffinityKey& k, uint64_t claim, DropMode mode, int64_t now) {
  if (claim == 0) return false;
  Header& h = region_.header();
  LockedShard<AffinityEntry> sh(region_, h.affinity_shards[ShardOf(k.hash)]);
  uint32_t* link = sh.Find(
      k.hash, [&](const AffinityEntry& e) { return e.app == k.app && e.claim == claim && GetFixed(e.key) == k.key; });
  if (link == nullptr) return false;  // rebound or released since
  AffinityEntry& e = sh.at(*link);
  if (e.refs > 0) --e.refs;
  if (mode == DropMode::kRelease || (e.refs == 0 && (e.grace_ms == 0 || mode == DropMode::kNoGrace ||
                                                     (mode == DropMode::kAbandoned && !e.answered)))) {
    sh.Unlink(link);
    h.affinity_count.fetch_sub(1, std::memory_order_relaxed);
    return true;
  }
  if (e.refs == 0) e.expires_ms = now + e.grace_ms;
  return false;
}

AffinityTable::Hold AffinityTable::HoldOf(const AffinityKey& k, int64_t now) {
  Header& h = region_.header();
  LockedShard<AffinityEntry> sh(region_, h.affinity_shards[ShardOf(k.hash)]);
  uint32_t* link = sh.Find(k.hash, [&](const AffinityEntry& e) { return e.app == k.app && GetFixed(e.key) == k.key; });
  if (link == nullptr || Lapsed(sh.at(*link), now)) return Hold{};
  const AffinityEntry& e = sh.at(*link);
  return Hold{e.refs, e.grace_ms, e.node, e.node_epoch, e.expires_ms};
}

int64_t AffinityTable::Sweep(size_t s, int64_t now, uint32_t max_buckets) {
  Header& h = region_.header();
  LockedShard<AffinityEntry> sh(region_, h.affinity_shards[s]);
  int64_t gone = 0;
  auto dead = [now](const AffinityEntry& e) { return Lapsed(e, now); };
  auto take = [&](const AffinityEntry&) { ++gone; };
  if (max_buckets == 0) {
    sh.RemoveIf(dead, take);
  } else {
    sh.RemoveIfBounded(max_buckets, dead, take);
  }
  h.affinity_count.fetch_sub(gone, std::memory_order_relaxed);
  return gone;
}

int64_t AffinityTable::ForgetIdle(uint32_t slot, uint32_t epoch) {
  Header& h = region_.header();
  int64_t gone = 0;
  for (size_t s = 0; s < kShards; ++s) {
    LockedShard<AffinityEntry> sh(region_, h.affinity_shards[s]);
    int64_t here = 0;
    sh.RemoveIf([&](const AffinityEntry& e) { return e.refs <= 0 && e.node == slot && e.node_epoch == epoch; },
                [&](const AffinityEntry&) { ++here; });
    h.affinity_count.fetch_sub(here, std::memory_order_relaxed);
    gone += here;
  }
  return gone;
}

std::vector<AffinityRow> AffinityTable::List(int64_t now, absl::FunctionRef<bool(const AffinityEntry&)> keep,
                                             size_t limit) {
  std::vector<AffinityRow> out;
  for (size_t s = 0; s < kShards; ++s) {
    LockedShard<AffinityEntry> sh(region_, region_.header().affinity_shards[s]);
    sh.ForEach([&](const AffinityEntry& e) {
      if (Lapsed(e, now) || e.key[0] == kDerivedKeyMark || !keep(e) || (limit != 0 && out.size() >= limit)) return;
      out.push_back(AffinityRow{e.app, std::string(GetFixed(e.key)), e.node, e.node_epoch, e.refs, e.expires_ms});
    });
  }
  return out;
}

}  // namespace approute::internal
