// PolicyStore: the stored text survives a half-done store; policies follow it.
#include "routing/policies.h"

#include <gtest/gtest.h>

#include "region_fixture.h"

namespace approute::internal {
namespace {

using PoliciesTest = testing::RegionTest;

const char* kA = R"(
apps:
  conference: {strategy: least_loaded, resource: conference, affinity: {grace: 10}}
  default: {strategy: round_robin}
)";
const char* kB = R"(
apps:
  queue: {strategy: random}
)";

TEST_F(PoliciesTest, StoreParseAndFallBackToDefault) {
  PolicyStore store(*region_, *nodes_, 1);
  absl::StatusOr<Config> a = ParseConfig(kA);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(store.Prepare(*a, "a").ok());
  {
    RegistryLock g(region_->header());
    ASSERT_TRUE(nodes_->ApplyConfigLocked(*a).ok());
    store.StoreLocked(*a);
  }
  absl::StatusOr<const Policies*> p = store.Cached();
  ASSERT_TRUE(p.ok()) << p.status();
  ASSERT_NE((*p)->Find("conference"), nullptr);
  EXPECT_EQ((*p)->Find("conference")->config.affinity_grace_ms, 10'000);
  EXPECT_EQ((*p)->Find("anything")->config.name, "default");
  EXPECT_EQ(store.StoredText(), a->text);
}

TEST_F(PoliciesTest, AStoreKilledHalfWayLeavesTheOldText) {
  PolicyStore store(*region_, *nodes_, 2);
  absl::StatusOr<Config> a = ParseConfig(kA);
  absl::StatusOr<Config> b = ParseConfig(kB);
  ASSERT_TRUE(a.ok() && b.ok());
  {
    RegistryLock g(region_->header());
    ASSERT_TRUE(nodes_->ApplyConfigLocked(*a).ok());
    store.StoreLocked(*a);
  }
  // What a writer killed mid-copy leaves: the inactive buffer half-written,
  // config_active not yet flipped.
  Header& h = region_->header();
  uint32_t inactive = 1 - h.config_active.load();
  std::memcpy(h.config[inactive], b->text.data(), b->text.size() / 2);
  h.config_len[inactive] = static_cast<uint32_t>(b->text.size());
  EXPECT_EQ(store.StoredText(), a->text);
  absl::StatusOr<std::shared_ptr<const Policies>> p = store.Get();
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_NE((*p)->Find("conference"), nullptr);
}

}  // namespace
}  // namespace approute::internal
