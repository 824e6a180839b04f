// route_calls: a small C++ tool on libapproute. It loads a router YAML file,
// routes a burst of conference calls from a few domains, bounces one with a
// 503, ends them all and prints every decision.
//
//   route_calls examples/kamailio/router.yaml [--shared NAME] [--upkeep] [--hold SECONDS]
//
// With `cluster:` in the YAML, a process like this one routes rarely, so
// nothing would renew its lease in the deployment between calls (its shares
// and claims stop counting 15 s after the last call or sweep). --upkeep
// turns on the router's upkeep thread (RouterOptions::upkeep_interval_ms),
// which sweeps every second; --hold keeps the process (and its calls'
// sessions) alive that long before ending the calls, and the cluster line
// printed at the end warns when the lease was about to lapse. Never turn
// upkeep on in a process that forks afterwards (Kamailio's main process).
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "approute/router.h"

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s ROUTER.yaml [--shared NAME] [--upkeep] [--hold SECONDS]\n", argv[0]);
    return 2;
  }
  approute::RouterOptions options;
  int hold_s = 0;
  for (int i = 2; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--shared" && i + 1 < argc) {
      options.shared = argv[++i];
    } else if (a == "--upkeep") {
      options.upkeep_interval_ms = 1000;  // a sweep a second: the lease (15 s) never comes near lapsing
    } else if (a == "--hold" && i + 1 < argc) {
      hold_s = std::atoi(argv[++i]);
    } else {
      std::fprintf(stderr, "unknown argument %s\n", a.c_str());
      return 2;
    }
  }
  absl::StatusOr<std::unique_ptr<approute::Router>> router = approute::Router::FromFile(argv[1], options);
  if (!router.ok()) {
    std::fprintf(stderr, "error: %s\n", std::string(router.status().message()).c_str());
    return 1;
  }
  const std::vector<std::string> domains = {"alpha.example.com", "beta.example.org", "gamma.example.net"};
  std::vector<std::string> calls;
  for (int i = 0; i < 9; ++i) {
    approute::RouteRequest req;
    req.app = "conference";
    req.call_id = "call-" + std::to_string(i);
    req.key = domains[i % domains.size()];
    absl::StatusOr<approute::Decision> d = (*router)->Route(req);
    if (!d.ok()) {
      std::fprintf(stderr, "error: %s\n", std::string(d.status().message()).c_str());
      return 1;
    }
    std::printf("%-8s %-20s -> %-6s %-26s %s\n", req.call_id.c_str(), req.key.c_str(), d->ok ? d->node_id.c_str() : "-",
                d->ok ? d->uri.c_str() : d->detail.c_str(), d->reason.c_str());
    if (d->ok) calls.push_back(req.call_id);
  }
  if (!calls.empty()) {
    absl::StatusOr<approute::Decision> d = (*router)->Retry(calls[0], 503);
    if (d.ok()) {
      std::printf("%-8s bounced 503           -> %-6s %-26s %s (attempt %d)\n", calls[0].c_str(),
                  d->ok ? d->node_id.c_str() : "-", d->ok ? d->uri.c_str() : d->detail.c_str(), d->reason.c_str(),
                  d->attempt);
      if (!d->ok) calls.erase(calls.begin());
    }
  }
  if (hold_s > 0) std::this_thread::sleep_for(std::chrono::seconds(hold_s));  // calls up, nothing routed
  const approute::ClusterStatus cluster = (*router)->Cluster();
  if (cluster.mode != "local") {
    std::printf("cluster %s: deployment %s, proxy %s, primary %s, lease renewed %lld ms ago\n", cluster.mode.c_str(),
                cluster.name.c_str(), cluster.proxy.c_str(), cluster.primary.c_str(),
                static_cast<long long>(cluster.lease_age_ms));
    if (!cluster.warning.empty()) std::printf("WARNING: %s\n", cluster.warning.c_str());
  }
  for (const std::string& c : calls) {
    if (absl::Status s = (*router)->End(c); !s.ok()) {
      std::fprintf(stderr, "error: %s\n", std::string(s.message()).c_str());
      return 1;
    }
  }
  for (const approute::NodeStatus& n : (*router)->Nodes()) {
    int64_t live = 0;
    for (const auto& [r, v] : n.sessions) live += v;
    std::printf("node %-6s %-24s state=%-8s routed=%llu live=%lld\n", n.spec.id.c_str(), n.spec.uri.c_str(),
                std::string(approute::AdminStateName(n.spec.state)).c_str(),
                static_cast<unsigned long long>(n.routed_total), static_cast<long long>(live));
  }
  return 0;
}
