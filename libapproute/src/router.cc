// The router: routing flow (DESIGN.md section 5) over the state region.
//
// Hot path: Route() reads a per-process snapshot of the nodes' static fields
// (rebuilt only when the region's node generation changes) and the nodes'
// live atomics; it takes at most one table lock at a time: an affinity shard,
// then a session shard. Capacity is reserved with a compare-and-swap on the
// node's counter, so no node ever holds more sessions than its capacity, even
// when many processes route at once.
#include "approute/router.h"

#include <pthread.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <set>
#include <mutex>
#include <random>

#include "absl/container/flat_hash_map.h"
#include "absl/container/inlined_vector.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "net.h"
#include "region.h"
#include "report.h"
#include "str_util.h"

namespace approute {

using internal::Cat;
using internal::Join;

using internal::AffinityEntry;
using internal::GetFixed;
using internal::Header;
using internal::kNil;
using internal::kShards;
using internal::LockGuard;
using internal::NodeRecord;
using internal::Region;
using internal::SessionEntry;
using internal::SetFixed;
using internal::ShardHeader;

std::string_view AdminStateName(AdminState s) {
  switch (s) {
    case AdminState::kActive: return "active";
    case AdminState::kDraining: return "draining";
    case AdminState::kDisabled: return "disabled";
  }
  return "unknown";
}

std::string_view HealthName(Health h) {
  switch (h) {
    case Health::kUp: return "up";
    case Health::kSuspect: return "suspect";
    case Health::kDown: return "down";
  }
  return "unknown";
}

absl::StatusOr<AdminState> ParseAdminState(std::string_view s) {
  if (s == "active") return AdminState::kActive;
  if (s == "draining") return AdminState::kDraining;
  if (s == "disabled") return AdminState::kDisabled;
  return absl::InvalidArgumentError(
      Cat("unknown admin state \"", s, "\" (expected active, draining or disabled)"));
}

absl::StatusOr<Health> ParseHealth(std::string_view s) {
  if (s == "up") return Health::kUp;
  if (s == "suspect") return Health::kSuspect;
  if (s == "down") return Health::kDown;
  return absl::InvalidArgumentError(
      Cat("unknown health \"", s, "\" (expected up, suspect or down)"));
}

namespace {

constexpr int64_t kNever = std::numeric_limits<int64_t>::max();
constexpr int64_t kSweepIntervalMs = 100;  // one shard of each table per interval, router-wide

int64_t RealNowMs() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME_COARSE, &ts);  // ms resolution is plenty for expiry, at a fraction of the cost
  return int64_t{ts.tv_sec} * 1000 + ts.tv_nsec / 1000000;
}

// Per-thread random numbers, reseeded in a child after fork() so that forked
// workers do not all draw the same sequence.
std::atomic<uint64_t> g_fork_generation{0};
void OnFork() { g_fork_generation.fetch_add(1, std::memory_order_relaxed); }
uint64_t ThreadRandom() {
  static std::once_flag once;
  std::call_once(once, [] { pthread_atfork(nullptr, nullptr, OnFork); });
  thread_local std::mt19937_64 gen{std::random_device{}()};
  thread_local uint64_t seen = 0;
  uint64_t g = g_fork_generation.load(std::memory_order_relaxed);
  if (g != seen) {
    seen = g;
    gen.seed(std::random_device{}() ^ (static_cast<uint64_t>(getpid()) << 32));
  }
  return gen();
}

uint64_t HashCallId(std::string_view call_id) { return XXH3_64bits(call_id.data(), call_id.size()); }
uint64_t HashAffinity(uint32_t app, std::string_view key) {
  return XXH3_64bits_withSeed(key.data(), key.size(), 0x9E3779B97F4A7C15ULL + app);
}
size_t ShardOf(uint64_t hash) { return static_cast<size_t>(hash >> 60) & (kShards - 1); }

// One shard of a chained hash table in the region. Caller holds the shard's mutex.
template <typename Entry>
class Shard {
 public:
  Shard(const Region& region, ShardHeader& h)
      : h_(h),
        entries_(region.at<Entry>(h.entries_off)),
        buckets_(region.at<uint32_t>(h.buckets_off)) {}

  ShardHeader& header() { return h_; }
  Entry& at(uint32_t i) { return entries_[i]; }
  uint32_t* Head(uint64_t hash) { return &buckets_[hash & (h_.nbuckets - 1)]; }

  // Finds the entry satisfying `match` in hash's chain; returns the link that
  // points to it (for Unlink), or nullptr.
  template <typename Match>
  uint32_t* Find(uint64_t hash, Match match) {
    for (uint32_t* link = Head(hash); *link != kNil; link = &entries_[*link].next) {
      Entry& e = entries_[*link];
      if (e.hash == hash && match(e)) return link;
    }
    return nullptr;
  }

  // Takes a free entry and links it at the head of hash's chain; kNil if full.
  uint32_t Insert(uint64_t hash) {
    uint32_t i = h_.free_head;
    if (i == kNil) return kNil;
    Entry& e = entries_[i];
    h_.free_head = e.next;
    std::memset(static_cast<void*>(&e), 0, sizeof(Entry));
    e.hash = hash;
    e.in_use = 1;
    uint32_t* head = Head(hash);
    e.next = *head;
    *head = i;
    ++h_.count;
    return i;
  }

  void Unlink(uint32_t* link) {
    uint32_t i = *link;
    Entry& e = entries_[i];
    *link = e.next;
    e.in_use = 0;
    e.next = h_.free_head;
    h_.free_head = i;
    --h_.count;
  }

  // Unlinks every entry for which `dead(e)` holds, calling `take(e)` first.
  template <typename Dead, typename Take>
  void RemoveIf(Dead dead, Take take) {
    for (uint32_t b = 0; b < h_.nbuckets; ++b) {
      uint32_t* link = &buckets_[b];
      while (*link != kNil) {
        Entry& e = entries_[*link];
        if (dead(e)) {
          take(e);
          Unlink(link);
        } else {
          link = &e.next;
        }
      }
    }
  }

 private:
  ShardHeader& h_;
  Entry* entries_;
  uint32_t* buckets_;
};

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

struct Snapshot {
  uint64_t generation = 0;
  std::vector<NodeView> nodes;  // by slot order
  std::vector<int32_t> index_of_slot;  // slot -> index in nodes, -1 when free
  absl::flat_hash_map<std::string, size_t> by_id;

  // The view of `slot` if it still holds the node incarnation `epoch`.
  const NodeView* At(uint32_t slot, uint32_t epoch) const {
    if (slot >= index_of_slot.size() || index_of_slot[slot] < 0) return nullptr;
    const NodeView& v = nodes[static_cast<size_t>(index_of_slot[slot])];
    return v.epoch == epoch ? &v : nullptr;
  }
  absl::flat_hash_map<std::string, std::vector<size_t>> by_pool;
  std::vector<std::string> resources;
  std::vector<std::string> metrics;
};

struct Policy {
  AppConfig config;
  HealthConfig health;  // router-wide, copied here for the hot path
  uint32_t app_slot = 0;
  uint32_t resource = 0;
  std::unique_ptr<Strategy> strategy;
  bool IsRetryCode(int code) const {
    return std::find(config.retry_codes.begin(), config.retry_codes.end(), code) !=
           config.retry_codes.end();
  }
  bool IsFullCode(int code) const {
    return std::find(config.full_codes.begin(), config.full_codes.end(), code) !=
           config.full_codes.end();
  }
};

struct Policies {
  uint64_t generation = 0;
  HealthConfig health;
  StatusConfig status;
  internal::NetList sources;  // status.allow_sources
  internal::NetList uris;     // status.allow_uris (or allow_sources)
  absl::flat_hash_map<std::string, std::shared_ptr<Policy>> by_name;
  std::vector<std::shared_ptr<Policy>> by_slot = std::vector<std::shared_ptr<Policy>>(kMaxApps);
};

class SharedStrategyContext final : public StrategyContext {
 public:
  SharedStrategyContext(const Region& region, uint32_t app, const Snapshot& snap, int64_t now)
      : region_(region), app_(app), snap_(snap), now_(now) {}
  double Load(const Candidate& c, std::string_view metric) override {
    const NodeRecord& n = region_.node(c.slot);
    uint64_t mask = n.load_mask.load(std::memory_order_relaxed);
    for (size_t m = 0; m < snap_.metrics.size(); ++m) {
      if (snap_.metrics[m] == metric) {
        return (mask & (uint64_t{1} << m)) ? n.load[m].load(std::memory_order_relaxed)
                                            : std::numeric_limits<double>::quiet_NaN();
      }
    }
    return std::numeric_limits<double>::quiet_NaN();
  }
  NodeFeedback Feedback(const Candidate& c) override {
    const NodeRecord& n = region_.node(c.slot);
    NodeFeedback f;
    f.latency_ewma_ms = n.latency_ewma_ms.load(std::memory_order_relaxed);
    f.error_rate = n.error_ewma.load(std::memory_order_relaxed);
    f.load_updated_ms = n.load_updated_ms.load(std::memory_order_relaxed);
    f.first_report_ms = n.first_report_ms.load(std::memory_order_relaxed);
    return f;
  }
  int64_t NowMs() override { return now_; }
  uint64_t NextTicket() override {
    return region_.header().apps[app_].ticket.fetch_add(1, std::memory_order_relaxed);
  }
  void WithSharedSlots(const std::function<void(absl::Span<int64_t>)>& fn) override {
    LockGuard g(region_.header().apps[app_].mu);
    fn(absl::Span<int64_t>(region_.app_slots(app_), region_.max_nodes()));
  }
  uint64_t Random() override {
    if (seeded == nullptr) return ThreadRandom();
    // SplitMix64 over one per-router counter: reproducible for a seeded router.
    uint64_t z = seeded->fetch_add(0x9E3779B97F4A7C15ULL, std::memory_order_relaxed) + 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }
  NodeStatus Describe(const Candidate& c) override;  // after Router::Impl

  // Set by Place(): the router (for Describe) and its seeded sequence, if any.
  const Router::Impl* router = nullptr;
  std::atomic<uint64_t>* seeded = nullptr;

 private:
  const Region& region_;
  uint32_t app_;
  const Snapshot& snap_;
  int64_t now_;
};

bool TryReserve(NodeRecord& n, uint32_t res, int64_t cap) {
  std::atomic<int64_t>& c = n.sessions[res];
  if (cap < 0) {
    c.fetch_add(1, std::memory_order_relaxed);
    return true;
  }
  int64_t cur = c.load(std::memory_order_relaxed);
  while (cur < cap) {
    if (c.compare_exchange_weak(cur, cur + 1, std::memory_order_relaxed)) return true;
  }
  return false;
}

