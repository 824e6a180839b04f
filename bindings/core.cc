// approute._core — pybind11 bindings: conversions only.
//
// Core errors (absl::Status) become approute.Error subclasses carrying the
// core's message. The GIL is released around every call that takes a lock
// in the state region. The per-call methods, route() and end(), and the
// Decision they return are written against the CPython API for speed, in
// fast_route.cc; this file installs them.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <time.h>
#include <atomic>
#include <cmath>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "approute/config.h"
#include "approute/redis_check.h"
#include "approute/router.h"
#include "approute/simulation.h"
#include "approute/strategy.h"
#include "fast_route.h"
#include "py_router.h"
#include "py_strategy.h"

namespace py = pybind11;
using approute::Decision;
using approute::NodeSpec;
using approute::NodeStatus;
using approute_py::MakeDecision;
using approute_py::PyRouter;
using approute_py::Raise;

namespace {

struct Errors {
  PyObject* base = nullptr;
  PyObject* invalid = nullptr;
  PyObject* config = nullptr;
  PyObject* not_found = nullptr;
  PyObject* exhausted = nullptr;
  PyObject* precondition = nullptr;
  PyObject* exists = nullptr;
  PyObject* permission = nullptr;
};
Errors g_err;

std::string Str(absl::string_view v) { return std::string(v.data(), v.size()); }

}  // namespace

[[noreturn]] void approute_py::Raise(const absl::Status& s, bool config) {
  PyObject* type = g_err.base;
  switch (s.code()) {
    case absl::StatusCode::kInvalidArgument:
      type = config ? g_err.config : g_err.invalid;
      break;
    case absl::StatusCode::kNotFound:
      type = g_err.not_found;
      break;
    case absl::StatusCode::kResourceExhausted:
      type = g_err.exhausted;
      break;
    case absl::StatusCode::kFailedPrecondition:
      type = g_err.precondition;
      break;
    case absl::StatusCode::kAlreadyExists:
      type = g_err.exists;
      break;
    case absl::StatusCode::kPermissionDenied:
      type = g_err.permission;
      break;
    default:
      break;
  }
  PyErr_SetString(type, Str(s.message()).c_str());
  throw py::error_already_set();
}

namespace {

void Check(const absl::Status& s, bool config = false) {
  if (!s.ok()) Raise(s, config);
}

// Runs a core call that may take region locks without the GIL, then raises
// its error, if any, with the GIL held again.
template <typename F>
void CallNoGil(F&& f, bool config = false) {
  absl::Status s;
  {
    py::gil_scoped_release nogil;
    s = f();
  }
  Check(s, config);
}

template <typename T>
T Take(absl::StatusOr<T> v, bool config = false) {
  if (!v.ok()) Raise(v.status(), config);
  return *std::move(v);
}

int64_t RealNowMs() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME_COARSE, &ts);  // ms resolution is plenty for expiry, at a fraction of the cost
  return int64_t{ts.tv_sec} * 1000 + ts.tv_nsec / 1000000;
}

// A listed row and the router's clock when it was listed (ages are relative to it).
template <typename Row>
struct Listed {
  Row row;
  int64_t now_ms;
};
using SessionRow = Listed<approute::SessionInfo>;
using AffinityRow = Listed<approute::AffinityInfo>;

approute::ListFilter Filter(const std::optional<std::string>& app, const std::optional<std::string>& node,
                            std::optional<int64_t> limit) {
  if (limit && *limit < 0) Raise(absl::InvalidArgumentError("limit must be >= 0"));
  return approute::ListFilter{app.value_or(""), node.value_or(""), limit ? static_cast<size_t>(*limit) : 0};
}

int64_t RouterNow(const PyRouter& r) {
  int64_t f = r.fake_ms ? r.fake_ms->load(std::memory_order_relaxed) : -1;
  return f >= 0 ? f : RealNowMs();
}

// Rows of a listing method (Sessions, Affinities), read without the GIL and
// stamped with the router's clock.
template <typename Row>
std::vector<Listed<Row>> List(PyRouter& self, const approute::ListFilter& f,
                              std::vector<Row> (approute::Router::*method)(const approute::ListFilter&) const) {
  std::vector<Row> rows;
  {
    py::gil_scoped_release nogil;
    rows = ((*self.router).*method)(f);
  }
  int64_t now = RouterNow(self);
  std::vector<Listed<Row>> out;
  for (auto& r : rows) out.push_back(Listed<Row>{std::move(r), now});
  return out;
}

// Router.from_yaml(..., upkeep=True): a sweep every second (the cluster refresh period).
constexpr int64_t kUpkeepMs = 1000;

approute::RouterOptions Options(const std::optional<std::string>& shared,
                                const std::shared_ptr<std::atomic<int64_t>>& fake) {
  approute::RouterOptions o;
  if (shared) o.shared = *shared;
  o.now_ms = [fake]() {
    int64_t f = fake->load(std::memory_order_relaxed);
    return f >= 0 ? f : RealNowMs();
  };
  return o;
}

// A router built with `cluster:` whose Redis did not answer starts on this
// host's state alone: say so on the "approute" logger (Kamailio's handler
// forwards it to Kamailio's log), with the error, instead of starting silently.
void WarnIfDegraded(const approute::Router& router) {
  approute::ClusterStatus c;
  {
    py::gil_scoped_release nogil;
    c = router.Cluster();
  }
  if (c.mode != "degraded") return;
  std::string msg = "cluster " + c.name + ": Redis did not answer at start (" +
                    (c.last_error.empty() ? std::string("no round trip yet") : c.last_error) + "): proxy " + c.proxy +
                    " routes on this host's state only (mode degraded) until it does; check cluster.redis "
                    "(approute validate --check-redis)";
  try {
    py::module_::import("logging").attr("getLogger")("approute").attr("warning")(msg);
  } catch (py::error_already_set&) {
    // logging itself failed: the state is still visible in cluster() and the metrics
  }
}

