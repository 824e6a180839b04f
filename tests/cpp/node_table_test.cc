// NodeTable: the registry, counts within capacity, incarnations, leases, snapshots.
#include "state/node_table.h"

#include <gtest/gtest.h>

#include "region_fixture.h"

namespace approute::internal {
namespace {

using NodeTableTest = testing::RegionTest;

TEST_F(NodeTableTest, AddFindUpdateRemove) {
  ASSERT_TRUE(nodes_->Add(Spec("a", 2)).ok());
  EXPECT_EQ(nodes_->Add(Spec("a")).code(), absl::StatusCode::kAlreadyExists);
  NodeSpec bad = Spec("b");
  bad.uri = "http://x";
  EXPECT_EQ(nodes_->Add(bad).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Slot("b"), kNil) << "a refused add changes nothing";
  NodeSpec up = Spec("a", 5);
  up.weight = 7;
  ASSERT_TRUE(nodes_->Update(up).ok());
  EXPECT_EQ(Rec("a").weight, 7);
  EXPECT_EQ(nodes_->Update(Spec("zz")).code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(nodes_->Remove("a").ok());
  EXPECT_EQ(Slot("a"), kNil);
  EXPECT_EQ(nodes_->Remove("a").code(), absl::StatusCode::kNotFound);
}

TEST_F(NodeTableTest, ReserveNeverExceedsCapacity) {
  ASSERT_TRUE(nodes_->Add(Spec("a", 2)).ok());
  uint32_t res = Res("conference");
  NodeHot& n = Hot("a");
  EXPECT_TRUE(NodeTable::TryReserve(n, res, 2));
  EXPECT_TRUE(NodeTable::TryReserve(n, res, 2));
  EXPECT_FALSE(NodeTable::TryReserve(n, res, 2));
  EXPECT_EQ(n.sessions[res].load(), 2);
  NodeTable::Release(n, Rec("a").epoch, res);
  EXPECT_EQ(n.sessions[res].load(), 1);
  NodeTable::Release(n, Rec("a").epoch + 1, res);  // another incarnation's session: ignored
  EXPECT_EQ(n.sessions[res].load(), 1);
  EXPECT_TRUE(NodeTable::TryReserve(n, res, -1)) << "unlimited";
}

TEST_F(NodeTableTest, ASlotReusedIsANewIncarnationWithoutOldCounts) {
  ASSERT_TRUE(nodes_->Add(Spec("a", 2)).ok());
  uint32_t res = Res("conference");
  uint32_t slot = Slot("a");
  uint32_t old_epoch = Rec("a").epoch;
  ASSERT_TRUE(NodeTable::TryReserve(Hot("a"), res, 2));
  ASSERT_TRUE(nodes_->Remove("a").ok());
  ASSERT_TRUE(nodes_->Add(Spec("b", 2)).ok());
  ASSERT_EQ(Slot("b"), slot);
  EXPECT_NE(Rec("b").epoch, old_epoch);
  EXPECT_EQ(Hot("b").sessions[res].load(), 0);
  NodeTable::Release(Hot("b"), old_epoch, res);  // the old node's session ending
  EXPECT_EQ(Hot("b").sessions[res].load(), 0);
}

TEST_F(NodeTableTest, SnapshotFollowsTheGeneration) {
  ASSERT_TRUE(nodes_->Add(Spec("a")).ok());
  ASSERT_TRUE(nodes_->Add(Spec("b", -1, "other")).ok());
  std::shared_ptr<Snapshot> s1 = nodes_->BuildSnapshot();
  ASSERT_NE(s1->Find("a"), nullptr);
  EXPECT_EQ(s1->by_pool.at("media").size(), 1u);
  EXPECT_EQ(s1->At(Slot("a"), Rec("a").epoch)->id, "a");
  EXPECT_EQ(s1->At(Slot("a"), Rec("a").epoch + 1), nullptr);
  ASSERT_TRUE(nodes_->Remove("a").ok());
  std::shared_ptr<Snapshot> s2 = nodes_->BuildSnapshot();
  EXPECT_GT(s2->generation, s1->generation);
  EXPECT_EQ(s2->Find("a"), nullptr);
}

TEST_F(NodeTableTest, MetricsAreCheckedAndLapsedReportNodesGoWhenEmpty) {
  ASSERT_TRUE(nodes_->Add(Spec("a")).ok());
  EXPECT_EQ(nodes_->ReportLoad("a", {{"bad name", 1}}, 1000).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(nodes_->ReportLoad("a", {{"cpu", std::nan("")}}, 1000).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Hot("a").load_mask.load(), 0u) << "a refused report changes nothing";
  ASSERT_TRUE(nodes_->ReportLoad("a", {{"cpu", 0.5}}, 1000).ok());
  EXPECT_EQ(Rec("a").load_updated_ms.load(), 1000);

  Rec("a").from_report = 1;
  NodeHot& n = Hot("a");
  n.lease_expires_ms.store(2000);
  uint32_t res = Res("calls");
  ASSERT_TRUE(NodeTable::TryReserve(n, res, -1));
  nodes_->RemoveLapsed(3000);
  EXPECT_NE(Slot("a"), kNil) << "a lapsed node keeps its live sessions";
  NodeTable::Release(n, Rec("a").epoch, res);
  nodes_->RemoveLapsed(3000);
  EXPECT_EQ(Slot("a"), kNil);
}

}  // namespace
}  // namespace approute::internal
