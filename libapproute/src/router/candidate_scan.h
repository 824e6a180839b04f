// candidate_scan.h — a placement's scan of its pool: which members may take
// a new call, written either as full Candidates (for any strategy) or as
// the compact arrays of compact_pick.h (for the built-ins that pick from
// them).
//
// Owns: the per-thread output buffers (CandidateList, EligibleList).
// Thread-safety: a buffer belongs to one thread; the scan reads node
// atomics only (relaxed: a placement re-checks capacity when it reserves).
#ifndef APPROUTE_SRC_ROUTER_CANDIDATE_SCAN_H_
#define APPROUTE_SRC_ROUTER_CANDIDATE_SCAN_H_

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/container/inlined_vector.h"
#include "approute/strategy.h"
#include "routing/compact_pick.h"
#include "state/node_table.h"
#include "state/region.h"
#include "state/usage.h"
#include "status/health.h"
#include "status/overload.h"

namespace approute::internal {

using SlotList = absl::InlinedVector<uint32_t, 8>;
inline bool Contains(const SlotList& l, uint32_t s) { return std::find(l.begin(), l.end(), s) != l.end(); }

// Why the candidate list came out empty, for the decision's detail.
struct Tally {
  size_t pool = 0, disabled = 0, draining = 0, down = 0, avoid = 0, full = 0, suspect = 0, busy = 0;
  size_t shed = 0;  // left out by RFC 7339 overload control for this call
};

// A thread's candidate list, kept from one placement to the next: entries
// [0, intact) still hold, in their static fields, the prototypes of `pool`
// (router `router`, snapshot `generation`), so a scan in which every node
// qualifies writes only each candidate's counts.
struct CandidateList {
  std::vector<Candidate> list;
  const PoolView* pool = nullptr;
  uint64_t router = 0, generation = 0;
  size_t intact = 0;

  void Erase(size_t i) {
    list.erase(list.begin() + static_cast<std::ptrdiff_t>(i));
    intact = std::min(intact, i);
  }
};

// A thread's compact candidates (Eligible), reused between placements.
struct EligibleList {
  std::vector<uint32_t> member;
  std::vector<int64_t> sessions, capacity;
  size_t n = 0;

  Eligible View() const { return Eligible{member.data(), sessions.data(), capacity.data(), n}; }
  void Erase(size_t i) {
    auto shift = [&](auto& v) {
      auto at = [&](size_t j) { return v.begin() + static_cast<std::ptrdiff_t>(j); };
      std::copy(at(i + 1), at(n), at(i));
    };
    shift(member);
    shift(sessions);
    shift(capacity);
    --n;
  }
};

// Live sessions of a node over all resources. Counts of resources never
// registered are 0, so this always sums the first four counts (all in the
// entry's first line) and the rest only when the region has more resources.
inline int64_t TotalSessions(const NodeHot& n, size_t n_resources) {
  int64_t total = n.sessions[0].load(std::memory_order_relaxed) + n.sessions[1].load(std::memory_order_relaxed) +
                  n.sessions[2].load(std::memory_order_relaxed) + n.sessions[3].load(std::memory_order_relaxed);
  for (size_t r = 4; r < n_resources; ++r) total += n.sessions[r].load(std::memory_order_relaxed);
  return total;
}

// Why a member may or may not take a new call (Tally counts the reasons).
enum class Verdict { kTake, kGone, kDisabled, kDraining, kDown, kSuspect, kBusy, kShed, kAvoid, kFull };

// A sink (CandidateSink, EligibleSink) is handed each member that may take
// the call (Add) and, through Skip, each one that may not with its verdict
// (the placement's sinks ignore it; a dry run records it).

// Writes full Candidates into a CandidateList, keeping the prototypes that
// are already in place.
class CandidateSink {
 public:
  CandidateSink(CandidateList* out, const PoolView& pv, size_t n_resources)
      : out_(out), protos_(pv.proto.data()), n_resources_(n_resources) {}
  void Begin(size_t members) {
    out_->list.resize(members);  // constructs only entries past the last call's end
    dst_ = out_->list.data();
    k_ = 0;
    intact_ = out_->intact;
    members_ = members;
  }
  void Add(size_t i, const NodeHot& n, int64_t sessions, int64_t capacity) {
    Candidate& c = dst_[k_];
    if (k_ != i || i >= intact_) c = protos_[i];  // not the prototype that is there already
    c.sessions = sessions;
    c.capacity = capacity;
    c.total_sessions = TotalSessions(n, n_resources_);
    ++k_;
  }
  void End() {
    // Entries before the first member left out hold their own prototypes.
    size_t first_gap = k_;
    if (k_ != members_) {
      first_gap = 0;
      while (first_gap < k_ && dst_[first_gap].slot == protos_[first_gap].slot) ++first_gap;
    }
    out_->intact = first_gap;
    out_->list.resize(k_);
  }
  void Skip(size_t, Verdict) {}
  bool Empty() const { return k_ == 0; }

