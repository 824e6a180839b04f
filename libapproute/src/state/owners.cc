#include "state/owners.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <thread>

#include "util/str_util.h"

namespace approute::internal {
namespace {

std::atomic<uint64_t> g_fork_generation{0};
void OnForkChild() { g_fork_generation.fetch_add(1, std::memory_order_relaxed); }

}  // namespace

// Registered when the library is loaded, before any fork it must see.
const int g_atfork = pthread_atfork(nullptr, nullptr, OnForkChild);

uint64_t ForkGeneration() { return g_fork_generation.load(std::memory_order_relaxed); }

// Field 22 of /proc/PID/stat: the start time in clock ticks since boot. 0
// when it cannot be read (then only kill(pid, 0) decides).
uint64_t Owners::StartTime(pid_t pid) {
  char path[64];
  std::snprintf(path, sizeof(path), "/proc/%d/stat", static_cast<int>(pid));
  FILE* f = std::fopen(path, "re");
  if (f == nullptr) return 0;
  char buf[1024];
  size_t n = std::fread(buf, 1, sizeof(buf) - 1, f);
  std::fclose(f);
  buf[n] = 0;
  // The command name (field 2) is in parentheses and may hold spaces: start after the last ')'.
  char* p = std::strrchr(buf, ')');
  if (p == nullptr) return 0;
  int field = 2;
  for (++p; *p != 0 && field < 22; ++p) {
    if (*p == ' ') ++field;
  }
  return std::strtoull(p, nullptr, 10);
}

bool Owners::IsDead(uint32_t s) const {
  const OwnerRecord& o = region_.header().owners[s];
  pid_t pid = o.pid.load(std::memory_order_acquire);
  if (pid <= 0) return false;
  if (kill(pid, 0) != 0 && errno == ESRCH) return true;
  uint64_t want = o.start.load(std::memory_order_relaxed);
  uint64_t have = StartTime(pid);
  return want != 0 && have != 0 && want != have;  // the pid now names another process
}

int Owners::LiveCount() const {
  int n = 0;
  for (uint32_t s = 0; s < kMaxOwners; ++s) {
    if (region_.header().owners[s].pid.load(std::memory_order_relaxed) > 0 && !IsDead(s)) ++n;
  }
  return n;
}

void Owners::Release(uint32_t s) {
  OwnerRecord& o = region_.header().owners[s];
  o.in_op.store(0, std::memory_order_relaxed);
  o.start.store(0, std::memory_order_relaxed);
  o.pid.store(0, std::memory_order_release);
}

absl::StatusOr<uint32_t> Owners::Self() {
  const uint64_t gen = ForkGeneration() & 0xFFFFFFFFu;
  uint64_t c = cached_.load(std::memory_order_acquire);
  if (c != ~0ull && (c >> 32) == gen) return static_cast<uint32_t>(c);
  const pid_t me = getpid();
  const uint64_t start = StartTime(me);
  Header& h = region_.header();
  for (int pass = 0; pass < 2; ++pass) {
    for (uint32_t s = 0; s < kMaxOwners; ++s) {
      OwnerRecord& o = h.owners[s];
      int32_t pid = o.pid.load(std::memory_order_acquire);
      if (pid == me) {
        // A slot with our pid: ours from before (an Owners of another Router
        // in this process), or a dead process's whose pid we were given.
        if (o.start.load(std::memory_order_relaxed) == start) {
          cached_.store((gen << 32) | s, std::memory_order_release);
          return s;
        }
        continue;  // a dead owner's: CheckDead() frees or recounts it
      }
      if (pid != 0 && !(pass == 1 && o.in_op.load(std::memory_order_relaxed) == 0 && IsDead(s))) continue;
      // Free, or (second pass) a process that died outside any op: take it.
      if (!o.pid.compare_exchange_strong(pid, me, std::memory_order_acq_rel)) continue;
      o.in_op.store(0, std::memory_order_relaxed);
      o.start.store(start, std::memory_order_release);
      cached_.store((gen << 32) | s, std::memory_order_release);
      return s;
    }
  }
  return absl::ResourceExhaustedError(
      Cat("the state region's process table is full (", kMaxOwners, " live processes use it)"));
}

absl::StatusOr<Owners::Op> Owners::Enter() {
  absl::StatusOr<uint32_t> s = Self();
  if (!s.ok()) return s.status();
  Header& h = region_.header();
  OwnerRecord* rec = &h.owners[*s];
  for (int spins = 0;; ++spins) {
    rec->in_op.fetch_add(1, std::memory_order_seq_cst);
    uint32_t holder = h.repair_holder.load(std::memory_order_seq_cst);
    if (holder == 0) return Op(rec);
    rec->in_op.fetch_sub(1, std::memory_order_seq_cst);
    // A recount runs. If its process died, open the gate ourselves.
    if (spins % 64 == 63 && IsDead(holder - 1)) {
      h.repair_holder.compare_exchange_strong(holder, 0, std::memory_order_seq_cst);
    }
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
}

int Owners::CheckDead() {
  Header& h = region_.header();
  int died_in_op = 0;
  for (uint32_t s = 0; s < kMaxOwners; ++s) {
    OwnerRecord& o = h.owners[s];
    if (o.pid.load(std::memory_order_acquire) <= 0 || !IsDead(s)) continue;
    if (o.in_op.load(std::memory_order_acquire) == 0) {
      int32_t pid = o.pid.load(std::memory_order_relaxed);
      // Nothing half-done: free the slot (unless a new process took it meanwhile).
      if (o.in_op.load(std::memory_order_acquire) == 0 &&
          o.pid.compare_exchange_strong(pid, 0, std::memory_order_acq_rel)) {
        o.start.store(0, std::memory_order_relaxed);
      }
    } else {
      ++died_in_op;
    }
  }
  return died_in_op;
}

bool Owners::WaitDrained(int64_t wait_ms, std::vector<uint32_t>* dead) {
  Header& h = region_.header();
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(wait_ms);
  for (;;) {
    dead->clear();
    bool busy = false;
    for (uint32_t s = 0; s < kMaxOwners; ++s) {
      OwnerRecord& o = h.owners[s];
      if (o.pid.load(std::memory_order_acquire) <= 0) continue;
      if (o.in_op.load(std::memory_order_seq_cst) == 0) continue;
      if (IsDead(s)) {
        dead->push_back(s);
      } else {
        busy = true;
      }
    }
    if (!busy) return true;
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
}

}  // namespace approute::internal
