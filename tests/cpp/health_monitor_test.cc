// HealthMonitor: probe hysteresis, ejection bounded by the pool share, slow start, panic.
#include "status/health.h"

#include <gtest/gtest.h>

#include "region_fixture.h"

namespace approute::internal {
namespace {

using HealthMonitorTest = testing::RegionTest;

TEST_F(HealthMonitorTest, ProbesNeedConsecutiveResults) {
  ASSERT_TRUE(nodes_->Add(Spec("a")).ok());
  HealthMonitor m(*region_);
  HealthConfig h;  // down after 3, up after 2
  const uint32_t a = Slot("a");
  NodeHot& n = Hot("a");
  m.OnProbe(a, 0, 0, -1, h, 0);
  m.OnProbe(a, 0, 0, -1, h, 0);
  EXPECT_EQ(n.health.load(), static_cast<uint32_t>(Health::kUp));
  m.OnProbe(a, 200, 5, -1, h, 0);  // a success resets the failures
  m.OnProbe(a, 0, 0, -1, h, 0);
  m.OnProbe(a, 500, 0, -1, h, 0);  // a 5xx other than 503 is a failure
  m.OnProbe(a, 0, 0, -1, h, 0);
  EXPECT_EQ(n.health.load(), static_cast<uint32_t>(Health::kDown));
  m.OnProbe(a, 200, 5, -1, h, 100);
  EXPECT_EQ(n.health.load(), static_cast<uint32_t>(Health::kDown));
  m.OnProbe(a, 200, 5, -1, h, 200);
  EXPECT_EQ(n.health.load(), static_cast<uint32_t>(Health::kUp));
  EXPECT_EQ(n.up_since_ms.load(), 200) << "slow start begins when it comes back";
}

TEST_F(HealthMonitorTest, A503IsAliveAndBusyA2xxEndsIt) {
  ASSERT_TRUE(nodes_->Add(Spec("a")).ok());
  HealthMonitor m(*region_);
  HealthConfig h;  // down after 3; busy_for 5 s, busy_max 300 s
  const uint32_t a = Slot("a");
  NodeHot& n = Hot("a");
  m.OnProbe(a, 0, 0, -1, h, 0);
  m.OnProbe(a, 0, 0, -1, h, 0);
  m.OnProbe(a, 503, 1, 20'000, h, 1000);  // an answer: the run of failures ends
  m.OnProbe(a, 0, 0, -1, h, 1000);
  EXPECT_EQ(n.health.load(), static_cast<uint32_t>(Health::kUp));
  EXPECT_EQ(n.busy_until_ms.load(), 21'000);
  EXPECT_NE(n.shed.load() & kShedBusy, 0u);
  EXPECT_TRUE(HealthMonitor::Busy(n, 20'999));
  EXPECT_FALSE(HealthMonitor::Busy(n, 21'000));
  EXPECT_EQ(n.shed.load() & kShedBusy, 0u) << "the bit goes once the period is over";
  m.OnProbe(a, 503, 1, -1, h, 30'000);
  EXPECT_EQ(n.busy_until_ms.load(), 35'000) << "no Retry-After: busy_for";
  m.OnProbe(a, 503, 1, 999'000'000, h, 30'000);
  EXPECT_EQ(n.busy_until_ms.load(), 330'000) << "cut to busy_max";
  m.OnProbe(a, 486, 1, -1, h, 31'000);
  EXPECT_TRUE(HealthMonitor::Busy(n, 31'000)) << "only a 2xx ends it";
  m.OnProbe(a, 200, 1, -1, h, 31'000);
  EXPECT_FALSE(HealthMonitor::Busy(n, 31'000));
  EXPECT_EQ(n.up_since_ms.load(), 0) << "no slow start: it never went down";
  for (int code : {0, 408, 500, 502, 504, 599}) EXPECT_TRUE(HealthMonitor::ProbeFailed(code)) << code;
  for (int code : {100, 200, 404, 486, 503, 603}) EXPECT_FALSE(HealthMonitor::ProbeFailed(code)) << code;
}

TEST_F(HealthMonitorTest, EjectionNeverTakesMoreThanTheShare) {
  for (const char* id : {"a", "b"}) ASSERT_TRUE(nodes_->Add(Spec(id)).ok());
  HealthMonitor m(*region_);
  HealthConfig h;
  h.outlier_consecutive_failures = 2;
  h.outlier_max_ejected_percent = 50;
  auto snap = nodes_->BuildSnapshot();
  const auto& pool = snap->by_pool.at("media");
  for (int i = 0; i < 2; ++i) m.OnResult(Slot("a"), *snap, pool, 502, 0, -1, h, 1000);
  EXPECT_TRUE(HealthMonitor::Ejected(Hot("a"), 1000));
  for (int i = 0; i < 2; ++i) m.OnResult(Slot("b"), *snap, pool, 502, 0, -1, h, 1000);
  EXPECT_FALSE(HealthMonitor::Ejected(Hot("b"), 1000)) << "ejecting b too would take 100% of the pool";
  EXPECT_FALSE(HealthMonitor::Ejected(Hot("a"), 1000 + h.outlier_base_ejection_ms));
  EXPECT_EQ(Hot("a").up_since_ms.load(), 1000 + h.outlier_base_ejection_ms);
}

TEST_F(HealthMonitorTest, SlowStartAndPanic) {
  ASSERT_TRUE(nodes_->Add(Spec("a")).ok());
  HealthConfig h;
  h.slow_start_ms = 1000;
  NodeHot& n = Hot("a");
  n.up_since_ms.store(1000);
  EXPECT_TRUE(HealthMonitor::SkipForSlowStart(n, h, 1100, 0.5)) << "10% of the way: half the draws skip";
  EXPECT_FALSE(HealthMonitor::SkipForSlowStart(n, h, 1900, 0.5));
  EXPECT_FALSE(HealthMonitor::SkipForSlowStart(n, h, 2500, 0.99)) << "past the window";
  HealthMonitor m(*region_);
  auto snap = nodes_->BuildSnapshot();
  h.panic_threshold = 50;
  EXPECT_FALSE(m.Panic(*snap, snap->by_pool.at("media"), h, 0));
  n.health.store(static_cast<uint32_t>(Health::kDown));
  EXPECT_TRUE(m.Panic(*snap, snap->by_pool.at("media"), h, 0));
}

}  // namespace
}  // namespace approute::internal
