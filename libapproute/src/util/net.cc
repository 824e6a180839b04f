#include "util/net.h"

#include <arpa/inet.h>

#include <cstring>

#include "absl/strings/numbers.h"
#include "util/str_util.h"

namespace approute::internal {
namespace {

// Parses a literal address with inet_pton; false if it is neither IPv4 nor IPv6.
bool ParseAddr(std::string_view text, bool* v6, std::array<uint8_t, 16>* out) {
  std::string s(text);
  if (s.size() >= 2 && s.front() == '[' && s.back() == ']') s = s.substr(1, s.size() - 2);
  out->fill(0);
  if (inet_pton(AF_INET, s.c_str(), out->data()) == 1) {
    *v6 = false;
    return true;
  }
  if (inet_pton(AF_INET6, s.c_str(), out->data()) == 1) {
    *v6 = true;
    return true;
  }
  return false;
}

bool PrefixMatch(const std::array<uint8_t, 16>& a, const std::array<uint8_t, 16>& b, int prefix) {
  int full = prefix / 8, rest = prefix % 8;
  if (std::memcmp(a.data(), b.data(), static_cast<size_t>(full)) != 0) return false;
  if (rest == 0) return true;
  auto mask = static_cast<uint8_t>(0xFF << (8 - rest));
  return (a[static_cast<size_t>(full)] & mask) == (b[static_cast<size_t>(full)] & mask);
}

}  // namespace

absl::Status CheckCidr(std::string_view cidr) { return NetList::Parse({std::string(cidr)}).status(); }

absl::StatusOr<NetList> NetList::Parse(const std::vector<std::string>& cidrs) {
  NetList list;
  for (const std::string& c : cidrs) {
    Net n;
    std::string_view addr = c;
    size_t slash = c.find('/');
    if (slash != std::string::npos) addr = std::string_view(c).substr(0, slash);
    if (!ParseAddr(addr, &n.v6, &n.addr)) {
      return absl::InvalidArgumentError(Cat("\"", c, "\" is not an IPv4 or IPv6 network (ADDR or ADDR/PREFIX)"));
    }
    int max = n.v6 ? 128 : 32;
    n.prefix = max;
    if (slash != std::string::npos) {
      std::string_view p = std::string_view(c).substr(slash + 1);
      if (!absl::SimpleAtoi(ToAlphaNum(p), &n.prefix) || n.prefix < 0 || n.prefix > max) {
        return absl::InvalidArgumentError(Cat("\"", c, "\" has a prefix length outside 0..", max));
      }
    }
    list.nets_.push_back(n);
  }
  return list;
}

bool NetList::Contains(std::string_view ip) const {
  bool v6 = false;
  std::array<uint8_t, 16> a{};
  if (!ParseAddr(ip, &v6, &a)) return false;
  for (const Net& n : nets_) {
    if (n.v6 == v6 && PrefixMatch(a, n.addr, n.prefix)) return true;
  }
  return false;
}

}  // namespace approute::internal
