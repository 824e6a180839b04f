// The stored form of long call ids and keys (stored_name.h).
#include "util/stored_name.h"

#include <xxhash.h>

#include <cstring>

namespace approute::internal {
namespace {

static_assert(kMaxCallIdLen <= kMaxKeyLen, "StoredName's buffer holds either slot");

void Hex64(uint64_t v, char* out) {
  static constexpr char kDigits[] = "0123456789abcdef";
  for (int i = 15; i >= 0; --i) {
    out[i] = kDigits[v & 0xf];
    v >>= 4;
  }
}

}  // namespace

size_t StoredPrefixLen(std::string_view value, size_t max_len) {
  size_t n = max_len - kDigestTag.size() - kDigestHexLen;
  if (n >= value.size()) return value.size();
  // Back off over UTF-8 continuation bytes (10xxxxxx) so that the byte at n
  // starts a character; the prefix then ends on a whole one.
  while (n > 0 && (static_cast<unsigned char>(value[n]) & 0xC0) == 0x80) --n;
  return n;
}

StoredName::StoredName(std::string_view value, size_t max_len) {
  if (max_len > kMaxKeyLen) max_len = kMaxKeyLen;
  if (value.size() <= max_len) {
    view_ = value;
    return;
  }
  const size_t prefix = StoredPrefixLen(value, max_len);
  std::memcpy(buf_, value.data(), prefix);
  std::memcpy(buf_ + prefix, kDigestTag.data(), kDigestTag.size());
  const XXH128_hash_t h = XXH3_128bits(value.data(), value.size());
  char* hex = buf_ + prefix + kDigestTag.size();
  Hex64(h.high64, hex);
  Hex64(h.low64, hex + 16);
  const size_t len = prefix + kDigestTag.size() + kDigestHexLen;
  buf_[len] = '\0';
  view_ = std::string_view(buf_, len);
}

}  // namespace approute::internal
