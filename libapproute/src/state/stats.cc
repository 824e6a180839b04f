#include "state/stats.h"

#include <cmath>
#include <limits>
#include <string>

namespace approute::internal {

namespace {

// The index of `name` in `names`, or -1.
template <size_t N>
int IndexOf(const std::string_view (&names)[N], std::string_view name) {
  for (size_t i = 0; i < N; ++i) {
    if (names[i] == name) return static_cast<int>(i);
  }
  return -1;
}

}  // namespace

void RouterCounters::Decision(uint32_t app, std::string_view reason) {
  const int i = IndexOf(kReasonNames, reason);
  if (app < kMaxApps && i >= 0) {
    region_.header().apps[app].counters.decisions[i].fetch_add(1, std::memory_order_relaxed);
  }
}

void RouterCounters::KeyRefusal(uint32_t app, std::string_view reason) {
  const int i = IndexOf(kKeyRefusalNames, reason);
  if (app < kMaxApps && i >= 0) {
    region_.header().apps[app].counters.key_refusals[i].fetch_add(1, std::memory_order_relaxed);
  }
}

void RouterCounters::HeadroomRefusal(uint32_t app) {
  if (app < kMaxApps) region_.header().apps[app].counters.headroom_refusals.fetch_add(1, std::memory_order_relaxed);
}

void RouterCounters::Retry(uint32_t app, int code) {
  if (app >= kMaxApps) return;
  AppCounters& c = region_.header().apps[app].counters;
  for (size_t i = 0; i < kRetryCodes; ++i) {
    int32_t have = c.retry_code[i].load(std::memory_order_relaxed);
    if (have == 0 && c.retry_code[i].compare_exchange_strong(have, code, std::memory_order_relaxed)) have = code;
    if (have == code) {
      c.retries[i].fetch_add(1, std::memory_order_relaxed);
      return;
    }
  }
  c.retries[kRetryCodes].fetch_add(1, std::memory_order_relaxed);
}

void RouterCounters::RouteLatency(int64_t ns) {
  LatencyHistogram& h = region_.header().route_latency;
  size_t b = 0;
  int64_t bound = 1000;  // 1 us
  while (b + 1 < kLatencyBuckets && ns > bound) {
    bound *= 2;
    ++b;
  }
  h.buckets[b].fetch_add(1, std::memory_order_relaxed);
  h.sum_ns.fetch_add(ns, std::memory_order_relaxed);
  h.count.fetch_add(1, std::memory_order_relaxed);
}

void RouterCounters::Reset(AppCounters& c) {
  for (auto& d : c.decisions) d.store(0, std::memory_order_relaxed);
  for (auto& r : c.retry_code) r.store(0, std::memory_order_relaxed);
  for (auto& r : c.retries) r.store(0, std::memory_order_relaxed);
  for (auto& k : c.key_refusals) k.store(0, std::memory_order_relaxed);
  c.headroom_refusals.store(0, std::memory_order_relaxed);
  c.budget_refusals.store(0, std::memory_order_relaxed);
  c.retry_window.store(0, std::memory_order_relaxed);
  // in_flight is a gauge of live sessions, not a counter: it stays.
}

void RouterCounters::Fill(const std::vector<std::string>& app_names, RouterStats* s) const {
  const Header& h = region_.header();
  for (uint32_t a = 0; a < kMaxApps && a < app_names.size(); ++a) {
    if (app_names[a].empty()) continue;
    const AppCounters& c = h.apps[a].counters;
    for (size_t i = 0; i < kReasons; ++i) {
      s->decisions[app_names[a]][std::string(kReasonNames[i])] = c.decisions[i].load(std::memory_order_relaxed);
    }
    for (size_t i = 0; i < kRetryCodes; ++i) {
      int32_t code = c.retry_code[i].load(std::memory_order_relaxed);
      if (code != 0) s->retries[app_names[a]][std::to_string(code)] = c.retries[i].load(std::memory_order_relaxed);
    }
    for (size_t i = 0; i < kKeyRefusals; ++i) {
      s->key_refusals[app_names[a]][std::string(kKeyRefusalNames[i])] =
          c.key_refusals[i].load(std::memory_order_relaxed);
    }
    s->headroom_refusals[app_names[a]] = c.headroom_refusals.load(std::memory_order_relaxed);
    s->budget_refusals[app_names[a]] = c.budget_refusals.load(std::memory_order_relaxed);
    int64_t other = c.retries[kRetryCodes].load(std::memory_order_relaxed);
    if (other != 0) s->retries[app_names[a]]["other"] = other;
  }
  int64_t cumulative = 0;
  double bound = 1e-6;
  for (size_t b = 0; b < kLatencyBuckets; ++b) {
    cumulative += h.route_latency.buckets[b].load(std::memory_order_relaxed);
    double le = b + 1 < kLatencyBuckets ? bound : std::numeric_limits<double>::infinity();
    s->route_seconds.buckets.emplace_back(le, cumulative);
    bound *= 2;
  }
  s->route_seconds.sum = static_cast<double>(h.route_latency.sum_ns.load(std::memory_order_relaxed)) / 1e9;
  s->route_seconds.count = h.route_latency.count.load(std::memory_order_relaxed);
}

}  // namespace approute::internal
