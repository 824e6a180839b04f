// AffinityTable: join, claim, concurrent claims, drop and grace, a full table.
#include "state/affinity_table.h"

#include <gtest/gtest.h>

#include "region_fixture.h"

namespace approute::internal {
namespace {

using AffinityTableTest = testing::RegionTest;

auto Yes() {
  return [](uint32_t, uint32_t) { return true; };
}
auto No() {
  return [](uint32_t, uint32_t) { return false; };
}

TEST_F(AffinityTableTest, ClaimThenJoin) {
  AffinityTable t(*region_);
  AffinityKey k(1, "example.com");
  EXPECT_FALSE(t.Join(k, 0, Yes()).has_value()) << "no claim yet";
  absl::StatusOr<AffinityTable::ClaimOutcome> c = t.Claim(k, ClaimRef{3, 7, 0}, 1000, 0, Yes(), Yes());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_FALSE(c->moved);
  EXPECT_NE(c->ref.claim, 0u);
  std::optional<ClaimRef> j = t.Join(k, 0, Yes());
  ASSERT_TRUE(j.has_value());
  EXPECT_EQ(j->slot, 3u);
  EXPECT_EQ(j->claim, c->ref.claim);
  EXPECT_FALSE(t.Join(k, 0, No()).has_value()) << "a node the caller cannot use is not joined";
  EXPECT_FALSE(t.Join(AffinityKey(2, "example.com"), 0, Yes()).has_value()) << "keys are per app";
  auto rows = t.List(
      0, [](const AffinityEntry&) { return true; }, 0);
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].refs, 2);
}

TEST_F(AffinityTableTest, AConcurrentClaimIsJoinedSoAKeyNeverSplits) {
  AffinityTable t(*region_);
  AffinityKey k(1, "dom");
  ASSERT_TRUE(t.Claim(k, ClaimRef{3, 1, 0}, 1000, 0, Yes(), Yes()).ok());
  // Another process chose node 5 for the same key meanwhile.
  absl::StatusOr<AffinityTable::ClaimOutcome> c = t.Claim(k, ClaimRef{5, 1, 0}, 1000, 0, Yes(), Yes());
  ASSERT_TRUE(c.ok());
  EXPECT_TRUE(c->moved) << "it joins the existing claim and gives back node 5";
  EXPECT_EQ(c->ref.slot, 3u);
  // When the holder cannot take this call but still serves the key, the call goes without it.
  absl::StatusOr<AffinityTable::ClaimOutcome> d = t.Claim(k, ClaimRef{5, 1, 0}, 1000, 0, Yes(), No());
  ASSERT_TRUE(d.ok());
  EXPECT_FALSE(d->moved);
  EXPECT_EQ(d->ref.slot, 5u);
  EXPECT_EQ(d->ref.claim, 0u);
  // When the holder is gone, the key moves.
  absl::StatusOr<AffinityTable::ClaimOutcome> e = t.Claim(k, ClaimRef{6, 1, 0}, 1000, 0, No(), No());
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->ref.slot, 6u);
  EXPECT_NE(e->ref.claim, 0u);
  EXPECT_EQ(t.Join(k, 0, Yes())->slot, 6u);
}

TEST_F(AffinityTableTest, DropStartsGraceAndReleaseDeletes) {
  AffinityTable t(*region_);
  AffinityKey k(1, "dom");
  auto c = t.Claim(k, ClaimRef{3, 1, 0}, 1000, 0, Yes(), Yes());
  ASSERT_TRUE(c.ok());
  t.Drop(k, c->ref.claim, false, 50);
  auto rows = t.List(
      50, [](const AffinityEntry&) { return true; }, 0);
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].expires_ms, 1050) << "kept for its grace time";
  EXPECT_TRUE(t.Join(k, 500, Yes()).has_value()) << "a call within the grace time comes back";
  t.Drop(k, c->ref.claim, true, 600);
  EXPECT_FALSE(t.Join(k, 600, Yes()).has_value()) << "released by a full code";
  EXPECT_EQ(region_->header().affinity_count.load(), 0);
  t.Drop(k, 12345, false, 600);  // an unknown claim: nothing
}

TEST_F(AffinityTableTest, WhenFullClaimsInGraceGiveWayButLiveOnesNever) {
  AffinityTable t(*region_);
  // Fill the table with live claims (references held): a new key is refused.
  int live = 0;
  absl::Status last = absl::OkStatus();
  std::string refused;
  for (int i = 0; i < 5000 && last.ok(); ++i) {
    refused = "k" + std::to_string(i);
    auto c = t.Claim(AffinityKey(1, refused), ClaimRef{1, 1, 0}, 1000, 0, Yes(), Yes());
    last = c.status();
    if (c.ok()) ++live;
  }
  EXPECT_EQ(last.code(), absl::StatusCode::kResourceExhausted);
  const int64_t count = region_->header().affinity_count.load();
  EXPECT_EQ(count, live);
  // Let every claim enter its grace time: new keys now take the place of the
  // claims nearest the end of their grace.
  for (int i = 0; i <= live; ++i) {
    if ("k" + std::to_string(i) == refused) continue;
    const std::string name = "k" + std::to_string(i);  // AffinityKey holds a view: keep the string alive
    AffinityKey k(1, name);
    std::optional<ClaimRef> j = t.Join(k, 0, Yes());
    ASSERT_TRUE(j.has_value()) << k.key;
    t.Drop(k, j->claim, false, 0);  // the join's reference
    t.Drop(k, j->claim, false, 0);  // the claim's own: grace starts
  }
  // The key refused before (its shard is full) now gets a claim.
  auto n = t.Claim(AffinityKey(1, refused), ClaimRef{2, 1, 0}, 1000, 10, Yes(), Yes());
  EXPECT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(region_->header().affinity_count.load(), count) << "one claim in its grace gave way";
}

}  // namespace
}  // namespace approute::internal

namespace approute::internal {
namespace {

TEST_F(AffinityTableTest, AnAbandonedClaimNoAnsweredCallHeldGoesAtOnce) {
  AffinityTable t(*region_);
  AffinityKey k(1, "fresh.example.com");
  auto c = t.Claim(k, ClaimRef{3, 1, 0}, 1000, 0, Yes(), Yes());
  ASSERT_TRUE(c.ok());
  t.Drop(k, c->ref.claim, false, 0, /*abandoned=*/true);
  EXPECT_FALSE(t.Join(k, 0, Yes()).has_value()) << "never answered: no grace";
  EXPECT_EQ(region_->header().affinity_count.load(), 0);

  auto d = t.Claim(k, ClaimRef{3, 1, 0}, 1000, 0, Yes(), Yes());
  ASSERT_TRUE(d.ok());
  t.MarkAnswered(k, d->ref.claim);
  std::optional<ClaimRef> j = t.Join(k, 0, Yes());  // a second call joins
  ASSERT_TRUE(j.has_value());
  t.Drop(k, d->ref.claim, false, 0, /*abandoned=*/true);  // the second call is cancelled
  t.Drop(k, d->ref.claim, false, 0, /*abandoned=*/true);
  EXPECT_TRUE(t.Join(k, 10, Yes()).has_value()) << "an answered claim keeps its grace time";
}

}  // namespace
}  // namespace approute::internal
