// The hiredis wrapper (redis_client.h).
#include "placement/redis_client.h"

#include <hiredis/hiredis.h>
#include <openssl/evp.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>

#include "absl/strings/numbers.h"

#include "util/str_util.h"

namespace approute::internal {
namespace {

timeval Tv(int64_t ms) {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(ms / 1000);
  tv.tv_usec = static_cast<suseconds_t>((ms % 1000) * 1000);
  return tv;
}

RedisValue Convert(const redisReply& r) {
  RedisValue v;
  switch (r.type) {
    case REDIS_REPLY_INTEGER:
      v.type = RedisValue::Type::kInteger;
      v.integer = r.integer;
      break;
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
      v.type = r.type == REDIS_REPLY_STRING ? RedisValue::Type::kString : RedisValue::Type::kStatus;
      v.str.assign(r.str, r.len);
      break;
    case REDIS_REPLY_ARRAY:
      v.type = RedisValue::Type::kArray;
      for (size_t i = 0; i < r.elements; ++i) v.elements.push_back(Convert(*r.element[i]));
      break;
    default:
      v.type = RedisValue::Type::kNull;
  }
  return v;
}

std::string Sha1Hex(std::string_view s) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_Digest(s.data(), s.size(), md, &n, EVP_sha1(), nullptr);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < n; ++i) {
    out.push_back(kHex[md[i] >> 4]);
    out.push_back(kHex[md[i] & 15]);
  }
  return out;
}

using Steady = std::chrono::steady_clock;
using ReplyPtr = std::unique_ptr<redisReply, void (*)(void*)>;

// One command on `c`, arguments binary-safe; null on a transport failure or timeout.
ReplyPtr ArgvCommand(redisContext* c, absl::Span<const std::string_view> argv) {
  std::vector<const char*> ptrs;
  std::vector<size_t> lens;
  ptrs.reserve(argv.size());
  lens.reserve(argv.size());
  for (std::string_view a : argv) {
    ptrs.push_back(a.data());
    lens.push_back(a.size());
  }
  return ReplyPtr(
      static_cast<redisReply*>(redisCommandArgv(c, static_cast<int>(argv.size()), ptrs.data(), lens.data())),
      freeReplyObject);
}

// The primary's address as the sentinel at `s` names it, within `deadline`
// (the connection and each command wait at most the time left).
absl::StatusOr<RedisEndpoint> AskSentinel(const RedisEndpoint& s, const std::string& password, const std::string& name,
                                          Steady::time_point deadline) {
  const std::string where = Cat("sentinel ", s.host, ":", s.port);
  auto left = [&] {
    return std::max<int64_t>(1,
                             std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Steady::now()).count());
  };
  std::unique_ptr<redisContext, void (*)(redisContext*)> c(redisConnectWithTimeout(s.host.c_str(), s.port, Tv(left())),
                                                           redisFree);
  if (c == nullptr) return absl::UnavailableError(Cat(where, ": cannot allocate a connection"));
  if (c->err) return absl::UnavailableError(Cat(where, ": ", c->errstr));
  auto ask = [&](absl::Span<const std::string_view> argv) -> absl::StatusOr<ReplyPtr> {
    if (redisSetTimeout(c.get(), Tv(left())) != REDIS_OK)
      return absl::UnavailableError(Cat(where, ": cannot set the timeout"));
    ReplyPtr r = ArgvCommand(c.get(), argv);
    if (r == nullptr) return absl::UnavailableError(Cat(where, ": ", c->errstr));
    if (r->type == REDIS_REPLY_ERROR) return absl::UnavailableError(Cat(where, ": ", std::string_view(r->str, r->len)));
    return r;
  };
  if (!password.empty()) {
    absl::StatusOr<ReplyPtr> a = ask({std::string_view("AUTH"), std::string_view(password)});
    if (!a.ok()) return a.status();
  }
  absl::StatusOr<ReplyPtr> r =
      ask({std::string_view("SENTINEL"), std::string_view("get-master-addr-by-name"), std::string_view(name)});
  if (!r.ok()) return r.status();
  const redisReply& v = **r;
  if (v.type == REDIS_REPLY_NIL) return absl::UnavailableError(Cat(where, ": knows no primary named \"", name, "\""));
  int port = 0;
  if (v.type != REDIS_REPLY_ARRAY || v.elements != 2 || v.element[0]->type != REDIS_REPLY_STRING ||
      v.element[1]->type != REDIS_REPLY_STRING ||
      !absl::SimpleAtoi(absl::string_view(v.element[1]->str, v.element[1]->len), &port) || port < 1 || port > 65535) {
    return absl::UnavailableError(Cat(where, ": an answer that is not [host, port]"));
  }
  return RedisEndpoint{std::string(v.element[0]->str, v.element[0]->len), port};
}

}  // namespace

