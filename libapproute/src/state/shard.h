// shard.h — one shard of a chained hash table inside the state region.
//
// Owns: nothing; a view over a ShardHeader, its bucket array and its entry
// array (region.h). Entries live in a fixed array; buckets, links and the
// free list are indexes, so the same bytes work in every process. Entries
// from ShardHeader::fresh up have never been used: they are free without
// being on the free list, so a new region touches none of its entry pages
// (a million-session region starts in milliseconds, not seconds).
// Locking: the caller holds the shard's robust mutex for every call; use
// LockedShard, which also repairs the shard when the previous holder died.
// Crash: every step is ordered so that a process killed at any instruction
// leaves entries that are either committed (in_use = 1) and complete, or not
// in use; chains, the free list and the count may be off, and Rebuild()
// recomputes all three from the in_use flags alone.
#ifndef APPROUTE_SRC_STATE_SHARD_H_
#define APPROUTE_SRC_STATE_SHARD_H_

#include <atomic>
#include <cstdint>
#include <cstring>

#include "state/region.h"

namespace approute::internal {

// Keeps the compiler from reordering the stores that make a step crash-safe.
inline void CrashOrder() { std::atomic_signal_fence(std::memory_order_seq_cst); }

template <typename Entry>
class Shard {
 public:
  Shard(const Region& region, ShardHeader& h)
      : h_(h), entries_(region.at<Entry>(h.entries_off)), buckets_(region.at<uint32_t>(h.buckets_off)) {}

  ShardHeader& header() { return h_; }
  Entry& at(uint32_t i) { return entries_[i]; }
  uint32_t capacity() const { return h_.capacity; }
  uint32_t* Head(uint64_t hash) { return &buckets_[hash & (h_.nbuckets - 1)]; }

  // The link that points to the committed entry of hash's chain satisfying
  // `match` (for Unlink), or nullptr.
  template <typename Match>
  uint32_t* Find(uint64_t hash, Match match) {
    for (uint32_t* link = Head(hash); *link != kNil; link = &entries_[*link].next) {
      Entry& e = entries_[*link];
      if (e.in_use && e.hash == hash && match(e)) return link;
    }
    return nullptr;
  }

  // Takes a free entry, not yet visible to Find; kNil when full. Its fields
  // hold whatever its last use left (a never-used one is zero) except
  // in_use = 0 and next = kNil: the caller sets every field that is read
  // once the entry is live (zeroing a 500-byte entry per insert was a tenth
  // of an insert's time), then Commit()s it.
  uint32_t Alloc() {
    uint32_t i = h_.free_head;
    if (i != kNil) {
      h_.free_head = entries_[i].next;
    } else if (h_.fresh < h_.capacity) {
      i = h_.fresh;  // never used; a crash before Commit leaves it below fresh, not in use: Rebuild frees it
      h_.fresh = i + 1;
    } else {
      return kNil;
    }
    CrashOrder();
    entries_[i].in_use = 0;
    entries_[i].next = kNil;
    return i;
  }

  // Returns an entry taken by Alloc() and never committed.
  void Free(uint32_t i) {
    entries_[i].in_use = 0;
    entries_[i].next = h_.free_head;
    CrashOrder();
    h_.free_head = i;
  }

  // Makes entry `i` (filled after Alloc) live at the head of hash's chain.
  void Commit(uint32_t i, uint64_t hash) {
    Entry& e = entries_[i];
    uint32_t* head = Head(hash);
    e.hash = hash;
    e.next = *head;
    CrashOrder();
    e.in_use = 1;  // the commit point
    CrashOrder();
    *head = i;
    ++h_.count;
  }

  // Removes the entry `link` points to (as returned by Find).
  void Unlink(uint32_t* link) {
    uint32_t i = *link;
    Entry& e = entries_[i];
    e.in_use = 0;  // the commit point: from here Find skips it
    CrashOrder();
    *link = e.next;
    CrashOrder();
    e.next = h_.free_head;
    CrashOrder();
    h_.free_head = i;
    --h_.count;
  }

