// Nodes by status report shared through Redis (cluster_members.h).
#include "placement/cluster_members.h"

#include <map>
#include <nlohmann/json.hpp>

#include "state/usage.h"
#include "status/report.h"
#include "util/str_util.h"

namespace approute::internal {
namespace {

using json = nlohmann::json;

std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

struct Record {
  uint64_t seq = 0;
  int64_t at = 0, lease = 0;
  std::string etag, report;
  // The deployment's count of each resource the report names, when the
  // report was accepted (state/usage.h); absent from older records.
  std::map<std::string, int64_t> usage_base;
};

// Whether record a replaces b (the order in cluster_members.h; kMembers
// applies the same). `now` decides whether b's lease is over.
bool Newer(const Record& a, const Record& b, int64_t now) {
  if (a.seq != b.seq) return a.seq > b.seq || (b.lease <= now && a.at > b.at);
  if (a.at != b.at) return a.at > b.at;
  const bool a_left = a.lease <= a.at, b_left = b.lease <= b.at;
  if (a_left != b_left) return a_left;
  if (a.lease != b.lease) return a.lease > b.lease;
  return a.etag > b.etag;
}

std::optional<Record> Decode(const std::string& text) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return std::nullopt;
  const auto seq = j.find("seq"), at = j.find("at"), lease = j.find("lease"), etag = j.find("etag"),
             report = j.find("report");
  if (seq == j.end() || !seq->is_number_unsigned() || at == j.end() || !at->is_number_integer() || lease == j.end() ||
      !lease->is_number_integer() || etag == j.end() || !etag->is_string() || report == j.end() ||
      !report->is_string()) {
    return std::nullopt;
  }
  Record rec{seq->get<uint64_t>(),     at->get<int64_t>(),         lease->get<int64_t>(),
             etag->get<std::string>(), report->get<std::string>(), {}};
  if (const auto base = j.find("usage_base"); base != j.end() && base->is_object()) {
    for (const auto& [name, v] : base->items()) {
      if (v.is_number_integer()) rec.usage_base[name] = v.get<int64_t>();
    }
  }
  return rec;
}

}  // namespace

std::string ClusterMembers::EncodeLocked(uint32_t slot) const {
  const Header& h = region_.header();
  const NodeRecord& n = region_.node(slot);
  const NodeHot& hot = region_.hot(slot);
  json body = {{"node", GetFixed(n.id)},
               {"uri", GetFixed(n.uri)},
               {"pool", GetFixed(n.pool)},
               {"weight", n.weight},
               {"seq", n.last_seq}};
  // Only a drain travels with the record; every other admin state is the
  // deployment's admin hash's (cluster_placement.h).
  if (hot.admin.load(std::memory_order_relaxed) == static_cast<uint32_t>(AdminState::kDraining))
    body["state"] = "draining";
  // The node's own "health": "down" travels too, so every proxy keeps it out.
  if (n.report_down.load(std::memory_order_relaxed) != 0) body["health"] = "down";
  for (uint32_t r = 0; r < h.n_resources; ++r) {
    if (n.capacity[r] >= 0) body["capacity"][std::string(GetFixed(h.resource_names[r]))] = n.capacity[r];
  }
  const uint64_t load = hot.load_mask.load(std::memory_order_relaxed),
                 quality = hot.quality_mask.load(std::memory_order_relaxed);
  for (uint32_t i = 0; i < h.n_metrics; ++i) {
    const uint64_t bit = uint64_t{1} << i;
    if ((load | quality) & bit) {
      body[(quality & bit) ? "quality" : "load"][std::string(GetFixed(h.metric_names[i]))] =
          hot.load[i].load(std::memory_order_relaxed);
    }
  }
  json rec = {{"seq", n.last_seq},
              {"at", n.report_at_ms.load(std::memory_order_relaxed)},
              {"lease", hot.lease_expires_ms.load(std::memory_order_relaxed)},
              {"etag", GetFixed(n.etag)},
              {"report", Dump(body)}};
  const uint32_t usage = hot.usage_mask.load(std::memory_order_acquire);
  for (uint32_t r = 0; r < h.n_resources; ++r) {
    if (usage & (1u << r)) {
      rec["usage_base"][std::string(GetFixed(h.resource_names[r]))] = hot.usage_base[r].load(std::memory_order_relaxed);
    }
  }
  return Dump(rec);
}

