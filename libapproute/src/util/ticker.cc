// The upkeep thread (ticker.h).
#include "util/ticker.h"

#include <unistd.h>

namespace approute::internal {

Ticker::Ticker(int64_t interval_ms, std::function<void()> tick)
    : interval_(interval_ms), tick_(std::move(tick)), owner_(getpid()), sync_(std::make_unique<Sync>()) {
  thread_ = std::make_unique<std::thread>([this] { Run(); });
}

Ticker::~Ticker() {
  if (getpid() != owner_) {
    // A forked copy: the thread is the parent's. Its handle must be neither
    // joined nor destroyed (a joinable std::thread's destructor aborts), and
    // the condition variable it waits on cannot be destroyed here.
    (void)thread_.release();
    (void)sync_.release();
    return;
  }
  {
    std::lock_guard<std::mutex> l(sync_->mu);
    sync_->stop = true;
  }
  sync_->cv.notify_all();
  thread_->join();
}

int64_t Ticker::ticks() const {
  std::lock_guard<std::mutex> l(sync_->mu);
  return sync_->ticks;
}

void Ticker::Run() {
  Sync& s = *sync_;
  std::unique_lock<std::mutex> l(s.mu);
  while (!s.cv.wait_for(l, interval_, [&s] { return s.stop; })) {
    l.unlock();
    tick_();
    l.lock();
    ++s.ticks;
  }
}

}  // namespace approute::internal
