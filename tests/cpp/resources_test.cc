// Apps of several resources (`resource: [conference, channels]`): a session
// takes one unit of each, all or none; no capacity is ever exceeded, on one
// router, across processes sharing one region, and across two cluster
// proxies on one real redis-server; the config names what is wrong.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "approute/router.h"
#include "redis_server.h"
#include "state/recovery.h"
#include "state/region.h"
#include "test_util.h"

namespace approute {
namespace {

using testing::MakeRouter;
using testing::MustRoute;
using testing::Sessions;

// Node a: 4 seats, 2 channels; b: 4 seats, 4 channels; the app takes both.
std::string TwoResources(const std::string& app_extra = "", const std::string& a_caps = "conference: 4, channels: 2",
                         const std::string& b_caps = "conference: 4, channels: 4") {
  return "nodes:\n"
         "  - {id: a, uri: \"sip:10.0.0.1\", capacity: {" +
         a_caps +
         "}}\n"
         "  - {id: b, uri: \"sip:10.0.0.2\", capacity: {" +
         b_caps +
         "}}\n"
         "apps:\n"
         "  conf:\n"
         "    strategy: round_robin\n"
         "    resource: [conference, channels]\n" +
         app_extra;
}

absl::Status ConfigError(const std::string& yaml) { return Router::FromYaml(yaml).status(); }

TEST(Resources, ConfigAcceptsAListOrOneName) {
  auto r = MakeRouter(TwoResources());
  ASSERT_NE(r, nullptr);
  auto one = MakeRouter(TwoResources().substr(0, TwoResources().find("    resource:")) + "    resource: channels\n");
  ASSERT_NE(one, nullptr);
  Decision d = MustRoute(*one, "conf", "c1");
  ASSERT_TRUE(d.ok);
  EXPECT_EQ(Sessions(*one, d.node_id, "channels"), 1);
  EXPECT_EQ(Sessions(*one, d.node_id, "conference"), 0) << "one name: one resource";
}

TEST(Resources, ConfigErrorsNameWhatIsWrong) {
  const std::string base = TwoResources().substr(0, TwoResources().find("    resource:"));
  struct Case {
    std::string resource, says;
  } cases[] = {
      {"[]", "apps.conf.resource: expected at least one resource name"},
      {"[conference, channels, conference]", "apps.conf.resource[2]: resource \"conference\" is named twice"},
      {"[conference, {a: 1}]", "apps.conf.resource[1]"},
      {"[conference, \"bad name\"]", "apps.conf.resource[1]"},
      {"[r0, r1, r2, r3, r4, r5, r6, r7, r8, r9, r10, r11, r12, r13, r14, r15, r16]", "at most 16 resources"},
  };
  for (const Case& c : cases) {
    absl::Status s = ConfigError(base + "    resource: " + c.resource + "\n");
    EXPECT_FALSE(s.ok()) << c.resource;
    EXPECT_NE(s.message().find(c.says), std::string::npos) << c.resource << ": " << s.message();
  }
  // A bad reload changes nothing: the app keeps its two resources.
  auto r = MakeRouter(TwoResources());
  ASSERT_NE(r, nullptr);
  EXPECT_FALSE(r->Reload(base + "    resource: [conference, conference]\n").ok());
  Decision d = MustRoute(*r, "conf", "c1");
  ASSERT_TRUE(d.ok);
  EXPECT_EQ(Sessions(*r, d.node_id, "conference"), 1);
  EXPECT_EQ(Sessions(*r, d.node_id, "channels"), 1);
}

TEST(Resources, EachSessionHoldsAUnitOfEveryResourceUntilItEnds) {
  auto r = MakeRouter(TwoResources());
  ASSERT_NE(r, nullptr);
  std::map<std::string, int> on;
  for (int i = 0; i < 6; ++i) {
    Decision d = MustRoute(*r, "conf", "c" + std::to_string(i));
    ASSERT_TRUE(d.ok) << i << ": " << d.detail;
    ++on[d.node_id];
  }
  // a has 2 channels: it took 2 calls although it has 4 seats; b took 4.
  EXPECT_EQ(on["a"], 2);
  EXPECT_EQ(on["b"], 4);
  for (const char* n : {"a", "b"}) EXPECT_EQ(Sessions(*r, n, "conference"), Sessions(*r, n, "channels")) << n;
  Decision none = MustRoute(*r, "conf", "c6");
  EXPECT_FALSE(none.ok);
  EXPECT_EQ(none.reason, "no_node");
  EXPECT_NE(none.detail.find("2 full for \"conference\" or \"channels\""), std::string::npos) << none.detail;
  // Nothing was held for the refused call, on either node.
  EXPECT_EQ(Sessions(*r, "a", "conference"), 2);
  EXPECT_EQ(Sessions(*r, "b", "conference"), 4);
  for (int i = 0; i < 6; ++i) ASSERT_TRUE(r->End("c" + std::to_string(i)).ok());
  for (const char* n : {"a", "b"}) {
    EXPECT_EQ(Sessions(*r, n, "conference"), 0) << n;
    EXPECT_EQ(Sessions(*r, n, "channels"), 0) << n;
  }
}

TEST(Resources, ANodeFullForTheSecondResourceIsNoCandidateAndExplained) {
  // a: seats to spare, no channel left; b: both.
  auto r = MakeRouter(TwoResources("", "conference: 4, channels: 0"));
  ASSERT_NE(r, nullptr);
  for (int i = 0; i < 3; ++i) {
    Decision d = MustRoute(*r, "conf", "c" + std::to_string(i));
    ASSERT_TRUE(d.ok);
    EXPECT_EQ(d.node_id, "b");
  }
  EXPECT_EQ(Sessions(*r, "a", "conference"), 0) << "no unit taken on a node that could not hold them all";
  absl::StatusOr<ExplainTrace> t = r->Explain(ExplainRequest{.app = "conf"});
  ASSERT_TRUE(t.ok()) << t.status();
  bool seen = false;
  for (const ExplainNode& n : t->nodes) {
    if (n.id != "a") continue;
    seen = true;
    EXPECT_EQ(n.exclusion, "full");
    EXPECT_NE(n.detail.find("channels 0/0"), std::string::npos) << n.detail;
  }
  EXPECT_TRUE(seen);
}

TEST(Resources, ANodesOwnReportOfTheSecondResourceCounts) {
  auto r = MakeRouter(TwoResources("", "conference: 10, channels: 10", "conference: 10, channels: 10"));
  ASSERT_NE(r, nullptr);
  ASSERT_TRUE(r->ReportLoad("a", {{"channels", 9}}).ok());  // a runs 9 channels approute did not place
  std::map<std::string, int> on;
  for (int i = 0; i < 8; ++i) {
    Decision d = MustRoute(*r, "conf", "c" + std::to_string(i));
    ASSERT_TRUE(d.ok);
    ++on[d.node_id];
  }
  EXPECT_EQ(on["a"], 1) << "a had room for one more channel";
  EXPECT_EQ(on["b"], 7);
}

TEST(Resources, AStrictRoomWhoseNodeRunsOutOfChannelsIsRefusedNotSplit) {
  auto r = MakeRouter(TwoResources("    affinity: {grace: 60, strict: true}\n", "conference: 10, channels: 2",
                                   "conference: 10, channels: 10"));
  ASSERT_NE(r, nullptr);
  // round_robin starts at a for the first room.
  std::string home;
  for (int i = 0; i < 2; ++i) {
    Decision d = MustRoute(*r, "conf", "p" + std::to_string(i), "room1");
    ASSERT_TRUE(d.ok);
    if (home.empty()) home = d.node_id;
    EXPECT_EQ(d.node_id, home);
  }
  if (home != "a") GTEST_SKIP() << "the room opened on b (round robin started there)";
  Decision third = MustRoute(*r, "conf", "p2", "room1");
  EXPECT_FALSE(third.ok);
  EXPECT_EQ(third.reason, "key_full");
  EXPECT_EQ(third.detail, "key 'room1' lives on a (2 live sessions), which is full: channels 2/2");
  EXPECT_EQ(Sessions(*r, "b", "conference"), 0) << "the room never spans two nodes";
  EXPECT_EQ(Sessions(*r, "a", "conference"), 2);
}

TEST(Resources, HeadroomKeepsRoomInEveryResourceForOpenRooms) {
  // One node: 10 seats but 5 channels; a new room only below ceil(0.8 x 5) = 4 channels.
  auto r = MakeRouter(
      "nodes:\n  - {id: a, uri: \"sip:10.0.0.1\", capacity: {conference: 10, channels: 5}}\n"
      "apps:\n  conf: {strategy: round_robin, resource: [conference, channels],"
      " affinity: {grace: 60, strict: true, headroom: 0.2}}\n");
  ASSERT_NE(r, nullptr);
  for (int room = 0; room < 4; ++room) {
    ASSERT_TRUE(MustRoute(*r, "conf", "o" + std::to_string(room), "room" + std::to_string(room)).ok) << room;
  }
  Decision fresh = MustRoute(*r, "conf", "o4", "room4");
  EXPECT_FALSE(fresh.ok) << "a fifth room would leave the open ones no channel";
  EXPECT_EQ(Sessions(*r, "a", "conference"), 4) << "nothing held for the refused room";
  Decision late = MustRoute(*r, "conf", "late", "room0");
  EXPECT_TRUE(late.ok) << "an open room's late participant takes the channel kept for it: " << late.detail;
  EXPECT_EQ(Sessions(*r, "a", "channels"), 5);
}

TEST(Resources, RetryMovesEveryUnit) {
  auto r = MakeRouter(TwoResources("    retry: {codes: [503], max_attempts: 2}\n"));
  ASSERT_NE(r, nullptr);
  Decision d = MustRoute(*r, "conf", "c1");
  ASSERT_TRUE(d.ok);
  absl::StatusOr<Decision> again = r->Retry("c1", 503);
  ASSERT_TRUE(again.ok()) << again.status();
  ASSERT_TRUE(again->ok);
  EXPECT_NE(again->node_id, d.node_id);
  EXPECT_EQ(Sessions(*r, d.node_id, "conference"), 0);
  EXPECT_EQ(Sessions(*r, d.node_id, "channels"), 0);
  EXPECT_EQ(Sessions(*r, again->node_id, "conference"), 1);
  EXPECT_EQ(Sessions(*r, again->node_id, "channels"), 1);
  ASSERT_TRUE(r->End("c1").ok());
  EXPECT_EQ(Sessions(*r, again->node_id, "channels"), 0);
}

TEST(Resources, ARecountCountsEveryResourceOfEachSession) {
  const std::string name = "/approute-res-" + std::to_string(getpid());
  (void)Router::Unlink(name);
  auto r = MakeRouter(TwoResources(), RouterOptions{.shared = name});
  ASSERT_NE(r, nullptr);
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(MustRoute(*r, "conf", "c" + std::to_string(i)).ok);
  absl::StatusOr<std::unique_ptr<internal::Region>> region = internal::Region::AttachShared(name);
  ASSERT_TRUE(region.ok()) << region.status();
  const internal::RecountResult got = internal::Recount(**region, 0);
  EXPECT_EQ(got.drift, 0) << "the counts were what the sessions hold";
  EXPECT_EQ(Sessions(*r, "a", "channels") + Sessions(*r, "b", "channels"), 5);
  EXPECT_EQ(Sessions(*r, "a", "conference") + Sessions(*r, "b", "conference"), 5);
  (void)Router::Unlink(name);
}

// Per node: the counts of both resources, and that neither passed its capacity.
void ExpectWithinBoth(const Router& r, const std::map<std::string, std::pair<int64_t, int64_t>>& caps,
                      int64_t* placed) {
  *placed = 0;
  for (const auto& [node, cap] : caps) {
    const int64_t seats = Sessions(r, node, "conference"), channels = Sessions(r, node, "channels");
    EXPECT_LE(seats, cap.first) << node;
    EXPECT_LE(channels, cap.second) << node;
    EXPECT_EQ(seats, channels) << node << ": every session holds one unit of each";
    *placed += seats;
  }
}

// Six processes route and end calls at once, each holding up to four, on
// nodes that run out of one resource or the other first (24 calls held for
// 19 places): after every placement the node's counts are read back, and
// neither capacity is ever passed; at the end every unit is given back.
TEST(Resources, ProcessesRacingNeverExceedEitherCapacity) {
  const std::string name = "/approute-res-race-" + std::to_string(getpid());
  (void)Router::Unlink(name);
  const std::map<std::string, std::pair<int64_t, int64_t>> caps = {
      {"a", {5, 9}}, {"b", {9, 4}}, {"c", {7, 7}}, {"d", {3, 20}}};
  std::string yaml = "nodes:\n";
  for (const auto& [id, cap] : caps) {
    yaml += "  - {id: " + id + ", uri: \"sip:" + id +
            ".example.com\", capacity: {conference: " + std::to_string(cap.first) +
            ", channels: " + std::to_string(cap.second) + "}}\n";
  }
  yaml += "apps:\n  conf: {strategy: random, resource: [conference, channels]}\n";
  auto parent = MakeRouter(yaml, RouterOptions{.shared = name});
  ASSERT_NE(parent, nullptr);
  constexpr int kProcs = 6, kCalls = 1500, kHeld = 4;
  ASSERT_TRUE(testing::RunForked(kProcs, [&](int p) {
    absl::StatusOr<std::unique_ptr<Router>> r = Router::Attach(name);
    if (!r.ok()) {
      fprintf(stderr, "attach: %s\n", r.status().ToString().c_str());
      return 3;
    }
    std::vector<std::string> held;
    for (int i = 0; i < kCalls; ++i) {
      const std::string id = "p" + std::to_string(p) + "-" + std::to_string(i);
      absl::StatusOr<Decision> d = (*r)->Route(RouteRequest{.app = "conf", .call_id = id});
      if (!d.ok()) {
        fprintf(stderr, "route %s: %s\n", id.c_str(), d.status().ToString().c_str());
        return 4;
      }
      if (d->ok) {
        absl::StatusOr<NodeStatus> n = (*r)->Node(d->node_id);
        if (!n.ok()) return 5;
        const auto& cap = caps.at(d->node_id);
        if (n->sessions["conference"] > cap.first || n->sessions["channels"] > cap.second) {
          fprintf(stderr, "%s on %s: conference %lld/%lld, channels %lld/%lld\n", id.c_str(), d->node_id.c_str(),
                  static_cast<long long>(n->sessions["conference"]), static_cast<long long>(cap.first),
                  static_cast<long long>(n->sessions["channels"]), static_cast<long long>(cap.second));
          return 6;
        }
        held.push_back(id);
      }
      if (held.size() >= kHeld || (!d->ok && !held.empty())) {
        if (absl::Status e = (*r)->End(held.front()); !e.ok()) {
          fprintf(stderr, "end %s: %s\n", held.front().c_str(), e.ToString().c_str());
          return 7;
        }
        held.erase(held.begin());
      }
    }
    for (const std::string& id : held) {
      if (!(*r)->End(id).ok()) return 7;
    }
    return 0;  // a process may place nothing while the others hold every place
  })) << "a process saw a capacity passed (exit 6) or failed (its stderr says)";
  uint64_t routed = 0;
  for (const NodeStatus& n : parent->Nodes()) routed += n.routed_total;
  EXPECT_GT(routed, uint64_t{kProcs * kHeld}) << "the places were filled and emptied again and again";
  int64_t left = 0;
  ExpectWithinBoth(*parent, caps, &left);
  EXPECT_EQ(left, 0) << "every unit was given back";
  EXPECT_TRUE(parent->Sessions().empty());
  (void)Router::Unlink(name);
}

// Two cluster proxies on one Redis, each with its own region, route at once:
// over the deployment neither capacity is passed.
TEST(Resources, TwoProxiesNeverExceedEitherCapacity) {
  APPROUTE_NEED_REDIS();
  testing::RedisServer srv;
  ASSERT_TRUE(srv.Start());
  auto yaml = [&](const std::string& proxy) {
    return "cluster: {redis: \"" + srv.url() + "\", name: res, proxy: " + proxy +
           ", timeout_ms: 500}\n"
           "nodes:\n"
           "  - {id: a, uri: \"sip:10.0.0.1\", capacity: {conference: 6, channels: 3}}\n"
           "  - {id: b, uri: \"sip:10.0.0.2\", capacity: {conference: 2, channels: 8}}\n"
           "apps:\n  conf: {strategy: random, resource: [conference, channels]}\n";
  };
  char tmpl[] = "/tmp/approute-res-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl;
  ASSERT_TRUE(testing::RunForked(2, [&](int p) {
    const std::string seg = "/approute-res-c" + std::to_string(getpid());
    (void)Router::Unlink(seg);
    absl::StatusOr<std::unique_ptr<Router>> r =
        Router::FromYaml(yaml("kam" + std::to_string(p)), RouterOptions{.shared = seg});
    if (!r.ok()) return 3;
    std::ofstream out(dir + "/approute-res-c" + std::to_string(getpid()));
    int placed = 0;
    for (int i = 0; i < 10; ++i) {
      absl::StatusOr<Decision> d =
          (*r)->Route(RouteRequest{.app = "conf", .call_id = "k" + std::to_string(p) + "-" + std::to_string(i)});
      if (!d.ok()) return 4;
      if (d->ok) {
        ++placed;
        out << d->node_id << "\n";
      }
    }
    out.close();
    std::this_thread::sleep_for(std::chrono::milliseconds(300));  // hold the calls while the other routes
    (void)Router::Unlink(seg);
    return 0;
  }));
  // Read what each proxy placed: per node, at most min(conference, channels).
  std::map<std::string, int> on;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    const std::string f = entry.path().filename().string();
    if (f.rfind("approute-res-c", 0) != 0) continue;
    std::ifstream in(entry.path());
    for (std::string node; in >> node;) ++on[node];
  }
  std::filesystem::remove_all(dir);
  EXPECT_LE(on["a"], 3) << "a has 3 channels over both proxies";
  EXPECT_LE(on["b"], 2) << "b has 2 seats over both proxies";
  EXPECT_EQ(on["a"] + on["b"], 5) << "with 20 calls for 5 places every place is taken";
}

}  // namespace
}  // namespace approute
