// py_router.h — what the two halves of approute._core share: the Python
// Router's C++ side and the conversion of core errors (core.cc), used by
// the hand-written route()/end() (fast_route.cc).
#ifndef APPROUTE_BINDINGS_PY_ROUTER_H_
#define APPROUTE_BINDINGS_PY_ROUTER_H_

#include <atomic>
#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "approute/router.h"
#include "py_strategy.h"

namespace approute_py {

// The Python-facing router (approute._core.Router): the core router, a test
// clock and the resolver of its Python strategies.
struct PyRouter {
  std::unique_ptr<approute::Router> router;
  std::shared_ptr<std::atomic<int64_t>> fake_ms;  // < 0: real clock
  std::shared_ptr<PyResolver> strategies;         // python: names and register_strategy()
};

// Raises the approute.Error subclass for a core error (ConfigError for an
// InvalidArgument when `config`), carrying the core's message, as
// py::error_already_set. Needs the GIL.
[[noreturn]] void Raise(const absl::Status& s, bool config = false);

}  // namespace approute_py

#endif  // APPROUTE_BINDINGS_PY_ROUTER_H_
