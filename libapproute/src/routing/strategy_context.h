// strategy_context.h — what a strategy sees of the state region while it
// picks: reported load, feedback, shared tickets and slots, random numbers.
//
// Owns: nothing (views over node records and the app's slot row).
// Locking: WithSharedSlots takes the app's robust mutex; the rest reads atomics.
#ifndef APPROUTE_SRC_ROUTING_STRATEGY_CONTEXT_H_
#define APPROUTE_SRC_ROUTING_STRATEGY_CONTEXT_H_

#include <atomic>
#include <cstdint>
#include <functional>

#include "approute/strategy.h"
#include "state/node_table.h"

namespace approute::internal {

// Per-thread random numbers, reseeded in a child after fork() so forked
// workers do not all draw the same sequence.
uint64_t ThreadRandom();
inline double UniformFrom(uint64_t r) { return static_cast<double>(r >> 11) * (1.0 / 9007199254740992.0); }

class RegionStrategyContext final : public StrategyContext {
 public:
  RegionStrategyContext(const Region& region, const NodeTable& nodes, uint32_t app, const Snapshot& snap, int64_t now,
                        std::atomic<uint64_t>* seeded, bool dry_run = false)
      : region_(region), nodes_(nodes), app_(app), snap_(snap), now_(now), seeded_(seeded), dry_run_(dry_run) {}

  double Load(const Candidate& c, std::string_view metric) override;
  NodeFeedback Feedback(const Candidate& c) override;
  int64_t NowMs() override { return now_; }
  uint64_t NextTicket() override;
  void WithSharedSlots(const std::function<void(absl::Span<int64_t>)>& fn) override;
  uint64_t Random() override;
  NodeStatus Describe(const Candidate& c) override;
  bool Reported(std::string_view metric) override { return MetricIndex(metric) != kNil; }

 private:
  const Region& region_;
  const NodeTable& nodes_;
  uint32_t app_;
  const Snapshot& snap_;
  int64_t now_;
  std::atomic<uint64_t>* seeded_;  // SplitMix64 state of a seeded router, or nullptr
  // A dry run (Router::Explain): the ticket is read, not taken; the shared
  // slots are a copy the strategy may change to no effect; random numbers
  // come from the thread's generator, not a seeded router's sequence.
  bool dry_run_ = false;

  // The name's index in snap_.metrics, kNil if none; the last name asked
  // is remembered, by value (a strategy asks the same one for every
  // candidate, often from a temporary string).
  uint32_t MetricIndex(std::string_view metric);
  char last_metric_[kNameLen];
  size_t last_len_ = SIZE_MAX;  // SIZE_MAX: nothing remembered
  uint32_t last_index_ = kNil;
};

}  // namespace approute::internal

#endif  // APPROUTE_SRC_ROUTING_STRATEGY_CONTEXT_H_
