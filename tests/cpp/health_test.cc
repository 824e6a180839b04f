// Status reports (the approute-status event package), leases, probes,
// outlier detection, panic mode, slow start and the load-aware strategies.
#include <gtest/gtest.h>

#include <map>
#include <set>

#include "approute/router.h"
#include "test_util.h"

namespace approute {
namespace {

using testing::MakeRouter;
using testing::ManualClock;
using testing::MustRoute;

const char* kSecret = "0123456789abcdef-media";

std::string StatusYaml(const std::string& extra_apps = "", const std::string& health = "") {
  return std::string(
             "status:\n"
             "  allow_sources: [\"127.0.0.0/8\", \"::1\"]\n"
             "  allow_uris: [\"127.0.0.0/8\", \"10.0.0.0/8\"]\n"
             "  keys: {media: {k1: \"") +
         kSecret +
         "\"}}\n"
         "  replay_window: 30\n"
         "  max_expires: 600\n" +
         health +
         "nodes:\n"
         "  - {id: static1, uri: \"sip:10.0.0.1:5060\", pool: media}\n"
         "apps:\n"
         "  conference: {pool: media, strategy: round_robin, affinity: {grace: 60}}\n" +
         extra_apps;
}

class StatusTest : public ::testing::Test {
 protected:
  void SetUp() override {
    RouterOptions o;
    o.now_ms = clock_.fn();
    router_ = MakeRouter(StatusYaml(), o);
  }
  int64_t Ts() const { return clock_.ms->load() / 1000; }
  std::string Body(const std::string& node, const std::string& uri, uint64_t seq, const std::string& extra = "") const {
    return "{\"node\": \"" + node + "\", \"uri\": \"" + uri +
           "\", \"pool\": \"media\", \"seq\": " + std::to_string(seq) + extra + "}";
  }
  // Signs for `node` (default: the node the body names, else ast5).
  ReportResult Send(const std::string& body, int64_t expires = 60, const std::string& if_match = "",
                    const std::string& source = "127.0.0.1", const std::string& secret = kSecret,
                    std::string node = "") {
    if (node.empty()) node = NodeOf(body);
    ReportRequest r{.body = body,
                    .expires = expires,
                    .source = source,
                    .auth = SignReport(body, "k1", secret, Ts(), node, if_match, expires),
                    .if_match = if_match};
    return router_->ApplyReport(r);
  }
  static std::string NodeOf(const std::string& body) {
    size_t at = body.find("\"node\": \"");
    if (at == std::string::npos) return "ast5";
    at += 9;
    return body.substr(at, body.find('"', at) - at);
  }

