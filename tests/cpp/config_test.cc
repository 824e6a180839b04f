// Every class of configuration error names the source, the line and the key,
// and a valid configuration yields exactly what it says.
#include <gtest/gtest.h>

#include <fstream>
#include <string>
#include <vector>

#include "approute/config.h"
#include "approute/router.h"

namespace approute {
namespace {

std::string Err(const std::string& yaml, const std::string& source = "router.yaml") {
  absl::StatusOr<Config> c = ParseConfig(yaml, source);
  EXPECT_FALSE(c.ok()) << "expected an error for:\n" << yaml;
  if (c.ok()) return "";
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(c.status().message());
}

TEST(Config, ParsesTheDesignExample) {
  absl::StatusOr<Config> c = ParseConfig(R"(
nodes:
  - {id: ast1, uri: "sip:10.0.0.1:5060", pool: media, weight: 10, capacity: {conference: 50}}
apps:
  conference:
    pool: media
    strategy: least_loaded
    resource: conference
    affinity: {grace: 300}
    retry: {codes: [503, 486], max_attempts: 3}
  default:
    strategy: round_robin
)");
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_EQ(c->nodes.size(), 1u);
  EXPECT_EQ(c->nodes[0].id, "ast1");
  EXPECT_EQ(c->nodes[0].weight, 10);
  EXPECT_EQ(c->nodes[0].capacity.at("conference"), 50);
  const AppConfig& a = c->apps.at("conference");
  EXPECT_EQ(a.strategy, "least_loaded");
  EXPECT_TRUE(a.affinity);
  EXPECT_EQ(a.affinity_grace_ms, 300000);
  EXPECT_EQ(a.retry_codes, (std::vector<int>{503, 486}));
  EXPECT_EQ(a.full_codes, (std::vector<int>{503, 486}));
  EXPECT_EQ(a.max_attempts, 3);
  EXPECT_EQ(c->apps.at("default").pool, "default");
  EXPECT_EQ(c->apps.at("default").retry_codes, (std::vector<int>{503}));
}

TEST(Config, UnknownTopLevelKeyNamesLineAndKey) {
  std::string e = Err("nodes: []\nnodez: []\n");
  EXPECT_NE(e.find("router.yaml:2:1"), std::string::npos) << e;
  EXPECT_NE(e.find("unknown key \"nodez\""), std::string::npos) << e;
}

TEST(Config, UnknownNodeKey) {
  std::string e = Err("nodes:\n  - {id: a, uri: \"sip:h\", wieght: 3}\n");
  EXPECT_NE(e.find("router.yaml:2:"), std::string::npos) << e;
  EXPECT_NE(e.find("nodes[0].wieght"), std::string::npos) << e;
}

TEST(Config, WrongTypes) {
  std::string e = Err("nodes:\n  - {id: a, uri: \"sip:h\", weight: heavy}\n");
  EXPECT_NE(e.find("nodes[0].weight"), std::string::npos) << e;
  EXPECT_NE(e.find("expected an integer"), std::string::npos) << e;
  e = Err("apps:\n  x:\n    retry: {codes: 503}\n");
  EXPECT_NE(e.find("apps.x.retry.codes"), std::string::npos) << e;
  e = Err("apps:\n  x:\n    affinity: {grace: soon}\n");
  EXPECT_NE(e.find("apps.x.affinity.grace"), std::string::npos) << e;
  e = Err("nodes: {id: a}\n");
  EXPECT_NE(e.find("expected a list of nodes"), std::string::npos) << e;
}

TEST(Config, UnknownStrategyListsKnownOnes) {
  std::string e = Err("apps:\n  x:\n    strategy: fastest\n");
  EXPECT_NE(e.find("router.yaml:3:15"), std::string::npos) << e;
  EXPECT_NE(e.find("apps.x.strategy"), std::string::npos) << e;
  EXPECT_NE(e.find("unknown strategy \"fastest\""), std::string::npos) << e;
  EXPECT_NE(e.find("least_loaded"), std::string::npos) << e;
}

TEST(Config, StrategyOptionsAreChecked) {
  EXPECT_TRUE(ParseConfig("apps:\n  x:\n    strategy: {name: hash, by: from}\n").ok());
  EXPECT_TRUE(ParseConfig("apps:\n  x:\n    strategy: {name: hash, by: \"attr:tenant\"}\n").ok());
  std::string e = Err("apps:\n  x:\n    strategy: {name: hash, by: moon}\n");
  EXPECT_NE(e.find("by \"moon\""), std::string::npos) << e;
  e = Err("apps:\n  x:\n    strategy: {name: round_robin, speed: 3}\n");
  EXPECT_NE(e.find("no option \"speed\""), std::string::npos) << e;
  e = Err("apps:\n  x:\n    strategy: {name: least_loaded, mode: sideways}\n");
  EXPECT_NE(e.find("mode \"sideways\""), std::string::npos) << e;
}

TEST(Config, DuplicateIds) {
  std::string e = Err("nodes:\n  - {id: a, uri: \"sip:h1\"}\n  - {id: a, uri: \"sip:h2\"}\n");
  EXPECT_NE(e.find("router.yaml:3:"), std::string::npos) << e;
  EXPECT_NE(e.find("duplicate node id \"a\" (first at nodes[0])"), std::string::npos) << e;
}

TEST(Config, MalformedUris) {
  for (const char* uri : {"http://x", "sip:", "sip:host:99999", "sip:300.1.1.1", "sip:a b", "10.0.0.1:5060"}) {
    std::string e = Err(std::string("nodes:\n  - {id: a, uri: \"") + uri + "\"}\n");
    EXPECT_NE(e.find("nodes[0].uri"), std::string::npos) << uri << ": " << e;
  }
  for (const char* uri : {"sip:10.0.0.1:5060", "sips:ast1.example.com",
                          "sip:conference@ast5.example.com:5080;transport=tcp", "sip:[2001:db8::1]:5060"}) {
    EXPECT_TRUE(ValidateSipUri(uri).ok()) << uri << ": " << ValidateSipUri(uri);
  }
}

// SipUriHost sees text from outside (a status report's uri): it must refuse
// what ValidateSipUri refuses by length before std::regex (which recurses per
// character) ever sees it.
TEST(Config, SipUriHostOfLongOrBadText) {
  EXPECT_EQ(SipUriHost("sip:[2001:db8::1]:5060"), "2001:db8::1");
  EXPECT_EQ(SipUriHost("sip:ast1.example.com;transport=tcp"), "ast1.example.com");
  EXPECT_EQ(SipUriHost(""), "");
  EXPECT_EQ(SipUriHost("sip:a b"), "");
  const std::string long_host = "sip:" + std::string(300, 'a');
  EXPECT_FALSE(ValidateSipUri(long_host).ok());
  EXPECT_EQ(SipUriHost(long_host), "");
  EXPECT_EQ(SipUriHost("sip:" + std::string(200000, 'a')), "");
}

TEST(Config, MissingRequiredKeysAndBadValues) {
  EXPECT_NE(Err("nodes:\n  - {uri: \"sip:h\"}\n").find("missing required key \"id\""), std::string::npos);
  EXPECT_NE(Err("nodes:\n  - {id: a}\n").find("missing required key \"uri\""), std::string::npos);
  EXPECT_NE(Err("nodes:\n  - {id: \"a b\", uri: \"sip:h\"}\n").find("node id \"a b\""), std::string::npos);
  EXPECT_NE(Err("nodes:\n  - {id: a, uri: \"sip:h\", weight: -1}\n").find("outside 0..1000000"), std::string::npos);
  EXPECT_NE(Err("nodes:\n  - {id: a, uri: \"sip:h\", state: sleeping}\n").find("unknown admin state"),
            std::string::npos);
  EXPECT_NE(Err("apps:\n  x:\n    retry: {max_attempts: 40}\n").find("apps.x.retry.max_attempts"), std::string::npos);
  EXPECT_NE(Err("apps:\n  x:\n    retry: {codes: [200]}\n").find("outside 300..699"), std::string::npos);
  EXPECT_NE(Err("state: {max_sessions: 0}\n").find("state.max_sessions"), std::string::npos);
  EXPECT_NE(Err("nodes:\n  - {id: a, uri: \"sip:h\"}\nstate: {max_nodes: 0}\n").find("state.max_nodes"),
            std::string::npos);
}

TEST(Config, YamlSyntaxErrorHasPosition) {
  std::string e = Err("nodes:\n  - {id: a, uri: \"sip:h\"\n");
  EXPECT_NE(e.find("router.yaml:"), std::string::npos) << e;
  EXPECT_NE(e.find("YAML syntax error"), std::string::npos) << e;
}

TEST(Config, FileErrorsNameTheFile) {
  std::string path = ::testing::TempDir() + "/approute_bad.yaml";
  {
    std::ofstream f(path);
    f << "apps:\n  conference:\n    strategy: nope\n";
  }
  absl::StatusOr<Config> c = LoadConfigFile(path);
  ASSERT_FALSE(c.ok());
  EXPECT_NE(std::string(c.status().message()).find(path + ":3:"), std::string::npos) << c.status();
  EXPECT_EQ(LoadConfigFile("/nonexistent/approute.yaml").status().code(), absl::StatusCode::kNotFound);
}

TEST(Config, DuplicateKeysAreErrorsWithPositionAndPath) {
  // yaml-cpp itself keeps the first value and drops the second without a word.
  std::string e = Err("nodes: []\napps:\n  conference:\n    pool: media\n    pool: other\n");
  EXPECT_NE(e.find("router.yaml:5:5: apps.conference.pool: duplicate key \"pool\" (first at line 4, column 5)"),
            std::string::npos)
      << e;
  e = Err("apps: {}\nnodes: []\napps: {}\n");
  EXPECT_NE(e.find("router.yaml:3:1: apps: duplicate key"), std::string::npos) << e;
  // Inside a list item, in flow style.
  e = Err("nodes:\n  - {id: a, uri: \"sip:h\"}\n  - {id: b, uri: \"sip:h\", weight: 1, weight: 2}\n");
  EXPECT_NE(e.find("router.yaml:3:"), std::string::npos) << e;
  EXPECT_NE(e.find("nodes[1].weight: duplicate key"), std::string::npos) << e;
  // Two apps of one name.
  e = Err("apps:\n  queue: {}\n  conference: {}\n  queue: {strategy: random}\n");
  EXPECT_NE(e.find("router.yaml:4:3: apps.queue: duplicate key"), std::string::npos) << e;
  // Deep in options that are otherwise free-form (Python strategy arguments).
  e = Err("apps:\n  x:\n    strategy: {name: \"python:m:C\", tiers: {a: 1, a: 2}}\n");
  EXPECT_NE(e.find("apps.x.strategy.tiers.a: duplicate key"), std::string::npos) << e;
  // The same key in two different mappings is not a duplicate; an alias is visited once.
  EXPECT_TRUE(ParseConfig("nodes:\n  - {id: a, uri: \"sip:h\", pool: p}\n  - {id: b, uri: \"sip:h\", pool: p}\n").ok());
  EXPECT_TRUE(ParseConfig("apps:\n  x: &base {pool: p}\n  y: *base\n").ok());
}

// One run reports every error it can find, one per line in source order, as a
// compiler does: a bad key does not hide the next one, a bad node does not hide
// the next node, and the sections are all read.
TEST(Config, ReportsEveryErrorInOneRun) {
  std::string e =
      Err("apps:\n"
          "  conference:\n"
          "    strategy: fastest\n"                // 3: unknown strategy
          "    retry: {codes: [200, 503, 999]}\n"  // 4: two bad codes
          "nodes:\n"
          "  - {id: a, uri: \"http://x\"}\n"                        // 6: bad uri
          "  - {id: b, uri: \"sip:h\", weight: -1, colour: red}\n"  // 7: weight and unknown key
          "  - {id: c, uri: \"sip:h\"}\n"
          "health: {panic_threshold: 101}\n");  // 9
  std::vector<std::string> lines;
  for (size_t at = 0; at <= e.size();) {
    size_t nl = e.find('\n', at);
    if (nl == std::string::npos) nl = e.size();
    lines.push_back(e.substr(at, nl - at));
    at = nl + 1;
  }
  ASSERT_EQ(lines.size(), 7u) << e;
  EXPECT_NE(lines[0].find("router.yaml:3:15: apps.conference.strategy: "), std::string::npos) << e;
  EXPECT_NE(lines[1].find("router.yaml:4:21: apps.conference.retry.codes[0]: value 200"), std::string::npos) << e;
  EXPECT_NE(lines[2].find("router.yaml:4:31: apps.conference.retry.codes[2]: value 999"), std::string::npos) << e;
  EXPECT_NE(lines[3].find("router.yaml:6:"), std::string::npos) << e;
  EXPECT_NE(lines[3].find("nodes[0].uri"), std::string::npos) << e;
  // In source order: the weight (column 35) before the unknown key (column 39).
  EXPECT_NE(lines[4].find("nodes[1].weight: value -1 is outside"), std::string::npos) << e;
  EXPECT_NE(lines[5].find("nodes[1].colour: unknown key"), std::string::npos) << e;
  EXPECT_NE(lines[6].find("router.yaml:9:"), std::string::npos) << e;
  EXPECT_NE(lines[6].find("health.panic_threshold"), std::string::npos) << e;
  // Duplicate keys and duplicate ids are reported along with the rest.
  e =
      Err("nodes:\n  - {id: a, uri: \"sip:h\"}\n  - {id: a, uri: \"sip:h\"}\n"
          "apps:\n  x: {pool: p, pool: q}\n  y: {strategy: nope}\n");
  EXPECT_NE(e.find("router.yaml:3:10: nodes[1].id: duplicate node id"), std::string::npos) << e;
  EXPECT_NE(e.find("router.yaml:5:16: apps.x.pool: duplicate key"), std::string::npos) << e;
  EXPECT_NE(e.find("router.yaml:6:17: apps.y.strategy"), std::string::npos) << e;
  // Many errors: the first 50 and a count of the rest.
  std::string many = "nodes:\n";
  for (int i = 0; i < 60; ++i) many += "  - {id: n" + std::to_string(i) + ", uri: \"x\"}\n";
  e = Err(many);
  EXPECT_NE(e.find("router.yaml: 10 more errors not shown"), std::string::npos) << e;
  // A config whose only error is one error still reads as one line.
  e = Err("apps:\n  conference:\n    strategy: nope\n");
  EXPECT_EQ(e.find('\n'), std::string::npos) << e;
}

TEST(Config, EmptyDocumentIsAnError) {
  for (const char* yaml : {"", "\n\n", "# only a comment\n", "---\n", "~\n"}) {
    std::string e = Err(yaml);
    EXPECT_NE(e.find("router.yaml: the configuration is empty"), std::string::npos) << "[" << yaml << "] " << e;
  }
  // An explicit empty mapping is a router with nothing configured, on purpose.
  EXPECT_TRUE(ParseConfig("{}\n").ok());
}

TEST(Config, InvalidConfigChangesNothingOnReload) {
  absl::StatusOr<std::unique_ptr<Router>> r =
      Router::FromYaml("nodes:\n  - {id: a, uri: \"sip:10.0.0.1\"}\napps:\n  default: {}\n");
  ASSERT_TRUE(r.ok()) << r.status();
  absl::Status s = (*r)->Reload("nodes:\n  - {id: b, uri: \"sip:10.0.0.2\"}\napps:\n  default: {strategy: nope}\n");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE((*r)->Node("a").ok());
  EXPECT_FALSE((*r)->Node("b").ok());
}

}  // namespace
}  // namespace approute
