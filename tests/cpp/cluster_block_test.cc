// Reservation blocks (cluster.reserve_block): a proxy takes several units of
// a node's capacity in one script and answers the next reservations there
// from them, host-wide. Against a real redis-server: the capacity holds over
// two proxies of forked workers, the round trips per call drop, a killed
// proxy's block lapses with its lease, an idle block goes back so that
// either proxy reaches the last places, and a Redis restarted empty holds
// only the live sessions again.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <functional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "approute/router.h"
#include "placement/cluster_placement.h"
#include "placement/redis_client.h"
#include "redis_server.h"

namespace approute {
namespace {

using approute::testing::RedisServer;

// One node (ast1) with `cap` calls; `plain` routes without a key, `conf` by key.
std::string BlockYaml(const RedisServer& srv, const std::string& deployment, const std::string& proxy, int cap,
                      int block) {
  std::ostringstream y;
  y << "cluster: {redis: \"" << srv.url() << "\", name: " << deployment << ", proxy: " << proxy
    << ", timeout_ms: 200, reserve_block: " << block << "}\n"
    << "nodes:\n  - {id: ast1, uri: \"sip:10.0.0.1:5060\", capacity: {calls: " << cap << "}}\n"
    << "apps:\n"
    << "  plain: {strategy: random, resource: calls}\n"
    << "  conf: {strategy: random, resource: calls, affinity: {grace: 30}}\n";
  return y.str();
}

std::string Segment(const std::string& tag) { return "/approute-blk-" + std::to_string(getpid()) + "-" + tag; }

// This proxy's share and every live proxy's summed, as Redis holds them.
int64_t Held(const RedisServer& srv, const std::string& deployment, const std::string& proxy = "",
             const std::string& resource = "calls") {
  internal::RedisClient c(*internal::ParseRedisUrl(srv.url()), 1000);
  const std::string key = internal::DeploymentPrefix(deployment) + "n:ast1|" + resource;
  absl::StatusOr<internal::RedisValue> r = proxy.empty() ? c.Command({"HVALS", key}) : c.Command({"HGET", key, proxy});
  if (!r.ok()) return -1;
  if (!proxy.empty()) return r->str.empty() ? 0 : std::stoll(r->str);
  int64_t sum = 0;
  for (const auto& v : r->elements) sum += std::stoll(v.str);
  return sum;
}

struct Proxy {
  std::string seg;
  std::unique_ptr<Router> router;
  Proxy(const std::string& yaml, const std::string& tag) : seg(Segment(tag)) {
    (void)Router::Unlink(seg);
    absl::StatusOr<std::unique_ptr<Router>> r = Router::FromYaml(yaml, RouterOptions{.shared = seg});
    EXPECT_TRUE(r.ok()) << r.status();
    if (r.ok()) router = *std::move(r);
  }
  ~Proxy() {
    router.reset();
    (void)Router::Unlink(seg);
  }
  bool Route(const std::string& call_id, const std::string& app = "plain", const std::string& key = "") {
    absl::StatusOr<Decision> d = router->Route(RouteRequest{.app = app, .call_id = call_id, .key = key});
    return d.ok() && d->ok;
  }
  // Routes `plain` calls named prefix0.. until one is refused; -> how many
  // were placed (their call ids appended to *ids when given).
  int Fill(const std::string& prefix, std::vector<std::string>* ids = nullptr) {
    int n = 0;
    while (n < 100000 && Route(prefix + std::to_string(n))) {
      if (ids != nullptr) ids->push_back(prefix + std::to_string(n));
      ++n;
    }
    return n;
  }
  int64_t trips() { return router->Cluster().round_trips; }
};

// Sweeps (the republish runs at most once a second) until `cond` or `ms` pass.
bool SweepUntil(Router& r, int64_t ms, const std::function<bool()>& cond) {
  for (int64_t waited = 0; waited <= ms; waited += 100) {
    (void)r.Sweep();
    if (cond()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

// Each proxy: a process that builds its router (its own segment), then forks
// `workers` processes that share it (as Kamailio's), all released at once;
// each worker tries `tries` calls. -> the calls placed per proxy.
std::vector<int> RaceProxies(const std::vector<std::string>& yamls, int workers, int tries) {
  int go[2], ready[2];  // every worker says it is ready; then all are released at once
  EXPECT_EQ(pipe(go), 0);
  EXPECT_EQ(pipe(ready), 0);
  std::vector<std::pair<pid_t, int>> kids;
  for (size_t p = 0; p < yamls.size(); ++p) {
    int out[2];
    EXPECT_EQ(pipe(out), 0);
    const pid_t pid = fork();
    if (pid == 0) {
      close(out[0]);
      close(go[1]);
      close(ready[0]);
      Proxy proxy(yamls[p], "race" + std::to_string(p));
      if (proxy.router == nullptr) _exit(2);
      std::vector<std::pair<pid_t, int>> ws;
      for (int w = 0; w < workers; ++w) {
        int wout[2];
        if (pipe(wout) != 0) _exit(2);
        const pid_t wp = fork();
        if (wp == 0) {
          close(wout[0]);
          char c = 'r';
          (void)!write(ready[1], &c, 1);
          (void)!read(go[0], &c, 1);
          int placed = 0;
          for (int i = 0; i < tries; ++i) {
            placed += proxy.Route("p" + std::to_string(p) + "w" + std::to_string(w) + "-" + std::to_string(i)) ? 1 : 0;
          }
          (void)!write(wout[1], &placed, sizeof placed);
          _exit(0);
        }
        close(wout[1]);
        ws.emplace_back(wp, wout[0]);
      }
      int total = 0;
      for (auto [wp, fd] : ws) {
        int placed = 0;
        if (read(fd, &placed, sizeof placed) == static_cast<ssize_t>(sizeof placed)) total += placed;
        close(fd);
        int st = 0;
        waitpid(wp, &st, 0);
      }
      (void)!write(out[1], &total, sizeof total);
      _exit(0);
    }
    close(out[1]);
    kids.emplace_back(pid, out[0]);
  }
  close(go[0]);
  close(ready[1]);
  for (size_t n = 0; n < yamls.size() * static_cast<size_t>(workers); ++n) {
    char c;
    if (read(ready[0], &c, 1) != 1) break;  // a proxy that failed to start: its workers never come
  }
  close(ready[0]);
  const std::string all(yamls.size() * static_cast<size_t>(workers), 'g');
  (void)!write(go[1], all.data(), all.size());
  close(go[1]);
  std::vector<int> placed;
  for (auto [pid, fd] : kids) {
    int n = -1;
    if (read(fd, &n, sizeof n) != static_cast<ssize_t>(sizeof n)) n = -1;
    close(fd);
    int st = 0;
    waitpid(pid, &st, 0);
    EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    placed.push_back(n);
  }
  return placed;
}

TEST(ClusterBlocks, TheCapacityHoldsOverTwoProxiesOfForkedWorkers) {
  APPROUTE_NEED_REDIS();
  RedisServer srv;
  ASSERT_TRUE(srv.Start());
  constexpr int kCap = 150;
  // 2 proxies x 3 workers x 100 tries: 600 calls for 150 places.
  std::vector<int> placed =
      RaceProxies({BlockYaml(srv, "race", "kam1", kCap, 16), BlockYaml(srv, "race", "kam2", kCap, 16)}, 3, 100);
  ASSERT_EQ(placed.size(), 2u);
  EXPECT_EQ(placed[0] + placed[1], kCap) << placed[0] << " + " << placed[1] << ": every place used once, never more";
  EXPECT_GT(placed[0], 0);
  EXPECT_GT(placed[1], 0);
  EXPECT_LE(Held(srv, "race"), kCap) << "the shares held in Redis never pass the capacity";
}

TEST(ClusterBlocks, ABlockCutsTheRoundTripsPerReservation) {
  APPROUTE_NEED_REDIS();
  RedisServer srv;
  ASSERT_TRUE(srv.Start());
  constexpr int kCalls = 400;
  auto trips_per_call = [&](int block) {
    Proxy p(BlockYaml(srv, "trips" + std::to_string(block), "kam1", 100000, block), "trips" + std::to_string(block));
    EXPECT_NE(p.router, nullptr);
    EXPECT_TRUE(p.Route("warm"));  // the connection and the scripts loaded
    const int64_t t0 = p.trips();
    for (int i = 0; i < kCalls; ++i) EXPECT_TRUE(p.Route("c" + std::to_string(i)));
    const double per_call = static_cast<double>(p.trips() - t0) / kCalls;
    EXPECT_EQ(p.router->Stats().sessions, kCalls + 1);
    return per_call;
  };
  const double off = trips_per_call(1), on = trips_per_call(16);
  std::printf("round trips per reservation: %.3f without blocks, %.3f with blocks of 16\n", off, on);
  EXPECT_GE(off, 1.0) << "without blocks: one script per reservation";
  EXPECT_LE(on, 0.25) << "with blocks of 16: about one script per 15 reservations (plus the republishes)";
}

TEST(ClusterBlocks, EndsAndTheRepublishGiveTheUnitsBack) {
  APPROUTE_NEED_REDIS();
  RedisServer srv;
  ASSERT_TRUE(srv.Start());
  Proxy a(BlockYaml(srv, "back", "kam1", 1000, 16), "back");
  ASSERT_NE(a.router, nullptr);
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(a.Route("c" + std::to_string(i)));
  const int64_t held = Held(srv, "back", "kam1");
  EXPECT_GT(held, 5) << "a block beside the live calls";
  EXPECT_LE(held, 16 + 4);
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(a.router->End("c" + std::to_string(i)).ok());
  EXPECT_GE(Held(srv, "back", "kam1"), 5) << "until the republish, the node looks fuller, never emptier";
  EXPECT_TRUE(SweepUntil(*a.router, 4000, [&] { return Held(srv, "back", "kam1") == 0; }))
      << "an idle block goes back: " << Held(srv, "back", "kam1");
}

TEST(ClusterBlocks, EitherProxyReachesTheLastPlacesNearFull) {
  APPROUTE_NEED_REDIS();
  RedisServer srv;
  ASSERT_TRUE(srv.Start());
  constexpr int kCap = 60;
  Proxy a(BlockYaml(srv, "full", "kam1", kCap, 16), "full1");
  Proxy b(BlockYaml(srv, "full", "kam2", kCap, 16), "full2");
  ASSERT_NE(a.router, nullptr);
  ASSERT_NE(b.router, nullptr);
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(a.Route("a" + std::to_string(i)));
  EXPECT_GT(Held(srv, "full", "kam1"), 10) << "a holds a block";
  // b fills what a's share leaves; then a's idle block goes back and b
  // reaches exactly the capacity.
  std::vector<std::string> of_b;
  int by_b = b.Fill("b", &of_b);
  EXPECT_LT(by_b, kCap - 10);
  EXPECT_TRUE(SweepUntil(*a.router, 4000, [&] { return Held(srv, "full", "kam1") == 10; }))
      << Held(srv, "full", "kam1");
  by_b += b.Fill("bb", &of_b);
  EXPECT_EQ(10 + by_b, kCap) << "the node filled to exactly its capacity from b";
  EXPECT_FALSE(a.Route("a-late")) << "and a finds it full";
  EXPECT_EQ(Held(srv, "full"), kCap);
  // The other way round: every call of b ends, b's units go back, a fills it.
  for (const std::string& id : of_b) EXPECT_TRUE(b.router->End(id).ok()) << id;
  EXPECT_EQ(b.router->Stats().sessions, 0);
  EXPECT_TRUE(SweepUntil(*b.router, 4000, [&] { return Held(srv, "full", "kam2") == 0; })) << Held(srv, "full", "kam2");
  EXPECT_EQ(10 + a.Fill("aa"), kCap) << "the node filled to exactly its capacity from a";
  EXPECT_LE(Held(srv, "full"), kCap);
}

TEST(ClusterBlocks, NearFullABusyProxysUnusedUnitsGoBackAtItsNextRepublish) {
  APPROUTE_NEED_REDIS();
  RedisServer srv;
  ASSERT_TRUE(srv.Start());
  constexpr int kCap = 60;
  Proxy a(BlockYaml(srv, "busy", "kam1", kCap, 16), "busy1");
  Proxy b(BlockYaml(srv, "busy", "kam2", kCap, 16), "busy2");
  ASSERT_NE(a.router, nullptr);
  ASSERT_NE(b.router, nullptr);
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(a.Route("a" + std::to_string(i)));
  ASSERT_GT(Held(srv, "busy", "kam1"), 10);
  const int by_b = b.Fill("b");
  // a took its calls since its last republish (the idle rule alone would
  // keep its unused units), but the node is full: the next republish keeps
  // no more than a new block would get there, none.
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  (void)a.router->Sweep();
  EXPECT_EQ(Held(srv, "busy", "kam1"), 10) << "a's unused units went back at once";
  EXPECT_EQ(10 + by_b + b.Fill("bb"), kCap) << "and b reaches exactly the capacity";
}

TEST(ClusterBlocks, AKilledProxysBlockLapsesWithItsLease) {
  APPROUTE_NEED_REDIS();
  RedisServer srv;
  ASSERT_TRUE(srv.Start());
  constexpr int kCap = 40;
  int ready[2];
  ASSERT_EQ(pipe(ready), 0);
  const std::string other = BlockYaml(srv, "lapse", "kam2", kCap, 16);
  const pid_t child = fork();
  if (child == 0) {
    close(ready[0]);
    Proxy b(other, "lapse2");
    const char c = b.router != nullptr && b.Route("held") ? 'y' : 'n';
    (void)!write(ready[1], &c, 1);
    for (int i = 0; i < 600; ++i) pause();  // until SIGKILL
    _exit(0);
  }
  close(ready[1]);
  char routed = 0;
  ASSERT_EQ(read(ready[0], &routed, 1), 1);
  close(ready[0]);
  ASSERT_EQ(routed, 'y');
  const int64_t b_held = Held(srv, "lapse", "kam2");
  EXPECT_GT(b_held, 1) << "one call and a block";
  Proxy a(BlockYaml(srv, "lapse", "kam1", kCap, 16), "lapse1");
  ASSERT_NE(a.router, nullptr);
  int placed = a.Fill("a");
  EXPECT_EQ(placed, kCap - b_held) << "b's whole block counts while its lease runs";
  kill(child, SIGKILL);
  int st = 0;
  waitpid(child, &st, 0);
  // Its lease lapses: its call and its block count for nothing.
  EXPECT_TRUE(SweepUntil(*a.router, internal::ClusterPlacement::kLeaseMs + 3000,
                         [&] { return a.Route("after" + std::to_string(placed)); }));
  placed += 1 + a.Fill("late");
  EXPECT_EQ(placed, kCap) << "then a reaches the whole capacity";
}

TEST(ClusterBlocks, ARedisRestartedEmptyHoldsTheLiveSessionsAgain) {
  APPROUTE_NEED_REDIS();
  RedisServer srv;
  ASSERT_TRUE(srv.Start());
  constexpr int kCap = 30;
  Proxy a(BlockYaml(srv, "empty", "kam1", kCap, 16), "empty");
  ASSERT_NE(a.router, nullptr);
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(a.Route("c" + std::to_string(i)));
  ASSERT_GT(Held(srv, "empty", "kam1"), 4);
  ASSERT_TRUE(srv.KillAndRestartEmpty());
  // The republish writes the live sessions, never the lost block unchecked.
  EXPECT_TRUE(SweepUntil(*a.router, 4000, [&] { return Held(srv, "empty", "kam1") == 4; }))
      << Held(srv, "empty", "kam1");
  EXPECT_EQ(4 + a.Fill("d"), kCap) << "then blocks are taken again, checked, up to the capacity";
  EXPECT_EQ(Held(srv, "empty"), kCap);
}

TEST(ClusterBlocks, AKeyedCallInsideABlockIsCountedOnce) {
  APPROUTE_NEED_REDIS();
  RedisServer srv;
  ASSERT_TRUE(srv.Start());
  constexpr int kCap = 40;
  Proxy a(BlockYaml(srv, "keyed", "kam1", kCap, 16), "keyed");
  ASSERT_NE(a.router, nullptr);
  ASSERT_TRUE(a.Route("plain0"));
  const int64_t held = Held(srv, "keyed", "kam1");
  ASSERT_GT(held, 3);
  // Keyed calls keep their script (the claim), which counts a unit only
  // beyond what this proxy already holds.
  ASSERT_TRUE(a.Route("k0", "conf", "room0"));
  ASSERT_TRUE(a.Route("k1", "conf", "room1"));
  EXPECT_EQ(Held(srv, "keyed", "kam1"), held) << "the keyed calls' units were in the block";
  int placed = 3;
  while (placed < 2 * kCap && a.Route("k" + std::to_string(placed), "conf", "room" + std::to_string(placed))) ++placed;
  EXPECT_EQ(placed, kCap) << "keyed and plain calls fill exactly the capacity";
  EXPECT_EQ(Held(srv, "keyed", "kam1"), kCap);
}

TEST(ClusterBlocks, DuringAnOutageTheBlockIsPartOfTheOutageShare) {
  APPROUTE_NEED_REDIS();
  RedisServer srv;
  ASSERT_TRUE(srv.Start());
  constexpr int kCap = 100;  // outage_headroom 10%: 10 places over the one proxy seen
  Proxy a(BlockYaml(srv, "outage", "kam1", kCap, 16), "outage");
  ASSERT_NE(a.router, nullptr);
  ASSERT_TRUE(a.Route("c0"));
  (void)a.router->Sweep();
  const int64_t held = Held(srv, "outage", "kam1");
  ASSERT_GT(held, 1);
  srv.Pause();
  const int placed = a.Fill("o");
  srv.Resume();
  EXPECT_EQ(1 + placed, held + 10) << "the share Redis counted (the block included) plus the headroom";
  EXPECT_GT(a.router->Cluster().outage_refusals, 0);
}

TEST(ClusterBlocks, AnAppOfTwoResourcesHasABlockOfEach) {
  APPROUTE_NEED_REDIS();
  RedisServer srv;
  ASSERT_TRUE(srv.Start());
  // 50 calls but 30 channels: a session of `both` takes one of each.
  auto yaml = [&](const std::string& proxy) {
    return "cluster: {redis: \"" + srv.url() + "\", name: two, proxy: " + proxy +
           ", timeout_ms: 200, reserve_block: 16}\n"
           "nodes:\n  - {id: ast1, uri: \"sip:10.0.0.1:5060\", capacity: {calls: 50, channels: 30}}\n"
           "apps:\n  both: {strategy: random, resource: [calls, channels]}\n";
  };
  Proxy a(yaml("kam1"), "two1");
  Proxy b(yaml("kam2"), "two2");
  ASSERT_NE(a.router, nullptr);
  ASSERT_NE(b.router, nullptr);
  int placed = 0;
  for (int i = 0; i < 10; ++i) placed += a.Route("a" + std::to_string(i), "both") ? 1 : 0;
  EXPECT_EQ(placed, 10);
  EXPECT_GT(Held(srv, "two", "kam1", "channels"), 10) << "a block of channels";
  EXPECT_GT(Held(srv, "two", "kam1", "calls"), 10) << "and one of calls";
  for (int i = 0; i < 100; ++i) placed += b.Route("b" + std::to_string(i), "both") ? 1 : 0;
  EXPECT_LT(placed, 30) << "a's unused channels still count";
  // a's idle blocks go back; b then reaches exactly the channels' capacity.
  EXPECT_TRUE(SweepUntil(*a.router, 4000, [&] { return Held(srv, "two", "kam1", "channels") == 10; }));
  for (int i = 100; i < 200; ++i) placed += b.Route("b" + std::to_string(i), "both") ? 1 : 0;
  EXPECT_EQ(placed, 30) << "the scarcer resource bounds the sessions, over both proxies";
  EXPECT_EQ(Held(srv, "two", "", "channels"), 30);
  EXPECT_LE(Held(srv, "two", "", "calls"), 50);
}

}  // namespace
}  // namespace approute
