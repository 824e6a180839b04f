// approute/simulation.h — replays a synthetic workload through a real Router
// on a virtual clock (what `approute simulate` runs).
//
// The simulation drives the router's public API only: Route, Retry (a node
// bounces a call when it is full), End, AddNode, RemoveNode, SetState,
// SetHealth and ReportLoad. Time is virtual: the caller hands in a clock
// setter that the router's RouterOptions::now_ms reads, and calls arrive and
// end in simulated seconds, as fast as the router can decide.
//
// Determinism: with the same spec, seed and router (built with
// RouterOptions::random_seed) the result is the same, run after run.
// Thread-safety: one simulation per router at a time; the router must not be
// used by anything else meanwhile.
#ifndef APPROUTE_SIMULATION_H_
#define APPROUTE_SIMULATION_H_

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "approute/router.h"
#include "approute/types.h"

namespace approute {

// Call arrivals and keys of one app.
struct SimApp {
  std::string name;                             // the router app routed to
  std::vector<std::pair<double, double>> rate;  // (second, calls/s), piecewise linear; one point = constant
  int64_t keys = 0;                             // distinct affinity keys; 0 = calls carry no key
  double zipf = 1.0;                            // key popularity: P(rank k) ~ 1 / k^zipf
  std::string key_prefix = "key";
  // Call duration: "exponential" (mean), "lognormal" (mean, sigma), "fixed"
  // (mean), "uniform" (min..max); clamped to [min, max] when max > 0.
  std::string duration = "exponential";
  double duration_mean = 120, duration_sigma = 1.0, duration_min = 0, duration_max = 0;
  // Request attributes: name -> (value, weight) list; one value drawn per key
  // (per call when the app has no keys).
  std::map<std::string, std::vector<std::pair<std::string, double>>> attrs;
  // Rooms (rooms_max > 0): each arrival opens a room, a new key
  // "<key_prefix><n>" (`keys` and `zipf` are then unused), that lives for a
  // drawn `duration`. rooms_min..rooms_max participants (uniform) join it:
  // the first when it opens, the others at uniform times over its life, each
  // calling from the room's home domain with probability home_share and
  // otherwise from one of `domains` domains ("<domain_prefix><k>"), routed
  // with key = the room and prefer = the caller's domain; every participant
  // stays until the room closes. Everything about a room is drawn when it
  // opens, so every strategy sees the same rooms and participants.
  int64_t rooms_min = 0, rooms_max = 0;
  int64_t domains = 10;
  double home_share = 0.7;
  std::string domain_prefix = "domain";
};

// What the simulation knows about a node beyond its router configuration.
struct SimNode {
  std::string id;
  int64_t limit = -1;  // sessions (all resources) it really takes before bouncing; -1 = no limit
  double speed = 1.0;  // scales limit; reported cpu = sessions / (limit x speed)
};

// A change of the pool at `at` seconds: join (spec added), fail (health down,
// its calls drop), recover (health up), drain, enable, disable, leave
// (draining, removed once its last call ends), remove (now; its calls drop).
struct SimEvent {
  double at = 0;
  std::string action;
  std::string node;
  NodeSpec spec;  // join only
  SimNode sim;    // join only
  // drain and leave: seconds after which the node's keys go elsewhere
  // (Router::Drain); < 0 = none. A leave without one uses 0, as a node
  // leaving by status report does.
  double deadline = -1;
};

// One call of a replay (real traffic): it arrives `at` seconds after the
// start, is routed to `app` with `key` and `prefer`, and, when its final code
// was 2xx, stays up `duration` seconds; otherwise (missed, busy, cancelled)
// it is abandoned at once after its placement.
struct SimCall {
  double at = 0;
  std::string call_id;  // as recorded (results name calls by it only in errors)
  std::string app, key, prefer;
  double duration = 0;
  int code = 200;
};

struct SimSpec {
  uint64_t seed = 1;
  double duration = 3600;            // simulated seconds of arrivals (calls then run out)
  double sample_interval = 10;       // seconds between per-node samples
  double report_interval = 0;        // seconds between load reports (cpu, sessions); 0 = none
  int64_t start_ms = 1767225600000;  // the virtual clock at t = 0 (2026-01-01T00:00:00Z)
  int bounce_code = 503;
  std::vector<SimApp> apps;
  std::vector<SimNode> nodes;  // nodes of the router configuration
  std::vector<SimEvent> events;
  // A replay: these calls (sorted by `at`) instead of the apps' arrivals;
  // `apps` is then unused and `duration` is the last arrival (calls then run
  // out). A keyed app's keys count as rooms (split_rooms: a key with live
  // calls on two nodes at once).
  std::vector<SimCall> calls;
};

struct SimResult {
  int64_t calls = 0;          // arrivals
  int64_t missed = 0;         // replay: calls whose final code was not 2xx
  int64_t routed = 0;         // calls that were placed and accepted by a node
  int64_t rejected = 0;       // no node (first try, or every retry bounced)
  int64_t bounces = 0;        // times a full node bounced a call
  int64_t dropped = 0;        // calls cut by a node failing or being removed
  int64_t errors = 0;         // router errors (tables full, ...)
  int64_t keyed = 0;          // calls whose key already had live calls somewhere
  int64_t affinity_hits = 0;  // ... and that joined one of those nodes
  // Room apps only (zero otherwise). A participant is one call.
  int64_t rooms = 0;                        // rooms opened (arrivals of room apps)
  int64_t rooms_held = 0;                   // rooms that ever had a live participant
  int64_t split_rooms = 0;                  // rooms that had live participants on two nodes at some moment
  int64_t max_split_rooms = 0;              // most rooms split at one moment
  int64_t split_participants = 0;           // participants placed beside none of their room's live participants
  int64_t participants_refused = 0;         // refused while their room had live participants (its node full, down, ...)
  int64_t new_rooms_refused = 0;            // refused while their room had none (opening it was refused)
  std::map<std::string, int64_t> refusals;  // decision reasons of refused calls (no_node, key_full, ...)
  std::map<std::string, int64_t> reasons;   // decision reasons of accepted calls
  int64_t max_sessions = 0;                 // most concurrent sessions seen on one node
  double mean_sessions = 0;                 // mean over samples of live nodes
  double p99_sessions = 0;                  // 99th percentile over samples of live nodes
  double max_util = -1;                     // max sessions / (limit x speed); -1 when no node has a limit
  double mean_util = -1;
  std::vector<std::string> node_ids;          // every node that ever existed
  std::vector<double> sample_t;               // seconds
  std::vector<std::vector<int32_t>> samples;  // [node][sample]: sessions, -1 = absent
  std::map<std::string, int64_t> placed;      // node -> calls accepted
  double wall_seconds = 0;
};

// Runs `spec` through `router`. `set_clock(ms)` must set what the router's
// now_ms returns. `progress(fraction)` is called now and then (it may return
// false to stop: Cancelled). InvalidArgument for a bad spec.
absl::StatusOr<SimResult> Simulate(Router& router, const SimSpec& spec, const std::function<void(int64_t)>& set_clock,
                                   const std::function<bool(double)>& progress = nullptr);

}  // namespace approute

#endif  // APPROUTE_SIMULATION_H_
