#include "status/overload.h"

namespace approute::internal {

bool Overload::Apply(Header& h, NodeRecord& rec, NodeHot& hot, int percent, int64_t validity_ms, uint64_t seq,
                     int64_t now) {
  // RFC 7339 section 5.4: an oc-seq larger than the stored one updates the
  // figures and restarts the validity period; an equal one changes nothing
  // while they are in force (the client goes on as negotiated); a smaller one
  // is a tardy answer. Once the period is over the stored figures are reset
  // (also section 5.4), oc-seq with them: any oc-seq then starts a new
  // period (a node whose counter restarted lower is heard again). After an
  // explicit end (oc=0, oc-validity=0) the oc-seq is kept, so a tardy
  // older answer does not start control again.
  const uint64_t oc = hot.overload.load(std::memory_order_relaxed);
  const bool in_force = oc != 0 && static_cast<int64_t>(oc >> 7) > now;
  const bool ran_out = oc != 0 && !in_force;
  uint64_t cur = rec.overload_seq.load(std::memory_order_relaxed);
  do {
    if (!ran_out && (seq < cur || (seq == cur && in_force))) return false;
  } while (!rec.overload_seq.compare_exchange_weak(cur, seq, std::memory_order_relaxed));
  if (percent <= 0 || validity_ms <= 0) {
    hot.overload.store(0, std::memory_order_relaxed);
    return true;
  }
  const auto until = static_cast<uint64_t>(now + validity_ms);
  hot.overload.store((until << 7) | static_cast<uint64_t>(percent), std::memory_order_relaxed);
  hot.shed.fetch_or(kShedOverload, std::memory_order_relaxed);
  int64_t latest = h.overload_until_ms.load(std::memory_order_relaxed);
  const auto end = static_cast<int64_t>(until);
  while (latest < end && !h.overload_until_ms.compare_exchange_weak(latest, end, std::memory_order_relaxed)) {
  }
  return true;
}

int Overload::Percent(NodeHot& hot, int64_t now) {
  const uint64_t oc = hot.overload.load(std::memory_order_relaxed);
  if (oc != 0 && static_cast<int64_t>(oc >> 7) > now) return static_cast<int>(oc & 127);
  hot.shed.fetch_and(static_cast<uint16_t>(~kShedOverload), std::memory_order_relaxed);
  // An Apply between the load and the clear: keep its bit.
  const uint64_t again = hot.overload.load(std::memory_order_relaxed);
  if (again != 0 && static_cast<int64_t>(again >> 7) > now) {
    hot.shed.fetch_or(kShedOverload, std::memory_order_relaxed);
    return static_cast<int>(again & 127);
  }
  return 0;
}

}  // namespace approute::internal
