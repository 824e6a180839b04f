// Redis Sentinel, with real processes on loopback (sentinel_group.h): the
// address form and its errors, the client finding the primary through the
// sentinels and following a failover, and two proxies routing calls while
// the primary is killed (or failed over by SENTINEL FAILOVER): calls keep
// routing, both proxies follow the promoted replica, and the counts and
// claims converge.
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <deque>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "approute/config.h"
#include "approute/router.h"
#include "placement/redis_client.h"
#include "sentinel_group.h"
#include "util/redis_url.h"

namespace approute {
namespace {

using internal::ParseRedisUrl;
using internal::RedisClient;
using internal::RedisUrl;
using internal::RedisValue;
using testing::SentinelGroup;
using testing::SentinelProcess;
using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

TEST(SentinelUrl, ParsesHostsNameDbAndCredentials) {
  absl::StatusOr<RedisUrl> u = ParseRedisUrl("redis+sentinel://:p%40ss@10.0.0.1:26379,[::1]:26380,s3/mymaster/2");
  ASSERT_TRUE(u.ok()) << u.status();
  EXPECT_TRUE(u->sentinel());
  ASSERT_EQ(u->sentinels.size(), 3u);
  EXPECT_EQ(u->sentinels[0].host, "10.0.0.1");
  EXPECT_EQ(u->sentinels[0].port, 26379);
  EXPECT_EQ(u->sentinels[1].host, "::1");
  EXPECT_EQ(u->sentinels[1].port, 26380);
  EXPECT_EQ(u->sentinels[2].host, "s3");
  EXPECT_EQ(u->sentinels[2].port, 26379) << "the sentinel port by default";
  EXPECT_EQ(u->master_name, "mymaster");
  EXPECT_EQ(u->password, "p@ss");
  EXPECT_EQ(u->db, 2);
  u = ParseRedisUrl("redis+sentinel://app:pw@h1/prod-primary");
  ASSERT_TRUE(u.ok()) << u.status();
  EXPECT_EQ(u->user, "app");
  EXPECT_EQ(u->db, 0);
  EXPECT_EQ(u->master_name, "prod-primary");
  EXPECT_FALSE(ParseRedisUrl("redis://h:6379")->sentinel());
}

TEST(SentinelUrl, ErrorsSayWhatIsWrong) {
  const std::vector<std::pair<std::string, std::string>> bad{
      {"redis+sentinel:///mymaster", "no sentinel host"},
      {"redis+sentinel://", "no sentinel host"},
      {"redis+sentinel://h1:26379,,h3/mymaster", "sentinel 2: no host"},
      {"redis+sentinel://h1:26379,/mymaster", "sentinel 2: no host"},
      {"redis+sentinel://h1:99999/mymaster", "sentinel 1: port \"99999\" is not a number 1..65535"},
      {"redis+sentinel://h1,h2:x/mymaster", "sentinel 2: port \"x\""},
      {"redis+sentinel://h1:26379", "no primary name"},
      {"redis+sentinel://h1:26379/", "no primary name"},
      {"redis+sentinel://h1:26379/my*master", "primary name \"my*master\""},
      {"redis+sentinel://h1/mymaster/x", "database \"x\""},
      {"redis+sentinel://user@h1/mymaster", "credentials"},
      {"rediss+sentinel://h1/mymaster", "expected redis://"},
  };
  for (const auto& [url, want] : bad) {
    absl::StatusOr<RedisUrl> u = ParseRedisUrl(url);
    ASSERT_FALSE(u.ok()) << url;
    EXPECT_NE(u.status().message().find(want), std::string::npos) << url << " -> " << u.status().message();
  }
}

TEST(SentinelConfig, SentinelPasswordBelongsToASentinelAddress) {
  const std::string base = "nodes: [{id: a, uri: \"sip:10.0.0.1\"}]\ncluster: {name: d, proxy: p, ";
  absl::StatusOr<Config> c = ParseConfig(base + "redis: \"redis+sentinel://h1,h2/mymaster\", sentinel_password: s}\n");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->cluster.sentinel_password, "s");
  c = ParseConfig(base + "redis: \"redis://h1\", sentinel_password: s}\n");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("cluster.sentinel_password"), std::string::npos) << c.status();
  EXPECT_NE(c.status().message().find("needs a redis+sentinel://"), std::string::npos) << c.status();
  c = ParseConfig(base + "redis: \"redis+sentinel://h1:0/mymaster\"}\n");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("sentinel 1: port \"0\""), std::string::npos) << c.status();
}

