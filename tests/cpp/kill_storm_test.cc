// The kill storm: worker processes route, retry and end calls on one shared
// segment while the test SIGKILLs one of them at random every few
// milliseconds and starts another. Afterwards, once every call any worker may
// have placed is ended, every count must be back to zero, both tables empty,
// and a fresh process must route promptly.
//
// Each worker writes a call id to its log *before* routing it, so the test
// knows every call that may have been placed. The number of kills is
// APPROUTE_KILLS (default 300).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "approute/router.h"
#include "test_util.h"

namespace approute {
namespace {

constexpr int kWorkers = 4;
constexpr int kNodes = 8;

std::string StormYaml() {
  std::string y = "state: {max_sessions: 4096, max_affinities: 4096}\nnodes:\n";
  for (int i = 0; i < kNodes; ++i) {
    y += "  - {id: n" + std::to_string(i) + ", uri: \"sip:10.0.0." + std::to_string(i + 1) +
         ":5060\", pool: media, capacity: {conference: 40}}\n";
  }
  y += R"(apps:
  conference:
    pool: media
    strategy: least_loaded
    resource: conference
    affinity: {grace: 0}
    retry: {codes: [503, 486], full_codes: [503], max_attempts: 3}
  plain:
    pool: media
    strategy: round_robin
)";
  return y;
}

int Kills() {
  const char* v = std::getenv("APPROUTE_KILLS");
  int n = v ? std::atoi(v) : 300;
  return n > 0 ? n : 300;
}

// A worker: route, sometimes retry, keep a few calls live, end the oldest.
[[noreturn]] void Work(Router& router, const std::string& log_path, uint64_t seed) {
  int fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
  if (fd < 0) _exit(3);
  std::mt19937_64 rng(seed);
  std::vector<std::string> live;
  for (uint64_t i = 0;; ++i) {
    std::string call = "w" + std::to_string(seed) + "-" + std::to_string(i);
    std::string line = call + "\n";
    if (write(fd, line.data(), line.size()) != static_cast<ssize_t>(line.size())) _exit(4);
    RouteRequest req;
    req.app = (rng() % 4 == 0) ? "plain" : "conference";
    req.call_id = call;
    req.key = "tenant" + std::to_string(rng() % 40) + ".example.com";
    absl::StatusOr<Decision> d = router.Route(req);
    if (!d.ok()) _exit(5);
    if (d->ok) {
      if (rng() % 5 == 0) (void)router.Retry(call, rng() % 2 ? 503 : 486);
      live.push_back(call);
    }
    if (live.size() > 6 || (!live.empty() && rng() % 3 == 0)) {
      (void)router.End(live.front());
      live.erase(live.begin());
    }
  }
}

class KillStormTest : public ::testing::Test {
 protected:
  void SetUp() override {
    name_ = "approute-killstorm-" + std::to_string(getpid());
    (void)Router::Unlink(name_);
    dir_ = ::testing::TempDir() + "killstorm-" + std::to_string(getpid());
    std::string cmd = "mkdir -p '" + dir_ + "'";
    ASSERT_EQ(std::system(cmd.c_str()), 0);
  }
  void TearDown() override {
    (void)Router::Unlink(name_);
    std::string cmd = "rm -rf '" + dir_ + "'";
    (void)std::system(cmd.c_str());
  }
  std::string name_, dir_;
};

TEST_F(KillStormTest, CountsReturnToZeroAfterRandomKills) {
  auto router = testing::MakeRouter(StormYaml(), RouterOptions{.shared = name_});
  ASSERT_NE(router, nullptr);
  const int kills = Kills();
  std::mt19937_64 rng(12345);
  std::map<pid_t, std::string> workers;  // pid -> its log
  uint64_t next_seed = 1;
  std::vector<std::string> logs;
  auto spawn = [&]() {
    uint64_t seed = next_seed++;
    std::string log = dir_ + "/w" + std::to_string(seed) + ".log";
    logs.push_back(log);
    pid_t pid = fork();
    if (pid == 0) Work(*router, log, seed);  // the Kamailio way: the parent's router, inherited
    ASSERT_GT(pid, 0);
    workers[pid] = log;
  };
  for (int i = 0; i < kWorkers; ++i) spawn();
  int bad_exits = 0;
  for (int k = 0; k < kills; ++k) {
    std::this_thread::sleep_for(std::chrono::microseconds(1000 + rng() % 4000));
    auto it = workers.begin();
    std::advance(it, static_cast<long>(rng() % workers.size()));
    pid_t victim = it->first;
    kill(victim, SIGKILL);
    int status = 0;
    waitpid(victim, &status, 0);
    if (!(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)) ++bad_exits;  // it died by itself
    workers.erase(victim);
    spawn();
  }
  for (auto& [pid, log] : workers) {
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
  }
  workers.clear();
  EXPECT_EQ(bad_exits, 0) << "workers that exited on their own (a routing error) instead of being killed";

  // Every affinity key maps to one node: one claim per (app, key), and the
  // node of each claim is one its key's live sessions may use.
  std::map<std::string, int> claims;
  for (const AffinityInfo& a : router->Affinities()) {
    ++claims[a.app + "/" + a.key];
    EXPECT_FALSE(a.node_id.empty()) << a.key;
  }
  for (const auto& [key, n] : claims) EXPECT_EQ(n, 1) << key << " has " << n << " claims";
  EXPECT_FALSE(claims.empty()) << "no claim was live when the storm stopped";

  // End every call that may have been placed; most are gone already.
  int64_t calls = 0, ended = 0;
  for (const std::string& log : logs) {
    std::ifstream in(log);
    std::string call;
    while (std::getline(in, call)) {
      ++calls;
      if (router->End(call).ok()) ++ended;
    }
  }
  router->Sweep();
  RouterStats st = router->Stats();
  std::map<std::string, int64_t> left;
  int64_t total_left = 0;
  for (const NodeStatus& n : router->Nodes()) {
    for (const auto& [res, v] : n.sessions) {
      if (v != 0) left[n.spec.id + "/" + res] = v;
      total_left += v;
    }
  }
  std::string detail;
  for (const auto& [k, v] : left) detail += k + "=" + std::to_string(v) + " ";
  std::printf(
      "kill storm: %d kills, %lld calls logged, %lld ended afterwards, %lld recounts correcting %lld "
      "counts, counts left %lld\n",
      kills, static_cast<long long>(calls), static_cast<long long>(ended), static_cast<long long>(st.repairs),
      static_cast<long long>(st.repaired_counts), static_cast<long long>(total_left));
  EXPECT_GT(calls, kills) << "the workers barely routed anything";
  EXPECT_EQ(total_left, 0) << "counts no session record explains: " << detail;
  EXPECT_EQ(st.sessions, 0);
  EXPECT_EQ(st.affinities, 0);
  EXPECT_TRUE(router->Sessions().empty());
  EXPECT_TRUE(router->Affinities().empty());

  // A fresh process routes 1,000 calls promptly (no lock or table left unusable).
  pid_t fresh = fork();
  if (fresh == 0) {
    alarm(30);
    absl::StatusOr<std::unique_ptr<Router>> r = Router::Attach(name_);
    if (!r.ok()) _exit(2);
    for (int i = 0; i < 1000; ++i) {
      RouteRequest req{.app = "conference",
                       .call_id = "fresh-" + std::to_string(i),
                       .key = "tenant" + std::to_string(i % 40) + ".example.com"};
      absl::StatusOr<Decision> d = (*r)->Route(req);
      if (!d.ok() || !d->ok) _exit(3);
      if (!(*r)->End(req.call_id).ok()) _exit(4);
    }
    _exit(0);
  }
  int status = 0;
  waitpid(fresh, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status;
  EXPECT_EQ(router->Stats().sessions, 0);
}

}  // namespace
}  // namespace approute
