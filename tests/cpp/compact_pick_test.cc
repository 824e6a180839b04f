// The compact placement path (compact_pick.h, candidate_scan.h) decides as
// the full one: a pool scan writes the same members, counts and capacities
// (and the same tally) as Candidates, and each built-in compact strategy
// picks the index its Pick() picks from the same candidates with the same
// tickets and random numbers.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "region_fixture.h"
#include "router/candidate_scan.h"
#include "routing/compact_pick.h"

namespace approute::internal {
namespace {

// Tickets and random numbers from a seed, so two contexts built alike hand
// both paths the same draws.
class ScriptedContext final : public StrategyContext {
 public:
  ScriptedContext(uint64_t seed, bool reported)
      : rng_(seed), reported_(reported), first_(seed * 7919), ticket_(first_) {}
  double Load(const Candidate& c, std::string_view) override {
    return reported_ ? static_cast<double>(c.slot % 7) : std::numeric_limits<double>::quiet_NaN();
  }
  NodeFeedback Feedback(const Candidate&) override { return {}; }
  int64_t NowMs() override { return 1000; }
  uint64_t NextTicket() override { return ticket_++; }
  void WithSharedSlots(const std::function<void(absl::Span<int64_t>)>&) override {}
  uint64_t Random() override { return rng_(); }
  bool Reported(std::string_view) override { return reported_; }
  uint64_t draws() const { return ticket_ - first_; }

