// The hiredis wrapper (redis_client.h).
#include "placement/redis_client.h"

#include <hiredis/hiredis.h>
#include <openssl/evp.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>

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

absl::Status RedisClient::ConnectLocked() {
  const pid_t me = getpid();
  if (ctx_ && pid_ == me) return absl::OkStatus();
  // A context inherited through fork() is closed here, never used: the
  // parent owns that conversation. Closing our copy of the fd leaves it open
  // in the parent.
  ctx_.reset();
  pid_ = 0;
  const timeval tv = Tv(timeout_ms_);
  redisContext* c = url_.unix_socket ? redisConnectUnixWithTimeout(url_.path.c_str(), tv)
                                     : redisConnectWithTimeout(url_.host.c_str(), url_.port, tv);
  if (c == nullptr) return absl::UnavailableError("redis: cannot allocate a connection");
  std::unique_ptr<redisContext, Free> owned(c);
  const std::string where = url_.unix_socket ? url_.path : Cat(url_.host, ":", url_.port);
  if (c->err) return absl::UnavailableError(Cat("redis: cannot connect to ", where, ": ", c->errstr));
  if (redisSetTimeout(c, tv) != REDIS_OK) return absl::UnavailableError(Cat("redis: cannot set the timeout on ", where));
  ctx_ = std::move(owned);
  pid_ = me;
  ++connects_;
  if (!url_.password.empty()) {
    std::vector<std::string_view> auth{"AUTH"};
    if (!url_.user.empty()) auth.push_back(url_.user);
    auth.push_back(url_.password);
    absl::StatusOr<RedisValue> r = RunLocked(auth);
    if (!r.ok()) {
      ctx_.reset();
      pid_ = 0;
      return absl::PermissionDeniedError(Cat("redis: AUTH at ", where, " failed: ", r.status().message()));
    }
  }
  if (url_.db != 0) {
    std::string db = Cat(url_.db);
    absl::StatusOr<RedisValue> r = RunLocked({std::string_view("SELECT"), std::string_view(db)});
    if (!r.ok()) {
      ctx_.reset();
      pid_ = 0;
      return absl::FailedPreconditionError(Cat("redis: SELECT ", db, " at ", where, " failed: ", r.status().message()));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<RedisValue> RedisClient::RunLocked(absl::Span<const std::string_view> argv) {
  std::vector<const char*> ptrs;
  std::vector<size_t> lens;
  ptrs.reserve(argv.size());
  lens.reserve(argv.size());
  for (std::string_view a : argv) {
    ptrs.push_back(a.data());
    lens.push_back(a.size());
  }
  auto* reply = static_cast<redisReply*>(
      redisCommandArgv(ctx_.get(), static_cast<int>(argv.size()), ptrs.data(), lens.data()));
  if (reply == nullptr) {
    const bool timed_out = ctx_->err == REDIS_ERR_IO && (errno == EAGAIN || errno == EWOULDBLOCK);
    std::string why = ctx_->errstr;
    ctx_.reset();  // the stream is out of step now: never read a late reply as the next answer
    pid_ = 0;
    if (timed_out) return absl::DeadlineExceededError(Cat("redis: no reply within ", timeout_ms_, " ms"));
    return absl::UnavailableError(Cat("redis: ", why));
  }
  std::unique_ptr<redisReply, void (*)(void*)> owned(reply, freeReplyObject);
  if (reply->type == REDIS_REPLY_ERROR) {
    const std::string_view err(reply->str, reply->len);
    if (NotAWritablePrimary(err)) {
      // A replica (a failed-over primary, or one still loading): this
      // address is not the deployment's primary now. Dropped like a transport
      // failure, so the next try connects afresh (to whatever the address
      // names after a failover).
      ctx_.reset();
      pid_ = 0;
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
  absl::StatusOr<RedisValue> loaded = RunLocked({std::string_view("SCRIPT"), std::string_view("LOAD"), std::string_view(script.body)});
  if (!loaded.ok()) return loaded.status();
  ++script_loads_;
  return RunLocked(argv);
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

}  // namespace approute::internal
