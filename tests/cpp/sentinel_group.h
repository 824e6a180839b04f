// A real Redis Sentinel deployment for one test, on loopback: a primary, a
// replica of it and N sentinels (`redis-server CONF --sentinel`) watching
// them as "mymaster", each on a free port in a temporary directory, with
// short failure detection (down-after 1000 ms) so that a failover takes
// seconds. Every process is stopped by its pid. The data servers require
// the password "dpw", the sentinels "spw".
#ifndef APPROUTE_TESTS_CPP_SENTINEL_GROUP_H_
#define APPROUTE_TESTS_CPP_SENTINEL_GROUP_H_

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "placement/redis_client.h"
#include "redis_server.h"

namespace approute::testing {

inline constexpr char kDataPassword[] = "dpw";
inline constexpr char kSentinelPassword[] = "spw";

// One sentinel process.
class SentinelProcess {
 public:
  SentinelProcess(const std::string& dir, const std::string& name, int primary_port, int quorum) : dir_(dir) {
    for (int attempt = 0; attempt < 5 && pid_ <= 0; ++attempt) {
      port_ = FreeLoopbackPort();
      const std::string conf = dir_ + "/sentinel-" + std::to_string(port_) + ".conf";
      {
        std::ofstream f(conf);
        f << "port " << port_ << "\nbind 127.0.0.1\ndaemonize no\ndir " << dir_ << "\nlogfile " << dir_ << "/sentinel-"
          << port_ << ".log\nrequirepass " << kSentinelPassword << "\n"
          << "sentinel sentinel-pass " << kSentinelPassword << "\n"
          << "sentinel monitor " << name << " 127.0.0.1 " << primary_port << " " << quorum << "\n"
          << "sentinel auth-pass " << name << " " << kDataPassword << "\n"
          << "sentinel down-after-milliseconds " << name << " 1000\n"
          << "sentinel failover-timeout " << name << " 2000\n"
          << "sentinel parallel-syncs " << name << " 1\n";
      }
      pid_t pid = fork();
      if (pid == 0) {
        ::approute::testing::PrepareServerChild();
        std::string bin = RedisServerBinary(), flag = "--sentinel";
        std::vector<char*> argv{bin.data(), const_cast<char*>(conf.c_str()), flag.data(), nullptr};
        execv(argv[0], argv.data());
        _exit(127);
      }
      pid_ = pid;
      if (!WaitListening()) Stop();
    }
  }
  ~SentinelProcess() { Stop(); }
  SentinelProcess(const SentinelProcess&) = delete;
  SentinelProcess& operator=(const SentinelProcess&) = delete;

  bool running() const { return pid_ > 0; }
  int port() const { return port_; }
  std::string addr() const { return "127.0.0.1:" + std::to_string(port_); }
  void Stop() {
    if (pid_ <= 0) return;
    kill(pid_, SIGTERM);
    int st = 0;
    for (int i = 0; i < 300 && waitpid(pid_, &st, WNOHANG) == 0; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    if (waitpid(pid_, &st, WNOHANG) == 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, &st, 0);
    }
    pid_ = -1;
  }
  // A client of this sentinel (plain address, the sentinel password).
  std::unique_ptr<internal::RedisClient> Client() const {
    return std::make_unique<internal::RedisClient>(
        *internal::ParseRedisUrl("redis://:" + std::string(kSentinelPassword) + "@" + addr()), 1000);
  }

 private:
  bool WaitListening() {
    for (int i = 0; i < 300; ++i) {
      int st = 0;
      if (waitpid(pid_, &st, WNOHANG) == pid_) {
        pid_ = -1;
        return false;
      }
      if (LoopbackListening(port_)) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  }

  std::string dir_;
  int port_ = 0;
  pid_t pid_ = -1;
};

class SentinelGroup {
 public:
  static constexpr char kName[] = "mymaster";

  SentinelGroup() : primary_({"--requirepass", kDataPassword, "--masterauth", kDataPassword}) {
    char tmpl[] = "/tmp/approute-sentinel-XXXXXX";
    if (mkdtemp(tmpl) != nullptr) dir_ = tmpl;
  }
  ~SentinelGroup() {
    sentinels_.clear();
    primary_.Stop();
    if (replica_) replica_->Stop();
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }

