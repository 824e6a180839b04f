// StatusReports: malformed bodies are 400s naming the field and change nothing.
#include "status/status_reports.h"

#include <gtest/gtest.h>

#include "approute/router.h"
#include "region_fixture.h"

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
  std::string Body(const std::string& extra) {
    return R"({"node": "n1", "uri": "sip:127.0.0.1:5070", "pool": "media", "seq": 1)" + extra + "}";
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

}  // namespace
}  // namespace approute::internal