  ManualClock clock_;
  std::unique_ptr<Router> router_;
};

TEST_F(StatusTest, ANodeJoinsByReportAndTakesCalls) {
  ReportResult r = Send(Body("ast5", "sip:127.0.0.1:5071", 1,
                             ", \"weight\": 3, \"capacity\": {\"conference\": 50}, "
                             "\"load\": {\"cpu\": 0.42, \"channels\": 12}, \"quality\": {\"mos\": 4.2}"));
  ASSERT_EQ(r.code, 200) << r.reason;
  EXPECT_EQ(r.node_id, "ast5");
  EXPECT_EQ(r.expires, 60);
  EXPECT_EQ(r.etag.size(), 16u);
  absl::StatusOr<NodeStatus> n = router_->Node("ast5");
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(n->origin, "report");
  EXPECT_EQ(n->spec.weight, 3);
  EXPECT_EQ(n->spec.capacity.at("conference"), 50);
  EXPECT_DOUBLE_EQ(n->load.at("cpu"), 0.42);
  EXPECT_DOUBLE_EQ(n->quality.at("mos"), 4.2);
  EXPECT_EQ(n->lease_expires_ms, clock_.ms->load() + 60'000);
  std::set<std::string> seen;
  for (int i = 0; i < 4; ++i) seen.insert(MustRoute(*router_, "conference", "c" + std::to_string(i)).node_id);
  EXPECT_EQ(seen, (std::set<std::string>{"static1", "ast5"}));
  EXPECT_EQ(router_->Stats().reports_accepted, 1);
}

TEST_F(StatusTest, MaxExpiresCapsTheLease) {
  ReportResult r = Send(Body("ast5", "sip:127.0.0.1:5071", 1), 99999);
  ASSERT_EQ(r.code, 200);
  EXPECT_EQ(r.expires, 600);
}

TEST_F(StatusTest, RefusedReportsChangeNothingAndAreCounted) {
  std::string body = Body("ast5", "sip:127.0.0.1:5071", 1);
  // Source outside the allowed networks.
  EXPECT_EQ(Send(body, 60, "", "192.0.2.7").code, 403);
  // Unsigned.
  ReportRequest unsigned_req{.body = body, .expires = 60, .source = "127.0.0.1"};
  ReportResult u = router_->ApplyReport(unsigned_req);
  EXPECT_EQ(u.code, 403);
  EXPECT_EQ(u.reason, "missing X-Approute-Auth");
  // Forged: signed with another secret.
  ReportResult f = Send(body, 60, "", "127.0.0.1", "not-the-right-secret-at-all");
  EXPECT_EQ(f.code, 403);
  EXPECT_EQ(f.reason, "bad signature");
  // Tampered body: signature over another body.
  ReportRequest t{.body = Body("ast5", "sip:127.0.0.1:5099", 1),
                  .expires = 60,
                  .source = "127.0.0.1",
                  .auth = SignReport(body, "k1", kSecret, Ts(), "ast5", "", 60)};
  EXPECT_EQ(router_->ApplyReport(t).code, 403);
  // Stale timestamp.
  ReportRequest stale{.body = body,
                      .expires = 60,
                      .source = "127.0.0.1",
                      .auth = SignReport(body, "k1", kSecret, Ts() - 120, "ast5", "", 60)};
  ReportResult st = router_->ApplyReport(stale);
  EXPECT_EQ(st.code, 403);
  EXPECT_NE(st.reason.find("replay window"), std::string::npos) << st.reason;
  // Malformed.
  for (const std::string& bad :
       {std::string("{not json"), std::string("[1,2]"), std::string("{\"node\": \"x\", \"uri\": \"sip:127.0.0.1\"}"),
        Body("ast5", "http://127.0.0.1", 1), Body("ast5", "sip:127.0.0.1", 1, ", \"lod\": {}"),
        Body("ast5", "sip:127.0.0.1", 1, ", \"load\": {\"cpu\": \"high\"}")}) {
    ReportResult m = Send(bad);
    EXPECT_EQ(m.code, 400) << bad;
    EXPECT_FALSE(m.reason.empty());
  }
  // URI outside the allowed networks.
  EXPECT_EQ(Send(Body("ast5", "sip:192.0.2.1:5060", 1)).code, 403);
  // Taking over a configured node's id.
  ReportResult take = Send(Body("static1", "sip:127.0.0.1:5071", 1));
  EXPECT_EQ(take.code, 403);
  EXPECT_NE(take.reason.find("configured"), std::string::npos);
  EXPECT_EQ(router_->Nodes().size(), 1u);
  EXPECT_EQ(router_->Node("static1")->spec.uri, "sip:10.0.0.1:5060");
  RouterStats s = router_->Stats();
  EXPECT_EQ(s.reports_accepted, 0);
  int64_t refused = 0;
  for (const auto& [why, n] : s.reports_refused) refused += n;
  EXPECT_EQ(refused, 13);
  EXPECT_EQ(s.reports_refused.at("malformed"), 6);
  EXPECT_EQ(s.reports_refused.at("signature"), 3);
}

TEST_F(StatusTest, ReplaysAndTakeoversOfReportedNodesAreRefused) {
  std::string body = Body("ast5", "sip:127.0.0.1:5071", 7);
  ASSERT_EQ(Send(body).code, 200);
  ReportResult again = Send(body);  // the same signed report, replayed
  EXPECT_EQ(again.code, 403);
  EXPECT_NE(again.reason.find("seq 7"), std::string::npos) << again.reason;
  ReportResult other = Send(Body("ast5", "sip:127.0.0.2:5071", 8));
  EXPECT_EQ(other.code, 403);
  EXPECT_NE(other.reason.find("held by sip:127.0.0.1:5071"), std::string::npos) << other.reason;
  EXPECT_EQ(Send(Body("ast5", "sip:127.0.0.1:5071", 8)).code, 200);
}

TEST_F(StatusTest, EtagRefreshModifyAndUnknownTag) {
  ReportResult first = Send(Body("ast5", "sip:127.0.0.1:5071", 1));
  ASSERT_EQ(first.code, 200);
  clock_.Advance(30'000);
  ReportResult refresh = Send("", 60, first.etag);
  ASSERT_EQ(refresh.code, 200) << refresh.reason;
  EXPECT_NE(refresh.etag, first.etag);
  EXPECT_EQ(router_->Node("ast5")->lease_expires_ms, clock_.ms->load() + 60'000);
  ReportResult stale_tag = Send("", 60, first.etag);
  EXPECT_EQ(stale_tag.code, 412);
  ReportResult modify = Send(Body("ast5", "sip:127.0.0.1:5071", 2, ", \"load\": {\"cpu\": 0.9}"), 60, refresh.etag);
  ASSERT_EQ(modify.code, 200) << modify.reason;
  EXPECT_DOUBLE_EQ(router_->Node("ast5")->load.at("cpu"), 0.9);
  EXPECT_EQ(Send("", 60, "feedfacefeedface").code, 412);
}

TEST_F(StatusTest, ASignatureIsBoundToItsNodeEntityTagAndLease) {
  ReportResult a = Send(Body("ast5", "sip:127.0.0.1:5071", 1));
  ReportResult b = Send(Body("ast6", "sip:127.0.0.1:5072", 1));
  ASSERT_EQ(a.code, 200);
  ASSERT_EQ(b.code, 200);
  // A refresh of ast5 seen on the wire: its credential, replayed for ast6's
  // entity tag (to make ast6 leave) or with another Expires, is refused.
  std::string seen = SignReport("", "k1", kSecret, Ts(), "ast5", a.etag, 60);
  ReportRequest leave_other{.body = "", .expires = 0, .source = "127.0.0.1", .auth = seen, .if_match = b.etag};
  EXPECT_EQ(router_->ApplyReport(leave_other).code, 403);
  ReportRequest stretch{.body = "", .expires = 3600, .source = "127.0.0.1", .auth = seen, .if_match = a.etag};
  EXPECT_EQ(router_->ApplyReport(stretch).code, 403);
  EXPECT_EQ(router_->Node("ast6")->lease_expires_ms, clock_.ms->load() + 60'000) << "nothing changed";
  EXPECT_EQ(router_->Node("ast5")->lease_expires_ms, clock_.ms->load() + 60'000);
  // A body signed for one node does not pass for another node's entity tag.
  ReportRequest as_other{.body = "",
                         .expires = 60,
                         .source = "127.0.0.1",
                         .auth = SignReport("", "k1", kSecret, Ts(), "ast5", b.etag, 60),
                         .if_match = b.etag};
  EXPECT_EQ(router_->ApplyReport(as_other).code, 403);
  // The genuine refresh still works.
  ReportRequest genuine{.body = "", .expires = 60, .source = "127.0.0.1", .auth = seen, .if_match = a.etag};
  EXPECT_EQ(router_->ApplyReport(genuine).code, 200);
}

TEST_F(StatusTest, LeaseExpiryStopsNewCallsThenRemovesTheNode) {
  ASSERT_EQ(Send(Body("ast5", "sip:127.0.0.1:5071", 1)).code, 200);
  ASSERT_TRUE(router_->SetState("static1", AdminState::kDisabled).ok());
  Decision d = MustRoute(*router_, "conference", "live", "dom");
  ASSERT_EQ(d.node_id, "ast5");
  clock_.Advance(61'000);
  Decision none = MustRoute(*router_, "conference", "new", "dom");
  EXPECT_FALSE(none.ok) << "an expired lease takes no new calls, affinity or not";
  router_->Sweep();
  EXPECT_TRUE(router_->Node("ast5").ok()) << "kept while its session runs";
  ASSERT_TRUE(router_->End("live").ok());
  router_->Sweep();
  EXPECT_EQ(router_->Node("ast5").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(StatusTest, ExpiresZeroIsAGracefulLeave) {
  ReportResult r = Send(Body("ast5", "sip:127.0.0.1:5071", 1));
  ASSERT_EQ(r.code, 200);
  ReportResult leave = Send("", 0, r.etag);
  ASSERT_EQ(leave.code, 200) << leave.reason;
  router_->Sweep();
  EXPECT_FALSE(router_->Node("ast5").ok());
}

TEST_F(StatusTest, StateDrainingInAReportDrains) {
  ASSERT_EQ(Send(Body("ast5", "sip:127.0.0.1:5071", 1)).code, 200);
  Decision d;
  for (int i = 0; i < 4 && d.node_id != "ast5"; ++i)
    d = MustRoute(*router_, "conference", "k" + std::to_string(i), "dom" + std::to_string(i));
  ASSERT_EQ(d.node_id, "ast5");
  ASSERT_EQ(Send(Body("ast5", "sip:127.0.0.1:5071", 2, ", \"state\": \"draining\"")).code, 200);
  EXPECT_EQ(router_->Node("ast5")->spec.state, AdminState::kDraining);
  EXPECT_EQ(router_->Node("ast5")->sessions.at("calls"), 1) << "sessions survive the update";
  // A routine report without a state does not undo a drain.
  ASSERT_EQ(Send(Body("ast5", "sip:127.0.0.1:5071", 3)).code, 200);
  EXPECT_EQ(router_->Node("ast5")->spec.state, AdminState::kDraining);
  ASSERT_TRUE(router_->SetState("ast5", AdminState::kDisabled).ok());
  ASSERT_EQ(Send(Body("ast5", "sip:127.0.0.1:5071", 4)).code, 200);
  EXPECT_EQ(router_->Node("ast5")->spec.state, AdminState::kDisabled);
  ASSERT_EQ(Send(Body("ast5", "sip:127.0.0.1:5071", 5, ", \"state\": \"active\"")).code, 200);
  EXPECT_EQ(router_->Node("ast5")->spec.state, AdminState::kActive);
}

TEST(Health, ProbesMarkDownAndUpWithHysteresis) {
  auto r = MakeRouter(StatusYaml("", "health: {probe: {down_after: 3, up_after: 2}}\n"));
  for (int i = 0; i < 2; ++i) ASSERT_TRUE(r->ReportProbe("static1", 0, 0).ok());
  EXPECT_EQ(r->Node("static1")->health, Health::kUp);
  ASSERT_TRUE(r->ReportProbe("static1", 0, 0).ok());
  EXPECT_EQ(r->Node("static1")->health, Health::kDown);
  ASSERT_TRUE(r->ReportProbe("static1", 200, 12).ok());
  EXPECT_EQ(r->Node("static1")->health, Health::kDown);
  ASSERT_TRUE(r->ReportProbe("static1", 200, 8).ok());
  EXPECT_EQ(r->Node("static1")->health, Health::kUp);
  EXPECT_GT(r->Node("static1")->latency_ewma_ms, 0);
  EXPECT_EQ(r->ReportProbe("ghost", 200, 1).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(r->ReportProbe("static1", 900, 1).code(), absl::StatusCode::kInvalidArgument);
}

std::string OutlierPool(int n, const std::string& health) {
  std::string y = "health:\n" + health + "nodes:\n";
  for (int i = 0; i < n; ++i) {
    y += "  - {id: n" + std::to_string(i) + ", uri: \"sip:10.0.0." + std::to_string(i + 1) + "\"}\n";
  }
  return y + "apps:\n  default: {strategy: round_robin}\n";
}

TEST(Health, ConsecutiveFailuresEjectForGrowingTimeWithinTheCap) {
  ManualClock clock;
  RouterOptions o;
  o.now_ms = clock.fn();
  auto r = MakeRouter(
      OutlierPool(
          4, "  outlier: {consecutive_failures: 3, base_ejection: 10, max_ejection: 25, max_ejected_percent: 50}\n"),
      o);
  auto fail = [&](const char* n, int times) {
    for (int i = 0; i < times; ++i) ASSERT_TRUE(r->ReportCallResult(n, 0, 0).ok());
  };
  fail("n0", 2);
  ASSERT_TRUE(r->ReportCallResult("n0", 200, 30).ok());  // a success resets the count
  fail("n0", 2);
  EXPECT_EQ(r->Node("n0")->ejected_until_ms, 0);
  fail("n0", 1);
  EXPECT_EQ(r->Node("n0")->ejected_until_ms, clock.ms->load() + 10'000);
  for (int i = 0; i < 8; ++i) EXPECT_NE(MustRoute(*r, "x", "c" + std::to_string(i)).node_id, "n0");
  fail("n1", 3);
  EXPECT_GT(r->Node("n1")->ejected_until_ms, 0);
  fail("n2", 3);
  EXPECT_EQ(r->Node("n2")->ejected_until_ms, 0) << "never more than 50% of the pool";
  clock.Advance(10'001);
  std::set<std::string> seen;
  for (int i = 0; i < 8; ++i) seen.insert(MustRoute(*r, "x", "d" + std::to_string(i)).node_id);
  EXPECT_TRUE(seen.count("n0")) << "back after its ejection";
  fail("n0", 3);
  EXPECT_EQ(r->Node("n0")->ejected_until_ms, clock.ms->load() + 20'000) << "second ejection lasts twice as long";
  clock.Advance(20'001);
  fail("n0", 3);  // third: 30 s, capped at 25
  EXPECT_EQ(r->Node("n0")->ejected_until_ms, clock.ms->load() + 25'000);
}

TEST(Health, PanicModeRoutesToAllRatherThanNone) {
  auto r = MakeRouter(OutlierPool(4, "  panic_threshold: 50\n"));
  ASSERT_TRUE(r->SetHealth("n0", Health::kDown).ok());
  ASSERT_TRUE(r->SetHealth("n1", Health::kDown).ok());
  std::set<std::string> seen;
  for (int i = 0; i < 8; ++i) seen.insert(MustRoute(*r, "x", "a" + std::to_string(i)).node_id);
  EXPECT_EQ(seen, (std::set<std::string>{"n2", "n3"})) << "50% healthy is not below the threshold";
  ASSERT_TRUE(r->SetHealth("n2", Health::kDown).ok());
  seen.clear();
  for (int i = 0; i < 8; ++i) seen.insert(MustRoute(*r, "x", "b" + std::to_string(i)).node_id);
  EXPECT_EQ(seen.size(), 4u) << "25% healthy: panic, every node takes calls";
  auto strict = MakeRouter(OutlierPool(2, "  panic_threshold: 0\n"));
  ASSERT_TRUE(strict->SetHealth("n0", Health::kDown).ok());
  ASSERT_TRUE(strict->SetHealth("n1", Health::kDown).ok());
  EXPECT_FALSE(MustRoute(*strict, "x", "z").ok);
}

TEST(Health, SlowStartRampsAReturningNode) {
  ManualClock clock;
  RouterOptions o;
  o.now_ms = clock.fn();
  auto r = MakeRouter(OutlierPool(2, "  slow_start: {window: 100}\n  probe: {down_after: 1, up_after: 1}\n"), o);
  ASSERT_TRUE(r->ReportProbe("n0", 0, 0).ok());
  ASSERT_TRUE(r->ReportProbe("n0", 200, 5).ok());  // back up now: slow start begins
  auto share = [&](const std::string& tag) {
    int n0 = 0;
    for (int i = 0; i < 2000; ++i) {
      std::string c = tag + std::to_string(i);
      n0 += MustRoute(*r, "x", c).node_id == "n0";
      EXPECT_TRUE(r->End(c).ok());
    }
    return n0 / 2000.0;
  };
  double early = share("e");  // ~5% of its normal 50%
  clock.Advance(50'000);
  double middle = share("m");  // ~50% of its normal share
  clock.Advance(60'000);
  double after = share("a");  // full share
  EXPECT_LT(early, 0.08);
  EXPECT_NEAR(middle, 0.33, 0.05);  // n0 keeps a pick half the time: 0.5*0.5 / (0.5*0.5 + 0.5)
  EXPECT_NEAR(after, 0.5, 0.01);
}

TEST(LoadAware, UtilizationSendsFewerCallsToABusyNode) {
  ManualClock clock;
  RouterOptions o;
  o.now_ms = clock.fn();
  auto r = MakeRouter(
      "nodes:\n"
      "  - {id: busy, uri: \"sip:10.0.0.1\"}\n"
      "  - {id: idle, uri: \"sip:10.0.0.2\"}\n"
      "  - {id: silent, uri: \"sip:10.0.0.3\"}\n"
      "apps:\n  default: {strategy: {name: utilization, blackout: 5, expiry: 60}}\n",
      o);
  ASSERT_TRUE(r->ReportLoad("busy", {{"cpu", 0.8}}).ok());
  ASSERT_TRUE(r->ReportLoad("idle", {{"cpu", 0.2}}).ok());
  // Within the blackout every node gets the mean weight: an even spread.
  std::map<std::string, int> c;
  for (int i = 0; i < 300; ++i) {
    c[MustRoute(*r, "x", "b" + std::to_string(i)).node_id]++;
    ASSERT_TRUE(r->End("b" + std::to_string(i)).ok());
  }
  EXPECT_EQ(c["busy"], 100);
  clock.Advance(6'000);
  ASSERT_TRUE(r->ReportLoad("busy", {{"cpu", 0.8}}).ok());
  ASSERT_TRUE(r->ReportLoad("idle", {{"cpu", 0.2}}).ok());
  c.clear();
  for (int i = 0; i < 900; ++i) {
    c[MustRoute(*r, "x", "c" + std::to_string(i)).node_id]++;
    ASSERT_TRUE(r->End("c" + std::to_string(i)).ok());
  }
  // Weights 1/0.8 = 1.25, 1/0.2 = 5, silent gets the mean 3.125: shares 13.5%, 54%, 33.8%.
  EXPECT_NEAR(c["busy"] / 900.0, 1.25 / 9.375, 0.01);
  EXPECT_NEAR(c["idle"] / 900.0, 5 / 9.375, 0.01);
  EXPECT_NEAR(c["silent"] / 900.0, 3.125 / 9.375, 0.01);
  // Errors weigh a node down too.
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(r->ReportCallResult("idle", 500, 10).ok());
  EXPECT_GT(r->Node("idle")->error_rate, 0.9);
}

TEST(LoadAware, LatencyPrefersTheFasterNode) {
  auto r = MakeRouter(
      "nodes:\n  - {id: slow, uri: \"sip:10.0.0.1\"}\n  - {id: fast, uri: \"sip:10.0.0.2\"}\n"
      "apps:\n  default: {strategy: latency}\n");
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(r->ReportCallResult("slow", 200, 300).ok());
    ASSERT_TRUE(r->ReportCallResult("fast", 200, 20).ok());
  }
  int fast = 0;
  for (int i = 0; i < 100; ++i) {
    fast += MustRoute(*r, "x", "c" + std::to_string(i)).node_id == "fast";
    ASSERT_TRUE(r->End("c" + std::to_string(i)).ok());
  }
  EXPECT_EQ(fast, 100) << "with two nodes, p2c on latency always compares both";
}

TEST(LoadAware, LeastLoadedUsesReportedChannelCounts) {
  auto r = MakeRouter(
      "nodes:\n"
      "  - {id: a, uri: \"sip:10.0.0.1\", capacity: {channels: 100}}\n"
      "  - {id: b, uri: \"sip:10.0.0.2\", capacity: {channels: 100}}\n"
      "apps:\n  default: {strategy: least_loaded, resource: channels}\n");
  ASSERT_TRUE(r->ReportLoad("a", {{"channels", 90}}).ok());  // busy with calls we did not route
  for (int i = 0; i < 20; ++i) EXPECT_EQ(MustRoute(*r, "x", "c" + std::to_string(i)).node_id, "b");
}

TEST(LoadAware, ConsistentBoundedKeepsMaxWithinEpsilonOfMean) {
  auto r = MakeRouter(testing::PoolYaml(10, "    strategy: {name: consistent_bounded, by: key, epsilon: 0.25}\n"));
  // Zipf-like keys: a few tenants bring most calls.
  std::map<std::string, int> load;
  int calls = 0;
  for (int k = 1; k <= 50; ++k) {
    for (int j = 0; j < 200 / k; ++j) {
      RouteRequest req{.app = "app", .call_id = "c" + std::to_string(calls++), .key = "tenant" + std::to_string(k)};
      load[r->Route(req)->node_id]++;
    }
  }
  int mx = 0;
  for (const auto& [n, v] : load) mx = std::max(mx, v);
  double mean = static_cast<double>(calls) / 10;
  EXPECT_LE(mx, std::ceil(1.25 * mean) + 1) << "max " << mx << " mean " << mean;
  // The same key stays on its node while that node has room.
  RouteRequest a{.app = "app", .call_id = "x1", .key = "tenant42"};
  std::string first = r->Route(a)->node_id;
  ASSERT_TRUE(r->End("x1").ok());
  RouteRequest b{.app = "app", .call_id = "x2", .key = "tenant42"};
  EXPECT_EQ(r->Route(b)->node_id, first);
}

TEST(Config, StatusAndHealthSectionsAreValidated) {
  auto err = [](const std::string& y) {
    absl::StatusOr<Config> c = ParseConfig(y, "r.yaml");
    return c.ok() ? std::string() : std::string(c.status().message());
  };
  EXPECT_NE(err("status: {allow_sources: [\"10.0.0.0/33\"]}\n").find("status.allow_sources[0]"), std::string::npos);
  EXPECT_NE(err("status: {allow_sources: [\"nonsense\"]}\n").find("not an IPv4 or IPv6 network"), std::string::npos);
  EXPECT_NE(err("status: {keys: {media: {k1: short}}}\n").find("at least 16 characters"), std::string::npos);
  EXPECT_NE(err("health: {outlier: {consecutive_failures: 0}}\n").find("health.outlier.consecutive_failures"),
            std::string::npos);
  EXPECT_NE(err("health: {panic_threshold: 150}\n").find("health.panic_threshold"), std::string::npos);
  EXPECT_NE(err("health: {slow_start: {window: -1}}\n").find("health.slow_start.window"), std::string::npos);
  EXPECT_NE(err("apps: {x: {strategy: {name: consistent_bounded, epsilon: 0}}}\n").find("epsilon"), std::string::npos);
  EXPECT_NE(err("apps: {x: {strategy: {name: utilization, blackout: -3}}}\n").find("blackout"), std::string::npos);
  EXPECT_EQ(err("status: {allow_sources: [\"10.0.0.0/8\", \"::1/128\"]}\nhealth: {panic_threshold: 50, slow_start: "
                "{window: 30}}\n"),
            "");
}

}  // namespace
}  // namespace approute
