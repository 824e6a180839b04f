// A fixed number of route()+end() calls on a shared region, for instruction
// counts under callgrind (repeatable on a busy machine, unlike wall time),
// or timed one by one with a steady clock (`time`: prints the median and p99
// in ns). bench/compare_ir.sh builds this against a baseline revision and
// the working tree and prints them side by side.
//
//   route_ir STRATEGY NODES [affinity] [usage] [time]
//
// `usage`: every node reports half its capacity as its own count of the
// resource before the loop (admission then reads the report, state/usage.h).
// Nodes have weights 1 to 4 and a conference capacity far above what the
// loop holds; calls carry a `from` attribute (for `hash`).
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "approute/router.h"
using namespace approute;
using Clock = std::chrono::steady_clock;

// Routes and ends `n` calls; `ns`, when given, gets each pair's wall time.
__attribute__((noinline)) void Loop(Router& r, std::vector<std::string>& ids, int n, const char* app, bool key,
                                    std::vector<int64_t>* ns) {
  RouteRequest req{.app = app};
  req.attrs["from"] = "alice@example.com";
  for (int i = 0; i < n; ++i) {
    req.call_id = ids[i & 1023];
    if (key) req.key = "tenant" + std::to_string(i & 7);
    const Clock::time_point t0 = ns ? Clock::now() : Clock::time_point{};
    auto d = r.Route(req);
    if (!d.ok() || !d->ok) abort();
    (void)r.End(req.call_id);
    if (ns) ns->push_back(std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count());
  }
}
int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: route_ir STRATEGY NODES [affinity] [usage] [time]\n");
    return 2;
  }
  std::string strategy = argv[1];
  int nodes = atoi(argv[2]);
  bool aff = false, timed = false, usage = false;
  for (int i = 3; i < argc; ++i) {
    aff = aff || std::strcmp(argv[i], "affinity") == 0;
    usage = usage || std::strcmp(argv[i], "usage") == 0;
    timed = timed || std::strcmp(argv[i], "time") == 0;
  }
  std::string y = "state: {max_nodes: 1100, max_sessions: 4096, max_affinities: 4096}\nnodes:\n";
  for (int i = 0; i < nodes; ++i) {
    y += "  - {id: n" + std::to_string(i) + ", uri: \"sip:10.0." + std::to_string(i / 250) + "." +
         std::to_string(i % 250 + 1) + ":5060\", pool: media, weight: " + std::to_string(1 + i % 4) +
         ", capacity: {conference: 100000}}\n";
  }
  y += "apps:\n  conference:\n    pool: media\n    resource: conference\n    strategy: " + strategy + "\n";
  if (aff) y += "    affinity: {grace: 300}\n";
  std::string name = "approute-ir-" + std::to_string(getpid());
  auto r = Router::FromYaml(y, {.shared = name});
  (void)Router::Unlink(name);
  if (!r.ok()) {
    std::fprintf(stderr, "%s\n", r.status().ToString().c_str());
    return 1;
  }
  for (int i = 0; usage && i < nodes; ++i) {
    if (!(*r)->ReportLoad("n" + std::to_string(i), {{"conference", 50000}}).ok()) return 1;
  }
  std::vector<std::string> ids;
  for (int i = 0; i < 1024; ++i) ids.push_back("call-" + std::to_string(i) + "@bench.example.com");
  Loop(**r, ids, 2000, "conference", aff, nullptr);  // warm
  if (!timed) {
    Loop(**r, ids, 20000, "conference", aff, nullptr);
    return 0;
  }
  std::vector<int64_t> ns;
  ns.reserve(50000);
  Loop(**r, ids, 50000, "conference", aff, &ns);
  std::sort(ns.begin(), ns.end());
  std::printf("%lld %lld\n", static_cast<long long>(ns[ns.size() / 2]),
              static_cast<long long>(ns[ns.size() * 99 / 100]));
  return 0;
}