std::optional<std::string> ClusterMembers::Encode(uint32_t slot) const {
  RegistryLock g(region_.header());
  const NodeRecord& n = region_.node(slot);
  if (!n.in_use || !n.from_report) return std::nullopt;
  return EncodeLocked(slot);
}

std::vector<std::pair<std::string, std::string>> ClusterMembers::EncodeAll() const {
  RegistryLock g(region_.header());
  std::vector<std::pair<std::string, std::string>> out;
  for (uint32_t s = 0; s < region_.max_nodes(); ++s) {
    const NodeRecord& n = region_.node(s);
    if (n.in_use && n.from_report) out.emplace_back(std::string(GetFixed(n.id)), EncodeLocked(s));
  }
  return out;
}

int ClusterMembers::Merge(const std::vector<std::pair<std::string, std::string>>& records, int64_t now) {
  RegistryLock g(region_.header());
  int changed = 0;
  for (const auto& [id, text] : records) {
    std::optional<Record> rec = Decode(text);
    if (!rec) continue;
    absl::StatusOr<StatusReport> report = ParseStatusReport(rec->report);
    if (!report.ok() || report->node != id || report->seq != rec->seq) continue;
    uint32_t slot = nodes_.FindLocked(id);
    bool write = true;
    if (slot == kNil) {
      if (rec->lease <= now) continue;  // a node that left or lapsed does not join here
    } else {
      const NodeRecord& n = region_.node(slot);
      if (!n.from_report) continue;  // declared here: the YAML or the API wins
      const Record have{n.last_seq,
                        n.report_at_ms.load(std::memory_order_relaxed),
                        region_.hot(slot).lease_expires_ms.load(std::memory_order_relaxed),
                        std::string(GetFixed(n.etag)),
                        "",
                        {}};
      if (!Newer(*rec, have, now)) continue;
      // A refresh or a leave by entity tag changes no static field.
      write = rec->seq != n.last_seq || GetFixed(n.uri) != report->uri || GetFixed(n.pool) != report->pool;
    }
    if (write && !reports_.WriteReportLocked(&slot, *report, now).ok()) continue;
    NodeRecord& n = region_.node(slot);
    if (!write) {
      (void)nodes_.WriteMetricsLocked(slot, report->load, false, now);
      (void)nodes_.WriteMetricsLocked(slot, report->quality, true, now);
    }
    // The node's own counts count from the report's acceptance, over the
    // deployment's count then (its accepting proxy's figure).
    NodeHot& hot = region_.hot(slot);
    const Header& h = region_.header();
    const uint32_t usage = hot.usage_mask.load(std::memory_order_relaxed);
    for (uint32_t r = 0; r < h.n_resources; ++r) {
      auto base = rec->usage_base.find(std::string(GetFixed(h.resource_names[r])));
      if ((usage & (1u << r)) && base != rec->usage_base.end()) {
        hot.usage_base[r].store(base->second, std::memory_order_relaxed);
      }
    }
    hot.usage_until_ms.store(rec->at + UsageMaxAgeMs(h), std::memory_order_relaxed);
    n.last_seq = rec->seq;
    n.report_at_ms.store(rec->at, std::memory_order_relaxed);
    region_.hot(slot).lease_expires_ms.store(rec->lease, std::memory_order_relaxed);
    SetFixed(n.etag, rec->etag);
    ++changed;
  }
  return changed;
}

}  // namespace approute::internal
