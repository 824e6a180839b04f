// A private state region for the component tests.
#ifndef APPROUTE_TESTS_CPP_REGION_FIXTURE_H_
#define APPROUTE_TESTS_CPP_REGION_FIXTURE_H_

#include <gtest/gtest.h>

#include <memory>

#include "approute/config.h"
#include "node_table.h"
#include "region.h"

namespace approute::testing {

class RegionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    StateLimits l;
    l.max_nodes = 16;
    l.max_sessions = 256;
    l.max_affinities = 256;
    auto r = internal::Region::CreatePrivate(l);
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
  uint32_t Res(const std::string& name) { return nodes_->ResourceIndexLocked(name, true); }

  std::unique_ptr<internal::Region> region_;
  std::unique_ptr<internal::NodeTable> nodes_;
};

}  // namespace approute::testing

#endif  // APPROUTE_TESTS_CPP_REGION_FIXTURE_H_
