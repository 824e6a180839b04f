// StatusReports: malformed bodies are 400s naming the field and change nothing.
#include "status/status_reports.h"

#include <gtest/gtest.h>

#include "approute/router.h"
#include "placement/cluster_members.h"
#include "region_fixture.h"
#include "status/health.h"

namespace approute::internal {
namespace {

class StatusReportsTest : public testing::RegionTest {
 protected:
  void SetUp() override {
    RegionTest::SetUp();
    pol_.sources = *NetList::Parse({"127.0.0.0/8"});
    pol_.uris = pol_.sources;
    pol_.status.keys["media"]["k1"] = "a-secret-of-16-or-more-characters";
  }
  ReportResult Send(const std::string& body, int64_t expires = 60) {
    ReportRequest r;
    r.body = body;
    r.expires = expires;
    r.source = "127.0.0.1";
    r.auth = SignReport(body, "k1", "a-secret-of-16-or-more-characters", now_ / 1000, "n1", "", expires);
    StatusReports reports(*region_, *nodes_);
    return reports.Apply(r, pol_, now_, 42);
  }
  std::string Body(const std::string& extra, int seq = 1) {
    return R"({"node": "n1", "uri": "sip:127.0.0.1:5070", "pool": "media", "seq": )" + std::to_string(seq) + extra +
           "}";
  }
  Health HealthOf(const std::string& id) { return static_cast<Health>(Hot(id).health.load()); }
  NodeStatus StatusNow(const std::string& id) {
    std::shared_ptr<Snapshot> snap = nodes_->BuildSnapshot();
    return nodes_->StatusOf(*snap, *snap->Find(id), now_);
  }
  Policies pol_;
  int64_t now_ = 1'700'000'000'000;
};

TEST_F(StatusReportsTest, AJoinIsApplied) {
  ReportResult r = Send(Body(R"(, "capacity": {"conference": 5}, "load": {"cpu": 0.5})"));
  ASSERT_EQ(r.code, 200) << r.reason;
  EXPECT_EQ(r.node_id, "n1");
  EXPECT_FALSE(r.etag.empty());
  EXPECT_NE(Slot("n1"), kNil);
  EXPECT_EQ(Hot("n1").lease_expires_ms.load(), now_ + 60'000);
}

TEST_F(StatusReportsTest, NumbersOutOfRangeAre400sNamingTheField) {
  struct Case {
    std::string extra, field;
  } cases[] = {
      {R"(, "load": {"cpu": 1e309})", "load.cpu"},
      {R"(, "quality": {"mos": -1e400})", "quality.mos"},
      {R"(, "capacity": {"conference": 99999999999999999999999})", "capacity.conference"},
      {R"(, "weight": 99999999999999999999999)", "weight"},
      {R"(, "capacity": {"conference": 18446744073709551615})", "capacity.conference"},
  };
  for (const Case& c : cases) {
    ReportResult r = Send(Body(c.extra));
    EXPECT_EQ(r.code, 400) << c.extra;
    EXPECT_NE(r.reason.find(c.field), std::string::npos) << c.extra << " -> " << r.reason;
    EXPECT_EQ(Slot("n1"), kNil) << "a refused report changes nothing";
  }
  EXPECT_EQ(region_->header().reports_refused[kMalformed].load(), 5);
  EXPECT_EQ(region_->header().reports_accepted.load(), 0);
}

TEST_F(StatusReportsTest, ASeqThatWouldBlockTheNodeIsRefused) {
  std::string body = R"({"node": "n1", "uri": "sip:127.0.0.1:5070", "pool": "media", "seq": 18446744073709551615})";
  ReportResult r = Send(body);
  EXPECT_EQ(r.code, 400);
  EXPECT_NE(r.reason.find("seq"), std::string::npos) << r.reason;
  EXPECT_EQ(Slot("n1"), kNil);
}

TEST_F(StatusReportsTest, ReplayAndSourceAreRefused) {
  ASSERT_EQ(Send(Body("")).code, 200);
  ReportResult again = Send(Body(""));
  EXPECT_EQ(again.code, 403) << "the same seq twice";
  ReportRequest r;
  r.body = Body("");
  r.source = "10.9.9.9";
  StatusReports reports(*region_, *nodes_);
  EXPECT_EQ(reports.Apply(r, pol_, now_, 1).code, 403);
}

// "health": "down" (the node's agent cannot reach its Asterisk): the node
// stays a member with its lease renewed but is down; the next report without
// the field brings it back at once, with a slow start.
TEST_F(StatusReportsTest, AReportedDownNodeKeepsItsLeaseButIsDownUntilAReportSaysUp) {
  ASSERT_EQ(Send(Body(R"(, "health": "up")")).code, 200);
  EXPECT_EQ(HealthOf("n1"), Health::kUp);
  now_ += 10'000;
  ReportResult down = Send(Body(R"(, "health": "down")", 2));
  ASSERT_EQ(down.code, 200) << down.reason;
  EXPECT_EQ(HealthOf("n1"), Health::kDown);
  EXPECT_EQ(Rec("n1").report_down.load(), 1u);
  EXPECT_EQ(Hot("n1").lease_expires_ms.load(), now_ + 60'000) << "not a leave: the lease is renewed";
  EXPECT_TRUE(StatusNow("n1").reported_down);
  now_ += 10'000;
  ASSERT_EQ(Send(Body("", 3)).code, 200);
  EXPECT_EQ(HealthOf("n1"), Health::kUp);
  EXPECT_EQ(Rec("n1").report_down.load(), 0u);
  EXPECT_EQ(Hot("n1").up_since_ms.load(), now_) << "back with a slow start";
  EXPECT_FALSE(StatusNow("n1").reported_down);
}

TEST_F(StatusReportsTest, ANodeJoiningDownIsDownFromItsFirstReport) {
  ASSERT_EQ(Send(Body(R"(, "health": "down")")).code, 200);
  EXPECT_EQ(HealthOf("n1"), Health::kDown);
}

// Probes reach the node's SIP port even when the agent cannot reach the
// service; they do not overrule the node's own word, and a report saying up
// does not overrule a probe that just failed.
TEST_F(StatusReportsTest, ProbesAndTheReportedHealthBothHaveToSayUp) {
  HealthMonitor m(*region_);
  HealthConfig h;  // down after 3, up after 2
  ASSERT_EQ(Send(Body(R"(, "health": "down")")).code, 200);
  for (int i = 0; i < 5; ++i) m.OnProbe(Slot("n1"), 200, 1, -1, h, now_);
  EXPECT_EQ(HealthOf("n1"), Health::kDown) << "probe successes do not bring up a node that says it is down";
  m.OnProbe(Slot("n1"), 0, 0, -1, h, now_);  // the latest probe failed
  ASSERT_EQ(Send(Body("", 2)).code, 200);
  EXPECT_EQ(HealthOf("n1"), Health::kDown) << "the probes bring it back";
  m.OnProbe(Slot("n1"), 200, 1, -1, h, now_);
  m.OnProbe(Slot("n1"), 200, 1, -1, h, now_);
  EXPECT_EQ(HealthOf("n1"), Health::kUp);
}

TEST_F(StatusReportsTest, ABadHealthIsA400AndChangesNothing) {
  ASSERT_EQ(Send(Body("")).code, 200);
  for (const char* extra : {R"(, "health": "sick")", R"(, "health": 0)", R"(, "health": null)"}) {
    ReportResult r = Send(Body(extra, 2));
    EXPECT_EQ(r.code, 400) << extra;
    EXPECT_NE(r.reason.find("health"), std::string::npos) << r.reason;
    EXPECT_EQ(HealthOf("n1"), Health::kUp);
    EXPECT_EQ(Rec("n1").last_seq, 1u);
  }
}

// With `cluster:` the node's record carries "health": "down" to the other
// proxies, and the next record without it brings the node back there too.
TEST_F(StatusReportsTest, TheReportedHealthTravelsWithTheClusterRecord) {
  ASSERT_EQ(Send(Body(R"(, "health": "down")")).code, 200);
  StatusReports reports(*region_, *nodes_);
  ClusterMembers here(*region_, *nodes_, reports);
  std::optional<std::string> rec = here.Encode(Slot("n1"));
  ASSERT_TRUE(rec.has_value());

  auto other = Region::CreatePrivate(Limits(16, 256));
  ASSERT_TRUE(other.ok()) << other.status();
  NodeTable other_nodes(**other);
  StatusReports other_reports(**other, other_nodes);
  ClusterMembers there(**other, other_nodes, other_reports);
  ASSERT_EQ(there.Merge({{"n1", *rec}}, now_), 1);
  uint32_t slot = other_nodes.FindLocked("n1");
  ASSERT_NE(slot, kNil);
  EXPECT_EQ((*other)->hot(slot).health.load(), static_cast<uint32_t>(Health::kDown));
  EXPECT_EQ((*other)->node(slot).report_down.load(), 1u);

  now_ += 1000;
  ASSERT_EQ(Send(Body("", 2)).code, 200);
  ASSERT_EQ(there.Merge({{"n1", *here.Encode(Slot("n1"))}}, now_), 1);
  EXPECT_EQ((*other)->hot(slot).health.load(), static_cast<uint32_t>(Health::kUp));
  EXPECT_EQ((*other)->node(slot).report_down.load(), 0u);
}

}  // namespace
}  // namespace approute::internal
