// The compact per-node array (region.h NodeHot): its epoch mirror agrees
// with the records after joins, leaves, slot reuse, a recount and a registry
// holder's death; the counts, admin state and load a router keeps there are
// what it placed, drained and was told; the snapshot's pool views agree with
// its node views.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "approute/router.h"
#include "region_fixture.h"
#include "routing/strategy_context.h"
#include "state/recovery.h"
#include "test_util.h"

namespace approute::internal {
namespace {

using NodeHotTest = testing::SharedRegionTest;

// Every slot's hot epoch equals its record's; returns how many slots are in use.
int ExpectMirrorsAgree(const Region& region) {
  int in_use = 0;
  for (uint32_t s = 0; s < region.max_nodes(); ++s) {
    EXPECT_EQ(region.hot(s).epoch.load(), region.node(s).epoch) << "slot " << s;
    in_use += region.node(s).in_use ? 1 : 0;
  }
  return in_use;
}

TEST_F(NodeHotTest, EpochMirrorFollowsJoinsLeavesAndReuse) {
  for (const char* id : {"a", "b", "c"}) ASSERT_TRUE(nodes_->Add(Spec(id, 4)).ok());
  EXPECT_EQ(ExpectMirrorsAgree(*region_), 3);
  const uint32_t b = Slot("b"), old = Rec("b").epoch;
  ASSERT_TRUE(nodes_->Remove("b").ok());
  EXPECT_EQ(ExpectMirrorsAgree(*region_), 2);
  EXPECT_NE(region_->hot(b).epoch.load(), old) << "a left slot no longer matches its old incarnation";
  ASSERT_TRUE(nodes_->Add(Spec("d", 4)).ok());
  ASSERT_EQ(Slot("d"), b);
  EXPECT_EQ(ExpectMirrorsAgree(*region_), 3);
  const uint32_t a_epoch = Rec("a").epoch;
  ASSERT_TRUE(nodes_->Update(Spec("a", 9)).ok());
  EXPECT_EQ(Hot("a").epoch.load(), a_epoch) << "an update keeps the incarnation";
  EXPECT_EQ(ExpectMirrorsAgree(*region_), 3);
}

TEST_F(NodeHotTest, ARecountRepairsTheMirrorAndTheCounts) {
  ASSERT_TRUE(nodes_->Add(Spec("a", 4)).ok());
  const uint32_t res = Res("conference");
  ASSERT_TRUE(NodeTable::TryReserve(Hot("a"), res, 4));  // no session record explains it
  Hot("a").epoch.store(Rec("a").epoch + 7);              // as if a writer died between the two
  RecountResult got = Recount(*region_, 0);
  EXPECT_EQ(ExpectMirrorsAgree(*region_), 1);
  EXPECT_EQ(Hot("a").sessions[res].load(), 0);
  EXPECT_EQ(got.drift, 1);
}

TEST_F(NodeHotTest, TheNextRegistryLockAfterAHolderDiedResyncsTheMirror) {
  ASSERT_TRUE(nodes_->Add(Spec("a")).ok());
  const uint32_t a = Slot("a");
  const uint64_t gen = region_->header().node_generation.load();
  pid_t pid = fork();
  if (pid == 0) {
    region_->header().registry_mu.Lock();
    region_->hot(a).epoch.fetch_add(1);  // killed between the record's epoch and its mirror
    _exit(0);                            // holding the registry mutex
  }
  ASSERT_EQ(waitpid(pid, nullptr, 0), pid);
  ASSERT_NE(Hot("a").epoch.load(), Rec("a").epoch);
  { RegistryLock g(region_->header()); }
  EXPECT_EQ(ExpectMirrorsAgree(*region_), 1);
  EXPECT_GT(region_->header().node_generation.load(), gen) << "snapshots are rebuilt too";
}

TEST_F(NodeHotTest, PoolViewsAgreeWithTheNodeViews) {
  NodeSpec a = Spec("a", 3);
  a.weight = 5;
  a.priority = 2;
  a.attrs["zone"] = "east";
  ASSERT_TRUE(nodes_->Add(a).ok());
  ASSERT_TRUE(nodes_->Add(Spec("b")).ok());
  ASSERT_TRUE(nodes_->Add(Spec("c", 7, "other")).ok());
  std::shared_ptr<Snapshot> snap = nodes_->BuildSnapshot();
  ASSERT_EQ(snap->pools.size(), snap->by_pool.size());
  EXPECT_EQ(snap->Pool("nowhere"), nullptr);
  const uint32_t conf = Res("conference");
  for (const auto& [pool, members] : snap->by_pool) {
    const PoolView* pv = snap->Pool(pool);
    ASSERT_NE(pv, nullptr) << pool;
    ASSERT_EQ(pv->proto.size(), members.size());
    ASSERT_EQ(pv->epoch.size(), members.size());
    for (size_t i = 0; i < members.size(); ++i) {
      const NodeView& v = snap->nodes[members[i]];
      const Candidate& c = pv->proto[i];
      EXPECT_EQ(c.slot, v.slot);
      EXPECT_EQ(c.id, v.id);
      EXPECT_EQ(c.uri, v.uri);
      EXPECT_EQ(c.weight, v.weight);
      EXPECT_EQ(c.priority, v.priority);
      EXPECT_EQ(c.attrs, &v.attrs);
      EXPECT_EQ(pv->epoch[i], v.epoch);
      for (uint32_t r = 0; r < kMaxResources; ++r) EXPECT_EQ(pv->CapacityRow(r)[i], v.capacity[r]) << v.id << " " << r;
    }
  }
  EXPECT_EQ(snap->Pool("media")->CapacityRow(conf)[0], 3);
  EXPECT_EQ(snap->Pool("media")->proto[0].attrs->at("zone"), "east");
}

TEST_F(NodeHotTest, AStrategySeesTheReportedLoadByNameWhateverStringAsksForIt) {
  ASSERT_TRUE(nodes_->Add(Spec("a")).ok());
  ASSERT_TRUE(nodes_->ReportLoad("a", {{"cpu", 0.25}, {"mem", 0.75}}, 1000).ok());
  std::shared_ptr<Snapshot> snap = nodes_->BuildSnapshot();
  RegionStrategyContext ctx(*region_, *nodes_, 0, *snap, 1000, nullptr);
  const Candidate& c = snap->Pool("media")->proto[0];
  // Temporaries of the same length, as a binding makes them: the name is
  // remembered by value, not by where it was.
  EXPECT_EQ(ctx.Load(c, std::string("cpu")), 0.25);
  EXPECT_EQ(ctx.Load(c, std::string("mem")), 0.75);
  EXPECT_EQ(ctx.Load(c, std::string("cpu")), 0.25);
  EXPECT_TRUE(std::isnan(ctx.Load(c, "disk")));
  EXPECT_TRUE(std::isnan(ctx.Load(c, std::string_view())));
  EXPECT_TRUE(std::isnan(ctx.Load(c, std::string_view()))) << "asked twice: the remembered empty name";
  EXPECT_TRUE(ctx.Reported("mem"));
  EXPECT_FALSE(ctx.Reported("disk")) << "no node reported it";
  EXPECT_FALSE(ctx.Reported(std::string(40, 'x'))) << "longer than any metric name";
}

// Through the router: what it keeps in the hot entries is what it did.
class NodeHotRouterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    name_ = "approute-nodehot-router-" + std::to_string(getpid());
    (void)Router::Unlink(name_);
  }
  void TearDown() override { (void)Router::Unlink(name_); }
  std::string name_;
};