  // Starts the primary, the replica (in sync before the sentinels start, so
  // their first look at the primary lists it) and `n` sentinels (quorum 2),
  // and waits until every sentinel knows the replica and the other sentinels.
  // Returns "" or what did not come up.
  std::string Start(int n = 3) {
    if (!primary_.Start()) return "the primary did not start";
    replica_ = std::make_unique<RedisServer>(std::vector<std::string>{"--requirepass", kDataPassword, "--masterauth",
                                                                      kDataPassword, "--replicaof", "127.0.0.1",
                                                                      std::to_string(primary_.port())});
    if (!replica_->Start()) return "the replica did not start";
    if (!WaitFor(
            [&] { return Info(replica_->port(), "replication").find("master_link_status:up") != std::string::npos; },
            10000)) {
      return "the replica did not sync with the primary";
    }
    for (int i = 0; i < n; ++i) {
      sentinels_.push_back(std::make_unique<SentinelProcess>(dir_, kName, primary_.port(), 2));
      if (!sentinels_.back()->running()) return "a sentinel did not start";
    }
    const size_t others = static_cast<size_t>(n - 1);
    bool ok = WaitFor(
        [&] {
          for (const auto& s : sentinels_) {
            std::unique_ptr<internal::RedisClient> c = s->Client();
            absl::StatusOr<internal::RedisValue> r = c->Command({"SENTINEL", "replicas", kName});
            absl::StatusOr<internal::RedisValue> o = c->Command({"SENTINEL", "sentinels", kName});
            if (!r.ok() || !o.ok() || r->elements.empty() || o->elements.size() < others) return false;
          }
          return true;
        },
        20000);
    return ok ? "" : "the sentinels did not find the replica and each other within 20 s";
  }

  // "redis+sentinel://:dpw@<before>127.0.0.1:p1,...,127.0.0.1:pn/mymaster".
  std::string Url(const std::string& before = "") const {
    std::string u = "redis+sentinel://:" + std::string(kDataPassword) + "@" + before;
    for (size_t i = 0; i < sentinels_.size(); ++i) u += (i ? "," : "") + sentinels_[i]->addr();
    return u + "/" + kName;
  }
  const std::string& dir() const { return dir_; }
  RedisServer& primary() { return primary_; }
  RedisServer& replica() { return *replica_; }
  SentinelProcess& sentinel(size_t i) { return *sentinels_[i]; }

  // The primary's port as the first sentinel names it now (0: no answer).
  int NamedPrimaryPort() {
    absl::StatusOr<internal::RedisValue> r =
        sentinels_[0]->Client()->Command({"SENTINEL", "get-master-addr-by-name", kName});
    if (!r.ok() || r->elements.size() != 2) return 0;
    return std::atoi(r->elements[1].str.c_str());
  }
  // Asks the first sentinel for a failover (no agreement needed).
  absl::Status ForceFailover() {
    absl::StatusOr<internal::RedisValue> r = sentinels_[0]->Client()->Command({"SENTINEL", "failover", kName});
    return r.ok() ? absl::OkStatus() : r.status();
  }

  // INFO <section> of the data server on `port` ("" when it does not answer).
  static std::string Info(int port, const std::string& section) {
    internal::RedisClient c(
        *internal::ParseRedisUrl("redis://:" + std::string(kDataPassword) + "@127.0.0.1:" + std::to_string(port)),
        1000);
    absl::StatusOr<internal::RedisValue> r = c.Command({"INFO", section});
    return r.ok() ? r->str : "";
  }
  template <typename F>
  static bool WaitFor(F f, int64_t ms) {
    auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
    while (std::chrono::steady_clock::now() < until) {
      if (f()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return f();
  }

 private:
  std::string dir_;
  RedisServer primary_;
  std::unique_ptr<RedisServer> replica_;
  std::vector<std::unique_ptr<SentinelProcess>> sentinels_;
};

}  // namespace approute::testing

#endif  // APPROUTE_TESTS_CPP_SENTINEL_GROUP_H_
