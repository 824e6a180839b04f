// approute/router.h — the router: node registry, routing, sessions, affinity.
//
// A Router owns a handle on one state region (docs/design.md, "State"):
//   - private: the region lives in this process's memory;
//   - shared:  the region is the POSIX shared-memory segment `options.shared`,
//              created if absent, attached if present. Every process that
//              opens the same name sees one node table, one session table, one
//              affinity table and one set of strategy cursors. A region created
//              before fork() is shared with the children as well.
//
// Thread-safety: all methods may be called concurrently from any number of
// threads and processes. Tables are sharded behind process-shared robust
// mutexes (a process killed while holding one does not wedge the others);
// counters are lock-free atomics. No routing method holds two table locks at
// once. A process killed at any instruction leaves nothing that drifts: once
// its calls have ended or expired, every node's count equals its live
// sessions again (the sweep recounts after such a death; docs/state.md).
// No method lets an exception escape: an unexpected one becomes Internal.
//
// Errors: absl::Status codes with a message that says what is wrong:
//   InvalidArgument   bad argument or configuration (the message names it)
//   NotFound          unknown node, unknown call id, unknown app with no default
//   ResourceExhausted a table is full (sessions, affinities, nodes)
//   FailedPrecondition a segment of another layout/capacity, or not initialised
//   AlreadyExists     a node id already present
// A call that fails changes nothing.
#ifndef APPROUTE_ROUTER_H_
#define APPROUTE_ROUTER_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "approute/config.h"
#include "approute/explain.h"
#include "approute/limits.h"
#include "approute/strategy.h"
#include "approute/types.h"

namespace approute {

struct RouterOptions {
  // Empty: private placement. Otherwise the shared segment's name
  // ("approute-demo" or "/approute-demo"; [A-Za-z0-9_.-], at most 200 bytes).
  std::string shared;
  // Clock in unix milliseconds. Default: the real-time clock. Every process
  // sharing a region must use the same clock; tests install a manual one.
  std::function<int64_t()> now_ms;
  // This router's own strategies (python: names, per-router registrations),
  // consulted before the built-ins. Shared with whoever installed it.
  std::shared_ptr<StrategyResolver> strategies;
  // Nonzero: strategies draw random numbers from one sequence seeded with it,
  // so a single-threaded run is reproducible (simulations, tests).
  uint64_t random_seed = 0;
  // Upkeep: nonzero starts a thread that calls Sweep() every this many ms
  // (10..7500: under half the cluster lease), so that a process that routes
  // rarely keeps its cluster lease and republishes its shares, and expired
  // sessions are swept. Off by default: nothing in the library runs by
  // itself otherwise. The thread stops in the Router's destructor. Never
  // turn it on in a process that forks afterwards (Kamailio's main process:
  // its workers route and the configuration's timer sweeps instead); a
  // forked child has no such thread. FromYaml and FromFile (Attach, for
  // operator tools, ignores it).
  int64_t upkeep_interval_ms = 0;
};

class Router {
 public:
  // Parses and validates `yaml`, then creates or attaches the region and
  // applies the configuration (as Reload does when the region already holds
  // one). Limits from `state:` must match an existing segment's.
  static absl::StatusOr<std::unique_ptr<Router>> FromYaml(std::string_view yaml, RouterOptions options = {},
                                                          std::string_view source = "<yaml>");
  static absl::StatusOr<std::unique_ptr<Router>> FromFile(const std::string& path, RouterOptions options = {});
  // Attaches an existing segment and its stored configuration. NotFound if no
  // such segment; FailedPrecondition if its layout is not this library's.
  static absl::StatusOr<std::unique_ptr<Router>> Attach(const std::string& shared, RouterOptions options = {});
  // Removes a segment's name. Returns false when there was none. Processes
  // that have it mapped keep using it.
  static absl::StatusOr<bool> Unlink(const std::string& shared);

  ~Router();
  Router(const Router&) = delete;
  Router& operator=(const Router&) = delete;

  // docs/design.md, "Routing flow". A second route() for a call id already routed returns
  // its current node with reason "session". ok=false with reason "no_node"
  // when no candidate is left (the detail says why); errors are for bad input
  // and full tables.
  absl::StatusOr<Decision> Route(const RouteRequest& request);
  // The call's node bounced it with `code`. A retryable code marks that node
  // tried, moves the session's counts off it, releases its claim on the key
  // when `code` is a full code, and picks again among nodes never tried for
  // the call. Non-retryable code, max_attempts reached or no node left: the
  // session ends and ok=false (reason "not_retryable" for a code that is not
  // one of the app's retry codes, else "no_node"). NotFound for an unknown
  // call id.
  absl::StatusOr<Decision> Retry(std::string_view call_id, int code = 503);
  // The placement `request` would get now, as a dry run, with the trace of
  // every step (approute/explain.h): reserves, claims and counts nothing.
  // Errors as Route (InvalidArgument, NotFound for an unknown app), and
  // NotFound for a request.call_id with no live session.
  absl::StatusOr<ExplainTrace> Explain(const ExplainRequest& request) const;
  // The call was answered (2xx): its claim on the key is a real one.
  absl::Status Confirm(std::string_view call_id);
  // The call ended (BYE): counts drop; the key's claim enters its grace time
  // once its last session has ended.
  absl::Status End(std::string_view call_id);
  // The call ended without being answered (CANCEL, a final failure, a relay
  // error): as End, except that a claim no answered call ever held goes at
  // once instead of entering its grace time, so callers whose calls never
  // get through cannot fill the affinity table. A retry() that ends the
  // session applies the same rule.
  absl::Status Abandon(std::string_view call_id);

