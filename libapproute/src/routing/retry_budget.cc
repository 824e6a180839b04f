#include "routing/retry_budget.h"

#include <algorithm>
#include <cmath>

namespace approute::internal {
namespace {

constexpr int kCountBits = 24;  // retries in one second: far above any allowance that matters
constexpr uint64_t kCountMask = (uint64_t{1} << kCountBits) - 1;

}  // namespace

int64_t RetryBudget::Allowance(const AppConfig& cfg, int64_t in_flight) {
  const double share =
      std::floor(cfg.retry_budget_percent * static_cast<double>(std::max<int64_t>(in_flight, 0)) / 100.0);
  return static_cast<int64_t>(share) + cfg.retry_budget_min_per_second;
}

bool RetryBudget::Take(AppCounters& c, const AppConfig& cfg, int64_t now_ms) {
  if (cfg.retry_budget_percent < 0) return true;
  const auto second = static_cast<uint64_t>(now_ms / 1000);
  const auto allowance = static_cast<uint64_t>(
      std::min<int64_t>(Allowance(cfg, c.in_flight.load(std::memory_order_relaxed)), static_cast<int64_t>(kCountMask)));
  uint64_t cur = c.retry_window.load(std::memory_order_relaxed);
  for (;;) {
    const uint64_t used = (cur >> kCountBits) == second ? (cur & kCountMask) : 0;
    if (used >= allowance) {
      c.budget_refusals.fetch_add(1, std::memory_order_relaxed);
      return false;
    }
    const uint64_t next = (second << kCountBits) | (used + 1);
    if (c.retry_window.compare_exchange_weak(cur, next, std::memory_order_relaxed)) return true;
  }
}

}  // namespace approute::internal