  // Unlinks every committed entry for which `dead(e)` holds, calling `take(e)` first.
  template <typename Dead, typename Take>
  void RemoveIf(Dead dead, Take take) {
    for (uint32_t b = 0; b < h_.nbuckets; ++b) RemoveIfInBucket(b, dead, take);
  }

  // RemoveIf over at most `max_buckets` buckets, from where the previous call
  // stopped (ShardHeader::sweep_next) and wrapping around: the routing path
  // sweeps a big shard in slices, so no call holds the lock for a whole
  // shard (about 1 ms at a million sessions). Returns the buckets visited.
  template <typename Dead, typename Take>
  uint32_t RemoveIfBounded(uint32_t max_buckets, Dead dead, Take take) {
    const uint32_t n = max_buckets < h_.nbuckets ? max_buckets : h_.nbuckets;
    uint32_t b = h_.sweep_next < h_.nbuckets ? h_.sweep_next : 0;
    for (uint32_t i = 0; i < n; ++i) {
      RemoveIfInBucket(b, dead, take);
      b = (b + 1) & (h_.nbuckets - 1);
    }
    h_.sweep_next = b;  // a hint only: any value is safe after a crash
    return n;
  }

  template <typename Dead, typename Take>
  void RemoveIfInBucket(uint32_t b, Dead& dead, Take& take) {
    uint32_t* link = &buckets_[b];
    while (*link != kNil) {
      Entry& e = entries_[*link];
      if (e.in_use && dead(e)) {
        take(e);
        Unlink(link);
      } else {
        link = &e.next;
      }
    }
  }

  // Entries Alloc() can still hand out (the free list and the never-used ones).
  uint32_t FreeCount() {
    uint32_t n = h_.capacity - h_.fresh;
    for (uint32_t i = h_.free_head; i != kNil && n <= h_.capacity; i = entries_[i].next) ++n;
    return n;
  }

  // Calls fn(e) for every committed entry.
  template <typename Fn>
  void ForEach(Fn fn) {
    for (uint32_t i = 0; i < h_.fresh; ++i) {
      if (entries_[i].in_use) fn(entries_[i]);
    }
  }

  // Recomputes the chains, the free list and the count from the in_use flags
  // of the entries below `fresh` (those above were never used); entries for
  // which `valid(e)` is false are dropped. Returns the count.
  template <typename Valid>
  uint32_t Rebuild(Valid valid) {
    for (uint32_t b = 0; b < h_.nbuckets; ++b) buckets_[b] = kNil;
    uint32_t free_head = kNil, count = 0;
    if (h_.fresh > h_.capacity) h_.fresh = h_.capacity;
    for (uint32_t k = h_.fresh; k-- > 0;) {
      Entry& e = entries_[k];
      if (e.in_use && valid(e)) {
        uint32_t* head = Head(e.hash);
        e.next = *head;
        *head = k;
        ++count;
      } else {
        e.in_use = 0;
        e.next = free_head;
        free_head = k;
      }
    }
    h_.free_head = free_head;
    h_.count = count;
    return count;
  }
  uint32_t Rebuild() {
    return Rebuild([](const Entry&) { return true; });
  }

 private:
  ShardHeader& h_;
  Entry* entries_;
  uint32_t* buckets_;
};

// Locks a shard; if its previous holder died inside, rebuilds the shard
// before anything reads it and flags the region for a recount of the counts.
template <typename Entry>
class LockedShard : public Shard<Entry> {
 public:
  LockedShard(const Region& region, ShardHeader& h) : Shard<Entry>(region, h), guard_(h.mu) {
    if (guard_.owner_died()) {
      this->Rebuild();
      region.header().repair_needed.store(1, std::memory_order_relaxed);
    }
  }

 private:
  LockGuard guard_;
};

}  // namespace approute::internal

#endif  // APPROUTE_SRC_STATE_SHARD_H_
