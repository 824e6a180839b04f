// approute/types.h — plain value types shared by the whole public API.
//
// Everything here is a value: copyable, no references into router state.
// Thread-safety: values are not synchronised; copy them freely.
#ifndef APPROUTE_TYPES_H_
#define APPROUTE_TYPES_H_

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace approute {

// Administrative state, set by operators.
//   kActive:   takes new calls and new affinity keys.
//   kDraining: keeps its sessions and the affinity keys it already holds,
//              takes no new keys and no key-less calls.
//   kDisabled: takes nothing new; existing sessions run out.
enum class AdminState : uint32_t { kActive = 0, kDraining = 1, kDisabled = 2 };

// Health of a node: set through the API (Router::SetHealth) and by active
// probe results (Router::ReportProbe, with HealthConfig's hysteresis).
// Passive results (Router::ReportCallResult) eject outliers for a while
// without changing it.
//   kUp: candidate.  kSuspect: candidate only when no kUp node is.  kDown: never.
enum class Health : uint32_t { kUp = 0, kSuspect = 1, kDown = 2 };

std::string_view AdminStateName(AdminState s);
std::string_view HealthName(Health h);
absl::StatusOr<AdminState> ParseAdminState(std::string_view s);
absl::StatusOr<Health> ParseHealth(std::string_view s);

// The name of the resource a session counts against when an app names none.
inline constexpr std::string_view kDefaultResource = "calls";

// A node as configured. Strings are bounded (see limits in router.h).
struct NodeSpec {
  std::string id;   // [A-Za-z0-9_.:-]{1,63}
  std::string uri;  // a sip: or sips: URI, validated
  std::string pool = "default";
  int32_t weight = 1;                       // >= 0; 0 takes no calls from weighted strategies
  int32_t priority = 0;                     // lower is preferred by `priority`
  std::map<std::string, int64_t> capacity;  // resource -> max concurrent sessions; absent = unlimited
  std::map<std::string, std::string> attrs;
  AdminState state = AdminState::kActive;
};

// A node as the router sees it now.
struct NodeStatus {
  NodeSpec spec;
  Health health = Health::kUp;
  // The node's own report says "health": "down" (its agent cannot reach the
  // service); health is then down whatever the probes say.
  bool reported_down = false;
  std::map<std::string, int64_t> sessions;  // resource -> live sessions (every known resource)
  std::map<std::string, double> load;       // last reported metrics
  int64_t load_updated_ms = 0;              // unix ms of the last report, 0 = never
  uint64_t routed_total = 0;                // sessions ever placed on this node
  std::map<std::string, double> quality;    // last reported quality figures (mos, rtt_ms_p50, ...)
  std::string origin;                       // "config" | "api" | "report"
  int64_t lease_expires_ms = 0;             // 0 = no lease (config/API nodes)
  int64_t ejected_until_ms = 0;             // 0 = not ejected by outlier detection
  // The node answered 503 (a probe or a call): alive, but taking no new
  // keys and no key-less calls until this unix ms (its Retry-After, or
  // health.busy_for); 0 = not busy. Health is unchanged by it.
  int64_t busy_until_ms = 0;
  // RFC 7339 overload control: the node asked for this share (1..100) of
  // new calls to be shed until overload_until_ms; 0 = none in force.
  int32_t overload_percent = 0;
  int64_t overload_until_ms = 0;
  double latency_ewma_ms = 0;  // 0 = no sample
  double error_rate = 0;       // smoothed share of failed results
};

// One status report (SIP PUBLISH, event package approute-status), as the
// proxy received it. See docs/status-package.md.
struct ReportRequest {
  std::string body;        // JSON; empty for a refresh (with if_match)
  int64_t expires = 3600;  // the Expires header: the lease in seconds; 0 = leave
  std::string source;      // the sender's IP address
  std::string auth;        // X-Approute-Auth: "keyid=K,ts=UNIX,sig=HEX"
  std::string if_match;    // SIP-If-Match, empty for an initial report
};

// The outcome as a SIP response: 200 (etag set), 400 malformed, 403 refused,
// 412 unknown entity tag, 503 no room for another node. Never changes
// anything unless code is 200.
struct ReportResult {
  int code = 0;
  std::string reason;  // what was wrong, fit for a reason phrase
  std::string etag;
  std::string node_id;
  int64_t expires = 0;  // lease granted (seconds)
};

// What a status report's signature covers, so that a signature seen on the
// wire cannot be replayed for another node, entity tag or lease:
//   "<ts>\n<node>\n<etag>\n<expires>\n<body>"
// node: the reporting node's id; etag: the request's SIP-If-Match ("" for an
// initial report); expires: its Expires header; body: as sent ("" for a
// refresh or a leave without one).
std::string ReportSigningString(int64_t ts, std::string_view node, std::string_view etag, int64_t expires,
                                std::string_view body);
// The X-Approute-Auth value: "keyid=K,ts=T,sig=HEX", HEX the HMAC-SHA256
// under `secret` of ReportSigningString(ts, node, etag, expires, body).
std::string SignReport(std::string_view body, std::string_view keyid, std::string_view secret, int64_t ts,
                       std::string_view node, std::string_view etag, int64_t expires);

// What the caller knows about one request.
struct RouteRequest {
  std::string app;  // policy name; unknown -> "default" policy
  // Required. Call id and key: up to kMaxInputLen bytes; over 127 they are
  // stored (and listed, and seen by strategies) as a prefix plus the XXH3-128
  // digest of the whole value (limits.h, docs/state.md).
  std::string call_id;
  std::string key;  // affinity key; empty = no affinity; never starts with byte 0x1f
  // A preference for a new key (e.g. the caller's domain): a key seen for
  // the first time goes to the node that holds the app's preference value,
  // if that node can take it within the app's bound and headroom; else the
  // strategy picks and the preference follows. Soft: never refuses a call.
  // Empty = none; used only with a key, for an app with affinity.
  std::string prefer;
  std::vector<std::string> exclude;          // node ids never to choose for this call
  std::map<std::string, std::string> attrs;  // hash inputs ("from", "to", "ruri_user") and more
};

// The answer. When ok is false, node_id and uri are empty and detail says why.
struct Decision {
  bool ok = false;
  std::string node_id;
  std::string uri;
  // "affinity" | "affinity_bound" (the key's next home, affinity.bound) |
  // "prefer" (a new key on its preference's node) | "strategy" | "retry" |
  // "session" | "no_node" | "not_retryable" (retry() with a code that is not
  // one of the app's retry codes) | "retry_budget" (retry() past the app's
  // retry.budget: no node, at once) | for a strict key whose node cannot take
  // the call (ok false): "key_full" | "key_down" | "key_draining" |
  // "key_disabled" | "key_tried" (retry(): the key's node was tried).
  std::string reason;
  std::string detail;  // human-readable why (always set when !ok)
  std::string app;     // the policy that decided (after default fallback)
  int attempt = 0;     // 1 for the first placement, +1 per retry
};

// Counts for the whole router.
struct RouterStats {
  int64_t nodes = 0;
  int64_t sessions = 0;
  int64_t affinities = 0;  // live claims (held, or within their grace time)
  int64_t max_nodes = 0;
  int64_t max_sessions = 0;
  int64_t max_affinities = 0;
  int64_t expired_sessions = 0;  // sessions ended by lifetime expiry, ever
  int64_t reports_accepted = 0;
  // Refused status reports by why: source, signature, replay, takeover, uri, malformed, etag, full.
  std::map<std::string, int64_t> reports_refused;
  // Routing decisions by app and reason (affinity, strategy, retry, session,
  // no_node), and retries by app and SIP code ("other" when more than 8
  // codes were seen), from every process sharing the region.
  std::map<std::string, std::map<std::string, int64_t>> decisions;
  std::map<std::string, std::map<std::string, int64_t>> retries;
  // Calls of a strict key refused, by app and reason (key_full, key_down,
  // key_draining, key_disabled, key_tried), and calls for a new key that
  // found no node because affinity.headroom turned nodes away, by app.
  std::map<std::string, std::map<std::string, int64_t>> key_refusals;
  std::map<std::string, int64_t> headroom_refusals;
  // Retries refused by the app's retry.budget, by app.
  std::map<std::string, int64_t> budget_refusals;
  // Nodes busy now (answered 503, within their Retry-After) and nodes under
  // RFC 7339 overload control now.
  int64_t busy_nodes = 0;
  int64_t overloaded_nodes = 0;
  // A sample of route() latencies (one call in 16 per thread): cumulative
  // counts by upper bound in seconds (the last is +infinity), sum, count.
  struct Histogram {
    std::vector<std::pair<double, int64_t>> buckets;
    double sum = 0;
    int64_t count = 0;
  } route_seconds;
  int64_t processes = 0;        // live processes registered with the state region
  int64_t repairs = 0;          // recounts after a process died inside a state change, ever
  int64_t repaired_counts = 0;  // node counts those recounts corrected (sum of |old - new|), ever
};

// Router::Cluster(): the state shared with the deployment's other proxies.
struct ClusterStatus {
  std::string mode = "local";        // "local" (no cluster:), "cluster", "degraded" (Redis out: local state only)
  std::string name;                  // deployment
  std::string proxy;                 // this proxy's id
  std::vector<std::string> proxies;  // live proxies of the deployment (empty while Redis is out)
  int64_t last_sync_ms = 0;          // wall clock of the host's last good Redis round trip, 0 = never
  int64_t degraded_placements = 0;   // reservations made on local state alone, ever (this host)
  int64_t outage_refusals = 0;  // reservations refused while Redis was out: past this proxy's outage share (this host)
  int64_t round_trips = 0;      // good Redis round trips, ever (this host)
  int64_t failures = 0;         // failed or timed-out ones, ever (this host)
  int64_t rtt_p50_us = 0;       // round trip quantiles, power-of-two bucket bounds; 0 = none yet
  int64_t rtt_p99_us = 0;
  // The Redis primary this process last connected to ("host:port" or the
  // socket path; "" = none yet): with redis+sentinel://, the one the
  // sentinels named.
  std::string primary;
  // Since this host last renewed its lease and republished (its sweep),
  // in ms; -1 = not yet.
  int64_t lease_age_ms = -1;
  // Non-empty when this proxy's lease is close to lapsing (no renewal for
  // half the lease or more, or none yet): its shares and claims are about to
  // stop counting in the deployment. Route calls, call Sweep() more often,
  // or turn on RouterOptions::upkeep_interval_ms.
  std::string warning;
  // Why Redis is out while degraded (one round trip is tried to find out),
  // e.g. "redis: cannot connect to 127.0.0.1:6390: Connection refused";
  // otherwise this process's last failed round trip ("" = none).
  std::string last_error;
};

// Which sessions or affinities to list: empty strings match everything.
struct ListFilter {
  std::string app;
  std::string node;
  size_t limit = 0;  // 0 = no limit
};

// One live session, as Router::Sessions lists it.
struct SessionInfo {
  std::string call_id;
  std::string app;
  std::string node_id;  // empty while a retry is choosing, or when its node was removed
  std::string key;      // the affinity key the session holds a claim on; empty = none
  int64_t created_ms = 0;
  int64_t expires_ms = 0;
  int attempt = 0;
  bool confirmed = false;
};

// One affinity claim, as Router::Affinities lists it.
struct AffinityInfo {
  std::string app;
  std::string key;
  std::string node_id;     // empty when its node was removed
  int64_t sessions = 0;    // live sessions holding it
  int64_t expires_ms = 0;  // end of its grace time; 0 while sessions > 0
};

}  // namespace approute

#endif  // APPROUTE_TYPES_H_
