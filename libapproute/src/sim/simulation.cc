// The workload simulator: a discrete-event loop over the public Router API.
//
// Events: call arrivals (one non-homogeneous Poisson stream per app, by
// thinning, or the recorded calls of a replay), call ends (a min-heap), pool changes, samples and load reports.
// Everything random comes from one generator seeded by the spec.
#include "approute/simulation.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <queue>
#include <random>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"

namespace approute {
namespace {

constexpr int kMaxBounces = 32;

double RateAt(const std::vector<std::pair<double, double>>& r, double t) {
  if (r.empty()) return 0;
  if (t <= r.front().first) return r.front().second;
  for (size_t i = 1; i < r.size(); ++i) {
    if (t < r[i].first) {
      double f = (t - r[i - 1].first) / (r[i].first - r[i - 1].first);
      return r[i - 1].second + f * (r[i].second - r[i - 1].second);
    }
  }
  return r.back().second;
}

struct AppState {
  const SimApp* spec = nullptr;
  double max_rate = 0;
  double next = 0;          // next candidate arrival (thinning)
  std::vector<double> cdf;  // key popularity
  std::vector<std::string> keys;
  // Per key: nodes holding live calls of it, with counts.
  std::vector<std::vector<std::pair<int32_t, int32_t>>> holders;
  // attrs per key (or per call when no keys): name -> chosen value index drawn lazily
  std::vector<std::pair<std::string, std::vector<double>>> attr_cdf;  // name -> cumulative weights
  RouteRequest req;
  // Room apps: keys (and holders) grow by one per room opened.
  bool rooms = false;
  std::vector<std::string> domains;
  std::vector<uint8_t> room_flags;                      // kRoomHeld | kRoomSplit, per room
  int64_t split_now = 0;                                // rooms with live participants on two nodes or more
  absl::flat_hash_map<std::string, int64_t> key_index;  // replay: key -> index into keys
};

constexpr uint8_t kRoomHeld = 1;   // had a live participant
constexpr uint8_t kRoomSplit = 2;  // had live participants on two nodes at once

// A participant joining a room at `t` (all drawn when the room opened).
struct Join {
  double t = 0;
  double close = 0;  // the room's close: the participant's call ends then
  int32_t app = -1;
  int64_t room = -1;
  int32_t domain = -1;
  uint64_t seq = 0;  // ties in t keep the order they were drawn in
  bool operator>(const Join& o) const { return t != o.t ? t > o.t : seq > o.seq; }
};

struct Call {
  int32_t app = -1;
  int32_t node = -1;
  int64_t key = -1;
  uint64_t id = 0;
  bool live = false;
  bool abandon = false;  // ended unanswered (a replayed call that was missed)
};

struct NodeState {
  std::string id;
  SimNode sim;
  bool present = false;
  bool leaving = false;
  int64_t live = 0;
  int64_t placed = 0;
  double eff_limit() const { return sim.limit < 0 ? -1 : static_cast<double>(sim.limit) * sim.speed; }
};

void CallId(uint64_t n, std::string* out) {
  char buf[24];
  int i = 23;
  buf[i--] = 0;
  do {
    buf[i--] = "0123456789abcdefghijklmnopqrstuvwxyz"[n % 36];
    n /= 36;
  } while (n > 0);
  buf[i] = 's';
  out->assign(buf + i);
}

absl::Status Check(const SimSpec& spec) {
  if (!(spec.sample_interval > 0)) return absl::InvalidArgumentError("sample_interval must be > 0 seconds");
  for (const SimEvent& e : spec.events) {
    static const char* kActions[] = {"join", "fail", "recover", "drain", "enable", "disable", "leave", "remove"};
    if (std::find_if(std::begin(kActions), std::end(kActions), [&](const char* a) { return e.action == a; }) ==
        std::end(kActions)) {
      return absl::InvalidArgumentError(
          absl::StrCat("event at ", e.at, "s: unknown action \"", e.action,
                       "\" (join, fail, recover, drain, enable, disable, leave, remove)"));
    }
  }
  if (!spec.calls.empty()) {
    for (size_t i = 0; i < spec.calls.size(); ++i) {
      const SimCall& c = spec.calls[i];
      const std::string where = absl::StrCat("call ", i + 1, " (", c.call_id, ")");
      if (!(c.at >= 0) || !std::isfinite(c.at)) return absl::InvalidArgumentError(where + ": start must be >= 0 s");
      if (i > 0 && c.at < spec.calls[i - 1].at)
        return absl::InvalidArgumentError(where + ": calls must be sorted by start");
      if (!(c.duration >= 0) || !std::isfinite(c.duration))
        return absl::InvalidArgumentError(where + ": duration must be >= 0 s");
      if (c.app.empty()) return absl::InvalidArgumentError(where + ": app is empty");
      if (c.code < 100 || c.code > 699) return absl::InvalidArgumentError(where + ": code must be 100..699");
    }
    return absl::OkStatus();
  }
  if (!(spec.duration > 0)) return absl::InvalidArgumentError("duration must be > 0 seconds");
  if (spec.apps.empty()) return absl::InvalidArgumentError("the workload names no app");
  for (const SimApp& a : spec.apps) {
    if (a.rate.empty()) return absl::InvalidArgumentError(absl::StrCat("apps.", a.name, ".rate is empty"));
    for (size_t i = 0; i < a.rate.size(); ++i) {
      if (a.rate[i].second < 0 || (i > 0 && a.rate[i].first <= a.rate[i - 1].first)) {
        return absl::InvalidArgumentError(
            absl::StrCat("apps.", a.name, ".rate: points must have increasing times and rates >= 0"));
      }
    }
    if (a.keys < 0 || a.keys > 10'000'000)
      return absl::InvalidArgumentError(absl::StrCat("apps.", a.name, ".keys must be 0..10000000"));
    if (a.duration != "exponential" && a.duration != "lognormal" && a.duration != "fixed" && a.duration != "uniform") {
      return absl::InvalidArgumentError(absl::StrCat("apps.", a.name, ".duration.dist \"", a.duration,
                                                     "\" is not exponential, lognormal, fixed or uniform"));
    }
    if (!(a.duration_mean > 0) && a.duration != "uniform") {
      return absl::InvalidArgumentError(absl::StrCat("apps.", a.name, ".duration.mean must be > 0"));
    }
    if (a.rooms_max != 0) {
      if (a.rooms_min < 1 || a.rooms_max < a.rooms_min || a.rooms_max > 100'000) {
        return absl::InvalidArgumentError(
            absl::StrCat("apps.", a.name, ".rooms.participants must be 1 <= min <= max <= 100000"));
      }
      if (a.keys != 0)
        return absl::InvalidArgumentError(
            absl::StrCat("apps.", a.name, ": rooms make their own keys (leave keys out)"));
      if (a.domains < 1 || a.domains > 1'000'000) {
        return absl::InvalidArgumentError(absl::StrCat("apps.", a.name, ".rooms.domains must be 1..1000000"));
      }
      if (!(a.home_share >= 0 && a.home_share <= 1)) {
        return absl::InvalidArgumentError(absl::StrCat("apps.", a.name, ".rooms.home_share must be 0..1"));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<SimResult> Simulate(Router& router, const SimSpec& spec, const std::function<void(int64_t)>& set_clock,
                                   const std::function<bool(double)>& progress) {
  if (absl::Status s = Check(spec); !s.ok()) return s;
  // A replay's apps are those its calls name; arrivals stop at the last call.
  const bool replay = !spec.calls.empty();
  std::vector<SimApp> replay_apps;
  absl::flat_hash_map<std::string, int32_t> replay_app_index;
  for (const SimCall& c : spec.calls) {
    if (replay_app_index.emplace(c.app, static_cast<int32_t>(replay_apps.size())).second) {
      replay_apps.emplace_back();
      replay_apps.back().name = c.app;
    }
  }
  const std::vector<SimApp>& app_specs = replay ? replay_apps : spec.apps;
  double horizon = spec.duration;
  if (replay) {  // until the last recorded call has ended, so the samples show it
    horizon = 0;
    for (const SimCall& c : spec.calls) horizon = std::max(horizon, c.at + (c.code / 100 == 2 ? c.duration : 0));
  }
  const auto wall0 = std::chrono::steady_clock::now();
  // Separate streams, so that every strategy sees the same calls: arrival
  // times (thinning), and per call its key, attributes and duration, all drawn
  // whether or not the call is then placed.
  std::mt19937_64 rng(spec.seed);
  std::mt19937_64 call_rng(spec.seed ^ 0x5DEECE66DULL);
  std::uniform_real_distribution<double> uni(0.0, 1.0);
  SimResult res;

  // Nodes: configured ones, then those that join later.
  std::vector<NodeState> nodes;
  absl::flat_hash_map<std::string, int32_t> node_index;
  auto node_of = [&](const std::string& id) -> int32_t {
    auto it = node_index.find(id);
    if (it != node_index.end()) return it->second;
    NodeState n;
    n.id = id;
    nodes.push_back(n);
    node_index[id] = static_cast<int32_t>(nodes.size() - 1);
    return static_cast<int32_t>(nodes.size() - 1);
  };
  for (const NodeStatus& st : router.Nodes()) nodes[node_of(st.spec.id)].present = true;
  for (const SimNode& sn : spec.nodes) nodes[node_of(sn.id)].sim = sn;
  for (const SimEvent& e : spec.events) {
    int32_t i = node_of(e.node);
    if (e.action == "join") {
      nodes[i].sim = e.sim;
      nodes[i].sim.id = e.node;
    }
  }

  std::vector<AppState> apps(app_specs.size());
  for (size_t a = 0; a < apps.size(); ++a) {
    AppState& st = apps[a];
    st.spec = &app_specs[a];
    st.rooms = replay;  // a replayed key is a room: split_rooms counts keys split over nodes
    for (const auto& [t, r] : st.spec->rate) st.max_rate = std::max(st.max_rate, r);
    if (st.spec->keys > 0) {
      st.cdf.resize(static_cast<size_t>(st.spec->keys));
      double sum = 0;
      for (int64_t k = 0; k < st.spec->keys; ++k) {
        sum += 1.0 / std::pow(static_cast<double>(k + 1), st.spec->zipf);
        st.cdf[static_cast<size_t>(k)] = sum;
      }
      for (double& c : st.cdf) c /= sum;
      st.keys.resize(static_cast<size_t>(st.spec->keys));
      for (int64_t k = 0; k < st.spec->keys; ++k)
        st.keys[static_cast<size_t>(k)] = absl::StrCat(st.spec->key_prefix, k + 1);
      st.holders.resize(static_cast<size_t>(st.spec->keys));
    }
    for (const auto& [name, values] : st.spec->attrs) {
      std::vector<double> c;
      double sum = 0;
      for (const auto& [v, w] : values) c.push_back(sum += std::max(0.0, w));
      for (double& x : c) x = sum > 0 ? x / sum : 1.0;
      st.attr_cdf.emplace_back(name, std::move(c));
    }
    if (st.spec->rooms_max > 0) {
      st.rooms = true;
      for (int64_t k = 0; k < st.spec->domains; ++k) st.domains.push_back(absl::StrCat(st.spec->domain_prefix, k + 1));
    }
    st.req.app = st.spec->name;
    st.next = st.max_rate > 0 ? -std::log(1.0 - uni(rng)) / st.max_rate : horizon * 2 + 1;
  }

  auto duration_of = [&](const SimApp& a) {
    double d = a.duration_mean;
    double u1 = uni(call_rng), u2 = uni(call_rng);
    if (a.duration == "exponential") {
      d = -std::log(1.0 - u1) * a.duration_mean;
    } else if (a.duration == "lognormal") {
      double mu = std::log(a.duration_mean) - a.duration_sigma * a.duration_sigma / 2;
      double z = std::sqrt(-2.0 * std::log(1.0 - u1)) * std::cos(2.0 * M_PI * u2);  // Box-Muller
      d = std::exp(mu + a.duration_sigma * z);
    } else if (a.duration == "uniform") {
      d = a.duration_min + u1 * (a.duration_max - a.duration_min);
    }
    if (a.duration_max > 0) d = std::min(d, a.duration_max);
    return std::max(d, std::max(a.duration_min, 0.001));
  };

  std::vector<Call> calls;
  std::vector<int32_t> free_calls;
  using End = std::pair<double, std::pair<int32_t, uint64_t>>;  // (time, (call slot, call id))
  std::priority_queue<End, std::vector<End>, std::greater<End>> ends;
  std::vector<SimEvent> events = spec.events;
  std::stable_sort(events.begin(), events.end(), [](const SimEvent& x, const SimEvent& y) { return x.at < y.at; });
  size_t next_event = 0;
  double next_sample = 0, next_report = spec.report_interval > 0 ? 0 : -1;
  double now = 0;
  uint64_t call_seq = 0;
  std::string call_id;
  absl::flat_hash_map<std::string, int32_t> by_id_cache;
  double sessions_sum = 0;
  int64_t sessions_n = 0;
  double util_sum = 0;
  int64_t util_n = 0;
  bool any_limit = false;
  std::vector<int32_t> all_samples;

  auto clock = [&](double t) { set_clock(spec.start_ms + static_cast<int64_t>(std::llround(t * 1000.0))); };
  auto hold = [&](Call& c, int delta) {
    NodeState& n = nodes[static_cast<size_t>(c.node)];
    n.live += delta;
    if (c.key < 0) return;
    AppState& st = apps[static_cast<size_t>(c.app)];
    auto& h = st.holders[static_cast<size_t>(c.key)];
    const bool split_before = h.size() > 1;
    auto it = std::find_if(h.begin(), h.end(), [&](const auto& p) { return p.first == c.node; });
    if (it != h.end()) {
      it->second += delta;
      if (it->second <= 0) h.erase(it);
    } else if (delta > 0) {
      h.emplace_back(c.node, delta);
    }
    if (st.rooms && split_before != (h.size() > 1)) {
      st.split_now += split_before ? -1 : 1;
      int64_t all = 0;
      for (const AppState& x : apps) all += x.split_now;
      res.max_split_rooms = std::max(res.max_split_rooms, all);
    }
  };
  auto end_call = [&](int32_t ci, bool dropped) {
    Call& c = calls[static_cast<size_t>(ci)];
    if (!c.live) return;
    c.live = false;
    CallId(c.id, &call_id);
    absl::Status s = c.abandon ? router.Abandon(call_id) : router.End(call_id);
    if (!s.ok() && !absl::IsNotFound(s)) ++res.errors;
    hold(c, -1);
    if (dropped) ++res.dropped;
    NodeState& n = nodes[static_cast<size_t>(c.node)];
    if (n.leaving && n.live == 0 && n.present) {
      (void)router.RemoveNode(n.id);
      n.present = false;
      n.leaving = false;
    }
    free_calls.push_back(ci);
  };
  auto drop_node_calls = [&](int32_t ni) {
    for (size_t i = 0; i < calls.size(); ++i) {
      if (calls[i].live && calls[i].node == ni) end_call(static_cast<int32_t>(i), true);
    }
  };
  auto index_of = [&](const std::string& id) -> int32_t {
    auto it = node_index.find(id);
    return it == node_index.end() ? -1 : it->second;
  };

  // Routes one call of `st` (its request filled in) and, once a node takes
  // it, keeps it up for `call_duration`.
  auto place = [&](AppState& st, int32_t app_idx, int64_t key, double call_duration, bool abandon = false) {
    bool hosted = key >= 0 && !st.holders[static_cast<size_t>(key)].empty();
    if (hosted) ++res.keyed;
    auto refused = [&](const std::string& reason) {
      ++res.rejected;
      ++res.refusals[reason];
      if (st.rooms && key >= 0) ++(hosted ? res.participants_refused : res.new_rooms_refused);
    };
    uint64_t id = ++call_seq;
    CallId(id, &st.req.call_id);
    absl::StatusOr<Decision> d = router.Route(st.req);
    int bounces = 0;
    while (true) {
      if (!d.ok()) {
        ++res.errors;
        refused("error");
        return;
      }
      if (!d->ok) {
        refused(d->reason);
        return;
      }
      int32_t ni = index_of(d->node_id);
      if (ni < 0) ni = node_of(d->node_id);
      NodeState& n = nodes[static_cast<size_t>(ni)];
      double lim = n.eff_limit();
      if (lim >= 0 && static_cast<double>(n.live) >= lim && bounces < kMaxBounces) {
        ++res.bounces;
        ++bounces;
        d = router.Retry(st.req.call_id, spec.bounce_code);
        continue;
      }
      // Accepted.
      int32_t ci;
      if (!free_calls.empty()) {
        ci = free_calls.back();
        free_calls.pop_back();
      } else {
        ci = static_cast<int32_t>(calls.size());
        calls.emplace_back();
      }
      Call& c = calls[static_cast<size_t>(ci)];
      c = Call{app_idx, ni, key, id, true, abandon};
      bool beside = false;
      if (hosted) {
        for (const auto& [hn, cnt] : st.holders[static_cast<size_t>(key)]) {
          if (hn == ni) {
            beside = true;
            ++res.affinity_hits;
            break;
          }
        }
      }
      if (st.rooms && key >= 0) {
        uint8_t& f = st.room_flags[static_cast<size_t>(key)];
        if (!(f & kRoomHeld)) ++res.rooms_held;
        f |= kRoomHeld;
        if (hosted && !beside) {
          ++res.split_participants;
          if (!(f & kRoomSplit)) ++res.split_rooms;
          f |= kRoomSplit;
        }
      }
      hold(c, +1);
      ++n.placed;
      ++res.routed;
      ++res.reasons[d->reason];
      res.max_sessions = std::max(res.max_sessions, n.live);
      ends.emplace(now + call_duration, std::make_pair(ci, id));
      return;
    }
  };

  std::priority_queue<Join, std::vector<Join>, std::greater<Join>> joins;
  uint64_t join_seq = 0;
  // A room opens: its key, life, participants, their join times and
  // domains, all drawn now.
  auto open_room = [&](AppState& st, int32_t app_idx) {
    const SimApp& a = *st.spec;
    ++res.rooms;
    const double life = duration_of(a);
    const auto room = static_cast<int64_t>(st.keys.size());
    st.keys.push_back(absl::StrCat(a.key_prefix, room + 1));
    st.holders.emplace_back();
    st.room_flags.push_back(0);
    const auto span = static_cast<double>(a.rooms_max - a.rooms_min + 1);
    const int64_t n = a.rooms_min + std::min(a.rooms_max - a.rooms_min, static_cast<int64_t>(uni(call_rng) * span));
    const auto ndom = static_cast<double>(st.domains.size());
    auto any_domain = [&] { return static_cast<int32_t>(std::min(ndom - 1, std::floor(uni(call_rng) * ndom))); };
    const int32_t home = any_domain();
    for (int64_t i = 0; i < n; ++i) {
      Join j;
      j.t = i == 0 ? now : now + uni(call_rng) * life;
      j.close = now + life;
      j.app = app_idx;
      j.room = room;
      j.domain = uni(call_rng) < a.home_share ? home : any_domain();
      j.seq = ++join_seq;
      joins.push(j);
    }
  };
  auto join = [&](const Join& j) {
    AppState& st = apps[static_cast<size_t>(j.app)];
    ++res.calls;
    st.req.key = st.keys[static_cast<size_t>(j.room)];
    st.req.prefer = st.domains[static_cast<size_t>(j.domain)];
    place(st, j.app, j.room, std::max(0.001, j.close - now));
  };

  auto arrive = [&](AppState& st, int32_t app_idx) {
    if (st.rooms) {
      open_room(st, app_idx);
      return;
    }
    ++res.calls;
    const SimApp& a = *st.spec;
    int64_t key = -1;
    const double call_duration = duration_of(a);
    if (a.keys > 0) {
      double u = uni(call_rng);
      key = std::lower_bound(st.cdf.begin(), st.cdf.end(), u) - st.cdf.begin();
      if (key >= a.keys) key = a.keys - 1;
      st.req.key = st.keys[static_cast<size_t>(key)];
    }
    if (!st.attr_cdf.empty()) {
      // Per key, the same values every time (a tenant lives in one region).
      std::mt19937_64 krng(key >= 0 ? spec.seed * 1000003u + static_cast<uint64_t>(key) * 7919u +
                                          static_cast<uint64_t>(app_idx)
                                    : call_rng());
      for (size_t i = 0; i < st.attr_cdf.size(); ++i) {
        double u = static_cast<double>(krng() >> 11) * (1.0 / 9007199254740992.0);
        const auto& c = st.attr_cdf[i].second;
        size_t v = static_cast<size_t>(std::lower_bound(c.begin(), c.end(), u) - c.begin());
        if (v >= c.size()) v = c.size() - 1;
        st.req.attrs[st.attr_cdf[i].first] = a.attrs.at(st.attr_cdf[i].first)[v].first;
      }
    }
    place(st, app_idx, key, call_duration);
  };

  // A replayed call: its key (a room, counted once it is first seen), its
  // preference, and its recorded duration; a call that was not answered
  // is abandoned right after its placement.
  size_t next_call = 0;
  auto replay_call = [&](const SimCall& rc) {
    const int32_t app_idx = replay_app_index.at(rc.app);
    AppState& st = apps[static_cast<size_t>(app_idx)];
    ++res.calls;
    int64_t key = -1;
    if (!rc.key.empty()) {
      auto [it, fresh] = st.key_index.emplace(rc.key, static_cast<int64_t>(st.keys.size()));
      if (fresh) {
        st.keys.push_back(rc.key);
        st.holders.emplace_back();
        st.room_flags.push_back(0);
        ++res.rooms;
      }
      key = it->second;
    }
    st.req.key = rc.key;
    st.req.prefer = rc.prefer;
    const bool answered = rc.code >= 200 && rc.code < 300;
    if (!answered) ++res.missed;
    place(st, app_idx, key, answered ? std::max(0.001, rc.duration) : 0.001, !answered);
  };

  auto apply_event = [&](const SimEvent& e) {
    int32_t ni = node_of(e.node);
    NodeState& n = nodes[static_cast<size_t>(ni)];
    absl::Status s;
    if (e.action == "join") {
      s = router.AddNode(e.spec);
      if (s.ok()) {
        n.present = true;
        n.leaving = false;
      }
    } else if (!n.present) {
      return;
    } else if (e.action == "fail") {
      s = router.SetHealth(e.node, Health::kDown);
      drop_node_calls(ni);
    } else if (e.action == "recover") {
      s = router.SetHealth(e.node, Health::kUp);
    } else if (e.action == "drain") {
      s = router.Drain(
          e.node, e.deadline >= 0 ? std::optional<int64_t>(static_cast<int64_t>(e.deadline * 1000)) : std::nullopt);
    } else if (e.action == "enable") {
      s = router.SetState(e.node, AdminState::kActive);
      n.leaving = false;
    } else if (e.action == "disable") {
      s = router.SetState(e.node, AdminState::kDisabled);
    } else if (e.action == "leave") {
      s = router.Drain(e.node, static_cast<int64_t>(std::max(0.0, e.deadline) * 1000));
      n.leaving = true;
      if (n.live == 0) {
        s = router.RemoveNode(e.node);
        n.present = false;
        n.leaving = false;
      }
    } else if (e.action == "remove") {
      drop_node_calls(ni);
      s = router.RemoveNode(e.node);
      n.present = false;
    }
    if (!s.ok()) ++res.errors;
  };

  auto sample = [&](double t) {
    res.sample_t.push_back(t);
    if (res.samples.size() < nodes.size())
      res.samples.resize(nodes.size(), std::vector<int32_t>(res.sample_t.size() - 1, -1));
    for (size_t i = 0; i < nodes.size(); ++i) {
      const NodeState& n = nodes[i];
      int32_t v = n.present ? static_cast<int32_t>(n.live) : -1;
      res.samples[i].push_back(v);
      if (v >= 0) {
        sessions_sum += v;
        ++sessions_n;
        all_samples.push_back(v);
        double lim = n.eff_limit();
        if (lim > 0) {
          any_limit = true;
          double u = v / lim;
          util_sum += u;
          ++util_n;
          res.max_util = std::max(res.max_util, u);
        }
      }
    }
  };

  auto report = [&]() {
    for (const NodeState& n : nodes) {
      if (!n.present) continue;
      std::map<std::string, double> m{{"sessions", static_cast<double>(n.live)}};
      double lim = n.eff_limit();
      if (lim > 0) m["cpu"] = std::min(1.0, static_cast<double>(n.live) / lim);
      (void)router.ReportLoad(n.id, m);
    }
  };

  clock(0);
  int64_t steps = 0;
  constexpr double kNone = 1e300;
  while (true) {
    // The next thing to happen. Arrivals, samples, reports and pool changes
    // stop at horizon; the calls still up then run out.
    double t_arr = kNone;
    int32_t which = -1;
    for (size_t a = 0; a < apps.size(); ++a) {
      if (apps[a].next < horizon && apps[a].next < t_arr) {
        t_arr = apps[a].next;
        which = static_cast<int32_t>(a);
      }
    }
    double t_end = ends.empty() ? kNone : ends.top().first;
    double t_ev = next_event < events.size() && events[next_event].at <= horizon ? events[next_event].at : kNone;
    double t_smp = next_sample <= horizon ? next_sample : kNone;
    double t_rep = next_report >= 0 && next_report <= horizon ? next_report : kNone;
    // Participants of rooms opened before horizon still join after it.
    double t_join = joins.empty() ? kNone : joins.top().t;
    double t_call = next_call < spec.calls.size() ? spec.calls[next_call].at : kNone;
    double t = std::min({t_arr, t_end, t_ev, t_smp, t_rep, t_join, t_call});
    if (t >= kNone) break;
    now = t;
    clock(now);
    if (t == t_smp) {
      sample(now);
      next_sample += spec.sample_interval;
    } else if (t == t_ev) {
      apply_event(events[next_event++]);
    } else if (t == t_end) {
      auto [ci, id] = ends.top().second;
      ends.pop();
      if (calls[static_cast<size_t>(ci)].live && calls[static_cast<size_t>(ci)].id == id) end_call(ci, false);
    } else if (t == t_rep) {
      report();
      next_report += spec.report_interval;
    } else if (t == t_join) {
      Join j = joins.top();
      joins.pop();
      join(j);
    } else if (t == t_call) {
      replay_call(spec.calls[next_call++]);
    } else {
      AppState& st = apps[static_cast<size_t>(which)];
      double r = RateAt(st.spec->rate, now);
      if (uni(rng) * st.max_rate < r) arrive(st, which);
      st.next = now - std::log(1.0 - uni(rng)) / st.max_rate;
    }
    if ((++steps & 0xFFFF) == 0 && progress) {
      if (!progress(horizon > 0 ? std::min(1.0, now / horizon) : 1.0))
        return absl::CancelledError("simulation stopped");
    }
  }
  if (progress) progress(1.0);

  res.node_ids.reserve(nodes.size());
  for (const NodeState& n : nodes) {
    res.node_ids.push_back(n.id);
    res.placed[n.id] = n.placed;
  }
  for (auto& s : res.samples) s.resize(res.sample_t.size(), -1);
  res.mean_sessions = sessions_n ? sessions_sum / static_cast<double>(sessions_n) : 0;
  if (!all_samples.empty()) {
    size_t k = static_cast<size_t>(std::ceil(0.99 * static_cast<double>(all_samples.size()))) - 1;
    std::nth_element(all_samples.begin(), all_samples.begin() + static_cast<std::ptrdiff_t>(k), all_samples.end());
    res.p99_sessions = all_samples[k];
  }
  if (any_limit) res.mean_util = util_n ? util_sum / static_cast<double>(util_n) : 0;
  res.wall_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - wall0).count();
  return res;
}

}  // namespace approute
