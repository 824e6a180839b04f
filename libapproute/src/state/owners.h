// owners.h — which processes use the region, and the gate that lets a
// recount run while no live process is half-way through a state change.
//
// Owns: the region's owner table (Header::owners): one slot per process
// (pid, start time, threads inside a state change) and the repair gate
// (Header::repair_holder).
//
// Every operation that changes a count or a table entry runs inside an
// Owners::Op. A process killed inside one leaves its slot with in_op > 0;
// CheckDead() finds it (kill(pid, 0) and the start time in /proc, so a
// reused pid is not mistaken for the dead process) and the caller then
// recounts (recovery.h) behind the gate: it waits until every live process
// is outside its ops, and new ops wait until the recount is done. A process
// that died outside any op left nothing half-done: its slot is just freed.
//
// Locking: lock-free (atomics); Op entry is a fetch_add and a load.
// Thread-safety: all methods may be called from any thread; threads of one
// process share its slot. After fork() the child registers its own slot.
// Requirement: every process sharing a region lives in one PID namespace.
#ifndef APPROUTE_SRC_STATE_OWNERS_H_
#define APPROUTE_SRC_STATE_OWNERS_H_

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "state/region.h"

namespace approute::internal {

class Owners {
 public:
  explicit Owners(const Region& region) : region_(region) {}

  // Inside a state change. Default-constructed: not entered.
  class Op {
   public:
    Op() = default;
    Op(Op&& o) noexcept : rec_(o.rec_) { o.rec_ = nullptr; }
    Op& operator=(Op&&) = delete;
    ~Op() {
      if (rec_ != nullptr) rec_->in_op.fetch_sub(1, std::memory_order_release);
    }

   private:
    friend class Owners;
    explicit Op(OwnerRecord* rec) : rec_(rec) {}
    OwnerRecord* rec_ = nullptr;
  };

  // Enters a state change, waiting while a recount runs. ResourceExhausted
  // when kMaxOwners live processes already use the region.
  absl::StatusOr<Op> Enter();

  // This process's slot, registering it on first use (and after fork).
  absl::StatusOr<uint32_t> Self();

  // Frees the slots of dead processes that died outside any op and returns
  // how many died inside one (a recount is then needed).
  int CheckDead();

  // Closes the gate, waits up to `wait_ms` for every live process to leave its
  // ops, runs `recount`, frees the slots of the processes that died inside an
  // op, and opens the gate. False (nothing done) when another process holds
  // the gate or a live process stayed inside an op (e.g. stopped by SIGSTOP).
  template <typename Recount>
  bool RunExclusive(int64_t wait_ms, Recount recount) {
    absl::StatusOr<uint32_t> me = Self();
    if (!me.ok()) return false;
    Header& h = region_.header();
    uint32_t none = 0;
    if (!h.repair_holder.compare_exchange_strong(none, *me + 1, std::memory_order_seq_cst)) return false;
    std::vector<uint32_t> dead;
    bool drained = WaitDrained(wait_ms, &dead);
    if (drained) {
      recount();
      for (uint32_t s : dead) Release(s);
      h.repairs.fetch_add(1, std::memory_order_relaxed);
    }
    h.repair_holder.store(0, std::memory_order_seq_cst);
    return drained;
  }

  // Whether the process in slot `s` is gone (test hook and diagnostics).
  bool IsDead(uint32_t s) const;
  // Live processes registered now.
  int LiveCount() const;

 private:
  bool WaitDrained(int64_t wait_ms, std::vector<uint32_t>* dead);
  void Release(uint32_t s);
  static uint64_t StartTime(pid_t pid);

  const Region& region_;
  // (fork generation << 32) | this process's slot; ~0 = not registered. Two
  // threads registering at once may each take a slot: harmless, both are
  // this process's and both are freed when it dies.
  std::atomic<uint64_t> cached_{~0ull};
};

// Bumped in every child after fork() (pthread_atfork).
uint64_t ForkGeneration();

}  // namespace approute::internal

#endif  // APPROUTE_SRC_STATE_OWNERS_H_
