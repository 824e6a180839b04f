// Strategies written in Python (see py_strategy.h).
#include "py_strategy.h"

#include <pybind11/stl.h>

#include <chrono>
#include <optional>
#include <utility>

#include "approute/types.h"

namespace approute_py {
namespace {

bool Finalizing() {
#if PY_VERSION_HEX >= 0x030D0000
  return Py_IsFinalizing();
#else
  return _Py_IsFinalizing();
#endif
}

bool PythonUsable() { return Py_IsInitialized() && !Finalizing(); }

// Drops a reference to a Python object from any thread: with the GIL, or not
// at all (a deliberate leak) once the interpreter is going away.
template <typename T>
void ReleaseWithGil(std::shared_ptr<T>& p) {
  if (!p) return;
  if (!PythonUsable()) {
    new std::shared_ptr<T>(std::move(p));  // never freed: no interpreter to decref into
    return;
  }
  PyGILState_STATE g = PyGILState_Ensure();
  p.reset();
  PyGILState_Release(g);
}

class PyStrategyTrampoline : public PyStrategyBase, public py::trampoline_self_life_support {
 public:
  py::object select(py::object request, py::list candidates) override {
    PYBIND11_OVERRIDE_PURE(py::object, PyStrategyBase, select, request, candidates);
  }
};

// What select() sees of one candidate: a copy, safe to keep.
struct CandidateView {
  std::string id, uri, pool, state, health, resource;
  int32_t weight = 1, priority = 0;
  int64_t used = 0, limit = -1, total = 0;
  std::map<std::string, std::string> attrs;
  std::map<std::string, int64_t> sessions, capacity;
  std::map<std::string, double> load;
  int64_t load_updated_ms = 0;
  uint64_t routed_total = 0;
};

struct RequestView {
  std::string app, resource, call_id, key;
  std::map<std::string, std::string> attrs;
  int attempt = 1;
  int64_t now_ms = 0;
};

CandidateView ViewOf(const approute::Candidate& c, const approute::PickRequest& req, approute::StrategyContext& ctx) {
  approute::NodeStatus st = ctx.Describe(c);
  CandidateView v;
  v.id = std::string(c.id);
  v.uri = std::string(c.uri);
  v.pool = st.spec.pool;
  v.state = std::string(approute::AdminStateName(st.spec.state));
  v.health = std::string(approute::HealthName(st.health));
  v.resource = std::string(req.resource);
  v.weight = c.weight;
  v.priority = c.priority;
  v.used = c.sessions;
  v.limit = c.capacity;
  v.total = c.total_sessions;
  if (c.attrs != nullptr) v.attrs = *c.attrs;
  v.sessions = std::move(st.sessions);
  v.capacity = std::move(st.spec.capacity);
  v.load = std::move(st.load);
  v.load_updated_ms = st.load_updated_ms;
  v.routed_total = st.routed_total;
  return v;
}

std::string Repr(py::handle h) {
  try {
    std::string r = py::repr(h).cast<std::string>();
    return r.size() > 80 ? r.substr(0, 77) + "..." : r;
  } catch (...) {
    return "<unprintable>";
  }
}

// The text of a Python exception with its traceback.
std::string Describe(py::error_already_set& e) {
  try {
    py::object lines = py::module_::import("traceback").attr("format_exception")(e.type(), e.value(), e.trace());
    return py::str("").attr("join")(lines).cast<std::string>();
  } catch (...) {
    return e.what();
  }
}

// The REFUSE sentinel: select() returns it to refuse the call (no node).
struct RefuseMarker {};

py::object*& RefuseSlot() {
  static py::object* refuse = nullptr;  // set once, with the GIL, in BindStrategies; never freed
  return refuse;
}
py::object& Refuse() { return *RefuseSlot(); }

// An approute::Strategy that asks a Python object, and falls back to a
// built-in when the object fails.
class PyStrategyAdapter final : public approute::Strategy {
 public:
  PyStrategyAdapter(std::string name, std::shared_ptr<PyStrategyBase> obj, std::unique_ptr<approute::Strategy> fallback,
                    std::string fallback_name, std::string load_error, double log_interval)
      : name_(std::move(name)),
        obj_(std::move(obj)),
        fallback_(std::move(fallback)),
        fallback_name_(std::move(fallback_name)),
        load_error_(std::move(load_error)),
        log_interval_(log_interval) {}
  ~PyStrategyAdapter() override { ReleaseWithGil(obj_); }

