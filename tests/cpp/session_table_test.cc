// SessionTable: insert, duplicates, expiry, modify, and a crash half-way.
#include "state/session_table.h"

#include <gtest/gtest.h>

#include "region_fixture.h"
#include "state/shard.h"

namespace approute::internal {
namespace {

using SessionTableTest = testing::RegionTest;

SessionInit Init(std::string_view call, uint32_t node, int64_t now, int64_t lifetime = 1000) {
  SessionInit i;
  i.call_id = call;
  i.node = node;
  i.created_ms = now;
  i.expires_ms = now + lifetime;
  return i;
}

TEST_F(SessionTableTest, AddGetRemove) {
  SessionTable t(*region_);
  SessionEntry existing{};
  std::vector<Held> expired;
  EXPECT_EQ(t.Add(Init("c1", 3, 100), 100, &existing, &expired), SessionTable::Insert::kInserted);
  EXPECT_EQ(t.Add(Init("c1", 4, 100), 100, &existing, &expired), SessionTable::Insert::kDuplicate);
  EXPECT_EQ(existing.node, 3u) << "the first session is kept";
  ASSERT_TRUE(t.Get("c1", 100).has_value());
  EXPECT_EQ(t.Count(), 1);
  Held h;
  EXPECT_TRUE(t.Remove("c1", &h));
  EXPECT_EQ(h.node, 3u);
  EXPECT_FALSE(t.Remove("c1", &h));
  EXPECT_EQ(t.Count(), 0);
}

// Alloc() does not zero an entry: an insert must set every field, so a
// session that reuses a freed entry shows nothing of the one before it.
TEST_F(SessionTableTest, AReusedEntryKeepsNothingOfItsLastSession) {
  SessionTable t(*region_);
  SessionEntry existing{};
  std::vector<Held> expired;
  const std::map<std::string, std::string> attrs{{"from", "alice"}, {"to", "bob"}};
  const uint32_t tried[2] = {7, 8};
  SessionInit full = Init("first-call", 3, 100);
  full.key = "tenant.example.com";
  full.claim = 42;
  full.app = 2;
  full.resource = 1;
  full.attrs = &attrs;
  full.tried = tried;
  full.n_tried = 2;
  ASSERT_EQ(t.Add(full, 100, &existing, &expired), SessionTable::Insert::kInserted);
  Held h;
  ASSERT_TRUE(t.Confirm("first-call", &h));
  ASSERT_TRUE(t.Remove("first-call", &h));
  const size_t shard = SessionTable::Hash("first-call") >> 60;
  Shard<SessionEntry> sh(*region_, region_->header().session_shards[shard]);
  const uint32_t freed = sh.header().free_head;
  ASSERT_NE(freed, kNil);
  std::string second;  // a call id in the same shard, so it takes the freed entry
  for (int i = 0; second.empty(); ++i) {
    std::string id = "second-" + std::to_string(i);
    if ((SessionTable::Hash(id) >> 60) == shard) second = id;
  }
  ASSERT_EQ(t.Add(Init(second, 5, 200), 200, &existing, &expired), SessionTable::Insert::kInserted);
  ASSERT_EQ(GetFixed(sh.at(freed).call_id), second) << "the freed entry was reused";
  std::optional<SessionEntry> e = t.Get(second, 200);
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->node, 5u);
  EXPECT_EQ(GetFixed(e->key), "");
  EXPECT_EQ(e->claim, 0u);
  EXPECT_EQ(e->app, 0u);
  EXPECT_EQ(e->resource, 0u);
  EXPECT_EQ(e->confirmed, 0);
  EXPECT_EQ(e->attempt, 1);
  EXPECT_EQ(e->n_tried, 0u);
  EXPECT_TRUE(SessionTable::UnpackAttrs(e->attrs).empty());
}

TEST_F(SessionTableTest, ExpiredSessionsAreReplacedAndSwept) {
  SessionTable t(*region_);
  SessionEntry existing{};
  std::vector<Held> expired;
  ASSERT_EQ(t.Add(Init("c1", 1, 0, 10), 0, &existing, &expired), SessionTable::Insert::kInserted);
  EXPECT_FALSE(t.Get("c1", 20).has_value());
  ASSERT_EQ(t.Add(Init("c1", 2, 20), 20, &existing, &expired), SessionTable::Insert::kInserted);
  ASSERT_EQ(expired.size(), 1u);
  EXPECT_EQ(expired[0].node, 1u) << "what the expired session held is handed back";
  ASSERT_EQ(t.Add(Init("c2", 5, 20, 10), 20, &existing, &expired), SessionTable::Insert::kInserted);
  std::vector<Held> swept;
  int64_t n = 0;
  for (size_t s = 0; s < kShards; ++s) n += t.Expire(s, 2000, &swept);
  EXPECT_EQ(n, 2);
  EXPECT_EQ(region_->header().expired_sessions.load(), 3);
  EXPECT_EQ(t.Count(), 0);
}

// The routing path sweeps in slices (Shard::RemoveIfBounded): a slice removes
// only what its buckets hold, the next slice goes on where it stopped, and
// enough slices find every expired session with the counts right.
TEST_F(SessionTableTest, BoundedExpirySweepsInSlicesAndWraps) {
  SessionTable t(*region_);
  SessionEntry existing{};
  std::vector<Held> expired;
  for (int i = 0; i < 100; ++i) {
    ASSERT_EQ(t.Add(Init("c" + std::to_string(i), 1, 0, 10), 0, &existing, &expired), SessionTable::Insert::kInserted);
  }
  const uint32_t nb = region_->header().session_shards[0].nbuckets;
  ASSERT_GT(nb, 3u);
  std::vector<Held> swept;
  int64_t first = 0;
  for (size_t s = 0; s < kShards; ++s) first += t.Expire(s, 2000, &swept, 3);
  EXPECT_GT(first, 0);
  EXPECT_LT(first, 100) << "one slice of 3 buckets a shard must not see the whole table";
  EXPECT_EQ(t.Count(), 100 - first);
  int64_t total = first;
  for (uint32_t round = 1; round * 3 < nb + 3; ++round) {
    for (size_t s = 0; s < kShards; ++s) total += t.Expire(s, 2000, &swept, 3);
  }
  EXPECT_EQ(total, 100);
  EXPECT_EQ(swept.size(), 100u);
  EXPECT_EQ(t.Count(), 0);
  for (size_t s = 0; s < kShards; ++s) EXPECT_LT(region_->header().session_shards[s].sweep_next, nb);
}

TEST_F(SessionTableTest, ModifyAndFull) {
  SessionTable t(*region_);
  SessionEntry existing{};
  std::vector<Held> expired;
  ASSERT_EQ(t.Add(Init("c1", 1, 0), 0, &existing, &expired), SessionTable::Insert::kInserted);
  Held h;
  EXPECT_TRUE(t.Modify(
      "c1", 0,
      [](SessionEntry& e) {
        e.node = 9;
        return false;
      },
      &h));
  EXPECT_EQ(t.Get("c1", 0)->node, 9u);
  EXPECT_TRUE(t.Modify(
      "c1", 0, [](SessionEntry&) { return true; }, &h));
  EXPECT_EQ(h.node, 9u);
  EXPECT_FALSE(t.Get("c1", 0).has_value());
  // Fill the table: some shard fills first and then refuses.
  int inserted = 0;
  SessionTable::Insert r = SessionTable::Insert::kInserted;
  std::vector<std::string> ids;
  for (int i = 0; i < 2000 && r != SessionTable::Insert::kFull; ++i) {
    ids.push_back("x" + std::to_string(i));
    r = t.Add(Init(ids.back(), 1, 0), 0, &existing, &expired);
    if (r == SessionTable::Insert::kInserted) ++inserted;
  }
  EXPECT_EQ(r, SessionTable::Insert::kFull);
  EXPECT_GE(inserted, 256);
  EXPECT_EQ(t.Count(), inserted);
}

TEST_F(SessionTableTest, RebuildRecoversFromAProcessKilledMidInsert) {
  SessionTable t(*region_);
  SessionEntry existing{};
  std::vector<Held> expired;
  ASSERT_EQ(t.Add(Init("keep", 1, 0), 0, &existing, &expired), SessionTable::Insert::kInserted);
  // A process took a free entry and died before committing it: the entry is
  // neither free nor live, and the shard's chains are as they were.
  ShardHeader& sh = region_->header().session_shards[0];
  Shard<SessionEntry> shard(*region_, sh);
  uint32_t before_free = shard.FreeCount();
  uint32_t lost = shard.Alloc();
  ASSERT_NE(lost, kNil);
  SetFixed(shard.at(lost).call_id, "half-written");
  uint32_t after_free = shard.FreeCount();
  EXPECT_EQ(after_free, before_free - 1);
  shard.Rebuild();
  uint32_t rebuilt_free = shard.FreeCount();
  EXPECT_EQ(rebuilt_free, before_free) << "the uncommitted entry is free again";
  EXPECT_EQ(sh.free_head, lost) << "it was taken from the never-used entries and is now on the free list";
  EXPECT_TRUE(t.Get("keep", 0).has_value()) << "committed entries survive a rebuild";
  EXPECT_FALSE(t.Get("half-written", 0).has_value());
}

TEST_F(SessionTableTest, ListFilters) {
  SessionTable t(*region_);
  SessionEntry existing{};
  std::vector<Held> expired;
  for (int i = 0; i < 5; ++i) {
    ASSERT_EQ(t.Add(Init("c" + std::to_string(i), static_cast<uint32_t>(i % 2), 0), 0, &existing, &expired),
              SessionTable::Insert::kInserted);
  }
  EXPECT_EQ(t.List(
                 0, [](const SessionEntry&) { return true; }, 0)
                .size(),
            5u);
  EXPECT_EQ(t.List(
                 0, [](const SessionEntry& e) { return e.node == 1; }, 0)
                .size(),
            2u);
  EXPECT_EQ(t.List(
                 0, [](const SessionEntry&) { return true; }, 3)
                .size(),
            3u);
  EXPECT_EQ(t.List(
                 5000, [](const SessionEntry&) { return true; }, 0)
                .size(),
            0u)
      << "expired are not listed";
}

}  // namespace
}  // namespace approute::internal
