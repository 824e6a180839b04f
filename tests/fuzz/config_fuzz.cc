// Fuzzes the YAML configuration: ParseConfig and Router::FromYaml.
// Properties: no crash or sanitizer finding on any text; parsing is
// deterministic (a second parse of the same text gives the same verdict);
// an accepted config makes a router, and Reload of the same text is OK and
// changes nothing (every node field and the table counts, fuzz_util.h).
// Configs asking for big tables are parsed but not instantiated, so a run
// stays within libFuzzer's memory limit (-rss_limit_mb).
#include <cstdint>
#include <string>
#include <string_view>

#include "approute/config.h"
#include "approute/router.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view yaml(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<approute::Config> c = approute::ParseConfig(yaml, "<fuzz>");
  absl::StatusOr<approute::Config> c2 = approute::ParseConfig(yaml, "<fuzz>");
  if (c.ok() != c2.ok() || (!c.ok() && c.status() != c2.status())) {
    approute::fuzz::Fail("two parses of one text disagree", c.status().ToString(), c2.status().ToString());
  }
  if (!c.ok()) {
    if (c.status().code() != absl::StatusCode::kInvalidArgument) {
      approute::fuzz::Fail("a bad config is not InvalidArgument", c.status().ToString());
    }
    if (approute::Router::FromYaml(yaml).ok()) approute::fuzz::Fail("FromYaml accepted what ParseConfig refused");
    return 0;
  }
  if (c->state.max_sessions > 65536 || c->state.max_affinities > 65536 || c->state.max_nodes > 1024) return 0;
  approute::RouterOptions o;
  o.now_ms = [] { return int64_t{1'700'000'000'000}; };
  absl::StatusOr<std::unique_ptr<approute::Router>> r = approute::Router::FromYaml(yaml, o, "<fuzz>");
  if (!r.ok()) approute::fuzz::Fail("FromYaml refused what ParseConfig accepted", r.status().ToString());
  if (static_cast<size_t>((*r)->Stats().nodes) != c->nodes.size())
    approute::fuzz::Fail("node count differs from the config");
  std::string before = approute::fuzz::Describe(**r);
  absl::Status st = (*r)->Reload(yaml, "<fuzz>");
  if (!st.ok()) approute::fuzz::Fail("Reload of the same text failed", st.ToString());
  std::string after = approute::fuzz::Describe(**r);
  if (before != after) approute::fuzz::Fail("Reload of the same text changed the router", before, after);
  return 0;
}