  absl::StatusOr<size_t> Pick(const approute::PickRequest& req, absl::Span<const approute::Candidate> cands,
                              approute::StrategyContext& ctx) override {
    std::optional<size_t> chosen;
    bool refused = false;
    if (PythonUsable() && (obj_ || !load_error_.empty())) {
      PyGILState_STATE g = PyGILState_Ensure();
      if (obj_) {
        chosen = Ask(req, cands, ctx, &refused);
      } else {
        Report("could not be loaded: " + load_error_);
      }
      PyGILState_Release(g);
    }
    if (refused) return absl::UnavailableError("select() refused the call (returned approute.REFUSE)");
    if (chosen) return *chosen;
    return fallback_->Pick(req, cands, ctx);
  }

 private:
  // GIL held. The index select() chose, or nothing (fall back; *refused:
  // select() returned REFUSE, no node at all).
  std::optional<size_t> Ask(const approute::PickRequest& req, absl::Span<const approute::Candidate> cands,
                            approute::StrategyContext& ctx, bool* refused) {
    std::string error;
    try {
      RequestView rv;
      rv.app = std::string(req.app);
      rv.resource = std::string(req.resource);
      rv.call_id = std::string(req.call_id);
      rv.key = std::string(req.key);
      if (req.attrs != nullptr) rv.attrs = *req.attrs;
      rv.attempt = req.attempt;
      rv.now_ms = ctx.NowMs();
      py::list views;
      for (const approute::Candidate& c : cands) views.append(py::cast(ViewOf(c, req, ctx)));
      py::object r = obj_->select(py::cast(std::move(rv)), views);
      if (r.is_none()) return std::nullopt;  // no preference: the fallback picks
      if (r.ptr() == Refuse().ptr()) {
        *refused = true;
        return std::nullopt;
      }
      if (!py::isinstance<py::str>(r)) {
        error = "select() returned " + Repr(r) + ", expected a node id (str), None or approute.REFUSE";
      } else {
        std::string id = r.cast<std::string>();
        for (size_t i = 0; i < cands.size(); ++i) {
          if (cands[i].id == id) return i;
        }
        std::string ids;
        for (size_t i = 0; i < cands.size() && i < 8; ++i) ids += (i ? ", " : "") + std::string(cands[i].id);
        if (cands.size() > 8) ids += ", ...";
        error = "select() returned \"" + id + "\", which is not a candidate (candidates: " + ids + ")";
      }
    } catch (py::error_already_set& e) {
      error = "select() raised " + Describe(e);
    } catch (const std::exception& e) {
      error = std::string("select() failed: ") + e.what();
    }
    Report(error);
    return std::nullopt;
  }

  // GIL held. Logs the error unless one was logged less than log_interval_ ago.
  void Report(const std::string& error) {
    ++errors_;
    ++unreported_;
    double now = std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
    if (last_log_ >= 0 && now - last_log_ < log_interval_) return;
    std::string msg = "strategy " + name_ + " " + error;
    while (!msg.empty() && msg.back() == '\n') msg.pop_back();
    msg += "\n(falling back to " + fallback_name_ + "; " + std::to_string(unreported_) +
           " error(s) since the last report, " + std::to_string(errors_) + " in all)";
    try {
      py::module_::import("logging").attr("getLogger")("approute").attr("error")(msg);
    } catch (py::error_already_set&) {
      // logging itself failed: nothing sensible left to do
    }
    last_log_ = now;
    unreported_ = 0;
  }

