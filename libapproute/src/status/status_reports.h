// status_reports.h — applying approute-status reports (SIP PUBLISH): the
// source network, the HMAC signature under the pool's key, the replay
// window and sequence numbers, entity tags, takeover checks; then the join,
// update, refresh or leave in the node table.
//
// Owns: the report fields of the node records (from_report, etag, last_seq,
// lease), Header::reports_accepted / reports_refused.
// Locking: the registry mutex, for the whole check-and-apply of one report,
// so two reports for one node are applied one after the other.
// Crash: a report is checked completely before anything is written; a
// process killed while writing leaves the node as an update half-applied
// (node_table.h), and its next report sets it right.
#ifndef APPROUTE_SRC_STATUS_STATUS_REPORTS_H_
#define APPROUTE_SRC_STATUS_STATUS_REPORTS_H_

#include <cstdint>
#include <string>

#include "approute/types.h"
#include "routing/policies.h"
#include "state/node_table.h"
#include "status/report.h"

namespace approute::internal {

// Why a report was refused; the index into Header::reports_refused.
enum Refusal { kSource, kSignature, kReplay, kTakeover, kUri, kMalformed, kEtag, kFull };
inline constexpr const char* kRefusalNames[] = {"source", "signature", "replay", "takeover",
                                                "uri",    "malformed", "etag",   "full"};

class StatusReports {
 public:
  StatusReports(const Region& region, NodeTable& nodes) : region_(region), nodes_(nodes) {}

  // Checks and applies one report. Never changes anything unless code is 200.
  ReportResult Apply(const ReportRequest& req, const Policies& pol, int64_t now, uint64_t random);

  // Writes the node of a checked report (signature, source, seq and takeover
  // already checked, here or at the proxy that accepted it): into *slot, or
  // a free slot when *slot is kNil (set on return). Registry mutex held.
  // InvalidArgument (resources or metric names over the limits) or
  // ResourceExhausted (no free slot): nothing changed. The lease, entity
  // tag and report time are the caller's to set.
  absl::Status WriteReportLocked(uint32_t* slot, const StatusReport& report, int64_t now);

 private:
  ReportResult Refuse(Refusal why, int code, std::string reason);
  uint32_t FindEtagLocked(std::string_view etag) const;

  const Region& region_;
  NodeTable& nodes_;
};

}  // namespace approute::internal

#endif  // APPROUTE_SRC_STATUS_STATUS_REPORTS_H_