RedisScript::RedisScript(std::string text) : body(std::move(text)), sha1(Sha1Hex(body)) {}

std::string DeploymentPrefix(std::string_view name) { return Cat("{approute:", name, "}:"); }

void RedisClient::Free::operator()(redisContext* c) const { redisFree(c); }

bool NotAWritablePrimary(std::string_view error_reply) {
  for (std::string_view code : {"READONLY", "LOADING", "MASTERDOWN"}) {
    if (error_reply.substr(0, code.size()) == code) return true;
  }
  return false;
}

RedisClient::RedisClient(RedisUrl url, int64_t timeout_ms) : url_(std::move(url)), timeout_ms_(timeout_ms) {}
RedisClient::~RedisClient() = default;

void RedisClient::DropLocked() {
  ctx_.reset();
  pid_ = 0;
}

absl::StatusOr<RedisEndpoint> RedisClient::AskSentinelsLocked() {
  // One budget of timeout_ms for the whole asking: a sentinel that does not
  // answer spends what is left and ends this round; the next starts after it.
  const Steady::time_point deadline = Steady::now() + std::chrono::milliseconds(timeout_ms_);
  const size_t n = url_.sentinels.size();
  std::string why;
  for (size_t i = 0; i < n; ++i) {
    const size_t at = (next_sentinel_ + i) % n;
    if (Steady::now() >= deadline) {
      why += Cat(why.empty() ? "" : "; ", "no time left within ", timeout_ms_, " ms");
      break;
    }
    absl::StatusOr<RedisEndpoint> p =
        AskSentinel(url_.sentinels[at], url_.sentinel_password, url_.master_name, deadline);
    if (p.ok()) {
      next_sentinel_ = at;
      return p;
    }
    why += Cat(why.empty() ? "" : "; ", p.status().message());
    next_sentinel_ = (at + 1) % n;
  }
  return absl::UnavailableError(Cat("redis: no sentinel named the primary \"", url_.master_name, "\": ", why));
}

bool RedisClient::RecheckPrimary() {
  if (!url_.sentinel()) return false;
  size_t at = 0;
  std::string connected;
  {
    absl::MutexLock l(&mu_);
    if (!ctx_ || pid_ != getpid()) return false;
    at = next_sentinel_;
    connected = primary_;
  }
  absl::StatusOr<RedisEndpoint> named = AskSentinel(url_.sentinels[at], url_.sentinel_password, url_.master_name,
                                                    Steady::now() + std::chrono::milliseconds(timeout_ms_));
  absl::MutexLock l(&mu_);
  if (!named.ok()) {
    if (next_sentinel_ == at) next_sentinel_ = (at + 1) % url_.sentinels.size();  // ask another one next time
    return false;
  }
  if (Cat(named->host, ":", named->port) == connected || primary_ != connected || !ctx_ || pid_ != getpid())
    return false;
  DropLocked();
  return true;
}

absl::Status RedisClient::CheckPrimaryLocked(const std::string& where) {
  ReplyPtr r = ArgvCommand(ctx_.get(), {std::string_view("ROLE")});
  if (r == nullptr) return absl::UnavailableError(Cat("redis: ROLE at ", where, ": ", ctx_->errstr));
  if (r->type == REDIS_REPLY_ARRAY && r->elements > 0 && r->element[0]->type == REDIS_REPLY_STRING &&
      std::string_view(r->element[0]->str, r->element[0]->len) == "master") {
    return absl::OkStatus();
  }
  std::string_view role = r->type == REDIS_REPLY_ARRAY && r->elements > 0 && r->element[0]->type == REDIS_REPLY_STRING
                              ? std::string_view(r->element[0]->str, r->element[0]->len)
                          : r->type == REDIS_REPLY_ERROR ? std::string_view(r->str, r->len)
                                                         : std::string_view("an unexpected reply");
  return absl::UnavailableError(
      Cat("redis: ", where, " (named primary \"", url_.master_name, "\" by a sentinel) is not a primary: ROLE ", role));
}

