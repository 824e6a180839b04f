// The opt-in upkeep thread (RouterOptions::upkeep_interval_ms): a router
// that routes nothing keeps its cluster lease, Router::Cluster() warns when
// the lease is not being renewed, bad intervals are refused before anything
// is built, and a forked copy of the upkeep thread's owner neither joins
// nor aborts.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "approute/router.h"
#include "placement/redis_client.h"
#include "redis_server.h"
#include "util/ticker.h"

namespace approute {
namespace {

using testing::RedisServer;

std::string Yaml(const std::string& redis, const std::string& proxy) {
  std::string y = "nodes: [{id: a, uri: \"sip:10.0.0.1\", capacity: {calls: 5}}]\n";
  if (!redis.empty()) y += "cluster: {redis: \"" + redis + "\", name: upkeep, proxy: " + proxy + ", timeout_ms: 500}\n";
  return y;
}

// This proxy's lease deadline in the deployment (nullopt: none).
std::optional<double> Lease(RedisServer& srv, const std::string& proxy) {
  internal::RedisClient c(*internal::ParseRedisUrl(srv.url()), 1000);
  absl::StatusOr<internal::RedisValue> r =
      c.Command({"ZSCORE", internal::DeploymentPrefix("upkeep") + "proxies", proxy});
  if (!r.ok() || r->type != internal::RedisValue::Type::kString) return std::nullopt;
  return std::stod(r->str);
}

TEST(Upkeep, KeepsTheLeaseOfARouterThatRoutesNothing) {
  APPROUTE_NEED_REDIS();
  RedisServer srv;
  ASSERT_TRUE(srv.Start());
  absl::StatusOr<std::unique_ptr<Router>> kept =
      Router::FromYaml(Yaml(srv.url(), "kept"), RouterOptions{.upkeep_interval_ms = 50});
  absl::StatusOr<std::unique_ptr<Router>> idle = Router::FromYaml(Yaml(srv.url(), "idle"));
  ASSERT_TRUE(kept.ok()) << kept.status();
  ASSERT_TRUE(idle.ok()) << idle.status();
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  const std::optional<double> kept0 = Lease(srv, "kept"), idle0 = Lease(srv, "idle");
  ASSERT_TRUE(kept0.has_value()) << "the upkeep thread renewed the lease";
  // Past the refresh period (1 s): the upkeep thread renews the lease again, nothing renews the idle one.
  std::this_thread::sleep_for(std::chrono::milliseconds(1300));
  const std::optional<double> kept1 = Lease(srv, "kept"), idle1 = Lease(srv, "idle");
  ASSERT_TRUE(kept1.has_value());
  EXPECT_GT(*kept1, *kept0) << "renewed without a call or a sweep";
  EXPECT_EQ(idle1, idle0) << "without upkeep nothing runs by itself";

  ClusterStatus k = (*kept)->Cluster(), i = (*idle)->Cluster();
  EXPECT_EQ(k.warning, "");
  EXPECT_GE(k.lease_age_ms, 0);
  EXPECT_NE(i.warning.find("lease: not renewed yet"), std::string::npos) << i.warning;
  EXPECT_EQ(i.lease_age_ms, -1);
  EXPECT_EQ(k.primary, "127.0.0.1:" + std::to_string(srv.port()));
  (void)(*idle)->Sweep();
  EXPECT_EQ((*idle)->Cluster().warning, "") << "a sweep renews the lease";
}

TEST(Upkeep, ABadIntervalIsRefusedBeforeAnythingIsBuilt) {
  const std::string seg = "approute-upkeep-" + std::to_string(getpid());
  for (int64_t ms : {int64_t{-1}, int64_t{5}, int64_t{7501}}) {
    absl::StatusOr<std::unique_ptr<Router>> r =
        Router::FromYaml(Yaml("", ""), RouterOptions{.shared = seg, .upkeep_interval_ms = ms});
    ASSERT_FALSE(r.ok()) << ms;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(r.status().message().find("upkeep_interval_ms " + std::to_string(ms) + " is not 0 (off) or 10..7500"),
              std::string::npos)
        << r.status();
    EXPECT_FALSE(*Router::Unlink(seg)) << "no segment was created";
  }
}

// The thread does not exist in a forked child: destroying the child's copy
// of the ticker neither joins (it would wait forever) nor aborts. (A whole
// Router copied into a child may still hold a lock its upkeep thread had at
// the fork: hence "never in a process that forks afterwards".)
TEST(Upkeep, AForkedCopyOfTheTickerNeitherJoinsNorAborts) {
  std::atomic<int64_t> ticks{0};
  auto t = std::make_unique<internal::Ticker>(5, [&] { ticks.fetch_add(1); });
  while (ticks.load() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  pid_t pid = fork();
  if (pid == 0) {
    t.reset();
    _exit(0);
  }
  ASSERT_GT(pid, 0);
  int st = 0;
  ASSERT_EQ(waitpid(pid, &st, 0), pid);
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << "status " << st;
  const int64_t before = t->ticks();
  while (t->ticks() == before) std::this_thread::sleep_for(std::chrono::milliseconds(1));  // the parent's still ticks
  t.reset();                                                                               // stops and joins
}

}  // namespace
}  // namespace approute
