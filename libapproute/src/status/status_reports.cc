#include "status/status_reports.h"

#include <cstdlib>
#include <optional>

#include "status/health.h"
#include "status/report.h"
#include "util/str_util.h"

namespace approute::internal {

ReportResult StatusReports::Refuse(Refusal why, int code, std::string reason) {
  region_.header().reports_refused[why].fetch_add(1, std::memory_order_relaxed);
  ReportResult r;
  r.code = code;
  r.reason = std::move(reason);
  return r;
}

uint32_t StatusReports::FindEtagLocked(std::string_view etag) const {
  for (uint32_t s = 0; s < region_.max_nodes(); ++s) {
    const NodeRecord& n = region_.node(s);
    if (n.in_use && n.from_report && GetFixed(n.etag) == etag) return s;
  }
  return kNil;
}

absl::Status StatusReports::WriteReportLocked(uint32_t* slot_io, const StatusReport& report, int64_t now) {
  Header& h = region_.header();
  uint32_t slot = *slot_io;
  NodeSpec spec;
  spec.id = report.node;
  spec.uri = report.uri;
  spec.pool = report.pool;
  spec.weight = report.weight.value_or(slot != kNil ? region_.node(slot).weight : 1);
  spec.capacity = report.capacity;
  // A report without a state keeps the one the node has (an operator's
  // drain on the proxy is not undone by the next routine report).
  spec.state = report.state.value_or(
      slot != kNil ? static_cast<AdminState>(region_.hot(slot).admin.load(std::memory_order_relaxed))
                   : AdminState::kActive);
  std::vector<std::string> res;
  for (const auto& [r, v] : spec.capacity) res.push_back(r);
  std::vector<std::string> metric_names;
  for (const auto& [k, v] : report.load) metric_names.push_back(k);
  for (const auto& [k, v] : report.quality) metric_names.push_back(k);
  if (h.n_resources + nodes_.NewResources(res) > kMaxResources) {
    return absl::InvalidArgumentError(
        Cat("capacity names more resources than the router has room for (", kMaxResources, ")"));
  }
  if (absl::Status st = NodeTable::CheckMetrics(report.load, "load"); !st.ok()) return st;
  if (absl::Status st = NodeTable::CheckMetrics(report.quality, "quality"); !st.ok()) return st;
  if (!nodes_.MetricIndexesLocked(metric_names).ok()) {
    return absl::InvalidArgumentError(Cat("too many distinct metric names (at most ", kMaxMetrics, ")"));
  }
  bool fresh = slot == kNil;
  if (fresh) {
    slot = nodes_.FreeSlotLocked();
    if (slot == kNil) {
      return absl::ResourceExhaustedError(Cat("node table is full (state.max_nodes = ", h.max_nodes, ")"));
    }
  }
  NodeRecord& n = region_.node(slot);
  bool was_expired = !fresh && NodeTable::LeaseExpired(region_.hot(slot), now);
  nodes_.WriteLocked(slot, spec, fresh, false);
  n.from_report = 1;
  n.last_seq = report.seq;
  if (fresh || was_expired) region_.hot(slot).up_since_ms.store(now, std::memory_order_relaxed);
  HealthMonitor::OnReportedHealth(n, region_.hot(slot), report.down, now);
  (void)nodes_.WriteMetricsLocked(slot, report.load, false, now);
  (void)nodes_.WriteMetricsLocked(slot, report.quality, true, now);
  nodes_.BumpGeneration();
  *slot_io = slot;
  return absl::OkStatus();
}

ReportResult StatusReports::Apply(const ReportRequest& req, const Policies& pol, int64_t now, uint64_t random) {
  Header& h = region_.header();
  if (pol.sources.empty() || !pol.sources.Contains(req.source)) {
    return Refuse(kSource, 403, Cat("source ", req.source.empty() ? "(none)" : req.source, " may not report status"));
  }
  if (req.expires < 0) return Refuse(kMalformed, 400, "Expires must be >= 0");
  std::optional<StatusReport> report;
  if (!req.body.empty()) {
    absl::StatusOr<StatusReport> r = ParseStatusReport(req.body);
    if (!r.ok()) return Refuse(kMalformed, 400, std::string(r.status().message()));
    report = *std::move(r);
  } else if (req.if_match.empty() && req.expires != 0) {
    return Refuse(kMalformed, 400, "an initial report needs a JSON body");
  }
  absl::StatusOr<Credential> cred = ParseCredential(req.auth);
  if (!cred.ok()) {
    return Refuse(kSignature, 403, req.auth.empty() ? "missing X-Approute-Auth" : std::string(cred.status().message()));
  }

  RegistryLock g(h);
  uint32_t slot = kNil;
  if (!req.if_match.empty()) {
    slot = FindEtagLocked(req.if_match);
    if (slot == kNil) return Refuse(kEtag, 412, Cat("no report with entity tag ", req.if_match));
    if (report && report->node != GetFixed(region_.node(slot).id)) {
      return Refuse(kMalformed, 400,
                    Cat("the report is for node ", report->node, " but the entity tag is node ",
                        GetFixed(region_.node(slot).id), "'s"));
    }
  } else if (report) {
    slot = nodes_.FindLocked(report->node);
  }
  if (!report && slot == kNil) return Refuse(kMalformed, 400, "a leave needs a JSON body or SIP-If-Match");
  std::string pool = report ? report->pool : std::string(GetFixed(region_.node(slot).pool));
  auto keys = pol.status.keys.find(pool);
  if (keys == pol.status.keys.end()) return Refuse(kSignature, 403, Cat("no status key configured for pool ", pool));
  auto key = keys->second.find(cred->keyid);
  if (key == keys->second.end())
    return Refuse(kSignature, 403, Cat("unknown key id ", cred->keyid, " for pool ", pool));
  if (cred->ts > INT64_MAX / 1000 || cred->ts < INT64_MIN / 1000 ||
      std::llabs(cred->ts * 1000 - now) > pol.status.replay_window_ms) {
    return Refuse(kReplay, 403, Cat("timestamp ", cred->ts, " is outside the replay window"));
  }
  // The signature binds the node, the entity tag and the lease to the body.
  std::string node = report ? report->node : std::string(GetFixed(region_.node(slot).id));
  std::string expect =
      HmacSha256Hex(key->second, ReportSigningString(cred->ts, node, req.if_match, req.expires, req.body));
  if (!SignaturesEqual(expect, cred->sig)) return Refuse(kSignature, 403, "bad signature");

  if (report) {
    if (slot != kNil) {
      const NodeRecord& n = region_.node(slot);
      if (!n.from_report) return Refuse(kTakeover, 403, Cat("node id ", report->node, " is configured, not reported"));
      if (GetFixed(n.uri) != report->uri && !NodeTable::LeaseExpired(region_.hot(slot), now)) {
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
      NodeRecord& n = region_.node(slot);
      region_.hot(slot).lease_expires_ms.store(now, std::memory_order_relaxed);
      n.report_at_ms.store(now, std::memory_order_relaxed);
      n.etag[0] = 0;
      if (report) n.last_seq = report->seq;
      out.node_id = std::string(GetFixed(n.id));
    }
    h.reports_accepted.fetch_add(1, std::memory_order_relaxed);
    return out;
  }
  if (report) {
    if (absl::Status st = WriteReportLocked(&slot, *report, now); !st.ok()) {
      const bool full = st.code() == absl::StatusCode::kResourceExhausted;
      return Refuse(full ? kFull : kMalformed, full ? 503 : 400, std::string(st.message()));
    }
  }
  NodeRecord& n = region_.node(slot);
  int64_t granted = std::min(req.expires, pol.status.max_expires_s);
  region_.hot(slot).lease_expires_ms.store(now + granted * 1000, std::memory_order_relaxed);
  n.report_at_ms.store(now, std::memory_order_relaxed);
  std::string etag = Cat(absl::Hex(random, absl::kZeroPad16));
  SetFixed(n.etag, etag);
  out.etag = etag;
  out.node_id = std::string(GetFixed(n.id));
  out.expires = granted;
  h.reports_accepted.fetch_add(1, std::memory_order_relaxed);
  return out;
}

}  // namespace approute::internal