  std::string name_;
  std::shared_ptr<PyStrategyBase> obj_;
  std::unique_ptr<approute::Strategy> fallback_;
  std::string fallback_name_;
  std::string load_error_;
  double log_interval_;
  // Guarded by the GIL.
  double last_log_ = -1;
  int64_t errors_ = 0, unreported_ = 0;
};

// The object of a python: name, or the error's text. GIL held.
std::shared_ptr<PyStrategyBase> Load(std::string_view name, const approute::StrategyParams& params,
                                     std::string* fallback, std::string* error) {
  std::string_view rest = name.substr(approute::kPythonStrategyPrefix.size());
  size_t colon = rest.find(':');
  std::string module(rest.substr(0, colon)), attr(rest.substr(colon + 1));
  try {
    py::object cls = py::module_::import("importlib").attr("import_module")(module);
    size_t start = 0;
    while (true) {
      size_t dot = attr.find('.', start);
      cls = cls.attr(py::str(attr.substr(start, dot == std::string::npos ? std::string::npos : dot - start)));
      if (dot == std::string::npos) break;
      start = dot + 1;
    }
    py::dict kwargs;
    py::object yaml_load = py::none();
    try {
      yaml_load = py::module_::import("yaml").attr("safe_load");
    } catch (py::error_already_set&) {
    }
    for (const auto& [k, v] : params) {
      if (k == "fallback" || k == "log_interval") continue;
      kwargs[py::str(k)] = yaml_load.is_none() ? py::object(py::str(v)) : yaml_load(py::str(v));
    }
    py::object inst = cls(**kwargs);
    if (!py::isinstance<PyStrategyBase>(inst)) {
      *error = std::string(name) + " is not an approute.Strategy subclass (got " + Repr(inst) + ")";
      return nullptr;
    }
    if (fallback->empty() && py::hasattr(inst, "fallback") && py::isinstance<py::str>(inst.attr("fallback"))) {
      *fallback = inst.attr("fallback").cast<std::string>();
    }
    return py::cast<std::shared_ptr<PyStrategyBase>>(inst);
  } catch (py::error_already_set& e) {
    *error = "cannot load " + std::string(name) + ": " + e.what();
    return nullptr;
  }
}

}  // namespace

PyResolver::~PyResolver() {
  std::lock_guard<std::mutex> l(mu_);
  for (auto& [name, e] : registered_) ReleaseWithGil(e.obj);
}

bool PyResolver::Knows(std::string_view name) const {
  if (approute::IsPythonStrategyName(name)) return true;
  std::lock_guard<std::mutex> l(mu_);
  return registered_.find(name) != registered_.end();
}

absl::StatusOr<std::unique_ptr<approute::Strategy>> PyResolver::Make(std::string_view name,
                                                                     const approute::StrategyParams& params,
                                                                     bool strict) {
  made_.store(true, std::memory_order_release);  // from now on route() releases the GIL
  std::string fallback, error;
  double log_interval = 60;
  if (auto it = params.find("fallback"); it != params.end()) fallback = it->second;
  if (auto it = params.find("log_interval"); it != params.end()) {
    char* end = nullptr;
    log_interval = std::strtod(it->second.c_str(), &end);
    if (end == it->second.c_str() || *end != '\0' || !(log_interval >= 0)) {
      return absl::InvalidArgumentError("log_interval must be a number of seconds >= 0, got \"" + it->second + "\"");
    }
  }
  std::shared_ptr<PyStrategyBase> obj;
  if (approute::IsPythonStrategyName(name)) {
    if (absl::Status s = approute::CheckPythonStrategyName(name); !s.ok()) return s;
    if (!PythonUsable()) return absl::FailedPreconditionError("the Python interpreter is not running");
    PyGILState_STATE g = PyGILState_Ensure();
    obj = Load(name, params, &fallback, &error);
    PyGILState_Release(g);
    if (!obj && strict) return absl::InvalidArgumentError(error);
  } else {
    std::lock_guard<std::mutex> l(mu_);
    auto it = registered_.find(name);
    if (it == registered_.end()) return absl::NotFoundError("no strategy registered as \"" + std::string(name) + "\"");
    obj = it->second.obj;  // a copy of the shared_ptr: no Python reference count changes
    if (fallback.empty()) fallback = it->second.fallback;
  }
  if (fallback.empty()) fallback = "round_robin";
  if (approute::IsPythonStrategyName(fallback)) {
    return absl::InvalidArgumentError("fallback must be a built-in strategy, not " + fallback);
  }
  absl::StatusOr<std::unique_ptr<approute::Strategy>> fb = approute::MakeStrategy(fallback, {});
  if (!fb.ok()) {
    if (strict) return absl::InvalidArgumentError("fallback: " + std::string(fb.status().message()));
    error += (error.empty() ? "" : "; ") + std::string("fallback: ") + std::string(fb.status().message());
    fallback = "round_robin";
    fb = approute::MakeStrategy(fallback, {});
  }
  auto adapter = std::make_unique<PyStrategyAdapter>(std::string(name), std::move(obj), *std::move(fb), fallback, error,
                                                     log_interval);
  return std::unique_ptr<approute::Strategy>(std::move(adapter));
}

void PyResolver::Register(const std::string& name, py::object obj, const std::string& fallback) {
  if (name.empty() || approute::IsPythonStrategyName(name)) {
    throw py::value_error("strategy name \"" + name + "\" is empty or starts with python:");
  }
  for (const std::string& b : approute::StrategyNames()) {
    if (b == name) throw py::value_error("\"" + name + "\" is a built-in strategy");
  }
  if (!py::isinstance<PyStrategyBase>(obj)) {
    throw py::type_error("register_strategy() needs an approute.Strategy instance, got " + Repr(obj));
  }
  std::string fb = fallback;
  if (fb.empty() && py::hasattr(obj, "fallback") && py::isinstance<py::str>(obj.attr("fallback"))) {
    fb = obj.attr("fallback").cast<std::string>();
  }
  if (!fb.empty()) {
    absl::StatusOr<std::unique_ptr<approute::Strategy>> s = approute::MakeStrategy(fb, {});
    if (!s.ok()) throw py::value_error("fallback: " + std::string(s.status().message()));
  }
  std::shared_ptr<PyStrategyBase> sp = py::cast<std::shared_ptr<PyStrategyBase>>(obj);
  std::lock_guard<std::mutex> l(mu_);
  if (registered_.count(name)) {
    PyErr_SetString(PyExc_KeyError, ("strategy \"" + name + "\" is already registered on this router").c_str());
    throw py::error_already_set();
  }
  registered_[name] = Entry{std::move(sp), fb};
}

void BindStrategies(py::module_& m) {
  py::class_<PyStrategyBase, PyStrategyTrampoline, py::smart_holder> strategy(m, "Strategy", R"doc(
Base class of strategies written in Python.

Subclass it and implement ``select(request, candidates)``: return the id of
one of ``candidates`` (read-only ``Candidate`` views), None to let the
fallback strategy pick, or ``approute.REFUSE`` to refuse the call: route()
and retry() then answer ok=False, reason "no_node", with no fallback.
On a retry ``request.attrs`` are the original route()'s (as many whole
pairs as fit in 128 bytes). Exceptions, unknown ids and other return values also
fall back, and are logged (logger "approute") at most once per interval.
The class attribute ``fallback`` names the built-in used then ("round_robin").
)doc");
  strategy.def(py::init<>())
      .def("select", &PyStrategyBase::select, py::arg("request"), py::arg("candidates"),
           "Choose a node: return a candidate's id, None for the fallback's choice, or REFUSE for no node.");
  strategy.attr("fallback") = py::str("round_robin");

