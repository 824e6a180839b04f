// Two proxies (two processes, each with its own shared segment and proxy id)
// route through one real redis-server: one node per key, capacity held over
// both, and a stopped Redis costs bounded latency while calls still route.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <map>
#include <optional>
#include <set>
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
using Clock = std::chrono::steady_clock;

std::string Yaml(const RedisServer& srv, const std::string& deployment, const std::string& proxy, int cap,
                 int timeout_ms = 200) {
  std::ostringstream y;
  y << "cluster: {redis: \"" << srv.url() << "\", name: " << deployment << ", proxy: " << proxy
    << ", timeout_ms: " << timeout_ms << "}\n"
    << "nodes:\n";
  for (int i = 1; i <= 4; ++i) {
    y << "  - {id: ast" << i << ", uri: \"sip:10.0.0." << i << ":5060\"";
    if (cap >= 0) y << ", capacity: {conference: " << cap << "}";
    y << "}\n";
  }
  y << "apps:\n"
    << "  conf: {strategy: random, resource: conference, affinity: {grace: 30}}\n"
    << "  plain: {strategy: random, resource: conference}\n";
  return y.str();
}

std::string SegmentName(const std::string& tag) { return "/approute-t11-" + std::to_string(getpid()) + "-" + tag; }

// Runs `body(router)` in a child process per proxy, all released at once;
// each child's output lines are returned per proxy. The children exit 0 unless
// the router cannot be built.
std::vector<std::vector<std::string>> RunProxies(
    const std::vector<std::string>& yamls,
    const std::function<void(Router&, int proxy, std::vector<std::string>* out)>& body) {
  int go[2];
  EXPECT_EQ(pipe(go), 0);
  std::vector<std::pair<pid_t, int>> kids;
  for (size_t i = 0; i < yamls.size(); ++i) {
    int out[2];
    EXPECT_EQ(pipe(out), 0);
    pid_t pid = fork();
    if (pid == 0) {
      close(go[1]);
      close(out[0]);
      std::string seg = SegmentName("p" + std::to_string(i));
      (void)Router::Unlink(seg);
      absl::StatusOr<std::unique_ptr<Router>> r = Router::FromYaml(yamls[i], RouterOptions{.shared = seg});
      char c;
      (void)!read(go[0], &c, 1);
      int rc = 2;
      if (r.ok()) {
        std::vector<std::string> lines;
        body(**r, static_cast<int>(i), &lines);
        std::string text;
        for (const std::string& l : lines) text += l + "\n";
        for (size_t off = 0; off < text.size();) {
          ssize_t w = write(out[1], text.data() + off, text.size() - off);
          if (w <= 0) break;
          off += static_cast<size_t>(w);
        }
        rc = 0;
      } else {
        std::string err = "ERROR " + std::string(r.status().message()) + "\n";
        (void)!write(out[1], err.data(), err.size());
      }
      r = absl::UnknownError("done");
      (void)Router::Unlink(seg);
      _exit(rc);
    }
    close(out[1]);
    kids.emplace_back(pid, out[0]);
  }
  close(go[0]);
  (void)!write(go[1], std::string(yamls.size(), 'g').data(), yamls.size());
  close(go[1]);
  std::vector<std::vector<std::string>> results;
  for (auto [pid, fd] : kids) {
    std::string all;
    char buf[4096];
    for (ssize_t n; (n = read(fd, buf, sizeof buf)) > 0;) all.append(buf, static_cast<size_t>(n));
    close(fd);
    int st = 0;
    waitpid(pid, &st, 0);
    EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << all;
    std::vector<std::string> lines;
    std::istringstream in(all);
    for (std::string l; std::getline(in, l);) lines.push_back(l);
    results.push_back(std::move(lines));
  }
  return results;
}

int64_t DeploymentSum(RedisServer& srv, const std::string& deployment, const std::string& node) {
  internal::RedisClient c(*internal::ParseRedisUrl(srv.url()), 1000);
  absl::StatusOr<internal::RedisValue> r =
      c.Command({"HVALS", internal::DeploymentPrefix(deployment) + "n:" + node + "|conference"});
  if (!r.ok()) return -1;
  int64_t sum = 0;
  for (const auto& v : r->elements) sum += std::stoll(v.str);
  return sum;
}

TEST(ClusterPlacement, TwoProxiesPutEachKeyOnOneNode) {
  APPROUTE_NEED_REDIS();
  RedisServer srv;
  ASSERT_TRUE(srv.Start());
  // Random strategy: without the shared claim, the two proxies would scatter
  // a key over several nodes.
  std::vector<std::string> yamls{Yaml(srv, "keys", "kam1", -1), Yaml(srv, "keys", "kam2", -1)};
  auto out = RunProxies(yamls, [](Router& r, int proxy, std::vector<std::string>* lines) {
    for (int i = 0; i < 300; ++i) {
      RouteRequest req{.app = "conf",
                       .call_id = "p" + std::to_string(proxy) + "-" + std::to_string(i),
                       .key = "room" + std::to_string(i % 40)};
      absl::StatusOr<Decision> d = r.Route(req);
      if (!d.ok() || !d->ok) {
        lines->push_back("FAIL " + req.call_id);
        continue;
      }
      lines->push_back(req.key + " " + d->node_id);
      if (i % 3 == 0) (void)r.End(req.call_id);  // some calls end: claims live on through the others
    }
  });
  std::map<std::string, std::set<std::string>> nodes_of;
  size_t routed = 0;
  for (const auto& lines : out) {
    for (const std::string& l : lines) {
      ASSERT_NE(l.substr(0, 4), "FAIL") << l;
      size_t sp = l.find(' ');
      nodes_of[l.substr(0, sp)].insert(l.substr(sp + 1));
      ++routed;
    }
  }
  EXPECT_EQ(routed, 600u);
  EXPECT_EQ(nodes_of.size(), 40u);
  std::set<std::string> used;
  for (const auto& [key, nodes] : nodes_of) {
    EXPECT_EQ(nodes.size(), 1u) << key << " went to " << nodes.size() << " nodes";
    used.insert(nodes.begin(), nodes.end());
  }
  EXPECT_GT(used.size(), 1u) << "the random strategy should spread keys";
}

