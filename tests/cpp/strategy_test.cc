// Distribution properties of every built-in strategy, through the router.
#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "approute/router.h"
#include "approute/strategy.h"
#include "test_util.h"

namespace approute {
namespace {

using testing::MakeRouter;
using testing::MustRoute;
using testing::PoolYaml;

// Routes `calls` calls (ending each at once unless keep) and counts per node.
std::map<std::string, int> Spread(Router& r, int calls, bool keep = false, const std::string& prefix = "c",
                                  const std::map<std::string, std::string>& attrs = {}) {
  std::map<std::string, int> count;
  for (int i = 0; i < calls; ++i) {
    RouteRequest req{.app = "app", .call_id = prefix + std::to_string(i), .attrs = attrs};
    absl::StatusOr<Decision> d = r.Route(req);
    EXPECT_TRUE(d.ok() && d->ok);
    if (!d.ok() || !d->ok) break;
    count[d->node_id]++;
    if (!keep) {
      EXPECT_TRUE(r.End(req.call_id).ok());
    }
  }
  return count;
}

std::string WeightedPool(const std::string& strategy) {
  return "nodes:\n"
         "  - {id: w1, uri: \"sip:10.0.0.1\", pool: media, weight: 1}\n"
         "  - {id: w2, uri: \"sip:10.0.0.2\", pool: media, weight: 2}\n"
         "  - {id: w3, uri: \"sip:10.0.0.3\", pool: media, weight: 3}\n"
         "  - {id: w4, uri: \"sip:10.0.0.4\", pool: media, weight: 4}\n"
         "  - {id: w0, uri: \"sip:10.0.0.5\", pool: media, weight: 0}\n"
         "apps:\n  app: {pool: media, strategy: " +
         strategy + "}\n";
}

TEST(RoundRobin, SpreadsExactlyEvenly) {
  auto r = MakeRouter(PoolYaml(5, "    strategy: round_robin\n"));
  auto c = Spread(*r, 1000);
  ASSERT_EQ(c.size(), 5u);
  for (const auto& [n, k] : c) EXPECT_EQ(k, 200) << n;
}

TEST(WeightedRoundRobin, ExactSharesSmoothlyInterleaved) {
  auto r = MakeRouter(WeightedPool("weighted_round_robin"));
  auto c = Spread(*r, 1000);
  EXPECT_EQ(c["w1"], 100);
  EXPECT_EQ(c["w2"], 200);
  EXPECT_EQ(c["w3"], 300);
  EXPECT_EQ(c["w4"], 400);
  EXPECT_EQ(c.count("w0"), 0u) << "weight 0 takes no calls";
  // Smoothness: in any window of 10 consecutive picks each node gets its share +-1.
  auto r2 = MakeRouter(WeightedPool("weighted_round_robin"));
  std::vector<std::string> seq;
  for (int i = 0; i < 100; ++i) {
    Decision d = MustRoute(*r2, "app", "s" + std::to_string(i));
    seq.push_back(d.node_id);
    ASSERT_TRUE(r2->End("s" + std::to_string(i)).ok());
  }
  for (size_t start = 0; start + 10 <= seq.size(); ++start) {
    std::map<std::string, int> w;
    for (size_t i = start; i < start + 10; ++i) w[seq[i]]++;
    EXPECT_LE(std::abs(w["w4"] - 4), 1) << "window at " << start;
  }
}

TEST(WeightedRandom, HonoursWeightsWithinTolerance) {
  auto r = MakeRouter(WeightedPool("weighted_random"));
  const int n = 40000;
  auto c = Spread(*r, n);
  EXPECT_EQ(c.count("w0"), 0u);
  for (int w = 1; w <= 4; ++w) {
    double share = static_cast<double>(c["w" + std::to_string(w)]) / n;
    EXPECT_NEAR(share, w / 10.0, 0.015) << "w" << w;  // > 4 sigma at n = 40000
  }
}

TEST(Random, RoughlyUniform) {
  auto r = MakeRouter(PoolYaml(4, "    strategy: random\n"));
  auto c = Spread(*r, 40000);
  for (const auto& [node, k] : c) EXPECT_NEAR(k / 40000.0, 0.25, 0.015) << node;
}

TEST(Priority, SerialFailover) {
  auto r = MakeRouter(
      "nodes:\n"
      "  - {id: backup, uri: \"sip:10.0.0.2\", priority: 2}\n"
      "  - {id: primary, uri: \"sip:10.0.0.1\", priority: 1}\n"
      "  - {id: last, uri: \"sip:10.0.0.3\", priority: 9}\n"
      "apps:\n  app: {strategy: priority, retry: {codes: [503], max_attempts: 3}}\n");
  auto c = Spread(*r, 50);
  EXPECT_EQ(c["primary"], 50);
  ASSERT_TRUE(r->SetHealth("primary", Health::kDown).ok());
  EXPECT_EQ(MustRoute(*r, "app", "x").node_id, "backup");
  ASSERT_TRUE(r->SetHealth("primary", Health::kUp).ok());
  EXPECT_EQ(MustRoute(*r, "app", "y").node_id, "primary");
  EXPECT_EQ(r->Retry("y", 503)->node_id, "backup");
  EXPECT_EQ(r->Retry("y", 503)->node_id, "last");
}

TEST(Hash, SameInputSameNodeAndWeightsHonoured) {
  auto r = MakeRouter(WeightedPool("{name: hash, by: from}"));
  std::map<std::string, int> c;
  const int n = 20000;
  for (int i = 0; i < n; ++i) {
    std::string from = "user" + std::to_string(i) + "@example.com";
    RouteRequest req{.app = "app", .call_id = "c" + std::to_string(i), .attrs = {{"from", from}}};
    Decision d = *r->Route(req);
    c[d.node_id]++;
    ASSERT_TRUE(r->End(req.call_id).ok());
    if (i % 100 == 0) {
      RouteRequest again{.app = "app", .call_id = "again" + std::to_string(i), .attrs = {{"from", from}}};
      EXPECT_EQ(r->Route(again)->node_id, d.node_id);
      ASSERT_TRUE(r->End(again.call_id).ok());
    }
  }
  EXPECT_EQ(c.count("w0"), 0u);
  for (int w = 1; w <= 4; ++w) EXPECT_NEAR(c["w" + std::to_string(w)] / double(n), w / 10.0, 0.02) << w;
}

TEST(Hash, RemovingANodeMovesOnlyItsKeys) {
  auto r = MakeRouter(PoolYaml(8, "    strategy: {name: hash, by: \"attr:tenant\"}\n"));
  std::map<std::string, std::string> before;
  for (int i = 0; i < 4000; ++i) {
    std::string t = "tenant" + std::to_string(i);
    RouteRequest req{.app = "app", .call_id = "b" + std::to_string(i), .attrs = {{"tenant", t}}};
    before[t] = r->Route(req)->node_id;
    ASSERT_TRUE(r->End(req.call_id).ok());
  }
  ASSERT_TRUE(r->RemoveNode("n3").ok());
  int moved = 0, on_removed = 0;
  for (const auto& [t, node] : before) {
    RouteRequest req{.app = "app", .call_id = "a" + t, .attrs = {{"tenant", t}}};
    std::string now = r->Route(req)->node_id;
    ASSERT_TRUE(r->End(req.call_id).ok());
    if (node == "n3")
      ++on_removed;
    else if (now != node)
      ++moved;
  }
  EXPECT_EQ(moved, 0) << "keys of remaining nodes stay put";
  EXPECT_NEAR(on_removed / 4000.0, 1.0 / 8, 0.03);
}

TEST(LeastLoaded, NeverExceedsCapacityAndFillsTheEmptiest) {
  auto r = MakeRouter(
      "nodes:\n"
      "  - {id: big, uri: \"sip:10.0.0.1\", capacity: {conference: 30}}\n"
      "  - {id: small, uri: \"sip:10.0.0.2\", capacity: {conference: 10}}\n"
      "apps:\n  app: {strategy: least_loaded, resource: conference}\n");
  auto c = Spread(*r, 40, /*keep=*/true);
  EXPECT_EQ(c["big"], 30);
  EXPECT_EQ(c["small"], 10);
  RouteRequest req{.app = "app", .call_id = "overflow"};
  EXPECT_FALSE(r->Route(req)->ok);
  // Absolute mode: the first 20 calls all go to `big` (more room left).
  auto r2 = MakeRouter(
      "nodes:\n"
      "  - {id: big, uri: \"sip:10.0.0.1\", capacity: {conference: 30}}\n"
      "  - {id: small, uri: \"sip:10.0.0.2\", capacity: {conference: 10}}\n"
      "apps:\n  app: {strategy: least_loaded, resource: conference}\n");
  EXPECT_EQ(Spread(*r2, 20, true)["big"], 20);
  // Relative mode keeps the fractions level: 3 to big for each 1 to small.
  auto r3 = MakeRouter(
      "nodes:\n"
      "  - {id: big, uri: \"sip:10.0.0.1\", capacity: {conference: 30}}\n"
      "  - {id: small, uri: \"sip:10.0.0.2\", capacity: {conference: 10}}\n"
      "apps:\n  app: {strategy: {name: least_loaded, mode: relative}, resource: conference}\n");
  auto c3 = Spread(*r3, 20, true);
  EXPECT_NEAR(c3["big"], 15, 1);
  EXPECT_NEAR(c3["small"], 5, 1);
}

int MaxLoad(const std::string& strategy, int nodes, int calls) {
  auto r = MakeRouter(PoolYaml(nodes, "    strategy: " + strategy + "\n"));
  auto c = Spread(*r, calls, /*keep=*/true);
  int mx = 0;
  for (const auto& [n, k] : c) mx = std::max(mx, k);
  return mx;
}

TEST(P2C, BeatsRandomOnMaxLoad) {
  // 32 nodes, 640 long calls (mean 20): random's max is typically ~30, p2c's ~22.
  int p2c = 0, rnd = 0;
  for (int trial = 0; trial < 5; ++trial) {
    p2c += MaxLoad("p2c", 32, 640);
    rnd += MaxLoad("random", 32, 640);
  }
  EXPECT_LT(p2c, rnd) << "p2c " << p2c / 5.0 << " vs random " << rnd / 5.0;
  EXPECT_LE(p2c / 5.0, 20 * 1.3);
}

// What each strategy says it reads of the request: callers collect only that.
TEST(RequestAttrs, BuiltInsSayWhatTheyRead) {
  using Attrs = std::vector<std::string>;
  auto attrs = [](std::string_view name, const StrategyParams& params = {}) {
    absl::StatusOr<Attrs> a = StrategyRequestAttrs(name, params);
    EXPECT_TRUE(a.ok()) << name << ": " << a.status();
    return a.ok() ? *a : Attrs{"<error>"};
  };
  for (const char* name : {"round_robin", "weighted_round_robin", "random", "weighted_random", "priority",
                           "least_loaded", "p2c", "utilization", "latency"}) {
    EXPECT_EQ(attrs(name), Attrs{}) << name;
  }
  EXPECT_EQ(attrs("hash"), Attrs{}) << "by call_id";
  EXPECT_EQ(attrs("hash", {{"by", "key"}}), Attrs{});
  EXPECT_EQ(attrs("hash", {{"by", "from"}}), Attrs{"from"});
  EXPECT_EQ(attrs("hash", {{"by", "attr:tenant"}}), Attrs{"tenant"});
  EXPECT_EQ(attrs("consistent_bounded"), Attrs{}) << "by key";
  EXPECT_EQ(attrs("consistent_bounded", {{"by", "to"}}), Attrs{"to"});
  EXPECT_EQ(attrs("python:mod.sub:Cls"), Attrs{std::string(kAnyRequestAttr)});
  EXPECT_EQ(StrategyRequestAttrs("nope", {}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(StrategyRequestAttrs("hash", {{"by", "nope"}}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(StrategyRequestAttrs("python:bad name", {}).status().code(), absl::StatusCode::kInvalidArgument);
}

// A strategy that does not say may read any attribute.
TEST(RequestAttrs, DefaultIsAny) {
  struct First final : Strategy {
    absl::StatusOr<size_t> Pick(const PickRequest&, absl::Span<const Candidate>, StrategyContext&) override {
      return size_t{0};
    }
  };
  EXPECT_EQ(First().RequestAttrs(), std::vector<std::string>{std::string(kAnyRequestAttr)});
}

}  // namespace
}  // namespace approute
