// route()+end() per strategy and pool size, affinity hit and miss, private vs
// shared placement. Run: build/bench/bench/approute_bench (see docs/BENCHMARKS.md).
#include <benchmark/benchmark.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "approute/router.h"

namespace {

using approute::Router;
using approute::RouteRequest;

const char* kStrategies[] = {"round_robin", "weighted_round_robin", "random", "weighted_random", "priority",
                             "hash",        "least_loaded",         "p2c"};

std::string Yaml(int nodes, const std::string& strategy, bool affinity, int grace) {
  std::string y = "state: {max_nodes: 1100, max_sessions: 4096, max_affinities: 4096}\nnodes:\n";
  for (int i = 0; i < nodes; ++i) {
    y += "  - {id: n" + std::to_string(i) + ", uri: \"sip:10.0." + std::to_string(i / 250) + "." +
         std::to_string(i % 250 + 1) + ":5060\", pool: media, weight: " + std::to_string(1 + i % 4) +
         ", capacity: {conference: 100000}}\n";
  }
  y += "apps:\n  conference:\n    pool: media\n    resource: conference\n    strategy: " + strategy + "\n";
  if (affinity) y += "    affinity: {grace: " + std::to_string(grace) + "}\n";
  return y;
}

std::unique_ptr<Router> Make(const std::string& yaml, bool shared) {
  approute::RouterOptions o;
  if (shared) {
    o.shared = "approute-bench-" + std::to_string(getpid());
    (void)Router::Unlink(o.shared);
  }
  auto r = Router::FromYaml(yaml, o);
  if (!r.ok()) {
    fprintf(stderr, "%s\n", std::string(r.status().message()).c_str());
    abort();
  }
  if (shared) (void)Router::Unlink(o.shared);  // the mapping stays valid
  return *std::move(r);
}

std::vector<std::string> CallIds(int n) {
  std::vector<std::string> ids;
  for (int i = 0; i < n; ++i) ids.push_back("call-" + std::to_string(i) + "@bench.example.com");
  return ids;
}

void BM_RouteEnd(benchmark::State& state) {
  const std::string strategy = kStrategies[state.range(0)];
  auto r = Make(Yaml(static_cast<int>(state.range(1)), strategy, false, 0), state.range(2) != 0);
  auto ids = CallIds(1024);
  RouteRequest req{.app = "conference"};
  req.attrs["from"] = "alice@example.com";
  size_t i = 0;
  for (auto _ : state) {
    req.call_id = ids[i++ & 1023];
    benchmark::DoNotOptimize(r->Route(req));
    (void)r->End(req.call_id);
  }
  state.SetLabel(strategy + (state.range(2) ? "/shared" : "/private"));
}

void BM_AffinityHit(benchmark::State& state) {
  auto r = Make(Yaml(static_cast<int>(state.range(0)), "least_loaded", true, 300), state.range(1) != 0);
  auto ids = CallIds(1024);
  RouteRequest req{.app = "conference", .key = "example.com"};
  req.call_id = "warm";
  (void)r->Route(req);  // claim the key, then hold it with this session
  size_t i = 0;
  for (auto _ : state) {
    req.call_id = ids[i++ & 1023];
    benchmark::DoNotOptimize(r->Route(req));
    (void)r->End(req.call_id);
  }
  state.SetLabel(state.range(1) ? "shared" : "private");
}

void BM_AffinityMiss(benchmark::State& state) {
  // Every call brings a new key (grace 0: the claim goes when the call ends).
  auto r = Make(Yaml(static_cast<int>(state.range(0)), "least_loaded", true, 0), state.range(1) != 0);
  auto ids = CallIds(1024);
  RouteRequest req{.app = "conference"};
  size_t i = 0;
  for (auto _ : state) {
    req.call_id = ids[i & 1023];
    req.key = ids[(i + 512) & 1023];
    ++i;
    benchmark::DoNotOptimize(r->Route(req));
    (void)r->End(req.call_id);
  }
  state.SetLabel(state.range(1) ? "shared" : "private");
}

void StrategyArgs(benchmark::internal::Benchmark* b) {
  for (int s = 0; s < 8; ++s)
    for (int n : {8, 64, 1024}) b->Args({s, n, 1});
  for (int n : {8, 64, 1024}) b->Args({0, n, 0});
}

BENCHMARK(BM_RouteEnd)->Apply(StrategyArgs)->ArgNames({"strategy", "nodes", "shared"});
BENCHMARK(BM_AffinityHit)
    ->ArgsProduct({{8, 64, 1024}, {0, 1}})
    ->ArgNames({"nodes", "shared"})
    ->Repetitions(5)
    ->ReportAggregatesOnly(true);
BENCHMARK(BM_AffinityMiss)
    ->ArgsProduct({{64}, {0, 1}})
    ->ArgNames({"nodes", "shared"})
    ->Repetitions(5)
    ->ReportAggregatesOnly(true);

}  // namespace

BENCHMARK_MAIN();
