// Overload without retry storms: a node answering 503 is busy, not down; an
// app's retry budget; RFC 7339 overload control (the loss algorithm).
#include <gtest/gtest.h>

#include <map>
#include <string>

#include "approute/router.h"
#include "test_util.h"

namespace approute {
namespace {

using testing::MakeRouter;
using testing::ManualClock;
using testing::MustRoute;
using testing::PoolYaml;

std::string TwoNodes(const std::string& health = "", const std::string& app = "    strategy: round_robin\n") {
  return "health:\n  probe: {down_after: 3, up_after: 2}\n  slow_start: {window: 60}\n" + health + PoolYaml(2, app);
}

// Which node each of `n` key-less calls goes to (each ended at once).
std::map<std::string, int> Spread(Router& r, const std::string& tag, int n) {
  std::map<std::string, int> out;
  for (int i = 0; i < n; ++i) {
    const std::string c = tag + std::to_string(i);
    Decision d = MustRoute(r, "app", c);
    ++out[d.ok ? d.node_id : "none"];
    if (d.ok) {
      EXPECT_TRUE(r.End(c).ok());
    }
  }
  return out;
}

TEST(Busy, A503ProbeSkipsTheNodeUntilItsRetryAfterAndNeverMarksItDown) {
  ManualClock clock;
  RouterOptions o;
  o.now_ms = clock.fn();
  auto r = MakeRouter(TwoNodes(), o);
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(r->ReportProbe("n0", 503, 3, 10.0).ok());
  absl::StatusOr<NodeStatus> n0 = r->Node("n0");
  ASSERT_TRUE(n0.ok());
  EXPECT_EQ(n0->health, Health::kUp) << "five 503s in a row: alive, not down";
  EXPECT_EQ(n0->busy_until_ms, clock.ms->load() + 10'000);
  EXPECT_EQ(Spread(*r, "a", 20), (std::map<std::string, int>{{"n1", 20}}));
  clock.Advance(9'999);
  EXPECT_EQ(Spread(*r, "b", 10), (std::map<std::string, int>{{"n1", 10}}));
  clock.Advance(2);
  EXPECT_EQ(r->Node("n0")->busy_until_ms, 0) << "its Retry-After is over";
  EXPECT_EQ(Spread(*r, "c", 10), (std::map<std::string, int>{{"n0", 5}, {"n1", 5}}));
}

TEST(Busy, A2xxProbeEndsItAtOnceWithoutSlowStart) {
  ManualClock clock;
  RouterOptions o;
  o.now_ms = clock.fn();
  auto r = MakeRouter(TwoNodes(), o);
  ASSERT_TRUE(r->ReportProbe("n0", 503, 3, 120.0).ok());
  EXPECT_EQ(Spread(*r, "a", 6), (std::map<std::string, int>{{"n1", 6}}));
  ASSERT_TRUE(r->ReportProbe("n0", 404, 3).ok());  // alive, but not "taking calls": still busy
  EXPECT_GT(r->Node("n0")->busy_until_ms, 0);
  ASSERT_TRUE(r->ReportProbe("n0", 200, 3).ok());
  EXPECT_EQ(r->Node("n0")->busy_until_ms, 0);
  // The 60 s slow start window would give it ~5% now: it gets its full half.
  EXPECT_EQ(Spread(*r, "b", 100), (std::map<std::string, int>{{"n0", 50}, {"n1", 50}}));
}

TEST(Busy, WithoutRetryAfterBusyForAppliesAndLongOnesAreCut) {
  ManualClock clock;
  RouterOptions o;
  o.now_ms = clock.fn();
  auto r = MakeRouter(TwoNodes("  busy_for: 7\n  busy_max: 30\n"), o);
  const int64_t t0 = clock.ms->load();
  ASSERT_TRUE(r->ReportProbe("n0", 503, 3).ok());
  EXPECT_EQ(r->Node("n0")->busy_until_ms, t0 + 7'000);
  ASSERT_TRUE(r->ReportProbe("n0", 503, 3, 3600.0).ok());
  EXPECT_EQ(r->Node("n0")->busy_until_ms, t0 + 30'000) << "Retry-After cut to busy_max";
  ASSERT_TRUE(r->ReportCallResult("n1", 503, 20, 2.5).ok());
  EXPECT_EQ(r->Node("n1")->busy_until_ms, t0 + 2'500) << "an INVITE answered 503 counts the same";
  Decision d = MustRoute(*r, "app", "none-left");
  EXPECT_FALSE(d.ok);
  EXPECT_NE(d.detail.find("2 busy (answered 503)"), std::string::npos) << d.detail;
  RouterStats s = r->Stats();
  EXPECT_EQ(s.busy_nodes, 2);
  auto d5 = MakeRouter(TwoNodes("  busy_for: 0\n"), o);
  ASSERT_TRUE(d5->ReportProbe("n0", 503, 3).ok());
  EXPECT_EQ(d5->Node("n0")->busy_until_ms, 0) << "busy_for: 0 turns busy periods off";
}

TEST(Busy, OnlyNoAnswer408AndOther5xxCountTowardsDown) {
  auto r = MakeRouter(TwoNodes());
  for (int code : {503, 503, 503, 486, 404, 603, 503}) ASSERT_TRUE(r->ReportProbe("n0", code, 1).ok());
  EXPECT_EQ(r->Node("n0")->health, Health::kUp);
  for (int code : {0, 408, 500}) ASSERT_TRUE(r->ReportProbe("n0", code, 1).ok());
  EXPECT_EQ(r->Node("n0")->health, Health::kDown);
  ASSERT_TRUE(r->ReportProbe("n1", 502, 1).ok());
  ASSERT_TRUE(r->ReportProbe("n1", 503, 1).ok());  // an answer: the run of failures is broken
  ASSERT_TRUE(r->ReportProbe("n1", 504, 1).ok());
  ASSERT_TRUE(r->ReportProbe("n1", 0, 1).ok());
  EXPECT_EQ(r->Node("n1")->health, Health::kUp);
}

TEST(Busy, KeysItHoldsStillGoThereNewKeysDoNot) {
  auto r = MakeRouter(TwoNodes("", "    strategy: round_robin\n    affinity: {grace: 60, strict: true}\n"));
  Decision first = MustRoute(*r, "app", "c1", "room");
  ASSERT_TRUE(first.ok);
  ASSERT_TRUE(r->ReportProbe(first.node_id, 503, 1, 30.0).ok());
  Decision again = MustRoute(*r, "app", "c2", "room");
  EXPECT_TRUE(again.ok);
  EXPECT_EQ(again.node_id, first.node_id) << "the node decides for the keys it holds";
  const std::string other = first.node_id == "n0" ? "n1" : "n0";
  for (int i = 0; i < 6; ++i) {
    Decision d = MustRoute(*r, "app", "k" + std::to_string(i), "new" + std::to_string(i));
    EXPECT_EQ(d.node_id, other);
  }
  // It bounces the strict key's call: the call fails, the key never moves.
  absl::StatusOr<Decision> bounced = r->Retry("c2", 503);
  ASSERT_TRUE(bounced.ok());
  EXPECT_FALSE(bounced->ok);
  EXPECT_EQ(bounced->reason, "key_tried");
  EXPECT_EQ(MustRoute(*r, "app", "c3", "room").node_id, first.node_id);
}

TEST(Busy, BadRetryAfterIsAnErrorThatNamesItAndChangesNothing) {
  auto r = MakeRouter(TwoNodes());
  for (double bad : {-1.0, 86401.0, std::numeric_limits<double>::quiet_NaN()}) {
    absl::Status s = r->ReportProbe("n0", 503, 1, bad);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(s.message().find("retry_after"), std::string::npos) << s;
    s = r->ReportCallResult("n0", 503, 1, bad);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  }
  EXPECT_EQ(r->Node("n0")->busy_until_ms, 0);
}

std::string BudgetYaml(const std::string& budget) {
  return PoolYaml(4, "    strategy: round_robin\n    retry: {max_attempts: 3" + budget + "}\n");
}

TEST(RetryBudget, RetriesPastTheShareOfCallsInFlightGetNoNodeAtOnce) {
  ManualClock clock;
  RouterOptions o;
  o.now_ms = clock.fn();
  auto r = MakeRouter(BudgetYaml(", budget: {percent: 20, min_per_second: 3}"), o);
  for (int i = 0; i < 100; ++i) ASSERT_TRUE(MustRoute(*r, "app", "c" + std::to_string(i)).ok);
  // 100 calls in flight: 20 + 3 retries this second.
  int placed = 0, refused = 0;
  for (int i = 0; i < 100; ++i) {
    absl::StatusOr<Decision> d = r->Retry("c" + std::to_string(i), 503);
    ASSERT_TRUE(d.ok()) << d.status();
    if (d->ok) {
      ++placed;
    } else {
      EXPECT_EQ(d->reason, "retry_budget");
      EXPECT_NE(d->detail.find("retry budget"), std::string::npos);
      ++refused;
    }
  }
  EXPECT_EQ(placed, 23);
  EXPECT_EQ(refused, 77);
  RouterStats s = r->Stats();
  EXPECT_EQ(s.budget_refusals["app"], 77);
  EXPECT_EQ(s.sessions, 23) << "a refused retry ends its call";
  // The next second: 23 calls in flight, 4 + 3 retries.
  clock.Advance(1'000);
  placed = 0;
  for (int i = 0; i < 100; ++i) {
    absl::StatusOr<Decision> d = r->Retry("c" + std::to_string(i), 503);
    if (d.ok() && d->ok) ++placed;
  }
  EXPECT_EQ(placed, 7);
}

TEST(RetryBudget, TheFloorLetsAQuietAppRetryAndNoBudgetMeansNoLimit) {
  ManualClock clock;
  RouterOptions o;
  o.now_ms = clock.fn();
  auto quiet = MakeRouter(BudgetYaml(", budget: {percent: 0, min_per_second: 2}"), o);
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(MustRoute(*quiet, "app", "q" + std::to_string(i)).ok);
  int placed = 0;
  for (int i = 0; i < 5; ++i) placed += quiet->Retry("q" + std::to_string(i), 503)->ok;
  EXPECT_EQ(placed, 2);
  auto free = MakeRouter(BudgetYaml(""), o);
  for (int i = 0; i < 50; ++i) ASSERT_TRUE(MustRoute(*free, "app", "f" + std::to_string(i)).ok);
  placed = 0;
  for (int i = 0; i < 50; ++i) placed += free->Retry("f" + std::to_string(i), 503)->ok;
  EXPECT_EQ(placed, 50);
  EXPECT_EQ(free->Stats().budget_refusals["app"], 0);
}

TEST(RetryBudget, DefaultsAndConfigErrorsNameTheKey) {
  auto d = ParseConfig("apps:\n  default:\n    retry: {budget: {}}\n");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->apps.at("default").retry_budget_percent, 20);
  EXPECT_EQ(d->apps.at("default").retry_budget_min_per_second, 3);
  EXPECT_LT(ParseConfig("apps:\n  default: {}\n")->apps.at("default").retry_budget_percent, 0);
  for (const char* bad : {"{percent: 101}", "{percent: x}", "{min_per_second: -1}", "{burst: 3}", "20"}) {
    auto c = ParseConfig(std::string("apps:\n  default:\n    retry: {budget: ") + bad + "}\n");
    ASSERT_FALSE(c.ok()) << bad;
    EXPECT_NE(c.status().message().find("apps.default.retry.budget"), std::string::npos) << c.status();
  }
  auto h = ParseConfig("health: {busy_for: -1}\n");
  ASSERT_FALSE(h.ok());
  EXPECT_NE(h.status().message().find("health.busy_for"), std::string::npos);
}

TEST(Overload, ShedsItsShareOfNewCallsForTheValidityPeriod) {
  ManualClock clock;
  RouterOptions o;
  o.now_ms = clock.fn();
  o.random_seed = 7;
  auto r = MakeRouter(TwoNodes(), o);
  ASSERT_TRUE(r->ReportOverload("n0", 50, 10'000, 100).ok());
  EXPECT_EQ(r->Node("n0")->overload_percent, 50);
  EXPECT_EQ(r->Node("n0")->overload_until_ms, clock.ms->load() + 10'000);
  EXPECT_EQ(r->Stats().overloaded_nodes, 1);
  // Round robin would give n0 2000 of 4000; it keeps about half of them
  // (binomial, 2000 draws at 1/2: sd 22; the bound is 6 sd).
  std::map<std::string, int> got = Spread(*r, "a", 4000);
  EXPECT_NEAR(got["n0"], 1000, 135);
  EXPECT_EQ(got["n0"] + got["n1"], 4000) << "shed calls go to the other node";
  clock.Advance(10'001);
  EXPECT_EQ(r->Node("n0")->overload_percent, 0);
  EXPECT_EQ(Spread(*r, "b", 100), (std::map<std::string, int>{{"n0", 50}, {"n1", 50}}));
}

TEST(Overload, NewestSeqWinsAndZeroEndsIt) {
  ManualClock clock;
  RouterOptions o;
  o.now_ms = clock.fn();
  auto r = MakeRouter(TwoNodes(), o);
  ASSERT_TRUE(r->ReportOverload("n0", 100, 5'000, 20).ok());
  EXPECT_EQ(Spread(*r, "a", 10), (std::map<std::string, int>{{"n1", 10}}));
  ASSERT_TRUE(r->ReportOverload("n0", 0, 5'000, 19).ok());  // older: ignored
  EXPECT_EQ(r->Node("n0")->overload_percent, 100);
  const int64_t until = r->Node("n0")->overload_until_ms;
  clock.Advance(4'000);
  // RFC 7339 section 5.4: the same oc-seq again changes nothing, neither the
  // period nor the share, while the period runs
  ASSERT_TRUE(r->ReportOverload("n0", 100, 5'000, 20).ok());
  ASSERT_TRUE(r->ReportOverload("n0", 30, 60'000, 20).ok());
  EXPECT_EQ(r->Node("n0")->overload_until_ms, until);
  EXPECT_EQ(r->Node("n0")->overload_percent, 100);
  // once it is over the stored figures are reset: the same oc-seq starts a new period
  clock.Advance(1'001);
  EXPECT_EQ(r->Node("n0")->overload_percent, 0);
  ASSERT_TRUE(r->ReportOverload("n0", 100, 5'000, 20).ok());
  EXPECT_EQ(r->Node("n0")->overload_until_ms, clock.ms->load() + 5'000);
  ASSERT_TRUE(r->ReportOverload("n0", 100, 5'000, 19).ok());  // still older: ignored
  EXPECT_EQ(r->Node("n0")->overload_until_ms, clock.ms->load() + 5'000);
  ASSERT_TRUE(r->ReportOverload("n0", 0, 5'000, 21).ok());
  EXPECT_EQ(r->Node("n0")->overload_percent, 0);
  ASSERT_TRUE(r->ReportOverload("n0", 80, 5'000, 22).ok());
  ASSERT_TRUE(r->ReportOverload("n0", 80, 0, 23).ok());  // validity 0 ends it too
  EXPECT_EQ(r->Node("n0")->overload_percent, 0);
  EXPECT_EQ(Spread(*r, "b", 10), (std::map<std::string, int>{{"n0", 5}, {"n1", 5}}));
  // A period that ran out resets the stored figures, oc-seq included
  // (section 5.4): a node whose counter restarted lower is heard again; an
  // older answer while a period runs is not.
  ASSERT_TRUE(r->ReportOverload("n0", 50, 1'000, 30).ok());
  ASSERT_TRUE(r->ReportOverload("n0", 90, 1'000, 29).ok());
  EXPECT_EQ(r->Node("n0")->overload_percent, 50);
  clock.Advance(1'001);
  ASSERT_TRUE(r->ReportOverload("n0", 60, 5'000, 2).ok());
  EXPECT_EQ(r->Node("n0")->overload_percent, 60);
  // A lone node at 100%: the shed call is refused, as RFC 7339 has it.
  auto one = MakeRouter(PoolYaml(1, "    strategy: round_robin\n"), o);
  ASSERT_TRUE(one->ReportOverload("n0", 100, 5'000, 1).ok());
  Decision d = MustRoute(*one, "app", "x");
  EXPECT_FALSE(d.ok);
  EXPECT_NE(d.detail.find("shed by overload control"), std::string::npos) << d.detail;
}

TEST(Overload, ExplainNamesBusyAndShedNodes) {
  auto r = MakeRouter(TwoNodes());
  ASSERT_TRUE(r->ReportProbe("n0", 503, 1, 30.0).ok());
  ASSERT_TRUE(r->ReportOverload("n1", 100, 60'000, 1).ok());
  absl::StatusOr<ExplainTrace> t = r->Explain({.app = "app"});
  ASSERT_TRUE(t.ok()) << t.status();
  std::map<std::string, std::string> why;
  for (const ExplainNode& n : t->nodes) why[n.id] = n.exclusion + ": " + n.detail;
  EXPECT_EQ(why["n0"].rfind("busy: ", 0), 0u) << why["n0"];
  EXPECT_NE(why["n0"].find("30 s more"), std::string::npos) << why["n0"];
  EXPECT_EQ(why["n1"].rfind("shed: ", 0), 0u) << why["n1"];
  EXPECT_NE(why["n1"].find("100% of new calls"), std::string::npos) << why["n1"];
}

TEST(Overload, BadArgumentsAreErrorsThatChangeNothing) {
  auto r = MakeRouter(TwoNodes());
  EXPECT_EQ(r->ReportOverload("n0", 101, 1000, 1).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(r->ReportOverload("n0", -1, 1000, 1).code(), absl::StatusCode::kInvalidArgument);
  absl::Status s = r->ReportOverload("n0", 50, -5, 1);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("validity_ms"), std::string::npos);
  EXPECT_EQ(r->ReportOverload("n0", 50, 86'400'001, 1).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(r->ReportOverload("ghost", 50, 1000, 1).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(r->Node("n0")->overload_percent, 0);
}

}  // namespace
}  // namespace approute
