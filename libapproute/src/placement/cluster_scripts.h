// cluster_scripts.h — the Lua scripts of the cluster placement, each one
// atomic in Redis. Keys (all under the deployment's hash tag P):
//
//   P proxies            ZSET proxy -> lease deadline (Redis TIME, ms); a
//                        proxy whose deadline passed counts for nothing
//   P n:<node>|<res>     HASH proxy -> that proxy's share of the node's count
//                        (absolute, written only by that proxy; readers sum
//                        the shares of live proxies)
//   P admin              HASH node -> admin state (AdminState as a number),
//                        set by an operator at any proxy, applied by all
//   P c:<app>|<key>      HASH node, grace (ms), r:<proxy> -> that proxy's
//                        sessions on the claim. A claim holds while a live
//                        proxy has sessions on it or its grace TTL runs.
//   P members            HASH node -> the record of a node that joined by
//                        status report at some proxy (cluster_members.h)
//
// Every script first renews the caller's lease (ZADD), so a proxy that
// routes is live; the sweep renews it when idle (kPublish, every
// ClusterPlacement::kRefreshMs). The scripts answering {flag, value} have
// the flag's values named by an enum below them (a reply with a flag
// outside it is malformed: ParseFlag).
#ifndef APPROUTE_SRC_PLACEMENT_CLUSTER_SCRIPTS_H_
#define APPROUTE_SRC_PLACEMENT_CLUSTER_SCRIPTS_H_

#include <cstdint>
#include <optional>

