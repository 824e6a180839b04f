// report.h — the approute-status event package: the JSON body and the
// X-Approute-Auth credential (docs/status-package.md).
#ifndef APPROUTE_SRC_STATUS_REPORT_H_
#define APPROUTE_SRC_STATUS_REPORT_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "approute/types.h"

namespace approute::internal {

struct StatusReport {
  std::string node;
  std::string uri;
  std::string pool = "default";
  std::optional<AdminState> state;  // active or draining
  // "health": "down": the node is a member but its service does not answer
  // (the agent cannot reach it); "up" or no field: it answers.
  bool down = false;
  std::optional<int32_t> weight;
  std::map<std::string, int64_t> capacity;
  std::map<std::string, double> load;
  std::map<std::string, double> quality;
  uint64_t seq = 0;
};

// Parses and validates a report body with nlohmann::json. Errors say which
// field is wrong and why ("load.cpu must be a finite number").
absl::StatusOr<StatusReport> ParseStatusReport(std::string_view body);

struct Credential {
  std::string keyid;
  int64_t ts = 0;
  std::string sig;  // lower-case hex
};
// "keyid=K,ts=UNIX,sig=HEX" (spaces around ',' and '=' allowed).
absl::StatusOr<Credential> ParseCredential(std::string_view header);

std::string HmacSha256Hex(std::string_view key, std::string_view data);
// Constant-time comparison of two hex signatures.
bool SignaturesEqual(std::string_view a, std::string_view b);

}  // namespace approute::internal

#endif  // APPROUTE_SRC_STATUS_REPORT_H_