 private:
  std::mt19937_64 rng_;
  bool reported_;
  uint64_t first_, ticket_;
};

struct Case {
  std::vector<Candidate> cands;
  std::vector<uint32_t> member;
  std::vector<int64_t> sessions, capacity;
  Eligible View() const { return Eligible{member.data(), sessions.data(), capacity.data(), cands.size()}; }
};

// n candidates with counts and capacities drawn so that ties (least_loaded),
// unlimited (-1) and zero capacities all occur.
Case RandomCase(std::mt19937_64& rng, size_t n) {
  Case c;
  for (size_t i = 0; i < n; ++i) {
    Candidate x;
    x.slot = static_cast<uint32_t>(i * 3);
    x.capacity = static_cast<int64_t>(rng() % 6) - 1;  // -1 .. 4
    x.sessions = x.capacity > 0 ? static_cast<int64_t>(rng() % static_cast<uint64_t>(x.capacity))
                                : static_cast<int64_t>(rng() % 3);
    c.cands.push_back(x);
    c.member.push_back(static_cast<uint32_t>(i));
    c.sessions.push_back(x.sessions);
    c.capacity.push_back(x.capacity);
  }
  return c;
}

void ExpectSamePicks(const std::string& name, const StrategyParams& params) {
  absl::StatusOr<std::unique_ptr<Strategy>> made = MakeStrategy(name, params);
  ASSERT_TRUE(made.ok()) << made.status();
  auto* compact = dynamic_cast<const CompactStrategy*>(made->get());
  ASSERT_NE(compact, nullptr) << name << " has a compact pick";
  std::mt19937_64 rng(7);
  PickRequest req{.app = "conf", .resource = "conference", .call_id = "c1"};
  std::vector<size_t> seen;
  for (int round = 0; round < 4000; ++round) {
    Case c = RandomCase(rng, 1 + rng() % 40);
    ScriptedContext full_ctx(round, false), compact_ctx(round, false);
    absl::StatusOr<size_t> want = (*made)->Pick(req, absl::MakeConstSpan(c.cands), full_ctx);
    std::optional<size_t> got = compact->PickCompact(req, c.View(), compact_ctx);
    ASSERT_TRUE(want.ok());
    ASSERT_TRUE(got.has_value()) << name;
    ASSERT_EQ(*got, *want) << name << " round " << round << " of " << c.cands.size();
    ASSERT_EQ(compact_ctx.draws(), full_ctx.draws()) << name << ": the same tickets were taken";
    seen.push_back(*got);
  }
  std::sort(seen.begin(), seen.end());
  EXPECT_GT(std::unique(seen.begin(), seen.end()) - seen.begin(), 10) << name << " picks vary";
}

TEST(CompactPick, RoundRobinPicksAsItsFullPick) { ExpectSamePicks("round_robin", {}); }
TEST(CompactPick, P2CPicksAsItsFullPick) { ExpectSamePicks("p2c", {}); }
TEST(CompactPick, RandomPicksAsItsFullPick) { ExpectSamePicks("random", {}); }
TEST(CompactPick, LeastLoadedPicksAsItsFullPick) { ExpectSamePicks("least_loaded", {}); }
TEST(CompactPick, LeastLoadedRelativePicksAsItsFullPick) { ExpectSamePicks("least_loaded", {{"mode", "relative"}}); }

TEST(CompactPick, LeastLoadedAsksForFullCandidatesWhenANodeReportsTheResource) {
  absl::StatusOr<std::unique_ptr<Strategy>> made = MakeStrategy("least_loaded", {});
  ASSERT_TRUE(made.ok());
  std::mt19937_64 rng(1);
  Case c = RandomCase(rng, 8);
  ScriptedContext ctx(1, true);
  PickRequest req{.app = "conf", .resource = "conference", .call_id = "c1"};
  EXPECT_FALSE(dynamic_cast<const CompactStrategy*>(made->get())->PickCompact(req, c.View(), ctx).has_value());
  EXPECT_EQ(ctx.draws(), 0u) << "nothing drawn before handing over to the full path";
}

TEST(CompactPick, StrategiesThatNeedEveryFieldHaveNoCompactPick) {
  for (const char* name : {"weighted_round_robin", "weighted_random", "hash", "priority", "latency"}) {
    absl::StatusOr<std::unique_ptr<Strategy>> made = MakeStrategy(name, {});
    ASSERT_TRUE(made.ok()) << name << ": " << made.status();
    EXPECT_EQ(dynamic_cast<const CompactStrategy*>(made->get()), nullptr) << name;
  }
}

// Members 0..n-1 with member i accepted when accept[i]; loads i % 5 of 8.
struct Pool {
  std::vector<bool> accept;
  int probes = 0;
  bool Probe(size_t m, int64_t* s, int64_t* c) {
    ++probes;
    *s = static_cast<int64_t>(m % 5);
    *c = 8;
    return accept.at(m);
  }
  // One sampled pick of `strategy` over this pool.
  std::optional<size_t> Draw(const CompactStrategy& strategy, StrategyContext& ctx) {
    PickRequest req{.app = "conf", .resource = "conference", .call_id = "c1"};
    return strategy.PickSampled(
        req, accept.size(), [&](size_t x, int64_t* s, int64_t* cap) { return Probe(x, s, cap); }, ctx);
  }
};

std::unique_ptr<Strategy> Make(const std::string& name) {
  absl::StatusOr<std::unique_ptr<Strategy>> made = MakeStrategy(name, {});
  EXPECT_TRUE(made.ok()) << made.status();
  return *std::move(made);
}

TEST(SampledPick, RoundRobinGivesEveryAcceptedMemberOneCallPerRotation) {
  std::unique_ptr<Strategy> rr = Make("round_robin");
  auto* c = dynamic_cast<const CompactStrategy*>(rr.get());
  Pool pool{{true, false, true, true, false, false, true, true}};
  ScriptedContext ctx(3, false);
  std::vector<int> calls(pool.accept.size());
  for (int i = 0; i < 500; ++i) {
    std::optional<size_t> m = pool.Draw(*c, ctx);
    ASSERT_TRUE(m.has_value());
    ASSERT_TRUE(pool.accept[*m]) << "member " << *m << " cannot take the call";
    ++calls[*m];
  }
  for (size_t i = 0; i < calls.size(); ++i) {
    if (pool.accept[i]) {
      EXPECT_EQ(calls[i], 100) << "member " << i;
    } else {
      EXPECT_EQ(calls[i], 0) << "member " << i;
    }
  }
}

TEST(SampledPick, P2CPicksTheLessLoadedOfTwoAcceptedMembersUniformly) {
  std::unique_ptr<Strategy> p2c = Make("p2c");
  auto* c = dynamic_cast<const CompactStrategy*>(p2c.get());
  Pool pool{std::vector<bool>(10, true)};
  for (size_t i : {1, 4, 8}) pool.accept[i] = false;
  ScriptedContext ctx(5, false);
  std::vector<int> calls(pool.accept.size());
  const int kCalls = 70000;
  int handed_over = 0;
  for (int i = 0; i < kCalls; ++i) {
    std::optional<size_t> m = pool.Draw(*c, ctx);
    if (!m.has_value()) {  // 16 draws without two accepted members: the scan's turn
      ++handed_over;
      continue;
    }
    ASSERT_TRUE(pool.accept[*m]) << "member " << *m << " cannot take the call";
    ++calls[*m];
  }
  EXPECT_LT(handed_over, 10) << "with 7 of 10 accepted, 16 draws almost always find two";
  // Accepted: 0 2 3 5 6 7 9 with loads 0 2 3 0 1 2 4 (of 8). A uniform pair
  // of distinct members among the 7, the lower load winning and ties split:
  // load 0 (members 0 and 5) wins every pair it is in: each (6 pairs + half
  // of the pair of both) = 5.5/21 of the calls; member 9 (load 4) never.
  const double pairs = 21.0;
  for (size_t i : {0u, 5u}) EXPECT_NEAR(calls[i] / static_cast<double>(kCalls), 5.5 / pairs, 0.01) << i;
  EXPECT_NEAR(calls[6] / static_cast<double>(kCalls), 4.0 / pairs, 0.01);  // beats 2, 3, 7, 9
  EXPECT_EQ(calls[9], 0);
}

TEST(SampledPick, RandomPicksUniformlyAmongAcceptedMembers) {
  std::unique_ptr<Strategy> st = Make("random");
  auto* c = dynamic_cast<const CompactStrategy*>(st.get());
  Pool pool{std::vector<bool>(10, true)};
  for (size_t i : {2, 3, 7}) pool.accept[i] = false;
  ScriptedContext ctx(11, false);
  std::vector<int> calls(pool.accept.size());
  const int kCalls = 70000;
  for (int i = 0; i < kCalls; ++i) {
    std::optional<size_t> m = pool.Draw(*c, ctx);
    ASSERT_TRUE(m.has_value());  // 0.3^16: never in 70,000
    ++calls[*m];
  }
  for (size_t i = 0; i < calls.size(); ++i) {
    if (pool.accept[i]) {
      EXPECT_NEAR(calls[i] / static_cast<double>(kCalls), 1.0 / 7, 0.01) << i;
    } else {
      EXPECT_EQ(calls[i], 0) << i;
    }
  }
}

TEST(SampledPick, FewAcceptedMembersHandOverToTheScan) {
  for (const char* name : {"round_robin", "random", "p2c"}) {
    std::unique_ptr<Strategy> st = Make(name);
    auto* c = dynamic_cast<const CompactStrategy*>(st.get());
    Pool pool{std::vector<bool>(1024, false)};
    pool.accept[700] = true;  // one in 1,024: the draws miss it
    ScriptedContext ctx(9, false);
    std::optional<size_t> m = pool.Draw(*c, ctx);
    if (std::string(name) == "p2c") {
      EXPECT_FALSE(m.has_value()) << "p2c needs two";
    }
    EXPECT_LE(pool.probes, kMaxSampleDraws) << name << ": a bounded number of draws";
  }
  std::unique_ptr<Strategy> ll = Make("least_loaded");
  Pool pool{std::vector<bool>(8, true)};
  ScriptedContext ctx(1, false);
  EXPECT_FALSE(pool.Draw(*dynamic_cast<const CompactStrategy*>(ll.get()), ctx).has_value())
      << "least_loaded must see every member";
}

TEST(EligibleList, EraseKeepsTheOrderOfTheRest) {
  EligibleList l;
  l.member = {0, 1, 2, 3};
  l.sessions = {10, 11, 12, 13};
  l.capacity = {20, 21, 22, 23};
  l.n = 4;
  l.Erase(1);
  ASSERT_EQ(l.n, 3u);
  EXPECT_EQ(std::vector<uint32_t>(l.member.begin(), l.member.begin() + 3), (std::vector<uint32_t>{0, 2, 3}));
  EXPECT_EQ(l.sessions[2], 13);
  EXPECT_EQ(l.capacity[1], 22);
}

using CandidateScanTest = testing::RegionTest;

// Both sinks of ScanPool over the same hot entries, with every reason to
// leave a member out in play.
TEST_F(CandidateScanTest, CompactAndFullScansAgreeOnEveryMemberAndTheTally) {
  std::mt19937_64 rng(42);
  const int kNodes = 14;
  for (int i = 0; i < kNodes; ++i) {
    ASSERT_TRUE(nodes_->Add(Spec("n" + std::to_string(i), 3)).ok());
  }
  ASSERT_TRUE(nodes_->Add(Spec("other", 3, "elsewhere")).ok());
  const uint32_t res = Res("conference");
  std::shared_ptr<Snapshot> snap = nodes_->BuildSnapshot();
  const PoolView& pv = *snap->Pool("media");
  ASSERT_EQ(pv.slot.size(), static_cast<size_t>(kNodes));
  const int64_t now = 100000;
  size_t total_kept = 0, total_suspect_tier = 0;
  for (int round = 0; round < 500; ++round) {
    for (int i = 0; i < kNodes; ++i) {
      NodeHot& n = Hot("n" + std::to_string(i));
      const uint64_t r = rng();
      n.admin.store(r % 9 == 0   ? static_cast<uint32_t>(AdminState::kDisabled)
                    : r % 9 == 1 ? static_cast<uint32_t>(AdminState::kDraining)
                                 : static_cast<uint32_t>(AdminState::kActive));
      const uint64_t h = (r >> 8) % 10;
      n.health.store(h == 0   ? static_cast<uint32_t>(Health::kDown)
                     : h <= 2 ? static_cast<uint32_t>(Health::kSuspect)
                              : static_cast<uint32_t>(Health::kUp));
      n.lease_expires_ms.store((r >> 16) % 8 == 0 ? now - 1 : (r >> 16) % 8 == 1 ? now + 5000 : 0);
      n.ejected_until_ms.store((r >> 24) % 10 == 0 ? now + 1000 : 0);
      n.sessions[res].store(static_cast<int64_t>((r >> 32) % 4));  // 3 = full
    }
    SlotList avoid;
    if (round % 3 == 0) avoid.push_back(pv.slot[round % kNodes]);
    const bool panic = round % 5 == 0;
    CandidateList full;
    EligibleList compact;
    Tally tf, tc;
    CandidateSink fs(&full, pv, snap->resources.size());
    EligibleSink cs(&compact);
    ScanPool(pv, &region_->hot(0), res, /*extra=*/0, avoid, panic, now, /*shed_seed=*/0, fs, &tf);
    ScanPool(pv, &region_->hot(0), res, /*extra=*/0, avoid, panic, now, /*shed_seed=*/0, cs, &tc);
    ASSERT_EQ(compact.n, full.list.size()) << "round " << round;
    for (size_t i = 0; i < compact.n; ++i) {
      const Candidate& c = full.list[i];
      EXPECT_EQ(pv.slot[compact.member[i]], c.slot);
      EXPECT_EQ(pv.proto[compact.member[i]].id, c.id);
      EXPECT_EQ(compact.sessions[i], c.sessions);
      EXPECT_EQ(compact.capacity[i], c.capacity);
      EXPECT_LT(c.sessions, c.capacity) << "a full member is never a candidate";
    }
    EXPECT_EQ(tc.pool, tf.pool);
    EXPECT_EQ(tc.disabled, tf.disabled);
    EXPECT_EQ(tc.draining, tf.draining);
    EXPECT_EQ(tc.down, tf.down);
    EXPECT_EQ(tc.suspect, tf.suspect);
    EXPECT_EQ(tc.avoid, tf.avoid);
    EXPECT_EQ(tc.full, tf.full);
    total_kept += compact.n;
    if (compact.n > 0 && tc.suspect == 0) {
      for (size_t i = 0; i < compact.n; ++i) {
        if (Hot(std::string(pv.proto[compact.member[i]].id)).health.load() == static_cast<uint32_t>(Health::kSuspect) &&
            !panic) {
          ++total_suspect_tier;  // admitted by the second pass
          break;
        }
      }
    }
  }
  EXPECT_GT(total_kept, 500u) << "the random states leave candidates";
  EXPECT_GT(total_suspect_tier, 0u) << "the suspect-only pass was exercised";
}

}  // namespace
}  // namespace approute::internal
