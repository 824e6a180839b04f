#include "state/stats.h"

#include <cmath>
#include <limits>
#include <string>

namespace approute::internal {

void RouterCounters::Decision(uint32_t app, std::string_view reason) {
  if (app >= kMaxApps) return;
  for (size_t i = 0; i < kReasons; ++i) {
    if (kReasonNames[i] == reason) {
      region_.header().apps[app].counters.decisions[i].fetch_add(1, std::memory_order_relaxed);
      return;
    }
  }
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
