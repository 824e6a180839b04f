// node_table.h — the node registry: which nodes exist, their static fields,
// admin state, per-resource counts and capacities, load figures and leases;
// and the per-process snapshot of the static fields that routing reads.
//
// Owns: Header::registry_mu, the NodeRecord and NodeHot arrays, the resource
// and metric name tables, Header::node_generation.
// Locking: static fields change under the registry mutex (the *Locked
// methods expect it held) and bump node_generation; admin state, counts,
// load and lease are atomics. Capacity is reserved with a compare-and-swap
// on the node's counter, so no node ever exceeds it across processes.
// Crash: a node record is marked in use only once written; a process killed
// half-way through an update leaves a record with some fields new and some
// old (never half a string: they are written bounded and NUL-terminated),
// and the next registry lock bumps the generation so snapshots are rebuilt
// and re-syncs every hot entry's epoch from its record. Counts are repaired
// by recovery.h.
#ifndef APPROUTE_SRC_STATE_NODE_TABLE_H_
#define APPROUTE_SRC_STATE_NODE_TABLE_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "approute/config.h"
#include "approute/strategy.h"
#include "approute/types.h"
#include "state/region.h"

namespace approute::internal {

// The static fields of one node, copied out of the region.
struct NodeView {
  uint32_t slot = 0;
  uint32_t epoch = 0;
  std::string id, uri, pool;
  int32_t weight = 1;
  int32_t priority = 0;
  bool from_config = false;
  int64_t capacity[kMaxResources];
  std::map<std::string, std::string> attrs;
};

// One pool's members laid out for a placement's scan (router.cc
// Candidates): each member's candidate with its static fields filled in
// (slot, id, uri, weight, priority, attrs; the views point into the
// snapshot's NodeViews), its epoch, and its capacities, one row per resource.
struct PoolView {
  std::vector<Candidate> proto;   // by slot order; sessions and capacity left for the scan
  std::vector<uint32_t> slot;     // slot[i] == proto[i].slot, packed for the scan
  std::vector<uint32_t> epoch;    // epoch[i]: the incarnation proto[i] describes
  std::vector<int64_t> capacity;  // [r * proto.size() + i]: member i's capacity for resource r, r < kMaxResources

  const int64_t* CapacityRow(uint32_t res) const { return capacity.data() + size_t{res} * proto.size(); }
};

// Every node's static fields at one node_generation. Not copyable: the pool
// views point into its own node views.
struct Snapshot {
  Snapshot() = default;
  Snapshot(const Snapshot&) = delete;
  Snapshot& operator=(const Snapshot&) = delete;

  uint64_t generation = 0;
  std::vector<NodeView> nodes;         // by slot order
  std::vector<int32_t> index_of_slot;  // slot -> index in nodes, -1 when free
  absl::flat_hash_map<std::string, size_t> by_id;
  absl::flat_hash_map<std::string, std::vector<size_t>> by_pool;
  absl::flat_hash_map<std::string, PoolView> pools;  // the same pools, laid out for a scan
  std::vector<std::string> resources;
  std::vector<std::string> metrics;

  // The view of `slot` if it still holds the node incarnation `epoch`.
  const NodeView* At(uint32_t slot, uint32_t epoch) const {
    if (slot >= index_of_slot.size() || index_of_slot[slot] < 0) return nullptr;
    const NodeView& v = nodes[static_cast<size_t>(index_of_slot[slot])];
    return v.epoch == epoch ? &v : nullptr;
  }
  const PoolView* Pool(const std::string& pool) const {
    auto it = pools.find(pool);
    return it == pools.end() ? nullptr : &it->second;
  }
  const NodeView* Find(std::string_view id) const {
    auto it = by_id.find(std::string(id));
    return it == by_id.end() ? nullptr : &nodes[it->second];
  }
};

class NodeTable {
 public:
  explicit NodeTable(const Region& region) : region_(region) {}

  Header& H() const { return region_.header(); }
  NodeRecord& node(uint32_t slot) const { return region_.node(slot); }
  NodeHot& hot(uint32_t slot) const { return region_.hot(slot); }
  uint32_t max_nodes() const { return region_.max_nodes(); }

