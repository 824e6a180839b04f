#include "state/node_table.h"

#include <algorithm>
#include <cmath>
#include <set>

#include "state/usage.h"
#include "util/str_util.h"

namespace approute::internal {

uint32_t NodeTable::ResourceIndexLocked(std::string_view name, bool create) {
  Header& h = H();
  for (uint32_t i = 0; i < h.n_resources; ++i) {
    if (GetFixed(h.resource_names[i]) == name) return i;
  }
  if (!create || h.n_resources >= kMaxResources) return kNil;
  SetFixed(h.resource_names[h.n_resources], name);
  return h.n_resources++;
}

size_t NodeTable::NewResources(const std::vector<std::string>& names) {
  size_t extra = 0;
  for (const auto& r : names) extra += ResourceIndexLocked(r, false) == kNil ? 1 : 0;
  return extra;
}

uint32_t NodeTable::FindLocked(std::string_view id) const {
  for (uint32_t s = 0; s < max_nodes(); ++s) {
    const NodeRecord& n = node(s);
    if (n.in_use && GetFixed(n.id) == id) return s;
  }
  return kNil;
}

uint32_t NodeTable::FreeSlotLocked() const {
  for (uint32_t s = 0; s < max_nodes(); ++s) {
    if (!node(s).in_use) return s;
  }
  return kNil;
}

void ResyncHotEpochs(Header& h) {
  char* base = reinterpret_cast<char*>(&h);
  auto* nodes = reinterpret_cast<const NodeRecord*>(base + h.nodes_off);
  auto* hot = reinterpret_cast<NodeHot*>(base + h.hot_off);
  for (uint64_t s = 0; s < h.max_nodes; ++s) hot[s].epoch.store(nodes[s].epoch, std::memory_order_relaxed);
}

void NodeTable::WriteLocked(uint32_t s, const NodeSpec& spec, bool fresh, bool from_config) {
  NodeRecord& n = node(s);
  NodeHot& hot = this->hot(s);
  if (fresh) {
    n.in_use = 0;
    for (auto& c : hot.sessions) c.store(0, std::memory_order_relaxed);
    for (auto& l : hot.load) l.store(0, std::memory_order_relaxed);
    hot.load_mask.store(0);
    hot.quality_mask.store(0);
    hot.usage_mask.store(0);
    hot.usage_until_ms.store(0);
    n.load_updated_ms.store(0);
    n.routed_total.store(0);
    hot.health.store(static_cast<uint32_t>(Health::kUp));
    n.from_report = 0;
    n.report_down.store(0);
    n.etag[0] = 0;
    n.last_seq = 0;
    hot.lease_expires_ms.store(0);
    n.first_report_ms.store(0);
    n.report_at_ms.store(0);
    for (auto& c : n.synced_share) c.store(0, std::memory_order_relaxed);
    n.probe_failures.store(0);
    n.probe_successes.store(0);
    n.consecutive_failures.store(0);
    n.ejections.store(0);
    hot.ejected_until_ms.store(0);
    hot.up_since_ms.store(0);
    hot.busy_until_ms.store(0);
    hot.overload.store(0);
    hot.shed.store(0);
    n.overload_seq.store(0);
    n.latency_ewma_ms.store(0);
    n.error_ewma.store(0);
    ++n.epoch;
    hot.epoch.store(n.epoch, std::memory_order_release);
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
  hot.admin.store(static_cast<uint32_t>(spec.state), std::memory_order_relaxed);
  hot.drain_deadline_ms.store(0, std::memory_order_relaxed);
  std::atomic_signal_fence(std::memory_order_seq_cst);
  n.in_use = 1;
}

void NodeTable::FreeLocked(uint32_t s) {
  NodeRecord& n = node(s);
  NodeHot& hot = this->hot(s);
  n.in_use = 0;
  ++n.epoch;
  hot.epoch.store(n.epoch, std::memory_order_release);
  for (auto& c : hot.sessions) c.store(0, std::memory_order_relaxed);
}

absl::Status NodeTable::ApplyConfigLocked(const Config& cfg) {
  Header& h = H();
  std::vector<std::string> resources;
  for (const auto& n : cfg.nodes)
    for (const auto& [r, v] : n.capacity) resources.push_back(r);
  for (const auto& [name, app] : cfg.apps)
    resources.insert(resources.end(), app.resources.begin(), app.resources.end());
  std::sort(resources.begin(), resources.end());
  resources.erase(std::unique(resources.begin(), resources.end()), resources.end());
  if (h.n_resources + NewResources(resources) > kMaxResources) {
    return absl::ResourceExhaustedError(
        Cat("the configuration names resources the state region has no room for (at most ", kMaxResources,
            " distinct resource names over the region's life)"));
  }
  std::set<std::string> wanted;
  size_t new_nodes = 0;
  for (const auto& n : cfg.nodes) {
    wanted.insert(n.id);
    if (FindLocked(n.id) == kNil) ++new_nodes;
  }
  size_t freed = 0, free_slots = 0;
  for (uint32_t s = 0; s < max_nodes(); ++s) {
    const NodeRecord& n = node(s);
    if (!n.in_use)
      ++free_slots;
    else if (n.from_config && !wanted.count(std::string(GetFixed(n.id))))
      ++freed;
  }
  if (new_nodes > free_slots + freed) {
    return absl::ResourceExhaustedError(Cat("the configuration adds ", new_nodes,
                                            " nodes but the node table has room for ", free_slots + freed,
                                            " (state.max_nodes = ", h.max_nodes, ")"));
  }
  ResourceIndexLocked(kDefaultResource, true);
  for (const auto& r : resources) ResourceIndexLocked(r, true);
  h.usage_max_age_ms.store(cfg.status.usage_max_age_ms, std::memory_order_relaxed);
  for (uint32_t s = 0; s < max_nodes(); ++s) {
    NodeRecord& n = node(s);
    if (n.in_use && n.from_config && !wanted.count(std::string(GetFixed(n.id)))) FreeLocked(s);
  }
  for (const auto& spec : cfg.nodes) {
    uint32_t s = FindLocked(spec.id);
    bool fresh = s == kNil;
    if (fresh) s = FreeSlotLocked();
    WriteLocked(s, spec, fresh, true);
  }
  BumpGeneration();
  return absl::OkStatus();
}

absl::Status NodeTable::Add(const NodeSpec& spec) {
  if (absl::Status s = ValidateNodeSpec(spec); !s.ok()) return s;
  RegistryLock g(H());
  if (FindLocked(spec.id) != kNil) return absl::AlreadyExistsError(Cat("node \"", spec.id, "\" already exists"));
  std::vector<std::string> res;
  for (const auto& [r, v] : spec.capacity) res.push_back(r);
  if (H().n_resources + NewResources(res) > kMaxResources) {
    return absl::ResourceExhaustedError(
        Cat("node \"", spec.id, "\" names more resources than the region has room for (", kMaxResources, ")"));
  }
  uint32_t s = FreeSlotLocked();
  if (s == kNil) return absl::ResourceExhaustedError(Cat("node table is full (state.max_nodes = ", H().max_nodes, ")"));
  WriteLocked(s, spec, true, false);
  BumpGeneration();
  return absl::OkStatus();
}

absl::Status NodeTable::Update(const NodeSpec& spec) {
  if (absl::Status s = ValidateNodeSpec(spec); !s.ok()) return s;
  RegistryLock g(H());
  uint32_t s = FindLocked(spec.id);
  if (s == kNil) return absl::NotFoundError(Cat("no node \"", spec.id, "\""));
  std::vector<std::string> res;
  for (const auto& [r, v] : spec.capacity) res.push_back(r);
  if (H().n_resources + NewResources(res) > kMaxResources) {
    return absl::ResourceExhaustedError("node names more resources than the region has room for");
  }
  WriteLocked(s, spec, false, node(s).from_config != 0);
  BumpGeneration();
  return absl::OkStatus();
}

absl::Status NodeTable::Remove(std::string_view id) {
  RegistryLock g(H());
  uint32_t s = FindLocked(id);
  if (s == kNil) return absl::NotFoundError(Cat("no node \"", id, "\""));
  FreeLocked(s);
  BumpGeneration();
  return absl::OkStatus();
}

absl::Status NodeTable::CheckMetrics(const std::map<std::string, double>& metrics, std::string_view what) {
  for (const auto& [k, v] : metrics) {
    bool ok = !k.empty() && k.size() < kNameLen;
    for (char c : k) {
      ok = ok && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.');
    }
    if (!ok)
      return absl::InvalidArgumentError(
          Cat(what, " metric name \"", k, "\" must be 1 to 31 characters of [A-Za-z0-9_.]"));
    if (!std::isfinite(v)) return absl::InvalidArgumentError(Cat(what, " metric ", k, " is not a finite number"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<uint32_t>> NodeTable::MetricIndexesLocked(const std::vector<std::string>& names) {
  Header& h = H();
  std::vector<uint32_t> idx;
  std::vector<std::string> fresh;
  for (const auto& k : names) {
    uint32_t i = kNil;
    for (uint32_t m = 0; m < h.n_metrics; ++m)
      if (GetFixed(h.metric_names[m]) == k) i = m;
    if (i == kNil && std::find(fresh.begin(), fresh.end(), k) == fresh.end()) fresh.push_back(k);
    idx.push_back(i);
  }
  if (h.n_metrics + fresh.size() > kMaxMetrics) {
    return absl::ResourceExhaustedError(
        Cat("at most ", kMaxMetrics, " distinct load and quality metric names per router"));
  }
  for (size_t j = 0; j < names.size(); ++j) {
    if (idx[j] != kNil) continue;
    for (uint32_t m = 0; m < h.n_metrics && idx[j] == kNil; ++m)
      if (GetFixed(h.metric_names[m]) == names[j]) idx[j] = m;
    if (idx[j] == kNil) {
      SetFixed(h.metric_names[h.n_metrics], names[j]);
      idx[j] = h.n_metrics++;
      BumpGeneration();
    }
  }
  return idx;
}

absl::Status NodeTable::WriteMetricsLocked(uint32_t s, const std::map<std::string, double>& metrics, bool quality,
                                           int64_t now) {
  std::vector<std::string> names;
  names.reserve(metrics.size());
  for (const auto& [k, v] : metrics) names.push_back(k);
  absl::StatusOr<std::vector<uint32_t>> idx = MetricIndexesLocked(names);
  if (!idx.ok()) return idx.status();
  NodeRecord& n = node(s);
  NodeHot& hot = this->hot(s);
  uint64_t mask = 0;
  size_t j = 0;
  for (const auto& [k, v] : metrics) {
    uint32_t i = (*idx)[j++];
    hot.load[i].store(v, std::memory_order_relaxed);
    mask |= uint64_t{1} << i;
  }
  (quality ? hot.quality_mask : hot.load_mask).store(mask, std::memory_order_relaxed);
  if (!quality) {
    WriteUsageLocked(s, metrics, now);
    n.load_updated_ms.store(now, std::memory_order_relaxed);
    int64_t zero = 0;
    n.first_report_ms.compare_exchange_strong(zero, now, std::memory_order_relaxed);
  }
  return absl::OkStatus();
}

void NodeTable::WriteUsageLocked(uint32_t s, const std::map<std::string, double>& load, int64_t at) {
  Header& h = H();
  NodeHot& hot = this->hot(s);
  uint16_t mask = 0;
  for (uint32_t r = 0; r < h.n_resources; ++r) {
    auto it = load.find(std::string(GetFixed(h.resource_names[r])));
    if (it == load.end()) continue;
    const double v = std::clamp(it->second, 0.0, 1e15);  // finite: CheckMetrics
    hot.usage_reported[r].store(static_cast<int64_t>(std::llround(v)), std::memory_order_relaxed);
    hot.usage_base[r].store(hot.sessions[r].load(std::memory_order_relaxed), std::memory_order_relaxed);
    mask = static_cast<uint16_t>(mask | (1u << r));
  }
  hot.usage_until_ms.store(at + UsageMaxAgeMs(h), std::memory_order_relaxed);
  hot.usage_mask.store(mask, std::memory_order_release);
}

absl::Status NodeTable::ReportLoad(std::string_view id, const std::map<std::string, double>& metrics, int64_t now) {
  if (absl::Status st = CheckMetrics(metrics, "load"); !st.ok()) return st;
  RegistryLock g(H());
  uint32_t s = FindLocked(id);
  if (s == kNil) return absl::NotFoundError(Cat("no node \"", id, "\""));
  return WriteMetricsLocked(s, metrics, false, now);
}

void NodeTable::RemoveLapsed(int64_t now) {
  bool any = false;
  for (uint32_t s = 0; s < max_nodes() && !any; ++s) {
    any = LeaseExpired(hot(s), now) && node(s).in_use && node(s).from_report;  // only leased nodes' records are read
  }
  if (!any) return;
  RegistryLock g(H());
  bool removed = false;
  for (uint32_t s = 0; s < max_nodes(); ++s) {
    NodeRecord& n = node(s);
    if (!n.in_use || !n.from_report || !LeaseExpired(hot(s), now)) continue;
    int64_t live = 0;
    for (auto& c : hot(s).sessions) live += c.load(std::memory_order_relaxed);
    if (live == 0) {
      FreeLocked(s);
      removed = true;
    }
  }
  if (removed) BumpGeneration();
}

bool NodeTable::TryReserve(NodeHot& n, uint32_t res, int64_t cap) {
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

void NodeTable::Release(NodeHot& n, uint32_t epoch, uint32_t res) {
  if (n.epoch.load(std::memory_order_relaxed) != epoch) return;  // node removed since: its counts went with it
  std::atomic<int64_t>& c = n.sessions[res];
  int64_t cur = c.load(std::memory_order_relaxed);
  while (cur > 0 && !c.compare_exchange_weak(cur, cur - 1, std::memory_order_relaxed)) {
  }
}

std::shared_ptr<Snapshot> NodeTable::BuildSnapshot() const {
  auto snap = std::make_shared<Snapshot>();
  Header& h = H();
  RegistryLock g(h);
  snap->generation = h.node_generation.load(std::memory_order_acquire);
  for (uint32_t i = 0; i < h.n_resources; ++i) snap->resources.emplace_back(GetFixed(h.resource_names[i]));
  for (uint32_t i = 0; i < h.n_metrics; ++i) snap->metrics.emplace_back(GetFixed(h.metric_names[i]));
  snap->index_of_slot.assign(max_nodes(), -1);
  for (uint32_t s = 0; s < max_nodes(); ++s) {
    const NodeRecord& n = node(s);
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
    for (uint32_t a = 0; a < n.n_attrs && a < kMaxAttrs; ++a) {
      v.attrs[std::string(GetFixed(n.attrs[a].key))] = std::string(GetFixed(n.attrs[a].value));
    }
    snap->index_of_slot[s] = static_cast<int32_t>(snap->nodes.size());
    snap->by_id[v.id] = snap->nodes.size();
    snap->by_pool[v.pool].push_back(snap->nodes.size());
    snap->nodes.push_back(std::move(v));
  }
  for (const auto& [pool, members] : snap->by_pool) {  // after the last push_back: the views stay put
    PoolView& pv = snap->pools[pool];
    pv.capacity.resize(kMaxResources * members.size());
    for (size_t i = 0; i < members.size(); ++i) {
      const NodeView& v = snap->nodes[members[i]];
      Candidate c;
      c.slot = v.slot;
      c.id = v.id;
      c.uri = v.uri;
      c.weight = v.weight;
      c.priority = v.priority;
      c.attrs = &v.attrs;
      pv.proto.push_back(c);
      pv.slot.push_back(v.slot);
      pv.epoch.push_back(v.epoch);
      for (size_t r = 0; r < kMaxResources; ++r) pv.capacity[r * members.size() + i] = v.capacity[r];
    }
  }
  return snap;
}

NodeStatus NodeTable::StatusOf(const Snapshot& snap, const NodeView& v, int64_t now) const {
  NodeRecord& n = node(v.slot);
  NodeHot& hot = this->hot(v.slot);
  NodeStatus st;
  st.spec.id = v.id;
  st.spec.uri = v.uri;
  st.spec.pool = v.pool;
  st.spec.weight = v.weight;
  st.spec.priority = v.priority;
  st.spec.attrs = v.attrs;
  st.spec.state = static_cast<AdminState>(hot.admin.load(std::memory_order_relaxed));
  st.health = static_cast<Health>(hot.health.load(std::memory_order_relaxed));
  st.reported_down = n.report_down.load(std::memory_order_relaxed) != 0;
  for (size_t r = 0; r < snap.resources.size(); ++r) {
    if (v.capacity[r] >= 0) st.spec.capacity[snap.resources[r]] = v.capacity[r];
    st.sessions[snap.resources[r]] = hot.sessions[r].load(std::memory_order_relaxed);
  }
  uint64_t mask = hot.load_mask.load(std::memory_order_relaxed);
  uint64_t qmask = hot.quality_mask.load(std::memory_order_relaxed);
  for (size_t m = 0; m < snap.metrics.size(); ++m) {
    if (mask & (uint64_t{1} << m)) st.load[snap.metrics[m]] = hot.load[m].load(std::memory_order_relaxed);
    if (qmask & (uint64_t{1} << m)) st.quality[snap.metrics[m]] = hot.load[m].load(std::memory_order_relaxed);
  }
  st.origin = v.from_config ? "config" : (n.from_report ? "report" : "api");
  st.lease_expires_ms = hot.lease_expires_ms.load(std::memory_order_relaxed);
  int64_t ejected = hot.ejected_until_ms.load(std::memory_order_relaxed);
  st.ejected_until_ms = ejected > now ? ejected : 0;
  int64_t busy = hot.busy_until_ms.load(std::memory_order_relaxed);
  st.busy_until_ms = busy > now ? busy : 0;
  const uint64_t oc = hot.overload.load(std::memory_order_relaxed);
  const auto oc_until = static_cast<int64_t>(oc >> 7);
  if (oc_until > now && (oc & 127) != 0) {
    st.overload_percent = static_cast<int32_t>(oc & 127);
    st.overload_until_ms = oc_until;
  }
  st.latency_ewma_ms = n.latency_ewma_ms.load(std::memory_order_relaxed);
  st.error_rate = n.error_ewma.load(std::memory_order_relaxed);
  st.load_updated_ms = n.load_updated_ms.load(std::memory_order_relaxed);
  st.routed_total = n.routed_total.load(std::memory_order_relaxed);
  return st;
}

}  // namespace approute::internal
