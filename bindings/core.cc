// approute._core — pybind11 bindings: conversions only.
//
// Core errors (absl::Status) become approute.Error subclasses carrying the
// core's message. The GIL is released around every call that takes a lock
// in the state region.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <atomic>
#include <cmath>
#include <string_view>
#include <memory>
#include <optional>
#include <string>
#include <time.h>

#include "approute/config.h"
#include "approute/router.h"
#include "approute/simulation.h"
#include "approute/strategy.h"
#include "py_strategy.h"

namespace py = pybind11;
using approute::Decision;
using approute::NodeSpec;
using approute::NodeStatus;

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

[[noreturn]] void Raise(const absl::Status& s, bool config = false) {
  PyObject* type = g_err.base;
  switch (s.code()) {
    case absl::StatusCode::kInvalidArgument: type = config ? g_err.config : g_err.invalid; break;
    case absl::StatusCode::kNotFound: type = g_err.not_found; break;
    case absl::StatusCode::kResourceExhausted: type = g_err.exhausted; break;
    case absl::StatusCode::kFailedPrecondition: type = g_err.precondition; break;
    case absl::StatusCode::kAlreadyExists: type = g_err.exists; break;
    case absl::StatusCode::kPermissionDenied: type = g_err.permission; break;
    default: break;
  }
  PyErr_SetString(type, Str(s.message()).c_str());
  throw py::error_already_set();
}

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

// The Python-facing router: the core router plus a test clock.
struct PyRouter {
  std::unique_ptr<approute::Router> router;
  std::shared_ptr<std::atomic<int64_t>> fake_ms;  // < 0: real clock
  std::shared_ptr<approute_py::PyResolver> strategies;  // python: names and register_strategy()
};

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

std::shared_ptr<PyRouter> Make(
    const std::function<absl::StatusOr<std::unique_ptr<approute::Router>>(approute::RouterOptions)>& f,
    const std::optional<std::string>& shared, bool config,
    const std::optional<std::map<std::string, py::object>>& strategies = std::nullopt,
    std::optional<uint64_t> seed = std::nullopt) {
  auto pr = std::make_shared<PyRouter>();
  pr->fake_ms = std::make_shared<std::atomic<int64_t>>(-1);
  pr->strategies = std::make_shared<approute_py::PyResolver>();
  if (strategies) {
    for (const auto& [name, obj] : *strategies) pr->strategies->Register(name, obj, "");
  }
  approute::RouterOptions o = Options(shared, pr->fake_ms);
  o.strategies = pr->strategies;
  if (seed) o.random_seed = *seed ? *seed : 1;
  absl::StatusOr<std::unique_ptr<approute::Router>> r;
  {
    py::gil_scoped_release nogil;
    r = f(std::move(o));
  }
  pr->router = Take(std::move(r), config);
  return pr;
}

approute::AdminState State(const std::string& s) { return Take(approute::ParseAdminState(s)); }


NodeSpec Spec(const std::string& id, const std::string& uri, const std::string& pool, int weight,
              const std::optional<std::map<std::string, int64_t>>& capacity,
              const std::optional<std::map<std::string, std::string>>& attrs, int priority,
              const std::string& state) {
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
  return [method](PyRouter& self, const std::string& id, const std::string& uri, const std::string& pool,
                  int weight, std::optional<std::map<std::string, int64_t>> capacity,
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
    s.apps.push_back(std::move(app));
  }
  for (py::handle h : Get<py::list>(d, "nodes", py::list())) s.nodes.push_back(SimNodeOf(py::reinterpret_borrow<py::dict>(h)));
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
                     Get<int>(n, "weight", 1), Get<std::optional<std::map<std::string, int64_t>>>(n, "capacity", std::nullopt),
                     Get<std::optional<std::map<std::string, std::string>>>(n, "attrs", std::nullopt),
                     Get<int>(n, "priority", 0), Get<std::string>(n, "state", "active"));
      ev.sim = SimNodeOf(n);
    }
    s.events.push_back(std::move(ev));
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

// ---- Decision ----------------------------------------------------------------
// A native type rather than a pybind11 class: one is made per routed call, and
// pybind11's instance bookkeeping (a registry insert and erase per object)
// cost as much as the routing. Attributes are made on access.

struct DecisionObject {
  PyObject_HEAD
  Decision d;
};
PyTypeObject* g_decision_type = nullptr;

PyObject* NewStr(const std::string& v) { return PyUnicode_FromStringAndSize(v.data(), static_cast<Py_ssize_t>(v.size())); }
PyObject* OptStrObj(const std::string& v) {
  if (v.empty()) Py_RETURN_NONE;
  return NewStr(v);
}
Decision& D(PyObject* self) { return reinterpret_cast<DecisionObject*>(self)->d; }

PyObject* MakeDecision(Decision&& d) {
  auto* o = PyObject_New(DecisionObject, g_decision_type);
  if (o == nullptr) throw py::error_already_set();
  new (&o->d) Decision(std::move(d));
  return reinterpret_cast<PyObject*>(o);
}

