// What the router does for calls that never get through: they leave no
// affinity behind (callers cannot fill the table), while answered calls'
// claims keep their grace time.
#include <gtest/gtest.h>

#include "approute/router.h"
#include "test_util.h"

namespace approute {
namespace {

using testing::MakeRouter;
using testing::MustRoute;

const char* kYaml = R"(
state: {max_affinities: 64}
nodes:
  - {id: a, uri: "sip:10.0.0.1", pool: media}
  - {id: b, uri: "sip:10.0.0.2", pool: media}
apps:
  conference:
    pool: media
    strategy: round_robin
    affinity: {grace: 300}
    retry: {codes: [503, 486], full_codes: [503], max_attempts: 2}
)";

TEST(UnansweredCalls, AbandonLeavesNoClaimButEndKeepsGrace) {
  auto r = MakeRouter(kYaml);
  MustRoute(*r, "conference", "cancelled", "one.example.com");
  ASSERT_TRUE(r->Abandon("cancelled").ok());
  EXPECT_TRUE(r->Affinities().empty());
  EXPECT_EQ(r->Stats().affinities, 0);

  MustRoute(*r, "conference", "answered", "two.example.com");
  ASSERT_TRUE(r->Confirm("answered").ok());
  ASSERT_TRUE(r->End("answered").ok());
  ASSERT_EQ(r->Affinities().size(), 1u);
  EXPECT_GT(r->Affinities()[0].expires_ms, 0) << "in its grace time";

  // Unconfirmed but ended by BYE (End): the API's grace is kept as before.
  MustRoute(*r, "conference", "plain-end", "three.example.com");
  ASSERT_TRUE(r->End("plain-end").ok());
  EXPECT_EQ(r->Affinities(ListFilter{.app = "conference"}).size(), 2u);
  EXPECT_EQ(r->Abandon("nosuch").code(), absl::StatusCode::kNotFound);
}

TEST(UnansweredCalls, ACallThatRunsOutOfRetriesLeavesNoClaim) {
  auto r = MakeRouter(kYaml);
  Decision d = MustRoute(*r, "conference", "c1", "busy.example.com");
  ASSERT_TRUE(d.ok);
  absl::StatusOr<Decision> d2 = r->Retry("c1", 486);  // not a full code: no release by itself
  ASSERT_TRUE(d2.ok() && d2->ok);
  absl::StatusOr<Decision> d3 = r->Retry("c1", 486);  // max_attempts reached: the call fails
  ASSERT_TRUE(d3.ok());
  EXPECT_FALSE(d3->ok);
  EXPECT_TRUE(r->Affinities().empty()) << "the failed call's claims went at once";
  EXPECT_TRUE(r->Sessions().empty());
  for (const NodeStatus& n : r->Nodes()) EXPECT_EQ(n.sessions.at("calls"), 0) << n.spec.id;
}

TEST(UnansweredCalls, FailedCallsCannotFillTheTable) {
  auto r = MakeRouter(kYaml);
  for (int i = 0; i < 1000; ++i) {
    std::string call = "flood-" + std::to_string(i);
    RouteRequest req{.app = "conference", .call_id = call, .key = "d" + std::to_string(i) + ".example.com"};
    absl::StatusOr<Decision> d = r->Route(req);
    ASSERT_TRUE(d.ok()) << d.status() << " at call " << i;
    ASSERT_TRUE(r->Abandon(call).ok());
  }
  EXPECT_EQ(r->Stats().affinities, 0);
  // A real caller still gets a claim.
  MustRoute(*r, "conference", "real", "real.example.com");
  EXPECT_EQ(r->Stats().affinities, 1);
}

TEST(UnansweredCalls, AFullTableLetsClaimsInGraceGiveWay) {
  auto r = MakeRouter(kYaml);
  // Answered calls that ended: every claim is in its grace time.
  int made = 0;
  for (int i = 0; i < 400; ++i) {
    std::string call = "old-" + std::to_string(i);
    RouteRequest req{.app = "conference", .call_id = call, .key = "k" + std::to_string(i)};
    absl::StatusOr<Decision> d = r->Route(req);
    ASSERT_TRUE(d.ok()) << "claims in grace give way, a new key is never refused: " << d.status();
    ASSERT_TRUE(r->Confirm(call).ok());
    ASSERT_TRUE(r->End(call).ok());
    ++made;
  }
  EXPECT_EQ(made, 400);
  EXPECT_LT(r->Stats().affinities, 400) << "older claims in grace gave way";
  bool newest = false;
  for (const AffinityInfo& a : r->Affinities()) newest = newest || a.key == "k399";
  EXPECT_TRUE(newest) << "the newest key has its claim";
}

}  // namespace
}  // namespace approute
