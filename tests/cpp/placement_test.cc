// This host's placement (RegionPlacement): a join or a claim reserves the
// unit itself, on the node the routing flow admits, within the capacity the
// flow gives; a node refused or full holds nothing.
#include "placement/placement.h"

#include <gtest/gtest.h>

#include <optional>

#include "region_fixture.h"
#include "state/affinity_table.h"

namespace approute::internal {
namespace {

class PlacementTest : public testing::RegionTest {
 protected:
  void SetUp() override {
    RegionTest::SetUp();
    ASSERT_TRUE(nodes_->Add(Spec("n1", 2)).ok());
    ASSERT_TRUE(nodes_->Add(Spec("n2", 2)).ok());
    res_ = Res("conference");
    affinity_ = std::make_unique<AffinityTable>(*region_);
    placement_ = std::make_unique<RegionPlacement>(*region_, *affinity_);
  }
  ClaimRef Ref(const std::string& id) { return ClaimRef{Slot(id), Hot(id).epoch.load(), 0}; }
  int64_t Count(const std::string& id) { return Hot(id).sessions[res_].load(); }
  // The key claimed for `id` by a call already reserved there.
  void ClaimFor(const AffinityKey& k, const std::string& id) {
    ASSERT_TRUE(placement_->Reserve(Slot(id), res_, 2));
    auto never = [](uint32_t, uint32_t) -> std::optional<int64_t> { return std::nullopt; };
    absl::StatusOr<AffinityTable::ClaimOutcome> c = placement_->Claim(
        k, Ref(id), res_, 1000, 0, [](uint32_t, uint32_t) { return true; }, never);
    ASSERT_TRUE(c.ok()) << c.status();
    ASSERT_FALSE(c->moved);
  }

  uint32_t res_ = 0;
  std::unique_ptr<AffinityTable> affinity_;
  std::unique_ptr<RegionPlacement> placement_;
};

TEST_F(PlacementTest, AJoinReservesOnTheClaimsNodeWithinTheAdmittedCapacity) {
  AffinityKey k(1, "room-1");
  ClaimFor(k, "n1");
  ASSERT_EQ(Count("n1"), 1);
  int asked = 0;
  auto admit = [&](uint32_t slot, uint32_t) -> std::optional<int64_t> {
    ++asked;
    EXPECT_EQ(slot, Slot("n1")) << "only the claim's node is asked";
    return 2;
  };
  std::optional<ClaimRef> hit = placement_->JoinAndReserve(k, res_, 0, false, admit);
  ASSERT_TRUE(hit.has_value());
  EXPECT_EQ(hit->slot, Slot("n1"));
  EXPECT_EQ(asked, 1);
  EXPECT_EQ(Count("n1"), 2) << "the join reserved its unit";
  EXPECT_FALSE(placement_->JoinAndReserve(k, res_, 0, false, admit).has_value()) << "n1 is full at 2";
  EXPECT_EQ(Count("n1"), 2) << "a full node holds nothing more";
  EXPECT_EQ(affinity_->HoldOf(k).refs, 2) << "two calls hold the claim";
}

TEST_F(PlacementTest, ANodeTheFlowRefusesIsNeitherJoinedNorReserved) {
  AffinityKey k(1, "room-2");
  ClaimFor(k, "n1");
  auto refuse = [](uint32_t, uint32_t) -> std::optional<int64_t> { return std::nullopt; };
  EXPECT_FALSE(placement_->JoinAndReserve(k, res_, 0, false, refuse).has_value());
  EXPECT_EQ(Count("n1"), 1);
  EXPECT_EQ(affinity_->HoldOf(k).refs, 1);
}

TEST_F(PlacementTest, AClaimMadeMeanwhileIsJoinedWithItsNodeReserved) {
  AffinityKey k(1, "room-3");
  ClaimFor(k, "n2");  // another process claimed the key for n2 first
  auto admit = [](uint32_t, uint32_t) -> std::optional<int64_t> { return -1; };  // unlimited
  std::optional<absl::StatusOr<AffinityTable::ClaimOutcome>> c = placement_->ReserveAndClaim(
      k, Ref("n1"), res_, 2, 1000, 0, [](uint32_t, uint32_t) { return true; }, admit);
  ASSERT_TRUE(c.has_value());
  ASSERT_TRUE(c->ok()) << c->status();
  EXPECT_TRUE((*c)->moved) << "the call follows the key to n2";
  EXPECT_EQ((*c)->ref.slot, Slot("n2"));
  EXPECT_EQ(Count("n2"), 2) << "n2 reserved for the call";
  EXPECT_EQ(Count("n1"), 0) << "the unit on the strategy's node was given back";
}

}  // namespace
}  // namespace approute::internal