void DecisionDealloc(PyObject* self) {
  PyTypeObject* type = Py_TYPE(self);
  D(self).~Decision();
  type->tp_free(self);
  Py_DECREF(type);
}

PyObject* DecisionRepr(PyObject* self) {
  const Decision& d = D(self);
  std::string r = d.ok ? "Decision(ok=True, node_id='" + d.node_id + "', uri='" + d.uri + "', reason='" + d.reason +
                             "', app='" + d.app + "', attempt=" + std::to_string(d.attempt) + ")"
                       : "Decision(ok=False, reason='" + d.reason + "', detail='" + d.detail + "', app='" + d.app +
                             "', attempt=" + std::to_string(d.attempt) + ")";
  return NewStr(r);
}

int DecisionBool(PyObject* self) { return D(self).ok ? 1 : 0; }

PyGetSetDef g_decision_getset[] = {
    {"ok", [](PyObject* self, void*) { return PyBool_FromLong(D(self).ok); }, nullptr, "True when a node was chosen.", nullptr},
    {"node_id", [](PyObject* self, void*) { return OptStrObj(D(self).node_id); }, nullptr, "The chosen node's id, or None.", nullptr},
    {"uri", [](PyObject* self, void*) { return OptStrObj(D(self).uri); }, nullptr, "The chosen node's SIP URI, or None.", nullptr},
    {"reason", [](PyObject* self, void*) { return NewStr(D(self).reason); }, nullptr,
     "affinity, affinity_bound, prefer, strategy, retry, session or no_node; not_retryable for retry() "
     "with a code that is not a retry code; for a strict key whose node cannot take the call: key_full, "
     "key_down, key_draining, key_disabled or key_tried.", nullptr},
    {"detail", [](PyObject* self, void*) { return NewStr(D(self).detail); }, nullptr, "Why no node was chosen (empty when ok).", nullptr},
    {"app", [](PyObject* self, void*) { return NewStr(D(self).app); }, nullptr, "The policy that decided.", nullptr},
    {"attempt", [](PyObject* self, void*) { return PyLong_FromLong(D(self).attempt); }, nullptr,
     "1 for the first placement, +1 per retry.", nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr}};

// Decisions come only from route() and retry(); Python 3.9 lacks
// Py_TPFLAGS_DISALLOW_INSTANTIATION, so tp_new refuses explicitly.
PyObject* DecisionNew(PyTypeObject*, PyObject*, PyObject*) {
  PyErr_SetString(PyExc_TypeError, "cannot create 'approute.Decision' instances");
  return nullptr;
}

PyType_Slot g_decision_slots[] = {
    {Py_tp_new, reinterpret_cast<void*>(DecisionNew)},
    {Py_tp_dealloc, reinterpret_cast<void*>(DecisionDealloc)},
    {Py_tp_repr, reinterpret_cast<void*>(DecisionRepr)},
    {Py_tp_getset, g_decision_getset},
    {Py_nb_bool, reinterpret_cast<void*>(DecisionBool)},
    {Py_tp_doc, const_cast<char*>("What route() or retry() decided.")},
    {0, nullptr}};

PyType_Spec g_decision_spec = {"approute.Decision", sizeof(DecisionObject), 0,
                               Py_TPFLAGS_DEFAULT, g_decision_slots};

// ---- fast paths --------------------------------------------------------------
// route() and end() run once per SIP request. pybind11's generic dispatcher
// (keyword matching, overload resolution) costs more than the routing itself,
// so these two are METH_FASTCALL methods that parse their few arguments
// directly; everything else goes through pybind11.

bool Utf8(PyObject* o, const char* what, std::string_view* out) {
  if (!PyUnicode_Check(o)) {
    PyErr_Format(PyExc_TypeError, "%s must be str, not %.100s", what, Py_TYPE(o)->tp_name);
    return false;
  }
  if (PyUnicode_IS_COMPACT_ASCII(o)) {  // the usual case, without a call: the bytes follow the object header
    *out = std::string_view(static_cast<const char*>(PyUnicode_DATA(o)), static_cast<size_t>(PyUnicode_GET_LENGTH(o)));
    return true;
  }
  Py_ssize_t n = 0;
  const char* p = PyUnicode_AsUTF8AndSize(o, &n);
  if (p == nullptr) return false;
  *out = std::string_view(p, static_cast<size_t>(n));
  return true;
}

// Keyword names, interned at import. A call site's keyword names are
// interned by the compiler, so they usually match by identity; any other str
// is compared by value.
struct KwNames {
  PyObject *call_id = nullptr, *key = nullptr, *exclude = nullptr, *attrs = nullptr, *prefer = nullptr;
};
KwNames g_kw;

bool Kw(PyObject* name, PyObject* interned, const char* ascii) {
  return name == interned || PyUnicode_CompareWithASCIIString(name, ascii) == 0;
}