RedisUrl SentinelUrl(const std::string& url) {
  absl::StatusOr<RedisUrl> u = ParseRedisUrl(url);
  EXPECT_TRUE(u.ok()) << u.status();
  RedisUrl out = u.ok() ? *u : RedisUrl{};
  out.sentinel_password = testing::kSentinelPassword;
  return out;
}

TEST(SentinelClient, FindsThePrimaryNeverWritesToAReplicaAndFollowsAKill) {
  APPROUTE_NEED_REDIS();
  SentinelGroup g;
  ASSERT_EQ(g.Start(), "");
  const std::string primary = "127.0.0.1:" + std::to_string(g.primary().port());
  const std::string replica = "127.0.0.1:" + std::to_string(g.replica().port());

  // A dead sentinel first: refused at once, the next one is asked in the same call.
  const int dead = testing::FreeLoopbackPort();
  RedisClient c(SentinelUrl(g.Url("127.0.0.1:" + std::to_string(dead) + ",")), 500);
  absl::StatusOr<RedisValue> r = c.Command({"SET", "k", "1"});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(c.primary(), primary);
  EXPECT_EQ(c.primary_changes(), 0);
  EXPECT_EQ(c.connects(), 1);

  // The sentinels' password is theirs: a wrong one is refused by every sentinel.
  RedisUrl wrong = SentinelUrl(g.Url());
  wrong.sentinel_password = "nope";
  absl::StatusOr<RedisValue> w = RedisClient(wrong, 500).Command({"PING"});
  ASSERT_FALSE(w.ok());
  EXPECT_NE(w.status().message().find("no sentinel named the primary \"mymaster\""), std::string::npos) << w.status();
  // A name the sentinels do not know.
  RedisUrl unknown = SentinelUrl("redis+sentinel://:dpw@" + g.sentinel(0).addr() + "/nosuch");
  absl::StatusOr<RedisValue> n = RedisClient(unknown, 500).Command({"PING"});
  ASSERT_FALSE(n.ok());
  EXPECT_NE(n.status().message().find("knows no primary named \"nosuch\""), std::string::npos) << n.status();

  // A sentinel that names a replica (it watches the replica as "other"):
  // the client checks ROLE and writes nothing.
  {
    SentinelProcess stale(g.dir(), "other", g.replica().port(), 1);
    ASSERT_TRUE(stale.running());
    RedisClient to_replica(SentinelUrl("redis+sentinel://:dpw@" + stale.addr() + "/other"), 500);
    absl::StatusOr<RedisValue> s = to_replica.Command({"SET", "never", "1"});
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.status().code(), absl::StatusCode::kUnavailable);
    EXPECT_NE(s.status().message().find("is not a primary: ROLE slave"), std::string::npos) << s.status();
    EXPECT_EQ(to_replica.connection_pid(), 0) << "the connection to the replica is dropped";
  }

  // The write reached the replica; then the primary dies.
  ASSERT_TRUE(c.Command({"WAIT", "1", "2000"}).ok());
  g.primary().Kill();
  const Clock::time_point t0 = Clock::now();
  int failed = 0;
  absl::StatusOr<RedisValue> got = absl::UnavailableError("not yet");
  while (SecondsSince(t0) < 40) {
    got = c.Command({"GET", "k"});
    if (got.ok()) break;
    ++failed;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_TRUE(got.ok()) << "the client did not follow the failover within 40 s: " << got.status();
  const double follow_s = SecondsSince(t0);
  EXPECT_EQ(got->str, "1") << "the promoted replica has the acknowledged write";
  EXPECT_EQ(c.primary(), replica);
  EXPECT_EQ(c.primary_changes(), 1);
  EXPECT_GT(failed, 0) << "calls failed while no primary existed";
  ASSERT_TRUE(c.Command({"SET", "k", "2"}).ok()) << "the new primary takes writes";
  std::printf("[figures] client followed the kill in %.2f s (%d failed tries at 50 ms)\n", follow_s, failed);
}

// Two proxies of one deployment, each a Router with its own segment and a
// thread routing calls with affinity keys (a window of live calls, the
// oldest ended as new ones come).
class TwoProxies {
 public:
  static constexpr int kWindow = 24;
  static constexpr int kKeys = 40;

