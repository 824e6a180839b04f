// pick_views.h — a built-in strategy's pick written once, over a view of the
// members it may choose from, and the three views it runs on:
//   CandidateView  Strategy::Pick's candidates (a Candidate per member)
//   EligibleView   the compact arrays of a pool scan (compact_pick.h)
//   SampledView    the whole pool through a probe, without a scan: only the
//                  members a draw lands on are looked at
// BuiltinPick<S> derives Strategy::Pick, PickCompact and PickSampled from
// S::Choose(request, view, context), so the three cannot disagree on what
// the strategy picks. The two list views draw alike (same index from the
// same tickets and random numbers, compact_pick_test.cc). The sampled view
// draws until the probe accepts (random numbers: uniform among the accepted
// members; tickets: a refused member passes its turn on), so its picks have
// the list views' distribution over the members that can take the call.
//
// A view offers:
//   kSeesEvery            whether every member can be read (false: sampled)
//   size(), sessions(i), capacity(i)             (views that see every member)
//   candidate(i)          the Candidate (CandidateView only: kHasCandidates)
//   DrawOne(next)         a member from next() % members, among those that
//                         can take the call; nullopt: the draws missed
//   DrawTwo(context, &two)  two distinct members (p2c), see Two; false:
//                         the draws found fewer than two
//
// Owns: nothing. Thread-safety: as Strategy::Pick.
#ifndef APPROUTE_SRC_ROUTING_STRATEGIES_PICK_VIEWS_H_
#define APPROUTE_SRC_ROUTING_STRATEGIES_PICK_VIEWS_H_

#include <cstddef>
#include <cstdint>
#include <optional>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "approute/strategy.h"
#include "routing/compact_pick.h"

namespace approute::internal {

// A member drawn, with its count and capacity of the app's resource.
// Filled by the draw (no initializers: a pick's draws are its hot path).
struct Drawn {
  size_t member;
  int64_t sessions;
  int64_t capacity;
};
// Two distinct members drawn uniformly (the same one twice when there is
// only one), and which of them a tie goes to (a random bit).
struct Two {
  Drawn a, b;
  bool tie_to_a;
};

// The members of a list (every one can take the call): each draw is one
// index; two distinct indexes come from one random number (its low part
// for the first, its high half for the second among the n - 1 others).
inline size_t OneOfList(size_t n, uint64_t draw) { return static_cast<size_t>(draw % n); }
inline void TwoOfList(size_t n, uint64_t random, size_t* a, size_t* b, bool* tie_to_a) {
  *a = static_cast<size_t>(random % n);
  *b = *a;
  *tie_to_a = (random & (1ULL << 31)) != 0;
  if (n == 1) return;
  *b = static_cast<size_t>((random >> 32) % (n - 1));
  if (*b >= *a) ++*b;
}

// The power of two choices' verdict on two drawn members a and b with
// scores sa and sb: the lower wins, a tie goes as the draw's bit says.
inline size_t LowerOfTwo(size_t a, size_t b, bool tie_to_a, double sa, double sb) {
  if (a == b) return a;  // one member
  if (sa == sb) return tie_to_a ? a : b;
  return sa < sb ? a : b;
}

// The power of two choices over a list of n: two distinct members drawn
// from `random` (TwoOfList), the one with the lower score(index) wins.
template <typename Score>
size_t PowerOfTwo(size_t n, uint64_t random, Score score) {
  size_t a, b;
  bool tie_to_a;
  TwoOfList(n, random, &a, &b, &tie_to_a);
  if (a == b) return a;
  return LowerOfTwo(a, b, tie_to_a, score(a), score(b));
}

// Base of the two list views: `View` has size(), sessions(i), capacity(i).
template <typename View>
class ListDraws {
 public:
  static constexpr bool kSeesEvery = true;
  template <typename Next>
  std::optional<size_t> DrawOne(Next next) const {
    return OneOfList(self().size(), next());
  }
  bool DrawTwo(StrategyContext& context, Two* t) const {
    TwoOfList(self().size(), context.Random(), &t->a.member, &t->b.member, &t->tie_to_a);
    t->a.sessions = self().sessions(t->a.member);
    t->a.capacity = self().capacity(t->a.member);
    t->b.sessions = self().sessions(t->b.member);
    t->b.capacity = self().capacity(t->b.member);
    return true;
  }