template <typename F>
PyObject* Guard(F&& f) {
  try {
    return f();
  } catch (py::error_already_set& e) {
    e.restore();
  } catch (py::cast_error& e) {  // before builtin_exception, its base
    PyErr_SetString(PyExc_TypeError, e.what());
  } catch (py::builtin_exception& e) {
    e.set_error();
  } catch (const std::exception& e) {
    PyErr_SetString(PyExc_RuntimeError, e.what());
  }
  return nullptr;
}

// The PyRouter of `self` without pybind11's generic caster (a type lookup
// per call): straight from the instance when it is exactly a Router.
PyTypeObject* g_router_type = nullptr;

PyRouter& RouterOf(PyObject* self) {
  if (Py_TYPE(self) == g_router_type) {
    auto* inst = reinterpret_cast<py::detail::instance*>(self);
    if (inst->simple_layout && inst->simple_value_holder[0] != nullptr) {
      return *static_cast<PyRouter*>(inst->simple_value_holder[0]);
    }
  }
  return py::cast<PyRouter&>(py::handle(self));
}

// route() and end() release the GIL only when the router may call back into
// Python (a Python strategy was made for it): without one, the core call is
// a few hundred nanoseconds that take no lock held across a Python call, and
// releasing and re-taking the GIL would cost a third of it.
bool MayCallPython(const PyRouter& r) { return r.strategies && r.strategies->MadeAny(); }

template <typename F>
auto MaybeNoGil(const PyRouter& r, F&& f) {
  if (!MayCallPython(r)) return f();
  py::gil_scoped_release nogil;
  return f();
}

// Fills `req` from route()'s arguments and routes it: the body of route()
// once the keywords are sorted out.
PyObject* RouteWith(PyObject* self, PyObject* app, PyObject* call_id, PyObject* key, PyObject* prefer,
                    PyObject* exclude, PyObject* attrs, approute::RouteRequest& req) {
  req.key.clear();
  req.prefer.clear();
  req.exclude.clear();
  req.attrs.clear();
  std::string_view v;
  if (!Utf8(app, "app", &v)) return nullptr;
  req.app.assign(v);
  if (!Utf8(call_id, "call_id", &v)) return nullptr;
  req.call_id.assign(v);
  if (key != nullptr && key != Py_None) {
    if (!Utf8(key, "key", &v)) return nullptr;
    req.key.assign(v);
  }
  if (prefer != nullptr && prefer != Py_None) {
    if (!Utf8(prefer, "prefer", &v)) return nullptr;
    req.prefer.assign(v);
  }
  if (exclude != nullptr && exclude != Py_None) {
    if (PyUnicode_Check(exclude)) {
      PyErr_SetString(PyExc_TypeError, "exclude must be a collection of node ids, not a str");
      return nullptr;
    }
    PyObject* it = PyObject_GetIter(exclude);
    if (it == nullptr) {
      PyErr_Format(PyExc_TypeError, "exclude must be a collection of node ids, not %.100s", Py_TYPE(exclude)->tp_name);
      return nullptr;
    }
    py::object iter = py::reinterpret_steal<py::object>(it);
    while (PyObject* item = PyIter_Next(it)) {
      py::object owned = py::reinterpret_steal<py::object>(item);
      std::string_view id;
      if (!Utf8(item, "each node id in exclude", &id)) return nullptr;
      req.exclude.emplace_back(id);
    }
    if (PyErr_Occurred()) return nullptr;
  }
  if (attrs != nullptr && attrs != Py_None) {
    if (!PyDict_Check(attrs)) {
      PyErr_Format(PyExc_TypeError, "attrs must be a dict of str to str, not %.100s", Py_TYPE(attrs)->tp_name);
      return nullptr;
    }
    PyObject *k, *val;
    Py_ssize_t pos = 0;
    while (PyDict_Next(attrs, &pos, &k, &val)) {
      std::string_view ks, vs;
      if (!Utf8(k, "an attrs key", &ks)) return nullptr;
      if (!PyUnicode_Check(val)) {
        PyErr_Format(PyExc_TypeError, "attrs[%R] must be str, not %.100s", k, Py_TYPE(val)->tp_name);
        return nullptr;
      }
      if (!Utf8(val, "an attrs value", &vs)) return nullptr;
      req.attrs.emplace(std::string(ks), std::string(vs));
    }
  }
  PyRouter& r = RouterOf(self);
  absl::StatusOr<Decision> d = MaybeNoGil(r, [&] { return r.router->Route(req); });
  if (!d.ok()) Raise(d.status());
  return MakeDecision(*std::move(d));  // moved once, into the object (Take() would move it twice more)
}

