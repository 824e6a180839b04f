// net.h — network lists (CIDR) for the status package's source and URI checks.
#ifndef APPROUTE_SRC_UTIL_NET_H_
#define APPROUTE_SRC_UTIL_NET_H_

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace approute::internal {

// InvalidArgument unless `cidr` is "ADDR" or "ADDR/PREFIX" (IPv4 or IPv6).
absl::Status CheckCidr(std::string_view cidr);

class NetList {
 public:
  static absl::StatusOr<NetList> Parse(const std::vector<std::string>& cidrs);
  // True if `ip` (a literal address; IPv6 may be bracketed) is inside any network.
  bool Contains(std::string_view ip) const;
  bool empty() const { return nets_.empty(); }

 private:
  struct Net {
    bool v6 = false;
    std::array<uint8_t, 16> addr{};
    int prefix = 0;
  };
  std::vector<Net> nets_;
};

}  // namespace approute::internal

#endif  // APPROUTE_SRC_UTIL_NET_H_