 private:
  const View& self() const { return static_cast<const View&>(*this); }
};

class CandidateView : public ListDraws<CandidateView> {
 public:
  static constexpr bool kHasCandidates = true;
  explicit CandidateView(absl::Span<const Candidate> c) : c_(c) {}
  size_t size() const { return c_.size(); }
  int64_t sessions(size_t i) const { return c_[i].sessions; }
  int64_t capacity(size_t i) const { return c_[i].capacity; }
  const Candidate& candidate(size_t i) const { return c_[i]; }

 private:
  absl::Span<const Candidate> c_;
};

class EligibleView : public ListDraws<EligibleView> {
 public:
  static constexpr bool kHasCandidates = false;
  // A copy of the pointers, not a reference: a scan over them keeps them in
  // registers.
  explicit EligibleView(const Eligible& e) : e_(e) {}
  size_t size() const { return e_.n; }
  int64_t sessions(size_t i) const { return e_.sessions[i]; }
  int64_t capacity(size_t i) const { return e_.capacity[i]; }

 private:
  const Eligible e_;
};

// The pool's `members` through `probe`: a draw lands on a member, which
// counts only if the probe accepts it, within kMaxSampleDraws probes.
class SampledView {
 public:
  static constexpr bool kSeesEvery = false;
  static constexpr bool kHasCandidates = false;
  SampledView(size_t members, MemberProbe probe) : members_(members), probe_(probe) {}

  // The first member next() % members the probe accepts: uniform among them
  // for random numbers; for tickets, a member that cannot take the call
  // passes its turn on to the next ticket.
  template <typename Next>
  std::optional<size_t> DrawOne(Next next) const {
    int64_t sessions, capacity;
    for (int d = 0; d < kMaxSampleDraws; ++d) {
      const size_t m = OneOfList(members_, next());
      if (probe_(m, &sessions, &capacity)) return m;
    }
    return std::nullopt;
  }
  // Members drawn uniformly until two distinct ones are accepted (uniform
  // among the distinct pairs of accepted members); each random number gives
  // two draws (its halves). False: fewer than two members, or the draws
  // found fewer than two.
  bool DrawTwo(StrategyContext& context, Two* t) const {
    if (members_ < 2) return false;
    Drawn* got[2] = {&t->a, &t->b};
    int k = 0;
    uint64_t r = 0;
    for (int d = 0; d < kMaxSampleDraws && k < 2; ++d) {
      if (d % 2 == 0) r = context.Random();
      const uint64_t half = d % 2 == 0 ? (r & 0xffffffffULL) : (r >> 32);
      const size_t m = OneOfList(members_, half);
      if (k == 1 && m == t->a.member) continue;
      if (probe_(m, &got[k]->sessions, &got[k]->capacity)) got[k++]->member = m;
    }
    t->tie_to_a = (r & (1ULL << 31)) != 0;
    return k == 2;
  }

 private:
  size_t members_;
  MemberProbe probe_;
};

// Strategy::Pick, PickCompact and PickSampled of a built-in strategy from
// its one pick: `const S& s; s.Choose(request, view, context)` returning
// std::optional<size_t> (nullopt: this view cannot serve the pick; never
// for CandidateView).
template <typename S>
class BuiltinPick : public Strategy, public CompactStrategy {
 public:
  absl::StatusOr<size_t> Pick(const PickRequest& request, absl::Span<const Candidate> candidates,
                              StrategyContext& context) override {
    const std::optional<size_t> i = self().Choose(request, CandidateView(candidates), context);
    if (!i) return absl::InternalError("the strategy made no pick from the full candidates");
    return *i;
  }
  std::optional<size_t> PickCompact(const PickRequest& request, const Eligible& e,
                                    StrategyContext& context) const override {
    return self().Choose(request, EligibleView(e), context);
  }
  std::optional<size_t> PickSampled(const PickRequest& request, size_t members, MemberProbe probe,
                                    StrategyContext& context) const override {
    return self().Choose(request, SampledView(members, probe), context);
  }

 private:
  const S& self() const { return static_cast<const S&>(*this); }
};

}  // namespace approute::internal

#endif  // APPROUTE_SRC_ROUTING_STRATEGIES_PICK_VIEWS_H_