PyObject* FastRoute(PyObject* self, PyObject* const* args, Py_ssize_t nargsf, PyObject* kwnames) {
  return Guard([&]() -> PyObject* {
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs != 1) {
      PyErr_Format(PyExc_TypeError, "route() takes the app as its only positional argument (%zd given)", nargs);
      return nullptr;
    }
    PyObject *call_id = nullptr, *key = nullptr, *prefer = nullptr, *exclude = nullptr, *attrs = nullptr;
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    for (Py_ssize_t i = 0; i < nkw; ++i) {
      PyObject* name = PyTuple_GET_ITEM(kwnames, i);
      PyObject* value = args[nargs + i];
      PyObject** dst = name == g_kw.call_id   ? &call_id
                       : name == g_kw.key     ? &key
                       : name == g_kw.exclude ? &exclude
                       : name == g_kw.attrs   ? &attrs
                       : name == g_kw.prefer  ? &prefer
                                              : nullptr;
      if (dst != nullptr) *dst = value;
      else if (PyUnicode_CompareWithASCIIString(name, "call_id") == 0) call_id = value;
      else if (PyUnicode_CompareWithASCIIString(name, "key") == 0) key = value;
      else if (PyUnicode_CompareWithASCIIString(name, "exclude") == 0) exclude = value;
      else if (PyUnicode_CompareWithASCIIString(name, "attrs") == 0) attrs = value;
      else if (PyUnicode_CompareWithASCIIString(name, "prefer") == 0) prefer = value;
      else {
        PyErr_Format(PyExc_TypeError, "route() got an unexpected keyword argument '%U'", name);
        return nullptr;
      }
    }
    if (call_id == nullptr) {
      PyErr_SetString(PyExc_TypeError, "route() missing required keyword argument 'call_id'");
      return nullptr;
    }
    // One request per thread, reused: its strings keep their capacity, so
    // no allocation for the arguments after the first call. A route() from
    // inside a Python strategy's select() (re-entry) gets its own.
    struct Reused {  // one thread_local, so one TLS lookup
      approute::RouteRequest req;
      bool busy = false;
    };
    thread_local Reused reused;
    if (reused.busy) {
      approute::RouteRequest own;
      return RouteWith(self, args[0], call_id, key, prefer, exclude, attrs, own);
    }
    struct Busy {
      bool& flag;
      ~Busy() { flag = false; }
    } busy{reused.busy};
    reused.busy = true;
    return RouteWith(self, args[0], call_id, key, prefer, exclude, attrs, reused.req);
  });
}

PyObject* FastEnd(PyObject* self, PyObject* const* args, Py_ssize_t nargsf, PyObject* kwnames) {
  return Guard([&]() -> PyObject* {
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    PyObject* call_id = nargs == 1 ? args[0] : nullptr;
    if (kwnames != nullptr && PyTuple_GET_SIZE(kwnames) == 1 && nargs == 0 &&
        Kw(PyTuple_GET_ITEM(kwnames, 0), g_kw.call_id, "call_id")) {
      call_id = args[0];
    } else if (kwnames != nullptr && PyTuple_GET_SIZE(kwnames) > 0) {
      PyErr_SetString(PyExc_TypeError, "end() takes one argument, call_id");
      return nullptr;
    }
    if (call_id == nullptr) {
      PyErr_SetString(PyExc_TypeError, "end() takes one argument, call_id");
      return nullptr;
    }
    std::string_view v;
    if (!Utf8(call_id, "call_id", &v)) return nullptr;
    PyRouter& r = RouterOf(self);
    absl::Status st = MaybeNoGil(r, [&] { return r.router->End(v); });
    if (!st.ok()) Raise(st, false);
    Py_RETURN_NONE;
  });
}

PyMethodDef g_route_def = {
    "route", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(FastRoute)), METH_FASTCALL | METH_KEYWORDS,
    "route(app, *, call_id, key=None, prefer=None, exclude=(), attrs=None) -> Decision\n\n"
    "Choose a node for a new call (docs/design.md, \"Routing flow\")."};