absl::Status RedisClient::ConnectLocked() {
  const pid_t me = getpid();
  if (ctx_ && pid_ == me) return absl::OkStatus();
  // A context inherited through fork() is closed here, never used: the
  // parent owns that conversation. Closing our copy of the fd leaves it open
  // in the parent.
  DropLocked();
  RedisEndpoint at{url_.host, url_.port};
  if (url_.sentinel()) {
    absl::StatusOr<RedisEndpoint> p = AskSentinelsLocked();
    if (!p.ok()) return p.status();
    at = *std::move(p);
  }
  const timeval tv = Tv(timeout_ms_);
  redisContext* c = url_.unix_socket ? redisConnectUnixWithTimeout(url_.path.c_str(), tv)
                                     : redisConnectWithTimeout(at.host.c_str(), at.port, tv);
  if (c == nullptr) return absl::UnavailableError("redis: cannot allocate a connection");
  std::unique_ptr<redisContext, Free> owned(c);
  const std::string where = url_.unix_socket ? url_.path : Cat(at.host, ":", at.port);
  if (c->err) return absl::UnavailableError(Cat("redis: cannot connect to ", where, ": ", c->errstr));
  if (redisSetTimeout(c, tv) != REDIS_OK)
    return absl::UnavailableError(Cat("redis: cannot set the timeout on ", where));
  ctx_ = std::move(owned);
  pid_ = me;
  ++connects_;
  if (!url_.password.empty()) {
    std::vector<std::string_view> auth{"AUTH"};
    if (!url_.user.empty()) auth.push_back(url_.user);
    auth.push_back(url_.password);
    absl::StatusOr<RedisValue> r = RunLocked(auth);
    if (!r.ok()) {
      DropLocked();
      return absl::PermissionDeniedError(Cat("redis: AUTH at ", where, " failed: ", r.status().message()));
    }
  }
  if (url_.sentinel()) {
    // A sentinel's answer may be stale (a failover under way): never write to a replica.
    if (absl::Status s = CheckPrimaryLocked(where); !s.ok()) {
      DropLocked();
      next_sentinel_ = (next_sentinel_ + 1) % url_.sentinels.size();  // ask another one next time
      return s;
    }
  }
  if (url_.db != 0) {
    std::string db = Cat(url_.db);
    absl::StatusOr<RedisValue> r = RunLocked({std::string_view("SELECT"), std::string_view(db)});
    if (!r.ok()) {
      DropLocked();
      return absl::FailedPreconditionError(Cat("redis: SELECT ", db, " at ", where, " failed: ", r.status().message()));
    }
  }
  if (!primary_.empty() && primary_ != where) ++primary_changes_;
  primary_ = where;
  return absl::OkStatus();
}

absl::StatusOr<RedisValue> RedisClient::RunLocked(absl::Span<const std::string_view> argv) {
  ReplyPtr owned = ArgvCommand(ctx_.get(), argv);
  redisReply* reply = owned.get();
  if (reply == nullptr) {
    const bool timed_out = ctx_->err == REDIS_ERR_IO && (errno == EAGAIN || errno == EWOULDBLOCK);
    std::string why = ctx_->errstr;
    DropLocked();  // the stream is out of step now: never read a late reply as the next answer
    if (timed_out) return absl::DeadlineExceededError(Cat("redis: no reply within ", timeout_ms_, " ms"));
    return absl::UnavailableError(Cat("redis: ", why));
  }
  if (reply->type == REDIS_REPLY_ERROR) {
    const std::string_view err(reply->str, reply->len);
    if (NotAWritablePrimary(err)) {
      // A replica (a failed-over primary, or one still loading): this
      // address is not the deployment's primary now. Dropped like a transport
      // failure, so the next try connects afresh (asking the sentinels again,
      // or to whatever the address names after a failover).
      DropLocked();
      return absl::UnavailableError(Cat("redis: ", err));
    }
    return absl::UnknownError(Cat("redis: ", err));
  }
  return Convert(*reply);
}

absl::StatusOr<RedisValue> RedisClient::Command(absl::Span<const std::string_view> argv) {
  absl::MutexLock l(&mu_);
  if (absl::Status s = ConnectLocked(); !s.ok()) return s;
  return RunLocked(argv);
}

