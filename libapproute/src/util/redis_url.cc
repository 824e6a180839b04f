// Parsing of redis:// and unix:// addresses (redis_url.h).
#include "util/redis_url.h"

#include <charconv>

#include "util/str_util.h"

namespace approute::internal {
namespace {

absl::Status Bad(std::string_view url, std::string_view why) {
  return absl::InvalidArgumentError(Cat("redis address \"", url, "\": ", why));
}

bool Decode(std::string_view in, std::string* out) {
  out->clear();
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] != '%') {
      out->push_back(in[i]);
      continue;
    }
    if (i + 2 >= in.size()) return false;
    unsigned v = 0;
    auto [p, ec] = std::from_chars(in.data() + i + 1, in.data() + i + 3, v, 16);
    if (ec != std::errc() || p != in.data() + i + 3) return false;
    out->push_back(static_cast<char>(v));
    i += 2;
  }
  return true;
}

bool ParseInt(std::string_view s, int64_t lo, int64_t hi, int64_t* out) {
  if (s.empty()) return false;
  int64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size() || v < lo || v > hi) return false;
  *out = v;
  return true;
}

constexpr int64_t kMaxDb = 1 << 20;

// "[[user]:password@]" at the start of `*rest`, consumed.
absl::Status ParseCredentials(std::string_view url, std::string_view* rest, RedisUrl* out) {
  size_t at = rest->rfind('@');
  if (at == std::string_view::npos) return absl::OkStatus();
  std::string_view cred = rest->substr(0, at);
  *rest = rest->substr(at + 1);
  size_t colon = cred.find(':');
  if (colon == std::string_view::npos) return Bad(url, "credentials must be written user:password@ or :password@");
  if (!Decode(cred.substr(0, colon), &out->user)) return Bad(url, "bad %-escape in the user");
  if (!Decode(cred.substr(colon + 1), &out->password)) return Bad(url, "bad %-escape in the password");
  if (out->password.empty()) return Bad(url, "empty password after ':'");
  return absl::OkStatus();
}

// "host[:port]" or "[v6][:port]"; `what` names the part in errors ("" for the one host).
absl::Status ParseHostPort(std::string_view url, std::string_view hostport, int default_port, std::string_view what,
                           RedisEndpoint* out) {
  std::string_view portpart;
  if (!hostport.empty() && hostport[0] == '[') {
    size_t close = hostport.find(']');
    if (close == std::string_view::npos) return Bad(url, Cat(what, "IPv6 address without ']'"));
    out->host = std::string(hostport.substr(1, close - 1));
    std::string_view after = hostport.substr(close + 1);
    if (!after.empty()) {
      if (after[0] != ':') return Bad(url, Cat(what, "expected ':port' after the IPv6 address"));
      portpart = after.substr(1);
      if (portpart.empty()) return Bad(url, Cat(what, "empty port after ':'"));
    }
  } else {
    size_t colon = hostport.find(':');
    out->host = std::string(hostport.substr(0, colon));
    if (colon != std::string_view::npos) {
      portpart = hostport.substr(colon + 1);
      if (portpart.empty()) return Bad(url, Cat(what, "empty port after ':'"));
    }
  }
  if (out->host.empty()) return Bad(url, Cat(what, "no host"));
  for (char ch : out->host) {
    bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '.' ||
              ch == '-' || ch == ':' || ch == '_';
    if (!ok) return Bad(url, Cat(what, "host \"", out->host, "\" has a character that is not allowed"));
  }
  out->port = default_port;
  if (!portpart.empty()) {
    int64_t p = 0;
    if (!ParseInt(portpart, 1, 65535, &p))
      return Bad(url, Cat(what, "port \"", portpart, "\" is not a number 1..65535"));
    out->port = static_cast<int>(p);
  }
  return absl::OkStatus();
}