TEST_F(NodeHotRouterTest, CountsAdminStateAndLoadMatchWhatTheRouterDid) {
  std::string y = testing::PoolYaml(40, "    resource: conference\n    strategy: least_loaded\n",
                                    "capacity: {conference: 3}", "{max_nodes: 48}");
  std::unique_ptr<Router> r = testing::MakeRouter(y, RouterOptions{.shared = name_});
  ASSERT_NE(r, nullptr);
  absl::StatusOr<std::unique_ptr<Region>> region = Region::AttachShared(name_);
  ASSERT_TRUE(region.ok()) << region.status();
  NodeTable view(**region);
  uint32_t conf = 0;
  {
    RegistryLock g((*region)->header());
    conf = view.ResourceIndexLocked("conference", false);
  }
  ASSERT_NE(conf, kNil);
  auto hot = [&](const std::string& id) -> NodeHot& {
    RegistryLock g((*region)->header());
    return (*region)->hot(view.FindLocked(id));
  };
  ASSERT_TRUE(r->Drain("n3").ok());
  ASSERT_TRUE(r->SetState("n4", AdminState::kDisabled).ok());
  ASSERT_TRUE(r->ReportLoad("n5", {{"cpu", 2.5}}).ok());  // a figure that is no resource: admission ignores it
  EXPECT_EQ(hot("n3").admin.load(), static_cast<uint32_t>(AdminState::kDraining));
  EXPECT_EQ(hot("n4").admin.load(), static_cast<uint32_t>(AdminState::kDisabled));
  EXPECT_NE(hot("n5").load_mask.load(), 0u);
  // Fill the pool: 38 usable nodes x capacity 3; every count is what was placed.
  std::map<std::string, int64_t> placed;
  std::vector<std::string> node_of;
  for (int i = 0; i < 38 * 3; ++i) {
    Decision d = testing::MustRoute(*r, "app", "call-" + std::to_string(i));
    ASSERT_TRUE(d.ok) << d.detail;
    ++placed[d.node_id];
    node_of.push_back(d.node_id);
  }
  RouteRequest more{.app = "app", .call_id = "one-too-many"};
  absl::StatusOr<Decision> full = r->Route(more);
  ASSERT_TRUE(full.ok());
  EXPECT_FALSE(full->ok) << "capacity is never exceeded";
  EXPECT_EQ(placed.count("n3") + placed.count("n4"), 0u) << "draining and disabled nodes take no new calls";
  for (int i = 0; i < 40; ++i) {
    const std::string id = "n" + std::to_string(i);
    EXPECT_EQ(hot(id).sessions[conf].load(), placed[id]) << id;
  }
  // End every other call: the counts follow, and the API reads the same entries.
  for (size_t i = 0; i < node_of.size(); i += 2) {
    ASSERT_TRUE(r->End("call-" + std::to_string(i)).ok());
    --placed[node_of[i]];
  }
  for (const NodeStatus& n : r->Nodes()) {
    auto it = n.sessions.find("conference");
    EXPECT_EQ(hot(n.spec.id).sessions[conf].load(), placed[n.spec.id]) << n.spec.id;
    EXPECT_EQ(it == n.sessions.end() ? 0 : it->second, placed[n.spec.id]) << n.spec.id;
  }
  // A node removed and another added into its slot: a fresh incarnation, no old counts.
  ASSERT_TRUE(r->RemoveNode("n0").ok());
  NodeSpec fresh;
  fresh.id = "fresh";
  fresh.uri = "sip:10.0.1.1:5060";
  fresh.pool = "media";
  fresh.capacity["conference"] = 3;
  ASSERT_TRUE(r->AddNode(fresh).ok());
  EXPECT_EQ(hot("fresh").sessions[conf].load(), 0);
  EXPECT_EQ(ExpectMirrorsAgree(**region), 40);
}

}  // namespace
}  // namespace approute::internal
