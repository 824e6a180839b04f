#include "state/session_table.h"

#include <cstring>

#include <xxhash.h>

#include "state/shard.h"

namespace approute::internal {
namespace {

size_t ShardOf(uint64_t hash) { return static_cast<size_t>(hash >> 60) & (kShards - 1); }

// The app's calls in flight (AppCounters::in_flight, read by the retry
// budget): +1 when a session is committed, -1 when it is unlinked. A
// process killed between the two steps leaves it one off until the recount.
void InFlight(Header& h, uint32_t app, int64_t d) {
  if (app < kMaxApps) h.apps[app].counters.in_flight.fetch_add(d, std::memory_order_relaxed);
}

}  // namespace

uint64_t SessionTable::Hash(std::string_view call_id) { return XXH3_64bits(call_id.data(), call_id.size()); }

void SessionTable::Prefetch(uint64_t h) const {
  const ShardHeader& s = region_.header().session_shards[ShardOf(h)];
  __builtin_prefetch(region_.at<uint32_t>(s.buckets_off) + (h & (s.nbuckets - 1)), 1);
}

void SessionTable::HeldBy(const SessionEntry& e, Held* out) {
  out->app = e.app;
  out->resource = e.resource;
  out->extra = e.extra;
  out->node = e.node;
  out->epoch = e.node_epoch;
  out->claim = e.claim;
  out->pref_claim = e.pref_claim;
  out->pref_hash = e.pref_hash;
  out->key.Set(GetFixed(e.key));
}

Held SessionTable::HeldBy(const SessionEntry& e) {
  Held h;
  HeldBy(e, &h);
  return h;
}

int64_t SessionTable::Count() {
  int64_t n = 0;
  for (size_t s = 0; s < kShards; ++s) {
    LockedShard<SessionEntry> sh(region_, region_.header().session_shards[s]);
    n += sh.header().count;
  }
  return n;
}

SessionTable::Insert SessionTable::Add(const SessionInit& init, int64_t now, SessionEntry* existing,
                                       std::vector<Held>* expired) {
  const uint64_t h = init.call_id_hash != 0 ? init.call_id_hash : Hash(init.call_id);
  Header& hdr = region_.header();
  LockedShard<SessionEntry> sh(region_, hdr.session_shards[ShardOf(h)]);
  auto same = [&](const SessionEntry& e) { return GetFixed(e.call_id) == init.call_id; };
  if (uint32_t* link = sh.Find(h, same)) {
    SessionEntry& e = sh.at(*link);
    if (e.expires_ms > now) {
      *existing = e;
      return Insert::kDuplicate;
    }
    expired->push_back(HeldBy(e));
    const uint32_t gone = e.app;
    sh.Unlink(link);
    InFlight(hdr, gone, -1);
    hdr.expired_sessions.fetch_add(1, std::memory_order_relaxed);
  }
  uint32_t i = sh.Alloc();
  if (i == kNil) {
    sh.RemoveIf([now](const SessionEntry& e) { return e.expires_ms <= now; },
                [&](const SessionEntry& e) {
                  expired->push_back(HeldBy(e));
                  InFlight(hdr, e.app, -1);
                  hdr.expired_sessions.fetch_add(1, std::memory_order_relaxed);
                });
    i = sh.Alloc();
  }
  if (i == kNil) return Insert::kFull;
  SessionEntry& e = sh.at(i);
  SetFixed(e.call_id, init.call_id);
  SetFixed(e.key, init.key);
  e.app = init.app;
  e.resource = init.resource;
  e.extra = init.extra;
  e.node = init.node;
  e.node_epoch = init.epoch;
  e.claim = init.claim;
  e.pref_claim = init.pref_claim;
  e.pref_hash = init.pref_hash;
  PackAttrs(init.attrs, e.attrs);
  e.created_ms = init.created_ms;
  e.expires_ms = init.expires_ms;
  e.attempt = 1;
  e.confirmed = 0;
  e.n_tried = 0;
  for (size_t t = 0; t < init.n_tried && t < static_cast<size_t>(kMaxAttemptsLimit); ++t)
    e.tried[e.n_tried++] = init.tried[t];
  sh.Commit(i, h);
  InFlight(hdr, init.app, 1);
  return Insert::kInserted;
}

std::optional<SessionEntry> SessionTable::Get(std::string_view call_id, int64_t now) {
  const uint64_t h = Hash(call_id);
  LockedShard<SessionEntry> sh(region_, region_.header().session_shards[ShardOf(h)]);
  uint32_t* link = sh.Find(h, [&](const SessionEntry& e) { return GetFixed(e.call_id) == call_id; });
  if (link == nullptr || sh.at(*link).expires_ms <= now) return std::nullopt;
  return sh.at(*link);
}

bool SessionTable::Remove(std::string_view call_id, Held* held) {
  const uint64_t h = Hash(call_id);
  LockedShard<SessionEntry> sh(region_, region_.header().session_shards[ShardOf(h)]);
  uint32_t* link = sh.Find(h, [&](const SessionEntry& e) { return GetFixed(e.call_id) == call_id; });
  if (link == nullptr) return false;
  HeldBy(sh.at(*link), held);
  sh.Unlink(link);
  InFlight(region_.header(), held->app, -1);
  return true;
}

bool SessionTable::Modify(std::string_view call_id, int64_t now, absl::FunctionRef<bool(SessionEntry&)> fn,
                          Held* held) {
  const uint64_t h = Hash(call_id);
  LockedShard<SessionEntry> sh(region_, region_.header().session_shards[ShardOf(h)]);
  uint32_t* link = sh.Find(h, [&](const SessionEntry& e) { return GetFixed(e.call_id) == call_id; });
  if (link == nullptr || sh.at(*link).expires_ms <= now) return false;
  SessionEntry& e = sh.at(*link);
  if (fn(e)) {
    HeldBy(e, held);
    sh.Unlink(link);
    InFlight(region_.header(), held->app, -1);
  }
  return true;
}

bool SessionTable::Confirm(std::string_view call_id, Held* held) {
  const uint64_t h = Hash(call_id);
  LockedShard<SessionEntry> sh(region_, region_.header().session_shards[ShardOf(h)]);
  uint32_t* link = sh.Find(h, [&](const SessionEntry& e) { return GetFixed(e.call_id) == call_id; });
  if (link == nullptr) return false;
  sh.at(*link).confirmed = 1;
  HeldBy(sh.at(*link), held);
  return true;
}

int64_t SessionTable::Expire(size_t s, int64_t now, std::vector<Held>* held, uint32_t max_buckets) {
  Header& hdr = region_.header();
  size_t before = held->size();
  {
    LockedShard<SessionEntry> sh(region_, hdr.session_shards[s]);
    auto dead = [now](const SessionEntry& e) { return e.expires_ms <= now; };
    auto take = [&](const SessionEntry& e) {
      held->push_back(HeldBy(e));
      InFlight(hdr, e.app, -1);
    };
    if (max_buckets == 0) {
      sh.RemoveIf(dead, take);
    } else {
      sh.RemoveIfBounded(max_buckets, dead, take);
    }
  }
  auto n = static_cast<int64_t>(held->size() - before);
  hdr.expired_sessions.fetch_add(n, std::memory_order_relaxed);
  return n;
}

std::vector<SessionRow> SessionTable::List(int64_t now, absl::FunctionRef<bool(const SessionEntry&)> keep,
                                           size_t limit) {
  std::vector<SessionRow> out;
  for (size_t s = 0; s < kShards; ++s) {
    LockedShard<SessionEntry> sh(region_, region_.header().session_shards[s]);
    sh.ForEach([&](const SessionEntry& e) {
      if (e.expires_ms <= now || !keep(e) || (limit != 0 && out.size() >= limit)) return;
      SessionRow r;
      r.call_id = std::string(GetFixed(e.call_id));
      r.key = std::string(GetFixed(e.key));
      r.app = e.app;
      r.node = e.node;
      r.epoch = e.node_epoch;
      r.created_ms = e.created_ms;
      r.expires_ms = e.expires_ms;
      r.attempt = e.attempt;
      r.confirmed = e.confirmed != 0;
      out.push_back(std::move(r));
    });
  }
  return out;
}

void SessionTable::PackAttrs(const std::map<std::string, std::string>* attrs, char (&out)[kSessionAttrsLen]) {
  size_t n = 0;
  if (attrs != nullptr) {
    for (const auto& [k, v] : *attrs) {
      if (k.empty() || k.size() > 255 || v.size() > 255 || n + 2 + k.size() + v.size() >= kSessionAttrsLen) break;
      out[n++] = static_cast<char>(static_cast<unsigned char>(k.size()));
      std::memcpy(out + n, k.data(), k.size());
      n += k.size();
      out[n++] = static_cast<char>(static_cast<unsigned char>(v.size()));
      std::memcpy(out + n, v.data(), v.size());
      n += v.size();
    }
  }
  out[n] = 0;  // a key length of 0 ends the list
}

std::map<std::string, std::string> SessionTable::UnpackAttrs(const char (&in)[kSessionAttrsLen]) {
  std::map<std::string, std::string> out;
  size_t n = 0;
  while (n < kSessionAttrsLen) {
    size_t kl = static_cast<unsigned char>(in[n]);
    if (kl == 0 || n + 1 + kl >= kSessionAttrsLen) break;
    std::string k(in + n + 1, kl);
    n += 1 + kl;
    size_t vl = static_cast<unsigned char>(in[n]);
    if (n + 1 + vl > kSessionAttrsLen) break;
    out.emplace(std::move(k), std::string(in + n + 1, vl));
    n += 1 + vl;
  }
  return out;
}

}  // namespace approute::internal
