#include "routing/strategy_context.h"

#include <unistd.h>

#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "state/owners.h"

namespace approute::internal {

uint64_t ThreadRandom() {
  thread_local std::mt19937_64 gen{std::random_device{}()};
  thread_local uint64_t seen = 0;
  uint64_t g = ForkGeneration();
  if (g != seen) {
    seen = g;
    gen.seed(std::random_device{}() ^ (static_cast<uint64_t>(getpid()) << 32));
  }
  return gen();
}

double RegionStrategyContext::Load(const Candidate& c, std::string_view metric) {
  const uint32_t m = MetricIndex(metric);
  if (m == kNil) return std::numeric_limits<double>::quiet_NaN();
  const NodeHot& n = region_.hot(c.slot);
  return (n.load_mask.load(std::memory_order_relaxed) & (uint64_t{1} << m)) ? n.load[m].load(std::memory_order_relaxed)
                                                                            : std::numeric_limits<double>::quiet_NaN();
}

uint32_t RegionStrategyContext::MetricIndex(std::string_view metric) {
  if (metric.size() == last_len_ && (last_len_ == 0 || std::memcmp(metric.data(), last_metric_, last_len_) == 0)) {
    return last_index_;  // (an empty view's data() may be null: not for memcmp)
  }
  uint32_t found = kNil;
  for (size_t m = 0; m < snap_.metrics.size() && found == kNil; ++m) {
    if (snap_.metrics[m] == metric) found = static_cast<uint32_t>(m);
  }
  if (metric.size() < kNameLen) {  // longer names are never metrics: not worth remembering
    if (!metric.empty()) std::memcpy(last_metric_, metric.data(), metric.size());
    last_len_ = metric.size();
    last_index_ = found;
  }
  return found;
}

NodeFeedback RegionStrategyContext::Feedback(const Candidate& c) {
  const NodeRecord& n = region_.node(c.slot);
  NodeFeedback f;
  f.latency_ewma_ms = n.latency_ewma_ms.load(std::memory_order_relaxed);
  f.error_rate = n.error_ewma.load(std::memory_order_relaxed);
  f.load_updated_ms = n.load_updated_ms.load(std::memory_order_relaxed);
  f.first_report_ms = n.first_report_ms.load(std::memory_order_relaxed);
  return f;
}

uint64_t RegionStrategyContext::NextTicket() {
  std::atomic<uint64_t>& ticket = region_.header().apps[app_].ticket;
  if (dry_run_) return ticket.load(std::memory_order_relaxed);
  return ticket.fetch_add(1, std::memory_order_relaxed);
}

void RegionStrategyContext::WithSharedSlots(const std::function<void(absl::Span<int64_t>)>& fn) {
  if (dry_run_) {
    std::vector<int64_t> copy;
    {
      LockGuard g(region_.header().apps[app_].mu);
      const int64_t* slots = region_.app_slots(app_);
      copy.assign(slots, slots + region_.max_nodes());
    }
    fn(absl::Span<int64_t>(copy));
    return;
  }
  LockGuard g(region_.header().apps[app_].mu);
  fn(absl::Span<int64_t>(region_.app_slots(app_), region_.max_nodes()));
}

uint64_t RegionStrategyContext::Random() {
  if (seeded_ == nullptr || dry_run_) return ThreadRandom();
  // SplitMix64 over one per-router counter: reproducible for a seeded router.
  uint64_t z = seeded_->fetch_add(0x9E3779B97F4A7C15ULL, std::memory_order_relaxed) + 0x9E3779B97F4A7C15ULL;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

NodeStatus RegionStrategyContext::Describe(const Candidate& c) {
  if (c.slot >= snap_.index_of_slot.size() || snap_.index_of_slot[c.slot] < 0) return StrategyContext::Describe(c);
  return nodes_.StatusOf(snap_, snap_.nodes[static_cast<size_t>(snap_.index_of_slot[c.slot])], now_);
}

}  // namespace approute::internal
