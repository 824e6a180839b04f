// approute/limits.h — the fixed bounds of what the state region stores.
//
// The region has a fixed layout shared by every process that maps it, so
// names, keys and table sizes have upper bounds known at compile time. A
// value over its bound is refused with InvalidArgument naming it; nothing
// is cut. Call ids and affinity keys are the exception: any valid SIP value
// is accepted up to kMaxInputLen, and one longer than its slot is stored as
// a prefix plus the XXH3-128 digest of the whole value (docs/state.md,
// "Long call ids and keys"). Header-only constants; safe to include anywhere.
#ifndef APPROUTE_LIMITS_H_
#define APPROUTE_LIMITS_H_

#include <cstddef>

namespace approute {

// Bounds of strings stored in the state region (bytes, excluding the NUL).
inline constexpr size_t kMaxNodeIdLen = 63;
inline constexpr size_t kMaxUriLen = 255;
inline constexpr size_t kMaxPoolLen = 63;
inline constexpr size_t kMaxCallIdLen = 127;  // stored slot; longer values are digested
inline constexpr size_t kMaxKeyLen = 127;     // stored slot; longer values are digested
// The longest call id, key or prefer value accepted at all: the largest SIP
// message (a UDP datagram's payload), so only absurd input is refused.
inline constexpr size_t kMaxInputLen = 65535;
inline constexpr size_t kMaxAppNameLen = 47;
inline constexpr size_t kMaxResources = 16;  // distinct resource names per region
inline constexpr size_t kMaxAttrs = 8;       // attributes per node
inline constexpr size_t kMaxMetrics = 16;    // distinct load metric names per region
inline constexpr size_t kMaxApps = 64;
inline constexpr int kMaxAttemptsLimit = 16;

}  // namespace approute

#endif  // APPROUTE_LIMITS_H_
