// A fixed number of route()+end() calls on a shared region, for instruction
// counts under callgrind (repeatable on a busy machine, unlike wall time).
// bench/compare_ir.sh builds this against a baseline revision and the
// working tree and prints the ratio side by side.
//
//   route_ir STRATEGY NODES [affinity]
#include <unistd.h>
#include <cstdio>
#include <string>
#include <vector>
#include "approute/router.h"
using namespace approute;
__attribute__((noinline)) void Loop(Router& r, std::vector<std::string>& ids, int n, const char* app, bool key) {
  RouteRequest req{.app = app};
  for (int i = 0; i < n; ++i) {
    req.call_id = ids[i & 1023];
    if (key) req.key = "tenant" + std::to_string(i & 7);
    auto d = r.Route(req);
    if (!d.ok() || !d->ok) abort();
    (void)r.End(req.call_id);
  }
}
int main(int argc, char** argv) {
  std::string strategy = argv[1];
  int nodes = atoi(argv[2]);
  bool aff = argc > 3;
  std::string y = "state: {max_nodes: 1100, max_sessions: 4096, max_affinities: 4096}\nnodes:\n";
  for (int i = 0; i < nodes; ++i) y += "  - {id: n" + std::to_string(i) + ", uri: \"sip:10.0.0." + std::to_string(i % 250 + 1) + ":5060\", pool: media, capacity: {conference: 100000}}\n";
  y += "apps:\n  conference:\n    pool: media\n    resource: conference\n    strategy: " + strategy + "\n";
  if (aff) y += "    affinity: {grace: 300}\n";
  std::string name = "approute-ir-" + std::to_string(getpid());
  auto r = Router::FromYaml(y, {.shared = name});
  (void)Router::Unlink(name);
  std::vector<std::string> ids;
  for (int i = 0; i < 1024; ++i) ids.push_back("call-" + std::to_string(i) + "@bench.example.com");
  Loop(**r, ids, 2000, "conference", aff);  // warm
  Loop(**r, ids, 20000, "conference", aff);
}