std::shared_ptr<PyRouter> Make(
    const std::function<absl::StatusOr<std::unique_ptr<approute::Router>>(approute::RouterOptions)>& f,
    const std::optional<std::string>& shared, bool config,
    const std::optional<std::map<std::string, py::object>>& strategies = std::nullopt,
    std::optional<uint64_t> seed = std::nullopt, bool upkeep = false) {
  auto pr = std::make_shared<PyRouter>();
  pr->fake_ms = std::make_shared<std::atomic<int64_t>>(-1);
  pr->strategies = std::make_shared<approute_py::PyResolver>();
  if (strategies) {
    for (const auto& [name, obj] : *strategies) pr->strategies->Register(name, obj, "");
  }
  approute::RouterOptions o = Options(shared, pr->fake_ms);
  o.strategies = pr->strategies;
  if (seed) o.random_seed = *seed ? *seed : 1;
  if (upkeep) o.upkeep_interval_ms = kUpkeepMs;
  absl::StatusOr<std::unique_ptr<approute::Router>> r;
  {
    py::gil_scoped_release nogil;
    r = f(std::move(o));
  }
  pr->router = Take(std::move(r), config);
  if (config) WarnIfDegraded(*pr->router);
  return pr;
}

approute::AdminState State(const std::string& s) { return Take(approute::ParseAdminState(s)); }

NodeSpec Spec(const std::string& id, const std::string& uri, const std::string& pool, int weight,
              const std::optional<std::map<std::string, int64_t>>& capacity,
              const std::optional<std::map<std::string, std::string>>& attrs, int priority, const std::string& state) {
  NodeSpec spec;
  spec.id = id;
  spec.uri = uri;
  spec.pool = pool;
  spec.weight = weight;
  spec.priority = priority;
  if (capacity) spec.capacity = *capacity;
  if (attrs) spec.attrs = *attrs;
  spec.state = State(state);
  return spec;
}

// add_node / update_node: the same arguments, a different core call.
auto NodeMethod(absl::Status (approute::Router::*method)(const NodeSpec&)) {
  return [method](PyRouter& self, const std::string& id, const std::string& uri, const std::string& pool, int weight,
                  std::optional<std::map<std::string, int64_t>> capacity,
                  std::optional<std::map<std::string, std::string>> attrs, int priority, const std::string& state) {
    NodeSpec spec = Spec(id, uri, pool, weight, capacity, attrs, priority, state);
    CallNoGil([&] { return ((*self.router).*method)(spec); });
  };
}

// ---- simulation: dict <-> SimSpec / SimResult -------------------------------

template <typename T>
T Get(const py::dict& d, const char* key, T dflt) {
  return d.contains(key) && !d[key].is_none() ? py::cast<T>(d[key]) : dflt;
}

approute::SimNode SimNodeOf(const py::dict& d) {
  approute::SimNode n;
  n.id = Get<std::string>(d, "id", "");
  n.limit = Get<int64_t>(d, "limit", -1);
  n.speed = Get<double>(d, "speed", 1.0);
  return n;
}

approute::SimSpec SimSpecOf(const py::dict& d) {
  approute::SimSpec s;
  s.seed = Get<uint64_t>(d, "seed", 1);
  s.duration = Get<double>(d, "duration", s.duration);
  s.sample_interval = Get<double>(d, "sample_interval", s.sample_interval);
  s.report_interval = Get<double>(d, "report_interval", 0);
  s.start_ms = Get<int64_t>(d, "start_ms", s.start_ms);
  s.bounce_code = Get<int>(d, "bounce_code", 503);
  for (py::handle h : Get<py::list>(d, "apps", py::list())) {
    py::dict a = py::reinterpret_borrow<py::dict>(h);
    approute::SimApp app;
    app.name = Get<std::string>(a, "name", "");
    app.rate = Get<std::vector<std::pair<double, double>>>(a, "rate", {});
    app.keys = Get<int64_t>(a, "keys", 0);
    app.zipf = Get<double>(a, "zipf", 1.0);
    app.key_prefix = Get<std::string>(a, "key_prefix", "key");
    app.duration = Get<std::string>(a, "duration", "exponential");
    app.duration_mean = Get<double>(a, "duration_mean", 120);
    app.duration_sigma = Get<double>(a, "duration_sigma", 1.0);
    app.duration_min = Get<double>(a, "duration_min", 0);
    app.duration_max = Get<double>(a, "duration_max", 0);
    app.attrs = Get<std::map<std::string, std::vector<std::pair<std::string, double>>>>(a, "attrs", {});
    app.rooms_min = Get<int64_t>(a, "rooms_min", 0);
    app.rooms_max = Get<int64_t>(a, "rooms_max", 0);
    app.domains = Get<int64_t>(a, "domains", app.domains);
    app.home_share = Get<double>(a, "home_share", app.home_share);
    app.domain_prefix = Get<std::string>(a, "domain_prefix", app.domain_prefix);
    s.apps.push_back(std::move(app));
  }
  for (py::handle h : Get<py::list>(d, "nodes", py::list()))
    s.nodes.push_back(SimNodeOf(py::reinterpret_borrow<py::dict>(h)));
  for (py::handle h : Get<py::list>(d, "events", py::list())) {
    py::dict e = py::reinterpret_borrow<py::dict>(h);
    approute::SimEvent ev;
    ev.at = Get<double>(e, "at", 0);
    ev.action = Get<std::string>(e, "action", "");
    ev.node = Get<std::string>(e, "node", "");
    ev.deadline = Get<double>(e, "deadline", -1);
    if (e.contains("spec") && !e["spec"].is_none()) {
      py::dict n = py::reinterpret_borrow<py::dict>(e["spec"]);
      ev.spec = Spec(ev.node, Get<std::string>(n, "uri", ""), Get<std::string>(n, "pool", "default"),
                     Get<int>(n, "weight", 1),
                     Get<std::optional<std::map<std::string, int64_t>>>(n, "capacity", std::nullopt),
                     Get<std::optional<std::map<std::string, std::string>>>(n, "attrs", std::nullopt),
                     Get<int>(n, "priority", 0), Get<std::string>(n, "state", "active"));
      ev.sim = SimNodeOf(n);
    }
    s.events.push_back(std::move(ev));
  }
  for (py::handle h : Get<py::list>(d, "calls", py::list())) {
    py::dict c = py::reinterpret_borrow<py::dict>(h);
    approute::SimCall call;
    call.at = Get<double>(c, "at", 0);
    call.call_id = Get<std::string>(c, "call_id", "");
    call.app = Get<std::string>(c, "app", "");
    call.key = Get<std::string>(c, "key", "");
    call.prefer = Get<std::string>(c, "prefer", "");
    call.duration = Get<double>(c, "duration", 0);
    call.code = Get<int>(c, "code", 200);
    s.calls.push_back(std::move(call));
  }
  return s;
}

