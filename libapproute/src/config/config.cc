// YAML configuration: parsing with yaml-cpp and validation with positions.
#include "approute/config.h"

#include <yaml-cpp/yaml.h>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <set>
#include <sstream>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "approute/limits.h"
#include "state/region.h"
#include "util/net.h"
#include "util/redis_url.h"
#include "util/str_util.h"

namespace approute {

using internal::Cat;
using internal::Join;
namespace {

// At most this many errors are listed in one message; the rest are counted.
constexpr size_t kMaxReportedErrors = 50;

// Carries the source name, builds "source:line:col: path: message" errors and
// collects them: a step that fails is recorded with Keep() and parsing goes on
// with the next key or list element, so one run reports every error it can
// find, as a compiler does. A step whose input is unusable (not a mapping)
// still returns early; its siblings are parsed all the same.
class Ctx {
 public:
  explicit Ctx(std::string_view source) : source_(source) {}

  // A router's own strategy names (valid in apps.*.strategy), or null.
  const StrategyResolver* resolver = nullptr;

  absl::Status Error(const YAML::Node& at, std::string_view path, std::string_view msg) const {
    YAML::Mark m = at.Mark();
    if (m.is_null()) return absl::InvalidArgumentError(Cat(source_, ": ", path, ": ", msg));
    return absl::InvalidArgumentError(Cat(source_, ":", m.line + 1, ":", m.column + 1, ": ", path, ": ", msg));
  }

  // Records `s` when it failed; true when it did not. The collector is the
  // only thing a parse step changes in the context, hence mutable.
  bool Keep(absl::Status s) const {
    if (s.ok()) return true;
    errors_.push_back(std::move(s));
    return false;
  }
  size_t error_count() const { return errors_.size(); }

  // Runs `parse` on map[key] when the key is present; a failure is recorded.
  template <typename F>
  void Field(const YAML::Node& map, const char* key, F&& parse) const {
    if (const YAML::Node& v = map[key]; v) Keep(parse(v));
  }

  // Every error recorded, in source order (line, then column), one per line;
  // OK when there is none.
  absl::Status Result() const {
    if (errors_.empty()) return absl::OkStatus();
    std::vector<std::pair<std::pair<long, long>, std::string>> sorted;
    for (const absl::Status& e : errors_) {
      std::string msg(e.message());
      sorted.emplace_back(Position(msg), std::move(msg));
    }
    std::stable_sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
    std::string out;
    for (size_t i = 0; i < sorted.size() && i < kMaxReportedErrors; ++i) {
      out += (i ? "\n" : "") + sorted[i].second;
    }
    if (sorted.size() > kMaxReportedErrors) {
      out += Cat("\n", source_, ": ", sorted.size() - kMaxReportedErrors, " more errors not shown");
    }
    return absl::InvalidArgumentError(out);
  }

  // Records an error for every key of `map` not in `allowed`.
  void OnlyKeys(const YAML::Node& map, std::string_view path, std::initializer_list<std::string_view> allowed) const {
    for (const auto& kv : map) {
      std::string k = kv.first.Scalar();
      bool known = false;
      for (auto a : allowed) known = known || a == k;
      if (!known) {
        Keep(Error(kv.first, Cat(path, path.empty() ? "" : ".", k),
                   Cat("unknown key \"", k, "\" (allowed: ", Join(allowed, ", "), ")")));
      }
    }
  }

  absl::Status Map(const YAML::Node& n, std::string_view path) const {
    if (!n.IsMap()) return Error(n, path, "expected a mapping");
    return absl::OkStatus();
  }

  absl::StatusOr<std::string> String(const YAML::Node& n, std::string_view path) const {
    if (!n.IsScalar()) return Error(n, path, "expected a string");
    return n.Scalar();
  }

  absl::StatusOr<int64_t> Int(const YAML::Node& n, std::string_view path, int64_t lo, int64_t hi) const {
    int64_t v = 0;
    if (!n.IsScalar() || !YAML::convert<int64_t>::decode(n, v)) {
      return Error(n, path, Cat("expected an integer, got \"", Text(n), "\""));
    }
    if (v < lo || v > hi) {
      return Error(n, path, Cat("value ", v, " is outside ", lo, "..", hi));
    }
    return v;
  }

  // Seconds (integer or decimal) as milliseconds.
  absl::StatusOr<int64_t> Seconds(const YAML::Node& n, std::string_view path, double lo, double hi) const {
    double v = 0;
    if (!n.IsScalar() || !YAML::convert<double>::decode(n, v) || !std::isfinite(v)) {
      return Error(n, path, Cat("expected a number of seconds, got \"", Text(n), "\""));
    }
    if (v < lo || v > hi) {
      return Error(n, path, Cat("value ", v, " is outside ", lo, "..", hi, " seconds"));
    }
    return static_cast<int64_t>(std::llround(v * 1000.0));
  }

  static std::string Text(const YAML::Node& n) {
    if (n.IsScalar()) return n.Scalar();
    if (n.IsMap()) return "a mapping";
    if (n.IsSequence()) return "a sequence";
    return "null";
  }

