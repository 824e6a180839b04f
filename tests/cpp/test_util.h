// Shared helpers of the GoogleTest suite.
#ifndef APPROUTE_TESTS_CPP_TEST_UTIL_H_
#define APPROUTE_TESTS_CPP_TEST_UTIL_H_

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "approute/router.h"

namespace approute::testing {

// A manual clock for expiry tests.
struct ManualClock {
  std::shared_ptr<std::atomic<int64_t>> ms = std::make_shared<std::atomic<int64_t>>(1'000'000);
  std::function<int64_t()> fn() const {
    auto p = ms;
    return [p] { return p->load(); };
  }
  void Advance(int64_t d) { ms->fetch_add(d); }
};

inline std::unique_ptr<Router> MakeRouter(const std::string& yaml, RouterOptions options = {}) {
  absl::StatusOr<std::unique_ptr<Router>> r = Router::FromYaml(yaml, std::move(options));
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? *std::move(r) : nullptr;
}

inline Decision MustRoute(Router& r, const std::string& app, const std::string& call_id, const std::string& key = "") {
  RouteRequest req;
  req.app = app;
  req.call_id = call_id;
  req.key = key;
  absl::StatusOr<Decision> d = r.Route(req);
  EXPECT_TRUE(d.ok()) << d.status();
  return d.ok() ? *d : Decision{};
}

inline int64_t Sessions(const Router& r, const std::string& node, const std::string& resource) {
  absl::StatusOr<NodeStatus> n = r.Node(node);
  EXPECT_TRUE(n.ok()) << n.status();
  if (!n.ok()) return -1;
  auto it = n->sessions.find(resource);
  return it == n->sessions.end() ? 0 : it->second;
}

// YAML for `n` nodes n0..n{n-1} in pool "media" with the given node extras and one app.
inline std::string PoolYaml(int n, const std::string& app_body, const std::string& node_extra = "",
                            const std::string& state = "") {
  std::string y = state.empty() ? "" : "state: " + state + "\n";
  y += "nodes:\n";
  for (int i = 0; i < n; ++i) {
    y += "  - {id: n" + std::to_string(i) + ", uri: \"sip:10.0.0." + std::to_string(i + 1) + ":5060\", pool: media" +
         (node_extra.empty() ? "" : ", " + node_extra) + "}\n";
  }
  y += "apps:\n  app:\n    pool: media\n" + app_body;
  return y;
}

// Forks `n` processes, released at the same moment; process i runs
// `body(i)` and exits with what it returns. True when every one exited 0.
inline bool RunForked(int n, const std::function<int(int)>& body) {
  int go[2];
  if (pipe(go) != 0) return false;
  std::vector<pid_t> pids;
  for (int i = 0; i < n; ++i) {
    pid_t pid = fork();
    if (pid == 0) {
      close(go[1]);
      char c;
      (void)!read(go[0], &c, 1);
      _exit(body(i));
    }
    pids.push_back(pid);
  }
  close(go[0]);
  (void)!write(go[1], std::string(static_cast<size_t>(n), 'g').data(), static_cast<size_t>(n));
  close(go[1]);
  bool ok = true;
  for (pid_t pid : pids) {
    int st = 0;
    waitpid(pid, &st, 0);
    ok = ok && WIFEXITED(st) && WEXITSTATUS(st) == 0;
  }
  return ok;
}

}  // namespace approute::testing

#endif  // APPROUTE_TESTS_CPP_TEST_UTIL_H_
