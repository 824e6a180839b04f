// Threads of one process routing, retrying and ending calls on one router at
// once, private and shared. Built on its own (approute_threads_test) so that
// the ThreadSanitizer build compiles only this and the library
// (scripts/test.sh). Checks, besides "no data race": every node's count is
// back at 0 once every call ended, and no node ever held more sessions than
// its capacity (seen from the callers' side and from a monitor thread).
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "approute/router.h"

namespace approute {
namespace {

constexpr int kNodes = 4;
constexpr int kCapacity = 6;  // per node; 4 threads x up to 8 live calls exceed it
constexpr int kThreads = 4;
constexpr int kCallsPerThread = 1500;

std::string Yaml() {
  std::string y = "state: {max_sessions: 4096, max_affinities: 4096}\nnodes:\n";
  for (int i = 0; i < kNodes; ++i) {
    y += "  - {id: n" + std::to_string(i) + ", uri: \"sip:10.0.0." + std::to_string(i + 1) +
         "\", pool: media, capacity: {calls: " + std::to_string(kCapacity) + "}}\n";
  }
  y += R"(apps:
  conf:
    pool: media
    strategy: least_loaded
    affinity: {grace: 0}
    retry: {codes: [503, 486], full_codes: [503], max_attempts: 3}
  plain:
    pool: media
    strategy: round_robin
    retry: {codes: [503], max_attempts: 4}
  p2c:
    pool: media
    strategy: p2c
)";
  return y;
}

struct Counts {
  std::atomic<int> live[kNodes] = {};
  std::atomic<int> over{0};    // times a caller saw more live calls on a node than its capacity
  std::atomic<int> errors{0};  // a method returned an error status
  std::atomic<int64_t> placed{0};
  std::atomic<int64_t> retried{0};
};

int NodeIndex(const std::string& id) { return id.size() == 2 && id[0] == 'n' ? id[1] - '0' : -1; }

// One thread: keeps up to 8 live calls, routes new ones, retries some, ends the oldest.
void Worker(Router& r, int t, Counts& c) {
  const char* apps[] = {"conf", "plain", "p2c"};
  std::vector<std::pair<std::string, int>> live;  // call id, node index
  auto take = [&](const std::string& call, const Decision& d) {
    int n = NodeIndex(d.node_id);
    if (n < 0) {
      ++c.errors;
      return;
    }
    if (c.live[n].fetch_add(1) + 1 > kCapacity) ++c.over;
    live.emplace_back(call, n);
    ++c.placed;
  };
  auto end = [&](size_t i) {
    --c.live[live[i].second];
    if (!r.End(live[i].first).ok()) ++c.errors;
    live.erase(live.begin() + static_cast<long>(i));
  };
  for (int i = 0; i < kCallsPerThread; ++i) {
    RouteRequest req;
    req.app = apps[(i + t) % 3];
    req.call_id = "t" + std::to_string(t) + "-c" + std::to_string(i);
    if (req.app == "conf") req.key = "room" + std::to_string(i % 5);  // keys shared by every thread
    absl::StatusOr<Decision> d = r.Route(req);
    if (!d.ok()) {
      ++c.errors;
      continue;
    }
    if (d->ok) {
      take(req.call_id, *d);
      if (i % 4 == 0) {
        // The node bounced it: the session's count moves off it, then maybe onto another.
        --c.live[live.back().second];
        live.pop_back();
        absl::StatusOr<Decision> rd = r.Retry(req.call_id, i % 8 == 0 ? 503 : 486);
        if (!rd.ok()) {
          ++c.errors;
          continue;
        }
        ++c.retried;
        if (rd->ok) take(req.call_id, *rd);
        // else: the session ended with the retry.
      }
    }
    // else: every node was full (no session was created).
    if (live.size() > 8 || (i % 3 == 0 && !live.empty())) end(0);
  }
  while (!live.empty()) end(live.size() - 1);
}

// Even threads use `a`, odd ones `b` (the same router, or two handles on one segment).
void RunAll(Router& a, Router& b) {
  Router& r = a;
  Counts c;
  std::atomic<bool> done{false};
  std::atomic<int> monitor_over{0};
  std::atomic<int64_t> monitor_reads{0};
  std::thread monitor([&] {
    while (!done.load()) {
      for (const NodeStatus& n : r.Nodes()) {
        auto it = n.sessions.find("calls");
        if (it != n.sessions.end() && (it->second > kCapacity || it->second < 0)) ++monitor_over;
      }
      ++monitor_reads;
      (void)r.Sweep();
    }
  });
  std::vector<std::thread> workers;
  for (int t = 0; t < kThreads; ++t) workers.emplace_back(Worker, std::ref(t % 2 ? b : a), t, std::ref(c));
  for (auto& w : workers) w.join();
  done = true;
  monitor.join();

  EXPECT_EQ(c.errors.load(), 0);
  EXPECT_EQ(c.over.load(), 0) << "a node held more calls than its capacity";
  EXPECT_EQ(monitor_over.load(), 0) << "the node table showed a count above capacity or below 0";
  EXPECT_GT(monitor_reads.load(), 0);
  // The test must have exercised contention: many placements and retries.
  EXPECT_GT(c.placed.load(), kThreads * kCallsPerThread / 4);
  EXPECT_GT(c.retried.load(), 100);
  for (int n = 0; n < kNodes; ++n) EXPECT_EQ(c.live[n].load(), 0);
  RouterStats s = r.Stats();
  EXPECT_EQ(s.sessions, 0);
  EXPECT_EQ(s.affinities, 0) << "grace 0: a key is forgotten with its last session";
  for (const NodeStatus& n : r.Nodes()) {
    for (const auto& [res, count] : n.sessions) EXPECT_EQ(count, 0) << n.spec.id << " " << res;
  }
}

TEST(Threads, PrivateRouterCountsEndAtZeroAndCapacityHolds) {
  absl::StatusOr<std::unique_ptr<Router>> r = Router::FromYaml(Yaml());
  ASSERT_TRUE(r.ok()) << r.status();
  RunAll(**r, **r);
}

TEST(Threads, SharedRouterCountsEndAtZeroAndCapacityHolds) {
  std::string name = "approute-threads-" + std::to_string(getpid());
  (void)Router::Unlink(name);
  {
    absl::StatusOr<std::unique_ptr<Router>> r = Router::FromYaml(Yaml(), RouterOptions{.shared = name});
    ASSERT_TRUE(r.ok()) << r.status();
    // A second handle on the same segment in the same process: threads use both.
    absl::StatusOr<std::unique_ptr<Router>> r2 = Router::Attach(name);
    ASSERT_TRUE(r2.ok()) << r2.status();
    RunAll(**r, **r2);
  }
  EXPECT_TRUE(*Router::Unlink(name));
}

}  // namespace
}  // namespace approute

namespace approute {
namespace {

// The upkeep thread sweeps while worker threads route; the router is then
// destroyed with the thread still ticking (the destructor stops it).
TEST(Threads, UpkeepThreadSweepsWhileThreadsRoute) {
  absl::StatusOr<std::unique_ptr<Router>> r = Router::FromYaml(Yaml(), RouterOptions{.upkeep_interval_ms = 10});
  ASSERT_TRUE(r.ok()) << r.status();
  RunAll(**r, **r);
  r->reset();
}

}  // namespace
}  // namespace approute
