// stored_name.h — how a call id or an affinity key of any valid length is
// kept in a fixed-size slot of the state region and in Redis keys.
//
// A value that fits its slot (kMaxCallIdLen / kMaxKeyLen bytes) is stored as
// it is. A longer one is stored as a readable prefix, the tag "~xxh3:" and
// the 32 lower-case hex digits of the XXH3-128 digest of the whole value:
//
//   <first bytes, cut at a UTF-8 boundary>~xxh3:<32 hex digits>
//
// so every process and every host derives the same stored form from the
// same value, a lookup by the full value finds it, and a listing shows the
// prefix. The stored form is itself a short value, so passing it back
// (`approute end` with a listed call id) names the same entry. Two values
// share an entry only if they agree on the prefix and on the 128-bit digest
// (docs/security.md says what that means against a caller who chooses them).
// Values over kMaxInputLen are refused by the caller, not here.
#ifndef APPROUTE_SRC_UTIL_STORED_NAME_H_
#define APPROUTE_SRC_UTIL_STORED_NAME_H_

#include <cstddef>
#include <string_view>

#include "approute/limits.h"

namespace approute::internal {

inline constexpr std::string_view kDigestTag = "~xxh3:";
inline constexpr size_t kDigestHexLen = 32;

// The stored form of a value for a slot of `max_len` bytes (at most 127):
// a view of `value` itself when it fits, else the digest form written into
// this object's buffer. No allocation; the view lives as long as this
// object and `value`.
class StoredName {
 public:
  StoredName(std::string_view value, size_t max_len);
  StoredName(const StoredName&) = delete;
  StoredName& operator=(const StoredName&) = delete;

  std::string_view view() const { return view_; }
  operator std::string_view() const { return view_; }  // NOLINT: used where the value was
  bool digested() const { return view_.data() == buf_; }

 private:
  std::string_view view_;
  char buf_[kMaxKeyLen + 1];
};

// The number of leading bytes of `value` kept before the tag when it is
// digested into `max_len` bytes: as many as fit, never splitting a UTF-8
// sequence (a listing decodes the stored form as text).
size_t StoredPrefixLen(std::string_view value, size_t max_len);

}  // namespace approute::internal

#endif  // APPROUTE_SRC_UTIL_STORED_NAME_H_
