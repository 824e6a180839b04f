// cluster_members.h — the nodes that joined by status report, shared by every
// proxy of a deployment: one record per node in Redis (cluster_scripts.h,
// the `members` hash), written by the proxy that accepted the report and
// merged into every proxy's node table.
//
// A record is JSON: {"seq", "at", "lease", "etag", "report"}: the node's last
// accepted seq, the wall ms the report was accepted, the lease deadline
// (wall ms; at or before "at" for a leave), the entity tag the node refreshes
// with, and "report", a status report body (report.h) with the node's
// static fields and last load and quality figures, read back with
// ParseStatusReport.
//
// Order: record a replaces b when a.seq > b.seq, or b's lease is over and
// a.at > b.at (a node id taken over after its lease); with equal seqs, when
// a.at > b.at (a refresh or a leave by entity tag); at the same ms, a leave
// (lease <= at) wins, then the longer lease, then the greater entity tag, so
// that every proxy settles on the same record. The script that stores
// records applies the same rule (kMembers), so a record replayed or
// published late never undoes a newer one. Report times are wall clocks of
// different proxies: keep them in sync (NTP) as for the leases themselves.
//
// Merging: a record for a node absent here joins it (unless its lease is
// over); a newer one updates, refreshes or ends its lease; a node declared
// here in the YAML or through the API is never replaced by a record. A node
// whose lease is over is removed by the node table once its sessions end,
// as for a leave received here.
//
// Thread-safety: Encode and Merge take the registry mutex.
#ifndef APPROUTE_SRC_PLACEMENT_CLUSTER_MEMBERS_H_
#define APPROUTE_SRC_PLACEMENT_CLUSTER_MEMBERS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "state/node_table.h"
#include "status/status_reports.h"

namespace approute::internal {

class ClusterMembers {
 public:
  // A lapsed record is kept this long after its lease, then forgotten.
  static constexpr int64_t kForgetMs = 60000;

  ClusterMembers(const Region& region, NodeTable& nodes, StatusReports& reports)
      : region_(region), nodes_(nodes), reports_(reports) {}

  // The record of the node in `slot` if it joined by status report.
  std::optional<std::string> Encode(uint32_t slot) const;
  // (node id, record) for every node here that joined by status report.
  std::vector<std::pair<std::string, std::string>> EncodeAll() const;
  // Applies the deployment's records; unreadable ones are skipped. Returns
  // how many changed this host's node table.
  int Merge(const std::vector<std::pair<std::string, std::string>>& records, int64_t now);

 private:
  std::string EncodeLocked(uint32_t slot) const;

  const Region& region_;
  NodeTable& nodes_;
  StatusReports& reports_;
};

}  // namespace approute::internal

#endif  // APPROUTE_SRC_PLACEMENT_CLUSTER_MEMBERS_H_
