// SIP URI validation (RFC 3261 section 19.1, the parts a node address uses).
#include <regex>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "approute/config.h"
#include "util/str_util.h"

namespace approute {

using internal::Cat;
using internal::Join;

namespace {
const std::regex& UriRegex() {
  static const std::regex kUri(
      R"(^(sips?):)"                                             // scheme
      R"((?:([A-Za-z0-9\-_.!~*'()&=+$,;?/%]+)(?::[^@\s]*)?@)?)"  // user[:password]@
      R"((\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?)*\.?))"
      R"((?::([0-9]{1,5}))?)"                                                              // port
      R"(((?:;[A-Za-z0-9\-_.!~*'()%\[\]/:&+$]+(?:=[A-Za-z0-9\-_.!~*'()%\[\]/:&+$]+)?)*))"  // params
      R"((\?[^\s]*)?$)");
  return kUri;
}
}  // namespace

std::string SipUriHost(std::string_view uri) {
  // Same bound as ValidateSipUri: std::regex recurses per character, so a long
  // outside string must never reach it.
  if (uri.empty() || uri.size() > 255) return "";
  std::match_results<std::string_view::const_iterator> m;
  if (!std::regex_match(uri.begin(), uri.end(), m, UriRegex())) return "";
  std::string host = m[3].str();
  if (host.size() >= 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
  return host;
}

absl::Status ValidateSipUri(std::string_view uri) {
  const std::regex& kUri = UriRegex();
  if (uri.empty()) return absl::InvalidArgumentError("SIP URI is empty");
  if (uri.size() > 255) {
    return absl::InvalidArgumentError(Cat("SIP URI is ", uri.size(), " bytes long, at most 255 are allowed"));
  }
  std::match_results<std::string_view::const_iterator> m;
  if (!std::regex_match(uri.begin(), uri.end(), m, kUri)) {
    return absl::InvalidArgumentError(
        Cat("malformed SIP URI \"", uri, "\": expected sip:[user@]host[:port][;params], e.g. sip:10.0.0.5:5060"));
  }
  if (m[4].matched) {
    int port = 0;
    if (!absl::SimpleAtoi(absl::string_view(&*m[4].first, m[4].length()), &port) || port < 1 || port > 65535) {
      return absl::InvalidArgumentError(Cat("SIP URI \"", uri, "\" has port ", m[4].str(), ", outside 1..65535"));
    }
  }
  std::string host = m[3].str();
  bool numeric = host.find_first_not_of("0123456789.") == std::string::npos;
  if (numeric) {
    // Looks like an IPv4 address: each of four octets 0..255.
    int parts = 0;
    size_t start = 0;
    while (start <= host.size()) {
      size_t dot = host.find('.', start);
      std::string_view part(host.data() + start, (dot == std::string::npos ? host.size() : dot) - start);
      int v = -1;
      if (part.empty() || part.size() > 3 || !absl::SimpleAtoi(internal::ToAlphaNum(part), &v) || v > 255) {
        return absl::InvalidArgumentError(Cat("SIP URI \"", uri, "\" has an invalid IPv4 address ", host));
      }
      ++parts;
      if (dot == std::string::npos) break;
      start = dot + 1;
    }
    if (parts != 4) {
      return absl::InvalidArgumentError(Cat("SIP URI \"", uri, "\" has an invalid IPv4 address ", host));
    }
  }
  return absl::OkStatus();
}

}  // namespace approute
