// Routing as the state region fills: route()+end() of a call with a new
// affinity key, timed one by one (steady clock), with 1k, 100k and 1M live
// sessions each holding its own key; the region's bytes per live session; and
// the time to create a router with max_sessions = max_affinities = 1M.
// Run: build/cpp/bench/approute_scale_bench [max_live [private]]   (docs/BENCHMARKS.md)
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "approute/router.h"
#include "state/region.h"

namespace {

using approute::Router;
using Clock = std::chrono::steady_clock;

std::string Yaml(int64_t max_sessions) {
  std::string y = "state: {max_nodes: 64, max_sessions: " + std::to_string(max_sessions) +
                  ", max_affinities: " + std::to_string(max_sessions) + "}\nnodes:\n";
  for (int i = 0; i < 16; ++i) {
    y += "  - {id: n" + std::to_string(i) + ", uri: \"sip:10.0.0." + std::to_string(i + 1) + ":5060\", pool: media}\n";
  }
  y += "apps:\n  conference: {pool: media, strategy: least_loaded, affinity: {grace: 0}}\n";
  return y;
}

bool g_private = false;  // `private` on the command line: an anonymous mapping, not a named segment

std::unique_ptr<Router> Make(const std::string& yaml, const std::string& shm, double* ms) {
  approute::RouterOptions o{.shared = g_private ? std::string() : shm};
  (void)Router::Unlink(shm);
  auto t0 = Clock::now();
  auto r = Router::FromYaml(yaml, o);
  *ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  if (!r.ok()) {
    std::fprintf(stderr, "%s\n", r.status().ToString().c_str());
    std::exit(1);
  }
  return *std::move(r);
}

size_t SegmentBytes(const std::string& shm) {
  struct stat st {};
  return stat(("/dev/shm/" + shm).c_str(), &st) == 0 ? static_cast<size_t>(st.st_size) : 0;
}

void MustRoute(Router& r, approute::RouteRequest& req) {
  auto d = r.Route(req);
  if (!d.ok() || !d->ok) {
    std::fprintf(stderr, "route %s failed: %s\n", req.call_id.c_str(),
                 d.ok() ? d->detail.c_str() : d.status().ToString().c_str());
    std::exit(1);
  }
}

struct Row {
  int64_t live;
  double median_us, p99_us, p999_us, max_us, create_ms, fill_s;
  size_t bytes;
  int64_t max_sessions;
};

Row Measure(int64_t live, int samples) {
  // Room for the live sessions and the one being measured, nothing more: a full table.
  const int64_t max_sessions = live + 16;
  const std::string shm = "approute-scale-" + std::to_string(getpid());
  Row row{live, 0, 0, 0, 0, 0, 0, 0, max_sessions};
  auto r = Make(Yaml(max_sessions), shm, &row.create_ms);
  row.bytes = SegmentBytes(shm);  // 0 for a private region (the same layout: see a shared run)
  approute::RouteRequest req{.app = "conference"};
  auto t0 = Clock::now();
  for (int64_t i = 0; i < live; ++i) {
    req.call_id = "live-" + std::to_string(i) + "@scale.example.com";
    req.key = "tenant-" + std::to_string(i) + ".example.com";
    MustRoute(*r, req);
  }
  row.fill_s = std::chrono::duration<double>(Clock::now() - t0).count();
  std::vector<double> us;
  us.reserve(samples);
  for (int i = 0; i < samples; ++i) {
    req.call_id = "probe-" + std::to_string(i) + "@scale.example.com";
    req.key = "probe-tenant-" + std::to_string(i) + ".example.com";
    auto a = Clock::now();
    MustRoute(*r, req);
    if (!r->End(req.call_id).ok()) std::exit(1);
    us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - a).count());
  }
  if (r->Stats().sessions != live || r->Stats().affinities != live) {
    std::fprintf(stderr, "expected %lld live sessions and keys\n", static_cast<long long>(live));
    std::exit(1);
  }
  std::sort(us.begin(), us.end());
  row.median_us = us[us.size() / 2];
  row.p99_us = us[us.size() * 99 / 100];
  row.p999_us = us[us.size() * 999 / 1000];
  row.max_us = us.back();
  r.reset();
  (void)Router::Unlink(shm);
  return row;
}

}  // namespace

int main(int argc, char** argv) {
  int64_t max_live = argc > 1 ? std::atoll(argv[1]) : 1'000'000;
  g_private = argc > 2 && std::string(argv[2]) == "private";
  const int samples = 20000;
  std::vector<Row> rows;
  for (int64_t live : {int64_t{1000}, int64_t{100'000}, int64_t{1'000'000}}) {
    if (live > max_live) break;
    rows.push_back(Measure(live, samples));
  }
  using approute::internal::AffinityEntry;
  using approute::internal::SessionEntry;
  std::printf("entries: session %zu B, affinity %zu B; %d route+end samples per size, each a new call and key\n\n",
              sizeof(SessionEntry), sizeof(AffinityEntry), samples);
  std::printf(
      "| live sessions (own key each) | route+end median | p99 | p99 vs 1k | p99.9 | max | region | bytes per live "
      "session + key | create | fill |\n");
  std::printf("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  for (const Row& w : rows) {
    std::printf("| %lld | %.2f us | %.2f us | %.2fx | %.1f us | %.0f us | %.1f MB | %.0f | %.1f ms | %.2f s |\n",
                static_cast<long long>(w.live), w.median_us, w.p99_us, w.p99_us / rows[0].p99_us, w.p999_us, w.max_us,
                static_cast<double>(w.bytes) / 1e6, static_cast<double>(w.bytes) / static_cast<double>(w.max_sessions),
                w.create_ms, w.fill_s);
  }
  // Startup of a router sized for a million calls (shared and private).
  double shared_ms = 0, private_ms = 0;
  {
    const std::string shm = "approute-scale-start-" + std::to_string(getpid());
    auto r = Make(Yaml(1'000'000), shm, &shared_ms);
    (void)Router::Unlink(shm);
  }
  {
    auto t0 = Clock::now();
    auto r = Router::FromYaml(Yaml(1'000'000));
    private_ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    if (!r.ok()) return 1;
  }
  std::printf("\nmax_sessions = max_affinities = 1M: router created in %.1f ms (shared), %.1f ms (private)\n",
              shared_ms, private_ms);
  return 0;
}