PyMethodDef g_end_def = {
    "end", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(FastEnd)), METH_FASTCALL | METH_KEYWORDS,
    "end(call_id) -> None\n\nThe call ended: its counts drop; its affinity enters its grace time."};

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
  g_err.invalid = new_exc("InvalidArgumentError", g_err.base, PyExc_ValueError,
                          "A bad argument; the message names it.");
  g_err.config = new_exc("ConfigError", g_err.invalid, nullptr,
                         "An invalid configuration; the message names source:line:column and key.");
  g_err.not_found = new_exc("NotFoundError", g_err.base, PyExc_LookupError,
                            "Unknown node, call id, app or shared segment.");
  g_err.exhausted = new_exc("ResourceExhaustedError", g_err.base, nullptr,
                            "A table of the state region is full.");
  g_err.precondition = new_exc("FailedPreconditionError", g_err.base, nullptr,
                               "The state is not what the call needs (e.g. a segment of another layout).");
  g_err.exists = new_exc("AlreadyExistsError", g_err.base, nullptr, "The node id is taken.");
  g_err.permission = new_exc("PermissionError", g_err.base, nullptr, "The OS refused access to a segment.");

  g_decision_type = reinterpret_cast<PyTypeObject*>(PyType_FromSpec(&g_decision_spec));
  if (g_decision_type == nullptr) throw py::error_already_set();
  m.add_object("Decision", py::handle(reinterpret_cast<PyObject*>(g_decision_type)));

  py::class_<NodeStatus>(m, "NodeStatus", "A node as the router sees it now (a snapshot).")
      .def_property_readonly("id", [](const NodeStatus& n) { return n.spec.id; })
      .def_property_readonly("uri", [](const NodeStatus& n) { return n.spec.uri; })
      .def_property_readonly("pool", [](const NodeStatus& n) { return n.spec.pool; })
      .def_property_readonly("weight", [](const NodeStatus& n) { return n.spec.weight; })
      .def_property_readonly("priority", [](const NodeStatus& n) { return n.spec.priority; })
      .def_property_readonly("state", [](const NodeStatus& n) { return Str(absl::string_view(
          approute::AdminStateName(n.spec.state).data(), approute::AdminStateName(n.spec.state).size())); })
      .def_property_readonly("health", [](const NodeStatus& n) { return std::string(approute::HealthName(n.health)); })
      .def_property_readonly("capacity", [](const NodeStatus& n) { return n.spec.capacity; })
      .def_property_readonly("attrs", [](const NodeStatus& n) { return n.spec.attrs; })
      .def_property_readonly("sessions", [](const NodeStatus& n) { return n.sessions; },
                             "Live sessions per resource.")
      .def_property_readonly("load", [](const NodeStatus& n) { return n.load; },
                             "Metrics from the last report_load().")
      .def_property_readonly("load_updated", [](const NodeStatus& n) -> py::object {
        if (n.load_updated_ms == 0) return py::none();
        return py::float_(static_cast<double>(n.load_updated_ms) / 1000.0);
      })
      .def_property_readonly("routed_total", [](const NodeStatus& n) { return n.routed_total; })
      .def_property_readonly("quality", [](const NodeStatus& n) { return n.quality; },
                             "Quality figures from the last status report (mos, rtt_ms_p50, ...).")
      .def_property_readonly("origin", [](const NodeStatus& n) { return n.origin; }, "config, api or report.")
      .def_property_readonly("lease_expires", [](const NodeStatus& n) -> py::object {
        if (n.lease_expires_ms == 0) return py::none();
        return py::float_(static_cast<double>(n.lease_expires_ms) / 1000.0);
      }, "Unix time the node's status lease ends (None: no lease).")
      .def_property_readonly("ejected_until", [](const NodeStatus& n) -> py::object {
        if (n.ejected_until_ms == 0) return py::none();
        return py::float_(static_cast<double>(n.ejected_until_ms) / 1000.0);
      }, "Unix time outlier ejection ends (None: not ejected).")
      .def_property_readonly("latency_ewma_ms", [](const NodeStatus& n) { return n.latency_ewma_ms; })
      .def_property_readonly("error_rate", [](const NodeStatus& n) { return n.error_rate; })
      .def("__repr__", [](const NodeStatus& n) {
        int64_t total = 0;
        for (const auto& [r, v] : n.sessions) total += v;
        return "NodeStatus(id='" + n.spec.id + "', uri='" + n.spec.uri + "', pool='" + n.spec.pool +
               "', state='" + std::string(approute::AdminStateName(n.spec.state)) + "', health='" +
               std::string(approute::HealthName(n.health)) + "', sessions=" + std::to_string(total) + ")";
      });

  auto opt_str = [](const std::string& v) -> py::object { return v.empty() ? py::none() : py::object(py::str(v)); };
  py::class_<SessionRow>(m, "SessionInfo", "One live session (a snapshot).")
      .def_property_readonly("call_id", [](const SessionRow& s) { return s.row.call_id; })
      .def_property_readonly("app", [](const SessionRow& s) { return s.row.app; })
      .def_property_readonly("node_id", [opt_str](const SessionRow& s) { return opt_str(s.row.node_id); },
                             "None while a retry is choosing, or when its node was removed.")
      .def_property_readonly("key", [opt_str](const SessionRow& s) { return opt_str(s.row.key); },
                             "The affinity key whose claim it holds, or None.")
      .def_property_readonly("age", [](const SessionRow& s) {
        return static_cast<double>(s.now_ms - s.row.created_ms) / 1000.0;
      }, "Seconds since it was routed (when it was listed).")
      .def_property_readonly("expires_in", [](const SessionRow& s) {
        return static_cast<double>(s.row.expires_ms - s.now_ms) / 1000.0;
      }, "Seconds until its lifetime ends if it is never ended.")
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
      .def_property_readonly("sessions", [](const AffinityRow& a) { return a.row.sessions; },
                             "Live sessions holding the claim.")
      .def_property_readonly("grace_left", [](const AffinityRow& a) -> py::object {
        if (a.row.expires_ms == 0) return py::none();
        return py::float_(std::max(0.0, static_cast<double>(a.row.expires_ms - a.now_ms) / 1000.0));
      }, "Seconds of grace time left; None while sessions hold it.")
      .def("__repr__", [](const AffinityRow& a) {
        return "AffinityInfo(app='" + a.row.app + "', key='" + a.row.key + "', node_id='" + a.row.node_id +
               "', sessions=" + std::to_string(a.row.sessions) + ")";
      });

  py::class_<approute::ReportResult>(m, "ReportResult", "The outcome of a status report, as a SIP response.")
      .def_property_readonly("code", [](const approute::ReportResult& r) { return r.code; },
                             "200, 400 (malformed), 403 (refused), 412 (unknown entity tag) or 503 (no room).")
      .def_property_readonly("reason", [](const approute::ReportResult& r) { return r.reason; })
      .def_property_readonly("etag", [](const approute::ReportResult& r) { return r.etag; })
      .def_property_readonly("node_id", [](const approute::ReportResult& r) { return r.node_id; })
      .def_property_readonly("expires", [](const approute::ReportResult& r) { return r.expires; })
      .def("__repr__", [](const approute::ReportResult& r) {
        return "ReportResult(code=" + std::to_string(r.code) + ", reason='" + r.reason + "', etag='" + r.etag +
               "', node_id='" + r.node_id + "', expires=" + std::to_string(r.expires) + ")";
      });

  py::class_<PyRouter, std::shared_ptr<PyRouter>> router_cls(m, "Router", "Routes calls to nodes; see docs/design.md, \"Public contract\".");
  g_router_type = reinterpret_cast<PyTypeObject*>(router_cls.ptr());
  router_cls
      .def_static("from_yaml", [](const std::string& text, std::optional<std::string> shared,
                                  std::optional<std::map<std::string, py::object>> strategies,
                                  std::optional<uint64_t> seed) {
            return Make([&](approute::RouterOptions o) { return approute::Router::FromYaml(text, std::move(o)); },
                        shared, true, strategies, seed);
          }, py::arg("text"), py::kw_only(), py::arg("shared") = py::none(),
          py::arg("strategies") = py::none(), py::arg("seed") = py::none(),
          "Build a router from YAML text. shared: a segment name to create or attach (all "
          "processes using the name share one state); None for private state. strategies: "
          "{name: approute.Strategy} this router's configuration may name. seed: reproducible "
          "random choices (tests, simulations).")
      .def_static("from_file", [](const std::string& path, std::optional<std::string> shared,
                                  std::optional<std::map<std::string, py::object>> strategies,
                                  std::optional<uint64_t> seed) {
            return Make([&](approute::RouterOptions o) { return approute::Router::FromFile(path, std::move(o)); },
                        shared, true, strategies, seed);
          }, py::arg("path"), py::kw_only(), py::arg("shared") = py::none(),
          py::arg("strategies") = py::none(), py::arg("seed") = py::none(),
          "Build a router from a YAML file; errors name the file and line.")
      .def_static("attach", [](const std::string& shared) {
            return Make([&](approute::RouterOptions o) { return approute::Router::Attach(shared, std::move(o)); },
                        shared, false);
          }, py::arg("shared"), "Attach the state (and stored configuration) of a running router.")
      .def_static("unlink", [](const std::string& shared) { return Take(approute::Router::Unlink(shared)); },
                  py::arg("shared"), "Remove a shared segment's name; False if there was none.")
      .def("retry", [](PyRouter& self, const std::string& call_id, int code) {
            absl::StatusOr<Decision> d;
            {
              py::gil_scoped_release nogil;
              d = self.router->Retry(call_id, code);
            }
            return py::reinterpret_steal<py::object>(MakeDecision(Take(std::move(d))));
          }, py::arg("call_id"), py::kw_only(), py::arg("code") = 503,
          "The call's node bounced it with `code`: pick a node never tried for this call.")
      .def("confirm", [](PyRouter& self, const std::string& call_id) {
            CallNoGil([&] { return self.router->Confirm(call_id); });
          }, py::arg("call_id"), "The call was answered: its claim on the key is a real one.")
      .def("abandon", [](PyRouter& self, const std::string& call_id) {
            CallNoGil([&] { return self.router->Abandon(call_id); });
          }, py::arg("call_id"),
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
      .def("remove_node", [](PyRouter& self, const std::string& id) {
            CallNoGil([&] { return self.router->RemoveNode(id); });
          }, py::arg("id"))
      .def("set_state", [](PyRouter& self, const std::string& id, const std::string& state) {
            approute::AdminState st = State(state);
            CallNoGil([&] { return self.router->SetState(id, st); });
          }, py::arg("id"), py::arg("state"), "active | draining | disabled")
      .def("drain", [](PyRouter& self, const std::string& id, std::optional<double> deadline) {
            std::optional<int64_t> ms;
            if (deadline) {
              if (!std::isfinite(*deadline) || *deadline < 0) {
                Raise(absl::InvalidArgumentError("drain deadline must be a finite number of seconds >= 0, got " +
                                                 py::repr(py::float_(*deadline)).cast<std::string>()));
              }
              ms = static_cast<int64_t>(std::llround(*deadline * 1000.0));
            }
            CallNoGil([&] { return self.router->Drain(id, ms); });
          }, py::arg("id"), py::arg("deadline") = py::none(),
          "Drain a node: no new keys; a key whose last session ends is released at once. After\n"
          "`deadline` seconds (None: never) its keys' new calls go elsewhere, so it empties within\n"
          "the deadline plus its longest call.")
      .def("set_health", [](PyRouter& self, const std::string& id, const std::string& health) {
            approute::Health h = Take(approute::ParseHealth(health));
            CallNoGil([&] { return self.router->SetHealth(id, h); });
          }, py::arg("id"), py::arg("health"), "up | suspect | down")
      .def("report_load", [](PyRouter& self, const std::string& id, const py::kwargs& metrics) {
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
          }, py::arg("id"), "Record a node's load, e.g. report_load('ast1', cpu=0.4, channels=120).")
      .def("apply_report", [](PyRouter& self, std::string body, int64_t expires, std::string source,
                              std::optional<std::string> auth, std::optional<std::string> if_match) {
            approute::ReportRequest req;
            req.body = std::move(body);
            req.expires = expires;
            req.source = std::move(source);
            if (auth) req.auth = *auth;
            if (if_match) req.if_match = *if_match;
            py::gil_scoped_release nogil;
            return self.router->ApplyReport(req);
          }, py::arg("body"), py::kw_only(), py::arg("expires"), py::arg("source"),
          py::arg("auth") = py::none(), py::arg("if_match") = py::none(),
          "Apply a status report (SIP PUBLISH, Event: approute-status). Returns the SIP outcome; "
          "anything but 200 changed nothing.")
      .def("report_probe", [](PyRouter& self, const std::string& id, int code, double rtt_ms) {
            CallNoGil([&] { return self.router->ReportProbe(id, code, rtt_ms); });
          }, py::arg("id"), py::arg("code"), py::arg("rtt_ms") = 0.0,
          "An OPTIONS probe's result: code 0 = no answer.")
      .def("report_result", [](PyRouter& self, const std::string& id, int code, double latency_ms) {
            CallNoGil([&] { return self.router->ReportCallResult(id, code, latency_ms); });
          }, py::arg("id"), py::arg("code"), py::arg("latency_ms") = 0.0,
          "A final response (or 0 for a timeout) the proxy saw from a node: outlier detection, latency.")
      .def("node", [](PyRouter& self, const std::string& id) {
            absl::StatusOr<NodeStatus> n;
            {
              py::gil_scoped_release nogil;
              n = self.router->Node(id);
            }
            return Take(std::move(n));
          }, py::arg("id"))
      .def("nodes", [](PyRouter& self) {
            py::gil_scoped_release nogil;
            return self.router->Nodes();
          })
      .def("stats", [](PyRouter& self) {
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
            py::dict buckets;
            for (const auto& [le, n] : s.route_seconds.buckets) buckets[py::float_(le)] = n;
            py::dict hist;
            hist["buckets"] = buckets;
            hist["sum"] = s.route_seconds.sum;
            hist["count"] = s.route_seconds.count;
            d["route_seconds"] = hist;
            return d;
          }, "Router-wide counts: nodes, sessions, affinities, capacities, expired_sessions, "
             "processes (live, registered), repairs and repaired_counts (recounts after a process died "
             "inside a state change), decisions {app: {reason: n}}, retries {app: {code: n}} and "
             "route_seconds (a sampled histogram: buckets {upper bound: cumulative count}, sum, count).")
      .def("cluster", [](PyRouter& self) {
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
            return d;
          }, "The state shared with the deployment's other proxies (cluster: in the YAML): mode "
             "(local, cluster, degraded), name, proxy, proxies (live, asks Redis), last_sync_ms, "
             "degraded_placements, outage_refusals (past the outage share), round_trips, failures, "
             "rtt_p50_us and rtt_p99_us (this host).")
      .def("sessions", [](PyRouter& self, std::optional<std::string> node, std::optional<std::string> app,
                          std::optional<int64_t> limit) {
            return List(self, Filter(app, node, limit), &approute::Router::Sessions);
          }, py::kw_only(), py::arg("node") = py::none(), py::arg("app") = py::none(), py::arg("limit") = py::none(),
          "Live sessions (optionally of one node or app, at most limit): a list of SessionInfo.")
      .def("affinities", [](PyRouter& self, std::optional<std::string> app, std::optional<std::string> node,
                            std::optional<int64_t> limit) {
            return List(self, Filter(app, node, limit), &approute::Router::Affinities);
          }, py::kw_only(), py::arg("app") = py::none(), py::arg("node") = py::none(), py::arg("limit") = py::none(),
          "Affinity claims (optionally of one app or node, at most limit): a list of AffinityInfo.")
      .def("reload", [](PyRouter& self, const std::string& text) {
            CallNoGil([&] { return self.router->Reload(text); }, /*config=*/true);
          }, py::arg("text"), "Apply a new YAML configuration; sessions of remaining nodes are kept.")
      .def("sweep", [](PyRouter& self) {
            py::gil_scoped_release nogil;
            return self.router->Sweep();
          }, "Expire sessions past their lifetime and affinities past their grace; returns sessions expired.")
      .def_property_readonly("shared", [](const PyRouter& self) -> py::object {
            const std::string& n = self.router->shared_name();
            if (n.empty()) return py::none();
            return py::str(n.substr(1));
          }, "The shared segment's name, or None for private state.")
      .def("register_strategy", [](PyRouter& self, const std::string& name, py::object strategy,
                                   const std::string& fallback) {
            self.strategies->Register(name, std::move(strategy), fallback);
          }, py::arg("name"), py::arg("strategy"), py::kw_only(), py::arg("fallback") = "",
          "Make an approute.Strategy instance available to this router's configuration as "
          "`name` (then reload() a configuration naming it). This process only; other "
          "processes use strategy: \"python:module:Class\".")
      .def("_simulate", [](PyRouter& self, const py::dict& spec, py::object progress) {
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
              r = approute::Simulate(*self.router, s, [&clock](int64_t ms) { clock->store(ms, std::memory_order_relaxed); }, cb);
            }
            if (PyErr_Occurred()) throw py::error_already_set();
            return SimResultDict(Take(std::move(r)));
          }, py::arg("spec"), py::arg("progress") = py::none(),
          "Internal (approute.simulate): replay a workload on this router's virtual clock.")
      .def("_set_time", [](PyRouter& self, double seconds) {
            self.fake_ms->store(static_cast<int64_t>(seconds * 1000.0));
          }, py::arg("seconds"), "Test hook: freeze this router's clock at `seconds` (unix time).")
      .def("_clear_time", [](PyRouter& self) { self.fake_ms->store(-1); }, "Test hook: back to the real clock.");

  for (auto [slot, name] : {std::pair{&g_kw.call_id, "call_id"}, std::pair{&g_kw.key, "key"},
                             std::pair{&g_kw.exclude, "exclude"}, std::pair{&g_kw.attrs, "attrs"},
                             std::pair{&g_kw.prefer, "prefer"}}) {
    *slot = PyUnicode_InternFromString(name);  // kept for the life of the process
    if (*slot == nullptr) throw py::error_already_set();
  }
  {
    PyObject* type = m.attr("Router").ptr();
    for (PyMethodDef* def : {&g_route_def, &g_end_def}) {
      PyObject* descr = PyDescr_NewMethod(reinterpret_cast<PyTypeObject*>(type), def);
      if (descr == nullptr || PyObject_SetAttrString(type, def->ml_name, descr) != 0) throw py::error_already_set();
      Py_DECREF(descr);
    }
  }

  m.def("sign_report", [](const std::string& body, const std::string& keyid, const std::string& secret,
                          const std::string& node, const std::string& etag, int64_t expires,
                          std::optional<int64_t> ts) {
        int64_t t = ts ? *ts : RealNowMs() / 1000;
        return approute::SignReport(body, keyid, secret, t, node, etag, expires);
      }, py::arg("body"), py::kw_only(), py::arg("keyid"), py::arg("secret"), py::arg("node"),
      py::arg("etag") = "", py::arg("expires") = 3600, py::arg("ts") = py::none(),
      "The X-Approute-Auth header value for a status report: keyid=K,ts=T,sig=HMAC-SHA256 hex over "
      "ts, node, etag (SIP-If-Match), expires and body. approute.sign_report fills node from the body.");
  approute_py::BindStrategies(m);
  m.def("strategies", &approute::StrategyNames, "Names of the built-in and registered strategies.");
  m.def("strategy_request_attrs", [](const std::string& name, const approute::StrategyParams& options) {
        absl::StatusOr<std::vector<std::string>> attrs = approute::StrategyRequestAttrs(name, options);
        Check(attrs.status());
        return *attrs;
      }, py::arg("name"), py::arg("options") = approute::StrategyParams{},
      "The route() attributes (attrs keys) the strategy `name` with `options` (values as YAML scalar "
      "text) may read: [] for none, ['*'] for any (Python strategies). InvalidArgumentError when "
      "the name or an option is unknown.");
  m.def("validate_config", [](const std::string& text, const std::string& source) {
        Check(approute::ParseConfig(text, source).status(), true);
      }, py::arg("text"), py::arg("source") = "<yaml>",
      "Raise ConfigError (with source:line:column and key) if `text` is not a valid configuration.");
}
