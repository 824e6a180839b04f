// approute/config.h — the YAML configuration, parsed and validated.
//
// ParseConfig either returns a complete, valid Config or an InvalidArgument
// whose message names the source, line, column and key path, e.g.
//   router.yaml:12:15: apps.conference.strategy: unknown strategy "fastest"
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
  std::string resource{kDefaultResource};
  bool affinity = false;          // `affinity:` present
  int64_t affinity_grace_ms = 0;  // kept this long after the key's last session ends
  std::vector<int> retry_codes;   // codes that make retry() pick again (default 503)
  std::vector<int> full_codes;    // codes that release the node's claim on the key (default: retry_codes)
  int max_attempts = 3;           // placements per call, first one included (1..16)
  int64_t session_lifetime_ms = 4 * 3600 * 1000;  // a session never ended expires after this
};

struct Config {
  StateLimits state;
  std::vector<NodeSpec> nodes;
  std::map<std::string, AppConfig> apps;
  std::string text;  // the YAML as given, kept so attach() can rebuild the policies
};

// `source` names the text in error messages (a file path, or "<yaml>").
absl::StatusOr<Config> ParseConfig(std::string_view yaml, std::string_view source = "<yaml>");
absl::StatusOr<Config> LoadConfigFile(const std::string& path);

// Validates one node the way the config does (id, SIP URI, weight, capacity).
absl::Status ValidateNodeSpec(const NodeSpec& spec);
// Checks a SIP/SIPS URI: scheme, optional user, host (name, IPv4, [IPv6]), port, params.
absl::Status ValidateSipUri(std::string_view uri);

}  // namespace approute

#endif  // APPROUTE_CONFIG_H_