void ReleaseCount(NodeRecord& n, uint32_t epoch, uint32_t res) {
  if (n.in_use == 0 || n.epoch != epoch) return;  // node removed since: its counts went with it
  std::atomic<int64_t>& c = n.sessions[res];
  int64_t cur = c.load(std::memory_order_relaxed);
  while (cur > 0 && !c.compare_exchange_weak(cur, cur - 1, std::memory_order_relaxed)) {
  }
}

// What Place() decided.
struct Placement {
  Decision decision;
  uint32_t slot = kNil;
  uint32_t epoch = 0;
  uint64_t claim = 0;
};

using SlotList = absl::InlinedVector<uint32_t, 8>;

bool Contains(const SlotList& l, uint32_t s) { return std::find(l.begin(), l.end(), s) != l.end(); }

}  // namespace

class Router::Impl {
 public:
  Impl(std::unique_ptr<Region> region, std::function<int64_t()> now)
      : region_(std::move(region)), now_(now ? std::move(now) : RealNowMs), id_(NextRouterId()) {}

  static uint64_t NextRouterId() {
    static std::atomic<uint64_t> next{1};
    return next.fetch_add(1, std::memory_order_relaxed);
  }

  Header& H() const { return region_->header(); }

  // ---- configuration -------------------------------------------------------

  // Registers resource `name` (registry lock held); kNil if the table is full.
  uint32_t ResourceIndexLocked(std::string_view name, bool create) {
    Header& h = H();
    for (uint32_t i = 0; i < h.n_resources; ++i) {
      if (GetFixed(h.resource_names[i]) == name) return i;
    }
    if (!create || h.n_resources >= kMaxResources) return kNil;
    SetFixed(h.resource_names[h.n_resources], name);
    return h.n_resources++;
  }

  uint32_t FindNodeLocked(std::string_view id) const {
    for (uint32_t s = 0; s < region_->max_nodes(); ++s) {
      NodeRecord& n = region_->node(s);
      if (n.in_use && GetFixed(n.id) == id) return s;
    }
    return kNil;
  }

  uint32_t FreeNodeSlotLocked() const {
    for (uint32_t s = 0; s < region_->max_nodes(); ++s) {
      if (!region_->node(s).in_use) return s;
    }
    return kNil;
  }

  // Writes the static fields of `spec` into slot `s` (registry lock held).
  void WriteNodeLocked(uint32_t s, const NodeSpec& spec, bool fresh, bool from_config) {
    NodeRecord& n = region_->node(s);
    if (fresh) {
      uint32_t epoch = n.epoch + 1;
      for (auto& c : n.sessions) c.store(0, std::memory_order_relaxed);
      for (auto& l : n.load) l.store(0, std::memory_order_relaxed);
      n.load_mask.store(0);
      n.quality_mask.store(0);
      n.load_updated_ms.store(0);
      n.routed_total.store(0);
      n.health.store(static_cast<uint32_t>(Health::kUp));
      n.from_report = 0;
      n.etag[0] = 0;
      n.last_seq = 0;
      n.lease_expires_ms.store(0);
      n.first_report_ms.store(0);
      n.probe_failures.store(0);
      n.probe_successes.store(0);
      n.consecutive_failures.store(0);
      n.ejections.store(0);
      n.ejected_until_ms.store(0);
      n.up_since_ms.store(0);
      n.latency_ewma_ms.store(0);
      n.error_ewma.store(0);
      n.epoch = epoch;
    }
    SetFixed(n.id, spec.id);
    SetFixed(n.uri, spec.uri);
    SetFixed(n.pool, spec.pool);
    n.weight = spec.weight;
    n.priority = spec.priority;
    n.from_config = from_config ? 1 : 0;
    for (auto& c : n.capacity) c = -1;
    for (const auto& [r, v] : spec.capacity) n.capacity[ResourceIndexLocked(r, true)] = v;
    n.n_attrs = 0;
    for (const auto& [k, v] : spec.attrs) {
      SetFixed(n.attrs[n.n_attrs].key, k);
      SetFixed(n.attrs[n.n_attrs].value, v);
      ++n.n_attrs;
    }
    n.admin.store(static_cast<uint32_t>(spec.state), std::memory_order_relaxed);
    n.in_use = 1;
  }

  void FreeNodeLocked(uint32_t s) {
    NodeRecord& n = region_->node(s);
    n.in_use = 0;
    ++n.epoch;
    for (auto& c : n.sessions) c.store(0, std::memory_order_relaxed);
  }

  size_t NewResources(const std::vector<std::string>& names) {
    size_t extra = 0;
    for (const auto& r : names) extra += ResourceIndexLocked(r, false) == kNil ? 1 : 0;
    return extra;
  }

  absl::Status Apply(const Config& cfg) {
    Header& h = H();
    LockGuard g(h.registry_mu);
    // Check everything first: nothing changes on error.
    std::vector<std::string> resources;
    for (const auto& n : cfg.nodes)
      for (const auto& [r, v] : n.capacity) resources.push_back(r);
    for (const auto& [name, app] : cfg.apps) resources.push_back(app.resource);
    std::sort(resources.begin(), resources.end());
    resources.erase(std::unique(resources.begin(), resources.end()), resources.end());
    if (h.n_resources + NewResources(resources) > kMaxResources) {
      return absl::ResourceExhaustedError(Cat(
          "the configuration names resources the state region has no room for (at most ",
          kMaxResources, " distinct resource names over the region's life)"));
    }
    std::set<std::string> wanted;
    size_t new_nodes = 0;
    for (const auto& n : cfg.nodes) {
      wanted.insert(n.id);
      uint32_t s = FindNodeLocked(n.id);
      if (s == kNil) ++new_nodes;
    }
    size_t freed = 0, free_slots = 0;
    for (uint32_t s = 0; s < region_->max_nodes(); ++s) {
      NodeRecord& n = region_->node(s);
      if (!n.in_use) ++free_slots;
      else if (n.from_config && !wanted.count(std::string(GetFixed(n.id)))) ++freed;
    }
    if (new_nodes > free_slots + freed) {
      return absl::ResourceExhaustedError(Cat("the configuration adds ", new_nodes,
                                                       " nodes but the node table has room for ",
                                                       free_slots + freed, " (state.max_nodes = ",
                                                       h.max_nodes, ")"));
    }
    // Apply: remove config nodes that are gone, update the rest in place, add new ones.
    ResourceIndexLocked(kDefaultResource, true);
    for (const auto& r : resources) ResourceIndexLocked(r, true);
    for (uint32_t s = 0; s < region_->max_nodes(); ++s) {
      NodeRecord& n = region_->node(s);
      if (n.in_use && n.from_config && !wanted.count(std::string(GetFixed(n.id)))) FreeNodeLocked(s);
    }
    for (const auto& spec : cfg.nodes) {
      uint32_t s = FindNodeLocked(spec.id);
      bool fresh = s == kNil;
      if (fresh) s = FreeNodeSlotLocked();
      WriteNodeLocked(s, spec, fresh, true);
    }
    // App slots: free those of apps no longer configured, then assign.
    for (uint32_t a = 0; a < kMaxApps; ++a) {
      if (h.apps[a].in_use && !cfg.apps.count(std::string(GetFixed(h.apps[a].name)))) {
        h.apps[a].in_use = 0;
      }
    }
    for (const auto& [name, app] : cfg.apps) {
      if (AppSlotLocked(name) != kNil) continue;
      for (uint32_t a = 0; a < kMaxApps; ++a) {
        if (!h.apps[a].in_use) {
          SetFixed(h.apps[a].name, name);
          h.apps[a].in_use = 1;
          h.apps[a].ticket.store(0);
          std::fill_n(region_->app_slots(a), region_->max_nodes(), 0);
          break;
        }
      }
    }
    std::memcpy(h.config, cfg.text.data(), cfg.text.size());
    h.config_len = static_cast<uint32_t>(cfg.text.size());
    h.node_generation.fetch_add(1, std::memory_order_release);
    h.config_generation.fetch_add(1, std::memory_order_release);
    return absl::OkStatus();
  }

  uint32_t AppSlotLocked(std::string_view name) const {
    for (uint32_t a = 0; a < kMaxApps; ++a) {
      if (H().apps[a].in_use && GetFixed(H().apps[a].name) == name) return a;
    }
    return kNil;
  }

  // ---- per-process views ---------------------------------------------------

  // Per-thread copies of the current snapshot and policies, so the hot path
  // takes no lock and touches no shared reference count while nothing changed.
  struct ThreadCache {
    uint64_t router = 0;
    std::shared_ptr<const Snapshot> snapshot;
    std::shared_ptr<const Policies> policies;
  };
  static ThreadCache& Cache() {
    thread_local ThreadCache cache;
    return cache;
  }

  const Snapshot& CachedSnapshot() {
    ThreadCache& c = Cache();
    uint64_t gen = H().node_generation.load(std::memory_order_acquire);
    if (c.router != id_) c = ThreadCache{id_, nullptr, nullptr};
    if (!c.snapshot || c.snapshot->generation != gen) c.snapshot = GetSnapshot();
    return *c.snapshot;
  }

  absl::StatusOr<const Policies*> CachedPolicies() {
    ThreadCache& c = Cache();
    uint64_t gen = H().config_generation.load(std::memory_order_acquire);
    if (c.router != id_) c = ThreadCache{id_, nullptr, nullptr};
    if (!c.policies || c.policies->generation != gen) {
      absl::StatusOr<std::shared_ptr<const Policies>> p = GetPolicies();
      if (!p.ok()) return p.status();
      c.policies = *std::move(p);
    }
    return c.policies.get();
  }

