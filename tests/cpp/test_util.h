// Shared helpers of the GoogleTest suite.
#ifndef APPROUTE_TESTS_CPP_TEST_UTIL_H_
#define APPROUTE_TESTS_CPP_TEST_UTIL_H_

#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <string>

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

}  // namespace approute::testing

#endif  // APPROUTE_TESTS_CPP_TEST_UTIL_H_
