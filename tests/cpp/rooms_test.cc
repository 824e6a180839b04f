// Rooms: strict keys (a key with live sessions never spans two nodes), a
// preference for new keys, and headroom for the keys a node already holds;
// on one router, across processes sharing one region, and across two
// cluster proxies on one real redis-server.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "approute/limits.h"
#include "approute/router.h"
#include "redis_server.h"
#include "test_util.h"

namespace approute {
namespace {

using testing::MakeRouter;
using testing::ManualClock;
using testing::MustRoute;
using testing::Sessions;

// Two nodes, least_loaded: without strict keys a busy room spills to b.
std::string Rooms(const std::string& affinity, int cap = 2, const std::string& extra_app = "") {
  return "nodes:\n"
         "  - {id: a, uri: \"sip:10.0.0.1:5060\", capacity: {conference: " +
         std::to_string(cap) +
         "}}\n"
         "  - {id: b, uri: \"sip:10.0.0.2:5060\", capacity: {conference: " +
         std::to_string(cap) +
         "}}\n"
         "apps:\n"
         "  conference:\n"
         "    strategy: least_loaded\n"
         "    resource: conference\n"
         "    affinity: " +
         affinity +
         "\n"
         "    retry: {codes: [503, 486], full_codes: [503], max_attempts: 3}\n" +
         extra_app;
}

Decision Route(Router& r, const std::string& call_id, const std::string& key, const std::string& prefer = "",
               const std::vector<std::string>& exclude = {}) {
  RouteRequest req{.app = "conference", .call_id = call_id, .key = key, .prefer = prefer, .exclude = exclude};
  absl::StatusOr<Decision> d = r.Route(req);
  EXPECT_TRUE(d.ok()) << d.status();
  return d.ok() ? *d : Decision{};
}

int64_t Refusals(Router& r, const std::string& reason) { return r.Stats().key_refusals["conference"][reason]; }

// The reproduction of the split room: participants 3 and 4 used to land on b.
TEST(Rooms, AStrictRoomNeverSplitsWhenItsNodeIsFull) {
  auto r = MakeRouter(Rooms("{grace: 300, strict: true}"));
  Decision p1 = Route(*r, "p1", "room1000"), p2 = Route(*r, "p2", "room1000");
  ASSERT_TRUE(p1.ok && p2.ok);
  EXPECT_EQ(p2.node_id, p1.node_id);
  for (const char* id : {"p3", "p4"}) {
    Decision d = Route(*r, id, "room1000");
    EXPECT_FALSE(d.ok) << id << " went to " << d.node_id;
    EXPECT_EQ(d.reason, "key_full");
    EXPECT_EQ(d.detail, "key 'room1000' lives on " + p1.node_id + " (2 live sessions), which is full: conference 2/2");
  }
  const std::string other = p1.node_id == "a" ? "b" : "a";
  EXPECT_EQ(Sessions(*r, other, "conference"), 0);
  EXPECT_EQ(Refusals(*r, "key_full"), 2);
  // A new room still opens on the other node.
  Decision fresh = Route(*r, "q1", "room2000");
  EXPECT_TRUE(fresh.ok);
  EXPECT_EQ(fresh.node_id, other);
  // Once a seat is free, the room's next participant takes it.
  ASSERT_TRUE(r->End("p1").ok());
  Decision p5 = Route(*r, "p5", "room1000");
  EXPECT_TRUE(p5.ok);
  EXPECT_EQ(p5.node_id, p1.node_id);
}

TEST(Rooms, WithoutStrictTheRoomSpillsAsBefore) {
  auto r = MakeRouter(Rooms("{grace: 300}"));
  std::set<std::string> nodes;
  for (const char* id : {"p1", "p2", "p3", "p4"}) {
    Decision d = Route(*r, id, "room1000");
    ASSERT_TRUE(d.ok) << id;
    nodes.insert(d.node_id);
  }
  EXPECT_EQ(nodes.size(), 2u) << "a non-strict key is a preference: the overflow goes elsewhere";
}

TEST(Rooms, EachCauseHasItsOwnReason) {
  ManualClock clock;
  RouterOptions o;
  o.now_ms = clock.fn();
  auto r = MakeRouter(Rooms("{grace: 300, strict: true}", 10), o);
  const std::string home = Route(*r, "p1", "room").node_id;
  ASSERT_FALSE(home.empty());
  ASSERT_TRUE(r->SetHealth(home, Health::kDown).ok());
  Decision d = Route(*r, "p2", "room");
  EXPECT_EQ(d.reason, "key_down");
  EXPECT_NE(d.detail.find("which is down"), std::string::npos) << d.detail;
  ASSERT_TRUE(r->SetHealth(home, Health::kUp).ok());
  ASSERT_TRUE(r->SetState(home, AdminState::kDisabled).ok());
  EXPECT_EQ(Route(*r, "p3", "room").reason, "key_disabled");
  ASSERT_TRUE(r->SetState(home, AdminState::kActive).ok());
  // Draining keeps its keys until the deadline, then refuses them.
  ASSERT_TRUE(r->Drain(home, 1000).ok());
  Decision during = Route(*r, "p4", "room");
  EXPECT_TRUE(during.ok);
  EXPECT_EQ(during.node_id, home);
  clock.Advance(1001);
  EXPECT_EQ(Route(*r, "p5", "room").reason, "key_draining");
  ASSERT_TRUE(r->SetState(home, AdminState::kActive).ok());
  // exclude names the key's node: the call cannot go there, nor elsewhere.
  EXPECT_EQ(Route(*r, "p6", "room", "", {home}).reason, "key_tried");
  EXPECT_EQ(Refusals(*r, "key_down"), 1);
  EXPECT_EQ(Refusals(*r, "key_disabled"), 1);
  EXPECT_EQ(Refusals(*r, "key_draining"), 1);
  EXPECT_EQ(Refusals(*r, "key_tried"), 1);
  std::vector<AffinityInfo> keys = r->Affinities();
  ASSERT_EQ(keys.size(), 1u);
  EXPECT_EQ(keys[0].node_id, home);
  EXPECT_EQ(keys[0].sessions, 2);
}

TEST(Rooms, RetryNeverMovesAKeyWithOtherLiveSessions) {
  auto r = MakeRouter(Rooms("{grace: 300, strict: true}", 10));
  Decision p1 = Route(*r, "p1", "room");
  Decision p2 = Route(*r, "p2", "room");
  ASSERT_EQ(p2.node_id, p1.node_id);
  absl::StatusOr<Decision> again = r->Retry("p2", 503);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_FALSE(again->ok);
  EXPECT_EQ(again->reason, "key_tried");
  EXPECT_NE(again->detail.find("lives on " + p1.node_id + " (1 live session)"), std::string::npos) << again->detail;
  // The key stays where p1 is: the next participant joins it.
  Decision p3 = Route(*r, "p3", "room");
  EXPECT_TRUE(p3.ok);
  EXPECT_EQ(p3.node_id, p1.node_id);
  EXPECT_EQ(p3.reason, "affinity");
}

TEST(Rooms, AStrictKeyWithOnlyItsGraceLeftMayMove) {
  auto r = MakeRouter(Rooms("{grace: 300, strict: true}", 1));
  Decision p1 = Route(*r, "p1", "room");
  ASSERT_TRUE(p1.ok);
  ASSERT_TRUE(r->End("p1").ok());
  // Fill the key's node with another key; the room (no live session) moves.
  Decision other = Route(*r, "o1", "lobby", "", {p1.node_id == "a" ? "b" : "a"});
  ASSERT_EQ(other.node_id, p1.node_id);
  Decision p2 = Route(*r, "p2", "room");
  EXPECT_TRUE(p2.ok) << p2.detail;
  EXPECT_NE(p2.node_id, p1.node_id);
  // A retry of the only session moves the key too.
  ASSERT_TRUE(r->End("o1").ok());
  absl::StatusOr<Decision> moved = r->Retry("p2", 503);
  ASSERT_TRUE(moved.ok());
  EXPECT_TRUE(moved->ok) << moved->detail;
  EXPECT_EQ(moved->node_id, p1.node_id);
}

TEST(Rooms, TheBoundNeverSplitsAStrictKey) {
  auto r = MakeRouter(Rooms("{grace: 300, strict: true, bound: 1.25}", 100));
  const std::string home = Route(*r, "p0", "big").node_id;
  for (int i = 1; i < 20; ++i) {
    Decision d = Route(*r, "p" + std::to_string(i), "big");
    ASSERT_TRUE(d.ok);
    EXPECT_EQ(d.node_id, home) << "participant " << i << " left the room's node for the bound";
  }
}

TEST(Rooms, HeadroomKeepsSeatsForOpenRooms) {
  auto r = MakeRouter(Rooms("{grace: 300, strict: true, headroom: 0.2}", 10));
  // 2 nodes x capacity 10: each opens new rooms while below 8.
  std::map<std::string, int> per_node;
  for (int i = 0; i < 16; ++i) {
    Decision d = Route(*r, "open" + std::to_string(i), "room" + std::to_string(i));
    ASSERT_TRUE(d.ok) << i << " " << d.detail;
    ++per_node[d.node_id];
  }
  EXPECT_EQ(per_node["a"], 8);
  EXPECT_EQ(per_node["b"], 8);
  Decision refused = Route(*r, "open16", "room16");
  EXPECT_FALSE(refused.ok);
  EXPECT_EQ(refused.reason, "no_node");
  EXPECT_NE(refused.detail.find("2 above the headroom for a new key"), std::string::npos) << refused.detail;
  EXPECT_EQ(r->Stats().headroom_refusals["conference"], 1);
  // The open rooms fill their nodes to capacity.
  for (int i = 0; i < 4; ++i) {
    Decision d = Route(*r, "join" + std::to_string(i), "room" + std::to_string(i));
    EXPECT_TRUE(d.ok) << d.detail;
    EXPECT_EQ(d.reason, "affinity");
  }
  EXPECT_EQ(Sessions(*r, "a", "conference") + Sessions(*r, "b", "conference"), 20);
}

TEST(Rooms, NewRoomsFollowTheirDomainsPreference) {
  auto r = MakeRouter(Rooms("{grace: 300, strict: true, headroom: 0.5}", 4));
  Decision first = Route(*r, "c1", "room1", "example.com");
  ASSERT_TRUE(first.ok);
  EXPECT_EQ(first.reason, "strategy");
  // least_loaded alone would open the next room on the empty node.
  Decision second = Route(*r, "c2", "room2", "example.com");
  EXPECT_TRUE(second.ok);
  EXPECT_EQ(second.node_id, first.node_id);
  EXPECT_EQ(second.reason, "prefer");
  Decision stranger = Route(*r, "c3", "room3", "other.org");
  EXPECT_NE(stranger.node_id, first.node_id);
  // The preference's node is at its headroom (2 of 4): the next room of
  // the domain goes where the strategy says, and the preference follows it.
  Decision third = Route(*r, "c4", "room4", "example.com");
  ASSERT_TRUE(third.ok) << "a preference never refuses";
  EXPECT_EQ(third.node_id, stranger.node_id);
  ASSERT_TRUE(r->End("c1").ok());
  ASSERT_TRUE(r->End("c2").ok());
  ASSERT_TRUE(r->End("c3").ok());
  Decision fourth = Route(*r, "c5", "room5", "example.com");
  EXPECT_EQ(fourth.node_id, third.node_id);
  EXPECT_EQ(fourth.reason, "prefer");
  // Joining a known room ignores the preference: the room's node wins.
  Decision join = Route(*r, "c6", "room1", "other.org");
  EXPECT_EQ(join.node_id, first.node_id);
  EXPECT_EQ(join.reason, "affinity");
  join = Route(*r, "c7", "room3", "example.com");
  EXPECT_EQ(join.node_id, stranger.node_id);
  EXPECT_EQ(join.reason, "affinity");
  for (const AffinityInfo& a : r->Affinities()) EXPECT_EQ(a.key.rfind("room", 0), 0u) << "derived keys stay hidden";
}

TEST(Rooms, APreferenceLivesWhileItsRoomsDo) {
  ManualClock clock;
  RouterOptions o;
  o.now_ms = clock.fn();
  auto r = MakeRouter(Rooms("{grace: 10, strict: true}", 10), o);
  const std::string home = Route(*r, "opener", "room1", "dom").node_id;
  Route(*r, "joiner", "room1", "dom");
  ASSERT_TRUE(r->End("opener").ok());  // the room lives on through the joiner
  clock.Advance(60'000);
  Decision next = Route(*r, "n1", "room2", "dom");
  EXPECT_EQ(next.node_id, home);
  EXPECT_EQ(next.reason, "prefer");
  ASSERT_TRUE(r->End("joiner").ok());
  ASSERT_TRUE(r->End("n1").ok());
  clock.Advance(11'000);  // every room ended and the grace ran out: no preference left
  r->Sweep();
  EXPECT_EQ(r->Stats().affinities, 0);
  EXPECT_EQ(Route(*r, "n2", "room3", "dom").reason, "strategy");
}

TEST(Rooms, BadArgumentsAreErrors) {
  auto r = MakeRouter(Rooms("{strict: true}"));
  RouteRequest derived{.app = "conference", .call_id = "x", .key = "\x1fpabc"};
  EXPECT_EQ(r->Route(derived).status().code(), absl::StatusCode::kInvalidArgument);
  RouteRequest long_prefer{
      .app = "conference", .call_id = "y", .key = "k", .prefer = std::string(kMaxInputLen + 1, 'p')};
  EXPECT_EQ(r->Route(long_prefer).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(r->Stats().sessions, 0);
  for (const char* bad : {"{strict: maybe}", "{strict: [1]}", "{headroom: 1.0}", "{headroom: -0.1}", "{headroom: x}"}) {
    absl::StatusOr<std::unique_ptr<Router>> made = Router::FromYaml(Rooms(bad));
    ASSERT_FALSE(made.ok()) << bad;
    const std::string msg(made.status().message());
    const std::string field = std::string(bad).find("strict") != std::string::npos ? "strict" : "headroom";
    EXPECT_NE(msg.find("apps.conference.affinity." + field), std::string::npos) << msg;
    EXPECT_NE(msg.find(":8:"), std::string::npos) << "file:line:col: " << msg;
  }
}

// Several processes place participants of the same new room at the same
// moment: one node wins and every process follows it.
TEST(Rooms, ProcessesRacingOnANewRoomAllFollowOneNode) {
  const std::string name = "/approute-rooms-" + std::to_string(getpid());
  (void)Router::Unlink(name);
  auto parent = MakeRouter(
      "nodes:\n"
      "  - {id: a, uri: \"sip:10.0.0.1\", capacity: {conference: 200}}\n"
      "  - {id: b, uri: \"sip:10.0.0.2\", capacity: {conference: 200}}\n"
      "  - {id: c, uri: \"sip:10.0.0.3\", capacity: {conference: 200}}\n"
      "apps:\n  conference: {strategy: random, resource: conference,"
      " affinity: {grace: 60, strict: true}}\n",
      RouterOptions{.shared = name});
  ASSERT_NE(parent, nullptr);
  constexpr int kProcs = 6, kRooms = 30;
  int go[2];
  ASSERT_EQ(pipe(go), 0);
  const std::string dir = ::testing::TempDir();
  std::vector<pid_t> pids;
  for (int p = 0; p < kProcs; ++p) {
    pid_t pid = fork();
    if (pid == 0) {
      close(go[1]);
      absl::StatusOr<std::unique_ptr<Router>> r = Router::Attach(name);
      char ch;
      (void)!read(go[0], &ch, 1);
      if (!r.ok()) _exit(3);
      std::ofstream out(dir + "/approute-rooms-" + std::to_string(getpid()));
      for (int room = 0; room < kRooms; ++room) {
        RouteRequest req{.app = "conference",
                         .call_id = "p" + std::to_string(p) + "-" + std::to_string(room),
                         .key = "room" + std::to_string(room),
                         .prefer = "dom" + std::to_string(p)};
        absl::StatusOr<Decision> d = (*r)->Route(req);
        if (!d.ok()) _exit(4);
        out << req.key << " " << (d->ok ? d->node_id : "-" + d->reason) << "\n";
      }
      out.close();
      _exit(0);
    }
    pids.push_back(pid);
  }
  close(go[0]);
  ASSERT_EQ(write(go[1], std::string(kProcs, 'g').data(), kProcs), kProcs);  // all at once
  close(go[1]);
  std::map<std::string, std::set<std::string>> nodes_of;
  for (pid_t pid : pids) {
    int st = 0;
    waitpid(pid, &st, 0);
    ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    std::ifstream in(dir + "/approute-rooms-" + std::to_string(pid));
    for (std::string key, node; in >> key >> node;) nodes_of[key].insert(node);
  }
  ASSERT_EQ(nodes_of.size(), static_cast<size_t>(kRooms));
  for (const auto& [room, nodes] : nodes_of) {
    EXPECT_EQ(nodes.size(), 1u) << room << " on " << nodes.size() << " nodes (or refused) with room to spare";
    EXPECT_EQ(nodes.begin()->substr(0, 1) == "-", false) << room << " refused: " << *nodes.begin();
  }
  for (const AffinityInfo& a : parent->Affinities()) EXPECT_EQ(a.sessions, kProcs) << a.key;
  (void)Router::Unlink(name);
}

// Two cluster proxies on one Redis: a strict room never spans two nodes,
// full or not, and the refusals name the room's node.
TEST(Rooms, TwoProxiesNeverSplitARoom) {
  APPROUTE_NEED_REDIS();
  testing::RedisServer srv;
  ASSERT_TRUE(srv.Start());
  auto yaml = [&](const std::string& proxy) {
    return "cluster: {redis: \"" + srv.url() + "\", name: rooms, proxy: " + proxy +
           ", timeout_ms: 500}\n"
           "nodes:\n"
           "  - {id: ast1, uri: \"sip:10.0.0.1\", capacity: {conference: 6}}\n"
           "  - {id: ast2, uri: \"sip:10.0.0.2\", capacity: {conference: 6}}\n"
           "  - {id: ast3, uri: \"sip:10.0.0.3\", capacity: {conference: 6}}\n"
           "apps:\n  conference: {strategy: random, resource: conference,"
           " affinity: {grace: 60, strict: true, headroom: 0.3}}\n";
  };
  const std::string dir = ::testing::TempDir();
  std::vector<pid_t> pids;
  int go[2];
  ASSERT_EQ(pipe(go), 0);
  for (int p = 0; p < 2; ++p) {
    pid_t pid = fork();
    if (pid == 0) {
      close(go[1]);
      const std::string seg = "/approute-rooms-c" + std::to_string(getpid());
      (void)Router::Unlink(seg);
      absl::StatusOr<std::unique_ptr<Router>> r =
          Router::FromYaml(yaml("kam" + std::to_string(p)), RouterOptions{.shared = seg});
      char ch;
      (void)!read(go[0], &ch, 1);
      if (!r.ok()) _exit(3);
      std::ofstream out(dir + "/approute-rooms-c" + std::to_string(getpid()));
      // 6 rooms x 4 participants per proxy: 48 participants for 18 seats.
      for (int i = 0; i < 24; ++i) {
        RouteRequest req{.app = "conference",
                         .call_id = "k" + std::to_string(p) + "-" + std::to_string(i),
                         .key = "room" + std::to_string(i % 6)};
        absl::StatusOr<Decision> d = (*r)->Route(req);
        if (!d.ok()) _exit(4);
        out << req.key << " " << (d->ok ? d->node_id : "-") << " " << d->reason << "\n";
      }
      out.close();
      std::this_thread::sleep_for(std::chrono::milliseconds(300));  // hold the calls while the other routes
      (void)Router::Unlink(seg);
      _exit(0);
    }
    pids.push_back(pid);
  }
  close(go[0]);
  ASSERT_EQ(write(go[1], "gg", 2), 2);
  close(go[1]);
  std::map<std::string, std::set<std::string>> nodes_of;
  std::map<std::string, int> reasons;
  int placed = 0;
  for (pid_t pid : pids) {
    int st = 0;
    waitpid(pid, &st, 0);
    ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    std::ifstream in(dir + "/approute-rooms-c" + std::to_string(pid));
    for (std::string key, node, reason; in >> key >> node >> reason;) {
      ++reasons[reason];
      if (node == "-") continue;
      nodes_of[key].insert(node);
      ++placed;
    }
  }
  for (const auto& [room, nodes] : nodes_of)
    EXPECT_EQ(nodes.size(), 1u) << room << " spans " << nodes.size() << " nodes";
  EXPECT_LE(placed, 18) << "capacity holds over both proxies";
  EXPECT_GT(reasons["key_full"], 0) << "full rooms refuse their participants";
  for (const auto& [reason, n] : reasons) {
    EXPECT_TRUE(reason == "strategy" || reason == "affinity" || reason == "key_full" || reason == "no_node") << reason;
  }
}

// Two proxies in turn: a strict room whose sessions all ended may move (its
// grace-only claim is taken over), and a domain's preference made at one
// proxy serves the other.
TEST(Rooms, ProxiesShareGraceOnlyRoomsAndPreferences) {
  APPROUTE_NEED_REDIS();
  testing::RedisServer srv;
  ASSERT_TRUE(srv.Start());
  auto yaml = [&](const std::string& proxy, int cap) {
    return "cluster: {redis: \"" + srv.url() + "\", name: turns" + std::to_string(cap) + ", proxy: " + proxy +
           ", timeout_ms: 500}\n"
           "nodes:\n"
           "  - {id: ast1, uri: \"sip:10.0.0.1\", capacity: {conference: " +
           std::to_string(cap) +
           "}}\n"
           "  - {id: ast2, uri: \"sip:10.0.0.2\", capacity: {conference: " +
           std::to_string(cap) +
           "}}\n"
           "apps:\n  conference: {strategy: least_loaded, resource: conference,"
           " affinity: {grace: 60, strict: true}}\n";
  };
  {
    auto a = MakeRouter(yaml("kam1", 1)), b = MakeRouter(yaml("kam2", 1));
    ASSERT_TRUE(a && b);
    const std::string home = Route(*a, "p1", "room").node_id, other = home == "ast1" ? "ast2" : "ast1";
    ASSERT_TRUE(a->End("p1").ok());  // only the room's grace is left
    Decision filler = Route(*b, "o1", "lobby", "", {other});
    ASSERT_EQ(filler.node_id, home);
    Decision moved = Route(*b, "p2", "room");
    EXPECT_TRUE(moved.ok) << moved.reason << ": " << moved.detail;
    EXPECT_EQ(moved.node_id, other);
    // Now the room lives on `other` through b: a's next participant follows it.
    Decision follow = Route(*a, "p3", "room");
    EXPECT_FALSE(follow.ok) << "the room's node is full (capacity 1 over both proxies)";
    EXPECT_EQ(follow.reason, "key_full");
    EXPECT_EQ(follow.detail, "key 'room' lives on " + other + " (1 live session), which is full: conference 1/1");
  }
  {
    auto a = MakeRouter(yaml("kam1", 4)), b = MakeRouter(yaml("kam2", 4));
    ASSERT_TRUE(a && b);
    Decision first = Route(*a, "q1", "r1", "example.com");
    ASSERT_TRUE(first.ok);
    Decision second = Route(*b, "q2", "r2", "example.com");
    EXPECT_EQ(second.node_id, first.node_id) << "least_loaded alone would open r2 on the empty node";
    EXPECT_EQ(second.reason, "prefer");
  }
}

}  // namespace
}  // namespace approute
