// Strategies written in Python: approute.Strategy (a pybind11 trampoline with
// py::smart_holder), the read-only views select() receives, and the resolver
// a router consults for "python:module:Class" names and register_strategy().
//
// GIL: route()/end() release the GIL once the resolver made a strategy
// (MadeAny), so the core calls Pick() with the GIL released; the adapter takes it only
// around the Python call. Python objects held by C++ are released with the
// GIL, or leaked on purpose once the interpreter is finalizing.
#ifndef APPROUTE_BINDINGS_PY_STRATEGY_H_
#define APPROUTE_BINDINGS_PY_STRATEGY_H_

#include <pybind11/pybind11.h>

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "approute/strategy.h"

namespace approute_py {

namespace py = pybind11;

// The C++ face of approute.Strategy.
class PyStrategyBase {
 public:
  virtual ~PyStrategyBase() = default;
  virtual py::object select(py::object request, py::list candidates) = 0;
};

// Resolves python: names (importing the module in this process) and the
// names registered on one router.
class PyResolver final : public approute::StrategyResolver {
 public:
  ~PyResolver() override;
  bool Knows(std::string_view name) const override;
  absl::StatusOr<std::unique_ptr<approute::Strategy>> Make(std::string_view name,
                                                           const approute::StrategyParams& params,
                                                           bool strict) override;
  // Registers `obj` (an approute.Strategy) under `name`; raises on a taken or bad name.
  void Register(const std::string& name, py::object obj, const std::string& fallback);
  // Whether a strategy that may call into Python was ever made: until then
  // routing never needs the GIL released.
  bool MadeAny() const { return made_.load(std::memory_order_acquire); }

 private:
  struct Entry {
    std::shared_ptr<PyStrategyBase> obj;
    std::string fallback;
  };
  mutable std::mutex mu_;
  std::map<std::string, Entry, std::less<>> registered_;
  std::atomic<bool> made_{false};
};

// Adds Strategy, Candidate and StrategyRequest to the module.
void BindStrategies(py::module_& m);

}  // namespace approute_py

#endif  // APPROUTE_BINDINGS_PY_STRATEGY_H_
