// approute/redis_check.h — what is at a `cluster.redis` address: for
// `approute validate` and operators, never the call path.
//
// CheckRedis opens its own short-lived connection (AUTH and SELECT from the
// address, Sentinel resolution for redis+sentinel://), makes one TIME round
// trip, then asks ROLE and INFO; a user whose ACL does not allow ROLE or
// INFO (the recommended approute ACL allows neither) still checks ok, with
// those fields empty and a note saying why. Nothing is written. Blocks for
// at most a few times `timeout_ms`. Never throws.
#ifndef APPROUTE_REDIS_CHECK_H_
#define APPROUTE_REDIS_CHECK_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace approute {

struct RedisCheck {
  bool ok = false;                 // connected, authenticated, and a TIME round trip answered
  std::string primary;             // "host:port" or the socket path connected to ("" = none)
  std::string role;                // ROLE's first field ("master", "slave", ...); "" = not allowed
  std::string version;             // redis_version from INFO server; "" = not allowed
  std::string maxmemory_policy;    // from INFO memory; "" = not allowed
  int64_t rtt_us = 0;              // the TIME round trip, connection excluded
  std::string error;               // when !ok: the exact error (no password in it)
  std::vector<std::string> notes;  // what could not be asked, and what looks wrong (a replica, eviction)
};

// `url`: a cluster.redis address; `sentinel_password`: cluster.sentinel_password.
// A malformed address is !ok with the parser's message.
RedisCheck CheckRedis(std::string_view url, std::string_view sentinel_password = "", int64_t timeout_ms = 2000);

}  // namespace approute

#endif  // APPROUTE_REDIS_CHECK_H_