  absl::Status AddNode(const NodeSpec& spec);
  absl::Status UpdateNode(const NodeSpec& spec);  // keeps sessions; NotFound if absent
  absl::Status RemoveNode(std::string_view id);   // its sessions' counts vanish with it
  // kDraining is Drain(id) without a deadline; any other state ends a drain.
  absl::Status SetState(std::string_view id, AdminState state);
  // Drains a node: it takes no new keys; the keys it holds follow their
  // sessions to it until the last one ends, then are released at once (no
  // grace time). `deadline_ms` (from now, >= 0): after it, the keys it still
  // holds count as gone and their new calls go elsewhere, so the node is
  // empty within the deadline plus its longest call. Without one, a key
  // with steady traffic may keep it busy. Draining a draining node again
  // without a deadline keeps its deadline; with one, replaces it.
  // InvalidArgument for a negative deadline, NotFound for an unknown node.
  absl::Status Drain(std::string_view id, std::optional<int64_t> deadline_ms = std::nullopt);
  absl::Status SetHealth(std::string_view id, Health health);
  // Replaces the node's reported load. Names: [A-Za-z0-9_.]{1,31}; values finite.
  // A figure named after a resource is the node's own count of it: it bounds
  // admission as a status report's load.<resource> does (docs/design.md,
  // "Admission: the nodes' own counts"), from now for status.usage_max_age.
  absl::Status ReportLoad(std::string_view id, const std::map<std::string, double>& metrics);

  // Applies a status report (docs/status-package.md): checks the source network,
  // the HMAC signature under the pool's key, the timestamp window and the
  // sequence number (replay), that the node id is not held by another URI or
  // by a configured node, and that the URI points into an allowed network;
  // then joins, updates, refreshes (if_match, empty body) or leaves
  // (expires 0) the node. A refused report changes nothing and is counted.
  ReportResult ApplyReport(const ReportRequest& report);
  // An active probe's result: code 0 = no answer. down_after consecutive
  // failures (no answer, 408, a 5xx other than 503) mark the node down,
  // up_after answers bring it back (slow start). A 503 means "alive, not
  // taking calls now": the node is busy (no new keys, no key-less calls;
  // calls of keys it holds still go) for `retry_after_s` (the answer's
  // Retry-After in seconds, cut to health.busy_max) or health.busy_for
  // without one; its health is unchanged, and a later 2xx probe ends the
  // busy period at once, with no slow start. InvalidArgument for a code
  // outside 0..699, a negative or non-finite rtt_ms, or a retry_after_s
  // outside 0..86400.
  absl::Status ReportProbe(std::string_view id, int code, double rtt_ms,
                           std::optional<double> retry_after_s = std::nullopt);
  // A passive result from the proxy (final response or timeout = 0), for
  // outlier detection and the latency/error figures load-aware strategies
  // use. A 503 makes the node busy as ReportProbe does (a 2xx answer to a
  // call does not end it: calls of held keys reach a busy node).
  absl::Status ReportCallResult(std::string_view id, int code, double latency_ms,
                                std::optional<double> retry_after_s = std::nullopt);
  // RFC 7339 overload control (loss algorithm), from the Via parameters of
  // the node's answer: shed `percent` % (0..100) of the new calls (key-less
  // calls and new keys; keys it holds are not shed) that would go to the
  // node, for `validity_ms` (0..86,400,000) from now. `seq` is the answer's
  // oc-seq as an integer that grows with it (the handler maps
  // "<seconds>.<fraction>" to seconds x 100000 + the fraction in 5 digits):
  // a report older than the one applied is ignored, and so is an equal one
  // while the applied period runs (RFC 7339 section 5.4: it neither renews
  // nor changes it; once the period is over it starts a new one). percent 0
  // or validity_ms 0 ends overload control.
  // InvalidArgument for values out of range, NotFound for an unknown node.
  absl::Status ReportOverload(std::string_view id, int percent, int64_t validity_ms, uint64_t seq);

  absl::StatusOr<NodeStatus> Node(std::string_view id) const;
  std::vector<NodeStatus> Nodes() const;
  RouterStats Stats() const;
  // The cluster placement's mode and figures (mode "local" without `cluster:`).
  // Asks Redis for the live proxies: for operators, not the call path.
  ClusterStatus Cluster() const;
  // Live sessions / affinity claims matching `filter`, in no particular
  // order. Takes each table shard's lock in turn: for operators, not the
  // call path.
  std::vector<SessionInfo> Sessions(const ListFilter& filter = {}) const;
  std::vector<AffinityInfo> Affinities(const ListFilter& filter = {}) const;

  // Validates `yaml` fully, then applies it: config nodes are added, updated in
  // place (keeping sessions and affinities) or removed; nodes added through
  // AddNode stay. Every process sharing the region picks up the new policies.
  absl::Status Reload(std::string_view yaml, std::string_view source = "<yaml>");
  // Ends sessions past their lifetime and forgets affinities past their grace
  // time. Routing also does this a little at a time; returns sessions expired.
  int64_t Sweep();

  const std::string& shared_name() const;

  class Impl;

 private:
  explicit Router(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace approute

#endif  // APPROUTE_ROUTER_H_