 private:
  // (line, column) of a "source:line:col: ..." message; errors without a
  // position sort last.
  std::pair<long, long> Position(std::string_view msg) const {
    constexpr long kNone = 1L << 40;
    if (msg.substr(0, source_.size()) != source_) return {kNone, kNone};
    msg.remove_prefix(source_.size());
    long nums[2] = {kNone, kNone};
    for (long& n : nums) {
      if (msg.empty() || msg[0] != ':' || msg.size() < 2 || msg[1] < '0' || msg[1] > '9') break;
      msg.remove_prefix(1);
      n = 0;
      while (!msg.empty() && msg[0] >= '0' && msg[0] <= '9' && n < kNone) {
        n = n * 10 + (msg[0] - '0');
        msg.remove_prefix(1);
      }
    }
    return {nums[0], nums[1]};
  }

  std::string source_;
  mutable std::vector<absl::Status> errors_;
};

#define AR_ASSIGN(lhs, expr)          \
  do {                                \
    auto _r = (expr);                 \
    if (!_r.ok()) return _r.status(); \
    (lhs) = *std::move(_r);           \
  } while (0)
#define AR_RETURN_IF_ERROR(expr) \
  do {                           \
    absl::Status _s = (expr);    \
    if (!_s.ok()) return _s;     \
  } while (0)

absl::Status ValidName(const Ctx& c, const YAML::Node& at, std::string_view path, std::string_view what,
                       std::string_view v, size_t max) {
  if (v.empty() || v.size() > max) {
    return c.Error(at, path, Cat(what, " must have 1 to ", max, " characters"));
  }
  for (char ch : v) {
    bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_' ||
              ch == '-' || ch == '.' || ch == ':';
    if (!ok) {
      return c.Error(at, path, Cat(what, " \"", v, "\" may only contain letters, digits, '_', '-', '.' and ':'"));
    }
  }
  return absl::OkStatus();
}

absl::Status ParseState(const Ctx& c, const YAML::Node& n, StateLimits* out) {
  AR_RETURN_IF_ERROR(c.Map(n, "state"));
  c.OnlyKeys(n, "state", {"max_nodes", "max_sessions", "max_affinities"});
  c.Field(n, "max_nodes", [&](const YAML::Node& v) -> absl::Status {
    AR_ASSIGN(out->max_nodes, c.Int(v, "state.max_nodes", 1, 65536));
    return absl::OkStatus();
  });
  c.Field(n, "max_sessions", [&](const YAML::Node& v) -> absl::Status {
    AR_ASSIGN(out->max_sessions, c.Int(v, "state.max_sessions", 1, 1 << 24));
    return absl::OkStatus();
  });
  c.Field(n, "max_affinities", [&](const YAML::Node& v) -> absl::Status {
    AR_ASSIGN(out->max_affinities, c.Int(v, "state.max_affinities", 1, 1 << 24));
    return absl::OkStatus();
  });
  return absl::OkStatus();
}

// A node with errors records each of them (its caller leaves the node out).
absl::Status ParseNode(const Ctx& c, const YAML::Node& n, const std::string& path, NodeSpec* out) {
  AR_RETURN_IF_ERROR(c.Map(n, path));
  c.OnlyKeys(n, path, {"id", "uri", "pool", "weight", "priority", "capacity", "attrs", "state"});
  if (!n["id"]) c.Keep(c.Error(n, path, "missing required key \"id\""));
  if (!n["uri"]) c.Keep(c.Error(n, path, "missing required key \"uri\""));
  c.Field(n, "id", [&](const YAML::Node& v) -> absl::Status {
    AR_ASSIGN(out->id, c.String(v, path + ".id"));
    return ValidName(c, v, path + ".id", "node id", out->id, kMaxNodeIdLen);
  });
  c.Field(n, "uri", [&](const YAML::Node& v) -> absl::Status {
    AR_ASSIGN(out->uri, c.String(v, path + ".uri"));
    if (absl::Status s = ValidateSipUri(out->uri); !s.ok()) {
      return c.Error(v, path + ".uri", internal::ToStd(s.message()));
    }
    return absl::OkStatus();
  });
  c.Field(n, "pool", [&](const YAML::Node& v) -> absl::Status {
    AR_ASSIGN(out->pool, c.String(v, path + ".pool"));
    return ValidName(c, v, path + ".pool", "pool", out->pool, kMaxPoolLen);
  });
  c.Field(n, "weight", [&](const YAML::Node& v) -> absl::Status {
    int64_t w;
    AR_ASSIGN(w, c.Int(v, path + ".weight", 0, 1000000));
    out->weight = static_cast<int32_t>(w);
    return absl::OkStatus();
  });
  c.Field(n, "priority", [&](const YAML::Node& v) -> absl::Status {
    int64_t p;
    AR_ASSIGN(p, c.Int(v, path + ".priority", -1000000, 1000000));
    out->priority = static_cast<int32_t>(p);
    return absl::OkStatus();
  });
  c.Field(n, "capacity", [&](const YAML::Node& cap) -> absl::Status {
    AR_RETURN_IF_ERROR(c.Map(cap, path + ".capacity"));
    for (const auto& kv : cap) {
      c.Keep([&]() -> absl::Status {
        std::string res = kv.first.Scalar();
        std::string p = Cat(path, ".capacity.", res);
        AR_RETURN_IF_ERROR(ValidName(c, kv.first, p, "resource", res, 31));
        int64_t v;
        AR_ASSIGN(v, c.Int(kv.second, p, 0, int64_t{1} << 40));
        out->capacity[res] = v;
        return absl::OkStatus();
      }());
    }
    return absl::OkStatus();
  });
  c.Field(n, "attrs", [&](const YAML::Node& attrs) -> absl::Status {
    AR_RETURN_IF_ERROR(c.Map(attrs, path + ".attrs"));
    if (attrs.size() > kMaxAttrs) {
      return c.Error(attrs, path + ".attrs", Cat("at most ", kMaxAttrs, " attributes"));
    }
    for (const auto& kv : attrs) {
      c.Keep([&]() -> absl::Status {
        std::string k = kv.first.Scalar();
        std::string p = Cat(path, ".attrs.", k);
        if (k.empty() || k.size() > 31) return c.Error(kv.first, p, "attribute names have 1 to 31 characters");
        std::string v;
        AR_ASSIGN(v, c.String(kv.second, p));
        if (v.size() > 95) return c.Error(kv.second, p, "attribute values have at most 95 characters");
        out->attrs[k] = v;
        return absl::OkStatus();
      }());
    }
    return absl::OkStatus();
  });
  c.Field(n, "state", [&](const YAML::Node& v) -> absl::Status {
    std::string s;
    AR_ASSIGN(s, c.String(v, path + ".state"));
    absl::StatusOr<AdminState> st = ParseAdminState(s);
    if (!st.ok()) return c.Error(v, path + ".state", internal::ToStd(st.status().message()));
    out->state = *st;
    return absl::OkStatus();
  });
  return absl::OkStatus();
}

absl::Status ParseCodes(const Ctx& c, const YAML::Node& n, const std::string& path, std::vector<int>* out) {
  if (!n.IsSequence()) return c.Error(n, path, "expected a list of SIP status codes");
  out->clear();
  for (size_t i = 0; i < n.size(); ++i) {
    absl::StatusOr<int64_t> v = c.Int(n[i], Cat(path, "[", i, "]"), 300, 699);
    if (c.Keep(v.status())) out->push_back(static_cast<int>(*v));
  }
  return absl::OkStatus();
}

absl::Status ParseStrategy(const Ctx& c, const YAML::Node& s, const std::string& sp, AppConfig* app) {
  if (s.IsScalar()) {
    app->strategy = s.Scalar();
  } else if (s.IsMap()) {
    if (!s["name"]) return c.Error(s, sp, "a strategy mapping needs \"name\"");
    AR_ASSIGN(app->strategy, c.String(s["name"], sp + ".name"));
    const bool python = IsPythonStrategyName(app->strategy);
    for (const auto& kv : s) {
      std::string k = kv.first.Scalar();
      if (k == "name") continue;
      std::string v;
      if (python && !kv.second.IsScalar()) {
        // Options of Python strategies may be any YAML: kept as flow-style text.
        YAML::Emitter out;
        out.SetMapFormat(YAML::Flow);
        out.SetSeqFormat(YAML::Flow);
        out << kv.second;
        v = out.c_str();
      } else {
        AR_ASSIGN(v, c.String(kv.second, Cat(sp, ".", k)));
      }
      app->strategy_params[k] = v;
    }
  } else {
    return c.Error(s, sp, "expected a strategy name or {name: ..., option: value}");
  }
  if (IsPythonStrategyName(app->strategy)) {
    // Resolved by the Python package when the router is built; here only the syntax.
    if (absl::Status st = CheckPythonStrategyName(app->strategy); !st.ok()) {
      return c.Error(s, sp, internal::ToStd(st.message()));
    }
  } else if (c.resolver == nullptr || !c.resolver->Knows(app->strategy)) {
    absl::StatusOr<std::unique_ptr<Strategy>> made = MakeStrategy(app->strategy, app->strategy_params);
    if (!made.ok()) return c.Error(s, sp, internal::ToStd(made.status().message()));
  }
  return absl::OkStatus();
}

absl::Status ParseAffinity(const Ctx& c, const YAML::Node& a, const std::string& ap, AppConfig* app) {
  app->affinity = true;
  if (a.IsNull()) return absl::OkStatus();
  AR_RETURN_IF_ERROR(c.Map(a, ap));
  c.OnlyKeys(a, ap, {"grace", "bound", "strict", "headroom"});
  c.Field(a, "grace", [&](const YAML::Node& v) -> absl::Status {
    AR_ASSIGN(app->affinity_grace_ms, c.Seconds(v, ap + ".grace", 0, 7 * 86400));
    return absl::OkStatus();
  });
  c.Field(a, "bound", [&](const YAML::Node& b) -> absl::Status {
    double v = 0;
    if (!b.IsScalar() || !YAML::convert<double>::decode(b, v) || !std::isfinite(v)) {
      return c.Error(b, ap + ".bound", Cat("expected a number > 1.0, got \"", Ctx::Text(b), "\""));
    }
    if (v <= 1.0 || v > 100.0) {
      return c.Error(
          b, ap + ".bound",
          Cat("value ", v, " must be > 1.0 (and at most 100): a node may take this many times the mean load"));
    }
    app->affinity_bound = v;
    return absl::OkStatus();
  });
  c.Field(a, "strict", [&](const YAML::Node& st) -> absl::Status {
    bool v = false;
    if (!st.IsScalar() || !YAML::convert<bool>::decode(st, v)) {
      return c.Error(st, ap + ".strict", Cat("expected true or false, got \"", Ctx::Text(st), "\""));
    }
    app->affinity_strict = v;
    return absl::OkStatus();
  });
  c.Field(a, "headroom", [&](const YAML::Node& h) -> absl::Status {
    double v = 0;
    if (!h.IsScalar() || !YAML::convert<double>::decode(h, v) || !std::isfinite(v)) {
      return c.Error(h, ap + ".headroom", Cat("expected a number in 0.0..0.99, got \"", Ctx::Text(h), "\""));
    }
    if (v < 0.0 || v >= 1.0) {
      return c.Error(h, ap + ".headroom",
                     Cat("value ", v,
                         " must be at least 0.0 and below 1.0: the share of capacity kept "
                         "for calls of keys a node already holds"));
    }
    app->affinity_headroom = v;
    return absl::OkStatus();
  });
  return absl::OkStatus();
}

// `retry.budget: {percent, min_per_second}`: both optional, percent
// defaulting to 20 and the floor to 3 (Finagle's and Envoy's defaults).
absl::Status ParseRetryBudget(const Ctx& c, const YAML::Node& b, const std::string& bp, AppConfig* app) {
  AR_RETURN_IF_ERROR(c.Map(b, bp));
  c.OnlyKeys(b, bp, {"percent", "min_per_second"});
  app->retry_budget_percent = 20;
  app->retry_budget_min_per_second = 3;
  c.Field(b, "percent", [&](const YAML::Node& v) -> absl::Status {
    double pct = 0;
    if (!v.IsScalar() || !YAML::convert<double>::decode(v, pct) || !std::isfinite(pct) || pct < 0 || pct > 100) {
      return c.Error(v, bp + ".percent", Cat("expected a number in 0..100, got \"", Ctx::Text(v), "\""));
    }
    app->retry_budget_percent = pct;
    return absl::OkStatus();
  });
  c.Field(b, "min_per_second", [&](const YAML::Node& v) -> absl::Status {
    AR_ASSIGN(app->retry_budget_min_per_second, c.Int(v, bp + ".min_per_second", 0, 100000));
    return absl::OkStatus();
  });
  return absl::OkStatus();
}

// `resource: name` or `resource: [name, ...]`: the resources a session of
// the app takes a unit of, the first being the one the strategy reads.
absl::Status ParseResources(const Ctx& c, const YAML::Node& n, const std::string& path, AppConfig* app) {
  std::vector<std::string> names;
  if (n.IsSequence()) {
    if (n.size() == 0) return c.Error(n, path, "expected at least one resource name");
    if (n.size() > kMaxResources) return c.Error(n, path, Cat("at most ", kMaxResources, " resources"));
    for (size_t i = 0; i < n.size(); ++i) {
      const std::string item = Cat(path, "[", i, "]");
      std::string name;
      AR_ASSIGN(name, c.String(n[i], item));
      AR_RETURN_IF_ERROR(ValidName(c, n[i], item, "resource", name, 31));
      if (std::find(names.begin(), names.end(), name) != names.end()) {
        return c.Error(n[i], item, Cat("resource \"", name, "\" is named twice"));
      }
      names.push_back(std::move(name));
    }
  } else {
    std::string name;
    AR_ASSIGN(name, c.String(n, path));
    AR_RETURN_IF_ERROR(ValidName(c, n, path, "resource", name, 31));
    names.push_back(std::move(name));
  }
  app->resource = names.front();
  app->resources = std::move(names);
  return absl::OkStatus();
}

// An app with errors records each of them (its caller leaves the app out).
absl::Status ParseApp(const Ctx& c, const YAML::Node& n, const std::string& path, AppConfig* app) {
  if (n.IsNull()) return absl::OkStatus();  // `default:` with every default
  AR_RETURN_IF_ERROR(c.Map(n, path));
  c.OnlyKeys(n, path, {"pool", "strategy", "resource", "affinity", "retry", "session"});
  c.Field(n, "pool", [&](const YAML::Node& v) -> absl::Status {
    AR_ASSIGN(app->pool, c.String(v, path + ".pool"));
    return ValidName(c, v, path + ".pool", "pool", app->pool, kMaxPoolLen);
  });
  c.Field(n, "resource", [&](const YAML::Node& v) { return ParseResources(c, v, path + ".resource", app); });
  c.Field(n, "strategy", [&](const YAML::Node& s) { return ParseStrategy(c, s, path + ".strategy", app); });
  c.Field(n, "affinity", [&](const YAML::Node& a) { return ParseAffinity(c, a, path + ".affinity", app); });
  bool full_given = false;
  c.Field(n, "retry", [&](const YAML::Node& r) -> absl::Status {
    std::string rp = path + ".retry";
    AR_RETURN_IF_ERROR(c.Map(r, rp));
    c.OnlyKeys(r, rp, {"codes", "full_codes", "max_attempts", "budget"});
    c.Field(r, "codes", [&](const YAML::Node& v) { return ParseCodes(c, v, rp + ".codes", &app->retry_codes); });
    c.Field(r, "full_codes", [&](const YAML::Node& v) {
      full_given = true;
      return ParseCodes(c, v, rp + ".full_codes", &app->full_codes);
    });
    c.Field(r, "max_attempts", [&](const YAML::Node& v) -> absl::Status {
      int64_t m;
      AR_ASSIGN(m, c.Int(v, rp + ".max_attempts", 1, kMaxAttemptsLimit));
      app->max_attempts = static_cast<int>(m);
      return absl::OkStatus();
    });
    c.Field(r, "budget", [&](const YAML::Node& b) { return ParseRetryBudget(c, b, rp + ".budget", app); });
    return absl::OkStatus();
  });
  if (!full_given) app->full_codes = app->retry_codes;
  c.Field(n, "session", [&](const YAML::Node& s) -> absl::Status {
    std::string sp = path + ".session";
    AR_RETURN_IF_ERROR(c.Map(s, sp));
    c.OnlyKeys(s, sp, {"lifetime"});
    c.Field(s, "lifetime", [&](const YAML::Node& v) -> absl::Status {
      AR_ASSIGN(app->session_lifetime_ms, c.Seconds(v, sp + ".lifetime", 1, 30 * 86400));
      return absl::OkStatus();
    });
    return absl::OkStatus();
  });
  return absl::OkStatus();
}

absl::Status ParseCidrList(const Ctx& c, const YAML::Node& n, const std::string& path, std::vector<std::string>* out) {
  if (!n.IsSequence()) return c.Error(n, path, "expected a list of networks, e.g. [\"10.0.0.0/8\"]");
  for (size_t i = 0; i < n.size(); ++i) {
    c.Keep([&]() -> absl::Status {
      std::string p = Cat(path, "[", i, "]");
      std::string v;
      AR_ASSIGN(v, c.String(n[i], p));
      if (absl::Status s = internal::CheckCidr(v); !s.ok()) return c.Error(n[i], p, internal::ToStd(s.message()));
      out->push_back(v);
      return absl::OkStatus();
    }());
  }
  return absl::OkStatus();
}

absl::Status ParseStatusKeys(const Ctx& c, const YAML::Node& k, StatusConfig* out) {
  AR_RETURN_IF_ERROR(c.Map(k, "status.keys"));
  for (const auto& pool : k) {
    std::string pname = pool.first.Scalar();
    std::string pp = Cat("status.keys.", pname);
    if (!c.Keep(ValidName(c, pool.first, pp, "pool", pname, kMaxPoolLen))) continue;
    if (!c.Keep(c.Map(pool.second, pp))) continue;
    for (const auto& kv : pool.second) {
      c.Keep([&]() -> absl::Status {
        std::string id = kv.first.Scalar();
        std::string kp = Cat(pp, ".", id);
        AR_RETURN_IF_ERROR(ValidName(c, kv.first, kp, "key id", id, 31));
        std::string secret;
        AR_ASSIGN(secret, c.String(kv.second, kp));
        if (secret.size() < 16) return c.Error(kv.second, kp, "a secret needs at least 16 characters");
        out->keys[pname][id] = secret;
        return absl::OkStatus();
      }());
    }
  }
  return absl::OkStatus();
}

absl::Status ParseStatus(const Ctx& c, const YAML::Node& n, StatusConfig* out) {
  AR_RETURN_IF_ERROR(c.Map(n, "status"));
  c.OnlyKeys(n, "status", {"allow_sources", "allow_uris", "keys", "replay_window", "max_expires", "usage_max_age"});
  c.Field(n, "allow_sources",
          [&](const YAML::Node& v) { return ParseCidrList(c, v, "status.allow_sources", &out->allow_sources); });
  c.Field(n, "allow_uris",
          [&](const YAML::Node& v) { return ParseCidrList(c, v, "status.allow_uris", &out->allow_uris); });
  c.Field(n, "keys", [&](const YAML::Node& v) { return ParseStatusKeys(c, v, out); });
  c.Field(n, "replay_window", [&](const YAML::Node& v) -> absl::Status {
    AR_ASSIGN(out->replay_window_ms, c.Seconds(v, "status.replay_window", 1, 3600));
    return absl::OkStatus();
  });
  c.Field(n, "max_expires", [&](const YAML::Node& v) -> absl::Status {
    AR_ASSIGN(out->max_expires_s, c.Int(v, "status.max_expires", 1, 86400));
    return absl::OkStatus();
  });
  c.Field(n, "usage_max_age", [&](const YAML::Node& v) -> absl::Status {
    AR_ASSIGN(out->usage_max_age_ms, c.Seconds(v, "status.usage_max_age", 1, 86400));
    return absl::OkStatus();
  });
  return absl::OkStatus();
}

absl::Status ParseCluster(const Ctx& c, const YAML::Node& n, ClusterConfig* out) {
  AR_RETURN_IF_ERROR(c.Map(n, "cluster"));
  c.OnlyKeys(n, "cluster", {"redis", "name", "proxy", "timeout_ms", "outage_headroom", "sentinel_password"});
  out->enabled = true;
  if (!n["redis"]) c.Keep(c.Error(n, "cluster", "missing required key \"redis\" (e.g. redis://127.0.0.1:6379/0)"));
  if (!n["name"])
    c.Keep(c.Error(n, "cluster", "missing required key \"name\" (proxies with the same name share one state)"));
  bool sentinel = false;
  c.Field(n, "redis", [&](const YAML::Node& v) -> absl::Status {
    AR_ASSIGN(out->redis, c.String(v, "cluster.redis"));
    absl::StatusOr<internal::RedisUrl> u = internal::ParseRedisUrl(out->redis);
    if (!u.ok()) return c.Error(v, "cluster.redis", internal::ToStd(u.status().message()));
    sentinel = u->sentinel();
    return absl::OkStatus();
  });
  if (n["sentinel_password"]) {
    c.Field(n, "sentinel_password", [&](const YAML::Node& v) -> absl::Status {
      AR_ASSIGN(out->sentinel_password, c.String(v, "cluster.sentinel_password"));
      if (n["redis"] && !sentinel) {
        return c.Error(v, "cluster.sentinel_password",
                       "needs a redis+sentinel:// address in cluster.redis (the sentinels' own password)");
      }
      if (out->sentinel_password.empty()) return c.Error(v, "cluster.sentinel_password", "is empty");
      return absl::OkStatus();
    });
  }
  c.Field(n, "name", [&](const YAML::Node& v) -> absl::Status {
    AR_ASSIGN(out->name, c.String(v, "cluster.name"));
    return ValidName(c, v, "cluster.name", "deployment name", out->name, 63);
  });
  if (n["proxy"]) {
    c.Field(n, "proxy", [&](const YAML::Node& v) -> absl::Status {
      AR_ASSIGN(out->proxy, c.String(v, "cluster.proxy"));
      return ValidName(c, v, "cluster.proxy", "proxy id", out->proxy, 63);
    });
  } else {
    char host[256] = {0};
    if (gethostname(host, sizeof host - 1) != 0 || host[0] == 0) {
      c.Keep(c.Error(n, "cluster.proxy", "not given and the host name is unknown; set cluster.proxy"));
    } else {
      out->proxy = host;
      if (!ValidName(c, n, "cluster.proxy", "proxy id", out->proxy, 63).ok()) {
        c.Keep(c.Error(
            n, "cluster.proxy",
            Cat("not given and the host name \"", out->proxy, "\" is not a valid proxy id; set cluster.proxy")));
      }
    }
  }
  c.Field(n, "timeout_ms", [&](const YAML::Node& v) -> absl::Status {
    AR_ASSIGN(out->timeout_ms, c.Int(v, "cluster.timeout_ms", 1, 10000));
    return absl::OkStatus();
  });
  c.Field(n, "outage_headroom", [&](const YAML::Node& v) -> absl::Status {
    AR_ASSIGN(out->outage_headroom_pct, c.Int(v, "cluster.outage_headroom", 0, 100));
    return absl::OkStatus();
  });
  return absl::OkStatus();
}

// Sets *dst from m[key] when present (an integer in lo..hi); a failure is recorded.
void IntField(const Ctx& c, const YAML::Node& m, const std::string& path, const char* key, int lo, int hi, int* dst) {
  c.Field(m, key, [&](const YAML::Node& v) -> absl::Status {
    int64_t i;
    AR_ASSIGN(i, c.Int(v, Cat(path, ".", key), lo, hi));
    *dst = static_cast<int>(i);
    return absl::OkStatus();
  });
}

absl::Status ParseOutlier(const Ctx& c, const YAML::Node& o, HealthConfig* out) {
  const std::string op = "health.outlier";
  AR_RETURN_IF_ERROR(c.Map(o, op));
  c.OnlyKeys(o, op, {"consecutive_failures", "base_ejection", "max_ejection", "max_ejected_percent", "failure_codes"});
  IntField(c, o, op, "consecutive_failures", 1, 1000, &out->outlier_consecutive_failures);
  IntField(c, o, op, "max_ejected_percent", 0, 100, &out->outlier_max_ejected_percent);
  c.Field(o, "base_ejection", [&](const YAML::Node& v) -> absl::Status {
    AR_ASSIGN(out->outlier_base_ejection_ms, c.Seconds(v, op + ".base_ejection", 0.001, 86400));
    return absl::OkStatus();
  });
  c.Field(o, "max_ejection", [&](const YAML::Node& v) -> absl::Status {
    AR_ASSIGN(out->outlier_max_ejection_ms, c.Seconds(v, op + ".max_ejection", 0.001, 86400));
    return absl::OkStatus();
  });
  c.Field(o, "failure_codes", [&](const YAML::Node& fc) -> absl::Status {
    if (!fc.IsSequence()) return c.Error(fc, op + ".failure_codes", "expected a list of SIP codes (0 = no answer)");
    out->outlier_failure_codes.clear();
    for (size_t i = 0; i < fc.size(); ++i) {
      absl::StatusOr<int64_t> v = c.Int(fc[i], Cat(op, ".failure_codes[", i, "]"), 0, 699);
      if (c.Keep(v.status())) out->outlier_failure_codes.push_back(static_cast<int>(*v));
    }
    return absl::OkStatus();
  });
  return absl::OkStatus();
}

absl::Status ParseHealth(const Ctx& c, const YAML::Node& n, HealthConfig* out) {
  AR_RETURN_IF_ERROR(c.Map(n, "health"));
  c.OnlyKeys(n, "health", {"probe", "outlier", "panic_threshold", "slow_start", "latency", "busy_for", "busy_max"});
  c.Field(n, "busy_for", [&](const YAML::Node& v) -> absl::Status {
    AR_ASSIGN(out->busy_for_ms, c.Seconds(v, "health.busy_for", 0, 3600));
    return absl::OkStatus();
  });
  c.Field(n, "busy_max", [&](const YAML::Node& v) -> absl::Status {
    AR_ASSIGN(out->busy_max_ms, c.Seconds(v, "health.busy_max", 1, 86400));
    return absl::OkStatus();
  });
  c.Field(n, "probe", [&](const YAML::Node& p) -> absl::Status {
    AR_RETURN_IF_ERROR(c.Map(p, "health.probe"));
    c.OnlyKeys(p, "health.probe", {"down_after", "up_after"});
    IntField(c, p, "health.probe", "down_after", 1, 100, &out->probe_down_after);
    IntField(c, p, "health.probe", "up_after", 1, 100, &out->probe_up_after);
    return absl::OkStatus();
  });
  c.Field(n, "outlier", [&](const YAML::Node& o) { return ParseOutlier(c, o, out); });
  IntField(c, n, "health", "panic_threshold", 0, 100, &out->panic_threshold);
  c.Field(n, "slow_start", [&](const YAML::Node& s) -> absl::Status {
    AR_RETURN_IF_ERROR(c.Map(s, "health.slow_start"));
    c.OnlyKeys(s, "health.slow_start", {"window"});
    c.Field(s, "window", [&](const YAML::Node& v) -> absl::Status {
      AR_ASSIGN(out->slow_start_ms, c.Seconds(v, "health.slow_start.window", 0, 3600));
      return absl::OkStatus();
    });
    return absl::OkStatus();
  });
  c.Field(n, "latency", [&](const YAML::Node& l) -> absl::Status {
    AR_RETURN_IF_ERROR(c.Map(l, "health.latency"));
    c.OnlyKeys(l, "health.latency", {"ewma_alpha"});
    c.Field(l, "ewma_alpha", [&](const YAML::Node& v) -> absl::Status {
      double a = 0;
      if (!v.IsScalar() || !YAML::convert<double>::decode(v, a) || !(a > 0 && a <= 1)) {
        return c.Error(v, "health.latency.ewma_alpha", "expected a number in (0, 1]");
      }
      out->latency_ewma_alpha = a;
      return absl::OkStatus();
    });
    return absl::OkStatus();
  });
  return absl::OkStatus();
}

// yaml-cpp keeps both entries of a repeated mapping key and lookups see only
// the first, so a repeated key would silently lose its second value. Walks the
// whole document (Python strategy options included) and records every second
// occurrence with the key path. Collections reached again through an alias
// are visited once.
void CheckDuplicateKeys(const Ctx& c, const YAML::Node& n, const std::string& path, std::set<size_t>* visited,
                        int depth) {
  if (!n.IsMap() && !n.IsSequence()) return;
  if (depth > 64) {
    c.Keep(c.Error(n, path.empty() ? "(top level)" : path, "nested more than 64 levels deep"));
    return;
  }
  if (YAML::Mark m = n.Mark(); !m.is_null() && !visited->insert(static_cast<size_t>(m.pos)).second) {
    return;
  }
  if (n.IsSequence()) {
    for (size_t i = 0; i < n.size(); ++i) CheckDuplicateKeys(c, n[i], Cat(path, "[", i, "]"), visited, depth + 1);
    return;
  }
  std::map<std::string, YAML::Mark> seen;
  for (const auto& kv : n) {
    std::string key = kv.first.IsScalar() ? kv.first.Scalar() : Ctx::Text(kv.first);
    std::string kp = path.empty() ? key : Cat(path, ".", key);
    if (kv.first.IsScalar()) {
      auto [it, fresh] = seen.emplace(key, kv.first.Mark());
      if (!fresh) {
        c.Keep(c.Error(kv.first, kp,
                       Cat("duplicate key \"", key, "\" (first at line ", it->second.line + 1, ", column ",
                           it->second.column + 1, "); YAML keeps only one of them")));
      }
    }
    CheckDuplicateKeys(c, kv.second, kp, visited, depth + 1);
  }
}

void ParseNodes(const Ctx& c, const YAML::Node& nodes, Config* cfg, std::set<std::string>* resources) {
  if (!nodes.IsSequence()) {
    c.Keep(c.Error(nodes, "nodes", "expected a list of nodes"));
    return;
  }
  std::map<std::string, size_t> seen;
  for (size_t i = 0; i < nodes.size(); ++i) {
    NodeSpec spec;
    std::string path = Cat("nodes[", i, "]");
    const size_t errors = c.error_count();
    c.Keep(ParseNode(c, nodes[i], path, &spec));
    if (c.error_count() != errors) continue;  // reported; left out
    if (auto it = seen.find(spec.id); it != seen.end()) {
      c.Keep(c.Error(nodes[i]["id"], path + ".id",
                     Cat("duplicate node id \"", spec.id, "\" (first at nodes[", it->second, "])")));
      continue;
    }
    seen[spec.id] = i;
    for (const auto& [r, v] : spec.capacity) resources->insert(r);
    cfg->nodes.push_back(std::move(spec));
  }
  if (static_cast<int64_t>(cfg->nodes.size()) > cfg->state.max_nodes) {
    c.Keep(c.Error(nodes, "nodes", Cat(cfg->nodes.size(), " nodes exceed state.max_nodes = ", cfg->state.max_nodes)));
  }
}

absl::Status ParseApps(const Ctx& c, const YAML::Node& apps, Config* cfg, std::set<std::string>* resources) {
  AR_RETURN_IF_ERROR(c.Map(apps, "apps"));
  if (apps.size() > kMaxApps) return c.Error(apps, "apps", Cat("at most ", kMaxApps, " apps"));
  for (const auto& kv : apps) {
    AppConfig app;
    app.name = kv.first.Scalar();
    std::string path = Cat("apps.", app.name);
    const size_t errors = c.error_count();
    c.Keep(ValidName(c, kv.first, path, "app name", app.name, kMaxAppNameLen));
    app.retry_codes = {503};
    c.Keep(ParseApp(c, kv.second, path, &app));
    if (c.error_count() != errors) continue;  // reported; left out
    resources->insert(app.resources.begin(), app.resources.end());
    cfg->apps[app.name] = std::move(app);
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<Config> ParseConfig(std::string_view yaml, std::string_view source) {
  return ParseConfig(yaml, source, nullptr);
}

absl::StatusOr<Config> ParseConfig(std::string_view yaml, std::string_view source, const StrategyResolver* resolver) {
  Ctx c(source);
  c.resolver = resolver;
  YAML::Node root;
  try {
    root = YAML::Load(std::string(yaml));
  } catch (const YAML::ParserException& e) {
    return absl::InvalidArgumentError(
        Cat(source, ":", e.mark.line + 1, ":", e.mark.column + 1, ": YAML syntax error: ", e.msg));
  }
  Config cfg;
  cfg.text = std::string(yaml);
  if (cfg.text.size() >= internal::kConfigBytes) {
    return absl::InvalidArgumentError(Cat(source, ": configuration is ", cfg.text.size(), " bytes, at most ",
                                          internal::kConfigBytes - 1, " are stored"));
  }
  if (!root.IsDefined() || root.IsNull()) {
    // An empty file, only comments, or a bare "---": almost always a truncated or
    // wrong file. A router with nothing configured is written "{}".
    return absl::InvalidArgumentError(Cat(source,
                                          ": the configuration is empty (no YAML document); write {} for a router with "
                                          "nothing configured"));
  }
  AR_RETURN_IF_ERROR(c.Map(root, "(top level)"));
  try {
    std::set<size_t> visited;
    CheckDuplicateKeys(c, root, "", &visited, 0);
    c.OnlyKeys(root, "", {"state", "nodes", "apps", "status", "health", "cluster"});
    c.Field(root, "state", [&](const YAML::Node& v) { return ParseState(c, v, &cfg.state); });
    c.Field(root, "status", [&](const YAML::Node& v) { return ParseStatus(c, v, &cfg.status); });
    c.Field(root, "health", [&](const YAML::Node& v) { return ParseHealth(c, v, &cfg.health); });
    c.Field(root, "cluster", [&](const YAML::Node& v) { return ParseCluster(c, v, &cfg.cluster); });
    std::set<std::string> resources{std::string(kDefaultResource)};
    if (const YAML::Node& nodes = root["nodes"]; nodes && !nodes.IsNull()) ParseNodes(c, nodes, &cfg, &resources);
    if (const YAML::Node& apps = root["apps"]; apps && !apps.IsNull()) c.Keep(ParseApps(c, apps, &cfg, &resources));
    if (resources.size() > kMaxResources) {
      c.Keep(c.Error(root, "(resources)",
                     Cat(resources.size(), " distinct resources, at most ", kMaxResources, " are supported")));
    }
  } catch (const YAML::Exception& e) {
    c.Keep(absl::InvalidArgumentError(Cat(source, ":", e.mark.line + 1, ": ", e.msg)));
  }
  AR_RETURN_IF_ERROR(c.Result());
  return cfg;
}

absl::StatusOr<Config> LoadConfigFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(Cat("cannot read configuration file ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  return ParseConfig(ss.str(), path);
}

absl::Status ValidateNodeSpec(const NodeSpec& spec) {
  Ctx c("node");
  YAML::Node none;
  auto fail = [&](std::string_view field, std::string_view msg) {
    return absl::InvalidArgumentError(Cat("node \"", spec.id, "\": ", field, ": ", msg));
  };
  if (absl::Status s = ValidName(c, none, "id", "node id", spec.id, kMaxNodeIdLen); !s.ok()) {
    return absl::InvalidArgumentError(
        Cat("node id \"", spec.id, "\" is invalid: must have 1 to ", kMaxNodeIdLen, " characters of [A-Za-z0-9_.:-]"));
  }
  if (absl::Status s = ValidateSipUri(spec.uri); !s.ok()) return fail("uri", internal::ToStd(s.message()));
  if (absl::Status s = ValidName(c, none, "pool", "pool", spec.pool, kMaxPoolLen); !s.ok()) {
    return fail("pool", Cat("\"", spec.pool, "\" must have 1 to 63 characters of [A-Za-z0-9_.:-]"));
  }
  if (spec.weight < 0) return fail("weight", Cat("must be >= 0, got ", spec.weight));
  for (const auto& [r, v] : spec.capacity) {
    if (absl::Status s = ValidName(c, none, "capacity", "resource", r, 31); !s.ok()) {
      return fail("capacity", Cat("resource name \"", r, "\" is invalid"));
    }
    if (v < 0) return fail("capacity", Cat(r, " must be >= 0, got ", v));
  }
  if (spec.attrs.size() > kMaxAttrs) return fail("attrs", Cat("at most ", kMaxAttrs, " attributes"));
  for (const auto& [k, v] : spec.attrs) {
    if (k.empty() || k.size() > 31)
      return fail("attrs", Cat("attribute name \"", k, "\" must have 1 to 31 characters"));
    if (v.size() > 95) return fail("attrs", Cat("attribute ", k, " is longer than 95 characters"));
  }
  return absl::OkStatus();
}

}  // namespace approute