  TwoProxies(const std::string& url, const std::string& tag) {
    for (int i = 0; i < 2; ++i) {
      std::ostringstream y;
      y << "cluster: {redis: \"" << url << "\", sentinel_password: " << testing::kSentinelPassword << ", name: fo"
        << tag << ", proxy: kam" << i << ", timeout_ms: 300}\n"
        << "nodes:\n";
      for (int n = 1; n <= 4; ++n)
        y << "  - {id: ast" << n << ", uri: \"sip:10.0.0." << n << "\", capacity: {conference: 1000}}\n";
      y << "apps:\n  conf: {strategy: random, resource: conference, affinity: {grace: 30}}\n";
      seg_[i] = "/approute-sentinel-" + std::to_string(getpid()) + "-" + tag + std::to_string(i);
      (void)Router::Unlink(seg_[i]);
      absl::StatusOr<std::unique_ptr<Router>> r = Router::FromYaml(y.str(), RouterOptions{.shared = seg_[i]});
      EXPECT_TRUE(r.ok()) << r.status();
      if (r.ok()) p_[i].router = *std::move(r);
    }
  }
  ~TwoProxies() {
    Stop();
    for (int i = 0; i < 2; ++i) {
      p_[i].router.reset();
      (void)Router::Unlink(seg_[i]);
    }
  }
  bool ok() const { return p_[0].router && p_[1].router; }
  Router& router(int i) { return *p_[i].router; }