  // ---- registry (registry mutex held) ----
  // Index of resource `name`, registering it when `create`; kNil if absent or full.
  uint32_t ResourceIndexLocked(std::string_view name, bool create);
  // How many of `names` are not registered yet.
  size_t NewResources(const std::vector<std::string>& names);
  uint32_t FindLocked(std::string_view id) const;
  uint32_t FreeSlotLocked() const;
  // Writes `spec` into slot `s`; `fresh` starts a new incarnation (epoch+1,
  // counts, load and health reset).
  void WriteLocked(uint32_t s, const NodeSpec& spec, bool fresh, bool from_config);
  // Frees slot `s`: its sessions' counts vanish with it (their epoch is stale).
  void FreeLocked(uint32_t s);
  // Metric name indexes for `names`, registering new ones; ResourceExhausted,
  // with nothing registered, when they do not fit.
  absl::StatusOr<std::vector<uint32_t>> MetricIndexesLocked(const std::vector<std::string>& names);
  // The counts of resources that `load` names, as the node's own (usage.h),
  // reported at `at` (unix ms), with approute's count there now as the base.
  void WriteUsageLocked(uint32_t s, const std::map<std::string, double>& load, int64_t at);
  // Replaces one kind of figures (load or quality) of slot `s`; load figures
  // that name a resource are also the node's own counts (WriteUsageLocked).
  absl::Status WriteMetricsLocked(uint32_t s, const std::map<std::string, double>& metrics, bool quality, int64_t now);
  // Applies the configuration's nodes: removes config nodes that are gone,
  // updates the rest in place (keeping counts), adds new ones. Checks first;
  // nothing changes on error.
  absl::Status ApplyConfigLocked(const Config& cfg);
  void BumpGeneration() { H().node_generation.fetch_add(1, std::memory_order_release); }

  // ---- API operations (take the registry mutex) ----
  absl::Status Add(const NodeSpec& spec);
  absl::Status Update(const NodeSpec& spec);
  absl::Status Remove(std::string_view id);
  absl::Status ReportLoad(std::string_view id, const std::map<std::string, double>& metrics, int64_t now);
  // Checks metric names ([A-Za-z0-9_.]{1,31}) and values (finite).
  static absl::Status CheckMetrics(const std::map<std::string, double>& metrics, std::string_view what);
  // Removes nodes that joined by status report once their lease has lapsed
  // and their last session has ended.
  void RemoveLapsed(int64_t now);

  // ---- counts and leases (atomics, no lock) ----
  // Takes one unit of resource `res` if the count stays within `cap` (-1 = unlimited).
  static bool TryReserve(NodeHot& n, uint32_t res, int64_t cap);
  // TryReserve's test without the reservation: one more unit of `res` stays
  // within `cap` (-1 = unlimited) now.
  static bool HasRoom(const NodeHot& n, uint32_t res, int64_t cap) {
    return HasRoom(n.sessions[res].load(std::memory_order_relaxed), cap);
  }
  // The same test for a count read elsewhere (a deployment's, with cluster:).
  static bool HasRoom(int64_t count, int64_t cap) { return cap < 0 || count < cap; }
  // Gives one back, unless the slot holds another incarnation now.
  static void Release(NodeHot& n, uint32_t epoch, uint32_t res);
  static bool LeaseExpired(const NodeHot& n, int64_t now) {
    int64_t lease = n.lease_expires_ms.load(std::memory_order_relaxed);
    return lease != 0 && lease <= now;
  }

  // ---- views ----
  // A fresh snapshot of every node's static fields (takes the registry mutex).
  std::shared_ptr<Snapshot> BuildSnapshot() const;
  // What the API shows of one node now.
  NodeStatus StatusOf(const Snapshot& snap, const NodeView& v, int64_t now) const;

 private:
  const Region& region_;
};

// Sets every hot entry's epoch to its record's (registry mutex held): after
// a holder of the mutex died between writing the two. `h` is the header at
// the region's base.
void ResyncHotEpochs(Header& h);

// Locks the registry; if its previous holder died inside, re-syncs the hot
// entries' epochs and bumps the generations so every process rebuilds its
// snapshot and policies.
class RegistryLock {
 public:
  explicit RegistryLock(Header& h) : guard_(h.registry_mu) {
    if (guard_.owner_died()) {
      ResyncHotEpochs(h);
      h.node_generation.fetch_add(1, std::memory_order_release);
      h.config_generation.fetch_add(1, std::memory_order_release);
    }
  }

 private:
  LockGuard guard_;
};

}  // namespace approute::internal

#endif  // APPROUTE_SRC_STATE_NODE_TABLE_H_