namespace approute::internal::cluster_lua {

// The flag of a {flag, value} reply as `Flag` (an enum numbered 0..kLast),
// nullopt when the number is not one of its values.
template <typename Flag>
constexpr std::optional<Flag> ParseFlag(int64_t v) {
  if (v < 0 || v > static_cast<int64_t>(Flag::kLast)) return std::nullopt;
  return static_cast<Flag>(v);
}

#define APPROUTE_LUA_PRELUDE                                                                                         \
  "local function now_ms() local t = redis.call('TIME') "                                                            \
  "return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) end\n"                                           \
  "local function live(z, p, now) local s = redis.call('ZSCORE', z, p) "                                             \
  "return s and tonumber(s) > now end\n"                                                                             \
  "local function held(c, z, now)\n"                                                                                 \
  "  local kv = redis.call('HGETALL', c)\n"                                                                          \
  "  for i = 1, #kv, 2 do\n"                                                                                         \
  "    local f = kv[i]\n"                                                                                            \
  "    if string.sub(f, 1, 2) == 'r:' and tonumber(kv[i + 1]) > 0 and live(z, string.sub(f, 3), now) then return "   \
  "true end\n"                                                                                                       \
  "  end\n"                                                                                                          \
  "  return false\n"                                                                                                 \
  "end\n"                                                                                                            \
  "local function claim_node(c, z, now)\n"                                                                           \
  "  local node = redis.call('HGET', c, 'node')\n"                                                                   \
  "  if not node then return nil end\n"                                                                              \
  "  if redis.call('PTTL', c) > 0 or held(c, z, now) then return node end\n"                                         \
  "  return nil\n"                                                                                                   \
  "end\n"                                                                                                            \
  "local function reserve(n, z, p, share, cap, now)\n"                                                               \
  "  local others = 0\n"                                                                                             \
  "  local kv = redis.call('HGETALL', n)\n"                                                                          \
  "  for i = 1, #kv, 2 do\n"                                                                                         \
  "    if kv[i] ~= p then\n"                                                                                         \
  "      if live(z, kv[i], now) then others = others + tonumber(kv[i + 1])\n"                                        \
  "      else redis.call('HDEL', n, kv[i]) end\n"                                                                    \
  "    end\n"                                                                                                        \
  "  end\n"                                                                                                          \
  "  if tonumber(cap) >= 0 and others + tonumber(share) > tonumber(cap) then return false, others end\n"             \
  "  redis.call('HSET', n, p, share)\n"                                                                              \
  "  return true, others\n"                                                                                          \
  "end\n"                                                                                                            \
  "local function reserve_block(n, z, p, need, cap, want, now)\n"                                                    \
  "  local others, mine = 0, 0\n"                                                                                    \
  "  local kv = redis.call('HGETALL', n)\n"                                                                          \
  "  for i = 1, #kv, 2 do\n"                                                                                         \
  "    if kv[i] == p then mine = tonumber(kv[i + 1])\n"                                                              \
  "    elseif live(z, kv[i], now) then others = others + tonumber(kv[i + 1])\n"                                      \
  "    else redis.call('HDEL', n, kv[i]) end\n"                                                                      \
  "  end\n"                                                                                                          \
  "  need, cap, want = tonumber(need), tonumber(cap), tonumber(want)\n"                                              \
  "  if cap >= 0 and others + need > cap then return false, others, mine, 0 end\n"                                   \
  "  local v, spare = math.max(mine, need), 0\n"                                                                     \
  "  if want > 0 and cap >= 0 then\n"                                                                                \
  "    local proxies = math.max(1, redis.call('ZCOUNT', z, '(' .. now, '+inf'))\n"                                   \
  "    spare = math.max(0, math.min(want, math.floor((cap - others - v) / (4 * proxies))))\n"                        \
  "  end\n"                                                                                                          \
  "  v = v + spare\n"                                                                                                \
  "  redis.call('HSET', n, p, v)\n"                                                                                  \
  "  return true, others, v, spare\n"                                                                                \
  "end\n"                                                                                                            \
  "local function reserve_in(n, z, p, share, cap, blocks, now)\n"                                                    \
  "  if blocks == '1' then return reserve_block(n, z, p, share, cap, 0, now) end\n"                                  \
  "  return reserve(n, z, p, share, cap, now)\n"                                                                     \
  "end\n"                                                                                                            \
  "local function drop_claim(c, z, p, held, release, no_grace, now)\n"                                               \
  "  if release == '1' then redis.call('DEL', c) return 1 end\n"                                                     \
  "  if not redis.call('HGET', c, 'node') then return 1 end\n"                                                       \
  "  if tonumber(held) > 0 then redis.call('HSET', c, 'r:' .. p, held) return 1 end\n"                               \
  "  redis.call('HDEL', c, 'r:' .. p)\n"                                                                             \
  "  local kv = redis.call('HGETALL', c)\n"                                                                          \
  "  for i = 1, #kv, 2 do\n"                                                                                         \
  "    local f = kv[i]\n"                                                                                            \
  "    if string.sub(f, 1, 2) == 'r:' and tonumber(kv[i + 1]) > 0 and live(z, string.sub(f, 3), now) then return 1 " \
  "end\n"                                                                                                            \
  "  end\n"                                                                                                          \
  "  local g = tonumber(redis.call('HGET', c, 'grace') or '0')\n"                                                    \
  "  if g <= 0 or no_grace == '1' then redis.call('DEL', c) else redis.call('PEXPIRE', c, g) end\n"                  \
  "  return 1\n"                                                                                                     \
  "end\n"

// KEYS: count, proxies. ARGV: proxy, share (with the new unit), capacity (-1
// = unlimited), lease_ms. -> {ReserveFlag, others' live shares}.
// A lapsed proxy's share is deleted on the way (it republishes if it comes back).
inline constexpr char kReserve[] = APPROUTE_LUA_PRELUDE R"lua(
local now = now_ms()
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[4]), ARGV[1])
local ok, others = reserve(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3], now)
return {ok and 1 or 0, others}
)lua";

// kReserve with reservation blocks (cluster.reserve_block): the unit is
// checked as kReserve checks it (the others' live shares plus `need`, this
// proxy's sessions with the new unit, within the capacity), but this
// proxy's share never goes down here (it may hold units of a block that
// this host's processes reserve without asking): it becomes max(its share,
// need) plus a spare block of at most `want` units, and at most a quarter
// of the room left split over the live proxies (so near full the spare is
// 0: one script per reservation, exactly as kReserve). KEYS: count, proxies.
// ARGV: proxy, need, capacity, lease_ms, want.
// -> {ReserveFlag, others' live shares, this proxy's share now, spare}.
inline constexpr char kReserveBlock[] = APPROUTE_LUA_PRELUDE R"lua(
local now = now_ms()
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[4]), ARGV[1])
local ok, others, v, spare = reserve_block(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3], ARGV[5], now)
return {ok and 1 or 0, others, v, spare}
)lua";
enum class ReserveFlag : int64_t {
  kFull = 0,      // the node is full over the deployment; nothing written
  kReserved = 1,  // this proxy's share, with the new unit, is written
  kLast = kReserved,
};

