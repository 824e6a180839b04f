#include "state/recovery.h"

#include <cstdlib>
#include <limits>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "state/shard.h"

namespace approute::internal {

RecountResult Recount(const Region& region, int64_t now_ms) {
  Header& h = region.header();
  const uint32_t max_nodes = region.max_nodes();
  std::vector<int64_t> counts(size_t{max_nodes} * kMaxResources, 0);
  absl::flat_hash_map<uint64_t, int64_t> refs;  // claim -> sessions holding it
  std::vector<int64_t> in_flight(kMaxApps, 0);  // app slot -> live sessions
  RecountResult out;

  for (size_t s = 0; s < kShards; ++s) {
    LockedShard<SessionEntry> sh(region, h.session_shards[s]);
    // An entry naming a node slot, resource or app out of range was never
    // written by this library: drop it rather than count it.
    out.sessions += sh.Rebuild([&](const SessionEntry& e) {
      return (e.node == kNil || e.node < max_nodes) && e.resource < kMaxResources && (e.extra >> kMaxResources) == 0 &&
             e.app < kMaxApps;
    });
    sh.ForEach([&](const SessionEntry& e) {
      if (e.node != kNil) {
        const NodeRecord& n = region.node(e.node);
        if (n.in_use && n.epoch == e.node_epoch) {
          ++counts[size_t{e.node} * kMaxResources + e.resource];
          for (uint32_t r = 0; r < kMaxResources; ++r) {
            if ((e.extra >> r & 1u) != 0 && r != e.resource) ++counts[size_t{e.node} * kMaxResources + r];
          }
        }
      }
      ++in_flight[e.app];
      if (e.claim != 0) ++refs[e.claim];
      if (e.pref_claim != 0) ++refs[e.pref_claim];  // preference claims are counted like key claims
    });
  }
  for (uint32_t slot = 0; slot < max_nodes; ++slot) {
    const NodeRecord& n = region.node(slot);
    NodeHot& hot = region.hot(slot);
    hot.epoch.store(n.epoch, std::memory_order_relaxed);  // the registry mutex is held
    for (size_t r = 0; r < kMaxResources; ++r) {
      int64_t want = n.in_use ? counts[size_t{slot} * kMaxResources + r] : 0;
      int64_t had = hot.sessions[r].exchange(want, std::memory_order_relaxed);
      out.drift += std::llabs(had - want);
    }
  }
  for (size_t a = 0; a < kMaxApps; ++a) h.apps[a].counters.in_flight.store(in_flight[a], std::memory_order_relaxed);
  for (size_t s = 0; s < kShards; ++s) {
    LockedShard<AffinityEntry> sh(region, h.affinity_shards[s]);
    out.affinities += sh.Rebuild([](const AffinityEntry& e) { return e.app < kMaxApps; });
    sh.ForEach([&](AffinityEntry& e) {
      auto it = refs.find(e.claim);
      int64_t held = it == refs.end() ? 0 : it->second;
      if (held > 0) {
        e.refs = held;
        e.expires_ms = std::numeric_limits<int64_t>::max();
      } else if (e.refs > 0 || e.expires_ms == std::numeric_limits<int64_t>::max()) {
        // Its last sessions died with their process: the grace time starts now.
        e.refs = 0;
        e.expires_ms = now_ms + e.grace_ms;
      }
    });
  }
  h.affinity_count.store(out.affinities, std::memory_order_relaxed);
  h.recounted_drift.fetch_add(out.drift, std::memory_order_relaxed);
  h.repair_needed.store(0, std::memory_order_relaxed);
  return out;
}

}  // namespace approute::internal
