// Strategies from outside the core: python: names, a router's own
// StrategyResolver, StrategyContext::Describe, seeded randomness, and the
// workload simulator.
#include <gtest/gtest.h>

#include <map>
#include <string>

#include "approute/config.h"
#include "approute/router.h"
#include "approute/simulation.h"
#include "approute/strategy.h"
#include "test_util.h"

namespace approute {
namespace {

using testing::MakeRouter;
using testing::MustRoute;
using testing::PoolYaml;

TEST(PythonStrategyName, Syntax) {
  EXPECT_TRUE(IsPythonStrategyName("python:x:Y"));
  EXPECT_FALSE(IsPythonStrategyName("round_robin"));
  EXPECT_TRUE(CheckPythonStrategyName("python:pkg.mod:Cls").ok());
  EXPECT_TRUE(CheckPythonStrategyName("python:m:Outer.Inner").ok());
  for (const char* bad : {"python:", "python:mod", "python::Cls", "python:mod:", "python:1mod:Cls", "python:mod:Cls:x",
                          "python:a..b:C", "python:mod:C-D", "pythonmod:C"}) {
    EXPECT_FALSE(CheckPythonStrategyName(bad).ok()) << bad;
  }
}

TEST(PythonStrategyName, ConfigChecksSyntaxAndKeepsAnyYamlOption) {
  absl::StatusOr<Config> c = ParseConfig(
      PoolYaml(2, "    strategy: {name: \"python:tiers:Tiers\", cap: 5, rules: [{tier: gold, hours: [8, 18]}]}\n"));
  ASSERT_TRUE(c.ok()) << c.status();
  const AppConfig& app = c->apps.at("app");
  EXPECT_EQ(app.strategy, "python:tiers:Tiers");
  EXPECT_EQ(app.strategy_params.at("cap"), "5");
  EXPECT_EQ(app.strategy_params.at("rules"), "[{tier: gold, hours: [8, 18]}]");
  absl::StatusOr<Config> bad = ParseConfig(PoolYaml(2, "    strategy: \"python:no colon\"\n"), "r.yaml");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("r.yaml:"), std::string::npos) << bad.status();
  EXPECT_NE(bad.status().message().find("python:package.module:ClassName"), std::string::npos);
}

TEST(PythonStrategyName, ARouterWithoutResolverSaysWhy) {
  absl::StatusOr<std::unique_ptr<Router>> r = Router::FromYaml(PoolYaml(2, "    strategy: \"python:m:C\"\n"));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("apps.app.strategy"), std::string::npos) << r.status();
  EXPECT_NE(r.status().message().find("written in Python"), std::string::npos) << r.status();
}

// Picks the last candidate; remembers what Describe said of it.
class LastStrategy final : public Strategy {
 public:
  explicit LastStrategy(NodeStatus* seen) : seen_(seen) {}
  absl::StatusOr<size_t> Pick(const PickRequest& req, absl::Span<const Candidate> c, StrategyContext& ctx) override {
    *seen_ = ctx.Describe(c.back());
    seen_->spec.pool += "|" + std::string(req.resource);
    return c.size() - 1;
  }

 private:
  NodeStatus* seen_;
};

class TestResolver final : public StrategyResolver {
 public:
  bool Knows(std::string_view name) const override { return name == "mine"; }
  absl::StatusOr<std::unique_ptr<Strategy>> Make(std::string_view, const StrategyParams& params, bool strict) override {
    ++made;
    strict_seen += strict ? 1 : 0;
    if (params.count("fail")) return absl::InvalidArgumentError("told to fail");
    return std::unique_ptr<Strategy>(new LastStrategy(&seen));
  }
  int made = 0, strict_seen = 0;
  NodeStatus seen;
};

