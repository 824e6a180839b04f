// redis_client.h — one Redis connection per process, through hiredis.
//
// Owns: a hiredis context, opened lazily on the first command and again in
// each process after fork() (the pid is checked on every call: a child never
// writes to its parent's socket), and again after any transport error or
// timeout (a late reply must never be read as the answer to the next
// command). Each command waits at most `timeout_ms` (connect included).
// AUTH and SELECT come from the address. Scripts are run with EVALSHA; on
// NOSCRIPT (a restarted or flushed server) the script is loaded and run once
// more.
//
// Sentinel (a redis+sentinel:// address): each connection starts by asking
// the sentinels, in turn, `SENTINEL get-master-addr-by-name <name>` (a short
// connection each, AUTH with the sentinel password), then connects to the
// address named and checks with `ROLE` that it is a primary (a replica is
// never written to). Asking starts at the sentinel that answered last; one
// that refuses or answers nothing useful passes the turn to the next, and
// the asking stops at the first timeout or once `timeout_ms` is spent (the
// next connection starts at the following sentinel), so a dead sentinel adds
// at most one timeout to a call. Any failure of the primary (a lost
// connection, a timeout, READONLY and the like) drops the connection, so the
// next one asks the sentinels again: that is how a failover is followed.
// RecheckPrimary (the placement calls it about once a second per process)
// follows a failover whose old primary keeps its clients for a while.
//
// Errors: a transport failure or timeout is Unavailable / DeadlineExceeded
// (the connection is dropped); so is an error reply saying the server is not
// a writable primary (READONLY, LOADING, MASTERDOWN: a replica after a
// failover), as Unavailable; any other error reply is Unknown("redis: ...").
// No exception escapes.
// Thread-safety: every method may be called from any thread; the threads of a
// process share the connection, one command at a time (a mutex). fork() must
// not happen while another thread is inside a command.
#ifndef APPROUTE_SRC_PLACEMENT_REDIS_CLIENT_H_
#define APPROUTE_SRC_PLACEMENT_REDIS_CLIENT_H_

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "util/redis_url.h"

struct redisContext;

namespace approute::internal {

// A reply without hiredis types. Error replies are statuses, never values.
struct RedisValue {
  enum class Type { kNull, kInteger, kString, kStatus, kArray };
  Type type = Type::kNull;
  int64_t integer = 0;
  std::string str;  // kString and kStatus
  std::vector<RedisValue> elements;
};

// A Lua script and its SHA-1 (computed here, so EVALSHA needs no load first).
struct RedisScript {
  explicit RedisScript(std::string text);
  std::string body;
  std::string sha1;  // lower-case hex
};

// Every key of a deployment starts with this: one hash tag, so that Redis
// Cluster keeps a deployment in one slot and its scripts may touch any of it.
std::string DeploymentPrefix(std::string_view name);  // "{approute:<name>}:"

// Whether an error reply says the server takes no writes as a primary now
// (READONLY, LOADING, MASTERDOWN).
bool NotAWritablePrimary(std::string_view error_reply);

class RedisClient {
 public:
  RedisClient(RedisUrl url, int64_t timeout_ms);
  ~RedisClient();
  RedisClient(const RedisClient&) = delete;
  RedisClient& operator=(const RedisClient&) = delete;

  // One command, arguments binary-safe.
  absl::StatusOr<RedisValue> Command(absl::Span<const std::string_view> argv);
  // EVALSHA `script` with `keys` and `args`; loads it on NOSCRIPT and retries once.
  absl::StatusOr<RedisValue> Eval(const RedisScript& script, absl::Span<const std::string_view> keys,
                                  absl::Span<const std::string_view> args);

  // Sentinel mode: asks one sentinel (the one that answered last) which
  // primary it names now; if not the one this process is connected to (a
  // failover, or a demotion the old primary has not seen yet, when it would
  // still take writes that the failover then loses), the connection is
  // dropped so the next command asks the sentinels and connects afresh.
  // Returns whether it dropped. At most one timeout_ms, without holding the
  // connection's lock while asking. False at once without Sentinel or without
  // a connection.
  bool RecheckPrimary();

  // EVALSHA `script` once per (keys, args) call, pipelined: the script is
  // loaded first (SCRIPT LOAD), every command is sent, then every reply read
  // (each read waits at most timeout_ms). One status per call; a transport
  // failure fails the whole batch (the connection is dropped).
  struct EvalCall {
    std::vector<std::string> keys, args;
  };
  absl::StatusOr<std::vector<absl::StatusOr<RedisValue>>> EvalMany(const RedisScript& script,
                                                                   absl::Span<const EvalCall> calls);

  // Diagnostics (tests): connections opened by this process, scripts loaded
  // after NOSCRIPT, and the process that opened the current connection (0: none).
  int64_t connects() const;
  int64_t script_loads() const;
  pid_t connection_pid() const;
  // The primary of the current (or last) connection, "host:port" ("" = none
  // yet), and how often a new connection of this process went to another
  // primary than the one before (a failover followed; sentinel mode only).
  std::string primary() const;
  int64_t primary_changes() const;
  int64_t timeout_ms() const { return timeout_ms_; }

 private:
  struct Free {
    void operator()(redisContext* c) const;
  };
  absl::Status ConnectLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Sentinel mode: the primary's address, asked of the sentinels in turn.
  absl::StatusOr<RedisEndpoint> AskSentinelsLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Sentinel mode: FailedPrecondition unless the server just connected says ROLE master.
  absl::Status CheckPrimaryLocked(const std::string& where) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void DropLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<RedisValue> RunLocked(absl::Span<const std::string_view> argv) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const RedisUrl url_;
  const int64_t timeout_ms_;
  mutable absl::Mutex mu_;
  std::unique_ptr<redisContext, Free> ctx_ ABSL_GUARDED_BY(mu_);
  pid_t pid_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t connects_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t script_loads_ ABSL_GUARDED_BY(mu_) = 0;
  size_t next_sentinel_ ABSL_GUARDED_BY(mu_) = 0;  // the sentinel asked first next time
  std::string primary_ ABSL_GUARDED_BY(mu_);
  int64_t primary_changes_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace approute::internal

#endif  // APPROUTE_SRC_PLACEMENT_REDIS_CLIENT_H_
