// The hiredis wrapper against a real redis-server started by the test.
#include "placement/redis_client.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>

#include "redis_server.h"

namespace approute::internal {
namespace {

using approute::testing::RedisServer;
using Clock = std::chrono::steady_clock;

RedisUrl Url(const std::string& s) {
  absl::StatusOr<RedisUrl> u = ParseRedisUrl(s);
  EXPECT_TRUE(u.ok()) << u.status();
  return u.ok() ? *u : RedisUrl{};
}

int64_t ClientId(RedisClient& c) {
  absl::StatusOr<RedisValue> r = c.Command({"CLIENT", "ID"});
  return r.ok() ? r->integer : -1;
}

TEST(RedisClient, CommandsAreBinarySafeOverTcpAndUnix) {
  APPROUTE_NEED_REDIS();
  RedisServer srv;
  ASSERT_TRUE(srv.Start());
  RedisClient tcp(Url(srv.url()), 1000);
  const std::string value("a\0b\r\nc", 6);
  ASSERT_TRUE(tcp.Command({"SET", "k", value}).ok());
  RedisClient unix_client(Url("unix://" + srv.socket_path()), 1000);
  absl::StatusOr<RedisValue> got = unix_client.Command({"GET", "k"});
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->type, RedisValue::Type::kString);
  EXPECT_EQ(got->str, value);
  absl::StatusOr<RedisValue> bad = tcp.Command({"INCR", "k"});
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kUnknown);
  EXPECT_TRUE(tcp.Command({"PING"}).ok()) << "an error reply must not break the connection";
  EXPECT_EQ(tcp.connects(), 1);
}

TEST(RedisClient, EvalShaLoadsOnceAndAgainAfterScriptFlush) {
  APPROUTE_NEED_REDIS();
  RedisServer srv;
  ASSERT_TRUE(srv.Start());
  RedisClient c(Url(srv.url()), 1000);
  RedisScript script("return {KEYS[1], ARGV[1], redis.call('INCR', KEYS[1])}");
  auto run = [&]() -> int64_t {
    absl::StatusOr<RedisValue> r = c.Eval(script, {"{t}:n"}, {"hello"});
    EXPECT_TRUE(r.ok()) << r.status();
    if (!r.ok() || r->elements.size() != 3) return -1;
    EXPECT_EQ(r->elements[0].str, "{t}:n");
    EXPECT_EQ(r->elements[1].str, "hello");
    return r->elements[2].integer;
  };
  EXPECT_EQ(run(), 1);
  EXPECT_EQ(c.script_loads(), 1);  // a fresh server knows no script: NOSCRIPT, SCRIPT LOAD, EVALSHA
  EXPECT_EQ(run(), 2);
  EXPECT_EQ(c.script_loads(), 1);  // loaded once
  ASSERT_TRUE(c.Command({"SCRIPT", "FLUSH"}).ok());
  EXPECT_EQ(run(), 3);
  EXPECT_EQ(c.script_loads(), 2);  // reloaded on NOSCRIPT
  absl::StatusOr<RedisValue> exists = c.Command({"SCRIPT", "EXISTS", script.sha1});
  ASSERT_TRUE(exists.ok());
  ASSERT_EQ(exists->elements.size(), 1u);
  EXPECT_EQ(exists->elements[0].integer, 1) << "our SHA-1 must be the server's";
}

// A primary demoted to a replica (what a Sentinel failover does to the old
// primary) answers writes with READONLY: the client drops that connection
// like a transport failure, and connects afresh on the next command.
TEST(RedisClient, AReplicaIsUnavailableAndTheNextCommandReconnects) {
  APPROUTE_NEED_REDIS();
  RedisServer srv;
  ASSERT_TRUE(srv.Start());
  const RedisScript script("return redis.call('INCR', KEYS[1])");
  RedisClient admin(Url(srv.url()), 1000), c(Url(srv.url()), 1000);
  ASSERT_TRUE(c.Eval(script, {"{t}:w"}, {}).ok());
  ASSERT_TRUE(admin.Command({"REPLICAOF", "127.0.0.1", "1"}).ok());  // a primary that is not there
  absl::StatusOr<RedisValue> r = c.Eval(script, {"{t}:w"}, {});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable) << r.status();
  EXPECT_NE(r.status().message().find("READONLY"), std::string::npos) << r.status();
  EXPECT_EQ(c.connection_pid(), 0) << "the connection to a replica is dropped";
  ASSERT_TRUE(admin.Command({"REPLICAOF", "NO", "ONE"}).ok());  // promoted
  r = c.Eval(script, {"{t}:w"}, {});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(c.connects(), 2);
  EXPECT_FALSE(NotAWritablePrimary("ERR unknown command"));
  EXPECT_TRUE(NotAWritablePrimary("LOADING Redis is loading the dataset in memory"));
}

