// CheckRedis (approute/redis_check.h): one short connection through the
// placement's own client, so the check sees what the router would.
#include "approute/redis_check.h"

#include <chrono>
#include <exception>
#include <utility>

#include "placement/redis_client.h"
#include "util/redis_url.h"
#include "util/str_util.h"

namespace approute {
namespace {

using internal::RedisClient;
using internal::RedisValue;

// "name:value" of an INFO reply's line `name`, or "".
std::string InfoField(std::string_view info, std::string_view name) {
  size_t at = 0;
  while (at < info.size()) {
    size_t end = info.find('\n', at);
    if (end == std::string_view::npos) end = info.size();
    std::string_view line = info.substr(at, end - at);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.size() > name.size() && line.substr(0, name.size()) == name && line[name.size()] == ':') {
      return std::string(line.substr(name.size() + 1));
    }
    at = end + 1;
  }
  return "";
}

// A refused command's note: the ACL (NOPERM) or another error reply.
std::string Refused(std::string_view what, const absl::Status& s) {
  const std::string_view m = internal::ToStd(s.message());
  if (m.find("NOPERM") != std::string_view::npos) {
    return internal::Cat(what, " not allowed to this user (ACL): that field is unknown");
  }
  return internal::Cat(what, " failed: ", m);
}

RedisCheck Check(std::string_view url, std::string_view sentinel_password, int64_t timeout_ms) {
  RedisCheck out;
  absl::StatusOr<internal::RedisUrl> parsed = internal::ParseRedisUrl(url);
  if (!parsed.ok()) {
    out.error = std::string(parsed.status().message());
    return out;
  }
  parsed->sentinel_password = std::string(sentinel_password);
  RedisClient client(*std::move(parsed), timeout_ms);
  (void)client.Command({std::string_view("TIME")});  // connects (AUTH, SELECT, Sentinel); timed below
  const auto t0 = std::chrono::steady_clock::now();
  absl::StatusOr<RedisValue> time = client.Command({std::string_view("TIME")});
  out.rtt_us = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0).count();
  out.primary = client.primary();
  if (!time.ok()) {
    out.error = std::string(time.status().message());
    out.rtt_us = 0;
    return out;
  }
  out.ok = true;
  if (absl::StatusOr<RedisValue> role = client.Command({std::string_view("ROLE")}); !role.ok()) {
    out.notes.push_back(Refused("ROLE", role.status()));
  } else if (!role->elements.empty()) {
    out.role = role->elements[0].str;
    if (out.role != "master") {
      out.notes.push_back(
          internal::Cat("the server is a ", out.role, ", not a primary: the proxies' writes would be refused"));
    }
  }
  if (absl::StatusOr<RedisValue> info = client.Command({std::string_view("INFO"), std::string_view("server")});
      !info.ok()) {
    out.notes.push_back(Refused("INFO", info.status()));
  } else {
    out.version = InfoField(info->str, "redis_version");
    if (absl::StatusOr<RedisValue> mem = client.Command({std::string_view("INFO"), std::string_view("memory")});
        mem.ok()) {
      out.maxmemory_policy = InfoField(mem->str, "maxmemory_policy");
      if (!out.maxmemory_policy.empty() && out.maxmemory_policy != "noeviction") {
        out.notes.push_back(internal::Cat("maxmemory-policy is ", out.maxmemory_policy,
                                          ": an evicted claim splits its key over two nodes; use noeviction "
                                          "(docs/cluster.md, \"Hardening Redis\")"));
      }
    }
  }
  return out;
}

}  // namespace

RedisCheck CheckRedis(std::string_view url, std::string_view sentinel_password, int64_t timeout_ms) {
  try {
    return Check(url, sentinel_password, timeout_ms);
  } catch (const std::exception& e) {
    RedisCheck out;
    out.error = internal::Cat("internal error: ", e.what());
    return out;
  } catch (...) {
    RedisCheck out;
    out.error = "internal error";
    return out;
  }
}

}  // namespace approute
