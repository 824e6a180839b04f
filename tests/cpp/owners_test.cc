// Owners and the recount: a process killed inside a state change is found,
// and the count it left behind is recomputed from the records.
#include "state/owners.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include "region_fixture.h"
#include "state/recovery.h"
#include "state/session_table.h"

namespace approute::internal {
namespace {

using OwnersTest = testing::SharedRegionTest;

TEST_F(OwnersTest, RegistersOncePerProcessAndAgainAfterFork) {
  Owners o(*region_);
  absl::StatusOr<uint32_t> a = o.Self();
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(*o.Self(), *a);
  EXPECT_EQ(o.LiveCount(), 1);
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  pid_t pid = fork();
  if (pid == 0) {
    uint32_t mine = *o.Self();
    _exit(write(fds[1], &mine, sizeof(mine)) == sizeof(mine) ? 0 : 1);
  }
  uint32_t child = 0;
  ASSERT_EQ(read(fds[0], &child, sizeof(child)), static_cast<ssize_t>(sizeof(child)));
  waitpid(pid, nullptr, 0);
  EXPECT_NE(child, *a) << "a forked child has its own slot";
  EXPECT_TRUE(o.IsDead(child));
  EXPECT_EQ(o.CheckDead(), 0) << "it died outside any op: nothing to recount";
  EXPECT_FALSE(o.IsDead(child)) << "its slot was freed";
  close(fds[0]);
  close(fds[1]);
}

TEST_F(OwnersTest, ADeathInsideAnOpIsRecountedAway) {
  ASSERT_TRUE(nodes_->Add(Spec("a", 10)).ok());
  uint32_t res = Res("conference");
  Owners o(*region_);
  SessionTable sessions(*region_);
  // One real session on node a, counted.
  {
    auto op = o.Enter();
    ASSERT_TRUE(op.ok());
    ASSERT_TRUE(NodeTable::TryReserve(Hot("a"), res, 10));
    SessionInit init;
    init.call_id = "real";
    init.resource = res;
    init.node = Slot("a");
    init.epoch = Rec("a").epoch;
    init.expires_ms = 1'000'000;
    SessionEntry existing{};
    std::vector<Held> expired;
    ASSERT_EQ(sessions.Add(init, 0, &existing, &expired), SessionTable::Insert::kInserted);
  }
  // A child reserves capacity and dies before recording its session.
  pid_t pid = fork();
  if (pid == 0) {
    Owners mine(*region_);
    auto op = mine.Enter();
    NodeTable::TryReserve(region_->hot(nodes_->FindLocked("a")), res, 10);
    _exit(0);  // inside the op
  }
  waitpid(pid, nullptr, 0);
  EXPECT_EQ(Hot("a").sessions[res].load(), 2) << "the dead child's reservation";
  ASSERT_EQ(o.CheckDead(), 1);
  RecountResult got{};
  ASSERT_TRUE(o.RunExclusive(1000, [&] { got = Recount(*region_, 0); }));
  EXPECT_EQ(Hot("a").sessions[res].load(), 1) << "the count equals the live records";
  EXPECT_EQ(got.drift, 1);
  EXPECT_EQ(got.sessions, 1);
  EXPECT_EQ(o.CheckDead(), 0) << "the dead child's slot was freed";
  EXPECT_EQ(region_->header().repairs.load(), 1u);
}

TEST_F(OwnersTest, TheGateWaitsForALiveOp) {
  Owners o(*region_);
  auto op = o.Enter();
  ASSERT_TRUE(op.ok());
  bool ran = false;
  EXPECT_FALSE(o.RunExclusive(50, [&] { ran = true; })) << "this thread is inside an op";
  EXPECT_FALSE(ran);
  EXPECT_EQ(region_->header().repair_holder.load(), 0u) << "the gate opens again";
}

}  // namespace
}  // namespace approute::internal