 private:
  CandidateList* out_;
  const Candidate* protos_;
  size_t n_resources_;
  Candidate* dst_ = nullptr;
  size_t k_ = 0, intact_ = 0, members_ = 0;
};

// Writes the compact arrays: member index, sessions, capacity.
class EligibleSink {
 public:
  explicit EligibleSink(EligibleList* out) : out_(out) {}
  void Begin(size_t members) {
    if (out_->member.size() < members) {
      out_->member.resize(members);
      out_->sessions.resize(members);
      out_->capacity.resize(members);
    }
    m_ = out_->member.data();
    s_ = out_->sessions.data();
    c_ = out_->capacity.data();
    k_ = 0;
  }
  void Add(size_t i, const NodeHot&, int64_t sessions, int64_t capacity) {
    m_[k_] = static_cast<uint32_t>(i);
    s_[k_] = sessions;
    c_[k_] = capacity;
    ++k_;
  }
  void End() { out_->n = k_; }
  void Skip(size_t, Verdict) {}
  bool Empty() const { return k_ == 0; }

 private:
  EligibleList* out_;
  uint32_t* m_ = nullptr;
  int64_t* s_ = nullptr;
  int64_t* c_ = nullptr;
  size_t k_ = 0;
};

// An app of several resources: the first of `extra`'s resources (bit r =
// resource r) that the node whose hot entry is `n` has no room for (its
// count, or its own report of it, at its capacity `cap_of(r)`, -1 =
// unlimited), or kNil.
template <typename CapOf>
uint32_t FirstFull(const NodeHot& n, uint32_t extra, int64_t now, CapOf cap_of) {
  for (uint32_t r = 0; extra != 0; ++r, extra >>= 1) {
    if ((extra & 1u) == 0) continue;
    const int64_t cap = cap_of(r);
    if (cap >= 0 && UsageCount(n, r, n.sessions[r].load(std::memory_order_relaxed), now) >= cap) return r;
  }
  return kNil;
}
// FirstFull for member `member` of `pv`.
inline uint32_t FullExtra(const NodeHot& n, uint32_t extra, const PoolView& pv, size_t member, int64_t now) {
  return FirstFull(n, extra, now, [&pv, member](uint32_t r) { return pv.CapacityRow(r)[member]; });
}

// The verdict on one member whose hot entry is `n`, for an incarnation
// `epoch`, capacity `cap` of resource `res`: not disabled, draining, past
// its lease, down, ejected (unless `panic`), suspect (unless
// `admit_suspect`), busy (answered 503, within its Retry-After), shed for
// this call by RFC 7339 overload control (status/overload.h: the roll is a
// function of `shed_seed`, the call's, and the slot, so every look at the
// member within one call agrees), avoided or full, by its count or its own
// report of it (usage.h). With kTake, *sessions is that count (the higher of
// the two). An app of several resources (`extra` != 0: bit r = resource r)
// finds the member full as well when it is full for any of them: `pv` and
// `member` locate its capacities.
[[gnu::always_inline]] inline Verdict CheckMember(NodeHot& n, uint32_t slot, uint32_t epoch, int64_t cap, uint32_t res,
                                                  const SlotList& avoid, bool panic, bool admit_suspect, int64_t now,
                                                  uint64_t shed_seed, int64_t* sessions, uint32_t extra,
                                                  const PoolView& pv, size_t member) {
  if (n.epoch.load(std::memory_order_relaxed) != epoch) return Verdict::kGone;
  const uint32_t admin = n.admin.load(std::memory_order_relaxed);
  const uint32_t health = n.health.load(std::memory_order_relaxed);
  const int64_t lease = n.lease_expires_ms.load(std::memory_order_relaxed);
  const int64_t ejected = n.ejected_until_ms.load(std::memory_order_relaxed);
  const uint32_t shed = n.shed.load(std::memory_order_relaxed);
  static_assert(static_cast<uint32_t>(AdminState::kActive) == 0 && static_cast<uint32_t>(Health::kUp) == 0);
  // The common case (active, up, no lease, ejection or busy period to look
  // at) is one test.
  if ((admin | health | shed) != 0 || lease != 0 || ejected != 0) [[unlikely]] {
    if (admin == static_cast<uint32_t>(AdminState::kDisabled) || (lease != 0 && lease <= now))
      return Verdict::kDisabled;
    if (admin == static_cast<uint32_t>(AdminState::kDraining)) return Verdict::kDraining;
    if (!panic) {
      if (health == static_cast<uint32_t>(Health::kDown) || (ejected != 0 && HealthMonitor::Ejected(n, now))) {
        return Verdict::kDown;
      }
      if (health == static_cast<uint32_t>(Health::kSuspect) && !admit_suspect) return Verdict::kSuspect;
    }
    if ((shed & kShedBusy) != 0 && HealthMonitor::Busy(n, now)) return Verdict::kBusy;
    if ((shed & kShedOverload) != 0 && Overload::Shed(n, now, Overload::Roll(shed_seed, slot))) return Verdict::kShed;
  }
  if (!avoid.empty() && Contains(avoid, slot)) [[unlikely]]
    return Verdict::kAvoid;
  int64_t s = n.sessions[res].load(std::memory_order_relaxed);
  if (n.usage_mask.load(std::memory_order_relaxed) != 0) [[unlikely]]
    s = UsageCount(n, res, s, now);
  if (cap >= 0 && s >= cap) return Verdict::kFull;
  if (extra != 0 && FullExtra(n, extra, pv, member, now) != kNil) [[unlikely]]
    return Verdict::kFull;
  *sessions = s;
  return Verdict::kTake;
}

// ScanPool's loop; kExtra false: an app of one resource (`extra` is 0 and
// its check compiles away).
template <bool kExtra, typename Sink>
void ScanPoolOf(const PoolView& pv, NodeHot* hot, uint32_t res, uint32_t extra, const SlotList& avoid, bool panic,
                int64_t now, uint64_t shed_seed, Sink& sink, Tally* tally) {
  if constexpr (!kExtra) extra = 0;
  const size_t members = pv.slot.size();
  const uint32_t* slots = pv.slot.data();
  const uint32_t* epochs = pv.epoch.data();
  const int64_t* caps = pv.CapacityRow(res);
  for (int tier = 0; tier < 2; ++tier) {
    Tally t;
    t.pool = members;
    sink.Begin(members);
    for (size_t i = 0; i < members; ++i) {
      const uint32_t slot = slots[i];
      NodeHot& n = hot[slot];
      int64_t s = 0;
      const Verdict v =
          CheckMember(n, slot, epochs[i], caps[i], res, avoid, panic, tier == 1, now, shed_seed, &s, extra, pv, i);
      if (v != Verdict::kTake) sink.Skip(i, v);
      switch (v) {
        case Verdict::kTake:
          sink.Add(i, n, s, caps[i]);
          break;
        case Verdict::kGone:
          break;
        case Verdict::kDisabled:
          ++t.disabled;
          break;
        case Verdict::kDraining:
          ++t.draining;
          break;
        case Verdict::kDown:
          ++t.down;
          break;
        case Verdict::kSuspect:
          ++t.suspect;
          break;
        case Verdict::kBusy:
          ++t.busy;
          break;
        case Verdict::kShed:
          ++t.shed;
          break;
        case Verdict::kAvoid:
          ++t.avoid;
          break;
        case Verdict::kFull:
          ++t.full;
          break;
      }
    }
    sink.End();
    *tally = t;
    if (t.suspect == 0 || !sink.Empty()) break;
  }
}

// One pass over the pool's hot entries (one cache line each when the region
// has at most four resources), handing each member that may take a new call
// to `sink`: not disabled, draining, past its lease, down, ejected (unless
// `panic`), busy, shed, avoided or full for resource `res` (or for one of
// `extra`'s, CheckMember). Suspect members only when no
// member is up: a second pass then admits them. *tally says why members
// were left out.
template <typename Sink>
void ScanPool(const PoolView& pv, NodeHot* hot, uint32_t res, uint32_t extra, const SlotList& avoid, bool panic,
              int64_t now, uint64_t shed_seed, Sink& sink, Tally* tally) {
  if (extra == 0) [[likely]] {
    ScanPoolOf<false>(pv, hot, res, 0, avoid, panic, now, shed_seed, sink, tally);
  } else {
    ScanPoolOf<true>(pv, hot, res, extra, avoid, panic, now, shed_seed, sink, tally);
  }
}

}  // namespace approute::internal

#endif  // APPROUTE_SRC_ROUTER_CANDIDATE_SCAN_H_