// After "redis+sentinel://": [cred@]host[:port],host[:port],.../primary[/db].
absl::StatusOr<RedisUrl> ParseSentinel(std::string_view url, std::string_view rest) {
  RedisUrl out;
  if (absl::Status st = ParseCredentials(url, &rest, &out); !st.ok()) return st;
  size_t slash = rest.find('/');
  std::string_view hosts = rest.substr(0, slash);
  std::string_view path = slash == std::string_view::npos ? std::string_view() : rest.substr(slash + 1);
  if (hosts.empty()) return Bad(url, "no sentinel host (expected host1:26379,host2:26379,.../primary)");
  for (size_t i = 1;; ++i) {  // an empty entry (",,", a trailing ',') is "sentinel i: no host"
    size_t comma = hosts.find(',');
    RedisEndpoint ep;
    if (absl::Status st = ParseHostPort(url, hosts.substr(0, comma), 26379, Cat("sentinel ", i, ": "), &ep); !st.ok()) {
      return st;
    }
    out.sentinels.push_back(std::move(ep));
    if (comma == std::string_view::npos) break;
    hosts = hosts.substr(comma + 1);
  }
  std::string_view name = path.substr(0, path.find('/'));
  std::string_view dbpart = path.size() > name.size() ? path.substr(name.size() + 1) : std::string_view();
  if (name.empty()) return Bad(url, "no primary name after the sentinels (e.g. redis+sentinel://host:26379/mymaster)");
  for (char ch : name) {
    bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '.' ||
              ch == '-' || ch == '_';
    if (!ok)
      return Bad(url, Cat("primary name \"", name, "\" has a character that is not allowed (letters, digits, . - _)"));
  }
  out.master_name = std::string(name);
  if (!dbpart.empty() && !ParseInt(dbpart, 0, kMaxDb, &out.db)) {
    return Bad(url, Cat("database \"", dbpart, "\" is not a number 0..", kMaxDb));
  }
  return out;
}

}  // namespace

absl::StatusOr<RedisUrl> ParseRedisUrl(std::string_view url) {
  RedisUrl out;
  constexpr std::string_view kTcp = "redis://", kUnix = "unix://", kSentinel = "redis+sentinel://";
  if (url.substr(0, kUnix.size()) == kUnix) {
    out.unix_socket = true;
    std::string_view rest = url.substr(kUnix.size());
    std::string_view query;
    if (size_t q = rest.find('?'); q != std::string_view::npos) {
      query = rest.substr(q + 1);
      rest = rest.substr(0, q);
    }
    if (rest.empty() || rest[0] != '/')
      return Bad(url, "a unix socket needs an absolute path, e.g. unix:///run/redis/redis.sock");
    if (rest.size() > 107) return Bad(url, "the socket path is longer than 107 bytes");
    out.path = std::string(rest);
    while (!query.empty()) {
      size_t amp = query.find('&');
      std::string_view kv = query.substr(0, amp);
      query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
      size_t eq = kv.find('=');
      if (eq == std::string_view::npos) return Bad(url, Cat("parameter \"", kv, "\" has no value"));
      std::string_view k = kv.substr(0, eq), v = kv.substr(eq + 1);
      if (k == "db") {
        if (!ParseInt(v, 0, kMaxDb, &out.db)) return Bad(url, Cat("db \"", v, "\" is not a number 0..", kMaxDb));
      } else if (k == "password") {
        if (!Decode(v, &out.password)) return Bad(url, "bad %-escape in the password");
      } else if (k == "user") {
        if (!Decode(v, &out.user)) return Bad(url, "bad %-escape in the user");
      } else {
        return Bad(url, Cat("unknown parameter \"", k, "\" (allowed: db, password, user)"));
      }
    }
    return out;
  }
  if (url.substr(0, kSentinel.size()) == kSentinel) return ParseSentinel(url, url.substr(kSentinel.size()));
  if (url.substr(0, kTcp.size()) != kTcp) {
    return Bad(url,
               "expected redis://host[:port][/db], unix:///path or redis+sentinel://host:port,.../primary[/db] "
               "(rediss:// TLS is not supported)");
  }
  std::string_view rest = url.substr(kTcp.size());
  if (absl::Status st = ParseCredentials(url, &rest, &out); !st.ok()) return st;
  std::string_view hostport = rest.substr(0, rest.find('/'));
  std::string_view dbpart = rest.size() > hostport.size() ? rest.substr(hostport.size() + 1) : std::string_view();
  RedisEndpoint ep;
  if (absl::Status st = ParseHostPort(url, hostport, 6379, "", &ep); !st.ok()) return st;
  out.host = std::move(ep.host);
  out.port = ep.port;
  if (!dbpart.empty() && !ParseInt(dbpart, 0, kMaxDb, &out.db)) {
    return Bad(url, Cat("database \"", dbpart, "\" is not a number 0..", kMaxDb));
  }
  return out;
}

}  // namespace approute::internal