// A key's next call where this proxy's claim names `node`: the
// deployment's claim checked and the unit reserved in one round trip (kJoin
// then kReserve). KEYS: claim, proxies, count (node's). ARGV: proxy,
// lease_ms, refs this proxy will hold, node, share (with the new unit),
// capacity, blocks ("1": this proxy's share never goes down, as
// kReserveBlock without a spare). -> {JoinReserveFlag, the deployment's
// claimed node or ""}.
inline constexpr char kJoinReserve[] = APPROUTE_LUA_PRELUDE R"lua(
local now = now_ms()
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[1])
local node = claim_node(KEYS[1], KEYS[2], now)
if node ~= ARGV[4] then return {2, node or ''} end
if not reserve_in(KEYS[3], KEYS[2], ARGV[1], ARGV[5], ARGV[6], ARGV[7], now) then return {0, node} end
redis.call('HSET', KEYS[1], 'r:' .. ARGV[1], ARGV[3])
redis.call('PERSIST', KEYS[1])
return {1, node}
)lua";
enum class JoinReserveFlag : int64_t {
  kFull = 0,        // the claim is node's but node is full; nothing changed
  kJoined = 1,      // the unit reserved and this proxy's hold on the claim set
  kOtherClaim = 2,  // the deployment's claim is another node's, or there is none; nothing changed
  kLast = kOtherClaim,
};

// A new key's first call placed on `node`: the deployment's claim checked,
// the unit reserved and the key claimed in one round trip (kJoin, kReserve
// and kClaim). KEYS: claim, proxies, count (node's). ARGV: proxy, lease_ms,
// refs this proxy will hold, node, share (with the new unit), capacity,
// grace_ms, blocks (as kJoinReserve). -> {ReserveClaimFlag, the claim's
// node or ""}.
inline constexpr char kReserveClaim[] = APPROUTE_LUA_PRELUDE R"lua(
local now = now_ms()
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[1])
local node = claim_node(KEYS[1], KEYS[2], now)
if node and node ~= ARGV[4] then return {2, node} end
if not reserve_in(KEYS[3], KEYS[2], ARGV[1], ARGV[5], ARGV[6], ARGV[8], now) then return {0, ''} end
if node then
  redis.call('HSET', KEYS[1], 'r:' .. ARGV[1], ARGV[3])
  redis.call('PERSIST', KEYS[1])
  return {3, node}
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'node', ARGV[4], 'grace', ARGV[7], 'r:' .. ARGV[1], ARGV[3])
redis.call('PERSIST', KEYS[1])
return {1, ARGV[4]}
)lua";
enum class ReserveClaimFlag : int64_t {
  kFull = 0,        // node is full over the deployment; nothing changed (value "")
  kClaimed = 1,     // reserved and the key claimed for node
  kOtherClaim = 2,  // the key is claimed for another node (the value); nothing changed
  kJoined = 3,      // reserved and the key's claim, already node's (made elsewhere), joined
  kLast = kJoined,
};

// KEYS: proxies, count keys... ARGV: proxy, lease_ms, one share per count key.
// Sets this proxy's absolute shares (idempotent). -> the number of live proxies.
inline constexpr char kPublish[] = APPROUTE_LUA_PRELUDE R"lua(
local now = now_ms()
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)  -- lapsed proxies count for nothing anyway
for i = 2, #KEYS do
  local v = tonumber(ARGV[i + 1])
  if v > 0 then redis.call('HSET', KEYS[i], ARGV[1], v) else redis.call('HDEL', KEYS[i], ARGV[1]) end
end
return redis.call('ZCARD', KEYS[1])
)lua";

