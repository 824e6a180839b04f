#include "state/region.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <thread>

#include "absl/strings/str_cat.h"
#include "util/str_util.h"

namespace approute::internal {
namespace {

constexpr size_t kAlign = 64;
size_t AlignUp(size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

uint32_t ShardCapacity(uint64_t total) {
  // Each shard holds its even share plus six standard deviations of a
  // uniform hash's spread (binomial, about sqrt(share)), at least 1/32 more:
  // a merely uneven hash does not exhaust one shard before the total, and a
  // million-entry table carries 3% of slack, not 25% (bytes per session).
  uint64_t even = (total + kShards - 1) / kShards;
  uint64_t sd = 1;
  while (sd * sd < even) ++sd;
  uint64_t slack = std::max<uint64_t>(6 * sd, even / 32);
  return static_cast<uint32_t>(even + slack + 8);
}

uint32_t BucketCount(uint32_t capacity) {
  uint32_t n = 8;
  while (n < capacity) n <<= 1;
  return n;
}

std::string ErrnoText(int err) { return std::string(strerror(err)); }

// A segment's name in messages, as users give it ("approute", not the
// "/approute" that NormaliseName makes for shm_open), so that every command
// names it alike.
std::string_view Shown(std::string_view shm_name) {
  if (!shm_name.empty() && shm_name[0] == '/') shm_name.remove_prefix(1);
  return shm_name;
}

}  // namespace

void RobustMutex::Init() {
  pthread_mutexattr_t attr;
  pthread_mutexattr_init(&attr);
  pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
  pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
  pthread_mutex_init(&mu_, &attr);
  pthread_mutexattr_destroy(&attr);
}

bool RobustMutex::Lock() {
  int rc = pthread_mutex_lock(&mu_);
  if (rc == EOWNERDEAD) {
    // The previous owner died inside a critical section; see the class comment.
    pthread_mutex_consistent(&mu_);
    return true;
  }
  return false;
}

size_t Region::ComputeLayout(const StateLimits& limits, Header* h) {
  size_t off = AlignUp(sizeof(Header));
  h->nodes_off = off;
  off = AlignUp(off + sizeof(NodeRecord) * limits.max_nodes);
  h->hot_off = off;
  off = AlignUp(off + sizeof(NodeHot) * limits.max_nodes);
  h->app_slots_off = off;
  off = AlignUp(off + sizeof(int64_t) * kMaxApps * limits.max_nodes);
  auto place = [&off](ShardHeader* shards, uint64_t total, size_t entry_size) {
    uint32_t cap = ShardCapacity(total);
    uint32_t nb = BucketCount(cap);
    for (size_t i = 0; i < kShards; ++i) {
      shards[i].capacity = cap;
      shards[i].nbuckets = nb;
      shards[i].buckets_off = off;
      off = AlignUp(off + sizeof(uint32_t) * nb);
      shards[i].entries_off = off;
      off = AlignUp(off + entry_size * cap);
    }
  };
  place(h->session_shards, limits.max_sessions, sizeof(SessionEntry));
  place(h->affinity_shards, limits.max_affinities, sizeof(AffinityEntry));
  return off;
}

void Region::Initialise(char* base, const StateLimits& limits, size_t size) {
  // The memory is fresh (zero-filled) mmap or ftruncate'd shm.
  auto* h = reinterpret_cast<Header*>(base);
  h->layout_version = kLayoutVersion;
  h->header_size = sizeof(Header);
  h->total_size = size;
  h->max_nodes = static_cast<uint64_t>(limits.max_nodes);
  h->max_sessions = static_cast<uint64_t>(limits.max_sessions);
  h->max_affinities = static_cast<uint64_t>(limits.max_affinities);
  h->session_entry_size = sizeof(SessionEntry);
  h->affinity_entry_size = sizeof(AffinityEntry);
  h->node_record_size = sizeof(NodeRecord);
  h->node_hot_size = sizeof(NodeHot);
  ComputeLayout(limits, h);
  h->registry_mu.Init();
  h->cluster.block_mu.Init();
  for (auto& app : h->apps) app.mu.Init();
  h->claim_seq.store(1);
  auto init_shards = [base](ShardHeader* shards) {
    for (size_t i = 0; i < kShards; ++i) {
      ShardHeader& s = shards[i];
      s.mu.Init();
      auto* buckets = reinterpret_cast<uint32_t*>(base + s.buckets_off);
      for (uint32_t b = 0; b < s.nbuckets; ++b) buckets[b] = kNil;
      // Entries are handed out from `fresh` up (shard.h): none is written
      // here, so their pages are touched only as the table fills.
      s.free_head = kNil;
      s.fresh = 0;
      s.count = 0;
    }
  };
  init_shards(h->session_shards);
  init_shards(h->affinity_shards);
  h->magic = kMagic;
  h->ready.store(1, std::memory_order_release);
}

absl::Status Region::Check(const char* base, size_t size, const std::string& name) {
  auto* h = reinterpret_cast<const Header*>(base);
  if (size < sizeof(uint64_t) * 2 || h->magic != kMagic) {
    return absl::FailedPreconditionError(
        Cat("shared segment '", Shown(name), "' is not an approute state region (bad magic)"));
  }
  if (h->layout_version != kLayoutVersion || h->header_size != sizeof(Header) ||
      h->session_entry_size != sizeof(SessionEntry) || h->affinity_entry_size != sizeof(AffinityEntry) ||
      h->node_record_size != sizeof(NodeRecord) || h->node_hot_size != sizeof(NodeHot)) {
    return absl::FailedPreconditionError(
        Cat("shared segment '", Shown(name), "' has layout version ", h->layout_version, ", this library uses ",
            kLayoutVersion, " (record sizes differ); stop its users and remove it with Router.unlink"));
  }
  if (h->total_size != size) {
    return absl::FailedPreconditionError(
        Cat("shared segment '", Shown(name), "' is ", size, " bytes, its header says ", h->total_size));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> Region::NormaliseName(std::string_view name) {
  std::string_view n = name;
  if (!n.empty() && n[0] == '/') n.remove_prefix(1);
  if (n.empty() || n.size() > 200) {
    return absl::InvalidArgumentError(Cat("shared segment name '", name, "' must have 1 to 200 characters"));
  }
  for (char c : n) {
    bool ok =
        (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.';
    if (!ok) {
      return absl::InvalidArgumentError(
          Cat("shared segment name '", name, "' may only contain letters, digits, '_', '-' and '.'"));
    }
  }
  return Cat("/", n);
}

Region::Region(char* base, size_t size, std::string name) : base_(base), size_(size), name_(std::move(name)) { Bind(); }

Region::~Region() { munmap(base_, size_); }

void Region::Bind() {
  header_ = reinterpret_cast<Header*>(base_);
  nodes_ = reinterpret_cast<NodeRecord*>(base_ + header_->nodes_off);
  hot_ = reinterpret_cast<NodeHot*>(base_ + header_->hot_off);
  app_slots_ = reinterpret_cast<int64_t*>(base_ + header_->app_slots_off);
}

StateLimits Region::limits() const {
  StateLimits l;
  l.max_nodes = static_cast<int64_t>(header_->max_nodes);
  l.max_sessions = static_cast<int64_t>(header_->max_sessions);
  l.max_affinities = static_cast<int64_t>(header_->max_affinities);
  return l;
}

namespace {
// Asks for transparent huge pages on the region: a call touches a random
// bucket and entry of each table, so with a million sessions (about 740 MB)
// most of its cost is TLB and cache misses; 2 MB pages take the TLB misses
// away. Only advice: the kernel ignores it where THP is off for this kind of
// memory (anonymous: /sys/kernel/mm/transparent_hugepage/enabled; shared
// memory: .../shmem_enabled, "advise" or "always" to use it), and
// untouched memory is still not faulted in.
void AdviseHugePages(void* p, size_t size) { (void)madvise(p, size, MADV_HUGEPAGE); }
}  // namespace

absl::StatusOr<std::unique_ptr<Region>> Region::CreatePrivate(const StateLimits& limits) {
  Header probe{};
  size_t size = ComputeLayout(limits, &probe);
  void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    return absl::ResourceExhaustedError(Cat("cannot map ", size, " bytes for the state region: ", ErrnoText(errno)));
  }
  AdviseHugePages(p, size);
  Initialise(static_cast<char*>(p), limits, size);
  return std::unique_ptr<Region>(new Region(static_cast<char*>(p), size, ""));
}

absl::StatusOr<std::unique_ptr<Region>> Region::OpenShared(const std::string& raw_name, const StateLimits& limits,
                                                           bool* created) {
  absl::StatusOr<std::string> name = NormaliseName(raw_name);
  if (!name.ok()) return name.status();
  Header probe{};
  size_t size = ComputeLayout(limits, &probe);
  int fd = shm_open(name->c_str(), O_RDWR | O_CREAT | O_EXCL, 0660);
  if (fd >= 0) {
    if (ftruncate(fd, static_cast<off_t>(size)) != 0) {
      int err = errno;
      close(fd);
      shm_unlink(name->c_str());
      return absl::ResourceExhaustedError(
          Cat("cannot size shared segment '", Shown(*name), "' to ", size, " bytes: ", ErrnoText(err)));
    }
    void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED) {
      int err = errno;
      shm_unlink(name->c_str());
      return absl::ResourceExhaustedError(Cat("cannot map shared segment '", Shown(*name), "': ", ErrnoText(err)));
    }
    AdviseHugePages(p, size);
    Initialise(static_cast<char*>(p), limits, size);
    *created = true;
    return std::unique_ptr<Region>(new Region(static_cast<char*>(p), size, *name));
  }
  if (errno != EEXIST) {
    return absl::PermissionDeniedError(Cat("cannot create shared segment '", Shown(*name), "': ", ErrnoText(errno)));
  }
  *created = false;
  absl::StatusOr<std::unique_ptr<Region>> r = AttachShared(*name);
  if (!r.ok()) return r.status();
  StateLimits have = (*r)->limits();
  if (have.max_nodes != limits.max_nodes || have.max_sessions != limits.max_sessions ||
      have.max_affinities != limits.max_affinities) {
    return absl::FailedPreconditionError(
        Cat("shared segment '", Shown(*name), "' was created with state {max_nodes: ", have.max_nodes,
            ", max_sessions: ", have.max_sessions, ", max_affinities: ", have.max_affinities,
            "} but the configuration asks for {max_nodes: ", limits.max_nodes, ", max_sessions: ", limits.max_sessions,
            ", max_affinities: ", limits.max_affinities,
            "}; stop its users and remove it with Router.unlink to change capacities"));
  }
  return r;
}

absl::StatusOr<std::unique_ptr<Region>> Region::AttachShared(const std::string& raw_name) {
  absl::StatusOr<std::string> name = NormaliseName(raw_name);
  if (!name.ok()) return name.status();
  int fd = shm_open(name->c_str(), O_RDWR, 0);
  if (fd < 0) {
    if (errno == ENOENT) {
      return absl::NotFoundError(Cat("no shared segment named '", Shown(*name), "'"));
    }
    return absl::PermissionDeniedError(Cat("cannot open shared segment '", Shown(*name), "': ", ErrnoText(errno)));
  }
  // The creator may still be sizing and initialising it: wait a little.
  struct stat st {};
  size_t size = 0;
  void* p = MAP_FAILED;
  for (int i = 0; i < 500; ++i) {
    if (fstat(fd, &st) == 0 && static_cast<size_t>(st.st_size) >= sizeof(Header)) {
      size = static_cast<size_t>(st.st_size);
      p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
      if (p != MAP_FAILED) {
        auto* h = reinterpret_cast<Header*>(p);
        if (h->ready.load(std::memory_order_acquire) == 1) break;
        // The creator writes the magic last: any other non-zero value is not ours.
        if (h->magic != 0 && h->magic != kMagic) break;
        munmap(p, size);
        p = MAP_FAILED;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  close(fd);
  if (p == MAP_FAILED) {
    return absl::FailedPreconditionError(Cat(
        "shared segment '", Shown(*name), "' was never initialised (its creator died?); remove it with Router.unlink"));
  }
  absl::Status ok = Check(static_cast<char*>(p), size, *name);
  if (!ok.ok()) {
    munmap(p, size);
    return ok;
  }
  AdviseHugePages(p, size);
  return std::unique_ptr<Region>(new Region(static_cast<char*>(p), size, *name));
}

absl::StatusOr<bool> Region::Unlink(const std::string& raw_name) {
  absl::StatusOr<std::string> name = NormaliseName(raw_name);
  if (!name.ok()) return name.status();
  if (shm_unlink(name->c_str()) == 0) return true;
  if (errno == ENOENT) return false;
  return absl::PermissionDeniedError(Cat("cannot remove shared segment '", Shown(*name), "': ", ErrnoText(errno)));
}

}  // namespace approute::internal