TEST(StrategyResolver, ConsultedFirstAndBuiltOncePerConfiguration) {
  auto res = std::make_shared<TestResolver>();
  RouterOptions o;
  o.strategies = res;
  std::string yaml =
      PoolYaml(3, "    strategy: mine\n    resource: conference\n", "capacity: {conference: 4}, attrs: {region: eu}");
  auto r = MakeRouter(yaml, o);
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(res->made, 1);
  EXPECT_EQ(res->strict_seen, 1);
  EXPECT_EQ(MustRoute(*r, "app", "c1").node_id, "n2");
  EXPECT_EQ(MustRoute(*r, "app", "c2").node_id, "n2");
  EXPECT_EQ(res->made, 1);  // the strategy prepared at load time serves the routes
  // Describe: everything the router knows about the candidate
  EXPECT_EQ(res->seen.spec.id, "n2");
  EXPECT_EQ(res->seen.spec.pool, "media|conference");
  EXPECT_EQ(res->seen.spec.attrs.at("region"), "eu");
  EXPECT_EQ(res->seen.spec.capacity.at("conference"), 4);
  EXPECT_EQ(res->seen.sessions.at("conference"), 1);
  // a name only this router knows is valid in its reloads, not elsewhere
  EXPECT_TRUE(r->Reload(yaml).ok());
  EXPECT_FALSE(ParseConfig(yaml).ok());
  absl::Status s = r->Reload(PoolYaml(3, "    strategy: {name: mine, fail: 1}\n"));
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("told to fail"), std::string::npos) << s;
  EXPECT_EQ(MustRoute(*r, "app", "c3").node_id, "n2");  // the failed reload changed nothing
}

std::vector<std::string> Picks(uint64_t seed, int n) {
  RouterOptions o;
  o.random_seed = seed;
  auto r = MakeRouter(PoolYaml(5, "    strategy: random\n"), o);
  std::vector<std::string> out;
  for (int i = 0; i < n; ++i) {
    std::string id = "c" + std::to_string(i);
    out.push_back(MustRoute(*r, "app", id).node_id);
    EXPECT_TRUE(r->End(id).ok());
  }
  return out;
}

TEST(SeededRandom, SameSeedSameChoices) {
  EXPECT_EQ(Picks(7, 50), Picks(7, 50));
  EXPECT_NE(Picks(7, 50), Picks(8, 50));
}

TEST(Simulation, DeterministicAndConsistent) {
  std::string yaml = PoolYaml(4, "    strategy: p2c\n    resource: conference\n    affinity: {grace: 10}\n");
  SimSpec spec;
  spec.seed = 3;
  spec.duration = 300;
  spec.sample_interval = 5;
  SimApp app;
  app.name = "app";
  app.rate = {{0, 20}, {300, 40}};
  app.keys = 100;
  app.zipf = 1.1;
  app.duration_mean = 10;
  spec.apps.push_back(app);
  for (int i = 0; i < 4; ++i) spec.nodes.push_back(SimNode{"n" + std::to_string(i), 80, i == 3 ? 0.5 : 1.0});
  SimEvent fail;
  fail.at = 100;
  fail.action = "fail";
  fail.node = "n1";
  spec.events.push_back(fail);
  auto run = [&] {
    testing::ManualClock clock;
    RouterOptions o;
    o.now_ms = clock.fn();
    o.random_seed = 3;
    auto r = MakeRouter(yaml, o);
    absl::StatusOr<SimResult> res = Simulate(*r, spec, [&](int64_t ms) { clock.ms->store(ms); });
    EXPECT_TRUE(res.ok()) << res.status();
    EXPECT_EQ(r->Stats().sessions, 0);  // every call ended
    return *res;
  };
  SimResult a = run(), b = run();
  EXPECT_GT(a.calls, 8000);
  EXPECT_EQ(a.calls, a.routed + a.rejected);
  EXPECT_EQ(a.errors, 0);
  EXPECT_GT(a.dropped, 0);
  EXPECT_LE(a.max_sessions, 80);
  EXPECT_EQ(a.calls, b.calls);
  EXPECT_EQ(a.bounces, b.bounces);
  EXPECT_EQ(a.samples, b.samples);
  EXPECT_EQ(a.placed, b.placed);
  spec.apps[0].duration = "gaussian";
  testing::ManualClock clock;
  auto r = MakeRouter(yaml);
  EXPECT_FALSE(Simulate(*r, spec, [&](int64_t ms) { clock.ms->store(ms); }).ok());
}

}  // namespace
}  // namespace approute
