// Drains that finish (deadline, no grace on a leaving node) and affinity
// within a load bound (affinity.bound).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <set>

#include "approute/router.h"
#include "state/session_table.h"
#include "test_util.h"

namespace approute {
namespace {

using testing::MakeRouter;
using testing::ManualClock;
using testing::MustRoute;
using testing::Sessions;

const char* kPool = R"(
nodes:
  - {id: a1, uri: "sip:10.0.0.1:5060", pool: media, capacity: {conference: 100}}
  - {id: a2, uri: "sip:10.0.0.2:5060", pool: media, capacity: {conference: 100}}
  - {id: a3, uri: "sip:10.0.0.3:5060", pool: media, capacity: {conference: 100}}
  - {id: a4, uri: "sip:10.0.0.4:5060", pool: media, capacity: {conference: 100}}
apps:
  conference:
    pool: media
    strategy: least_loaded
    resource: conference
    affinity: {grace: 60BOUND}
)";

std::string Pool(const std::string& bound = "") {
  std::string y = kPool;
  y.replace(y.find("BOUND"), 5, bound.empty() ? "" : ", bound: " + bound);
  return y;
}

int64_t KeysOn(const Router& r, const std::string& node) {
  ListFilter f;
  f.node = node;
  return static_cast<int64_t>(r.Affinities(f).size());
}

TEST(Drain, AKeyWhoseLastSessionEndsIsReleasedAtOnce) {
  ManualClock clock;
  RouterOptions o;
  o.now_ms = clock.fn();
  auto r = MakeRouter(Pool(), o);
  Decision d1 = MustRoute(*r, "conference", "c1", "k");
  Decision d2 = MustRoute(*r, "conference", "c2", "k");
  ASSERT_EQ(d2.node_id, d1.node_id);
  ASSERT_TRUE(r->Drain(d1.node_id).ok());
  ASSERT_TRUE(r->End("c1").ok());
  EXPECT_EQ(KeysOn(*r, d1.node_id), 1) << "one session still holds the key";
  ASSERT_TRUE(r->End("c2").ok());
  EXPECT_EQ(KeysOn(*r, d1.node_id), 0) << "no grace time on a draining node";
  Decision d3 = MustRoute(*r, "conference", "c3", "k");
  EXPECT_NE(d3.node_id, d1.node_id);
  EXPECT_EQ(d3.reason, "strategy");
}

TEST(Drain, ClaimsInTheirGraceTimeAreForgotten) {
  auto r = MakeRouter(Pool());
  Decision d1 = MustRoute(*r, "conference", "c1", "k");
  ASSERT_TRUE(r->End("c1").ok());
  ASSERT_EQ(KeysOn(*r, d1.node_id), 1) << "in its grace time";
  ASSERT_TRUE(r->SetState(d1.node_id, AdminState::kDraining).ok());
  EXPECT_EQ(KeysOn(*r, d1.node_id), 0);
  EXPECT_NE(MustRoute(*r, "conference", "c2", "k").node_id, d1.node_id);
}

TEST(Drain, WithoutADeadlineKeysFollowTheirSessions) {
  auto r = MakeRouter(Pool());
  Decision d1 = MustRoute(*r, "conference", "c1", "k");
  ASSERT_TRUE(r->Drain(d1.node_id).ok());
  Decision d2 = MustRoute(*r, "conference", "c2", "k");
  EXPECT_EQ(d2.node_id, d1.node_id);
  EXPECT_EQ(d2.reason, "affinity");
}

TEST(Drain, AfterTheDeadlineNewCallsOfItsKeysGoElsewhere) {
  ManualClock clock;
  RouterOptions o;
  o.now_ms = clock.fn();
  auto r = MakeRouter(Pool(), o);
  Decision d1 = MustRoute(*r, "conference", "c1", "k");
  const std::string x = d1.node_id;
  ASSERT_TRUE(r->Drain(x, 10'000).ok());
  EXPECT_EQ(MustRoute(*r, "conference", "c2", "k").node_id, x) << "before the deadline";
  clock.Advance(10'000);
  Decision d3 = MustRoute(*r, "conference", "c3", "k");
  EXPECT_NE(d3.node_id, x);
  EXPECT_EQ(d3.reason, "strategy");
  Decision d4 = MustRoute(*r, "conference", "c4", "k");
  EXPECT_EQ(d4.node_id, d3.node_id) << "the key moved with its new claim";
  EXPECT_EQ(d4.reason, "affinity");
  ASSERT_TRUE(r->End("c1").ok());
  ASSERT_TRUE(r->End("c2").ok());
  EXPECT_EQ(Sessions(*r, x, "conference"), 0);
  EXPECT_EQ(KeysOn(*r, x), 0);
  EXPECT_EQ(KeysOn(*r, d3.node_id), 1);
}

TEST(Drain, ActiveAgainEndsTheDeadline) {
  auto r = MakeRouter(Pool());
  Decision d1 = MustRoute(*r, "conference", "c1", "k");
  ASSERT_TRUE(r->Drain(d1.node_id, 0).ok());
  ASSERT_TRUE(r->SetState(d1.node_id, AdminState::kActive).ok());
  Decision d2 = MustRoute(*r, "conference", "c2", "k");
  EXPECT_EQ(d2.node_id, d1.node_id);
  EXPECT_EQ(d2.reason, "affinity");
}

TEST(Drain, BadInputIsAnErrorAndChangesNothing) {
  auto r = MakeRouter(Pool());
  absl::Status s = r->Drain("a1", -1);
  EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
  EXPECT_NE(s.message().find("deadline"), std::string::npos) << s;
  EXPECT_EQ(r->Node("a1")->spec.state, AdminState::kActive);
  EXPECT_TRUE(absl::IsNotFound(r->Drain("nope", 5)));
}

// Loads the pool evenly with `per_node` x 4 sessions of distinct keys.
void Spread(Router& r, int n) {
  for (int i = 0; i < n; ++i) MustRoute(r, "conference", "bg" + std::to_string(i), "bg" + std::to_string(i));
}

std::map<std::string, int> BigKey(Router& r, int calls) {
  std::map<std::string, int> homes;
  for (int i = 0; i < calls; ++i) {
    Decision d = MustRoute(r, "conference", "big" + std::to_string(i), "big");
    EXPECT_TRUE(d.ok);
    ++homes[d.node_id];
  }
  return homes;
}

TEST(Bound, WithoutBoundAKeyStaysOnOneNode) {
  auto r = MakeRouter(Pool());
  Spread(*r, 40);
  EXPECT_EQ(BigKey(*r, 40).size(), 1u);
}

TEST(Bound, APopularKeySpillsOverToFewNodesWithinTheBound) {
  auto r = MakeRouter(Pool("1.25"));
  Spread(*r, 40);
  std::map<std::string, int> homes = BigKey(*r, 40);
  EXPECT_GE(homes.size(), 2u) << "one node alone would be far above the bound";
  EXPECT_LE(homes.size(), 3u) << "the key keeps a small set of homes";
  int64_t total = 0, most = 0;
  for (const char* n : {"a1", "a2", "a3", "a4"}) {
    int64_t s = Sessions(*r, n, "conference");
    total += s;
    most = std::max(most, s);
  }
  EXPECT_EQ(total, 80);
  EXPECT_LE(most, static_cast<int64_t>(std::ceil(1.25 * total / 4.0))) << "max load within bound x mean";
}

TEST(Bound, SpillOverIsStable) {
  // Two routers with the same state choose the same next homes for a key.
  auto r1 = MakeRouter(Pool("1.25"));
  auto r2 = MakeRouter(Pool("1.25"));
  Spread(*r1, 40);
  Spread(*r2, 40);
  EXPECT_EQ(BigKey(*r1, 40), BigKey(*r2, 40));
}

TEST(Bound, BadBoundsAreClearErrors) {
  for (const char* bad : {"1.0", "0.5", "x", "[1]"}) {
    absl::StatusOr<std::unique_ptr<Router>> r = Router::FromYaml(Pool(bad));
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_NE(r.status().message().find("affinity.bound"), std::string::npos) << r.status();
  }
  EXPECT_TRUE(Router::FromYaml(Pool("1.5")).ok());
}

TEST(SessionAttrs, PackedInKeyOrderWholePairsOnly) {
  using internal::SessionTable;
  char buf[internal::kSessionAttrsLen];
  std::map<std::string, std::string> a{{"region", "eu"}, {"tier", "gold"}};
  SessionTable::PackAttrs(&a, buf);
  EXPECT_EQ(SessionTable::UnpackAttrs(buf), a);
  std::map<std::string, std::string> big{{"a", "1"}, {"b", std::string(200, 'x')}, {"c", "3"}};
  SessionTable::PackAttrs(&big, buf);
  std::map<std::string, std::string> kept{{"a", "1"}};
  EXPECT_EQ(SessionTable::UnpackAttrs(buf), kept) << "a pair that does not fit ends the list";
  SessionTable::PackAttrs(nullptr, buf);
  EXPECT_TRUE(SessionTable::UnpackAttrs(buf).empty());
}

}  // namespace
}  // namespace approute