// kPublish with reservation blocks: per count key, this proxy's sessions,
// the units it means to keep (sessions plus the unused units of its block
// it keeps) and the capacity the block was taken against (-1: none). The
// share written is max(sessions, min(keep, the share Redis holds)), its
// unused part cut to what a new block would get now (a quarter of the room
// left over the live proxies: near full, unused units go back): a republish
// may return unused units, never take new ones unchecked (after Redis lost
// the share, or the proxy's lease lapsed, the block is gone). KEYS:
// proxies, count keys... ARGV: proxy, lease_ms, then sessions, keep,
// capacity per count key. -> {live proxies, the share written per key}.
inline constexpr char kPublishHeld[] = APPROUTE_LUA_PRELUDE R"lua(
local now = now_ms()
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local proxies = redis.call('ZCARD', KEYS[1])
local out = {proxies}
for i = 2, #KEYS do
  local s, keep, cap = tonumber(ARGV[3 * i - 3]), tonumber(ARGV[3 * i - 2]), tonumber(ARGV[3 * i - 1])
  local cur = tonumber(redis.call('HGET', KEYS[i], ARGV[1]) or '0')
  local v = math.max(s, math.min(keep, cur))
  if v > s and cap >= 0 then
    local others = 0
    local kv = redis.call('HGETALL', KEYS[i])
    for j = 1, #kv, 2 do
      if kv[j] ~= ARGV[1] and live(KEYS[1], kv[j], now) then others = others + tonumber(kv[j + 1]) end
    end
    v = s + math.min(v - s, math.max(0, math.floor((cap - others - s) / (4 * math.max(1, proxies)))))
  end
  if v > 0 then redis.call('HSET', KEYS[i], ARGV[1], v) else redis.call('HDEL', KEYS[i], ARGV[1]) end
  out[#out + 1] = v
end
return out
)lua";

// KEYS: members, proxies. ARGV: proxy, lease_ms, now (wall ms, the proxy's
// clock, as the records' times), forget_ms, all (1: return every record),
// then node, record pairs. Stores each record unless the one stored is newer
// (the order of cluster_members.h); forgets records forget_ms after their
// lease. -> {node, record, ...} (every record when all is 1, else none).
inline constexpr char kMembers[] = APPROUTE_LUA_PRELUDE R"lua(
redis.call('ZADD', KEYS[2], now_ms() + tonumber(ARGV[2]), ARGV[1])
local now, forget = tonumber(ARGV[3]), tonumber(ARGV[4])
local function read(text)
  local ok, r = pcall(cjson.decode, text)
  if ok and type(r) == 'table' and tonumber(r.seq) and tonumber(r.at) and tonumber(r.lease) then return r end
  return nil
end
for i = 6, #ARGV, 2 do
  local new, cur = read(ARGV[i + 1]), nil
  local text = redis.call('HGET', KEYS[1], ARGV[i])
  if text then cur = read(text) end
  local put = new ~= nil
  if new and cur then
    if new.seq ~= cur.seq then put = new.seq > cur.seq or (cur.lease <= now and new.at > cur.at)
    elseif new.at ~= cur.at then put = new.at > cur.at
    else
      local new_left, cur_left = new.lease <= new.at, cur.lease <= cur.at
      if new_left ~= cur_left then put = new_left
      elseif new.lease ~= cur.lease then put = new.lease > cur.lease
      else put = tostring(new.etag) > tostring(cur.etag) end
    end
  end
  if put then redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
end
if ARGV[5] ~= '1' then return {} end
local out = {}
local kv = redis.call('HGETALL', KEYS[1])
for i = 1, #kv, 2 do
  local r = read(kv[i + 1])
  if r == nil or r.lease + forget < now then redis.call('HDEL', KEYS[1], kv[i])
  else out[#out + 1] = kv[i]; out[#out + 1] = kv[i + 1] end
end
return out
)lua";

// KEYS: proxies, count keys... ARGV: proxy. -> per count key, the sum of
// the live proxies' shares (this proxy's always counts).
inline constexpr char kCounts[] = APPROUTE_LUA_PRELUDE R"lua(
local now = now_ms()
local out = {}
for i = 2, #KEYS do
  local total = 0
  local kv = redis.call('HGETALL', KEYS[i])
  for j = 1, #kv, 2 do
    if kv[j] == ARGV[1] or live(KEYS[1], kv[j], now) then total = total + tonumber(kv[j + 1]) end
  end
  out[#out + 1] = total
end
return out
)lua";

// KEYS: claim, proxies. ARGV: proxy, lease_ms, refs this proxy will hold.
// -> the claimed node id (and this proxy marked as holding), or nil.
inline constexpr char kJoin[] = APPROUTE_LUA_PRELUDE R"lua(
local now = now_ms()
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[1])
local node = claim_node(KEYS[1], KEYS[2], now)
if not node then return false end
redis.call('HSET', KEYS[1], 'r:' .. ARGV[1], ARGV[3])
redis.call('PERSIST', KEYS[1])
return node
)lua";

