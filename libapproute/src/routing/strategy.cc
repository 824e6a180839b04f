// The strategy registry and the small shared helpers of strategies.
#include "approute/strategy.h"

#include <algorithm>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "routing/compact_pick.h"
#include "routing/strategies/strategies.h"
#include "util/str_util.h"

namespace approute {

using internal::Cat;
using internal::Join;
namespace {

struct Registry {
  std::mutex mu;
  std::map<std::string, StrategyFactory, std::less<>> factories;
  Registry() {
    factories["round_robin"] = internal::MakeRoundRobin;
    factories["weighted_round_robin"] = internal::MakeWeightedRoundRobin;
    factories["random"] = internal::MakeRandom;
    factories["weighted_random"] = internal::MakeWeightedRandom;
    factories["priority"] = internal::MakePriority;
    factories["hash"] = internal::MakeHash;
    factories["least_loaded"] = internal::MakeLeastLoaded;
    factories["p2c"] = internal::MakeP2C;
    factories["utilization"] = internal::MakeUtilization;
    factories["latency"] = internal::MakeLatency;
    factories["consistent_bounded"] = internal::MakeConsistentBounded;
  }
};

Registry& GetRegistry() {
  static Registry* r = new Registry();
  return *r;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Strategy>> MakeStrategy(std::string_view name, const StrategyParams& params) {
  Registry& r = GetRegistry();
  StrategyFactory f;
  {
    std::lock_guard lock(r.mu);
    auto it = r.factories.find(name);
    if (it == r.factories.end()) {
      std::vector<std::string> names;
      for (const auto& [n, _] : r.factories) names.push_back(n);
      return absl::InvalidArgumentError(Cat("unknown strategy \"", name, "\" (known: ", Join(names, ", "), ")"));
    }
    f = it->second;
  }
  return f(params);
}

absl::Status RegisterStrategy(std::string name, StrategyFactory factory) {
  Registry& r = GetRegistry();
  std::lock_guard lock(r.mu);
  if (name.empty()) return absl::InvalidArgumentError("strategy name is empty");
  if (r.factories.count(name)) {
    return absl::AlreadyExistsError(Cat("strategy \"", name, "\" is already registered"));
  }
  r.factories[std::move(name)] = std::move(factory);
  return absl::OkStatus();
}

std::vector<std::string> StrategyNames() {
  Registry& r = GetRegistry();
  std::lock_guard lock(r.mu);
  std::vector<std::string> names;
  for (const auto& [n, _] : r.factories) names.push_back(n);
  return names;
}

bool StrategyContext::Reported(std::string_view) { return true; }

NodeStatus StrategyContext::Describe(const Candidate& c) {
  NodeStatus st;
  st.spec.id = std::string(c.id);
  st.spec.uri = std::string(c.uri);
  st.spec.weight = c.weight;
  st.spec.priority = c.priority;
  if (c.attrs != nullptr) st.spec.attrs = *c.attrs;
  return st;
}

bool IsPythonStrategyName(std::string_view name) {
  return name.substr(0, kPythonStrategyPrefix.size()) == kPythonStrategyPrefix;
}

namespace {
// A dotted Python name: identifiers of [A-Za-z_][A-Za-z0-9_]* joined by '.'.
bool DottedIdentifier(std::string_view s) {
  if (s.empty()) return false;
  bool start = true;
  for (char ch : s) {
    bool alpha = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_';
    bool digit = ch >= '0' && ch <= '9';
    if (ch == '.') {
      if (start) return false;
      start = true;
    } else if (alpha || (digit && !start)) {
      start = false;
    } else {
      return false;
    }
  }
  return !start;
}
}  // namespace

absl::Status CheckPythonStrategyName(std::string_view name) {
  std::string_view rest = name.substr(std::min(name.size(), kPythonStrategyPrefix.size()));
  size_t colon = rest.find(':');
  if (!IsPythonStrategyName(name) || colon == std::string_view::npos || !DottedIdentifier(rest.substr(0, colon)) ||
      !DottedIdentifier(rest.substr(colon + 1))) {
    return absl::InvalidArgumentError(
        Cat("Python strategy \"", name, "\" must look like python:package.module:ClassName"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Strategy>> MakeStrategyWith(StrategyResolver* resolver, std::string_view name,
                                                           const StrategyParams& params, bool strict) {
  if (resolver != nullptr && resolver->Knows(name)) return resolver->Make(name, params, strict);
  if (IsPythonStrategyName(name)) {
    if (absl::Status s = CheckPythonStrategyName(name); !s.ok()) return s;
    return absl::FailedPreconditionError(Cat("strategy ", name,
                                             " is written in Python: only routers made by the approute Python "
                                             "package (approute.Router) can load it"));
  }
  return MakeStrategy(name, params);
}

absl::StatusOr<std::vector<std::string>> StrategyRequestAttrs(std::string_view name, const StrategyParams& params) {
  if (IsPythonStrategyName(name)) {
    if (absl::Status s = CheckPythonStrategyName(name); !s.ok()) return s;
    return std::vector<std::string>{std::string(kAnyRequestAttr)};
  }
  absl::StatusOr<std::unique_ptr<Strategy>> strategy = MakeStrategy(name, params);
  if (!strategy.ok()) return strategy.status();
  return (*strategy)->RequestAttrs();
}

namespace internal {

absl::Status CheckParams(std::string_view strategy, const StrategyParams& params,
                         std::initializer_list<std::string_view> allowed) {
  for (const auto& [k, v] : params) {
    if (std::find(allowed.begin(), allowed.end(), k) == allowed.end()) {
      return absl::InvalidArgumentError(
          Cat("strategy ", strategy, " has no option \"", k, "\"",
              allowed.size() ? Cat(" (options: ", Join(allowed, ", "), ")") : std::string(" (it takes none)")));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<HashInput> HashInput::Parse(std::string_view strategy, const StrategyParams& params,
                                           std::string_view default_by) {
  std::string by(default_by);
  if (auto it = params.find("by"); it != params.end()) by = it->second;
  HashInput in;
  if (by == "key") {
    in.by_key_ = true;
  } else if (by == "from" || by == "to" || by == "ruri_user") {
    in.attr_ = by;
  } else if (by.rfind("attr:", 0) == 0 && by.size() > 5) {
    in.attr_ = by.substr(5);
  } else if (by != "call_id") {
    return absl::InvalidArgumentError(
        Cat("strategy ", strategy, ": by \"", by, "\" is not one of call_id, key, from, to, ruri_user, attr:NAME"));
  }
  return in;
}

std::string_view HashInput::Of(const PickRequest& request) const {
  if (by_key_) return request.key.empty() ? request.call_id : request.key;
  if (!attr_.empty() && request.attrs != nullptr) {
    auto it = request.attrs->find(attr_);
    if (it != request.attrs->end() && !it->second.empty()) return it->second;
  }
  return request.call_id;
}

std::vector<std::string> HashInput::Attrs() const {
  if (attr_.empty()) return {};
  return {attr_};
}

double RelativeLoad(const Candidate& c) { return RelativeLoadOf(c.sessions, c.capacity); }

}  // namespace internal
}  // namespace approute
