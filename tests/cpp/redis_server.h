// A real redis-server for one test: started on a free loopback port (or a
// unix socket) in a temporary directory, without persistence, and stopped by
// its pid. Missing binary: the test is skipped with a message, or fails when
// APPROUTE_REDIS_REQUIRED=1 (CI installs redis-server).
#ifndef APPROUTE_TESTS_CPP_REDIS_SERVER_H_
#define APPROUTE_TESTS_CPP_REDIS_SERVER_H_

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "server_child.h"

namespace approute::testing {

inline std::string RedisServerBinary() {
  if (const char* b = std::getenv("APPROUTE_REDIS_SERVER")) return b;
  for (const char* p : {"/usr/bin/redis-server", "/usr/local/bin/redis-server", "/usr/bin/valkey-server"}) {
    if (access(p, X_OK) == 0) return p;
  }
  return "";
}

inline bool RedisRequired() {
  const char* r = std::getenv("APPROUTE_REDIS_REQUIRED");
  return r != nullptr && std::string(r) == "1";
}

// Skips (or fails, when required) the calling test if there is no server binary.
#define APPROUTE_NEED_REDIS()                                                                                     \
  do {                                                                                                            \
    if (::approute::testing::RedisServerBinary().empty()) {                                                       \
      if (::approute::testing::RedisRequired()) FAIL() << "redis-server not found and APPROUTE_REDIS_REQUIRED=1"; \
      GTEST_SKIP() << "redis-server not found (install redis-server, or set APPROUTE_REDIS_SERVER)";              \
    }                                                                                                             \
  } while (0)

inline int FreeLoopbackPort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof a;
  int port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0) {
    port = ntohs(a.sin_port);
  }
  close(fd);
  return port;
}

// Whether something accepts TCP connections on 127.0.0.1:`port`.
inline bool LoopbackListening(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(port));
  bool ok = connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  close(fd);
  return ok;
}

class RedisServer {
 public:
  // `extra`: more redis-server arguments (e.g. {"--requirepass", "pw"}).
  explicit RedisServer(std::vector<std::string> extra = {}) : extra_(std::move(extra)) {
    char tmpl[] = "/tmp/approute-redis-XXXXXX";
    if (mkdtemp(tmpl) != nullptr) dir_ = tmpl;
  }
  ~RedisServer() {
    Stop();
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }

  // Starts the server (a few ports are tried). False when it did not answer.
  bool Start() { return Launch(0); }
  // SIGKILL (no shutdown, no persistence: the data is gone) and a new server
  // on the same port, empty.
  bool KillAndRestartEmpty() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      int st = 0;
      waitpid(pid_, &st, 0);
      pid_ = -1;
    }
    std::filesystem::remove(socket_path());
    return Launch(port_);
  }

 private:
  bool Launch(int fixed_port) {
    for (int attempt = 0; attempt < (fixed_port ? 50 : 5) && pid_ <= 0; ++attempt) {
      if (fixed_port && attempt > 0) std::this_thread::sleep_for(std::chrono::milliseconds(20));
      port_ = fixed_port ? fixed_port : FreeLoopbackPort();
      if (port_ == 0) continue;
      std::vector<std::string> args{RedisServerBinary(),
                                    "--port",
                                    std::to_string(port_),
                                    "--bind",
                                    "127.0.0.1",
                                    "--unixsocket",
                                    socket_path(),
                                    "--unixsocketperm",
                                    "700",
                                    "--dir",
                                    dir_,
                                    "--save",
                                    "",
                                    "--appendonly",
                                    "no",
                                    "--daemonize",
                                    "no",
                                    "--loglevel",
                                    "warning",
                                    "--logfile",
                                    dir_ + "/redis.log"};
      args.insert(args.end(), extra_.begin(), extra_.end());
      pid_t pid = fork();
      if (pid == 0) {
        ::approute::testing::PrepareServerChild();
        std::vector<char*> argv;
        for (std::string& s : args) argv.push_back(s.data());
        argv.push_back(nullptr);
        execv(argv[0], argv.data());
        _exit(127);
      }
      pid_ = pid;
      if (!WaitReady()) Stop();
    }
    return pid_ > 0;
  }

 public:
  void Stop() {
    if (pid_ <= 0) return;
    kill(pid_, SIGCONT);
    kill(pid_, SIGTERM);
    int st = 0;
    for (int i = 0; i < 500 && waitpid(pid_, &st, WNOHANG) == 0; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    if (waitpid(pid_, &st, WNOHANG) == 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, &st, 0);
    }
    pid_ = -1;
  }
  // SIGKILL, not restarted (a crashed primary).
  void Kill() {
    if (pid_ <= 0) return;
    kill(pid_, SIGKILL);
    int st = 0;
    waitpid(pid_, &st, 0);
    pid_ = -1;
  }
  void Pause() { kill(pid_, SIGSTOP); }
  void Resume() { kill(pid_, SIGCONT); }

  int port() const { return port_; }
  pid_t pid() const { return pid_; }
  std::string url(const std::string& auth = "") const {
    return "redis://" + auth + "127.0.0.1:" + std::to_string(port_);
  }
  std::string socket_path() const { return dir_ + "/redis.sock"; }

 private:
  bool WaitReady() {
    for (int i = 0; i < 300; ++i) {  // up to 3 s
      int st = 0;
      if (waitpid(pid_, &st, WNOHANG) == pid_) {
        pid_ = -1;
        return false;
      }
      if (LoopbackListening(port_) && access(socket_path().c_str(), F_OK) == 0) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  }

  std::vector<std::string> extra_;
  std::string dir_;
  int port_ = 0;
  pid_t pid_ = -1;
};

}  // namespace approute::testing

#endif  // APPROUTE_TESTS_CPP_REDIS_SERVER_H_
