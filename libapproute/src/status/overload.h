// overload.h — RFC 7339 SIP overload control, the client's side with the
// loss algorithm: a node's answers carry Via parameters oc (the percentage
// of requests to shed, 0..100), oc-validity (ms) and oc-seq; the router
// sheds that share of the new calls it would send the node, for the
// validity period counted from when the report is applied. The newest oc-seq
// wins (RFC 7339 section 5.4): a report with a lower oc-seq than the one
// applied is stale and ignored; an equal one changes nothing while the
// period runs (it neither renews nor alters it) and starts a new period once
// it is over. oc = 0 or oc-validity = 0 ends overload control at once
// (sections 5.7 and 7.1).
//
// Owns: NodeHot::overload (and its kShedOverload bit),
// NodeRecord::overload_seq and Header::overload_until_ms.
// Locking: atomics only. Two processes applying two reports of one node at
// once may leave the older's figures under the newer's oc-seq until the
// node's next answer (which carries the newer figures again): a window of
// one reply, not worth a lock on every reply.
// Crash: each field is one atomic; nothing to repair.
#ifndef APPROUTE_SRC_STATUS_OVERLOAD_H_
#define APPROUTE_SRC_STATUS_OVERLOAD_H_

#include <cstdint>

#include "state/region.h"

namespace approute::internal {

// The longest oc-validity accepted (a day); RFC 7339 sets no bound.
inline constexpr int64_t kMaxOverloadValidityMs = 86'400'000;

class Overload {
 public:
  // Applies one report (arguments checked by the caller: percent 0..100,
  // validity 0..kMaxOverloadValidityMs) and raises
  // Header::overload_until_ms to its end. False when it changed nothing (a
  // stale oc-seq, or the applied one while its period runs).
  static bool Apply(Header& h, NodeRecord& rec, NodeHot& hot, int percent, int64_t validity_ms, uint64_t seq,
                    int64_t now);
  // Whether some node may be under overload control now (placements then
  // take the scan, not the draws: see Header::overload_until_ms).
  static bool AnyInForce(const Header& h, int64_t now) {
    return h.overload_until_ms.load(std::memory_order_relaxed) > now;
  }
  // The share of new calls to shed now (0..100): 0 when no report is in
  // force. Clears the kShedOverload bit once the period is over.
  static int Percent(NodeHot& hot, int64_t now);
  // The roll for one call and one node, uniform in [0, 1): a function of
  // the call's seed (a hash of its call id) and the node's slot, so that a
  // call looks at a node as often as the placement needs (a draw, then a
  // scan) and is shed from it, or not, once.
  static double Roll(uint64_t call_seed, uint32_t slot) {
    uint64_t x = call_seed ^ ((uint64_t{slot} + 1) * 0x9E3779B97F4A7C15ULL);
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;  // splitmix64's finaliser
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
    x ^= x >> 31;
    return static_cast<double>(x >> 11) * 0x1.0p-53;
  }
  // Whether to shed one new call: `uniform` in [0, 1).
  static bool Shed(NodeHot& hot, int64_t now, double uniform) {
    if ((hot.shed.load(std::memory_order_relaxed) & kShedOverload) == 0) return false;
    const int pct = Percent(hot, now);
    return pct > 0 && uniform * 100.0 < pct;
  }
};

}  // namespace approute::internal

#endif  // APPROUTE_SRC_STATUS_OVERLOAD_H_