TEST(ClusterPlacement, AKeyLongerThanItsSlotIsOneClaimForBothProxies) {
  APPROUTE_NEED_REDIS();
  RedisServer srv;
  ASSERT_TRUE(srv.Start());
  // 300-byte keys that differ only at the end: each proxy derives the same
  // stored form (prefix and XXH3-128 digest), so Redis holds one claim per key.
  const std::string tenant(290, 't');
  std::vector<std::string> yamls{Yaml(srv, "long", "kam1", -1), Yaml(srv, "long", "kam2", -1)};
  auto out = RunProxies(yamls, [&](Router& r, int proxy, std::vector<std::string>* lines) {
    for (int i = 0; i < 60; ++i) {
      const std::string tail = "/" + std::to_string(1000 + i % 6);
      RouteRequest req{.app = "conf",
                       .call_id = tenant + "-call-" + std::to_string(proxy) + "-" + std::to_string(i),
                       .key = tenant + tail};
      absl::StatusOr<Decision> d = r.Route(req);
      lines->push_back(d.ok() && d->ok ? tail + " " + d->node_id : "FAIL");
      if (d.ok() && d->ok && i % 2 == 0) lines->push_back(r.End(req.call_id).ok() ? "ended" : "FAIL end");
    }
  });
  std::map<std::string, std::set<std::string>> nodes_of;
  for (const auto& lines : out) {
    for (const std::string& l : lines) {
      ASSERT_EQ(l.find("FAIL"), std::string::npos) << l;
      if (l == "ended") continue;
      const size_t sp = l.find(' ');
      nodes_of[l.substr(0, sp)].insert(l.substr(sp + 1));
    }
  }
  ASSERT_EQ(nodes_of.size(), 6u);
  for (const auto& [key, nodes] : nodes_of) EXPECT_EQ(nodes.size(), 1u) << key << " split over proxies";
  internal::RedisClient c(*internal::ParseRedisUrl(srv.url()), 1000);
  absl::StatusOr<internal::RedisValue> keys = c.Command({"KEYS", internal::DeploymentPrefix("long") + "c:*"});
  ASSERT_TRUE(keys.ok()) << keys.status();
  EXPECT_EQ(keys->elements.size(), 6u);
  for (const auto& k : keys->elements) EXPECT_NE(k.str.find("~xxh3:"), std::string::npos) << k.str;
}

TEST(ClusterPlacement, CapacityHoldsOverBothProxies) {
  APPROUTE_NEED_REDIS();
  RedisServer srv;
  ASSERT_TRUE(srv.Start());
  constexpr int kCap = 5;  // 4 nodes: 20 sessions for the whole deployment
  std::vector<std::string> yamls{Yaml(srv, "cap", "kam1", kCap), Yaml(srv, "cap", "kam2", kCap)};
  auto out = RunProxies(yamls, [](Router& r, int proxy, std::vector<std::string>* lines) {
    std::vector<std::string> mine;
    for (int i = 0; i < 40; ++i) {
      RouteRequest req{.app = "plain", .call_id = "p" + std::to_string(proxy) + "-" + std::to_string(i)};
      absl::StatusOr<Decision> d = r.Route(req);
      if (d.ok() && d->ok) {
        lines->push_back("ok " + d->node_id);
        mine.push_back(req.call_id);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(3));  // the two proxies interleave
    }
    // Both proxies hold their calls until the other is done routing.
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    for (const std::string& c : mine) (void)r.End(c);
    // The ends' shares go out with the next republish, at most a second later.
    std::this_thread::sleep_for(std::chrono::milliseconds(1100));
    (void)r.Sweep();
  });
  std::map<std::string, int> per_node;
  int total = 0, of_first = static_cast<int>(out[0].size());
  for (const auto& lines : out) {
    for (const std::string& l : lines) {
      ASSERT_EQ(l.substr(0, 3), "ok ") << l;
      ++per_node[l.substr(3)];
      ++total;
    }
  }
  EXPECT_EQ(total, 4 * kCap) << "every unit used once, never more: 80 attempts for 20 places";
  for (const auto& [node, n] : per_node) EXPECT_LE(n, kCap) << node;
  EXPECT_GT(of_first, 0);
  EXPECT_LT(of_first, 4 * kCap) << "one proxy took every place: the other must have been refused by the count";
  for (int i = 1; i <= 4; ++i)
    EXPECT_EQ(DeploymentSum(srv, "cap", "ast" + std::to_string(i)), 0) << "ended calls leave no share";
}

TEST(ClusterPlacement, StoppedRedisAddsBoundedLatencyAndCallsStillRoute) {
  APPROUTE_NEED_REDIS();
  RedisServer srv;
  ASSERT_TRUE(srv.Start());
  constexpr int kTimeoutMs = 20;
  const std::string seg = SegmentName("stop");
  (void)Router::Unlink(seg);
  absl::StatusOr<std::unique_ptr<Router>> r =
      Router::FromYaml(Yaml(srv, "stop", "kam1", -1, kTimeoutMs), RouterOptions{.shared = seg});
  ASSERT_TRUE(r.ok()) << r.status();
  auto route = [&](int i, int64_t* us) {
    RouteRequest req{.app = "conf", .call_id = "c" + std::to_string(i), .key = "room" + std::to_string(i % 10)};
    Clock::time_point t0 = Clock::now();
    absl::StatusOr<Decision> d = (*r)->Route(req);
    bool ok = d.ok() && d->ok && (*r)->End(req.call_id).ok();
    *us = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t0).count();
    return ok;
  };
  int64_t us = 0;
  for (int i = 0; i < 50; ++i) ASSERT_TRUE(route(i, &us));
  EXPECT_EQ((*r)->Cluster().mode, "cluster");
  EXPECT_EQ((*r)->Cluster().degraded_placements, 0);

  srv.Pause();
  int64_t worst = 0, slow = 0;
  Clock::time_point t0 = Clock::now();
  for (int i = 50; i < 250; ++i) {
    ASSERT_TRUE(route(i, &us)) << "call " << i << " not routed while Redis is stopped";
    worst = std::max(worst, us);
    if (us > kTimeoutMs * 1000 / 2) ++slow;
  }
  int64_t took_ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count();
  ClusterStatus st = (*r)->Cluster();
  srv.Resume();
  EXPECT_EQ(st.mode, "degraded");
  EXPECT_GT(st.degraded_placements, 0);
  // One call pays the timeout, then the breaker is open; one trial per
  // second after that. Bound: a call never waits more than one timeout (10x
  // margin for a loaded machine), and only a handful of calls are slow.
  EXPECT_LT(worst, int64_t{10} * kTimeoutMs * 1000);
  EXPECT_LE(slow, 2 + took_ms / 1000 * 2) << "calls slowed by the stopped server";
  std::printf("stopped redis: %lld calls in %lld ms, worst %lld us, %lld slow, degraded %lld\n", 200LL,
              static_cast<long long>(took_ms), static_cast<long long>(worst), static_cast<long long>(slow),
              static_cast<long long>(st.degraded_placements));

  // Back: once the breaker's period is over the proxy is in the cluster again.
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  for (int i = 250; i < 260; ++i) ASSERT_TRUE(route(i, &us));
  st = (*r)->Cluster();
  EXPECT_EQ(st.mode, "cluster");
  EXPECT_EQ(st.proxies, std::vector<std::string>{"kam1"});
  EXPECT_GT(st.rtt_p50_us, 0);
  std::printf("redis round trip: p50 <= %lld us, p99 <= %lld us\n", static_cast<long long>(st.rtt_p50_us),
              static_cast<long long>(st.rtt_p99_us));
  r = absl::UnknownError("done");
  (void)Router::Unlink(seg);
}

int64_t DeploymentTotal(RedisServer& srv, const std::string& deployment) {
  int64_t t = 0;
  for (int i = 1; i <= 4; ++i) {
    int64_t s = DeploymentSum(srv, deployment, "ast" + std::to_string(i));
    if (s < 0) return -1;
    t += s;
  }
  return t;
}