py::dict SimResultDict(const approute::SimResult& r) {
  py::dict d;
  d["calls"] = r.calls;
  d["routed"] = r.routed;
  d["rejected"] = r.rejected;
  d["bounces"] = r.bounces;
  d["dropped"] = r.dropped;
  d["errors"] = r.errors;
  d["keyed"] = r.keyed;
  d["affinity_hits"] = r.affinity_hits;
  d["rooms"] = r.rooms;
  d["missed"] = r.missed;
  d["rooms_held"] = r.rooms_held;
  d["split_rooms"] = r.split_rooms;
  d["max_split_rooms"] = r.max_split_rooms;
  d["split_participants"] = r.split_participants;
  d["participants_refused"] = r.participants_refused;
  d["new_rooms_refused"] = r.new_rooms_refused;
  d["refusals"] = r.refusals;
  d["reasons"] = r.reasons;
  d["max_sessions"] = r.max_sessions;
  d["mean_sessions"] = r.mean_sessions;
  d["p99_sessions"] = r.p99_sessions;
  d["max_util"] = r.max_util < 0 ? py::object(py::none()) : py::object(py::float_(r.max_util));
  d["mean_util"] = r.mean_util < 0 ? py::object(py::none()) : py::object(py::float_(r.mean_util));
  d["node_ids"] = r.node_ids;
  d["sample_t"] = r.sample_t;
  d["samples"] = r.samples;
  d["placed"] = r.placed;
  d["wall_seconds"] = r.wall_seconds;
  return d;
}