  std::shared_ptr<const Snapshot> GetSnapshot() {
    uint64_t gen = H().node_generation.load(std::memory_order_acquire);
    {
      absl::ReaderMutexLock l(&mu_);
      if (snapshot_ && snapshot_->generation == gen) return snapshot_;
    }
    auto snap = std::make_shared<Snapshot>();
    {
      LockGuard g(H().registry_mu);
      snap->generation = H().node_generation.load(std::memory_order_acquire);
      for (uint32_t i = 0; i < H().n_resources; ++i) snap->resources.emplace_back(GetFixed(H().resource_names[i]));
      for (uint32_t i = 0; i < H().n_metrics; ++i) snap->metrics.emplace_back(GetFixed(H().metric_names[i]));
      snap->index_of_slot.assign(region_->max_nodes(), -1);
      for (uint32_t s = 0; s < region_->max_nodes(); ++s) {
        const NodeRecord& n = region_->node(s);
        if (!n.in_use) continue;
        NodeView v;
        v.slot = s;
        v.epoch = n.epoch;
        v.id = std::string(GetFixed(n.id));
        v.uri = std::string(GetFixed(n.uri));
        v.pool = std::string(GetFixed(n.pool));
        v.weight = n.weight;
        v.priority = n.priority;
        v.from_config = n.from_config != 0;
        std::copy(std::begin(n.capacity), std::end(n.capacity), v.capacity);
        for (uint32_t a = 0; a < n.n_attrs; ++a) {
          v.attrs[std::string(GetFixed(n.attrs[a].key))] = std::string(GetFixed(n.attrs[a].value));
        }
        snap->index_of_slot[s] = static_cast<int32_t>(snap->nodes.size());
        snap->by_id[v.id] = snap->nodes.size();
        snap->by_pool[v.pool].push_back(snap->nodes.size());
        snap->nodes.push_back(std::move(v));
      }
    }
    absl::WriterMutexLock l(&mu_);
    if (!snapshot_ || snapshot_->generation < snap->generation) snapshot_ = std::move(snap);
    return snapshot_;
  }

  absl::StatusOr<std::shared_ptr<const Policies>> GetPolicies() {
    uint64_t gen = H().config_generation.load(std::memory_order_acquire);
    {
      absl::ReaderMutexLock l(&mu_);
      if (policies_ && policies_->generation == gen) return policies_;
    }
    std::string text;
    auto pol = std::make_shared<Policies>();
    {
      LockGuard g(H().registry_mu);
      pol->generation = H().config_generation.load(std::memory_order_acquire);
      text.assign(H().config, H().config_len);
    }
    absl::StatusOr<Config> cfg = ParseConfig(text, "<stored configuration>", resolver_.get());
    if (!cfg.ok()) return cfg.status();
    pol->health = cfg->health;
    pol->status = cfg->status;
    pol->sources = *internal::NetList::Parse(cfg->status.allow_sources);
    pol->uris = *internal::NetList::Parse(cfg->status.allow_uris.empty() ? cfg->status.allow_sources
                                                                         : cfg->status.allow_uris);
    std::vector<std::shared_ptr<Policy>> made;
    {
      LockGuard g(H().registry_mu);
      for (auto& [name, app] : cfg->apps) {
        auto p = std::make_shared<Policy>();
        p->app_slot = AppSlotLocked(name);
        p->resource = ResourceIndexLocked(app.resource, false);
        if (p->app_slot == kNil || p->resource == kNil) continue;  // a newer config is being applied
        p->config = app;
        p->health = cfg->health;
        made.push_back(std::move(p));
      }
    }
    // Strategies are built without the region's lock: a Python one imports code.
    for (auto& p : made) {
      if (std::unique_ptr<Strategy> ready = TakePrepared(text, p->config.name)) {
        p->strategy = std::move(ready);
      } else {
        absl::StatusOr<std::unique_ptr<Strategy>> st =
            MakeStrategyWith(resolver_.get(), p->config.strategy, p->config.strategy_params, false);
        if (!st.ok()) {
          return absl::Status(st.status().code(), Cat("apps.", p->config.name, ".strategy: ",
                                                      st.status().message()));
        }
        p->strategy = *std::move(st);
      }
      pol->by_slot[p->app_slot] = p;
      pol->by_name[p->config.name] = p;
    }
    std::shared_ptr<const Policies> old;  // dropped after the lock: strategies may need the GIL
    absl::WriterMutexLock l(&mu_);
    if (!policies_ || policies_->generation < pol->generation) {
      old = std::move(policies_);
      policies_ = pol;
    }
    return policies_;
  }

  // ---- strategies built while loading a configuration ----------------------

  // Builds every app's strategy of `cfg` (strict: an error rejects the
  // configuration) and keeps them for the first GetPolicies() of that text,
  // so each is constructed once.
  absl::Status Prepare(const Config& cfg, std::string_view source) {
    absl::flat_hash_map<std::string, std::unique_ptr<Strategy>> ready;
    for (const auto& [name, app] : cfg.apps) {
      absl::StatusOr<std::unique_ptr<Strategy>> st =
          MakeStrategyWith(resolver_.get(), app.strategy, app.strategy_params, true);
      if (!st.ok()) {
        return absl::InvalidArgumentError(
            Cat(source, ": apps.", name, ".strategy: ", st.status().message()));
      }
      ready[name] = *std::move(st);
    }
    absl::flat_hash_map<std::string, std::unique_ptr<Strategy>> old;
    absl::MutexLock l(&prepared_mu_);
    old.swap(prepared_);
    prepared_ = std::move(ready);
    prepared_text_ = cfg.text;
    return absl::OkStatus();
  }

  std::unique_ptr<Strategy> TakePrepared(const std::string& text, const std::string& app) {
    absl::MutexLock l(&prepared_mu_);
    if (text != prepared_text_) return nullptr;
    auto it = prepared_.find(app);
    if (it == prepared_.end()) return nullptr;
    std::unique_ptr<Strategy> s = std::move(it->second);
    prepared_.erase(it);
    return s;
  }

  void SetStrategyOptions(const RouterOptions& o) {
    resolver_ = o.strategies;
    seeded_ = o.random_seed != 0;
    rng_.store(o.random_seed, std::memory_order_relaxed);
  }
  StrategyResolver* resolver() const { return resolver_.get(); }

  // ---- routing -------------------------------------------------------------

  static absl::Status CheckCallId(std::string_view call_id) {
    if (call_id.empty()) return absl::InvalidArgumentError("call_id is empty");
    if (call_id.size() > kMaxCallIdLen) {
      return absl::InvalidArgumentError(Cat("call_id is ", call_id.size(),
                                                     " bytes long, at most ", kMaxCallIdLen, " are allowed"));
    }
    return absl::OkStatus();
  }

