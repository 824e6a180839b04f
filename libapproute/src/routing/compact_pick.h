// compact_pick.h — a placement's candidates as a few flat arrays, and the
// built-in strategies that can pick from them without a Candidate per node.
//
// A placement without affinity scans every node of the app's pool. Building
// an 80-byte Candidate for each one (and handing the strategy a span of
// them) is most of its cost at 1,024 nodes, although round_robin reads only
// how many there are, p2c two of them and least_loaded two numbers of each.
// A strategy that also implements CompactStrategy is handed Eligible
// instead; the router then builds the Candidate of the one it picked. The
// pick must be the one Strategy::Pick would make from the same candidates
// in the same order (same index, same draws from the context), so both
// paths route alike: the built-in strategies write their pick once and
// derive both from it (strategies/pick_views.h).
//
// Owns: nothing (views over the router's per-thread scan buffers).
// Thread-safety: as Strategy::Pick (one call per placement, any thread).
#ifndef APPROUTE_SRC_ROUTING_COMPACT_PICK_H_
#define APPROUTE_SRC_ROUTING_COMPACT_PICK_H_

#include <cstddef>
#include <cstdint>
#include <optional>

#include "absl/functional/function_ref.h"
#include "approute/strategy.h"

namespace approute::internal {

// Whether member `member` of the pool may take the call now, as the scan
// would decide in its first pass; when it may, its count and capacity for
// the app's resource go to *sessions and *capacity.
using MemberProbe = absl::FunctionRef<bool(size_t member, int64_t* sessions, int64_t* capacity)>;

// The pool members that may take the call, in pool order: entry i is member
// member[i] of the pool's view, with sessions[i] live sessions of the app's
// resource and capacity capacity[i] (-1 = unlimited) for it.
struct Eligible {
  const uint32_t* member = nullptr;
  const int64_t* sessions = nullptr;
  const int64_t* capacity = nullptr;
  size_t n = 0;
};

class CompactStrategy {
 public:
  virtual ~CompactStrategy() = default;
  // The index in [0, e.n) that Strategy::Pick would return for the same
  // candidates; nullopt when this pick needs the full candidates (the
  // router then builds them and calls Strategy::Pick). Called with e.n >= 1.
  virtual std::optional<size_t> PickCompact(const PickRequest& request, const Eligible& e,
                                            StrategyContext& context) const = 0;

  // Without a scan: a member index in [0, members) drawn as this strategy
  // draws, looking at only the members it draws (through `probe`), so a
  // placement costs the same in a pool of 1,024 as of 8. The draw must have
  // the distribution PickCompact has over the members `probe` accepts
  // (round_robin: the member of each ticket, a ticket whose member cannot
  // take the call passes its turn on; p2c: two distinct members uniformly
  // among those accepted). nullopt: no pick this way (few members accept,
  // or the strategy cannot sample); the router then scans.
  virtual std::optional<size_t> PickSampled(const PickRequest&, size_t /*members*/, MemberProbe /*probe*/,
                                            StrategyContext&) const {
    return std::nullopt;
  }
};

// Draws a sampling strategy makes before it hands over to the scan.
inline constexpr int kMaxSampleDraws = 16;

// Load as a fraction of capacity (RelativeLoad of a Candidate with these figures).
inline double RelativeLoadOf(int64_t sessions, int64_t capacity) {
  if (capacity > 0) return static_cast<double>(sessions) / static_cast<double>(capacity);
  if (capacity == 0) return 1e300;
  return static_cast<double>(sessions) * 1e-12;
}

}  // namespace approute::internal

#endif  // APPROUTE_SRC_ROUTING_COMPACT_PICK_H_
