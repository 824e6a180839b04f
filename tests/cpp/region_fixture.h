// A private state region for the component tests.
#ifndef APPROUTE_TESTS_CPP_REGION_FIXTURE_H_
#define APPROUTE_TESTS_CPP_REGION_FIXTURE_H_

#include <gtest/gtest.h>
#include <unistd.h>

#include <memory>
#include <string>

#include "approute/config.h"
#include "state/node_table.h"
#include "state/region.h"

namespace approute::testing {

class RegionTest : public ::testing::Test {
 protected:
  static StateLimits Limits(int64_t nodes, int64_t entries) {
    StateLimits l;
    l.max_nodes = nodes;
    l.max_sessions = entries;
    l.max_affinities = entries;
    return l;
  }
  void SetUp() override {
    auto r = internal::Region::CreatePrivate(Limits(16, 256));
    ASSERT_TRUE(r.ok()) << r.status();
    region_ = *std::move(r);
    nodes_ = std::make_unique<internal::NodeTable>(*region_);
  }
  NodeSpec Spec(const std::string& id, int64_t conference_cap = -1, const std::string& pool = "media") {
    NodeSpec s;
    s.id = id;
    s.uri = "sip:" + id + ".example.com";
    s.pool = pool;
    if (conference_cap >= 0) s.capacity["conference"] = conference_cap;
    return s;
  }
  // Slot of node `id` (registry lock not needed in a single-threaded test).
  uint32_t Slot(const std::string& id) { return nodes_->FindLocked(id); }
  internal::NodeRecord& Rec(const std::string& id) { return region_->node(Slot(id)); }
  internal::NodeHot& Hot(const std::string& id) { return region_->hot(Slot(id)); }
  uint32_t Res(const std::string& name) { return nodes_->ResourceIndexLocked(name, true); }

  std::unique_ptr<internal::Region> region_;
  std::unique_ptr<internal::NodeTable> nodes_;
};

// The same over a named shared segment, so that a forked child's changes
// (and death) are seen by the test.
class SharedRegionTest : public RegionTest {
 protected:
  void SetUp() override {
    name_ = "approute-" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->test_suite_name()) +
            "-" + std::to_string(getpid());
    (void)internal::Region::Unlink(name_);
    bool created = false;
    auto r = internal::Region::OpenShared(name_, Limits(8, 64), &created);
    ASSERT_TRUE(r.ok()) << r.status();
    region_ = *std::move(r);
    nodes_ = std::make_unique<internal::NodeTable>(*region_);
  }
  void TearDown() override { (void)internal::Region::Unlink(name_); }
  std::string name_;
};

}  // namespace approute::testing

#endif  // APPROUTE_TESTS_CPP_REGION_FIXTURE_H_
