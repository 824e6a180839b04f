// StatusReports: malformed bodies are 400s naming the field and change nothing.
#include "status/status_reports.h"

#include <gtest/gtest.h>

#include "approute/router.h"
#include "placement/cluster_members.h"
#include "region_fixture.h"
#include "state/usage.h"
#include "status/health.h"

namespace approute::internal {
namespace {

// Another proxy's state, for the records of the cluster's members.
struct OtherProxy {
  std::unique_ptr<Region> region;
  std::unique_ptr<NodeTable> nodes;
  std::unique_ptr<StatusReports> reports;
  std::unique_ptr<ClusterMembers> members;
  OtherProxy() {
    StateLimits limits;
    limits.max_nodes = 16;
    limits.max_sessions = limits.max_affinities = 256;
    auto r = Region::CreatePrivate(limits);
    EXPECT_TRUE(r.ok()) << r.status();
    if (!r.ok()) return;
    region = *std::move(r);
    nodes = std::make_unique<NodeTable>(*region);
    reports = std::make_unique<StatusReports>(*region, *nodes);
    members = std::make_unique<ClusterMembers>(*region, *nodes, *reports);
  }
  // Merges node `id`'s record: its slot here, kNil when it was not taken.
  uint32_t Merge(const std::string& id, const std::string& record, int64_t now) {
    if (members->Merge({{id, record}}, now) != 1) return kNil;
    return nodes->FindLocked(id);
  }
};

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
  // Node `id`'s cluster record as this proxy encodes it.
  std::optional<std::string> Record(const std::string& id) {
    StatusReports reports(*region_, *nodes_);
    return ClusterMembers(*region_, *nodes_, reports).Encode(Slot(id));
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
  std::optional<std::string> rec = Record("n1");
  ASSERT_TRUE(rec.has_value());
  OtherProxy other;
  ASSERT_NE(other.region, nullptr);
  const uint32_t slot = other.Merge("n1", *rec, now_);
  ASSERT_NE(slot, kNil);
  EXPECT_EQ(other.region->hot(slot).health.load(), static_cast<uint32_t>(Health::kDown));
  EXPECT_EQ(other.region->node(slot).report_down.load(), 1u);

  now_ += 1000;
  ASSERT_EQ(Send(Body("", 2)).code, 200);
  ASSERT_EQ(other.Merge("n1", *Record("n1"), now_), slot);
  EXPECT_EQ(other.region->hot(slot).health.load(), static_cast<uint32_t>(Health::kUp));
  EXPECT_EQ(other.region->node(slot).report_down.load(), 0u);
}

// The node's own count travels with its record, and with it the base the
// accepting proxy read (the deployment's count then), so every proxy leaves
// the node the same room; it counts from the report's acceptance.
TEST_F(StatusReportsTest, TheReportedUsageAndItsBaseTravelWithTheClusterRecord) {
  ASSERT_EQ(Send(Body(R"(, "capacity": {"channels": 100}, "load": {"channels": 90, "cpu": 0.5})")).code, 200);
  const uint32_t res = nodes_->ResourceIndexLocked("channels", false);
  ASSERT_NE(res, kNil);
  NodeHot& hot = Hot("n1");
  ASSERT_EQ(hot.usage_mask.load(), 1u << res);
  EXPECT_EQ(hot.usage_reported[res].load(), 90);
  EXPECT_EQ(hot.usage_base[res].load(), 0) << "this host's count when the report was accepted";
  EXPECT_EQ(UsageCap(hot, res, 100, now_), 10);
  hot.usage_base[res].store(7);  // as ClusterPlacement::UsageReported puts the deployment's count there
  std::optional<std::string> rec = Record("n1");
  ASSERT_TRUE(rec.has_value());
  OtherProxy other;
  ASSERT_NE(other.region, nullptr);
  const uint32_t slot = other.Merge("n1", *rec, now_ + 5'000);
  ASSERT_NE(slot, kNil);
  const uint32_t res_there = other.nodes->ResourceIndexLocked("channels", false);
  ASSERT_NE(res_there, kNil);
  const NodeHot& merged = other.region->hot(slot);
  EXPECT_EQ(merged.usage_reported[res_there].load(), 90);
  EXPECT_EQ(merged.usage_base[res_there].load(), 7);
  EXPECT_EQ(UsageCap(merged, res_there, 100, now_ + 5'000), 17);
  EXPECT_EQ(merged.usage_until_ms.load(), now_ + kDefaultUsageMaxAgeMs) << "from the acceptance, not the merge";
  EXPECT_EQ(UsageCap(merged, res_there, 100, now_ + kDefaultUsageMaxAgeMs), 100) << "stale: no longer counts";
}

}  // namespace
}  // namespace approute::internal
