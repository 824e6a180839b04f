// fast_route.h — approute._core's per-call path written against the CPython
// API instead of pybind11: Router.route() and Router.end() as METH_FASTCALL
// methods, and approute.Decision as a native type (fast_route.cc says why).
#ifndef APPROUTE_BINDINGS_FAST_ROUTE_H_
#define APPROUTE_BINDINGS_FAST_ROUTE_H_

#include <pybind11/pybind11.h>

#include "approute/types.h"

namespace approute_py {

namespace py = pybind11;

// Creates approute.Decision and adds it to `m`. Runs once at import, before
// any MakeDecision.
void AddDecisionType(py::module_& m);
// A new approute.Decision holding `d` (a new reference). Throws
// py::error_already_set when Python cannot allocate it.
PyObject* MakeDecision(approute::Decision&& d);
// Installs route() and end() on `router_type`, the pybind11 class of
// PyRouter (py_router.h). Runs once at import, after the class is defined.
void AddFastMethods(py::handle router_type);

}  // namespace approute_py

#endif  // APPROUTE_BINDINGS_FAST_ROUTE_H_
