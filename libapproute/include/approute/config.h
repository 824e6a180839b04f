// approute/config.h — the YAML configuration, parsed and validated.
//
// ParseConfig either returns a complete, valid Config or an InvalidArgument
// whose message lists every error the parse found, one per line in source
// order (at most 50, then a count), each naming the source, line, column and
// key path, e.g.
//   router.yaml:12:15: apps.conference.strategy: unknown strategy "fastest"
//   router.yaml:20:7: nodes[2].weight: value -1 is outside 0..1000000
// After an error the parse goes on with the next key or list element; a YAML
// syntax error stops it (nothing after it can be read).
// Nothing is applied by parsing. Thread-safety: pure functions.
#ifndef APPROUTE_CONFIG_H_
#define APPROUTE_CONFIG_H_

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "approute/strategy.h"
#include "approute/types.h"

namespace approute {

struct StateLimits {
  int64_t max_nodes = 256;
  int64_t max_sessions = 65536;
  int64_t max_affinities = 65536;
};

struct AppConfig {
  std::string name;
  std::string pool = "default";
  std::string strategy = "round_robin";
  StrategyParams strategy_params;
  // The resource a session counts against (`resource: name`), or the first
  // of several (`resource: [conference, channels]`): the one strategies and
  // the load bound read.
  std::string resource{kDefaultResource};
  // Every resource a session of the app takes one unit of, `resource` first
  // (1..kMaxResources distinct names). A session holds a unit of each or of
  // none: a node full for any of them takes no call of the app.
  std::vector<std::string> resources{std::string(kDefaultResource)};
  bool affinity = false;          // `affinity:` present
  int64_t affinity_grace_ms = 0;  // kept this long after the key's last session ends
  // `affinity.bound` (> 1.0; 0 = none): an affinity hit is taken only while
  // its node's load for `resource` (sessions / capacity, or / weight when
  // the capacity is unlimited) stays within bound x the mean over the app's
  // candidates; otherwise the call goes to the key's next home, its
  // rendezvous-hash order over the nodes within the bound.
  double affinity_bound = 0;
  // `affinity.strict`: while a key has live sessions on a node, every new
  // call of the key goes to that node or to no node (route() answers ok =
  // false, reason key_full, key_down, key_draining, key_disabled or
  // key_tried); a key with no live session (only its grace left) may move.
  bool affinity_strict = false;
  // `affinity.headroom` (0 <= h < 1): a node takes a call for a new key only
  // while its count for each of `resources` is below (1 - h) x capacity;
  // calls of keys it already holds may fill it to capacity.
  double affinity_headroom = 0;
  std::vector<int> retry_codes;  // codes that make retry() pick again (default 503)
  std::vector<int> full_codes;   // codes that release the node's claim on the key (default: retry_codes)
  int max_attempts = 3;          // placements per call, first one included (1..16)
  // `retry.budget` (Envoy's and Finagle's retry budget): in each second,
  // retry() picks again for at most budget_percent % of the app's calls in
  // flight plus budget_min_per_second; past it, it answers no node at once
  // (reason "retry_budget"). budget_percent < 0 = no budget (the default).
  double retry_budget_percent = -1;
  int64_t retry_budget_min_per_second = 0;
  int64_t session_lifetime_ms = 4 * 3600 * 1000;  // a session never ended expires after this
};

// Who may report status (docs/status-package.md, "Security model") and how reports are checked.
struct StatusConfig {
  std::vector<std::string> allow_sources;  // CIDRs ("127.0.0.0/8", "::1/128"); empty = refuse all
  std::vector<std::string> allow_uris;     // CIDRs a reported node URI may point into; empty = allow_sources
  // pool -> key id -> secret: HMAC-SHA256 over "<ts>\n<node>\n<etag>\n<expires>\n<body>"
  // (approute::ReportSigningString, docs/status-package.md "Security model").
  std::map<std::string, std::map<std::string, std::string>> keys;
  int64_t replay_window_ms = 30'000;  // a signature's timestamp must be this close to now
  int64_t max_expires_s = 3600;       // longer leases are cut to this
  // How long a node's reported count of a resource (load.<resource>) bounds
  // its admission after the report; its lease bounds it too.
  int64_t usage_max_age_ms = 30'000;
};

// Active probes, passive outlier detection, panic mode and slow start.
struct HealthConfig {
  int probe_down_after = 3;  // consecutive failed probes before a node is down
  int probe_up_after = 2;    // consecutive good probes before it is up again
  int outlier_consecutive_failures = 5;
  int64_t outlier_base_ejection_ms = 30'000;  // ejection = base x number of ejections so far
  int64_t outlier_max_ejection_ms = 300'000;
  int outlier_max_ejected_percent = 50;                              // never eject more of a pool than this
  std::vector<int> outlier_failure_codes = {0, 408, 500, 502, 504};  // 0 = no answer
  int panic_threshold = 0;    // % of a pool healthy below which health is ignored; 0 = never
  int64_t slow_start_ms = 0;  // a node that comes back ramps its share over this window; 0 = off
  double latency_ewma_alpha = 0.3;
  // A node that answers 503 (probe or call) is busy for its Retry-After,
  // cut to busy_max_ms, or busy_for_ms without one (0 = not at all).
  int64_t busy_for_ms = 5'000;
  int64_t busy_max_ms = 300'000;
};

// Several proxies routing as one through Redis (docs/cluster.md). Absent
// from the YAML: `enabled` is false and this host's region is the only state.
struct ClusterConfig {
  bool enabled = false;  // `cluster:` present
  // redis://[[user]:password@]host[:port][/db], unix:///path[?db=N&password=P], or
  // redis+sentinel://[[user]:password@]host:26379,host:26379,.../primary-name[/db]
  std::string redis;
  std::string sentinel_password;  // the sentinels' own AUTH password (redis+sentinel:// only; "" = none)
  std::string name;               // deployment name: proxies with the same name share one state
  std::string proxy;              // this proxy's id in the deployment (default: the host name)
  int64_t timeout_ms = 5;         // per Redis round trip; past it the call routes on local state
  // While Redis is out, this proxy holds on a node at most its share at the
  // last sync plus this percentage of the node's capacity split over the
  // proxies seen then (rounded up), and never more than the capacity.
  int64_t outage_headroom_pct = 10;
  // Reservation blocks (docs/cluster.md, "Reservation blocks"): on a node
  // with a capacity, a reservation that needs a round trip takes up to this
  // many units for this proxy at once, and the next reservations there are
  // answered from them on this host without one. 0 or 1: off (one script
  // per reservation).
  int64_t reserve_block = 1;
};

struct Config {
  StateLimits state;
  ClusterConfig cluster;
  StatusConfig status;
  HealthConfig health;
  std::vector<NodeSpec> nodes;
  std::map<std::string, AppConfig> apps;
  std::string text;  // the YAML as given, kept so attach() can rebuild the policies
};

// `source` names the text in error messages (a file path, or "<yaml>").
absl::StatusOr<Config> ParseConfig(std::string_view yaml, std::string_view source = "<yaml>");
// The same, where apps may also name the strategies `resolver` knows.
// "python:module:Class" names are always accepted when their syntax is valid.
absl::StatusOr<Config> ParseConfig(std::string_view yaml, std::string_view source, const StrategyResolver* resolver);
absl::StatusOr<Config> LoadConfigFile(const std::string& path);

// Validates one node the way the config does (id, SIP URI, weight, capacity).
absl::Status ValidateNodeSpec(const NodeSpec& spec);
// Checks a SIP/SIPS URI: scheme, optional user, host (name, IPv4, [IPv6]), port, params.
absl::Status ValidateSipUri(std::string_view uri);
// The host part of a valid SIP URI ("10.0.0.5", "ast1.example.com", "2001:db8::1");
// "" for text that is not one (empty, longer than 255 bytes, or malformed).
std::string SipUriHost(std::string_view uri);

}  // namespace approute

#endif  // APPROUTE_CONFIG_H_
