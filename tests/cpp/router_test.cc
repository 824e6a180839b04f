// Routing flow: affinity, sessions, expiry, retry, admin state, capacity, reload.
#include <gtest/gtest.h>

#include <set>

#include "approute/limits.h"
#include "approute/router.h"
#include "test_util.h"

namespace approute {
namespace {

using testing::MakeRouter;
using testing::ManualClock;
using testing::MustRoute;
using testing::PoolYaml;
using testing::Sessions;

const char* kConference = R"(
nodes:
  - {id: a1, uri: "sip:10.0.0.1:5060", pool: media, capacity: {conference: 3}}
  - {id: a2, uri: "sip:10.0.0.2:5060", pool: media, capacity: {conference: 3}}
  - {id: a3, uri: "sip:10.0.0.3:5060", pool: media, capacity: {conference: 3}}
apps:
  conference:
    pool: media
    strategy: least_loaded
    resource: conference
    affinity: {grace: 60}
    retry: {codes: [503, 486], full_codes: [503], max_attempts: 3}
    session: {lifetime: 3600}
)";

TEST(Router, SameKeyGoesToSameNode) {
  auto r = MakeRouter(kConference);
  Decision d1 = MustRoute(*r, "conference", "c1", "example.com");
  ASSERT_TRUE(d1.ok);
  EXPECT_EQ(d1.reason, "strategy");
  Decision d2 = MustRoute(*r, "conference", "c2", "example.com");
  EXPECT_EQ(d2.node_id, d1.node_id);
  EXPECT_EQ(d2.reason, "affinity");
  Decision d3 = MustRoute(*r, "conference", "c3", "other.org");
  EXPECT_NE(d3.node_id, d1.node_id) << "least_loaded puts a new key on an emptier node";
  EXPECT_EQ(Sessions(*r, d1.node_id, "conference"), 2);
  EXPECT_EQ(r->Stats().sessions, 3);
  EXPECT_EQ(r->Stats().affinities, 2);
}

TEST(Router, RouteOfAKnownCallReturnsItsNode) {
  auto r = MakeRouter(kConference);
  Decision d1 = MustRoute(*r, "conference", "c1", "k");
  Decision again = MustRoute(*r, "conference", "c1", "k");
  EXPECT_EQ(again.node_id, d1.node_id);
  EXPECT_EQ(again.reason, "session");
  EXPECT_EQ(r->Stats().sessions, 1);
  EXPECT_EQ(Sessions(*r, d1.node_id, "conference"), 1);
}

TEST(Router, AffinityOutlivesSessionsForItsGraceTime) {
  ManualClock clock;
  RouterOptions o;
  o.now_ms = clock.fn();
  auto r = MakeRouter(kConference, o);
  Decision d1 = MustRoute(*r, "conference", "c1", "example.com");
  ASSERT_TRUE(r->End("c1").ok());
  EXPECT_EQ(Sessions(*r, d1.node_id, "conference"), 0);
  // Put load elsewhere so that the strategy alone would not pick d1's node... least_loaded
  // would pick any empty node; affinity must win.
  clock.Advance(59'000);
  Decision d2 = MustRoute(*r, "conference", "c2", "example.com");
  EXPECT_EQ(d2.node_id, d1.node_id);
  EXPECT_EQ(d2.reason, "affinity");
  ASSERT_TRUE(r->End("c2").ok());
  clock.Advance(61'000);
  r->Sweep();
  EXPECT_EQ(r->Stats().affinities, 0);
  Decision d3 = MustRoute(*r, "conference", "c3", "example.com");
  EXPECT_EQ(d3.reason, "strategy");
}

TEST(Router, ZeroGraceForgetsTheKeyAtOnce) {
  auto r = MakeRouter(PoolYaml(3, "    strategy: round_robin\n    affinity: {grace: 0}\n"));
  MustRoute(*r, "app", "c1", "k");
  EXPECT_EQ(r->Stats().affinities, 1);
  ASSERT_TRUE(r->End("c1").ok());
  EXPECT_EQ(r->Stats().affinities, 0);
}

TEST(Router, SessionsExpireAfterTheirLifetime) {
  ManualClock clock;
  RouterOptions o;
  o.now_ms = clock.fn();
  auto r = MakeRouter(kConference, o);
  Decision d = MustRoute(*r, "conference", "lost-bye", "k");
  EXPECT_EQ(Sessions(*r, d.node_id, "conference"), 1);
  clock.Advance(3599'000);
  EXPECT_EQ(r->Sweep(), 0);
  clock.Advance(2'000);
  EXPECT_EQ(r->Sweep(), 1);
  EXPECT_EQ(Sessions(*r, d.node_id, "conference"), 0);
  EXPECT_EQ(r->Stats().sessions, 0);
  EXPECT_EQ(r->Stats().expired_sessions, 1);
  EXPECT_EQ(r->End("lost-bye").code(), absl::StatusCode::kNotFound);
}

TEST(Router, RoutingSweepsExpiredSessionsByItself) {
  ManualClock clock;
  RouterOptions o;
  o.now_ms = clock.fn();
  auto r = MakeRouter(kConference, o);
  for (int i = 0; i < 6; ++i) MustRoute(*r, "conference", "old" + std::to_string(i), "k" + std::to_string(i));
  clock.Advance(3601'000);
  // Each route past the sweep interval sweeps one of 16 shards.
  for (int i = 0; i < 16; ++i) {
    clock.Advance(200);
    Decision d = MustRoute(*r, "conference", "new" + std::to_string(i), "");
    ASSERT_TRUE(d.ok) << d.detail;
    ASSERT_TRUE(r->End("new" + std::to_string(i)).ok());
  }
  EXPECT_EQ(r->Stats().sessions, 0);
  EXPECT_EQ(r->Stats().expired_sessions, 6);
}

TEST(Router, RetryNeverReturnsATriedNodeAndHonoursMaxAttempts) {
  auto r = MakeRouter(kConference);
  Decision d1 = MustRoute(*r, "conference", "c1", "k");
  std::set<std::string> tried{d1.node_id};
  absl::StatusOr<Decision> d2 = r->Retry("c1", 503);
  ASSERT_TRUE(d2.ok() && d2->ok) << d2.status();
  EXPECT_EQ(d2->reason, "retry");
  EXPECT_EQ(d2->attempt, 2);
  EXPECT_FALSE(tried.count(d2->node_id));
  tried.insert(d2->node_id);
  EXPECT_EQ(Sessions(*r, d1.node_id, "conference"), 0) << "counts move off the bounced node";
  EXPECT_EQ(Sessions(*r, d2->node_id, "conference"), 1);
  absl::StatusOr<Decision> d3 = r->Retry("c1", 486);
  ASSERT_TRUE(d3.ok() && d3->ok);
  EXPECT_FALSE(tried.count(d3->node_id));
  EXPECT_EQ(d3->attempt, 3);
  absl::StatusOr<Decision> d4 = r->Retry("c1", 503);
  ASSERT_TRUE(d4.ok());
  EXPECT_FALSE(d4->ok);
  EXPECT_EQ(d4->reason, "no_node");
  EXPECT_NE(d4->detail.find("max_attempts (3)"), std::string::npos) << d4->detail;
  EXPECT_EQ(r->Stats().sessions, 0) << "a call that ran out of attempts has ended";
  for (const char* n : {"a1", "a2", "a3"}) EXPECT_EQ(Sessions(*r, n, "conference"), 0);
}

TEST(Router, RetryRunsOutOfNodesBeforeAttempts) {
  auto r = MakeRouter(PoolYaml(2, "    retry: {codes: [503], max_attempts: 5}\n"));
  MustRoute(*r, "app", "c1");
  ASSERT_TRUE(r->Retry("c1", 503)->ok);
  absl::StatusOr<Decision> d = r->Retry("c1", 503);
  ASSERT_TRUE(d.ok());
  EXPECT_FALSE(d->ok);
  EXPECT_NE(d->detail.find("2 excluded or tried"), std::string::npos) << d->detail;
}

TEST(Router, NonRetryableCodeEndsTheCall) {
  auto r = MakeRouter(kConference);
  MustRoute(*r, "conference", "c1", "k");
  absl::StatusOr<Decision> d = r->Retry("c1", 404);
  ASSERT_TRUE(d.ok());
  EXPECT_FALSE(d->ok);
  EXPECT_NE(d->detail.find("code 404 is not a retry code"), std::string::npos) << d->detail;
  EXPECT_EQ(d->reason, "not_retryable");  // not "no_node": no node was looked for
  EXPECT_EQ(r->Stats().sessions, 0);
  // An answer (200) is no retry code either.
  MustRoute(*r, "conference", "c2", "k");
  d = r->Retry("c2", 200);
  ASSERT_TRUE(d.ok());
  EXPECT_FALSE(d->ok);
  EXPECT_EQ(d->reason, "not_retryable");
  EXPECT_NE(d->detail.find("code 200 is not a retry code"), std::string::npos) << d->detail;
  EXPECT_EQ(r->Retry("c1", 503).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(r->Retry("c1", 42).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(Router, FullCodeReleasesTheKeyOtherCodesKeepIt) {
  auto r = MakeRouter(kConference);
  Decision d1 = MustRoute(*r, "conference", "c1", "dom");
  Decision d2 = MustRoute(*r, "conference", "c2", "dom");
  ASSERT_EQ(d2.node_id, d1.node_id);
  // 486 is retryable but not "full": the key stays with d1's node.
  absl::StatusOr<Decision> moved = r->Retry("c2", 486);
  ASSERT_TRUE(moved->ok);
  EXPECT_NE(moved->node_id, d1.node_id);
  EXPECT_EQ(MustRoute(*r, "conference", "c3", "dom").node_id, d1.node_id);
  // 503 is full: the node's claim on the key is released, the retried call claims it.
  absl::StatusOr<Decision> full = r->Retry("c3", 503);
  ASSERT_TRUE(full->ok);
  EXPECT_NE(full->node_id, d1.node_id);
  Decision next = MustRoute(*r, "conference", "c4", "dom");
  EXPECT_EQ(next.node_id, full->node_id) << "the next call from the key does not queue behind the full node";
  EXPECT_EQ(next.reason, "affinity");
}

TEST(Router, CapacityIsNeverExceeded) {
  auto r = MakeRouter(kConference);
  std::map<std::string, int> per_node;
  for (int i = 0; i < 9; ++i) {
    Decision d = MustRoute(*r, "conference", "c" + std::to_string(i), "same-key");
    ASSERT_TRUE(d.ok) << d.detail;
    per_node[d.node_id]++;
  }
  for (const auto& [n, c] : per_node) EXPECT_EQ(c, 3) << n;
  Decision full = MustRoute(*r, "conference", "c9", "same-key");
  EXPECT_FALSE(full.ok);
  EXPECT_NE(full.detail.find("3 full for \"conference\""), std::string::npos) << full.detail;
  ASSERT_TRUE(r->End("c0").ok());
  EXPECT_TRUE(MustRoute(*r, "conference", "c10", "same-key").ok);
}

TEST(Router, DrainingKeepsItsKeysButTakesNoNewOnes) {
  auto r = MakeRouter(kConference);
  Decision d1 = MustRoute(*r, "conference", "c1", "held");
  ASSERT_TRUE(r->SetState(d1.node_id, AdminState::kDraining).ok());
  EXPECT_EQ(MustRoute(*r, "conference", "c2", "held").node_id, d1.node_id);
  for (int i = 0; i < 10; ++i) {
    Decision d = MustRoute(*r, "conference", "n" + std::to_string(i), "new" + std::to_string(i));
    if (d.ok) {
      EXPECT_NE(d.node_id, d1.node_id);
    }
  }
  ASSERT_TRUE(r->SetState(d1.node_id, AdminState::kDisabled).ok());
  Decision d3 = MustRoute(*r, "conference", "c3", "held");
  EXPECT_TRUE(!d3.ok || d3.node_id != d1.node_id);
  EXPECT_EQ(Sessions(*r, d1.node_id, "conference"), 2) << "existing sessions run on";
}

TEST(Router, DownNodesAreSkippedSuspectOnlyAsLastResort) {
  auto r = MakeRouter(PoolYaml(2, "    strategy: round_robin\n"));
  ASSERT_TRUE(r->SetHealth("n0", Health::kDown).ok());
  for (int i = 0; i < 4; ++i) EXPECT_EQ(MustRoute(*r, "app", "c" + std::to_string(i)).node_id, "n1");
  ASSERT_TRUE(r->SetHealth("n0", Health::kSuspect).ok());
  for (int i = 4; i < 8; ++i) EXPECT_EQ(MustRoute(*r, "app", "c" + std::to_string(i)).node_id, "n1");
  ASSERT_TRUE(r->SetHealth("n1", Health::kDown).ok());
  EXPECT_EQ(MustRoute(*r, "app", "c9").node_id, "n0");
}

TEST(Router, ExcludeIsHonoured) {
  auto r = MakeRouter(PoolYaml(3, "    strategy: round_robin\n"));
  for (int i = 0; i < 6; ++i) {
    RouteRequest req;
    req.app = "app";
    req.call_id = "c" + std::to_string(i);
    req.exclude = {"n0", "n2"};
    EXPECT_EQ(r->Route(req)->node_id, "n1");
  }
}

TEST(Router, UnknownAppUsesDefaultOrFails) {
  auto r = MakeRouter(PoolYaml(1, "    strategy: round_robin\n"));
  RouteRequest req;
  req.app = "queue";
  req.call_id = "c1";
  EXPECT_EQ(r->Route(req).status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(std::string(r->Route(req).status().message()).find("unknown app \"queue\""), std::string::npos);
  auto r2 = MakeRouter("nodes:\n  - {id: x, uri: \"sip:10.0.0.9\"}\napps:\n  default: {}\n");
  Decision d = MustRoute(*r2, "queue", "c1");
  EXPECT_TRUE(d.ok);
  EXPECT_EQ(d.app, "default");
}

TEST(Router, BadArgumentsAreErrorsAndChangeNothing) {
  auto r = MakeRouter(kConference);
  RouteRequest req;
  req.app = "conference";
  EXPECT_EQ(r->Route(req).status().code(), absl::StatusCode::kInvalidArgument);
  req.call_id = std::string(kMaxInputLen + 1, 'x');  // a longer one than any SIP message
  EXPECT_EQ(r->Route(req).status().code(), absl::StatusCode::kInvalidArgument);
  req.call_id = "ok";
  req.key = std::string(kMaxInputLen + 1, 'k');
  EXPECT_EQ(r->Route(req).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(r->Stats().sessions, 0);
  EXPECT_EQ(r->End("nope").code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(r->Confirm("nope").code(), absl::StatusCode::kNotFound);
  NodeSpec bad{.id = "z", .uri = "http://nope"};
  EXPECT_EQ(r->AddNode(bad).code(), absl::StatusCode::kInvalidArgument);
  NodeSpec dup{.id = "a1", .uri = "sip:10.0.0.9"};
  EXPECT_EQ(r->AddNode(dup).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(r->SetState("ghost", AdminState::kDraining).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(r->ReportLoad("a1", {{"bad name", 1.0}}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(r->ReportLoad("a1", {{"cpu", std::nan("")}}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(r->Nodes().size(), 3u);
}

TEST(Router, NodesJoinAndLeaveAtRunTime) {
  auto r = MakeRouter(PoolYaml(1, "    strategy: round_robin\n"));
  NodeSpec s{.id = "late", .uri = "sip:10.0.0.50:5060", .pool = "media", .weight = 5};
  s.capacity["calls"] = 10;
  s.attrs["region"] = "eu";
  ASSERT_TRUE(r->AddNode(s).ok());
  std::set<std::string> seen;
  for (int i = 0; i < 4; ++i) seen.insert(MustRoute(*r, "app", "c" + std::to_string(i)).node_id);
  EXPECT_EQ(seen, (std::set<std::string>{"n0", "late"}));
  absl::StatusOr<NodeStatus> st = r->Node("late");
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->spec.attrs.at("region"), "eu");
  EXPECT_EQ(st->spec.capacity.at("calls"), 10);
  EXPECT_EQ(st->sessions.at("calls"), 2);
  ASSERT_TRUE(r->ReportLoad("late", {{"cpu", 0.5}, {"channels", 12}}).ok());
  EXPECT_DOUBLE_EQ(r->Node("late")->load.at("cpu"), 0.5);
  ASSERT_TRUE(r->RemoveNode("late").ok());
  EXPECT_EQ(r->Node("late").status().code(), absl::StatusCode::kNotFound);
  for (int i = 0; i < 4; ++i) EXPECT_TRUE(r->End("c" + std::to_string(i)).ok());
  EXPECT_EQ(Sessions(*r, "n0", "calls"), 0);
  // The slot is reused without inheriting old counts.
  ASSERT_TRUE(r->AddNode(s).ok());
  EXPECT_EQ(Sessions(*r, "late", "calls"), 0);
}

TEST(Router, ReloadKeepsSessionsAndAffinitiesOfRemainingNodes) {
  auto r = MakeRouter(kConference);
  Decision d = MustRoute(*r, "conference", "c1", "dom");
  std::string y = kConference;
  // Drop a node that is not d's; change d's weight.
  std::string gone = d.node_id == "a3" ? "a2" : "a3";
  std::string line = "  - {id: " + gone + ", uri: \"sip:10.0.0." + gone.substr(1) +
                     ":5060\", pool: media, capacity: {conference: 3}}\n";
  size_t at = y.find(line);
  ASSERT_NE(at, std::string::npos);
  y.erase(at, line.size());
  ASSERT_TRUE(r->Reload(y).ok());
  EXPECT_EQ(r->Nodes().size(), 2u);
  EXPECT_EQ(Sessions(*r, d.node_id, "conference"), 1);
  EXPECT_EQ(MustRoute(*r, "conference", "c2", "dom").node_id, d.node_id);
  EXPECT_TRUE(r->End("c1").ok());
  EXPECT_EQ(r->Reload("state: {max_nodes: 8}\n").code(), absl::StatusCode::kFailedPrecondition);
}

TEST(Router, FullTablesAreErrorsNeverEvictions) {
  auto r = MakeRouter(PoolYaml(2, "    affinity: {grace: 60}\n", "", "{max_sessions: 16, max_affinities: 16}"));
  int placed = 0;
  absl::Status last;
  for (int i = 0; i < 200; ++i) {
    RouteRequest req{.app = "app", .call_id = "c" + std::to_string(i), .key = "k" + std::to_string(i)};
    absl::StatusOr<Decision> d = r->Route(req);
    if (!d.ok()) {
      last = d.status();
      break;
    }
    ++placed;
  }
  EXPECT_EQ(last.code(), absl::StatusCode::kResourceExhausted) << last;
  EXPECT_GE(placed, 16);
  EXPECT_EQ(r->Stats().sessions, placed) << "nothing live was evicted";
  for (int i = 0; i < placed; ++i) EXPECT_TRUE(r->End("c" + std::to_string(i)).ok()) << i;
  EXPECT_EQ(Sessions(*r, "n0", "calls") + Sessions(*r, "n1", "calls"), 0);
}

}  // namespace
}  // namespace approute