  void Start() {
    for (int i = 0; i < 2; ++i) p_[i].thread = std::thread([this, i] { Loop(i); });
  }
  // Holds the threads between calls (and waits until both hold).
  void Pause() {
    paused_.store(true);
    while (!p_[0].idle.load() || !p_[1].idle.load()) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  void Resume() { paused_.store(false); }
  void Stop() {
    stop_.store(true);
    for (auto& p : p_) {
      if (p.thread.joinable()) p.thread.join();
    }
  }
  int64_t routed() const { return p_[0].routed + p_[1].routed; }
  int64_t failed() const { return p_[0].failed + p_[1].failed; }

  // Live calls per node over both proxies (threads paused or stopped).
  std::map<std::string, int64_t> LivePerNode() const {
    std::map<std::string, int64_t> out;
    for (const auto& p : p_) {
      for (const Call& c : p.live) ++out[c.node];
    }
    return out;
  }
  // Nodes of each key's live calls over both proxies.
  std::map<std::string, std::set<std::string>> NodesPerKey() const {
    std::map<std::string, std::set<std::string>> out;
    for (const auto& p : p_) {
      for (const Call& c : p.live) out[c.key].insert(c.node);
    }
    return out;
  }
  // Every node's deployment count, asked at proxy `i`, equals its live calls.
  std::string CountsMismatch(int i) {
    std::map<std::string, int64_t> live = LivePerNode();
    std::string why;
    for (int n = 1; n <= 4; ++n) {
      const std::string id = "ast" + std::to_string(n);
      absl::StatusOr<NodeStatus> s = router(i).Node(id);
      if (!s.ok()) return id + ": " + std::string(s.status().message());
      const int64_t have = s->sessions["conference"];
      if (have != live[id]) why += id + " count " + std::to_string(have) + " live " + std::to_string(live[id]) + "; ";
    }
    return why;
  }

 private:
  struct Call {
    std::string id, key, node;
  };
  struct Proxy {
    std::unique_ptr<Router> router;
    std::thread thread;
    std::deque<Call> live;
    int64_t routed = 0, failed = 0;
    std::atomic<bool> idle{false};
  };

  void Loop(int i) {
    Proxy& p = p_[i];
    std::mt19937 rng(static_cast<unsigned>(i + 1));
    for (int64_t n = 0; !stop_.load();) {
      if (paused_.load()) {
        p.idle.store(true);
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
        continue;
      }
      p.idle.store(false);
      Call c{"kam" + std::to_string(i) + "-" + std::to_string(n++), "room" + std::to_string(rng() % kKeys), ""};
      absl::StatusOr<Decision> d = p.router->Route(RouteRequest{.app = "conf", .call_id = c.id, .key = c.key});
      if (d.ok() && d->ok) {
        c.node = d->node_id;
        (void)p.router->Confirm(c.id);
        p.live.push_back(std::move(c));
        ++p.routed;
      } else {
        ++p.failed;
      }
      if (p.live.size() > static_cast<size_t>(kWindow)) {
        (void)p.router->End(p.live.front().id);
        p.live.pop_front();
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(3));
    }
    p.idle.store(true);
  }

  std::string seg_[2];
  Proxy p_[2];
  std::atomic<bool> paused_{false}, stop_{false};
};

// The failover scenario; `kill`: SIGKILL the primary, else SENTINEL FAILOVER.
void FailoverWithTraffic(bool kill) {
  SentinelGroup g;
  ASSERT_EQ(g.Start(), "");
  const std::string replica = "127.0.0.1:" + std::to_string(g.replica().port());
  TwoProxies px(g.Url(), kill ? "k" : "f");
  ASSERT_TRUE(px.ok());
  px.Start();
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  const int64_t degraded0 = px.router(0).Cluster().degraded_placements + px.router(1).Cluster().degraded_placements;
  const int64_t routed0 = px.routed();
  ASSERT_GT(routed0, 0);

  const Clock::time_point t0 = Clock::now();
  if (kill) {
    g.primary().Kill();
  } else {
    ASSERT_TRUE(g.ForceFailover().ok());
  }
  // Both proxies follow the promoted replica while their calls keep routing.
  double followed[2] = {-1, -1};
  while (SecondsSince(t0) < 40 && (followed[0] < 0 || followed[1] < 0)) {
    for (int i = 0; i < 2; ++i) {
      ClusterStatus s = px.router(i).Cluster();
      if (followed[i] < 0 && s.primary == replica && s.mode == "cluster") followed[i] = SecondsSince(t0);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_GE(followed[0], 0) << "proxy 0 did not follow the failover within 40 s: " << px.router(0).Cluster().primary;
  ASSERT_GE(followed[1], 0) << "proxy 1 did not follow the failover within 40 s: " << px.router(1).Cluster().primary;
  EXPECT_EQ(g.NamedPrimaryPort(), g.replica().port());

  // Traffic held: each proxy's sweep (polled) republishes; the counts equal the live calls.
  px.Pause();
  const int64_t degraded =
      px.router(0).Cluster().degraded_placements + px.router(1).Cluster().degraded_placements - degraded0;
  double converged = -1;
  std::string why;
  while (SecondsSince(t0) < 60) {
    (void)px.router(0).Sweep();
    (void)px.router(1).Sweep();
    why = px.CountsMismatch(0) + px.CountsMismatch(1);
    if (why.empty()) {
      converged = SecondsSince(t0);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_GE(converged, 0) << "counts did not converge: " << why;

  // More traffic: the calls placed while no primary existed end, new ones
  // follow each key's one claim.
  px.Resume();
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));
  px.Stop();
  EXPECT_EQ(px.failed(), 0) << "every call was routed, with or without a primary";
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));  // past the refresh period
  (void)px.router(0).Sweep();
  (void)px.router(1).Sweep();
  EXPECT_EQ(px.CountsMismatch(0), "");
  EXPECT_EQ(px.CountsMismatch(1), "");
  for (const auto& [key, nodes] : px.NodesPerKey())
    EXPECT_EQ(nodes.size(), 1u) << key << " is live on " << nodes.size() << " nodes";
  if (kill) {
    EXPECT_GT(degraded, 0) << "calls routed on local state while no primary existed are counted";
  }
  std::printf(
      "[figures] %s: proxies followed in %.2f / %.2f s, %lld degraded placements, counts equal after %.2f s, "
      "%lld calls routed, %lld failed\n",
      kill ? "SIGKILL of the primary" : "SENTINEL FAILOVER", followed[0], followed[1], static_cast<long long>(degraded),
      converged, static_cast<long long>(px.routed()), static_cast<long long>(px.failed()));
}

TEST(SentinelFailover, TwoProxiesFollowAKilledPrimaryAndConverge) {
  APPROUTE_NEED_REDIS();
  FailoverWithTraffic(true);
}

TEST(SentinelFailover, TwoProxiesFollowASentinelFailoverAndConverge) {
  APPROUTE_NEED_REDIS();
  FailoverWithTraffic(false);
}

}  // namespace
}  // namespace approute