struct OneProxy {
  std::string seg;
  std::unique_ptr<Router> router;
  OneProxy(const std::string& yaml, const std::string& tag) : seg(SegmentName(tag)) {
    (void)Router::Unlink(seg);
    absl::StatusOr<std::unique_ptr<Router>> r = Router::FromYaml(yaml, RouterOptions{.shared = seg});
    EXPECT_TRUE(r.ok()) << r.status();
    if (r.ok()) router = *std::move(r);
  }
  ~OneProxy() {
    router.reset();
    (void)Router::Unlink(seg);
  }
  bool Route(const std::string& call_id, const std::string& app = "plain") {
    absl::StatusOr<Decision> d = router->Route(RouteRequest{.app = app, .call_id = call_id});
    return d.ok() && d->ok;
  }
};

// Polls `cond` up to `ms`, calling the router's sweep (Maintain) meanwhile.
template <typename Cond>
bool Eventually(Router& r, int64_t ms, Cond cond) {
  for (int64_t waited = 0; waited <= ms; waited += 100) {
    (void)r.Sweep();
    if (cond()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

TEST(ClusterPlacement, SharesReconcileAfterAnOutage) {
  APPROUTE_NEED_REDIS();
  RedisServer srv;
  ASSERT_TRUE(srv.Start());
  OneProxy p(Yaml(srv, "heal", "kam1", 100, 20), "heal");
  ASSERT_NE(p.router, nullptr);
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(p.Route("a" + std::to_string(i)));
  EXPECT_EQ(DeploymentTotal(srv, "heal"), 10);
  srv.Pause();
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(p.Route("b" + std::to_string(i)));  // on local state
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(p.router->End("a" + std::to_string(i)).ok());
  srv.Resume();
  // The one command that timed out still runs once the server resumes (the
  // share of that moment, 11): harmless, since shares are absolute and the
  // next republish overwrites it. Nothing else of the outage reached Redis.
  int64_t seen = DeploymentTotal(srv, "heal");
  EXPECT_TRUE(seen == 10 || seen == 11) << seen;
  ASSERT_EQ(p.router->Stats().sessions, 15);
  // Absolute shares republished: the count is the live sessions, not 10 + replayed changes.
  EXPECT_TRUE(Eventually(*p.router, 3000, [&] { return DeploymentTotal(srv, "heal") == 15; }))
      << DeploymentTotal(srv, "heal");
  EXPECT_GT(p.router->Cluster().degraded_placements, 0);
  // Idempotent: more republishing (1.5 s of sweeps) changes nothing.
  for (int i = 0; i < 15; ++i) {
    (void)p.router->Sweep();
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(DeploymentTotal(srv, "heal"), 15);
}

TEST(ClusterPlacement, RedisRestartedEmptyIsRefilled) {
  APPROUTE_NEED_REDIS();
  RedisServer srv;
  ASSERT_TRUE(srv.Start());
  OneProxy p(Yaml(srv, "empty", "kam1", 100, 50), "empty");
  ASSERT_NE(p.router, nullptr);
  for (int i = 0; i < 8; ++i) ASSERT_TRUE(p.Route("c" + std::to_string(i)));
  ASSERT_EQ(DeploymentTotal(srv, "empty"), 8);
  ASSERT_TRUE(srv.KillAndRestartEmpty());  // kill -9, no persistence: everything is gone
  ASSERT_EQ(DeploymentTotal(srv, "empty"), 0);
  EXPECT_TRUE(Eventually(*p.router, 4000, [&] { return DeploymentTotal(srv, "empty") == 8; }))
      << DeploymentTotal(srv, "empty");
  EXPECT_EQ(p.router->Cluster().mode, "cluster");
}

TEST(ClusterPlacement, ScriptFlushCostsOneReloadNotAnOutage) {
  APPROUTE_NEED_REDIS();
  RedisServer srv;
  ASSERT_TRUE(srv.Start());
  OneProxy p(Yaml(srv, "flush", "kam1", 100), "flush");  // a capacity: every reservation runs a script
  ASSERT_NE(p.router, nullptr);
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(p.Route("d" + std::to_string(i), "conf"));
  internal::RedisClient admin(*internal::ParseRedisUrl(srv.url()), 1000);
  ASSERT_TRUE(admin.Command({"SCRIPT", "FLUSH"}).ok());
  for (int i = 5; i < 10; ++i) ASSERT_TRUE(p.Route("d" + std::to_string(i), "conf"));
  ClusterStatus st = p.router->Cluster();
  EXPECT_EQ(st.degraded_placements, 0);
  EXPECT_EQ(st.failures, 0);
  EXPECT_EQ(DeploymentTotal(srv, "flush"), 10);
}

TEST(ClusterPlacement, AKilledProxysShareLapsesWithItsLease) {
  APPROUTE_NEED_REDIS();
  RedisServer srv;
  ASSERT_TRUE(srv.Start());
  // 4 nodes of capacity 1: the other proxy takes every place, then is killed.
  int ready[2];
  ASSERT_EQ(pipe(ready), 0);
  const std::string other_yaml = Yaml(srv, "lease", "kam2", 1);
  pid_t child = fork();
  if (child == 0) {
    close(ready[0]);
    OneProxy other(other_yaml, "lease2");
    int taken = 0;
    for (int i = 0; i < 4; ++i) taken += other.Route("x" + std::to_string(i)) ? 1 : 0;
    char c = static_cast<char>('0' + taken);
    (void)!write(ready[1], &c, 1);
    for (int i = 0; i < 600; ++i) pause();  // until SIGKILL
    _exit(0);
  }
  close(ready[1]);
  char taken = 0;
  ASSERT_EQ(read(ready[0], &taken, 1), 1);
  close(ready[0]);
  EXPECT_EQ(taken, '4');
  OneProxy p(Yaml(srv, "lease", "kam1", 1), "lease1");
  ASSERT_NE(p.router, nullptr);
  EXPECT_FALSE(p.Route("y0")) << "every place is held by the other proxy";
  kill(child, SIGKILL);
  int st = 0;
  waitpid(child, &st, 0);
  Clock::time_point t0 = Clock::now();
  int n = 0;
  EXPECT_TRUE(Eventually(*p.router, internal::ClusterPlacement::kLeaseMs + 3000,
                         [&] { return p.Route("y" + std::to_string(++n)); }));
  int64_t waited = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count();
  EXPECT_LE(waited, internal::ClusterPlacement::kLeaseMs + 3000);
  std::printf("a killed proxy's share lapsed after %lld ms (lease %lld ms)\n", static_cast<long long>(waited),
              static_cast<long long>(internal::ClusterPlacement::kLeaseMs));
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(p.Route("z" + std::to_string(i)));
  EXPECT_FALSE(p.Route("z9")) << "capacity still holds: 4 places";
}

TEST(ClusterPlacement, AnAttachedOperatorToolSeesTheCluster) {
  APPROUTE_NEED_REDIS();
  RedisServer srv;
  ASSERT_TRUE(srv.Start());
  OneProxy p(Yaml(srv, "ops", "kam1", -1), "ops");
  ASSERT_NE(p.router, nullptr);
  ASSERT_TRUE(p.Route("e1"));
  absl::StatusOr<std::unique_ptr<Router>> tool = Router::Attach(p.seg);
  ASSERT_TRUE(tool.ok()) << tool.status();
  ClusterStatus st = (*tool)->Cluster();
  EXPECT_EQ(st.mode, "cluster");
  EXPECT_EQ(st.name, "ops");
  EXPECT_EQ(st.proxy, "kam1");
  EXPECT_EQ(st.proxies, std::vector<std::string>{"kam1"});
  EXPECT_GT(st.round_trips, 0) << "the host's figures live in the shared region";
  EXPECT_GT(st.last_sync_ms, 0);
}

// Route+end through Redis against this host alone: every cluster placement
// makes its round trips (reserve, claim, release, drop), and the figures are
// printed for docs/cluster.md.
TEST(ClusterPlacement, RouteAndEndFiguresAgainstLocal) {
  APPROUTE_NEED_REDIS();
  RedisServer srv;
  ASSERT_TRUE(srv.Start());
  auto measure = [](Router& r, const char* app, int n, std::vector<int64_t>* us) {
    for (int i = 0; i < n; ++i) {
      RouteRequest req{.app = app, .call_id = "f" + std::to_string(i), .key = "k" + std::to_string(i % 100)};
      Clock::time_point t0 = Clock::now();
      absl::StatusOr<Decision> d = r.Route(req);
      bool ok = d.ok() && d->ok && r.End(req.call_id).ok();
      us->push_back(std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t0).count());
      if (!ok) return false;
    }
    return true;
  };
  auto q = [](std::vector<int64_t> v, double p) {
    std::sort(v.begin(), v.end());
    return v[static_cast<size_t>(p * static_cast<double>(v.size() - 1))];
  };
  std::string yaml = Yaml(srv, "bench", "kam1", -1);
  OneProxy cluster(yaml, "bench");
  ASSERT_NE(cluster.router, nullptr);
  std::string local_yaml = yaml.substr(yaml.find('\n') + 1);  // the same without cluster:
  absl::StatusOr<std::unique_ptr<Router>> local = Router::FromYaml(local_yaml);
  ASSERT_TRUE(local.ok()) << local.status();
  constexpr int kCalls = 2000;
  for (const char* app : {"plain", "conf"}) {
    std::vector<int64_t> c_us, l_us;
    int64_t trips0 = cluster.router->Cluster().round_trips;
    ASSERT_TRUE(measure(*cluster.router, app, kCalls, &c_us));
    ASSERT_TRUE(measure(**local, app, kCalls, &l_us));
    int64_t trips = cluster.router->Cluster().round_trips - trips0;
    if (std::string(app) == "conf") {
      // 100 keys over the calls: nearly every call joins a known key with
      // one script (claim and reservation), and, as the key's only session,
      // ends with one (share and claim, the grace started).
      EXPECT_GE(trips, int64_t{2} * kCalls) << "a placement and a key's last end each go to Redis";
      EXPECT_LT(trips, int64_t{5} * kCalls / 2) << "a known key costs 2 round trips";
    } else {
      // Nodes without a capacity: nothing to check in the deployment; the
      // shares go out with the once-a-second republish.
      EXPECT_LT(trips, int64_t{kCalls} / 10) << "no round trip per call for a node without a capacity";
    }
    EXPECT_EQ(cluster.router->Cluster().degraded_placements, 0);
    std::printf(
        "route+end %s: cluster p50 %lld us p99 %lld us (%.1f round trips/call), local p50 %lld us p99 %lld us\n", app,
        static_cast<long long>(q(c_us, 0.5)), static_cast<long long>(q(c_us, 0.99)),
        static_cast<double>(trips) / kCalls, static_cast<long long>(q(l_us, 0.5)),
        static_cast<long long>(q(l_us, 0.99)));
  }
}

TEST(ClusterPlacement, ADrainOnOneProxyHoldsOnTheOther) {
  APPROUTE_NEED_REDIS();
  RedisServer srv;
  ASSERT_TRUE(srv.Start());
  OneProxy p1(Yaml(srv, "drain", "kam1", -1), "drain1");
  OneProxy p2(Yaml(srv, "drain", "kam2", -1), "drain2");
  ASSERT_NE(p1.router, nullptr);
  ASSERT_NE(p2.router, nullptr);
  ASSERT_TRUE(p1.router->SetState("ast1", AdminState::kDraining).ok());
  ASSERT_TRUE(p1.router->SetState("ast2", AdminState::kDisabled).ok());
  auto state_at = [](Router& r, const char* id) {
    absl::StatusOr<NodeStatus> n = r.Node(id);
    return n.ok() ? n->spec.state : AdminState::kActive;
  };
  EXPECT_TRUE(Eventually(*p2.router, 3000, [&] {
    return state_at(*p2.router, "ast1") == AdminState::kDraining &&
           state_at(*p2.router, "ast2") == AdminState::kDisabled;
  }));
  EXPECT_EQ(state_at(*p2.router, "ast3"), AdminState::kActive);
  for (int i = 0; i < 50; ++i) {
    absl::StatusOr<Decision> d = p2.router->Route(RouteRequest{.app = "plain", .call_id = "g" + std::to_string(i)});
    ASSERT_TRUE(d.ok() && d->ok);
    EXPECT_TRUE(d->node_id == "ast3" || d->node_id == "ast4") << d->node_id;
  }
  // And back, from the other proxy.
  ASSERT_TRUE(p2.router->SetState("ast1", AdminState::kActive).ok());
  EXPECT_TRUE(Eventually(*p1.router, 3000, [&] { return state_at(*p1.router, "ast1") == AdminState::kActive; }));
  EXPECT_EQ(state_at(*p1.router, "ast2"), AdminState::kDisabled);
}

TEST(ClusterPlacement, NodeSessionsAreTheDeployments) {
  APPROUTE_NEED_REDIS();
  RedisServer srv;
  ASSERT_TRUE(srv.Start());
  OneProxy p1(Yaml(srv, "views", "kam1", 100), "views1");
  OneProxy p2(Yaml(srv, "views", "kam2", 100), "views2");
  ASSERT_NE(p1.router, nullptr);
  ASSERT_NE(p2.router, nullptr);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(p1.Route("h" + std::to_string(i)));
  for (int i = 3; i < 5; ++i) ASSERT_TRUE(p2.Route("h" + std::to_string(i)));
  auto total = [](Router& r) {
    int64_t t = 0;
    for (const NodeStatus& n : r.Nodes()) t += n.sessions.at("conference");
    return t;
  };
  EXPECT_EQ(total(*p1.router), 5);
  EXPECT_EQ(total(*p2.router), 5);
  EXPECT_EQ(p1.router->Stats().sessions, 3) << "the session table stays this proxy's";
  int64_t by_node = 0;
  for (int i = 1; i <= 4; ++i) {
    absl::StatusOr<NodeStatus> n = p2.router->Node("ast" + std::to_string(i));
    ASSERT_TRUE(n.ok());
    EXPECT_EQ(n->sessions.at("conference"), DeploymentSum(srv, "views", "ast" + std::to_string(i)));
    by_node += n->sessions.at("conference");
  }
  EXPECT_EQ(by_node, 5);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(p1.router->End("h" + std::to_string(i)).ok());
  // The ends reach the deployment with p1's next republish (its sweep).
  EXPECT_TRUE(Eventually(*p1.router, 3000, [&] { return total(*p2.router) == 2; })) << total(*p2.router);
  srv.Pause();  // Redis out: this host's own counts
  EXPECT_EQ(total(*p2.router), 2);
  EXPECT_EQ(total(*p1.router), 0);
  srv.Resume();
}

// While Redis is out, each proxy keeps to the share it held at the last sync
// plus its part of the headroom (cluster.outage_headroom: 40% of 10 over 2
// proxies = 2 calls per node), however many calls it is offered.
TEST(ClusterPlacement, DuringAnOutageAProxyKeepsToItsShareAndTheHeadroom) {
  APPROUTE_NEED_REDIS();
  RedisServer srv;
  ASSERT_TRUE(srv.Start());
  constexpr int kCap = 10, kHeadroom = 2;
  auto yaml = [&](const std::string& proxy) {
    std::string y = Yaml(srv, "outage", proxy, kCap, 20);
    y.replace(y.find("timeout_ms: 20}"), 15, "timeout_ms: 20, outage_headroom: 40}");
    return y;
  };
  OneProxy p1(yaml("kam1"), "out1");
  OneProxy p2(yaml("kam2"), "out2");
  ASSERT_NE(p1.router, nullptr);
  ASSERT_NE(p2.router, nullptr);
  std::map<std::string, int> before;
  auto route = [](Router& r, const std::string& call_id) {
    absl::StatusOr<Decision> d = r.Route(RouteRequest{.app = "plain", .call_id = call_id});
    return d.ok() && d->ok ? d->node_id : std::string();
  };
  for (int i = 0; i < 12; ++i) {
    std::string node = route(*p1.router, "a" + std::to_string(i));
    ASSERT_FALSE(node.empty());
    ++before[node];
  }
  for (int i = 0; i < 8; ++i) ASSERT_FALSE(route(*p2.router, "b" + std::to_string(i)).empty());
  // Both republish: each has seen two proxies.
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  (void)p1.router->Sweep();
  (void)p2.router->Sweep();

  srv.Pause();
  std::map<std::string, int> during;
  int routed = 0;
  for (int i = 0; i < 40; ++i) {
    std::string node = route(*p1.router, "c" + std::to_string(i));
    if (node.empty()) continue;
    ++during[node];
    ++routed;
  }
  ClusterStatus st = p1.router->Cluster();
  srv.Resume();
  int expected = 0;
  for (int i = 1; i <= 4; ++i) {
    const std::string id = "ast" + std::to_string(i);
    const int allowed = std::min(kCap, before[id] + kHeadroom);
    expected += allowed - before[id];
    EXPECT_LE(before[id] + during[id], allowed) << id << ": past its share plus the headroom";
  }
  EXPECT_EQ(routed, expected) << "the headroom is there to be used";
  EXPECT_LT(routed, 40 - 12) << "without the bound kam1 could fill every node";
  EXPECT_EQ(st.degraded_placements, routed);
  EXPECT_GT(st.outage_refusals, 0);
  std::printf("outage: kam1 held %d, took %d more of 40 offered (headroom %d per node), refused %lld\n", 12, routed,
              kHeadroom, static_cast<long long>(st.outage_refusals));
  // Back: the counts are the live sessions of both proxies again.
  EXPECT_TRUE(Eventually(*p1.router, 3000, [&] { return DeploymentTotal(srv, "outage") == 12 + 8 + routed; }))
      << DeploymentTotal(srv, "outage");
}

// ---- nodes by status report, for the whole deployment ----

constexpr char kSecret[] = "a-secret-of-16-or-more-characters";

// Yaml() plus status reports from loopback and an app on the reported pool.
std::string ReportYaml(const RedisServer& srv, const std::string& deployment, const std::string& proxy) {
  return Yaml(srv, deployment, proxy, -1) +
         "  media: {pool: media, strategy: random, resource: conference}\n"
         "status:\n"
         "  allow_sources: [\"127.0.0.0/8\"]\n"
         "  allow_uris: [\"127.0.0.0/8\"]\n"
         "  keys: {media: {k1: \"" +
         kSecret +
         "\"}}\n"
         "  max_expires: 600\n";
}

int64_t NowSeconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

ReportResult Report(Router& r, const std::string& node, const std::string& body, int64_t expires,
                    const std::string& if_match = "") {
  ReportRequest req{.body = body,
                    .expires = expires,
                    .source = "127.0.0.1",
                    .auth = SignReport(body, "k1", kSecret, NowSeconds(), node, if_match, expires),
                    .if_match = if_match};
  return r.ApplyReport(req);
}

std::string JoinBody(const std::string& node, int seq, int cap) {
  return "{\"node\": \"" + node +
         "\", \"uri\": \"sip:127.0.0.1:5070\", \"pool\": \"media\", \"seq\": " + std::to_string(seq) +
         ", \"capacity\": {\"conference\": " + std::to_string(cap) + "}, \"load\": {\"cpu\": 0.25}}";
}

std::optional<NodeStatus> Find(Router& r, const std::string& id) {
  absl::StatusOr<NodeStatus> n = r.Node(id);
  if (!n.ok()) return std::nullopt;
  return *std::move(n);
}

std::string RouteMedia(Router& r, const std::string& call_id) {
  absl::StatusOr<Decision> d = r.Route(RouteRequest{.app = "media", .call_id = call_id});
  return d.ok() && d->ok ? d->node_id : "";
}

// Two proxies of one deployment that accept status reports, on one server.
struct ReportingPair {
  RedisServer srv;
  const bool started = srv.Start();
  OneProxy p1, p2;
  explicit ReportingPair(const std::string& deployment)
      : p1(ReportYaml(srv, deployment, "kam1"), deployment + "1"),
        p2(ReportYaml(srv, deployment, "kam2"), deployment + "2") {}
  bool ok() const { return started && p1.router != nullptr && p2.router != nullptr; }
};

// This host's claim names one node, the deployment's another (another proxy
// claimed the key meanwhile): the deployment's wins, even on the one-script
// path for a known key.
TEST(ClusterPlacement, TheDeploymentsClaimWinsOverThisHostsCopy) {
  APPROUTE_NEED_REDIS();
  ReportingPair pair("moved");  // kam1 alone routes here
  ASSERT_TRUE(pair.ok());
  OneProxy& p = pair.p1;
  RedisServer& srv = pair.srv;
  absl::StatusOr<Decision> first = p.router->Route(RouteRequest{.app = "conf", .call_id = "k1", .key = "room"});
  ASSERT_TRUE(first.ok() && first->ok);
  const std::string other = first->node_id == "ast1" ? "ast2" : "ast1";
  internal::RedisClient c(*internal::ParseRedisUrl(srv.url()), 1000);
  ASSERT_TRUE(c.Command({"HSET", internal::DeploymentPrefix("moved") + "c:conf|room", "node", other}).ok());
  for (int i = 2; i <= 4; ++i) {
    absl::StatusOr<Decision> d =
        p.router->Route(RouteRequest{.app = "conf", .call_id = "k" + std::to_string(i), .key = "room"});
    ASSERT_TRUE(d.ok() && d->ok);
    EXPECT_EQ(d->node_id, other) << "call " << i << " followed this host's stale claim";
  }
  EXPECT_EQ(DeploymentTotal(srv, "moved"), 4) << "every call's unit counted once";
}

// A new key's call is reserved and claimed in one round trip (kReserveClaim),
// a known key's in one (kJoinReserve), each end in one (kEnd); a key the
// other proxy placed is followed from this proxy's first call, with this
// proxy's hold on the claim registered.
TEST(ClusterPlacement, ANewKeyCostsOneRoundTripAndAKeyPlacedElsewhereIsFollowed) {
  APPROUTE_NEED_REDIS();
  ReportingPair pair("trips");
  ASSERT_TRUE(pair.ok());
  Router& a = *pair.p1.router;
  Router& b = *pair.p2.router;
  auto route = [](Router& r, const std::string& call, const std::string& key) {
    absl::StatusOr<Decision> d = r.Route(RouteRequest{.app = "conf", .call_id = call, .key = key});
    EXPECT_TRUE(d.ok() && d->ok) << call;
    return d.ok() ? *d : Decision{};
  };
  // Round trips of one step, the fewest of five tries (the sweep's periodic
  // lease renewal may fall into one of them).
  // Cluster() itself asks Redis for the live proxies: its own round trip
  // is taken off.
  const int64_t c0 = a.Cluster().round_trips, lookup = a.Cluster().round_trips - c0;
  ASSERT_GE(lookup, 1);
  auto fewest = [&](const std::function<void(int)>& step) {
    int64_t best = INT64_MAX;
    for (int i = 0; i < 5; ++i) {
      const int64_t t0 = a.Cluster().round_trips;
      step(i);
      best = std::min(best, a.Cluster().round_trips - t0 - lookup);
    }
    return best;
  };
  Decision first = route(a, "n1", "room-1");
  EXPECT_EQ(first.reason, "strategy");
  EXPECT_EQ(fewest([&](int i) { route(a, "new" + std::to_string(i), "key-" + std::to_string(i)); }), 1)
      << "a new key: one round trip";
  EXPECT_EQ(fewest([&](int i) {
              Decision d = route(a, "known" + std::to_string(i), "room-1");
              EXPECT_EQ(d.node_id, first.node_id);
              EXPECT_EQ(d.reason, "affinity");
            }),
            1)
      << "a known key: one round trip";
  EXPECT_EQ(fewest([&](int i) { ASSERT_TRUE(a.End("known" + std::to_string(i)).ok()); }), 0)
      << "an end while the key still has a session here: no round trip";
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(a.End("new" + std::to_string(i)).ok());
  // The other proxy has no claim of its own for room-1: its first call finds
  // the deployment's in the reservation's round trip and follows it.
  for (int i = 0; i < 6; ++i) {
    Decision d = route(b, "b" + std::to_string(i), "room-1");
    EXPECT_EQ(d.node_id, first.node_id) << "call " << i;
    EXPECT_EQ(d.reason, "affinity") << "call " << i;
  }
  internal::RedisClient c(*internal::ParseRedisUrl(pair.srv.url()), 1000);
  absl::StatusOr<internal::RedisValue> held =
      c.Command({"HGET", internal::DeploymentPrefix("trips") + "c:conf|room-1", "r:kam2"});
  ASSERT_TRUE(held.ok());
  EXPECT_EQ(held->str, "6") << "kam2's sessions on the claim are registered";
  // a's ends of known keys reach the deployment with its next republish.
  EXPECT_TRUE(Eventually(a, 3000, [&] { return DeploymentTotal(pair.srv, "trips") == 7; }))
      << DeploymentTotal(pair.srv, "trips") << ": every call's unit counted once, none on a node left behind";
  for (int i = 0; i < 6; ++i) ASSERT_TRUE(b.End("b" + std::to_string(i)).ok());
  ASSERT_TRUE(a.End("n1").ok());
  EXPECT_TRUE(Eventually(a, 3000, [&] { return DeploymentTotal(pair.srv, "trips") == 0; }))
      << DeploymentTotal(pair.srv, "trips");
}

// An end costs no round trip unless it is its key's last session here: the
// share goes out with the next republish (the node looks fuller meanwhile),
// the last end drops this proxy's hold on the claim and starts its grace at
// once, and the other proxy gets the freed capacity after the republish.
TEST(ClusterPlacement, AnEndCostsNoRoundTripAndAKeysLastEndDropsItsClaimAtOnce) {
  APPROUTE_NEED_REDIS();
  RedisServer srv;
  ASSERT_TRUE(srv.Start());
  constexpr int kCap = 2;  // 4 nodes: 8 places in the deployment
  OneProxy p1(Yaml(srv, "cheap", "kam1", kCap), "cheap1");
  OneProxy p2(Yaml(srv, "cheap", "kam2", kCap), "cheap2");
  ASSERT_NE(p1.router, nullptr);
  ASSERT_NE(p2.router, nullptr);
  Router& a = *p1.router;
  Router& b = *p2.router;
  // Round trips of a step, the fewest of several (a's periodic republish
  // may fall into one); Cluster()'s own lookup taken off.
  const int64_t c0 = a.Cluster().round_trips, lookup = a.Cluster().round_trips - c0;
  auto trips = [&](const std::function<void()>& step) {
    const int64_t t0 = a.Cluster().round_trips;
    step();
    return a.Cluster().round_trips - t0 - lookup;
  };
  // Four keys with two calls each fill the deployment at kam1.
  for (int k = 0; k < 4; ++k) {
    for (int c = 0; c < 2; ++c) {
      const std::string call = "k" + std::to_string(k) + "-" + std::to_string(c);
      absl::StatusOr<Decision> d =
          a.Route(RouteRequest{.app = "conf", .call_id = call, .key = "room" + std::to_string(k)});
      ASSERT_TRUE(d.ok() && d->ok) << call;
    }
  }
  EXPECT_EQ(DeploymentTotal(srv, "cheap"), 8);
  absl::StatusOr<Decision> full = b.Route(RouteRequest{.app = "plain", .call_id = "b-full"});
  ASSERT_TRUE(full.ok());
  EXPECT_FALSE(full->ok) << "every place is kam1's";
  // The first call of each key ends: the key still has a session here.
  int64_t fewest = INT64_MAX;
  for (int k = 0; k < 4; ++k) {
    fewest = std::min(fewest, trips([&] { ASSERT_TRUE(a.End("k" + std::to_string(k) + "-0").ok()); }));
  }
  EXPECT_EQ(fewest, 0) << "an end while its key has another session here: no round trip";
  // The key's last end: this proxy's hold dropped and the grace started in
  // Redis at once (no sweep in between).
  internal::RedisClient c(*internal::ParseRedisUrl(srv.url()), 1000);
  const std::string claim0 = internal::DeploymentPrefix("cheap") + "c:conf|room0";
  absl::StatusOr<internal::RedisValue> held = c.Command({"HGET", claim0, "r:kam1"});
  ASSERT_TRUE(held.ok());
  EXPECT_FALSE(held->str.empty() || held->str == "0") << "kam1 still holds room0: its hold stays";
  fewest = INT64_MAX;
  for (int k = 0; k < 4; ++k) {
    fewest = std::min(fewest, trips([&] { ASSERT_TRUE(a.End("k" + std::to_string(k) + "-1").ok()); }));
    const std::string claim = internal::DeploymentPrefix("cheap") + "c:conf|room" + std::to_string(k);
    absl::StatusOr<internal::RedisValue> hold = c.Command({"HGET", claim, "r:kam1"});
    ASSERT_TRUE(hold.ok());
    EXPECT_TRUE(hold->str.empty()) << "room" << k << ": the last end drops kam1's hold at once";
    absl::StatusOr<internal::RedisValue> ttl = c.Command({"PTTL", claim});
    ASSERT_TRUE(ttl.ok());
    EXPECT_GT(ttl->integer, 0) << "room" << k << ": the grace (30 s) runs from the last end";
    EXPECT_LE(ttl->integer, 30000);
  }
  EXPECT_EQ(fewest, 1) << "a key's last end: one round trip (share and claim)";
  // Every call ended at kam1; the deployment count converges with kam1's
  // next republish, and kam2 then has the freed places.
  EXPECT_TRUE(Eventually(a, 3000, [&] { return DeploymentTotal(srv, "cheap") == 0; })) << DeploymentTotal(srv, "cheap");
  int placed = 0;
  for (int i = 0; i < 10; ++i) {
    absl::StatusOr<Decision> d = b.Route(RouteRequest{.app = "plain", .call_id = "b" + std::to_string(i)});
    if (d.ok() && d->ok) ++placed;
  }
  EXPECT_EQ(placed, 4 * kCap) << "kam2 sees every place freed, and no more";
  EXPECT_EQ(DeploymentTotal(srv, "cheap"), 4 * kCap);
}

TEST(ClusterPlacement, ANodeThatJoinsByReportAtOneProxyJoinsAll) {
  APPROUTE_NEED_REDIS();
  ReportingPair pair("members");
  ASSERT_TRUE(pair.ok());
  OneProxy &p1 = pair.p1, &p2 = pair.p2;
  EXPECT_EQ(RouteMedia(*p2.router, "none"), "") << "no media node yet";

  ReportResult join = Report(*p1.router, "dyn1", JoinBody("dyn1", 1, 2), 60);
  ASSERT_EQ(join.code, 200) << join.reason;
  ASSERT_TRUE(Eventually(*p2.router, 3000, [&] { return Find(*p2.router, "dyn1").has_value(); }))
      << "a node that joined at kam1 is unknown at kam2";
  std::optional<NodeStatus> at2 = Find(*p2.router, "dyn1"), at1 = Find(*p1.router, "dyn1");
  ASSERT_TRUE(at1 && at2);
  EXPECT_EQ(at2->origin, "report");
  EXPECT_EQ(at2->spec.uri, at1->spec.uri);
  EXPECT_EQ(at2->spec.pool, "media");
  EXPECT_EQ(at2->spec.capacity, (std::map<std::string, int64_t>{{"conference", 2}}));
  EXPECT_EQ(at2->lease_expires_ms, at1->lease_expires_ms) << "the lease is the deployment's";
  EXPECT_EQ(at2->load.at("cpu"), 0.25);

  // A proxy started later has it before its first call.
  {
    OneProxy p3(ReportYaml(pair.srv, "members", "kam3"), "mem3");
    ASSERT_NE(p3.router, nullptr);
    EXPECT_TRUE(Find(*p3.router, "dyn1").has_value()) << "not merged at start";
  }

  // Calls at either proxy reach it, and its capacity holds over both.
  EXPECT_EQ(RouteMedia(*p2.router, "m1"), "dyn1");
  EXPECT_EQ(RouteMedia(*p1.router, "m2"), "dyn1");
  EXPECT_EQ(RouteMedia(*p2.router, "m3"), "") << "capacity 2 over both proxies";
  ASSERT_TRUE(p1.router->End("m2").ok());

  // The same report again at the other proxy is a replay there too.
  EXPECT_EQ(Report(*p2.router, "dyn1", JoinBody("dyn1", 1, 2), 60).code, 403);

  // An update (seq 2, capacity 3) at kam1 reaches kam2.
  ReportResult update = Report(*p1.router, "dyn1", JoinBody("dyn1", 2, 3), 60);
  ASSERT_EQ(update.code, 200) << update.reason;
  EXPECT_TRUE(
      Eventually(*p2.router, 3000, [&] { return Find(*p2.router, "dyn1")->spec.capacity.at("conference") == 3; }));

  // A refresh at kam2 with the entity tag kam1 gave: accepted, and the new
  // lease and entity tag reach kam1.
  ReportResult refresh = Report(*p2.router, "dyn1", "", 120, update.etag);
  ASSERT_EQ(refresh.code, 200) << refresh.reason;
  const int64_t lease = Find(*p2.router, "dyn1")->lease_expires_ms;
  EXPECT_GT(lease, at1->lease_expires_ms);
  EXPECT_TRUE(Eventually(*p1.router, 3000, [&] { return Find(*p1.router, "dyn1")->lease_expires_ms == lease; }))
      << "the refresh at kam2 did not renew the lease at kam1";

  // A leave at kam1 with the entity tag kam2 issued: drains it everywhere,
  // and it goes once its calls end.
  ReportResult bye = Report(*p1.router, "dyn1", "", 0, refresh.etag);
  ASSERT_EQ(bye.code, 200) << bye.reason;
  int tries = 0;
  EXPECT_TRUE(Eventually(*p2.router, 3000, [&] {
    const std::string call = "after-leave" + std::to_string(++tries);
    const bool refused = RouteMedia(*p2.router, call).empty();
    (void)p2.router->End(call);
    return refused;
  })) << "kam2 still sends new calls to a node that left at kam1";
  EXPECT_TRUE(Find(*p2.router, "dyn1").has_value()) << "its call m1 is still up at kam2";
  ASSERT_TRUE(p2.router->End("m1").ok());
  EXPECT_TRUE(Eventually(*p2.router, 3000, [&] { return !Find(*p2.router, "dyn1").has_value(); }));
  EXPECT_TRUE(Eventually(*p1.router, 3000, [&] { return !Find(*p1.router, "dyn1").has_value(); }));
  for (int i = 0; i < 15; ++i) {  // more syncs: nothing brings it back
    (void)p1.router->Sweep();
    (void)p2.router->Sweep();
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_FALSE(Find(*p1.router, "dyn1").has_value()) << "a node that left came back from an older record";
  EXPECT_FALSE(Find(*p2.router, "dyn1").has_value()) << "a node that left came back from an older record";
}

TEST(ClusterPlacement, AReportedNodesLapsedLeaseEndsItForAll) {
  APPROUTE_NEED_REDIS();
  ReportingPair pair("lapse");
  ASSERT_TRUE(pair.ok());
  RedisServer& srv = pair.srv;
  OneProxy &p1 = pair.p1, &p2 = pair.p2;
  ASSERT_EQ(Report(*p1.router, "dyn2", JoinBody("dyn2", 1, 5), 2).code, 200);  // a 2 s lease, never renewed
  ASSERT_TRUE(Eventually(*p2.router, 3000, [&] { return RouteMedia(*p2.router, "l1") == "dyn2"; }));
  ASSERT_TRUE(p2.router->End("l1").ok());
  EXPECT_TRUE(Eventually(*p2.router, 4000, [&] { return !Find(*p2.router, "dyn2").has_value(); }))
      << "kam2 kept a node whose lease lapsed at kam1";
  EXPECT_EQ(RouteMedia(*p2.router, "l2"), "");
  // Redis restarted empty: the proxies that still have a node refill its record.
  ASSERT_EQ(Report(*p1.router, "dyn3", JoinBody("dyn3", 1, 5), 60).code, 200);
  ASSERT_TRUE(Eventually(*p2.router, 3000, [&] { return Find(*p2.router, "dyn3").has_value(); }));
  ASSERT_TRUE(srv.KillAndRestartEmpty());
  internal::RedisClient c(*internal::ParseRedisUrl(srv.url()), 1000);
  const std::string members = internal::DeploymentPrefix("lapse") + "members";
  EXPECT_TRUE(Eventually(*p2.router, 4000, [&] {
    absl::StatusOr<internal::RedisValue> r = c.Command({"HEXISTS", members, "dyn3"});
    return r.ok() && r->integer == 1;
  })) << "the record was not refilled after Redis lost it";
  OneProxy p3(ReportYaml(srv, "lapse", "kam3"), "lapse3");
  ASSERT_NE(p3.router, nullptr);
  EXPECT_TRUE(Find(*p3.router, "dyn3").has_value());
  EXPECT_FALSE(Find(*p3.router, "dyn2").has_value()) << "a lapsed node does not join";
}

// A router without a named segment (a private region, as in Python's
// Router.from_yaml without shared=) routes through Redis as well.
TEST(ClusterPlacement, APrivateRegionRoutesThroughRedis) {
  APPROUTE_NEED_REDIS();
  RedisServer srv;
  ASSERT_TRUE(srv.Start());
  absl::StatusOr<std::unique_ptr<Router>> r = Router::FromYaml(Yaml(srv, "private", "kam1", -1));
  ASSERT_TRUE(r.ok()) << r.status();
  for (const char* app : {"plain", "conf"}) {
    for (int i = 0; i < 20; ++i) {
      const std::string call = std::string(app) + std::to_string(i);
      absl::StatusOr<Decision> d = (*r)->Route(RouteRequest{.app = app, .call_id = call, .key = "k"});
      ASSERT_TRUE(d.ok() && d->ok) << app << " " << i;
      ASSERT_TRUE((*r)->End(call).ok());
    }
  }
  EXPECT_EQ(DeploymentTotal(srv, "private"), 0);
  EXPECT_GT((*r)->Cluster().round_trips, 40);
}

TEST(ClusterPlacement, ReloadCannotChangeTheClusterSection) {
  // The connection opens on first use: no server is needed to build or reload.
  const std::string a =
      "cluster: {redis: \"redis://127.0.0.1:1\", name: one, proxy: kam1}\nnodes: [{id: n, uri: \"sip:10.0.0.1\"}]\n";
  absl::StatusOr<std::unique_ptr<Router>> r = Router::FromYaml(a);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE((*r)->Reload(a, "router.yaml").ok());
  std::string b = a;
  b.replace(b.find("name: one"), 9, "name: two");
  absl::Status s = (*r)->Reload(b, "router.yaml");
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_EQ(s.message(), "router.yaml: cluster: cannot change on reload (restart the proxy to change it)");
  absl::StatusOr<std::unique_ptr<Router>> plain = Router::FromYaml("nodes: [{id: n, uri: \"sip:10.0.0.1\"}]\n");
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ((*plain)->Reload(a, "router.yaml").code(), absl::StatusCode::kFailedPrecondition);
}

TEST(ClusterPlacement, WithoutClusterTheModeIsLocal) {
  absl::StatusOr<std::unique_ptr<Router>> r = Router::FromYaml("nodes: [{id: a, uri: \"sip:10.0.0.1\"}]\n");
  ASSERT_TRUE(r.ok()) << r.status();
  ClusterStatus st = (*r)->Cluster();
  EXPECT_EQ(st.mode, "local");
  EXPECT_EQ(st.round_trips, 0);
}

// A node's own count (state/usage.h) over the deployment's: what a node
// reports runs approute's calls from every proxy, so the report's base is
// the deployment's count, and the calls left are shared by the proxies.
TEST(ClusterPlacement, ANodesReportedUsageLeavesOnlyTheRemainingCallsOverBothProxies) {
  APPROUTE_NEED_REDIS();
  RedisServer srv;
  ASSERT_TRUE(srv.Start());
  constexpr int kCap = 10;
  OneProxy p1(Yaml(srv, "usage", "kam1", kCap), "usage1");
  OneProxy p2(Yaml(srv, "usage", "kam2", kCap), "usage2");
  ASSERT_NE(p1.router, nullptr);
  ASSERT_NE(p2.router, nullptr);
  for (int i = 0; i < 8; ++i) ASSERT_TRUE(p1.Route("before" + std::to_string(i)));
  // Each node runs approute's calls (all placed by kam1) and one of its own;
  // the report reaches kam2 only.
  int left = 0;
  for (int i = 1; i <= 4; ++i) {
    const std::string id = "ast" + std::to_string(i);
    absl::StatusOr<NodeStatus> n = p2.router->Node(id);
    ASSERT_TRUE(n.ok());
    const int64_t ours = n->sessions["conference"];  // the deployment's count
    ASSERT_TRUE(p2.router->ReportLoad(id, {{"conference", static_cast<double>(ours + 1)}}).ok());
    left += kCap - static_cast<int>(ours) - 1;
  }
  ASSERT_EQ(left, 4 * kCap - 8 - 4);
  int placed = 0;
  for (int i = 0; i < 60; ++i) placed += p2.Route("after" + std::to_string(i)) ? 1 : 0;
  EXPECT_EQ(placed, left) << "with this proxy's own count as the base (0) it would take fewer; without the "
                             "reports, more";
  for (int i = 1; i <= 4; ++i) {
    const std::string id = "ast" + std::to_string(i);
    EXPECT_EQ(DeploymentSum(srv, "usage", id), kCap - 1) << id << ": full by its report";
  }
}

}  // namespace
}  // namespace approute
