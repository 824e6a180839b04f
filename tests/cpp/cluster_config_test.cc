// `cluster:` in the YAML and the Redis address inside it: every bad input
// names the file, line, column and key; good input yields what it says.
#include <gtest/gtest.h>
#include <unistd.h>

#include "approute/config.h"
#include "util/redis_url.h"

namespace approute {
namespace {

using internal::ParseRedisUrl;
using internal::RedisUrl;

std::string Err(const std::string& yaml) {
  absl::StatusOr<Config> c = ParseConfig(yaml, "router.yaml");
  EXPECT_FALSE(c.ok()) << "expected an error for:\n" << yaml;
  if (c.ok()) return "";
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(c.status().message());
}

TEST(ClusterConfig, AbsentMeansThisHostOnly) {
  absl::StatusOr<Config> c = ParseConfig("{}");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_FALSE(c->cluster.enabled);
}

TEST(ClusterConfig, ParsesEveryKey) {
  absl::StatusOr<Config> c = ParseConfig(R"(
cluster:
  redis: "redis://:s3cret@127.0.0.1:6390/2"
  name: prod
  proxy: kam1
  timeout_ms: 7
  outage_headroom: 25
  reserve_block: 16
)");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->cluster.enabled);
  EXPECT_EQ(c->cluster.redis, "redis://:s3cret@127.0.0.1:6390/2");
  EXPECT_EQ(c->cluster.name, "prod");
  EXPECT_EQ(c->cluster.proxy, "kam1");
  EXPECT_EQ(c->cluster.timeout_ms, 7);
  EXPECT_EQ(c->cluster.outage_headroom_pct, 25);
  EXPECT_EQ(c->cluster.reserve_block, 16);
}

TEST(ClusterConfig, DefaultsProxyToHostNameAndTimeoutTo5) {
  absl::StatusOr<Config> c = ParseConfig("cluster: {redis: \"unix:///run/redis/redis.sock\", name: prod}");
  ASSERT_TRUE(c.ok()) << c.status();
  char host[256] = {0};
  ASSERT_EQ(gethostname(host, sizeof host - 1), 0);
  EXPECT_EQ(c->cluster.proxy, host);
  EXPECT_EQ(c->cluster.timeout_ms, 5);
  EXPECT_EQ(c->cluster.outage_headroom_pct, 10);
}

TEST(ClusterConfig, ErrorsNamePositionAndKey) {
  EXPECT_EQ(Err("cluster:\n  name: prod\n"),
            "router.yaml:2:3: cluster: missing required key \"redis\" (e.g. redis://127.0.0.1:6379/0)");
  EXPECT_EQ(Err("cluster:\n  redis: \"redis://h\"\n"),
            "router.yaml:2:3: cluster: missing required key \"name\" (proxies with the same name share one state)");
  EXPECT_EQ(Err("cluster:\n  redis: \"http://h\"\n  name: prod\n"),
            "router.yaml:2:10: cluster.redis: redis address \"http://h\": expected redis://host[:port][/db], "
            "unix:///path or redis+sentinel://host:port,.../primary[/db] (rediss:// TLS is not supported)");
  EXPECT_EQ(
      Err("cluster:\n  redis: \"redis://h:99999\"\n  name: prod\n"),
      "router.yaml:2:10: cluster.redis: redis address \"redis://h:99999\": port \"99999\" is not a number 1..65535");
  EXPECT_EQ(
      Err("cluster:\n  redis: \"redis://h\"\n  name: \"a b\"\n"),
      "router.yaml:3:9: cluster.name: deployment name \"a b\" may only contain letters, digits, '_', '-', '.' and ':'");
  EXPECT_EQ(Err("cluster:\n  redis: \"redis://h\"\n  name: p\n  timeout_ms: 0\n"),
            "router.yaml:4:15: cluster.timeout_ms: value 0 is outside 1..10000");
  EXPECT_EQ(Err("cluster:\n  redis: \"redis://h\"\n  name: p\n  timeout: 5\n"),
            "router.yaml:4:3: cluster.timeout: unknown key \"timeout\" (allowed: redis, name, proxy, timeout_ms, "
            "outage_headroom, sentinel_password, reserve_block)");
  EXPECT_EQ(Err("cluster:\n  redis: \"redis://h\"\n  name: p\n  reserve_block: -1\n"),
            "router.yaml:4:18: cluster.reserve_block: value -1 is outside 0..1024");
  EXPECT_EQ(Err("cluster:\n  redis: \"redis://h\"\n  name: p\n  reserve_block: 2000\n"),
            "router.yaml:4:18: cluster.reserve_block: value 2000 is outside 0..1024");
  EXPECT_EQ(Err("cluster:\n  redis: \"redis://h\"\n  name: p\n  reserve_block: many\n"),
            "router.yaml:4:18: cluster.reserve_block: expected an integer, got \"many\"");
  EXPECT_EQ(Err("cluster:\n  redis: \"redis://h\"\n  name: p\n  outage_headroom: 101\n"),
            "router.yaml:4:20: cluster.outage_headroom: value 101 is outside 0..100");
  EXPECT_EQ(Err("cluster:\n  redis: \"redis://h\"\n  name: p\n  outage_headroom: 0.5\n"),
            "router.yaml:4:20: cluster.outage_headroom: expected an integer, got \"0.5\"");
  EXPECT_EQ(Err("cluster: redis\n"), "router.yaml:1:10: cluster: expected a mapping");
  EXPECT_EQ(Err("cluster:\n  redis: \"redis://h\"\n  name: p\n  proxy: \"\"\n"),
            "router.yaml:4:10: cluster.proxy: proxy id must have 1 to 63 characters");
}

TEST(RedisUrl, Tcp) {
  absl::StatusOr<RedisUrl> u = ParseRedisUrl("redis://127.0.0.1:6379/0");
  ASSERT_TRUE(u.ok()) << u.status();
  EXPECT_FALSE(u->unix_socket);
  EXPECT_EQ(u->host, "127.0.0.1");
  EXPECT_EQ(u->port, 6379);
  EXPECT_EQ(u->db, 0);
  EXPECT_EQ(u->password, "");

  u = ParseRedisUrl("redis://app:p%40ss@[::1]:7000/3");
  ASSERT_TRUE(u.ok()) << u.status();
  EXPECT_EQ(u->host, "::1");
  EXPECT_EQ(u->port, 7000);
  EXPECT_EQ(u->user, "app");
  EXPECT_EQ(u->password, "p@ss");
  EXPECT_EQ(u->db, 3);

  u = ParseRedisUrl("redis://redis.example.com");
  ASSERT_TRUE(u.ok()) << u.status();
  EXPECT_EQ(u->host, "redis.example.com");
  EXPECT_EQ(u->port, 6379);
}

TEST(RedisUrl, Unix) {
  absl::StatusOr<RedisUrl> u = ParseRedisUrl("unix:///run/redis/redis.sock?db=4&password=x%26y");
  ASSERT_TRUE(u.ok()) << u.status();
  EXPECT_TRUE(u->unix_socket);
  EXPECT_EQ(u->path, "/run/redis/redis.sock");
  EXPECT_EQ(u->db, 4);
  EXPECT_EQ(u->password, "x&y");
}

TEST(RedisUrl, ErrorsSayWhatIsWrong) {
  auto msg = [](std::string_view url) {
    absl::StatusOr<RedisUrl> u = ParseRedisUrl(url);
    EXPECT_FALSE(u.ok()) << url;
    return u.ok() ? std::string() : std::string(u.status().message());
  };
  EXPECT_EQ(msg("redis://"), "redis address \"redis://\": no host");
  EXPECT_EQ(msg("redis://h:"), "redis address \"redis://h:\": empty port after ':'");
  EXPECT_EQ(msg("redis://h/x"), "redis address \"redis://h/x\": database \"x\" is not a number 0..1048576");
  EXPECT_EQ(msg("redis://pw@h"),
            "redis address \"redis://pw@h\": credentials must be written user:password@ or :password@");
  EXPECT_EQ(msg("redis://:@h"), "redis address \"redis://:@h\": empty password after ':'");
  EXPECT_EQ(msg("redis://:a%4@h"), "redis address \"redis://:a%4@h\": bad %-escape in the password");
  EXPECT_EQ(msg("redis://[::1"), "redis address \"redis://[::1\": IPv6 address without ']'");
  EXPECT_EQ(msg("redis://h h"), "redis address \"redis://h h\": host \"h h\" has a character that is not allowed");
  EXPECT_EQ(
      msg("unix://run/x.sock"),
      "redis address \"unix://run/x.sock\": a unix socket needs an absolute path, e.g. unix:///run/redis/redis.sock");
  EXPECT_EQ(msg("unix:///x.sock?db"), "redis address \"unix:///x.sock?db\": parameter \"db\" has no value");
  EXPECT_EQ(msg("unix:///x.sock?tls=1"),
            "redis address \"unix:///x.sock?tls=1\": unknown parameter \"tls\" (allowed: db, password, user)");
  EXPECT_EQ(msg("rediss://h"),
            "redis address \"rediss://h\": expected redis://host[:port][/db], unix:///path or "
            "redis+sentinel://host:port,.../primary[/db] (rediss:// TLS is not supported)");
}

}  // namespace
}  // namespace approute