  py::class_<RefuseMarker>(m, "_Refuse", "The type of approute.REFUSE: select() returns it to refuse a call.")
      .def("__repr__", [](const RefuseMarker&) { return "approute.REFUSE"; });
  if (RefuseSlot() == nullptr) RefuseSlot() = new py::object(py::cast(RefuseMarker{}));
  m.attr("REFUSE") = Refuse();

  py::class_<CandidateView>(m, "Candidate", "A node that may take the call (a read-only copy).")
      .def_readonly("id", &CandidateView::id)
      .def_readonly("uri", &CandidateView::uri)
      .def_readonly("pool", &CandidateView::pool)
      .def_readonly("weight", &CandidateView::weight)
      .def_readonly("priority", &CandidateView::priority)
      .def_readonly("state", &CandidateView::state, "active | draining | disabled")
      .def_readonly("health", &CandidateView::health, "up | suspect | down")
      .def_readonly("resource", &CandidateView::resource, "The app's resource.")
      .def_readonly("used", &CandidateView::used, "Live sessions of the app's resource.")
      .def_property_readonly(
          "limit",
          [](const CandidateView& v) -> py::object {
            return v.limit < 0 ? py::object(py::none()) : py::object(py::int_(v.limit));
          },
          "Capacity for the app's resource, or None when unlimited.")
      .def_property_readonly(
          "free",
          [](const CandidateView& v) -> py::object {
            return v.limit < 0 ? py::object(py::none()) : py::object(py::int_(v.limit - v.used));
          },
          "Room left for the app's resource, or None when unlimited.")
      .def_readonly("total_sessions", &CandidateView::total)
      .def_property_readonly("attrs", [](const CandidateView& v) { return v.attrs; })
      .def_property_readonly(
          "sessions", [](const CandidateView& v) { return v.sessions; }, "Live sessions per resource.")
      .def_property_readonly(
          "capacity", [](const CandidateView& v) { return v.capacity; }, "Capacity per resource (absent = unlimited).")
      .def_property_readonly(
          "load", [](const CandidateView& v) { return v.load; }, "Metrics of the last load report.")
      .def_property_readonly("load_updated",
                             [](const CandidateView& v) -> py::object {
                               if (v.load_updated_ms == 0) return py::none();
                               return py::float_(static_cast<double>(v.load_updated_ms) / 1000.0);
                             })
      .def_readonly("routed_total", &CandidateView::routed_total)
      .def("__repr__", [](const CandidateView& v) {
        return "Candidate(id='" + v.id + "', used=" + std::to_string(v.used) +
               (v.limit >= 0 ? ", limit=" + std::to_string(v.limit) : std::string()) + ")";
      });

  py::class_<RequestView>(m, "StrategyRequest", "What a strategy knows about the call (read-only).")
      .def_readonly("app", &RequestView::app)
      .def_readonly("resource", &RequestView::resource)
      .def_readonly("call_id", &RequestView::call_id)
      .def_property_readonly(
          "key",
          [](const RequestView& r) -> py::object {
            return r.key.empty() ? py::object(py::none()) : py::object(py::str(r.key));
          },
          "The affinity key, or None.")
      .def_property_readonly(
          "attrs", [](const RequestView& r) { return r.attrs; }, "The route() attributes (empty on retry).")
      .def_readonly("attempt", &RequestView::attempt, "1 for the first placement, +1 per retry.")
      .def_property_readonly(
          "now", [](const RequestView& r) { return static_cast<double>(r.now_ms) / 1000.0; },
          "The router's clock, unix seconds (virtual in simulations).")
      .def("__repr__", [](const RequestView& r) {
        return "StrategyRequest(app='" + r.app + "', call_id='" + r.call_id + "', key='" + r.key +
               "', attempt=" + std::to_string(r.attempt) + ")";
      });
}

}  // namespace approute_py