TEST(RedisClient, AuthAndSelectFromTheUrl) {
  APPROUTE_NEED_REDIS();
  RedisServer srv({"--requirepass", "pa@ss"});
  ASSERT_TRUE(srv.Start());
  RedisClient none(Url(srv.url()), 1000);
  absl::StatusOr<RedisValue> r = none.Command({"PING"});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("NOAUTH"), std::string_view::npos) << r.status();

  RedisClient wrong(Url(srv.url(":nope@")), 1000);
  r = wrong.Command({"PING"});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kPermissionDenied) << r.status();

  RedisClient db3(Url(srv.url(":pa%40ss@") + "/3"), 1000);
  ASSERT_TRUE(db3.Command({"SET", "only-in-3", "x"}).ok());
  RedisClient db0(Url(srv.url(":pa%40ss@")), 1000);
  r = db0.Command({"EXISTS", "only-in-3"});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->integer, 0);
  r = db3.Command({"EXISTS", "only-in-3"});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->integer, 1);

  RedisClient unix_auth(Url("unix://" + srv.socket_path() + "?password=pa%40ss&db=3"), 1000);
  r = unix_auth.Command({"EXISTS", "only-in-3"});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->integer, 1);
}

TEST(RedisClient, ForkedChildOpensItsOwnConnection) {
  APPROUTE_NEED_REDIS();
  RedisServer srv;
  ASSERT_TRUE(srv.Start());
  RedisClient c(Url(srv.url()), 1000);
  const int64_t parent_id = ClientId(c);
  ASSERT_GT(parent_id, 0);
  ASSERT_EQ(c.connection_pid(), getpid());
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  pid_t child = fork();
  if (child == 0) {
    int64_t out[3] = {ClientId(c), c.connection_pid() == getpid() ? 1 : 0, c.connects()};
    (void)!write(fds[1], out, sizeof out);
    _exit(0);
  }
  int64_t got[3] = {0, 0, 0};
  ASSERT_EQ(read(fds[0], got, sizeof got), static_cast<ssize_t>(sizeof got));
  int st = 0;
  waitpid(child, &st, 0);
  close(fds[0]);
  close(fds[1]);
  EXPECT_GT(got[0], 0);
  EXPECT_NE(got[0], parent_id) << "the child spoke on its parent's connection";
  EXPECT_EQ(got[1], 1);
  EXPECT_EQ(got[2], 2);  // the inherited count plus its own connection
  EXPECT_EQ(ClientId(c), parent_id) << "the parent's connection must be untouched by the child";
  EXPECT_EQ(c.connects(), 1);
}

TEST(RedisClient, StoppedServerCostsOneTimeoutThenReconnects) {
  APPROUTE_NEED_REDIS();
  RedisServer srv;
  ASSERT_TRUE(srv.Start());
  constexpr int64_t kTimeoutMs = 50;
  RedisClient c(Url(srv.url()), kTimeoutMs);
  ASSERT_TRUE(c.Command({"PING"}).ok());
  srv.Pause();  // SIGSTOP: the socket stays open, nothing answers
  Clock::time_point t0 = Clock::now();
  absl::StatusOr<RedisValue> r = c.Command({"PING"});
  int64_t took = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count();
  srv.Resume();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded) << r.status();
  // The wait is bounded by the timeout: >= it (it did wait), and under 10x
  // it, a generous bound that absorbs scheduling on a loaded CI machine
  // while still catching a missing timeout (which would hang).
  EXPECT_GE(took, kTimeoutMs - 5);
  EXPECT_LT(took, 10 * kTimeoutMs);
  // The late PONG of the timed-out command must not be read as the next answer.
  absl::StatusOr<RedisValue> next = c.Command({"ECHO", "after"});
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_EQ(next->str, "after");
  EXPECT_EQ(c.connects(), 2);
}

TEST(RedisClient, NoServerIsUnavailable) {
  const int port = approute::testing::FreeLoopbackPort();
  RedisClient c(Url("redis://127.0.0.1:" + std::to_string(port)), 100);
  absl::StatusOr<RedisValue> r = c.Command({"PING"});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable) << r.status();
  EXPECT_NE(r.status().message().find("cannot connect to 127.0.0.1:"), std::string_view::npos) << r.status();
}

}  // namespace
}  // namespace approute::internal
