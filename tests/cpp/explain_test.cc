// Router::Explain: a dry run of the routing flow that changes nothing, and a
// trace that names why each node would or would not take the call. Every
// exclusion reason a test can bring about is brought about here.
#include <gtest/gtest.h>

#include <set>
#include <string>
#include <vector>

#include "approute/explain.h"
#include "approute/router.h"
#include "placement/redis_client.h"
#include "redis_server.h"
#include "test_util.h"

namespace approute {
namespace {

using testing::MakeRouter;
using testing::ManualClock;
using testing::MustRoute;
using testing::Sessions;

// Three nodes of pool media, capacity 2 calls each; `app` is the app's body.
std::string Yaml(const std::string& app, const std::string& top = "", const std::string& node_extra = "") {
  std::string y = top + "nodes:\n";
  for (int i = 0; i < 3; ++i) {
    y += "  - {id: n" + std::to_string(i) + ", uri: \"sip:10.0.0." + std::to_string(i + 1) +
         ":5060\", pool: media, capacity: {calls: 2}" + node_extra + "}\n";
  }
  return y + "apps:\n  app:\n    pool: media\n    resource: calls\n" + app;
}

ExplainTrace MustExplain(const Router& r, ExplainRequest req) {
  if (req.app.empty() && req.call_id.empty()) req.app = "app";
  absl::StatusOr<ExplainTrace> t = r.Explain(req);
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? *t : ExplainTrace{};
}

const ExplainNode& NodeIn(const ExplainTrace& t, const std::string& id) {
  for (const ExplainNode& n : t.nodes) {
    if (n.id == id) return n;
  }
  ADD_FAILURE() << "no node " << id << " in the trace";
  static const ExplainNode none;
  return none;
}

// Everything routing state holds that a placement could change.
struct Picture {
  std::vector<std::string> sessions, affinities;
  std::map<std::string, int64_t> counts;
  std::map<std::string, std::map<std::string, int64_t>> decisions;
  int64_t routed = 0;
  bool operator==(const Picture&) const = default;
};
Picture Take(const Router& r) {
  Picture p;
  for (const SessionInfo& s : r.Sessions()) p.sessions.push_back(s.call_id + "@" + s.node_id + "#" + s.key);
  for (const AffinityInfo& a : r.Affinities()) {
    p.affinities.push_back(a.key + "@" + a.node_id + "x" + std::to_string(a.sessions));
  }
  for (const NodeStatus& n : r.Nodes()) {
    for (const auto& [res, c] : n.sessions) p.counts[n.spec.id + "/" + res] = c;
    p.routed += n.routed_total;
  }
  p.decisions = r.Stats().decisions;
  std::sort(p.sessions.begin(), p.sessions.end());
  std::sort(p.affinities.begin(), p.affinities.end());
  return p;
}

TEST(ExplainTest, ChangesNothingAndPredictsTheNextRoute) {
  // round_robin takes a ticket shared by every process: a dry run must not.
  auto r = MakeRouter(Yaml("    strategy: round_robin\n    affinity: {grace: 60}\n"));
  ASSERT_NE(r, nullptr);
  MustRoute(*r, "app", "c1", "room1");
  MustRoute(*r, "app", "c2", "room2");
  const Picture before = Take(*r);
  ExplainTrace first;
  for (int i = 0; i < 20; ++i) {
    first = MustExplain(*r, {.key = "room3"});
    MustExplain(*r, {.key = "room1"});
    MustExplain(*r, {.call_id = "c1"});
  }
  EXPECT_EQ(Take(*r), before) << "explain reserved, claimed, counted or took a ticket";
  ASSERT_TRUE(first.decision.ok) << first.decision.detail;
  EXPECT_EQ(first.decision.reason, "strategy");
  EXPECT_EQ(first.affinity.outcome, "new_key");
  Decision real = MustRoute(*r, "app", "c3", "room3");
  EXPECT_EQ(real.node_id, first.decision.node_id) << "the trace is the next placement's";
  EXPECT_EQ(first.compared.size(), 3u);
  ASSERT_FALSE(first.picks.empty());
  EXPECT_EQ(first.picks.back().outcome, "taken");
}

TEST(ExplainTest, AffinityJoinAndLiveSessionAsOfNow) {
  auto r = MakeRouter(Yaml("    strategy: least_loaded\n    affinity: {grace: 60}\n"));
  ASSERT_NE(r, nullptr);
  const Decision d = MustRoute(*r, "app", "c1", "room1");
  ExplainTrace t = MustExplain(*r, {.key = "room1"});
  EXPECT_EQ(t.affinity.outcome, "join");
  EXPECT_EQ(t.affinity.node, d.node_id);
  EXPECT_EQ(t.affinity.live_sessions, 1);
  EXPECT_EQ(t.decision.reason, "affinity");
  EXPECT_EQ(t.decision.node_id, d.node_id);
  // The live session: its key and app are its own.
  t = MustExplain(*r, {.call_id = "c1"});
  EXPECT_EQ(t.call_id, "c1");
  EXPECT_EQ(t.key, "room1");
  EXPECT_EQ(t.decision.node_id, d.node_id);
  // The key in its grace after its last call ended.
  ASSERT_TRUE(r->End("c1").ok());
  t = MustExplain(*r, {.key = "room1"});
  EXPECT_EQ(t.affinity.live_sessions, 0);
  EXPECT_GT(t.affinity.grace_left_ms, 0);
  EXPECT_EQ(t.decision.node_id, d.node_id);
}

TEST(ExplainTest, BusyAndShedNodesAreNamedAndRouteAgrees) {
  auto r = MakeRouter(Yaml("    strategy: least_loaded\n"));
  ASSERT_NE(r, nullptr);
  ASSERT_TRUE(r->ReportProbe("n0", 503, 1, 30.0).ok());       // busy for 30 s
  ASSERT_TRUE(r->ReportOverload("n1", 100, 60'000, 1).ok());  // oc=100: every new call shed
  ExplainTrace t = MustExplain(*r, {});
  EXPECT_EQ(NodeIn(t, "n0").exclusion, "busy");
  EXPECT_EQ(NodeIn(t, "n1").exclusion, "shed");
  EXPECT_EQ(NodeIn(t, "n2").exclusion, "");
  EXPECT_EQ(t.decision.node_id, "n2");
  EXPECT_EQ(MustRoute(*r, "app", "c1", "").node_id, "n2");
  // A 200 probe ends the busy period at once; oc=0 ends the shedding.
  ASSERT_TRUE(r->ReportProbe("n0", 200, 1).ok());
  ASSERT_TRUE(r->ReportOverload("n1", 0, 0, 2).ok());
  t = MustExplain(*r, {});
  EXPECT_EQ(NodeIn(t, "n0").exclusion, "");
  EXPECT_EQ(NodeIn(t, "n1").exclusion, "");
}

TEST(ExplainTest, AdminStateHealthExcludeAndFull) {
  auto r = MakeRouter(Yaml("    strategy: least_loaded\n"));
  ASSERT_NE(r, nullptr);
  ASSERT_TRUE(r->SetState("n0", AdminState::kDisabled).ok());
  ASSERT_TRUE(r->Drain("n1", 30'000).ok());
  ExplainTrace t = MustExplain(*r, {});
  EXPECT_EQ(NodeIn(t, "n0").exclusion, "disabled");
  EXPECT_EQ(NodeIn(t, "n0").state, "disabled");
  EXPECT_EQ(NodeIn(t, "n1").exclusion, "draining");
  EXPECT_NE(NodeIn(t, "n1").detail.find("deadline in 30 s"), std::string::npos) << NodeIn(t, "n1").detail;
  EXPECT_TRUE(NodeIn(t, "n2").candidate);
  EXPECT_EQ(t.decision.node_id, "n2");

  // n2 full: nothing left, and the detail says so as route() does.
  MustRoute(*r, "app", "c1");
  MustRoute(*r, "app", "c2");
  t = MustExplain(*r, {});
  EXPECT_EQ(NodeIn(t, "n2").exclusion, "full");
  EXPECT_EQ(NodeIn(t, "n2").detail, "full: calls 2/2");
  EXPECT_FALSE(t.decision.ok);
  EXPECT_EQ(t.decision.reason, "no_node");
  absl::StatusOr<Decision> real = r->Route({.app = "app", .call_id = "c3"});
  ASSERT_TRUE(real.ok());
  EXPECT_EQ(real->detail, t.decision.detail);

  ASSERT_TRUE(r->SetState("n0", AdminState::kActive).ok());
  ASSERT_TRUE(r->SetState("n1", AdminState::kActive).ok());
  ASSERT_TRUE(r->SetHealth("n0", Health::kDown).ok());
  t = MustExplain(*r, {.exclude = {"n1"}});
  EXPECT_EQ(NodeIn(t, "n0").exclusion, "down");
  EXPECT_EQ(NodeIn(t, "n0").health, "down");
  EXPECT_EQ(NodeIn(t, "n1").exclusion, "excluded");
  EXPECT_FALSE(t.decision.ok);

  // Suspect nodes only when no node is up.
  ASSERT_TRUE(r->SetHealth("n0", Health::kSuspect).ok());
  t = MustExplain(*r, {});
  EXPECT_EQ(NodeIn(t, "n0").exclusion, "suspect");
  EXPECT_EQ(t.decision.node_id, "n1");
}

TEST(ExplainTest, TriedByARetriedSession) {
  auto r = MakeRouter(Yaml("    strategy: least_loaded\n    retry: {codes: [503], max_attempts: 3}\n"));
  ASSERT_NE(r, nullptr);
  const Decision d = MustRoute(*r, "app", "c1");
  absl::StatusOr<Decision> again = r->Retry("c1", 503);
  ASSERT_TRUE(again.ok() && again->ok);
  const ExplainTrace t = MustExplain(*r, {.call_id = "c1"});
  EXPECT_EQ(NodeIn(t, d.node_id).exclusion, "tried");
  EXPECT_NE(t.decision.node_id, d.node_id);
}

TEST(ExplainTest, EjectedForErrors) {
  auto r =
      MakeRouter(Yaml("    strategy: least_loaded\n",
                      "health: {outlier: {consecutive_failures: 2, base_ejection: 30, max_ejected_percent: 100}}\n"));
  ASSERT_NE(r, nullptr);
  for (int i = 0; i < 2; ++i) ASSERT_TRUE(r->ReportCallResult("n0", 500, 10).ok());
  const ExplainTrace t = MustExplain(*r, {});
  EXPECT_EQ(NodeIn(t, "n0").exclusion, "ejected");
  EXPECT_NE(NodeIn(t, "n0").detail.find("s more"), std::string::npos);
}

TEST(ExplainTest, LeaseExpired) {
  ManualClock clock;
  const std::string top =
      "status:\n  allow_sources: [\"127.0.0.0/8\"]\n  keys: {media: {k1: \"a-secret-of-16-or-more-characters\"}}\n";
  auto r = MakeRouter(Yaml("    strategy: least_loaded\n", top), RouterOptions{.now_ms = clock.fn()});
  ASSERT_NE(r, nullptr);
  const std::string body = R"({"node": "dyn", "uri": "sip:127.0.0.1:5070", "pool": "media", "seq": 1})";
  ReportRequest rep;
  rep.body = body;
  rep.expires = 60;
  rep.source = "127.0.0.1";
  rep.auth = SignReport(body, "k1", "a-secret-of-16-or-more-characters", clock.ms->load() / 1000, "dyn", "", 60);
  ASSERT_EQ(r->ApplyReport(rep).code, 200);
  EXPECT_TRUE(NodeIn(MustExplain(*r, {}), "dyn").candidate);
  clock.Advance(61'000);
  EXPECT_EQ(NodeIn(MustExplain(*r, {}), "dyn").exclusion, "lease_expired");
}

TEST(ExplainTest, HeadroomAndStrictRefusal) {
  // Capacity 2, headroom 0.5: a new key only below 1 call.
  auto r = MakeRouter(Yaml("    strategy: least_loaded\n    affinity: {grace: 60, strict: true, headroom: 0.5}\n"));
  ASSERT_NE(r, nullptr);
  for (int i = 0; i < 3; ++i) MustRoute(*r, "app", "c" + std::to_string(i), "room" + std::to_string(i));
  ExplainTrace t = MustExplain(*r, {.key = "new"});
  for (const char* id : {"n0", "n1", "n2"}) {
    EXPECT_TRUE(NodeIn(t, id).candidate);
    EXPECT_EQ(NodeIn(t, id).exclusion, "headroom") << NodeIn(t, id).detail;
  }
  EXPECT_FALSE(t.decision.ok);
  EXPECT_NE(t.decision.detail.find("above the headroom"), std::string::npos) << t.decision.detail;
  ASSERT_FALSE(t.picks.empty());
  EXPECT_EQ(t.picks.front().outcome, "headroom");
  // A key of a node that is full: strict refuses, naming the node.
  const Decision d = MustRoute(*r, "app", "c9", "room0");
  ASSERT_TRUE(d.ok);
  t = MustExplain(*r, {.key = "room0"});
  EXPECT_EQ(t.affinity.outcome, "refused");
  EXPECT_EQ(t.decision.reason, "key_full");
  absl::StatusOr<Decision> real = r->Route({.app = "app", .call_id = "c10", .key = "room0"});
  ASSERT_TRUE(real.ok());
  EXPECT_EQ(real->reason, t.decision.reason);
  EXPECT_EQ(real->detail, t.decision.detail);
}

TEST(ExplainTest, SlowStartSkipsAPick) {
  // n0 came up just now (probes): a pick of it is skipped 95% of the time.
  ManualClock clock;
  auto r = MakeRouter(
      Yaml("    strategy: priority\n", "health: {probe: {down_after: 1, up_after: 1}, slow_start: {window: 60}}\n", ""),
      RouterOptions{.now_ms = clock.fn()});
  ASSERT_NE(r, nullptr);
  ASSERT_TRUE(r->ReportProbe("n0", 0, 0).ok());
  ASSERT_TRUE(r->ReportProbe("n0", 200, 1).ok());
  bool skipped = false;
  for (int i = 0; i < 200 && !skipped; ++i) {
    const ExplainTrace t = MustExplain(*r, {});
    for (const ExplainPick& p : t.picks) skipped |= p.outcome == "slow_start";
  }
  EXPECT_TRUE(skipped);
}

TEST(ExplainTest, OverTheBoundGoesToTheNextHome) {
  auto r = MakeRouter(Yaml("    strategy: least_loaded\n    affinity: {grace: 60, bound: 1.25}\n", "", ""));
  ASSERT_NE(r, nullptr);
  // One call of the key on its node, none elsewhere: a second would put
  // it at 2 > ceil(1.25 x 2 x 2 / 6) = 1.
  const Decision d = MustRoute(*r, "app", "c1", "hot");
  const ExplainTrace t = MustExplain(*r, {.key = "hot"});
  EXPECT_EQ(t.affinity.outcome, "over_bound") << t.affinity.detail;
  EXPECT_EQ(t.decision.reason, "affinity_bound");
  EXPECT_NE(t.decision.node_id, d.node_id);
  const Decision real = MustRoute(*r, "app", "c2", "hot");
  EXPECT_EQ(real.reason, "affinity_bound");
  EXPECT_EQ(real.node_id, t.decision.node_id);
}

TEST(ExplainTest, PreferenceAndBadInput) {
  auto r = MakeRouter(Yaml("    strategy: least_loaded\n    affinity: {grace: 60}\n"));
  ASSERT_NE(r, nullptr);
  const Decision d = MustRoute(*r, "app", "c1", "k1");
  ASSERT_TRUE(r->Route({.app = "app", .call_id = "c2", .key = "k2", .prefer = "acme"}).ok());
  const ExplainTrace t = MustExplain(*r, {.key = "k3", .prefer = "acme"});
  EXPECT_EQ(t.decision.reason, "prefer");
  EXPECT_NE(t.steps.size(), 0u);
  (void)d;
  EXPECT_EQ(r->Explain({.app = "app", .key = std::string("\x1f") + "x"}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(r->Explain({.call_id = "nope"}).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(r->Explain({.app = "nope"}).status().code(), absl::StatusCode::kNotFound);
}

TEST(ExplainTest, EveryReasonHasANameAndText) {
  std::set<std::string> seen;
  for (const std::string& n : ExclusionNames()) {
    EXPECT_FALSE(n.empty());
    EXPECT_TRUE(seen.insert(n).second) << n << " twice";
  }
  // The reasons the tests above bring about; "gone" (a node removed between
  // the snapshot and the scan) needs a race.
  // (busy and shed: overload_test.cc.)
  for (const char* n : {"disabled", "lease_expired", "draining", "down", "ejected", "suspect", "tried", "excluded",
                        "full", "headroom", "slow_start", "gone", "busy", "shed"}) {
    EXPECT_TRUE(seen.count(n)) << n;
  }
  EXPECT_EQ(seen.size(), 14u) << "a new reason needs its test here";
}

}  // namespace
}  // namespace approute

namespace approute {
namespace {

int64_t RedisWrites(testing::RedisServer& srv) {
  internal::RedisClient c(*internal::ParseRedisUrl(srv.url()), 1000);
  absl::StatusOr<internal::RedisValue> r = c.Command({"INFO", "persistence"});
  if (!r.ok()) return -1;
  const std::string& text = r->str;
  const std::string field = "rdb_changes_since_last_save:";
  const size_t at = text.find(field);
  return at == std::string::npos ? -1 : std::stoll(text.substr(at + field.size()));
}

// With cluster:, the key's claim is the deployment's (another proxy's call
// shows), and a trace writes nothing to Redis.
TEST(ExplainTest, ClusterReadsTheDeploymentAndWritesNothing) {
  APPROUTE_NEED_REDIS();
  testing::RedisServer srv;
  ASSERT_TRUE(srv.Start());
  auto yaml = [&](const std::string& proxy) {
    return Yaml("    strategy: least_loaded\n    affinity: {grace: 60, strict: true}\n",
                "cluster: {redis: \"" + srv.url() + "\", name: explain, proxy: " + proxy + ", timeout_ms: 500}\n");
  };
  auto kam1 = MakeRouter(yaml("kam1"));
  auto kam2 = MakeRouter(yaml("kam2"));
  ASSERT_NE(kam1, nullptr);
  ASSERT_NE(kam2, nullptr);
  const Decision d = MustRoute(*kam1, "app", "c1", "room1");
  MustRoute(*kam1, "app", "c2", "room1");  // its node is full now (2 calls)
  MustRoute(*kam2, "app", "c3", "room2");
  const int64_t before = RedisWrites(srv);
  ASSERT_GE(before, 0);
  ExplainTrace t;
  for (int i = 0; i < 10; ++i) t = MustExplain(*kam2, {.key = "room1"});
  MustExplain(*kam2, {.key = "room9"});
  MustExplain(*kam1, {.call_id = "c1"});
  EXPECT_EQ(RedisWrites(srv), before) << "explain wrote to Redis";
  EXPECT_EQ(t.affinity.node, d.node_id) << "kam2 sees kam1's claim";
  EXPECT_EQ(t.affinity.live_sessions, 2);
  EXPECT_EQ(t.affinity.outcome, "refused");
  EXPECT_EQ(t.decision.reason, "key_full");
  EXPECT_NE(t.decision.detail.find("2/2"), std::string::npos) << t.decision.detail;
}

}  // namespace
}  // namespace approute
