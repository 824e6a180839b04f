// str_util.h — string helpers over Debian's Abseil, whose absl::string_view is
// its own type rather than std::string_view: Cat() accepts both.
#ifndef APPROUTE_SRC_UTIL_STR_UTIL_H_
#define APPROUTE_SRC_UTIL_STR_UTIL_H_

#include <string>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace approute::internal {

template <typename T>
const T& ToAlphaNum(const T& v) {
  return v;
}
inline absl::string_view ToAlphaNum(std::string_view v) { return absl::string_view(v.data(), v.size()); }
inline std::string_view ToStd(absl::string_view v) { return std::string_view(v.data(), v.size()); }

template <typename... Args>
std::string Cat(const Args&... args) {
  return absl::StrCat(ToAlphaNum(args)...);
}

// "a, b, c"
template <typename Range>
std::string Join(const Range& items, std::string_view sep = ", ") {
  std::string out;
  for (const auto& i : items) {
    if (!out.empty()) out.append(sep);
    out.append(std::string_view(i));
  }
  return out;
}

}  // namespace approute::internal

#endif  // APPROUTE_SRC_UTIL_STR_UTIL_H_
