// fast_route.cc — route(), end() and approute.Decision without pybind11.
//
// Why this file exists: route() and end() run once per SIP request in every
// Kamailio worker, and through pybind11 their binding cost more than the
// routing itself: the generic dispatcher (keyword matching, overload
// resolution, a type lookup to find the C++ router) and a pybind11 class per
// Decision (a registry insert and erase per object). docs/BENCHMARKS.md,
// "Python: route() + end() per call vs. plain Python", has the figures:
// route()+end() from Python cost 2.5x the same policy in plain Python
// through pybind11; this file (with the GIL kept while no Python strategy
// can be called, MayCallPython, and the request reused per thread) took it
// to 1.8x; later work (here: argument parsing, fewer Decision moves; in the
// core: fewer shared writes) to 1.3x, about 0.54 us per call, where the
// binding is still about a tenth of the time. Everything else goes through
// pybind11 (core.cc): keep it that way unless a benchmark shows a per-call
// method is dominated by its binding.
//
// Error contract as core.cc: a core error raises the approute.Error
// subclass (Raise), a bad argument TypeError naming it; no C++ exception
// crosses into Python (Guard).
#include "fast_route.h"

#include <Python.h>

#include <exception>
#include <new>
#include <string>
#include <string_view>
#include <utility>

#include "approute/router.h"
#include "py_router.h"

namespace approute_py {
namespace {

using approute::Decision;

// ---- Decision ----------------------------------------------------------------
// A native type rather than a pybind11 class: one is made per routed call, and
// pybind11's instance bookkeeping (a registry insert and erase per object)
// cost as much as the routing. Attributes are made on access.

struct DecisionObject {
  PyObject_HEAD Decision d;
};
PyTypeObject* g_decision_type = nullptr;

PyObject* NewStr(const std::string& v) {
  return PyUnicode_FromStringAndSize(v.data(), static_cast<Py_ssize_t>(v.size()));
}
PyObject* OptStrObj(const std::string& v) {
  if (v.empty()) Py_RETURN_NONE;
  return NewStr(v);
}
Decision& D(PyObject* self) { return reinterpret_cast<DecisionObject*>(self)->d; }

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
    {"ok", [](PyObject* self, void*) { return PyBool_FromLong(D(self).ok); }, nullptr, "True when a node was chosen.",
     nullptr},
    {"node_id", [](PyObject* self, void*) { return OptStrObj(D(self).node_id); }, nullptr,
     "The chosen node's id, or None.", nullptr},
    {"uri", [](PyObject* self, void*) { return OptStrObj(D(self).uri); }, nullptr,
     "The chosen node's SIP URI, or None.", nullptr},
    {"reason", [](PyObject* self, void*) { return NewStr(D(self).reason); }, nullptr,
     "affinity, affinity_bound, prefer, strategy, retry, session or no_node; not_retryable for retry() "
     "with a code that is not a retry code; for a strict key whose node cannot take the call: key_full, "
     "key_down, key_draining, key_disabled or key_tried.",
     nullptr},
    {"detail", [](PyObject* self, void*) { return NewStr(D(self).detail); }, nullptr,
     "Why no node was chosen (empty when ok).", nullptr},
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

PyType_Slot g_decision_slots[] = {{Py_tp_new, reinterpret_cast<void*>(DecisionNew)},
                                  {Py_tp_dealloc, reinterpret_cast<void*>(DecisionDealloc)},
                                  {Py_tp_repr, reinterpret_cast<void*>(DecisionRepr)},
                                  {Py_tp_getset, g_decision_getset},
                                  {Py_nb_bool, reinterpret_cast<void*>(DecisionBool)},
                                  {Py_tp_doc, const_cast<char*>("What route() or retry() decided.")},
                                  {0, nullptr}};

PyType_Spec g_decision_spec = {"approute.Decision", sizeof(DecisionObject), 0, Py_TPFLAGS_DEFAULT, g_decision_slots};

// ---- route() and end() ------------------------------------------------------
// METH_FASTCALL methods that parse their few arguments directly.

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
      if (dst != nullptr)
        *dst = value;
      else if (PyUnicode_CompareWithASCIIString(name, "call_id") == 0)
        call_id = value;
      else if (PyUnicode_CompareWithASCIIString(name, "key") == 0)
        key = value;
      else if (PyUnicode_CompareWithASCIIString(name, "exclude") == 0)
        exclude = value;
      else if (PyUnicode_CompareWithASCIIString(name, "attrs") == 0)
        attrs = value;
      else if (PyUnicode_CompareWithASCIIString(name, "prefer") == 0)
        prefer = value;
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

PyMethodDef g_route_def = {"route", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(FastRoute)),
                           METH_FASTCALL | METH_KEYWORDS,
                           "route(app, *, call_id, key=None, prefer=None, exclude=(), attrs=None) -> Decision\n\n"
                           "Choose a node for a new call (docs/design.md, \"Routing flow\")."};
PyMethodDef g_end_def = {
    "end", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(FastEnd)), METH_FASTCALL | METH_KEYWORDS,
    "end(call_id) -> None\n\nThe call ended: its counts drop; its affinity enters its grace time."};

}  // namespace

PyObject* MakeDecision(Decision&& d) {
  auto* o = PyObject_New(DecisionObject, g_decision_type);
  if (o == nullptr) throw py::error_already_set();
  new (&o->d) Decision(std::move(d));
  return reinterpret_cast<PyObject*>(o);
}

void AddDecisionType(py::module_& m) {
  g_decision_type = reinterpret_cast<PyTypeObject*>(PyType_FromSpec(&g_decision_spec));
  if (g_decision_type == nullptr) throw py::error_already_set();
  m.add_object("Decision", py::handle(reinterpret_cast<PyObject*>(g_decision_type)));
}

void AddFastMethods(py::handle router_type) {
  g_router_type = reinterpret_cast<PyTypeObject*>(router_type.ptr());
  for (auto [slot, name] :
       {std::pair{&g_kw.call_id, "call_id"}, std::pair{&g_kw.key, "key"}, std::pair{&g_kw.exclude, "exclude"},
        std::pair{&g_kw.attrs, "attrs"}, std::pair{&g_kw.prefer, "prefer"}}) {
    *slot = PyUnicode_InternFromString(name);  // kept for the life of the process
    if (*slot == nullptr) throw py::error_already_set();
  }
  for (PyMethodDef* def : {&g_route_def, &g_end_def}) {
    PyObject* descr = PyDescr_NewMethod(g_router_type, def);
    if (descr == nullptr || PyObject_SetAttrString(router_type.ptr(), def->ml_name, descr) != 0) {
      throw py::error_already_set();
    }
    Py_DECREF(descr);
  }
}

}  // namespace approute_py