absl::StatusOr<RedisValue> RedisClient::Eval(const RedisScript& script, absl::Span<const std::string_view> keys,
                                             absl::Span<const std::string_view> args) {
  std::string nkeys = Cat(keys.size());
  std::vector<std::string_view> argv{"EVALSHA", script.sha1, nkeys};
  argv.insert(argv.end(), keys.begin(), keys.end());
  argv.insert(argv.end(), args.begin(), args.end());
  absl::MutexLock l(&mu_);
  if (absl::Status s = ConnectLocked(); !s.ok()) return s;
  absl::StatusOr<RedisValue> r = RunLocked(argv);
  if (r.ok() || r.status().code() != absl::StatusCode::kUnknown ||
      r.status().message().substr(0, 15) != "redis: NOSCRIPT") {
    return r;
  }
  absl::StatusOr<RedisValue> loaded =
      RunLocked({std::string_view("SCRIPT"), std::string_view("LOAD"), std::string_view(script.body)});
  if (!loaded.ok()) return loaded.status();
  ++script_loads_;
  return RunLocked(argv);
}

absl::StatusOr<std::vector<absl::StatusOr<RedisValue>>> RedisClient::EvalMany(const RedisScript& script,
                                                                              absl::Span<const EvalCall> calls) {
  std::vector<absl::StatusOr<RedisValue>> out;
  absl::MutexLock l(&mu_);
  if (absl::Status s = ConnectLocked(); !s.ok()) return s;
  if (calls.empty()) return out;
  absl::StatusOr<RedisValue> loaded =
      RunLocked({std::string_view("SCRIPT"), std::string_view("LOAD"), std::string_view(script.body)});
  if (!loaded.ok()) return loaded.status();
  for (const EvalCall& c : calls) {
    const std::string nkeys = Cat(c.keys.size());
    std::vector<const char*> ptrs{"EVALSHA", script.sha1.c_str(), nkeys.c_str()};
    std::vector<size_t> lens{7, script.sha1.size(), nkeys.size()};
    for (const auto* part : {&c.keys, &c.args}) {
      for (const std::string& a : *part) {
        ptrs.push_back(a.data());
        lens.push_back(a.size());
      }
    }
    if (redisAppendCommandArgv(ctx_.get(), static_cast<int>(ptrs.size()), ptrs.data(), lens.data()) != REDIS_OK) {
      DropLocked();
      return absl::UnavailableError("redis: cannot queue a pipelined command");
    }
  }
  out.reserve(calls.size());
  for (size_t i = 0; i < calls.size(); ++i) {
    void* raw = nullptr;
    if (redisGetReply(ctx_.get(), &raw) != REDIS_OK || raw == nullptr) {
      const bool timed_out = ctx_->err == REDIS_ERR_IO && (errno == EAGAIN || errno == EWOULDBLOCK);
      std::string why = ctx_->errstr;
      DropLocked();
      if (timed_out) return absl::DeadlineExceededError(Cat("redis: no reply within ", timeout_ms_, " ms"));
      return absl::UnavailableError(Cat("redis: ", why));
    }
    ReplyPtr reply(static_cast<redisReply*>(raw), freeReplyObject);
    if (reply->type == REDIS_REPLY_ERROR) {
      const std::string_view err(reply->str, reply->len);
      if (NotAWritablePrimary(err)) {
        DropLocked();  // the replies still pending are dropped with the connection
        return absl::UnavailableError(Cat("redis: ", err));
      }
      out.push_back(absl::UnknownError(Cat("redis: ", err)));
    } else {
      out.push_back(Convert(*reply));
    }
  }
  return out;
}

int64_t RedisClient::connects() const {
  absl::MutexLock l(&mu_);
  return connects_;
}
int64_t RedisClient::script_loads() const {
  absl::MutexLock l(&mu_);
  return script_loads_;
}
pid_t RedisClient::connection_pid() const {
  absl::MutexLock l(&mu_);
  return pid_;
}
std::string RedisClient::primary() const {
  absl::MutexLock l(&mu_);
  return primary_;
}
int64_t RedisClient::primary_changes() const {
  absl::MutexLock l(&mu_);
  return primary_changes_;
}

}  // namespace approute::internal