// An ExplainTrace as plain Python data (dicts and lists: printable, JSON-able).
py::dict ExplainDict(const approute::ExplainTrace& t) {
  py::list nodes;
  for (const approute::ExplainNode& n : t.nodes) {
    py::dict d;
    d["id"] = n.id;
    d["state"] = n.state;
    d["health"] = n.health;
    d["sessions"] = n.sessions;
    d["capacity"] = n.capacity < 0 ? py::object(py::none()) : py::object(py::int_(n.capacity));
    d["candidate"] = n.candidate;
    d["exclusion"] = n.exclusion;
    d["detail"] = n.detail;
    nodes.append(d);
  }
  py::dict aff;
  aff["keyed"] = t.affinity.keyed;
  aff["strict"] = t.affinity.strict;
  aff["node"] = t.affinity.node.empty() ? py::object(py::none()) : py::object(py::str(t.affinity.node));
  aff["live_sessions"] = t.affinity.live_sessions;
  aff["grace_left"] = static_cast<double>(t.affinity.grace_left_ms) / 1000.0;
  aff["bound"] = t.affinity.bound;
  aff["outcome"] = t.affinity.outcome;
  aff["detail"] = t.affinity.detail;
  py::list compared;
  for (const approute::ExplainTrace::Compared& c : t.compared) {
    py::dict d;
    d["id"] = c.id;
    d["sessions"] = c.sessions;
    d["capacity"] = c.capacity < 0 ? py::object(py::none()) : py::object(py::int_(c.capacity));
    d["total_sessions"] = c.total_sessions;
    d["weight"] = c.weight;
    d["priority"] = c.priority;
    compared.append(d);
  }
  py::list picks;
  for (const approute::ExplainPick& p : t.picks) {
    py::dict d;
    d["node"] = p.node;
    d["outcome"] = p.outcome;
    picks.append(d);
  }
  py::dict dec;
  dec["ok"] = t.decision.ok;
  dec["node_id"] = t.decision.node_id.empty() ? py::object(py::none()) : py::object(py::str(t.decision.node_id));
  dec["uri"] = t.decision.uri.empty() ? py::object(py::none()) : py::object(py::str(t.decision.uri));
  dec["reason"] = t.decision.reason;
  dec["detail"] = t.decision.detail;
  py::dict out;
  out["app"] = t.app;
  out["pool"] = t.pool;
  out["resource"] = t.resource;
  out["strategy"] = t.strategy;
  out["key"] = t.key;
  out["prefer"] = t.prefer;
  out["call_id"] = t.call_id;
  out["headroom"] = t.headroom;
  out["panic"] = t.panic;
  out["nodes"] = nodes;
  out["affinity"] = aff;
  out["compared"] = compared;
  out["picks"] = picks;
  out["steps"] = t.steps;
  out["decision"] = dec;
  return out;
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "approute core bindings (use the `approute` package)";

  auto new_exc = [&m](const char* name, PyObject* base, PyObject* extra, const char* doc) {
    PyObject* bases = extra ? PyTuple_Pack(2, base, extra) : PyTuple_Pack(1, base);
    std::string qual = std::string("approute.") + name;
    PyObject* t = PyErr_NewExceptionWithDoc(qual.c_str(), doc, bases, nullptr);
    Py_DECREF(bases);
    m.add_object(name, py::handle(t));
    return t;
  };
  g_err.base = new_exc("Error", PyExc_Exception, nullptr, "Base of every approute error.");
  g_err.invalid =
      new_exc("InvalidArgumentError", g_err.base, PyExc_ValueError, "A bad argument; the message names it.");
  g_err.config = new_exc("ConfigError", g_err.invalid, nullptr,
                         "An invalid configuration; the message names source:line:column and key.");
  g_err.not_found =
      new_exc("NotFoundError", g_err.base, PyExc_LookupError, "Unknown node, call id, app or shared segment.");
  g_err.exhausted = new_exc("ResourceExhaustedError", g_err.base, nullptr, "A table of the state region is full.");
  g_err.precondition = new_exc("FailedPreconditionError", g_err.base, nullptr,
                               "The state is not what the call needs (e.g. a segment of another layout).");
  g_err.exists = new_exc("AlreadyExistsError", g_err.base, nullptr, "The node id is taken.");
  g_err.permission = new_exc("PermissionError", g_err.base, nullptr, "The OS refused access to a segment.");

  approute_py::AddDecisionType(m);

  py::class_<NodeStatus>(m, "NodeStatus", "A node as the router sees it now (a snapshot).")
      .def_property_readonly("id", [](const NodeStatus& n) { return n.spec.id; })
      .def_property_readonly("uri", [](const NodeStatus& n) { return n.spec.uri; })
      .def_property_readonly("pool", [](const NodeStatus& n) { return n.spec.pool; })
      .def_property_readonly("weight", [](const NodeStatus& n) { return n.spec.weight; })
      .def_property_readonly("priority", [](const NodeStatus& n) { return n.spec.priority; })
      .def_property_readonly("state",
                             [](const NodeStatus& n) {
                               return Str(absl::string_view(approute::AdminStateName(n.spec.state).data(),
                                                            approute::AdminStateName(n.spec.state).size()));
                             })
      .def_property_readonly("health", [](const NodeStatus& n) { return std::string(approute::HealthName(n.health)); })
      .def_property_readonly(
          "reported_down", [](const NodeStatus& n) { return n.reported_down; },
          "True while the node's own report says \"health\": \"down\".")
      .def_property_readonly("capacity", [](const NodeStatus& n) { return n.spec.capacity; })
      .def_property_readonly("attrs", [](const NodeStatus& n) { return n.spec.attrs; })
      .def_property_readonly(
          "sessions", [](const NodeStatus& n) { return n.sessions; }, "Live sessions per resource.")
      .def_property_readonly(
          "load", [](const NodeStatus& n) { return n.load; }, "Metrics from the last report_load().")
      .def_property_readonly("load_updated",
                             [](const NodeStatus& n) -> py::object {
                               if (n.load_updated_ms == 0) return py::none();
                               return py::float_(static_cast<double>(n.load_updated_ms) / 1000.0);
                             })
      .def_property_readonly("routed_total", [](const NodeStatus& n) { return n.routed_total; })
      .def_property_readonly(
          "quality", [](const NodeStatus& n) { return n.quality; },
          "Quality figures from the last status report (mos, rtt_ms_p50, ...).")
      .def_property_readonly(
          "origin", [](const NodeStatus& n) { return n.origin; }, "config, api or report.")
      .def_property_readonly(
          "lease_expires",
          [](const NodeStatus& n) -> py::object {
            if (n.lease_expires_ms == 0) return py::none();
            return py::float_(static_cast<double>(n.lease_expires_ms) / 1000.0);
          },
          "Unix time the node's status lease ends (None: no lease).")
      .def_property_readonly(
          "ejected_until",
          [](const NodeStatus& n) -> py::object {
            if (n.ejected_until_ms == 0) return py::none();
            return py::float_(static_cast<double>(n.ejected_until_ms) / 1000.0);
          },
          "Unix time outlier ejection ends (None: not ejected).")
      .def_property_readonly(
          "busy_until",
          [](const NodeStatus& n) -> py::object {
            if (n.busy_until_ms == 0) return py::none();
            return py::float_(static_cast<double>(n.busy_until_ms) / 1000.0);
          },
          "Unix time the node's busy period ends (it answered 503: alive, taking no new keys and no "
          "key-less calls); None: not busy.")
      .def_property_readonly(
          "overload_percent", [](const NodeStatus& n) { return n.overload_percent; },
          "RFC 7339 overload control: the share of new calls shed now (0: none).")
      .def_property_readonly(
          "overload_until",
          [](const NodeStatus& n) -> py::object {
            if (n.overload_until_ms == 0) return py::none();
            return py::float_(static_cast<double>(n.overload_until_ms) / 1000.0);
          },
          "Unix time the node's overload report ends (None: none in force).")
      .def_property_readonly("latency_ewma_ms", [](const NodeStatus& n) { return n.latency_ewma_ms; })
      .def_property_readonly("error_rate", [](const NodeStatus& n) { return n.error_rate; })
      .def("__repr__", [](const NodeStatus& n) {
        int64_t total = 0;
        for (const auto& [r, v] : n.sessions) total += v;
        return "NodeStatus(id='" + n.spec.id + "', uri='" + n.spec.uri + "', pool='" + n.spec.pool + "', state='" +
               std::string(approute::AdminStateName(n.spec.state)) + "', health='" +
               std::string(approute::HealthName(n.health)) + "', sessions=" + std::to_string(total) + ")";
      });

  auto opt_str = [](const std::string& v) -> py::object { return v.empty() ? py::none() : py::object(py::str(v)); };
  py::class_<SessionRow>(m, "SessionInfo", "One live session (a snapshot).")
      .def_property_readonly("call_id", [](const SessionRow& s) { return s.row.call_id; })
      .def_property_readonly("app", [](const SessionRow& s) { return s.row.app; })
      .def_property_readonly(
          "node_id", [opt_str](const SessionRow& s) { return opt_str(s.row.node_id); },
          "None while a retry is choosing, or when its node was removed.")
      .def_property_readonly(
          "key", [opt_str](const SessionRow& s) { return opt_str(s.row.key); },
          "The affinity key whose claim it holds, or None.")
      .def_property_readonly(
          "age", [](const SessionRow& s) { return static_cast<double>(s.now_ms - s.row.created_ms) / 1000.0; },
          "Seconds since it was routed (when it was listed).")
      .def_property_readonly(
          "expires_in", [](const SessionRow& s) { return static_cast<double>(s.row.expires_ms - s.now_ms) / 1000.0; },
          "Seconds until its lifetime ends if it is never ended.")
      .def_property_readonly("attempt", [](const SessionRow& s) { return s.row.attempt; })
      .def_property_readonly("confirmed", [](const SessionRow& s) { return s.row.confirmed; })
      .def("__repr__", [](const SessionRow& s) {
        return "SessionInfo(call_id='" + s.row.call_id + "', app='" + s.row.app + "', node_id='" + s.row.node_id +
               "', key='" + s.row.key + "', attempt=" + std::to_string(s.row.attempt) + ")";
      });
  py::class_<AffinityRow>(m, "AffinityInfo", "One affinity claim (a snapshot).")
      .def_property_readonly("app", [](const AffinityRow& a) { return a.row.app; })
      .def_property_readonly("key", [](const AffinityRow& a) { return a.row.key; })
      .def_property_readonly("node_id", [opt_str](const AffinityRow& a) { return opt_str(a.row.node_id); })
      .def_property_readonly(
          "sessions", [](const AffinityRow& a) { return a.row.sessions; }, "Live sessions holding the claim.")
      .def_property_readonly(
          "grace_left",
          [](const AffinityRow& a) -> py::object {
            if (a.row.expires_ms == 0) return py::none();
            return py::float_(std::max(0.0, static_cast<double>(a.row.expires_ms - a.now_ms) / 1000.0));
          },
          "Seconds of grace time left; None while sessions hold it.")
      .def("__repr__", [](const AffinityRow& a) {
        return "AffinityInfo(app='" + a.row.app + "', key='" + a.row.key + "', node_id='" + a.row.node_id +
               "', sessions=" + std::to_string(a.row.sessions) + ")";
      });

  py::class_<approute::ReportResult>(m, "ReportResult", "The outcome of a status report, as a SIP response.")
      .def_property_readonly(
          "code", [](const approute::ReportResult& r) { return r.code; },
          "200, 400 (malformed), 403 (refused), 412 (unknown entity tag) or 503 (no room).")
      .def_property_readonly("reason", [](const approute::ReportResult& r) { return r.reason; })
      .def_property_readonly("etag", [](const approute::ReportResult& r) { return r.etag; })
      .def_property_readonly("node_id", [](const approute::ReportResult& r) { return r.node_id; })
      .def_property_readonly("expires", [](const approute::ReportResult& r) { return r.expires; })
      .def("__repr__", [](const approute::ReportResult& r) {
        return "ReportResult(code=" + std::to_string(r.code) + ", reason='" + r.reason + "', etag='" + r.etag +
               "', node_id='" + r.node_id + "', expires=" + std::to_string(r.expires) + ")";
      });

  py::class_<PyRouter, std::shared_ptr<PyRouter>> router_cls(
      m, "Router", "Routes calls to nodes; see docs/design.md, \"Public contract\".");
  router_cls
      .def_static(
          "from_yaml",
          [](const std::string& text, std::optional<std::string> shared,
             std::optional<std::map<std::string, py::object>> strategies, std::optional<uint64_t> seed, bool upkeep) {
            return Make([&](approute::RouterOptions o) { return approute::Router::FromYaml(text, std::move(o)); },
                        shared, true, strategies, seed, upkeep);
          },
          py::arg("text"), py::kw_only(), py::arg("shared") = py::none(), py::arg("strategies") = py::none(),
          py::arg("seed") = py::none(), py::arg("upkeep") = false,
          "Build a router from YAML text. shared: a segment name to create or attach (all "
          "processes using the name share one state); None for private state. strategies: "
          "{name: approute.Strategy} this router's configuration may name. seed: reproducible "
          "random choices (tests, simulations). upkeep: a thread sweeps every second (keeps the "
          "cluster lease of a process that routes rarely); never in a process that forks afterwards.")
      .def_static(
          "from_file",
          [](const std::string& path, std::optional<std::string> shared,
             std::optional<std::map<std::string, py::object>> strategies, std::optional<uint64_t> seed, bool upkeep) {
            return Make([&](approute::RouterOptions o) { return approute::Router::FromFile(path, std::move(o)); },
                        shared, true, strategies, seed, upkeep);
          },
          py::arg("path"), py::kw_only(), py::arg("shared") = py::none(), py::arg("strategies") = py::none(),
          py::arg("seed") = py::none(), py::arg("upkeep") = false,
          "Build a router from a YAML file; errors name the file and line. upkeep: as from_yaml.")
      .def_static(
          "attach",
          [](const std::string& shared) {
            return Make([&](approute::RouterOptions o) { return approute::Router::Attach(shared, std::move(o)); },
                        shared, false);
          },
          py::arg("shared"), "Attach the state (and stored configuration) of a running router.")
      .def_static(
          "unlink", [](const std::string& shared) { return Take(approute::Router::Unlink(shared)); }, py::arg("shared"),
          "Remove a shared segment's name; False if there was none.")
      .def(
          "retry",
          [](PyRouter& self, const std::string& call_id, int code) {
            absl::StatusOr<Decision> d;
            {
              py::gil_scoped_release nogil;
              d = self.router->Retry(call_id, code);
            }
            return py::reinterpret_steal<py::object>(MakeDecision(Take(std::move(d))));
          },
          py::arg("call_id"), py::kw_only(), py::arg("code") = 503,
          "The call's node bounced it with `code`: pick a node never tried for this call.")
      .def(
          "explain",
          [](PyRouter& self, const std::string& app, std::optional<std::string> key, std::optional<std::string> prefer,
             const std::vector<std::string>& exclude, std::optional<std::map<std::string, std::string>> attrs,
             std::optional<std::string> call_id) {
            approute::ExplainRequest req;
            req.app = app;
            req.key = key.value_or("");
            req.prefer = prefer.value_or("");
            req.exclude = exclude;
            if (attrs) req.attrs = *std::move(attrs);
            req.call_id = call_id.value_or("");
            absl::StatusOr<approute::ExplainTrace> t;
            {
              py::gil_scoped_release nogil;
              t = self.router->Explain(req);
            }
            return ExplainDict(Take(std::move(t)));
          },
          py::arg("app") = "", py::kw_only(), py::arg("key") = py::none(), py::arg("prefer") = py::none(),
          py::arg("exclude") = std::vector<std::string>(), py::arg("attrs") = py::none(),
          py::arg("call_id") = py::none(),
          "The placement route() would make now, as a dry run that changes nothing, with its trace\n"
          "(a dict: the policy, each pool node and why it is or is not a candidate, the affinity\n"
          "lookup, the strategy's candidates and picks, the steps and the decision). call_id: explain\n"
          "that live session's placement as it would be made now (app and key are then its own).")
      .def(
          "confirm",
          [](PyRouter& self, const std::string& call_id) { CallNoGil([&] { return self.router->Confirm(call_id); }); },
          py::arg("call_id"), "The call was answered: its claim on the key is a real one.")
      .def(
          "abandon",
          [](PyRouter& self, const std::string& call_id) { CallNoGil([&] { return self.router->Abandon(call_id); }); },
          py::arg("call_id"),
          "The call ended unanswered (CANCEL, failure, relay error): as end(), but a claim no answered "
          "call ever held goes at once instead of entering its grace time.")
      .def("add_node", NodeMethod(&approute::Router::AddNode), py::arg("id"), py::arg("uri"), py::kw_only(),
           py::arg("pool") = "default", py::arg("weight") = 1, py::arg("capacity") = py::none(),
           py::arg("attrs") = py::none(), py::arg("priority") = 0, py::arg("state") = "active",
           "Add a node; AlreadyExistsError if the id is taken.")
      .def("update_node", NodeMethod(&approute::Router::UpdateNode), py::arg("id"), py::arg("uri"), py::kw_only(),
           py::arg("pool") = "default", py::arg("weight") = 1, py::arg("capacity") = py::none(),
           py::arg("attrs") = py::none(), py::arg("priority") = 0, py::arg("state") = "active",
           "Replace a node's settings, keeping its sessions.")
      .def(
          "remove_node",
          [](PyRouter& self, const std::string& id) { CallNoGil([&] { return self.router->RemoveNode(id); }); },
          py::arg("id"))
      .def(
          "set_state",
          [](PyRouter& self, const std::string& id, const std::string& state) {
            approute::AdminState st = State(state);
            CallNoGil([&] { return self.router->SetState(id, st); });
          },
          py::arg("id"), py::arg("state"), "active | draining | disabled")
      .def(
          "drain",
          [](PyRouter& self, const std::string& id, std::optional<double> deadline) {
            std::optional<int64_t> ms;
            if (deadline) {
              if (!std::isfinite(*deadline) || *deadline < 0) {
                Raise(absl::InvalidArgumentError("drain deadline must be a finite number of seconds >= 0, got " +
                                                 py::repr(py::float_(*deadline)).cast<std::string>()));
              }
              ms = static_cast<int64_t>(std::llround(*deadline * 1000.0));
            }
            CallNoGil([&] { return self.router->Drain(id, ms); });
          },
          py::arg("id"), py::arg("deadline") = py::none(),
          "Drain a node: no new keys; a key whose last session ends is released at once. After\n"
          "`deadline` seconds (None: never) its keys' new calls go elsewhere, so it empties within\n"
          "the deadline plus its longest call.")
      .def(
          "set_health",
          [](PyRouter& self, const std::string& id, const std::string& health) {
            approute::Health h = Take(approute::ParseHealth(health));
            CallNoGil([&] { return self.router->SetHealth(id, h); });
          },
          py::arg("id"), py::arg("health"), "up | suspect | down")
      .def(
          "report_load",
          [](PyRouter& self, const std::string& id, const py::kwargs& metrics) {
            std::map<std::string, double> m;
            for (const auto& [k, v] : metrics) {
              std::string name = py::cast<std::string>(k);
              if (PyBool_Check(v.ptr()) || !(PyFloat_Check(v.ptr()) || PyLong_Check(v.ptr()))) {
                Raise(absl::InvalidArgumentError("load metric " + name + " must be a number, got " +
                                                 py::cast<std::string>(py::repr(v))));
              }
              m[name] = py::cast<double>(v);
            }
            CallNoGil([&] { return self.router->ReportLoad(id, m); });
          },
          py::arg("id"), "Record a node's load, e.g. report_load('ast1', cpu=0.4, channels=120).")
      .def(
          "apply_report",
          [](PyRouter& self, std::string body, int64_t expires, std::string source, std::optional<std::string> auth,
             std::optional<std::string> if_match) {
            approute::ReportRequest req;
            req.body = std::move(body);
            req.expires = expires;
            req.source = std::move(source);
            if (auth) req.auth = *auth;
            if (if_match) req.if_match = *if_match;
            py::gil_scoped_release nogil;
            return self.router->ApplyReport(req);
          },
          py::arg("body"), py::kw_only(), py::arg("expires"), py::arg("source"), py::arg("auth") = py::none(),
          py::arg("if_match") = py::none(),
          "Apply a status report (SIP PUBLISH, Event: approute-status). Returns the SIP outcome; "
          "anything but 200 changed nothing.")
      .def(
          "report_probe",
          [](PyRouter& self, const std::string& id, int code, double rtt_ms, std::optional<double> retry_after) {
            CallNoGil([&] { return self.router->ReportProbe(id, code, rtt_ms, retry_after); });
          },
          py::arg("id"), py::arg("code"), py::arg("rtt_ms") = 0.0, py::arg("retry_after") = py::none(),
          "An OPTIONS probe's result: code 0 = no answer. A 503 makes the node busy for retry_after "
          "seconds (its Retry-After; None: health.busy_for); a 2xx ends that at once.")
      .def(
          "report_result",
          [](PyRouter& self, const std::string& id, int code, double latency_ms, std::optional<double> retry_after) {
            CallNoGil([&] { return self.router->ReportCallResult(id, code, latency_ms, retry_after); });
          },
          py::arg("id"), py::arg("code"), py::arg("latency_ms") = 0.0, py::arg("retry_after") = py::none(),
          "A final response (or 0 for a timeout) the proxy saw from a node: outlier detection, latency; "
          "a 503 makes the node busy as report_probe does.")
      .def(
          "report_overload",
          [](PyRouter& self, const std::string& id, int percent, int64_t validity_ms, uint64_t seq) {
            CallNoGil([&] { return self.router->ReportOverload(id, percent, validity_ms, seq); });
          },
          py::arg("id"), py::arg("percent"), py::arg("validity_ms"), py::arg("seq"),
          "RFC 7339 overload control from a node's answer (Via oc, oc-validity, oc-seq): shed percent % "
          "of its new calls for validity_ms; the newest seq wins (an equal one changes nothing while the "
          "period runs); percent 0 or validity_ms 0 ends it.")
      .def(
          "node",
          [](PyRouter& self, const std::string& id) {
            absl::StatusOr<NodeStatus> n;
            {
              py::gil_scoped_release nogil;
              n = self.router->Node(id);
            }
            return Take(std::move(n));
          },
          py::arg("id"))
      .def("nodes",
           [](PyRouter& self) {
             py::gil_scoped_release nogil;
             return self.router->Nodes();
           })
      .def(
          "stats",
          [](PyRouter& self) {
            approute::RouterStats s;
            {
              py::gil_scoped_release nogil;
              s = self.router->Stats();
            }
            py::dict d;
            d["nodes"] = s.nodes;
            d["sessions"] = s.sessions;
            d["affinities"] = s.affinities;
            d["max_nodes"] = s.max_nodes;
            d["max_sessions"] = s.max_sessions;
            d["max_affinities"] = s.max_affinities;
            d["expired_sessions"] = s.expired_sessions;
            d["reports_accepted"] = s.reports_accepted;
            int64_t refused = 0;
            for (const auto& [k, v] : s.reports_refused) refused += v;
            d["reports_refused"] = refused;
            d["reports_refused_by"] = s.reports_refused;
            d["processes"] = s.processes;
            d["repairs"] = s.repairs;
            d["repaired_counts"] = s.repaired_counts;
            d["decisions"] = s.decisions;
            d["retries"] = s.retries;
            d["key_refusals"] = s.key_refusals;
            d["headroom_refusals"] = s.headroom_refusals;
            d["budget_refusals"] = s.budget_refusals;
            d["busy_nodes"] = s.busy_nodes;
            d["overloaded_nodes"] = s.overloaded_nodes;
            py::dict buckets;
            for (const auto& [le, n] : s.route_seconds.buckets) buckets[py::float_(le)] = n;
            py::dict hist;
            hist["buckets"] = buckets;
            hist["sum"] = s.route_seconds.sum;
            hist["count"] = s.route_seconds.count;
            d["route_seconds"] = hist;
            return d;
          },
          "Router-wide counts: nodes, sessions, affinities, capacities, expired_sessions, "
          "processes (live, registered), repairs and repaired_counts (recounts after a process died "
          "inside a state change), decisions {app: {reason: n}}, retries {app: {code: n}}, "
          "budget_refusals {app: n} (retries past retry.budget), busy_nodes and overloaded_nodes (now), and "
          "route_seconds (a sampled histogram: buckets {upper bound: cumulative count}, sum, count).")
      .def(
          "cluster",
          [](PyRouter& self) {
            approute::ClusterStatus c;
            {
              py::gil_scoped_release nogil;
              c = self.router->Cluster();
            }
            py::dict d;
            d["mode"] = c.mode;
            d["name"] = c.name;
            d["proxy"] = c.proxy;
            d["proxies"] = c.proxies;
            d["last_sync_ms"] = c.last_sync_ms;
            d["degraded_placements"] = c.degraded_placements;
            d["outage_refusals"] = c.outage_refusals;
            d["round_trips"] = c.round_trips;
            d["failures"] = c.failures;
            d["rtt_p50_us"] = c.rtt_p50_us;
            d["rtt_p99_us"] = c.rtt_p99_us;
            d["primary"] = c.primary;
            d["lease_age_ms"] = c.lease_age_ms;
            d["warning"] = c.warning;
            d["last_error"] = c.last_error;
            return d;
          },
          "The state shared with the deployment's other proxies (cluster: in the YAML): mode "
          "(local, cluster, degraded), name, proxy, proxies (live, asks Redis), last_sync_ms, "
          "degraded_placements, outage_refusals (past the outage share), round_trips, failures, "
          "rtt_p50_us and rtt_p99_us (this host), primary (the Redis primary of this process's "
          "connection), lease_age_ms (since this host last renewed its lease, -1 = not yet) and "
          "warning (non-empty when the lease is close to lapsing), last_error (this process's last failed "
          "Redis round trip, \"\" = none).")
      .def(
          "sessions",
          [](PyRouter& self, std::optional<std::string> node, std::optional<std::string> app,
             std::optional<int64_t> limit) {
            return List(self, Filter(app, node, limit), &approute::Router::Sessions);
          },
          py::kw_only(), py::arg("node") = py::none(), py::arg("app") = py::none(), py::arg("limit") = py::none(),
          "Live sessions (optionally of one node or app, at most limit): a list of SessionInfo.")
      .def(
          "affinities",
          [](PyRouter& self, std::optional<std::string> app, std::optional<std::string> node,
             std::optional<int64_t> limit) {
            return List(self, Filter(app, node, limit), &approute::Router::Affinities);
          },
          py::kw_only(), py::arg("app") = py::none(), py::arg("node") = py::none(), py::arg("limit") = py::none(),
          "Affinity claims (optionally of one app or node, at most limit): a list of AffinityInfo.")
      .def(
          "reload",
          [](PyRouter& self, const std::string& text) {
            CallNoGil([&] { return self.router->Reload(text); }, /*config=*/true);
          },
          py::arg("text"), "Apply a new YAML configuration; sessions of remaining nodes are kept.")
      .def(
          "sweep",
          [](PyRouter& self) {
            py::gil_scoped_release nogil;
            return self.router->Sweep();
          },
          "Expire sessions past their lifetime and affinities past their grace; returns sessions expired.")
      .def_property_readonly(
          "shared",
          [](const PyRouter& self) -> py::object {
            const std::string& n = self.router->shared_name();
            if (n.empty()) return py::none();
            return py::str(n.substr(1));
          },
          "The shared segment's name, or None for private state.")
      .def(
          "register_strategy",
          [](PyRouter& self, const std::string& name, py::object strategy, const std::string& fallback) {
            self.strategies->Register(name, std::move(strategy), fallback);
          },
          py::arg("name"), py::arg("strategy"), py::kw_only(), py::arg("fallback") = "",
          "Make an approute.Strategy instance available to this router's configuration as "
          "`name` (then reload() a configuration naming it). This process only; other "
          "processes use strategy: \"python:module:Class\".")
      .def(
          "_simulate",
          [](PyRouter& self, const py::dict& spec, py::object progress) {
            approute::SimSpec s = SimSpecOf(spec);
            std::function<bool(double)> cb;
            if (!progress.is_none()) {
              cb = [&progress](double f) {
                py::gil_scoped_acquire gil;
                try {
                  progress(f);
                } catch (py::error_already_set& e) {
                  e.restore();  // re-raised after the loop stops
                  return false;
                }
                return PyErr_CheckSignals() == 0;
              };
            }
            std::shared_ptr<std::atomic<int64_t>> clock = self.fake_ms;
            absl::StatusOr<approute::SimResult> r;
            {
              py::gil_scoped_release nogil;
              r = approute::Simulate(
                  *self.router, s, [&clock](int64_t ms) { clock->store(ms, std::memory_order_relaxed); }, cb);
            }
            if (PyErr_Occurred()) throw py::error_already_set();
            return SimResultDict(Take(std::move(r)));
          },
          py::arg("spec"), py::arg("progress") = py::none(),
          "Internal (approute.simulate): replay a workload on this router's virtual clock.")
      .def(
          "_set_time",
          [](PyRouter& self, double seconds) { self.fake_ms->store(static_cast<int64_t>(seconds * 1000.0)); },
          py::arg("seconds"), "Test hook: freeze this router's clock at `seconds` (unix time).")
      .def(
          "_clear_time", [](PyRouter& self) { self.fake_ms->store(-1); }, "Test hook: back to the real clock.");

  approute_py::AddFastMethods(router_cls);  // route() and end()

  m.def(
      "sign_report",
      [](const std::string& body, const std::string& keyid, const std::string& secret, const std::string& node,
         const std::string& etag, int64_t expires, std::optional<int64_t> ts) {
        int64_t t = ts ? *ts : RealNowMs() / 1000;
        return approute::SignReport(body, keyid, secret, t, node, etag, expires);
      },
      py::arg("body"), py::kw_only(), py::arg("keyid"), py::arg("secret"), py::arg("node"), py::arg("etag") = "",
      py::arg("expires") = 3600, py::arg("ts") = py::none(),
      "The X-Approute-Auth header value for a status report: keyid=K,ts=T,sig=HMAC-SHA256 hex over "
      "ts, node, etag (SIP-If-Match), expires and body. approute.sign_report fills node from the body.");
  approute_py::BindStrategies(m);
  m.def("strategies", &approute::StrategyNames, "Names of the built-in and registered strategies.");
  m.def("exclusion_names", &approute::ExclusionNames,
        "The reasons Router.explain() gives for a node that would not take a call (a node's \"exclusion\").");
  m.def(
      "strategy_request_attrs",
      [](const std::string& name, const approute::StrategyParams& options) {
        absl::StatusOr<std::vector<std::string>> attrs = approute::StrategyRequestAttrs(name, options);
        Check(attrs.status());
        return *attrs;
      },
      py::arg("name"), py::arg("options") = approute::StrategyParams{},
      "The route() attributes (attrs keys) the strategy `name` with `options` (values as YAML scalar "
      "text) may read: [] for none, ['*'] for any (Python strategies). InvalidArgumentError when "
      "the name or an option is unknown.");
  m.def(
      "validate_config",
      [](const std::string& text, const std::string& source) {
        Check(approute::ParseConfig(text, source).status(), true);
      },
      py::arg("text"), py::arg("source") = "<yaml>",
      "Raise ConfigError (with source:line:column and key) if `text` is not a valid configuration.");
  m.def(
      "check_redis",
      [](const std::string& url, const std::string& sentinel_password, int64_t timeout_ms) {
        approute::RedisCheck c;
        {
          py::gil_scoped_release nogil;
          c = approute::CheckRedis(url, sentinel_password, timeout_ms);
        }
        py::dict d;
        d["ok"] = c.ok;
        d["primary"] = c.primary;
        d["role"] = c.role;
        d["version"] = c.version;
        d["maxmemory_policy"] = c.maxmemory_policy;
        d["rtt_us"] = c.rtt_us;
        d["error"] = c.error;
        d["notes"] = c.notes;
        return d;
      },
      py::arg("url"), py::kw_only(), py::arg("sentinel_password") = "", py::arg("timeout_ms") = 2000,
      "Connect to a cluster.redis address (AUTH, SELECT, Sentinel as the router would), make one "
      "round trip, ask ROLE and INFO: {ok, primary, role, version, maxmemory_policy, rtt_us, error, "
      "notes}. Fields the user's ACL does not allow are empty, with a note. Writes nothing.");
}
