// redis_url.h — the `cluster.redis` address: a TCP or unix-socket Redis
// endpoint with its optional credentials and database.
//
//   redis://[[user]:password@]host[:port][/db]     host: name, IPv4 or [IPv6]
//   unix:///path/to/redis.sock[?db=N&password=P]
//   redis+sentinel://[[user]:password@]host1[:port],host2[:port],.../primary-name[/db]
//
// The Sentinel form lists the sentinels (port 26379 by default) that name the
// primary called `primary-name`; the credentials and db are the primary's
// (the sentinels' own password is `cluster.sentinel_password`, set apart).
// Defaults: port 6379, db 0, no AUTH. The password is kept verbatim
// (percent-escapes %XX are decoded so '@', ':' and '/' can be written).
// Thread-safety: pure function.
#ifndef APPROUTE_SRC_UTIL_REDIS_URL_H_
#define APPROUTE_SRC_UTIL_REDIS_URL_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace approute::internal {

struct RedisEndpoint {
  std::string host;  // without brackets for IPv6
  int port = 0;
};

struct RedisUrl {
  bool unix_socket = false;
  std::string host;  // TCP: without brackets for IPv6
  int port = 6379;
  std::string path;      // unix socket path
  std::string user;      // "" = AUTH with the password only (Redis < 6 style)
  std::string password;  // "" = no AUTH
  int64_t db = 0;
  // redis+sentinel://: the sentinels to ask, in order, for the address of the
  // primary named `master_name` (host and port above are then unused).
  std::vector<RedisEndpoint> sentinels;
  std::string master_name;
  std::string sentinel_password;  // "" = the sentinels take no AUTH; not part of the URL
  bool sentinel() const { return !sentinels.empty(); }
};

// InvalidArgument naming what is wrong (scheme, host, port, db, escape, an
// empty sentinel list, a missing primary name).
absl::StatusOr<RedisUrl> ParseRedisUrl(std::string_view url);

}  // namespace approute::internal

#endif  // APPROUTE_SRC_UTIL_REDIS_URL_H_
