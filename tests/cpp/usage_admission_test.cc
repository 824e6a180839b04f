// A node's own counts in admission (state/usage.h): a node that reports
// near-full usage of a resource gets only the calls left to its capacity,
// counting approute's calls since the report; a stale report stops counting;
// several processes at once never go past it.
#include <gtest/gtest.h>
#include <unistd.h>

#include <map>
#include <string>
#include <vector>

#include "approute/router.h"
#include "test_util.h"

namespace approute {
namespace {

using testing::MakeRouter;
using testing::ManualClock;
using testing::Sessions;

// One node of capacity 500 channels, and a second one (disabled unless a
// test enables it).
const char* kYaml = R"(
status: {usage_max_age: 10}
nodes:
  - {id: a, uri: "sip:10.0.0.1:5060", pool: media, capacity: {channels: 500}}
  - {id: b, uri: "sip:10.0.0.2:5060", pool: media, capacity: {channels: 500}, state: disabled}
apps:
  calls: {pool: media, strategy: least_loaded, resource: channels}
  rooms: {pool: media, strategy: least_loaded, resource: channels, affinity: {grace: 60}}
  strict: {pool: media, strategy: least_loaded, resource: channels, affinity: {grace: 60, strict: true}}
)";

// Routes `n` calls of `app` (ids prefix-0...), keeps them up; returns how many were placed on `node`.
int RouteMany(Router& r, const std::string& prefix, int n, const std::string& node = "a",
              const std::string& app = "calls", const std::string& key = "") {
  int placed = 0;
  for (int i = 0; i < n; ++i) {
    absl::StatusOr<Decision> d = r.Route(RouteRequest{.app = app, .call_id = prefix + std::to_string(i), .key = key});
    EXPECT_TRUE(d.ok()) << d.status();
    if (d.ok() && d->ok && d->node_id == node) ++placed;
  }
  return placed;
}

TEST(UsageAdmission, ANodeReporting480Of500TakesAtMost20More) {
  auto r = MakeRouter(kYaml);
  ASSERT_TRUE(r->ReportLoad("a", {{"channels", 480}}).ok());
  EXPECT_EQ(RouteMany(*r, "c", 30), 20);
  EXPECT_EQ(Sessions(*r, "a", "channels"), 20);
  absl::StatusOr<Decision> d = r->Route(RouteRequest{.app = "calls", .call_id = "one-more"});
  ASSERT_TRUE(d.ok());
  EXPECT_FALSE(d->ok);
  EXPECT_EQ(d->reason, "no_node");
  EXPECT_NE(d->detail.find("1 full"), std::string::npos) << d->detail;
}

TEST(UsageAdmission, ApproutesCallsSinceTheReportCountOnTopOfIt) {
  auto r = MakeRouter(kYaml);
  ASSERT_EQ(RouteMany(*r, "before", 5), 5);
  // The node runs approute's 5 calls and 478 of its own.
  ASSERT_TRUE(r->ReportLoad("a", {{"channels", 483}}).ok());
  EXPECT_EQ(RouteMany(*r, "after", 30), 17);
  EXPECT_EQ(Sessions(*r, "a", "channels"), 22);
}

TEST(UsageAdmission, CallsEndedSinceTheReportAreNotCreditedBelowIt) {
  auto r = MakeRouter(kYaml);
  ASSERT_EQ(RouteMany(*r, "c", 5), 5);
  ASSERT_TRUE(r->ReportLoad("a", {{"channels", 480}}).ok());
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(r->End("c" + std::to_string(i)).ok());
  // Count 2: the node is at 480 by its report until approute's count grows
  // past the 5 it had then; full at 480 + (25 - 5) = 500.
  EXPECT_EQ(RouteMany(*r, "d", 40), 23);
  EXPECT_EQ(Sessions(*r, "a", "channels"), 25);
}

TEST(UsageAdmission, ApproutesOwnCountStillBoundsWhenTheReportIsLow) {
  auto r = MakeRouter(kYaml);
  ASSERT_EQ(RouteMany(*r, "c", 495), 495);
  ASSERT_TRUE(r->ReportLoad("a", {{"channels", 10}}).ok());  // behind: not every call reached it yet
  EXPECT_EQ(RouteMany(*r, "d", 20), 5);
}

TEST(UsageAdmission, AStaleReportStopsCounting) {
  ManualClock clock;
  RouterOptions o;
  o.now_ms = clock.fn();
  auto r = MakeRouter(kYaml, o);
  ASSERT_TRUE(r->ReportLoad("a", {{"channels", 495}}).ok());
  EXPECT_EQ(RouteMany(*r, "c", 10), 5);
  clock.Advance(9'000);
  EXPECT_EQ(RouteMany(*r, "d", 10), 0) << "status.usage_max_age is 10 s: the report still counts";
  clock.Advance(1'000);
  EXPECT_EQ(RouteMany(*r, "e", 10), 10) << "10 s old: only approute's own count is left";
  // A new report counts again, from approute's count now.
  ASSERT_TRUE(r->ReportLoad("a", {{"channels", 498}}).ok());
  EXPECT_EQ(RouteMany(*r, "f", 10), 2);
}

TEST(UsageAdmission, AReportWithoutTheResourceClearsIt) {
  auto r = MakeRouter(kYaml);
  ASSERT_TRUE(r->ReportLoad("a", {{"channels", 500}}).ok());
  EXPECT_EQ(RouteMany(*r, "c", 3), 0);
  ASSERT_TRUE(r->ReportLoad("a", {{"cpu", 0.5}}).ok());
  EXPECT_EQ(RouteMany(*r, "d", 3), 3);
}

TEST(UsageAdmission, AKeysCallsLeaveAFullNode) {
  auto r = MakeRouter(kYaml);
  ASSERT_TRUE(r->SetState("b", AdminState::kActive).ok());
  absl::StatusOr<Decision> first = r->Route(RouteRequest{.app = "rooms", .call_id = "r0", .key = "room"});
  ASSERT_TRUE(first.ok() && first->ok);
  const std::string home = first->node_id, other = home == "a" ? "b" : "a";
  ASSERT_TRUE(r->ReportLoad(home, {{"channels", 500}}).ok());
  absl::StatusOr<Decision> next = r->Route(RouteRequest{.app = "rooms", .call_id = "r1", .key = "room"});
  ASSERT_TRUE(next.ok() && next->ok);
  EXPECT_EQ(next->node_id, other) << "the key's node reports itself full: the join is refused";
  EXPECT_EQ(Sessions(*r, home, "channels"), 1);
}

TEST(UsageAdmission, AStrictKeysNodeFullByItsReportSaysSo) {
  auto r = MakeRouter(kYaml);
  absl::StatusOr<Decision> first = r->Route(RouteRequest{.app = "strict", .call_id = "s0", .key = "room"});
  ASSERT_TRUE(first.ok() && first->ok);
  ASSERT_TRUE(r->ReportLoad("a", {{"channels", 500}}).ok());
  absl::StatusOr<Decision> next = r->Route(RouteRequest{.app = "strict", .call_id = "s1", .key = "room"});
  ASSERT_TRUE(next.ok());
  EXPECT_FALSE(next->ok);
  EXPECT_EQ(next->reason, "key_full");
  EXPECT_EQ(next->detail, "key 'room' lives on a (1 live session), which is full: channels 500/500 by its own report");
}

TEST(UsageAdmission, TheStrategySeesTheReportedCount) {
  auto r = MakeRouter(kYaml);
  ASSERT_TRUE(r->SetState("b", AdminState::kActive).ok());
  ASSERT_TRUE(r->ReportLoad("a", {{"channels", 300}}).ok());
  // least_loaded: a holds 300 by its report, b nothing: b takes the calls
  // until it holds about as many.
  EXPECT_EQ(RouteMany(*r, "c", 200, "b"), 200);
}

std::string SegName(const std::string& tag) { return "approute-usage-" + tag + "-" + std::to_string(getpid()); }

TEST(UsageAdmission, ManyProcessesAtOnceTakeOnlyTheRemainingCalls) {
  const std::string name = SegName("procs");
  (void)Router::Unlink(name);
  {
    auto parent = MakeRouter(kYaml, RouterOptions{.shared = name});
    ASSERT_NE(parent, nullptr);
    ASSERT_EQ(RouteMany(*parent, "p", 10), 10);
    ASSERT_TRUE(parent->ReportLoad("a", {{"channels", 470}}).ok());  // 10 approute's + 460 of its own
    constexpr int kProcs = 4, kCalls = 30;
    // Released at once: each process attaches and routes its calls.
    const bool ok = testing::RunForked(kProcs, [&](int p) {
      absl::StatusOr<std::unique_ptr<Router>> r = Router::Attach(name);
      if (!r.ok()) return 3;
      for (int i = 0; i < kCalls; ++i) {
        absl::StatusOr<Decision> d =
            (*r)->Route(RouteRequest{.app = "calls", .call_id = "k" + std::to_string(p) + "-" + std::to_string(i)});
        if (!d.ok()) return 4;
      }
      return 0;
    });
    ASSERT_TRUE(ok);
    // 500 - 470 = 30 more, shared by 120 attempts from 4 processes.
    EXPECT_EQ(Sessions(*parent, "a", "channels"), 40);
  }
  (void)Router::Unlink(name);
}

}  // namespace
}  // namespace approute