// KEYS: claim, proxies. ARGV: proxy, node, grace_ms, lease_ms, refs, and
// optionally a takeover: "1" a claim of another node that no live proxy's
// session holds (only its grace left) is taken over, "2" any claim is.
// -> {ClaimFlag, the claim's node}.
inline constexpr char kClaim[] = APPROUTE_LUA_PRELUDE R"lua(
local now = now_ms()
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[4]), ARGV[1])
local node = claim_node(KEYS[1], KEYS[2], now)
if node and node ~= ARGV[2] then
  local takeover = ARGV[6] == '2' or (ARGV[6] == '1' and not held(KEYS[1], KEYS[2], now))
  if not takeover then return {0, node} end
  node = nil
end
if not node then redis.call('DEL', KEYS[1]) end
redis.call('HSET', KEYS[1], 'node', ARGV[2], 'grace', ARGV[3], 'r:' .. ARGV[1], ARGV[5])
redis.call('PERSIST', KEYS[1])
return {1, ARGV[2]}
)lua";
enum class ClaimFlag : int64_t {
  kOtherClaim = 0,  // the key's live claim is another node's (the value); nothing changed
  kClaimed = 1,     // claimed for node (or its claim joined)
  kLast = kClaimed,
};

// KEYS: claim, proxies. -> {node, live sessions over the live proxies} of
// the key's claim, or {"", 0} when it has none (or its grace ran out).
inline constexpr char kHolder[] = APPROUTE_LUA_PRELUDE R"lua(
local now = now_ms()
local node = claim_node(KEYS[1], KEYS[2], now)
if not node then return {'', 0} end
local total = 0
local kv = redis.call('HGETALL', KEYS[1])
for i = 1, #kv, 2 do
  local f = kv[i]
  if string.sub(f, 1, 2) == 'r:' and live(KEYS[2], string.sub(f, 3), now) then total = total + tonumber(kv[i + 1]) end
end
return {node, total}
)lua";

// KEYS: claim, proxies. ARGV: proxy, lease_ms, refs this proxy holds now,
// release (1: the claim goes for every proxy), no grace (1: an unanswered
// call's claim). The last live holder starts the grace TTL (0 or no grace:
// the claim goes). -> 1.
inline constexpr char kDrop[] = APPROUTE_LUA_PRELUDE R"lua(
local now = now_ms()
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[1])
return drop_claim(KEYS[1], KEYS[2], ARGV[1], ARGV[3], ARGV[4], ARGV[5], now)
)lua";

// The end of a session with a claim: kPublish of its count and kDrop of its
// claim in one round trip. KEYS: proxies, count, claim. ARGV: proxy,
// lease_ms, share (-1: left as it is, the unit going back to this proxy's
// reservation block), refs held now, release, no grace (as kDrop). -> 1.
inline constexpr char kEnd[] = APPROUTE_LUA_PRELUDE R"lua(
local now = now_ms()
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
local v = tonumber(ARGV[3])
if v > 0 then redis.call('HSET', KEYS[2], ARGV[1], v) elseif v == 0 then redis.call('HDEL', KEYS[2], ARGV[1]) end
return drop_claim(KEYS[3], KEYS[1], ARGV[1], ARGV[4], ARGV[5], ARGV[6], now)
)lua";

// KEYS: proxies. -> the proxies whose lease runs, by name.
inline constexpr char kProxies[] = APPROUTE_LUA_PRELUDE R"lua(
return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now_ms(), '+inf')
)lua";

// KEYS: admin (HASH node -> admin state), proxies. ARGV: proxy, lease_ms,
// then node, state pairs. Sets the deployment's admin states. -> 1.
inline constexpr char kSetAdmin[] = APPROUTE_LUA_PRELUDE R"lua(
redis.call('ZADD', KEYS[2], now_ms() + tonumber(ARGV[2]), ARGV[1])
for i = 3, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
return 1
)lua";

// KEYS: admin. -> {node, state, ...}: every admin state set in the deployment.
inline constexpr char kGetAdmin[] = R"lua(
return redis.call('HGETALL', KEYS[1])
)lua";

#undef APPROUTE_LUA_PRELUDE

}  // namespace approute::internal::cluster_lua

#endif  // APPROUTE_SRC_PLACEMENT_CLUSTER_SCRIPTS_H_
