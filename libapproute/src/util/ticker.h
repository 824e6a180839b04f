// ticker.h — a thread that calls a function every interval until it is
// destroyed (the router's opt-in upkeep: RouterOptions::upkeep_interval_ms).
//
// Owns: one std::thread, started by the constructor and stopped and joined
// by the destructor (which waits for a call in progress to return).
// fork(): the thread does not exist in a child. A Ticker destroyed in
// another process than the one that started it neither joins nor signals:
// its thread handle, mutex and condition variable are left alone (leaked).
// Other locks the thread held at the fork stay held in the child, so never
// start one in a process that forks afterwards (Kamailio's main process
// forks its workers).
// Thread-safety: the function runs on the ticker's thread only; it must be
// safe to run concurrently with the owner's other threads. std::mutex and
// std::condition_variable (pthread), so ThreadSanitizer sees the hand-over.
#ifndef APPROUTE_SRC_UTIL_TICKER_H_
#define APPROUTE_SRC_UTIL_TICKER_H_

#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>

namespace approute::internal {

class Ticker {
 public:
  // Calls `tick` every `interval_ms` (> 0), the first time one interval from now.
  Ticker(int64_t interval_ms, std::function<void()> tick);
  ~Ticker();
  Ticker(const Ticker&) = delete;
  Ticker& operator=(const Ticker&) = delete;

  int64_t ticks() const;  // calls made so far

 private:
  void Run();

  // On the heap, so that a forked copy can leave them alone: the child's
  // copy of a condition variable the thread waits on can never be destroyed
  // (glibc waits for its waiters, which do not exist in the child).
  struct Sync {
    std::mutex mu;
    std::condition_variable cv;
    bool stop = false;  // guarded by mu
    int64_t ticks = 0;  // guarded by mu
  };

  const std::chrono::milliseconds interval_;
  const std::function<void()> tick_;
  const pid_t owner_;
  std::unique_ptr<Sync> sync_;
  std::unique_ptr<std::thread> thread_;
};

}  // namespace approute::internal

#endif  // APPROUTE_SRC_UTIL_TICKER_H_