  Decision SessionDecision(const Snapshot& snap, const SessionEntry& e, const Policies& pol,
                           std::string reason) {
    Decision d;
    d.ok = true;
    d.reason = std::move(reason);
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

  static bool LeaseExpired(const NodeRecord& n, int64_t now) {
    int64_t lease = n.lease_expires_ms.load(std::memory_order_relaxed);
    return lease != 0 && lease <= now;
  }

  // True while outlier detection keeps the node out; the first check after
  // the ejection ends starts its slow start.
  static bool Ejected(NodeRecord& n, int64_t now) {
    int64_t until = n.ejected_until_ms.load(std::memory_order_relaxed);
    if (until == 0) return false;
    if (until > now) return true;
    if (n.ejected_until_ms.compare_exchange_strong(until, 0, std::memory_order_relaxed)) {
      n.up_since_ms.store(now, std::memory_order_relaxed);
    }
    return false;
  }

  bool UsableForAffinity(NodeRecord& n, uint32_t epoch, const Policy& p, const SlotList& avoid,
                         uint32_t slot, const Snapshot& snap, int64_t now) const {
    if (!n.in_use || n.epoch != epoch || Contains(avoid, slot)) return false;
    if (n.admin.load(std::memory_order_relaxed) == static_cast<uint32_t>(AdminState::kDisabled)) return false;
    if (n.health.load(std::memory_order_relaxed) == static_cast<uint32_t>(Health::kDown)) return false;
    if (LeaseExpired(n, now) || Ejected(n, now)) return false;
    const NodeView* v = snap.At(slot, epoch);
    return v != nullptr && v->pool == p.config.pool;
  }

  // Slow start: a node that came back within the window keeps a pick with
  // probability (time since it came back) / window, at least 5%.
  static bool InSlowStart(const NodeRecord& n, const HealthConfig& h, int64_t now) {
    if (h.slow_start_ms <= 0) return false;
    int64_t up = n.up_since_ms.load(std::memory_order_relaxed);
    if (up <= 0 || now - up >= h.slow_start_ms) return false;
    double share = std::max(0.05, static_cast<double>(now - up) / static_cast<double>(h.slow_start_ms));
    double u = static_cast<double>(ThreadRandom() >> 11) * (1.0 / 9007199254740992.0);
    return u >= share;
  }

  int64_t CapacityOf(const Snapshot& snap, uint32_t slot, uint32_t epoch, uint32_t res) const {
    const NodeView* v = snap.At(slot, epoch);
    return v ? v->capacity[res] : 0;
  }

  // Deletes affinity entries whose grace ran out from one chain (shard lock held).
  void PruneChain(Shard<AffinityEntry>& sh, uint64_t hash, int64_t now) {
    uint32_t* link = sh.Head(hash);
    while (*link != kNil) {
      AffinityEntry& e = sh.at(*link);
      if (e.refs <= 0 && e.expires_ms <= now) {
        sh.Unlink(link);
        H().affinity_count.fetch_sub(1, std::memory_order_relaxed);
      } else {
        link = &e.next;
      }
    }
  }

  // Picks a node for one placement: affinity first, then the strategy.
  absl::StatusOr<Placement> Place(const Policy& p, const Snapshot& snap, std::string_view call_id,
                                  std::string_view key,
                                  const std::map<std::string, std::string>& attrs,
                                  const SlotList& avoid, int attempt, int64_t now,
                                  const char* strategy_reason) {
    Placement out;
    out.decision.app = p.config.name;
    out.decision.attempt = attempt;
    const uint32_t res = p.resource;
    const bool use_aff = p.config.affinity && !key.empty();
    const uint64_t ah = use_aff ? HashAffinity(p.app_slot, key) : 0;
    ShardHeader* ash = use_aff ? &H().affinity_shards[ShardOf(ah)] : nullptr;
    auto match = [&](const AffinityEntry& e) { return e.app == p.app_slot && GetFixed(e.key) == key; };

    if (use_aff) {
      LockGuard g(ash->mu);
      Shard<AffinityEntry> sh(*region_, *ash);
      PruneChain(sh, ah, now);
      if (uint32_t* link = sh.Find(ah, match)) {
        AffinityEntry& e = sh.at(*link);
        NodeRecord& n = region_->node(e.node);
        if (UsableForAffinity(n, e.node_epoch, p, avoid, e.node, snap, now) &&
            TryReserve(n, res, CapacityOf(snap, e.node, e.node_epoch, res))) {
          ++e.refs;
          e.expires_ms = kNever;
          out.slot = e.node;
          out.epoch = e.node_epoch;
          out.claim = e.claim;
          out.decision.reason = "affinity";
        }
      }
    }

    if (out.slot == kNil) {
      thread_local std::vector<Candidate> cands;
      cands.clear();
      auto pit = snap.by_pool.find(p.config.pool);
      size_t n_pool = 0, n_disabled = 0, n_draining = 0, n_down = 0, n_avoid = 0, n_full = 0, n_suspect = 0;
      bool panic = false;
      if (pit != snap.by_pool.end() && p.health.panic_threshold > 0) {
        // Envoy's panic mode: when too little of the pool is healthy, health is
        // ignored and calls spread over every node rather than over none.
        size_t total = 0, healthy = 0;
        for (size_t i : pit->second) {
          NodeRecord& n = region_->node(snap.nodes[i].slot);
          if (!n.in_use || n.epoch != snap.nodes[i].epoch) continue;
          ++total;
          if (n.health.load(std::memory_order_relaxed) != static_cast<uint32_t>(Health::kDown) && !Ejected(n, now)) ++healthy;
        }
        panic = total > 0 && healthy * 100 < static_cast<size_t>(p.health.panic_threshold) * total;
      }
      if (pit != snap.by_pool.end()) {
        for (int tier = 0; tier < 2 && cands.empty(); ++tier) {
          n_pool = n_disabled = n_draining = n_down = n_avoid = n_full = n_suspect = 0;
          for (size_t i : pit->second) {
            const NodeView& v = snap.nodes[i];
            NodeRecord& n = region_->node(v.slot);
            ++n_pool;
            if (!n.in_use || n.epoch != v.epoch) continue;
            uint32_t admin = n.admin.load(std::memory_order_relaxed);
            uint32_t health = n.health.load(std::memory_order_relaxed);
            if (admin == static_cast<uint32_t>(AdminState::kDisabled) || LeaseExpired(n, now)) { ++n_disabled; continue; }
            if (admin == static_cast<uint32_t>(AdminState::kDraining)) { ++n_draining; continue; }
            if (!panic) {
              if (health == static_cast<uint32_t>(Health::kDown) || Ejected(n, now)) { ++n_down; continue; }
              if (health == static_cast<uint32_t>(Health::kSuspect) && tier == 0) { ++n_suspect; continue; }
            }
            if (Contains(avoid, v.slot)) { ++n_avoid; continue; }
            int64_t s = n.sessions[res].load(std::memory_order_relaxed);
            int64_t cap = v.capacity[res];
            if (cap >= 0 && s >= cap) { ++n_full; continue; }
            Candidate c;
            c.slot = v.slot;
            c.id = v.id;
            c.uri = v.uri;
            c.weight = v.weight;
            c.priority = v.priority;
            c.sessions = s;
            c.capacity = cap;
            c.attrs = &v.attrs;
            int64_t total = 0;
            for (uint32_t r = 0; r < snap.resources.size(); ++r) total += n.sessions[r].load(std::memory_order_relaxed);
            c.total_sessions = total;
            cands.push_back(c);
          }
          if (n_suspect == 0) break;
        }
      }
      SharedStrategyContext ctx(*region_, p.app_slot, snap, now);
      ctx.router = this;
      ctx.seeded = seeded_ ? &rng_ : nullptr;
      PickRequest pr{.app = p.config.name, .resource = p.config.resource, .call_id = call_id,
                     .key = key, .attrs = &attrs, .attempt = attempt};
      while (!cands.empty()) {
        absl::StatusOr<size_t> pick = p.strategy->Pick(pr, absl::MakeConstSpan(cands), ctx);
        if (!pick.ok() || *pick >= cands.size()) {
          out.decision.reason = "no_node";
          out.decision.detail = Cat("strategy ", p.config.strategy, " chose no node: ",
                                             pick.ok() ? "index out of range" : pick.status().message());
          return out;
        }
        const Candidate& c = cands[*pick];
        if (cands.size() > 1 && InSlowStart(region_->node(c.slot), p.health, now)) {
          cands.erase(cands.begin() + static_cast<std::ptrdiff_t>(*pick));
          continue;
        }
        if (TryReserve(region_->node(c.slot), res, c.capacity)) {
          out.slot = c.slot;
          out.epoch = snap.nodes[static_cast<size_t>(snap.index_of_slot[c.slot])].epoch;
          out.decision.reason = strategy_reason;
          break;
        }
        ++n_full;  // filled up by another process meanwhile
        cands.erase(cands.begin() + static_cast<std::ptrdiff_t>(*pick));
      }
      if (out.slot == kNil) {
        out.decision.reason = "no_node";
        if (n_pool == 0) {
          out.decision.detail = Cat("pool \"", p.config.pool, "\" has no nodes");
        } else {
          out.decision.detail = Cat(
              "no candidate in pool \"", p.config.pool, "\" (", n_pool, " nodes: ", n_disabled,
              " disabled, ", n_draining, " draining, ", n_down, " down, ", n_avoid,
              " excluded or tried, ", n_full, " full for \"", p.config.resource, "\")");
        }
        return out;
      }
      // Claim the key for the node just chosen, unless another process claimed
      // it meanwhile for a node we can use.
      if (use_aff) {
        LockGuard g(ash->mu);
        Shard<AffinityEntry> sh(*region_, *ash);
        uint32_t* link = sh.Find(ah, match);
        if (link != nullptr) {
          AffinityEntry& e = sh.at(*link);
          NodeRecord& n = region_->node(e.node);
          // Whether the key's node still serves the app at all, whatever this call avoids.
          bool holder_alive = UsableForAffinity(n, e.node_epoch, p, SlotList{}, e.node, snap, now);
          if (e.node == out.slot && e.node_epoch == out.epoch) {
            ++e.refs;
            e.expires_ms = kNever;
            out.claim = e.claim;
          } else if (holder_alive && (e.refs > 0 || e.expires_ms > now) && !Contains(avoid, e.node) &&
                     TryReserve(n, res, CapacityOf(snap, e.node, e.node_epoch, res))) {
            // Another process claimed the key meanwhile (or the claim is in its
            // grace time) for a node this call can use: join it, so one key
            // never spreads over two nodes.
            ReleaseCount(region_->node(out.slot), out.epoch, res);
            out.slot = e.node;
            out.epoch = e.node_epoch;
            ++e.refs;
            e.expires_ms = kNever;
            out.claim = e.claim;
            out.decision.reason = "affinity";
          } else if (holder_alive && e.refs > 0) {
            // The key's node is full, tried or excluded for this call and still
            // serves the key's other calls: this call goes elsewhere without
            // taking the key along.
          } else {
            // The key's node is gone, down or disabled, or its claim was only
            // in its grace time: the key moves to the node just chosen.
            Rebind(e, out, p, now);
          }
        } else {
          uint32_t i = sh.Insert(ah);
          if (i == kNil) {
            sh.RemoveIf([now](const AffinityEntry& e) { return e.refs <= 0 && e.expires_ms <= now; },
                        [this](const AffinityEntry&) { H().affinity_count.fetch_sub(1); });
            i = sh.Insert(ah);
          }
          if (i == kNil) {
            ReleaseCount(region_->node(out.slot), out.epoch, res);
            return absl::ResourceExhaustedError(Cat(
                "affinity table is full (state.max_affinities = ", H().max_affinities, ")"));
          }
          AffinityEntry& e = sh.at(i);
          e.app = p.app_slot;
          SetFixed(e.key, key);
          H().affinity_count.fetch_add(1, std::memory_order_relaxed);
          Rebind(e, out, p, now);
        }
      }
    }
    const NodeView& v = snap.nodes[static_cast<size_t>(snap.index_of_slot[out.slot])];
    out.decision.ok = true;
    out.decision.node_id = v.id;
    out.decision.uri = v.uri;
    return out;
  }

  void Rebind(AffinityEntry& e, Placement& out, const Policy& p, int64_t) {
    e.node = out.slot;
    e.node_epoch = out.epoch;
    e.claim = H().claim_seq.fetch_add(1, std::memory_order_relaxed);
    e.refs = 1;
    e.grace_ms = p.config.affinity_grace_ms;
    e.expires_ms = kNever;
    out.claim = e.claim;
  }

  // Drops one reference on claim `claim` of (app, key); `release` deletes the
  // claim outright when it still points at `node`.
  void DropClaim(uint32_t app, std::string_view key, uint64_t claim, bool release, int64_t now) {
    if (claim == 0) return;
    uint64_t ah = HashAffinity(app, key);
    ShardHeader& ash = H().affinity_shards[ShardOf(ah)];
    LockGuard g(ash.mu);
    Shard<AffinityEntry> sh(*region_, ash);
    uint32_t* link = sh.Find(ah, [&](const AffinityEntry& e) {
      return e.app == app && e.claim == claim && GetFixed(e.key) == key;
    });
    if (link == nullptr) return;  // rebound or released since
    AffinityEntry& e = sh.at(*link);
    if (e.refs > 0) --e.refs;
    if (release || (e.refs == 0 && e.grace_ms == 0)) {
      sh.Unlink(link);
      H().affinity_count.fetch_sub(1, std::memory_order_relaxed);
    } else if (e.refs == 0) {
      e.expires_ms = now + e.grace_ms;
    }
  }

  // Frees what a removed session held: its node's count and its claim.
  struct Held {
    uint32_t app, resource, node, epoch;
    uint64_t claim;
    std::string key;
  };
  static Held HeldBy(const SessionEntry& e) {
    return Held{e.app, e.resource, e.node, e.node_epoch, e.claim, std::string(GetFixed(e.key))};
  }
  void Release(const Held& h, int64_t now) {
    if (h.node != kNil) ReleaseCount(region_->node(h.node), h.epoch, h.resource);
    DropClaim(h.app, h.key, h.claim, false, now);
  }

  absl::StatusOr<Decision> Route(const RouteRequest& req) {
    if (absl::Status s = CheckCallId(req.call_id); !s.ok()) return s;
    if (req.key.size() > kMaxKeyLen) {
      return absl::InvalidArgumentError(Cat("key is ", req.key.size(), " bytes long, at most ",
                                                     kMaxKeyLen, " are allowed"));
    }
    if (req.exclude.size() > static_cast<size_t>(kMaxAttemptsLimit) / 2) {
      return absl::InvalidArgumentError(Cat("exclude lists ", req.exclude.size(),
                                                     " nodes, at most ", kMaxAttemptsLimit / 2, " are allowed"));
    }
    absl::StatusOr<const Policies*> pol = CachedPolicies();
    if (!pol.ok()) return pol.status();
    const Policy* p = nullptr;
    if (auto it = (*pol)->by_name.find(req.app); it != (*pol)->by_name.end()) {
      p = it->second.get();
    } else if (auto d = (*pol)->by_name.find("default"); d != (*pol)->by_name.end()) {
      p = d->second.get();
    } else {
      return absl::NotFoundError(Cat("unknown app \"", req.app,
                                     "\" and no \"default\" app is configured"));
    }
    const Snapshot* snap = &CachedSnapshot();
    const int64_t now = now_();
    MaybeSweep(now);
    const uint64_t ch = HashCallId(req.call_id);
    ShardHeader& ssh = H().session_shards[ShardOf(ch)];
    auto same_call = [&](const SessionEntry& e) { return GetFixed(e.call_id) == req.call_id; };
    SlotList avoid;
    for (const auto& id : req.exclude) {
      if (auto it = snap->by_id.find(id); it != snap->by_id.end()) avoid.push_back(snap->nodes[it->second].slot);
    }
    // A call already routed is found when its session is inserted below (the
    // rare case pays for an undone placement, the common case saves a lock).
    absl::StatusOr<Placement> pl = Place(*p, *snap, req.call_id, req.key, req.attrs, avoid, 1, now, "strategy");
    if (!pl.ok()) return pl.status();
    if (!pl->decision.ok) {
      LockGuard g(ssh.mu);
      Shard<SessionEntry> sh(*region_, ssh);
      if (uint32_t* link = sh.Find(ch, same_call); link && sh.at(*link).expires_ms > now) {
        return SessionDecision(*snap, sh.at(*link), **pol, "session");
      }
      return pl->decision;
    }
    Held mine{p->app_slot, p->resource, pl->slot, pl->epoch, pl->claim, req.key};
    absl::InlinedVector<Held, 1> expired;
    std::optional<Decision> duplicate;
    {
      LockGuard g(ssh.mu);
      Shard<SessionEntry> sh(*region_, ssh);
      if (uint32_t* link = sh.Find(ch, same_call)) {
        SessionEntry& e = sh.at(*link);
        if (e.expires_ms > now) {
          // Routed concurrently by another process: keep theirs, undo ours.
          duplicate = SessionDecision(*snap, e, **pol, "session");
        } else {
          expired.push_back(HeldBy(e));
          sh.Unlink(link);
          H().session_count.fetch_sub(1, std::memory_order_relaxed);
          H().expired_sessions.fetch_add(1, std::memory_order_relaxed);
        }
      }
      uint32_t i = duplicate ? kNil : sh.Insert(ch);
      if (i == kNil && !duplicate) {
        sh.RemoveIf([now](const SessionEntry& e) { return e.expires_ms <= now; },
                    [&](const SessionEntry& e) {
                      expired.push_back(HeldBy(e));
                      H().session_count.fetch_sub(1, std::memory_order_relaxed);
                      H().expired_sessions.fetch_add(1, std::memory_order_relaxed);
                    });
        i = sh.Insert(ch);
      }
      if (i != kNil) {
        SessionEntry& e = sh.at(i);
        SetFixed(e.call_id, req.call_id);
        SetFixed(e.key, mine.claim ? std::string_view(req.key) : std::string_view());
        e.app = p->app_slot;
        e.resource = p->resource;
        e.node = pl->slot;
        e.node_epoch = pl->epoch;
        e.claim = pl->claim;
        e.created_ms = now;
        e.expires_ms = now + p->config.session_lifetime_ms;
        e.attempt = 1;
        e.n_tried = 0;
        for (uint32_t s : avoid) e.tried[e.n_tried++] = s;
        H().session_count.fetch_add(1, std::memory_order_relaxed);
        region_->node(pl->slot).routed_total.fetch_add(1, std::memory_order_relaxed);
        mine.node = kNil;  // now owned by the session
      }
    }
    for (const Held& h : expired) Release(h, now);
    if (duplicate) {  // routed concurrently by another process: keep theirs
      Release(mine, now);
      return *duplicate;
    }
    if (mine.node != kNil) {
      Release(mine, now);
      return absl::ResourceExhaustedError(
          Cat("session table is full (state.max_sessions = ", H().max_sessions, ")"));
    }
    return pl->decision;
  }

  absl::StatusOr<Decision> Retry(std::string_view call_id, int code) {
    if (absl::Status s = CheckCallId(call_id); !s.ok()) return s;
    if (code < 100 || code > 699) {
      return absl::InvalidArgumentError(Cat("code ", code, " is not a SIP status code (100..699)"));
    }
    absl::StatusOr<std::shared_ptr<const Policies>> pol = GetPolicies();
    if (!pol.ok()) return pol.status();
    std::shared_ptr<const Snapshot> snap = GetSnapshot();
    const int64_t now = now_();
    const uint64_t ch = HashCallId(call_id);
    ShardHeader& ssh = H().session_shards[ShardOf(ch)];
    auto same_call = [&](const SessionEntry& e) { return GetFixed(e.call_id) == call_id; };
    std::shared_ptr<Policy> p;
    Held old{};
    SlotList avoid;
    std::string key;
    int attempt = 0;
    std::string why;
    {
      LockGuard g(ssh.mu);
      Shard<SessionEntry> sh(*region_, ssh);
      uint32_t* link = sh.Find(ch, same_call);
      if (link == nullptr || sh.at(*link).expires_ms <= now) {
        return absl::NotFoundError(Cat("no session for call_id \"", call_id, "\""));
      }
      SessionEntry& e = sh.at(*link);
      old = HeldBy(e);
      p = (*pol)->by_slot[e.app];
      key = old.key;
      attempt = e.attempt;
      if (!p) {
        why = "the call's app is no longer configured";
      } else if (!p->IsRetryCode(code)) {
        why = Cat("code ", code, " is not a retry code of app \"", p->config.name, "\"");
      } else if (e.attempt >= p->config.max_attempts) {
        why = Cat("max_attempts (", p->config.max_attempts, ") reached for app \"",
                           p->config.name, "\"");
      }
      if (!why.empty()) {
        sh.Unlink(link);
        H().session_count.fetch_sub(1, std::memory_order_relaxed);
      } else {
        if (e.node != kNil && e.n_tried < static_cast<uint32_t>(kMaxAttemptsLimit)) e.tried[e.n_tried++] = e.node;
        for (uint32_t i = 0; i < e.n_tried; ++i) avoid.push_back(e.tried[i]);
        e.node = kNil;
        e.claim = 0;
        e.attempt += 1;
        attempt = e.attempt;
      }
    }
    // Move the counts off the node that bounced, and its claim if it is full.
    if (old.node != kNil) ReleaseCount(region_->node(old.node), old.epoch, old.resource);
    DropClaim(old.app, old.key, old.claim, p && p->IsFullCode(code), now);
    if (!why.empty()) {
      Decision d;
      d.reason = "no_node";
      d.detail = why;
      d.attempt = attempt;
      if (p) d.app = p->config.name;
      return d;
    }
    absl::StatusOr<Placement> pl = Place(*p, *snap, call_id, key, {}, avoid, attempt, now, "retry");
    bool placed = pl.ok() && pl->decision.ok;
    {
      LockGuard g(ssh.mu);
      Shard<SessionEntry> sh(*region_, ssh);
      uint32_t* link = sh.Find(ch, same_call);
      if (link == nullptr) {
        // Ended while we were choosing: undo the new placement.
        if (placed) Release(Held{p->app_slot, p->resource, pl->slot, pl->epoch, pl->claim, key}, now);
        return absl::NotFoundError(Cat("call_id \"", call_id, "\" ended during retry"));
      }
      SessionEntry& e = sh.at(*link);
      if (placed) {
        e.node = pl->slot;
        e.node_epoch = pl->epoch;
        e.claim = pl->claim;
        SetFixed(e.key, pl->claim ? std::string_view(key) : std::string_view());
        region_->node(pl->slot).routed_total.fetch_add(1, std::memory_order_relaxed);
      } else {
        sh.Unlink(link);
        H().session_count.fetch_sub(1, std::memory_order_relaxed);
      }
    }
    if (!pl.ok()) return pl.status();
    return pl->decision;
  }

  absl::Status Confirm(std::string_view call_id) {
    if (absl::Status s = CheckCallId(call_id); !s.ok()) return s;
    const uint64_t ch = HashCallId(call_id);
    ShardHeader& ssh = H().session_shards[ShardOf(ch)];
    LockGuard g(ssh.mu);
    Shard<SessionEntry> sh(*region_, ssh);
    uint32_t* link = sh.Find(ch, [&](const SessionEntry& e) { return GetFixed(e.call_id) == call_id; });
    if (link == nullptr) return absl::NotFoundError(Cat("no session for call_id \"", call_id, "\""));
    sh.at(*link).confirmed = 1;
    return absl::OkStatus();
  }

  absl::Status End(std::string_view call_id) {
    if (absl::Status s = CheckCallId(call_id); !s.ok()) return s;
    const int64_t now = now_();
    const uint64_t ch = HashCallId(call_id);
    ShardHeader& ssh = H().session_shards[ShardOf(ch)];
    Held held;
    {
      LockGuard g(ssh.mu);
      Shard<SessionEntry> sh(*region_, ssh);
      uint32_t* link = sh.Find(ch, [&](const SessionEntry& e) { return GetFixed(e.call_id) == call_id; });
      if (link == nullptr) return absl::NotFoundError(Cat("no session for call_id \"", call_id, "\""));
      held = HeldBy(sh.at(*link));
      sh.Unlink(link);
      H().session_count.fetch_sub(1, std::memory_order_relaxed);
    }
    Release(held, now);
    return absl::OkStatus();
  }

  // ---- expiry --------------------------------------------------------------

  int64_t SweepShard(size_t s, int64_t now) {
    std::vector<Held> expired;
    {
      ShardHeader& ssh = H().session_shards[s];
      LockGuard g(ssh.mu);
      Shard<SessionEntry> sh(*region_, ssh);
      sh.RemoveIf([now](const SessionEntry& e) { return e.expires_ms <= now; },
                  [&](const SessionEntry& e) { expired.push_back(HeldBy(e)); });
    }
    H().session_count.fetch_sub(static_cast<int64_t>(expired.size()), std::memory_order_relaxed);
    H().expired_sessions.fetch_add(static_cast<int64_t>(expired.size()), std::memory_order_relaxed);
    for (const Held& h : expired) Release(h, now);
    {
      ShardHeader& ash = H().affinity_shards[s];
      LockGuard g(ash.mu);
      Shard<AffinityEntry> sh(*region_, ash);
      int64_t gone = 0;
      sh.RemoveIf([now](const AffinityEntry& e) { return e.refs <= 0 && e.expires_ms <= now; },
                  [&](const AffinityEntry&) { ++gone; });
      H().affinity_count.fetch_sub(gone, std::memory_order_relaxed);
    }
    return static_cast<int64_t>(expired.size());
  }

  // Sweeps one shard per kSweepIntervalMs across every process of the router.
  void MaybeSweep(int64_t now) {
    std::atomic<uint64_t>& last = H().sweep_cursor;  // (ms << 4) | next shard
    uint64_t cur = last.load(std::memory_order_relaxed);
    int64_t last_ms = static_cast<int64_t>(cur >> 4);
    if (now - last_ms < kSweepIntervalMs) return;
    size_t shard = cur & 15;
    uint64_t next = (static_cast<uint64_t>(now) << 4) | ((shard + 1) & 15);
    if (!last.compare_exchange_strong(cur, next, std::memory_order_relaxed)) return;
    SweepShard(shard, now);
    RemoveLapsedNodes(now);
  }

  int64_t Sweep() {
    int64_t now = now_();
    int64_t n = 0;
    for (size_t s = 0; s < kShards; ++s) n += SweepShard(s, now);
    RemoveLapsedNodes(now);
    return n;
  }

  // ---- registry ------------------------------------------------------------

  absl::Status AddNode(const NodeSpec& spec) {
    if (absl::Status s = ValidateNodeSpec(spec); !s.ok()) return s;
    LockGuard g(H().registry_mu);
    if (FindNodeLocked(spec.id) != kNil) {
      return absl::AlreadyExistsError(Cat("node \"", spec.id, "\" already exists"));
    }
    std::vector<std::string> res;
    for (const auto& [r, v] : spec.capacity) res.push_back(r);
    if (H().n_resources + NewResources(res) > kMaxResources) {
      return absl::ResourceExhaustedError(Cat("node \"", spec.id, "\" names more resources than the region has room for (",
                                                       kMaxResources, ")"));
    }
    uint32_t s = FreeNodeSlotLocked();
    if (s == kNil) {
      return absl::ResourceExhaustedError(
          Cat("node table is full (state.max_nodes = ", H().max_nodes, ")"));
    }
    WriteNodeLocked(s, spec, true, false);
    H().node_generation.fetch_add(1, std::memory_order_release);
    return absl::OkStatus();
  }

  absl::Status UpdateNode(const NodeSpec& spec) {
    if (absl::Status s = ValidateNodeSpec(spec); !s.ok()) return s;
    LockGuard g(H().registry_mu);
    uint32_t s = FindNodeLocked(spec.id);
    if (s == kNil) return absl::NotFoundError(Cat("no node \"", spec.id, "\""));
    std::vector<std::string> res;
    for (const auto& [r, v] : spec.capacity) res.push_back(r);
    if (H().n_resources + NewResources(res) > kMaxResources) {
      return absl::ResourceExhaustedError("node names more resources than the region has room for");
    }
    WriteNodeLocked(s, spec, false, region_->node(s).from_config != 0);
    H().node_generation.fetch_add(1, std::memory_order_release);
    return absl::OkStatus();
  }

  absl::Status RemoveNode(std::string_view id) {
    LockGuard g(H().registry_mu);
    uint32_t s = FindNodeLocked(id);
    if (s == kNil) return absl::NotFoundError(Cat("no node \"", id, "\""));
    FreeNodeLocked(s);
    H().node_generation.fetch_add(1, std::memory_order_release);
    return absl::OkStatus();
  }

  absl::StatusOr<NodeRecord*> Live(std::string_view id) {
    std::shared_ptr<const Snapshot> snap = GetSnapshot();
    auto it = snap->by_id.find(std::string(id));
    if (it == snap->by_id.end()) return absl::NotFoundError(Cat("no node \"", id, "\""));
    return &region_->node(snap->nodes[it->second].slot);
  }

  absl::Status SetState(std::string_view id, AdminState st) {
    absl::StatusOr<NodeRecord*> n = Live(id);
    if (!n.ok()) return n.status();
    (*n)->admin.store(static_cast<uint32_t>(st), std::memory_order_relaxed);
    return absl::OkStatus();
  }

  absl::Status SetHealth(std::string_view id, Health h) {
    absl::StatusOr<NodeRecord*> n = Live(id);
    if (!n.ok()) return n.status();
    (*n)->health.store(static_cast<uint32_t>(h), std::memory_order_relaxed);
    return absl::OkStatus();
  }

  static absl::Status CheckMetrics(const std::map<std::string, double>& metrics, std::string_view what) {
    for (const auto& [k, v] : metrics) {
      bool ok = !k.empty() && k.size() < internal::kNameLen;
      for (char c : k) ok = ok && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.');
      if (!ok) return absl::InvalidArgumentError(Cat(what, " metric name \"", k, "\" must be 1 to 31 characters of [A-Za-z0-9_.]"));
      if (!std::isfinite(v)) return absl::InvalidArgumentError(Cat(what, " metric ", k, " is not a finite number"));
    }
    return absl::OkStatus();
  }

  // Metric name indexes for `names`, registering new ones (registry lock held);
  // ResourceExhausted, with nothing registered, when they do not fit.
  absl::StatusOr<std::vector<uint32_t>> MetricIndexesLocked(const std::vector<std::string>& names) {
    Header& h = H();
    std::vector<uint32_t> idx;
    std::vector<std::string> fresh;
    for (const auto& k : names) {
      uint32_t i = kNil;
      for (uint32_t m = 0; m < h.n_metrics; ++m) if (GetFixed(h.metric_names[m]) == k) i = m;
      if (i == kNil && std::find(fresh.begin(), fresh.end(), k) == fresh.end()) fresh.push_back(k);
      idx.push_back(i);
    }
    if (h.n_metrics + fresh.size() > kMaxMetrics) {
      return absl::ResourceExhaustedError(Cat("at most ", kMaxMetrics, " distinct load and quality metric names per router"));
    }
    for (size_t j = 0; j < names.size(); ++j) {
      if (idx[j] != kNil) continue;
      for (uint32_t m = 0; m < h.n_metrics && idx[j] == kNil; ++m) if (GetFixed(h.metric_names[m]) == names[j]) idx[j] = m;
      if (idx[j] == kNil) {
        idx[j] = h.n_metrics++;
        SetFixed(h.metric_names[idx[j]], names[j]);
        h.node_generation.fetch_add(1, std::memory_order_release);
      }
    }
    return idx;
  }

  // Replaces one kind of figures (load or quality) of slot `s` (registry lock held).
  absl::Status WriteMetricsLocked(uint32_t s, const std::map<std::string, double>& metrics, bool quality) {
    std::vector<std::string> names;
    for (const auto& [k, v] : metrics) names.push_back(k);
    absl::StatusOr<std::vector<uint32_t>> idx = MetricIndexesLocked(names);
    if (!idx.ok()) return idx.status();
    NodeRecord& n = region_->node(s);
    uint64_t mask = 0;
    size_t j = 0;
    for (const auto& [k, v] : metrics) {
      uint32_t i = (*idx)[j++];
      n.load[i].store(v, std::memory_order_relaxed);
      mask |= uint64_t{1} << i;
    }
    (quality ? n.quality_mask : n.load_mask).store(mask, std::memory_order_relaxed);
    if (!quality) {
      int64_t now = now_();
      n.load_updated_ms.store(now, std::memory_order_relaxed);
      int64_t zero = 0;
      n.first_report_ms.compare_exchange_strong(zero, now, std::memory_order_relaxed);
    }
    return absl::OkStatus();
  }

  absl::Status ReportLoad(std::string_view id, const std::map<std::string, double>& metrics) {
    if (absl::Status st = CheckMetrics(metrics, "load"); !st.ok()) return st;
    LockGuard g(H().registry_mu);
    uint32_t s = FindNodeLocked(id);
    if (s == kNil) return absl::NotFoundError(Cat("no node \"", id, "\""));
    return WriteMetricsLocked(s, metrics, false);
  }

  // ---- health feedback -----------------------------------------------------

  absl::Status ReportProbe(std::string_view id, int code, double rtt_ms) {
    if (code < 0 || code > 699) return absl::InvalidArgumentError(Cat("probe code ", code, " is not 0 (no answer) or a SIP status code"));
    if (!std::isfinite(rtt_ms) || rtt_ms < 0) return absl::InvalidArgumentError("probe rtt_ms must be a finite number >= 0");
    absl::StatusOr<NodeRecord*> rec = Live(id);
    if (!rec.ok()) return rec.status();
    absl::StatusOr<const Policies*> pol = CachedPolicies();
    if (!pol.ok()) return pol.status();
    const HealthConfig& h = (*pol)->health;
    NodeRecord& n = **rec;
    const int64_t now = now_();
    bool ok = code > 0 && code < 500;
    if (ok) {
      n.probe_failures.store(0, std::memory_order_relaxed);
      int32_t oks = n.probe_successes.fetch_add(1, std::memory_order_relaxed) + 1;
      if (oks >= h.probe_up_after) {
        uint32_t was = n.health.exchange(static_cast<uint32_t>(Health::kUp), std::memory_order_relaxed);
        if (was != static_cast<uint32_t>(Health::kUp)) n.up_since_ms.store(now, std::memory_order_relaxed);
      }
      UpdateEwma(n.latency_ewma_ms, rtt_ms, h.latency_ewma_alpha);
    } else {
      n.probe_successes.store(0, std::memory_order_relaxed);
      int32_t fails = n.probe_failures.fetch_add(1, std::memory_order_relaxed) + 1;
      if (fails >= h.probe_down_after) n.health.store(static_cast<uint32_t>(Health::kDown), std::memory_order_relaxed);
    }
    return absl::OkStatus();
  }

  static void UpdateEwma(std::atomic<double>& v, double sample, double alpha) {
    double cur = v.load(std::memory_order_relaxed);
    double next = cur == 0 ? sample : alpha * sample + (1 - alpha) * cur;
    v.store(next, std::memory_order_relaxed);
  }

  absl::Status ReportCallResult(std::string_view id, int code, double latency_ms) {
    if (code < 0 || code > 699) return absl::InvalidArgumentError(Cat("result code ", code, " is not 0 (no answer) or a SIP status code"));
    if (!std::isfinite(latency_ms) || latency_ms < 0) return absl::InvalidArgumentError("latency_ms must be a finite number >= 0");
    std::shared_ptr<const Snapshot> snap = GetSnapshot();
    auto it = snap->by_id.find(std::string(id));
    if (it == snap->by_id.end()) return absl::NotFoundError(Cat("no node \"", id, "\""));
    const NodeView& view = snap->nodes[it->second];
    NodeRecord& n = region_->node(view.slot);
    absl::StatusOr<const Policies*> pol = CachedPolicies();
    if (!pol.ok()) return pol.status();
    const HealthConfig& h = (*pol)->health;
    const int64_t now = now_();
    bool failed = std::find(h.outlier_failure_codes.begin(), h.outlier_failure_codes.end(), code) !=
                  h.outlier_failure_codes.end();
    double a = h.latency_ewma_alpha;
    double err = n.error_ewma.load(std::memory_order_relaxed);
    n.error_ewma.store(a * (failed ? 1.0 : 0.0) + (1 - a) * err, std::memory_order_relaxed);
    if (!failed) {
      n.consecutive_failures.store(0, std::memory_order_relaxed);
      if (code > 0 && latency_ms > 0) UpdateEwma(n.latency_ewma_ms, latency_ms, a);
      return absl::OkStatus();
    }
    int32_t fails = n.consecutive_failures.fetch_add(1, std::memory_order_relaxed) + 1;
    if (fails < h.outlier_consecutive_failures || Ejected(n, now)) return absl::OkStatus();
    // Eject, unless that would take out more of the pool than allowed.
    LockGuard g(H().registry_mu);
    size_t pool = 0, ejected = 0;
    for (size_t i : snap->by_pool.at(view.pool)) {
      NodeRecord& o = region_->node(snap->nodes[i].slot);
      if (!o.in_use || o.epoch != snap->nodes[i].epoch) continue;
      ++pool;
      if (o.ejected_until_ms.load(std::memory_order_relaxed) > now) ++ejected;
    }
    if ((ejected + 1) * 100 > static_cast<size_t>(h.outlier_max_ejected_percent) * pool) return absl::OkStatus();
    int32_t times = n.ejections.fetch_add(1, std::memory_order_relaxed) + 1;
    int64_t span = std::min(h.outlier_base_ejection_ms * times, h.outlier_max_ejection_ms);
    n.ejected_until_ms.store(now + span, std::memory_order_relaxed);
    n.consecutive_failures.store(0, std::memory_order_relaxed);
    return absl::OkStatus();
  }

  // ---- status reports ------------------------------------------------------

  enum Refusal { kSource, kSignature, kReplay, kTakeover, kUri, kMalformed, kEtag, kFull };
  static constexpr const char* kRefusalNames[] = {"source", "signature", "replay", "takeover",
                                                  "uri", "malformed", "etag", "full"};

  ReportResult Refuse(Refusal why, int code, std::string reason) {
    H().reports_refused[why].fetch_add(1, std::memory_order_relaxed);
    ReportResult r;
    r.code = code;
    r.reason = std::move(reason);
    return r;
  }

  uint32_t FindEtagLocked(std::string_view etag) const {
    for (uint32_t s = 0; s < region_->max_nodes(); ++s) {
      const NodeRecord& n = region_->node(s);
      if (n.in_use && n.from_report && GetFixed(n.etag) == etag) return s;
    }
    return kNil;
  }

  ReportResult ApplyReport(const ReportRequest& req) {
    absl::StatusOr<const Policies*> polp = CachedPolicies();
    if (!polp.ok()) return Refuse(kMalformed, 500, std::string(polp.status().message()));
    const Policies& pol = **polp;
    const int64_t now = now_();
    if (pol.sources.empty() || !pol.sources.Contains(req.source)) {
      return Refuse(kSource, 403, Cat("source ", req.source.empty() ? "(none)" : req.source, " may not report status"));
    }
    if (req.expires < 0) return Refuse(kMalformed, 400, "Expires must be >= 0");
    std::optional<internal::StatusReport> report;
    if (!req.body.empty()) {
      absl::StatusOr<internal::StatusReport> r = internal::ParseStatusReport(req.body);
      if (!r.ok()) return Refuse(kMalformed, 400, std::string(r.status().message()));
      report = *std::move(r);
    } else if (req.if_match.empty() && req.expires != 0) {
      return Refuse(kMalformed, 400, "an initial report needs a JSON body");
    }
    absl::StatusOr<internal::Credential> cred = internal::ParseCredential(req.auth);
    if (!cred.ok()) return Refuse(kSignature, 403, req.auth.empty() ? "missing X-Approute-Auth" : std::string(cred.status().message()));

    LockGuard g(H().registry_mu);
    uint32_t slot = kNil;
    if (!req.if_match.empty()) {
      slot = FindEtagLocked(req.if_match);
      if (slot == kNil) return Refuse(kEtag, 412, Cat("no report with entity tag ", req.if_match));
      if (report && report->node != GetFixed(region_->node(slot).id)) {
        return Refuse(kMalformed, 400, Cat("the report is for node ", report->node, " but the entity tag is node ",
                                           GetFixed(region_->node(slot).id), "'s"));
      }
    } else if (report) {
      slot = FindNodeLocked(report->node);
    }
    if (!report && slot == kNil) return Refuse(kMalformed, 400, "a leave needs a JSON body or SIP-If-Match");
    std::string pool = report ? report->pool : std::string(GetFixed(region_->node(slot).pool));
    auto keys = pol.status.keys.find(pool);
    if (keys == pol.status.keys.end()) return Refuse(kSignature, 403, Cat("no status key configured for pool ", pool));
    auto key = keys->second.find(cred->keyid);
    if (key == keys->second.end()) return Refuse(kSignature, 403, Cat("unknown key id ", cred->keyid, " for pool ", pool));
    if (std::llabs(cred->ts * 1000 - now) > pol.status.replay_window_ms) {
      return Refuse(kReplay, 403, Cat("timestamp ", cred->ts, " is outside the replay window"));
    }
    std::string expect = internal::HmacSha256Hex(key->second, Cat(cred->ts, ".", req.body));
    if (!internal::SignaturesEqual(expect, cred->sig)) return Refuse(kSignature, 403, "bad signature");

    if (report) {
      if (slot != kNil) {
        const NodeRecord& n = region_->node(slot);
        if (!n.from_report) {
          return Refuse(kTakeover, 403, Cat("node id ", report->node, " is configured, not reported"));
        }
        if (GetFixed(n.uri) != report->uri && !LeaseExpired(n, now)) {
          return Refuse(kTakeover, 403, Cat("node id ", report->node, " is held by ", GetFixed(n.uri)));
        }
        if (GetFixed(n.pool) != report->pool) {
          return Refuse(kTakeover, 403, Cat("node id ", report->node, " belongs to pool ", GetFixed(n.pool)));
        }
        if (report->seq <= n.last_seq) {
          return Refuse(kReplay, 403, Cat("seq ", report->seq, " is not above the last accepted ", n.last_seq));
        }
      }
      if (!pol.uris.Contains(SipUriHost(report->uri))) {
        return Refuse(kUri, 403, Cat("uri ", report->uri, " is outside the allowed networks"));
      }
    }
    ReportResult out;
    out.code = 200;
    out.reason = "OK";
    if (req.expires == 0) {  // graceful leave: no new calls; removed when its sessions are gone
      if (slot != kNil) {
        NodeRecord& n = region_->node(slot);
        n.lease_expires_ms.store(now, std::memory_order_relaxed);
        n.etag[0] = 0;
        if (report) n.last_seq = report->seq;
        out.node_id = std::string(GetFixed(n.id));
      }
      H().reports_accepted.fetch_add(1, std::memory_order_relaxed);
      return out;
    }
    if (report) {
      NodeSpec spec;
      spec.id = report->node;
      spec.uri = report->uri;
      spec.pool = report->pool;
      spec.weight = report->weight.value_or(slot != kNil ? region_->node(slot).weight : 1);
      spec.capacity = report->capacity;
      // A report without a state keeps the one the node has (an operator's
      // drain on the proxy is not undone by the next routine report).
      spec.state = report->state.value_or(
          slot != kNil ? static_cast<AdminState>(region_->node(slot).admin.load(std::memory_order_relaxed))
                       : AdminState::kActive);
      std::vector<std::string> res;
      for (const auto& [r, v] : spec.capacity) res.push_back(r);
      std::vector<std::string> metric_names;
      for (const auto& [k, v] : report->load) metric_names.push_back(k);
      for (const auto& [k, v] : report->quality) metric_names.push_back(k);
      if (H().n_resources + NewResources(res) > kMaxResources) {
        return Refuse(kMalformed, 400, Cat("capacity names more resources than the router has room for (", kMaxResources, ")"));
      }
      if (absl::Status st = CheckMetrics(report->load, "load"); !st.ok()) return Refuse(kMalformed, 400, std::string(st.message()));
      if (absl::Status st = CheckMetrics(report->quality, "quality"); !st.ok()) return Refuse(kMalformed, 400, std::string(st.message()));
      if (!MetricIndexesLocked(metric_names).ok()) {
        return Refuse(kMalformed, 400, Cat("too many distinct metric names (at most ", kMaxMetrics, ")"));
      }
      bool fresh = slot == kNil;
      if (fresh) {
        slot = FreeNodeSlotLocked();
        if (slot == kNil) return Refuse(kFull, 503, Cat("node table is full (state.max_nodes = ", H().max_nodes, ")"));
      }
      NodeRecord& n = region_->node(slot);
      bool was_expired = !fresh && LeaseExpired(n, now);
      WriteNodeLocked(slot, spec, fresh, false);
      n.from_report = 1;
      n.last_seq = report->seq;
      if (fresh || was_expired) n.up_since_ms.store(now, std::memory_order_relaxed);
      (void)WriteMetricsLocked(slot, report->load, false);
      (void)WriteMetricsLocked(slot, report->quality, true);
      H().node_generation.fetch_add(1, std::memory_order_release);
    }
    NodeRecord& n = region_->node(slot);
    int64_t granted = std::min(req.expires, pol.status.max_expires_s);
    n.lease_expires_ms.store(now + granted * 1000, std::memory_order_relaxed);
    std::string etag = Cat(absl::Hex(ThreadRandom(), absl::kZeroPad16));
    SetFixed(n.etag, etag);
    out.etag = etag;
    out.node_id = std::string(GetFixed(n.id));
    out.expires = granted;
    H().reports_accepted.fetch_add(1, std::memory_order_relaxed);
    return out;
  }

  // Removes reported nodes whose lease ran out and whose sessions are gone.
  void RemoveLapsedNodes(int64_t now) {
    bool any = false;
    for (uint32_t s = 0; s < region_->max_nodes() && !any; ++s) {
      const NodeRecord& n = region_->node(s);
      any = n.in_use && n.from_report && LeaseExpired(n, now);
    }
    if (!any) return;
    LockGuard g(H().registry_mu);
    bool removed = false;
    for (uint32_t s = 0; s < region_->max_nodes(); ++s) {
      NodeRecord& n = region_->node(s);
      if (!n.in_use || !n.from_report || !LeaseExpired(n, now)) continue;
      int64_t live = 0;
      for (auto& c : n.sessions) live += c.load(std::memory_order_relaxed);
      if (live == 0) {
        FreeNodeLocked(s);
        removed = true;
      }
    }
    if (removed) H().node_generation.fetch_add(1, std::memory_order_release);
  }

  NodeStatus StatusOf(const Snapshot& snap, const NodeView& v) const {
    NodeRecord& n = region_->node(v.slot);
    NodeStatus st;
    st.spec.id = v.id;
    st.spec.uri = v.uri;
    st.spec.pool = v.pool;
    st.spec.weight = v.weight;
    st.spec.priority = v.priority;
    st.spec.attrs = v.attrs;
    st.spec.state = static_cast<AdminState>(n.admin.load(std::memory_order_relaxed));
    st.health = static_cast<Health>(n.health.load(std::memory_order_relaxed));
    for (size_t r = 0; r < snap.resources.size(); ++r) {
      if (v.capacity[r] >= 0) st.spec.capacity[snap.resources[r]] = v.capacity[r];
      st.sessions[snap.resources[r]] = n.sessions[r].load(std::memory_order_relaxed);
    }
    uint64_t mask = n.load_mask.load(std::memory_order_relaxed);
    uint64_t qmask = n.quality_mask.load(std::memory_order_relaxed);
    for (size_t m = 0; m < snap.metrics.size(); ++m) {
      if (mask & (uint64_t{1} << m)) st.load[snap.metrics[m]] = n.load[m].load(std::memory_order_relaxed);
      if (qmask & (uint64_t{1} << m)) st.quality[snap.metrics[m]] = n.load[m].load(std::memory_order_relaxed);
    }
    st.origin = v.from_config ? "config" : (n.from_report ? "report" : "api");
    st.lease_expires_ms = n.lease_expires_ms.load(std::memory_order_relaxed);
    int64_t ejected = n.ejected_until_ms.load(std::memory_order_relaxed);
    st.ejected_until_ms = ejected > now_() ? ejected : 0;
    st.latency_ewma_ms = n.latency_ewma_ms.load(std::memory_order_relaxed);
    st.error_rate = n.error_ewma.load(std::memory_order_relaxed);
    st.load_updated_ms = n.load_updated_ms.load(std::memory_order_relaxed);
    st.routed_total = n.routed_total.load(std::memory_order_relaxed);
    return st;
  }

  absl::StatusOr<NodeStatus> Node(std::string_view id) {
    std::shared_ptr<const Snapshot> snap = GetSnapshot();
    auto it = snap->by_id.find(std::string(id));
    if (it == snap->by_id.end()) return absl::NotFoundError(Cat("no node \"", id, "\""));
    return StatusOf(*snap, snap->nodes[it->second]);
  }

  std::vector<NodeStatus> Nodes() {
    std::shared_ptr<const Snapshot> snap = GetSnapshot();
    std::vector<NodeStatus> out;
    for (const NodeView& v : snap->nodes) out.push_back(StatusOf(*snap, v));
    return out;
  }

  RouterStats Stats() {
    std::shared_ptr<const Snapshot> snap = GetSnapshot();
    RouterStats s;
    s.nodes = static_cast<int64_t>(snap->nodes.size());
    s.sessions = H().session_count.load(std::memory_order_relaxed);
    s.affinities = H().affinity_count.load(std::memory_order_relaxed);
    s.max_nodes = static_cast<int64_t>(H().max_nodes);
    s.max_sessions = static_cast<int64_t>(H().max_sessions);
    s.max_affinities = static_cast<int64_t>(H().max_affinities);
    s.expired_sessions = H().expired_sessions.load(std::memory_order_relaxed);
    s.reports_accepted = H().reports_accepted.load(std::memory_order_relaxed);
    for (int i = 0; i < 8; ++i) s.reports_refused[kRefusalNames[i]] = H().reports_refused[i].load(std::memory_order_relaxed);
    return s;
  }

  const std::string& name() const { return region_->name(); }
  StateLimits limits() const { return region_->limits(); }

 private:
  std::unique_ptr<Region> region_;
  std::function<int64_t()> now_;
  absl::Mutex mu_;  // guards snapshot_ and policies_ (the pointers, not what they point to)
  std::shared_ptr<const Snapshot> snapshot_;
  std::shared_ptr<const Policies> policies_;
  const uint64_t id_;  // distinguishes routers in the per-thread caches
  std::shared_ptr<StrategyResolver> resolver_;  // python: and per-router strategies
  bool seeded_ = false;
  std::atomic<uint64_t> rng_{0};  // SplitMix64 state when seeded_
  absl::Mutex prepared_mu_;
  absl::flat_hash_map<std::string, std::unique_ptr<Strategy>> prepared_;
  std::string prepared_text_;
};

NodeStatus SharedStrategyContext::Describe(const Candidate& c) {
  if (router == nullptr || c.slot >= snap_.index_of_slot.size() || snap_.index_of_slot[c.slot] < 0) {
    return StrategyContext::Describe(c);
  }
  return router->StatusOf(snap_, snap_.nodes[static_cast<size_t>(snap_.index_of_slot[c.slot])]);
}

// ---- Router ----------------------------------------------------------------

Router::Router(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Router::~Router() = default;

absl::StatusOr<std::unique_ptr<Router>> Router::FromYaml(std::string_view yaml, RouterOptions options,
                                                         std::string_view source) {
  absl::StatusOr<Config> cfg = ParseConfig(yaml, source, options.strategies.get());
  if (!cfg.ok()) return cfg.status();
  absl::StatusOr<std::unique_ptr<Region>> region;
  if (options.shared.empty()) {
    region = Region::CreatePrivate(cfg->state);
  } else {
    bool created = false;
    region = Region::OpenShared(options.shared, cfg->state, &created);
  }
  if (!region.ok()) return region.status();
  auto impl = std::make_unique<Impl>(*std::move(region), std::move(options.now_ms));
  impl->SetStrategyOptions(options);
  if (absl::Status s = impl->Prepare(*cfg, source); !s.ok()) return s;
  if (absl::Status s = impl->Apply(*cfg); !s.ok()) return s;
  return std::unique_ptr<Router>(new Router(std::move(impl)));
}

absl::StatusOr<std::unique_ptr<Router>> Router::FromFile(const std::string& path, RouterOptions options) {
  absl::StatusOr<Config> cfg = LoadConfigFile(path);
  if (!cfg.ok()) return cfg.status();
  return FromYaml(cfg->text, std::move(options), path);
}

absl::StatusOr<std::unique_ptr<Router>> Router::Attach(const std::string& shared, RouterOptions options) {
  absl::StatusOr<std::unique_ptr<Region>> region = Region::AttachShared(shared);
  if (!region.ok()) return region.status();
  auto impl = std::make_unique<Impl>(*std::move(region), std::move(options.now_ms));
  impl->SetStrategyOptions(options);
  return std::unique_ptr<Router>(new Router(std::move(impl)));
}

absl::StatusOr<bool> Router::Unlink(const std::string& shared) { return Region::Unlink(shared); }

absl::StatusOr<Decision> Router::Route(const RouteRequest& request) { return impl_->Route(request); }
absl::StatusOr<Decision> Router::Retry(std::string_view call_id, int code) { return impl_->Retry(call_id, code); }
absl::Status Router::Confirm(std::string_view call_id) { return impl_->Confirm(call_id); }
absl::Status Router::End(std::string_view call_id) { return impl_->End(call_id); }
absl::Status Router::AddNode(const NodeSpec& spec) { return impl_->AddNode(spec); }
absl::Status Router::UpdateNode(const NodeSpec& spec) { return impl_->UpdateNode(spec); }
absl::Status Router::RemoveNode(std::string_view id) { return impl_->RemoveNode(id); }
absl::Status Router::SetState(std::string_view id, AdminState state) { return impl_->SetState(id, state); }
absl::Status Router::SetHealth(std::string_view id, Health health) { return impl_->SetHealth(id, health); }
absl::Status Router::ReportLoad(std::string_view id, const std::map<std::string, double>& metrics) {
  return impl_->ReportLoad(id, metrics);
}
absl::StatusOr<NodeStatus> Router::Node(std::string_view id) const { return impl_->Node(id); }
ReportResult Router::ApplyReport(const ReportRequest& report) { return impl_->ApplyReport(report); }
absl::Status Router::ReportProbe(std::string_view id, int code, double rtt_ms) {
  return impl_->ReportProbe(id, code, rtt_ms);
}
absl::Status Router::ReportCallResult(std::string_view id, int code, double latency_ms) {
  return impl_->ReportCallResult(id, code, latency_ms);
}
std::vector<NodeStatus> Router::Nodes() const { return impl_->Nodes(); }
RouterStats Router::Stats() const { return impl_->Stats(); }
int64_t Router::Sweep() { return impl_->Sweep(); }
const std::string& Router::shared_name() const { return impl_->name(); }

absl::Status Router::Reload(std::string_view yaml, std::string_view source) {
  absl::StatusOr<Config> cfg = ParseConfig(yaml, source, impl_->resolver());
  if (!cfg.ok()) return cfg.status();
  StateLimits have = impl_->limits();
  if (cfg->state.max_nodes != have.max_nodes || cfg->state.max_sessions != have.max_sessions ||
      cfg->state.max_affinities != have.max_affinities) {
    return absl::FailedPreconditionError(Cat(
        source, ": state limits cannot change on reload (the region has max_nodes ", have.max_nodes,
        ", max_sessions ", have.max_sessions, ", max_affinities ", have.max_affinities, ")"));
  }
  if (absl::Status s = impl_->Prepare(*cfg, source); !s.ok()) return s;
  return impl_->Apply(*cfg);
}

}  // namespace approute
