// YAML configuration: parsing with yaml-cpp and validation with positions.
#include "approute/config.h"

#include <yaml-cpp/yaml.h>

#include <unistd.h>

#include <cmath>
#include <fstream>
#include <set>
#include <sstream>

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

// Carries the source name and builds "source:line:col: path: message" errors.
class Ctx {
 public:
  explicit Ctx(std::string_view source) : source_(source) {}

  // A router's own strategy names (valid in apps.*.strategy), or null.
  const StrategyResolver* resolver = nullptr;

  absl::Status Error(const YAML::Node& at, std::string_view path, std::string_view msg) const {
    YAML::Mark m = at.Mark();
    if (m.is_null()) return absl::InvalidArgumentError(Cat(source_, ": ", path, ": ", msg));
    return absl::InvalidArgumentError(
        Cat(source_, ":", m.line + 1, ":", m.column + 1, ": ", path, ": ", msg));
  }

  absl::Status OnlyKeys(const YAML::Node& map, std::string_view path,
                        std::initializer_list<std::string_view> allowed) const {
    for (const auto& kv : map) {
      std::string k = kv.first.Scalar();
      bool known = false;
      for (auto a : allowed) known = known || a == k;
      if (!known) {
        return Error(kv.first, Cat(path, path.empty() ? "" : ".", k),
                     Cat("unknown key \"", k, "\" (allowed: ", Join(allowed, ", "),
                                  ")"));
      }
    }
    return absl::OkStatus();
  }

  absl::Status Map(const YAML::Node& n, std::string_view path) const {
    if (!n.IsMap()) return Error(n, path, "expected a mapping");
    return absl::OkStatus();
  }

  absl::StatusOr<std::string> String(const YAML::Node& n, std::string_view path) const {
    if (!n.IsScalar()) return Error(n, path, "expected a string");
    return n.Scalar();
  }

  absl::StatusOr<int64_t> Int(const YAML::Node& n, std::string_view path, int64_t lo,
                              int64_t hi) const {
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
  absl::StatusOr<int64_t> Seconds(const YAML::Node& n, std::string_view path, double lo,
                                  double hi) const {
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
  std::string source_;
};

#define AR_ASSIGN(lhs, expr)             \
  do {                                   \
    auto _r = (expr);                    \
    if (!_r.ok()) return _r.status();    \
    (lhs) = *std::move(_r);              \
  } while (0)
#define AR_RETURN_IF_ERROR(expr)         \
  do {                                   \
    absl::Status _s = (expr);            \
    if (!_s.ok()) return _s;             \
  } while (0)

absl::Status ValidName(const Ctx& c, const YAML::Node& at, std::string_view path,
                       std::string_view what, std::string_view v, size_t max) {
  if (v.empty() || v.size() > max) {
    return c.Error(at, path, Cat(what, " must have 1 to ", max, " characters"));
  }
  for (char ch : v) {
    bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || ch == '-' || ch == '.' || ch == ':';
    if (!ok) {
      return c.Error(at, path,
                     Cat(what, " \"", v, "\" may only contain letters, digits, '_', '-', '.' and ':'"));
    }
  }
  return absl::OkStatus();
}

absl::Status ParseState(const Ctx& c, const YAML::Node& n, StateLimits* out) {
  AR_RETURN_IF_ERROR(c.Map(n, "state"));
  AR_RETURN_IF_ERROR(c.OnlyKeys(n, "state", {"max_nodes", "max_sessions", "max_affinities"}));
  if (n["max_nodes"]) AR_ASSIGN(out->max_nodes, c.Int(n["max_nodes"], "state.max_nodes", 1, 65536));
  if (n["max_sessions"])
    AR_ASSIGN(out->max_sessions, c.Int(n["max_sessions"], "state.max_sessions", 1, 1 << 24));
  if (n["max_affinities"])
    AR_ASSIGN(out->max_affinities, c.Int(n["max_affinities"], "state.max_affinities", 1, 1 << 24));
  return absl::OkStatus();
}

absl::Status ParseNode(const Ctx& c, const YAML::Node& n, const std::string& path, NodeSpec* out) {
  AR_RETURN_IF_ERROR(c.Map(n, path));
  AR_RETURN_IF_ERROR(
      c.OnlyKeys(n, path, {"id", "uri", "pool", "weight", "priority", "capacity", "attrs", "state"}));
  if (!n["id"]) return c.Error(n, path, "missing required key \"id\"");
  if (!n["uri"]) return c.Error(n, path, "missing required key \"uri\"");
  AR_ASSIGN(out->id, c.String(n["id"], path + ".id"));
  AR_RETURN_IF_ERROR(ValidName(c, n["id"], path + ".id", "node id", out->id, kMaxNodeIdLen));
  AR_ASSIGN(out->uri, c.String(n["uri"], path + ".uri"));
  if (absl::Status s = ValidateSipUri(out->uri); !s.ok()) {
    return c.Error(n["uri"], path + ".uri", internal::ToStd(s.message()));
  }
  if (n["pool"]) {
    AR_ASSIGN(out->pool, c.String(n["pool"], path + ".pool"));
    AR_RETURN_IF_ERROR(ValidName(c, n["pool"], path + ".pool", "pool", out->pool, kMaxPoolLen));
  }
  if (n["weight"]) {
    int64_t w;
    AR_ASSIGN(w, c.Int(n["weight"], path + ".weight", 0, 1000000));
    out->weight = static_cast<int32_t>(w);
  }
  if (n["priority"]) {
    int64_t p;
    AR_ASSIGN(p, c.Int(n["priority"], path + ".priority", -1000000, 1000000));
    out->priority = static_cast<int32_t>(p);
  }
  if (n["capacity"]) {
    const YAML::Node& cap = n["capacity"];
    AR_RETURN_IF_ERROR(c.Map(cap, path + ".capacity"));
    for (const auto& kv : cap) {
      std::string res = kv.first.Scalar();
      std::string p = Cat(path, ".capacity.", res);
      AR_RETURN_IF_ERROR(ValidName(c, kv.first, p, "resource", res, 31));
      int64_t v;
      AR_ASSIGN(v, c.Int(kv.second, p, 0, int64_t{1} << 40));
      out->capacity[res] = v;
    }
  }
  if (n["attrs"]) {
    const YAML::Node& attrs = n["attrs"];
    AR_RETURN_IF_ERROR(c.Map(attrs, path + ".attrs"));
    if (attrs.size() > kMaxAttrs) {
      return c.Error(attrs, path + ".attrs", Cat("at most ", kMaxAttrs, " attributes"));
    }
    for (const auto& kv : attrs) {
      std::string k = kv.first.Scalar();
      std::string p = Cat(path, ".attrs.", k);
      if (k.empty() || k.size() > 31) return c.Error(kv.first, p, "attribute names have 1 to 31 characters");
      std::string v;
      AR_ASSIGN(v, c.String(kv.second, p));
      if (v.size() > 95) return c.Error(kv.second, p, "attribute values have at most 95 characters");
      out->attrs[k] = v;
    }
  }
  if (n["state"]) {
    std::string s;
    AR_ASSIGN(s, c.String(n["state"], path + ".state"));
    absl::StatusOr<AdminState> st = ParseAdminState(s);
    if (!st.ok()) return c.Error(n["state"], path + ".state", internal::ToStd(st.status().message()));
    out->state = *st;
  }
  return absl::OkStatus();
}

absl::Status ParseCodes(const Ctx& c, const YAML::Node& n, const std::string& path,
                        std::vector<int>* out) {
  if (!n.IsSequence()) return c.Error(n, path, "expected a list of SIP status codes");
  out->clear();
  for (size_t i = 0; i < n.size(); ++i) {
    int64_t v;
    AR_ASSIGN(v, c.Int(n[i], Cat(path, "[", i, "]"), 300, 699));
    out->push_back(static_cast<int>(v));
  }
  return absl::OkStatus();
}

absl::Status ParseApp(const Ctx& c, const YAML::Node& n, const std::string& path, AppConfig* app) {
  if (n.IsNull()) return absl::OkStatus();  // `default:` with every default
  AR_RETURN_IF_ERROR(c.Map(n, path));
  AR_RETURN_IF_ERROR(c.OnlyKeys(n, path,
                                {"pool", "strategy", "resource", "affinity", "retry", "session"}));
  if (n["pool"]) {
    AR_ASSIGN(app->pool, c.String(n["pool"], path + ".pool"));
    AR_RETURN_IF_ERROR(ValidName(c, n["pool"], path + ".pool", "pool", app->pool, kMaxPoolLen));
  }
  if (n["resource"]) {
    AR_ASSIGN(app->resource, c.String(n["resource"], path + ".resource"));
    AR_RETURN_IF_ERROR(ValidName(c, n["resource"], path + ".resource", "resource", app->resource, 31));
  }
  if (const YAML::Node& s = n["strategy"]; s) {
    std::string sp = path + ".strategy";
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
  }
  if (const YAML::Node& a = n["affinity"]; a) {
    std::string ap = path + ".affinity";
    if (a.IsNull()) {
      app->affinity = true;
    } else {
      AR_RETURN_IF_ERROR(c.Map(a, ap));
      AR_RETURN_IF_ERROR(c.OnlyKeys(a, ap, {"grace", "bound", "strict", "headroom"}));
      app->affinity = true;
      if (a["grace"]) AR_ASSIGN(app->affinity_grace_ms, c.Seconds(a["grace"], ap + ".grace", 0, 7 * 86400));
      if (const YAML::Node& b = a["bound"]; b) {
        double v = 0;
        if (!b.IsScalar() || !YAML::convert<double>::decode(b, v) || !std::isfinite(v)) {
          return c.Error(b, ap + ".bound", Cat("expected a number > 1.0, got \"", Ctx::Text(b), "\""));
        }
        if (v <= 1.0 || v > 100.0) {
          return c.Error(b, ap + ".bound", Cat("value ", v, " must be > 1.0 (and at most 100): a node may take this many times the mean load"));
        }
        app->affinity_bound = v;
      }
      if (const YAML::Node& st = a["strict"]; st) {
        bool v = false;
        if (!st.IsScalar() || !YAML::convert<bool>::decode(st, v)) {
          return c.Error(st, ap + ".strict", Cat("expected true or false, got \"", Ctx::Text(st), "\""));
        }
        app->affinity_strict = v;
      }
      if (const YAML::Node& h = a["headroom"]; h) {
        double v = 0;
        if (!h.IsScalar() || !YAML::convert<double>::decode(h, v) || !std::isfinite(v)) {
          return c.Error(h, ap + ".headroom", Cat("expected a number in 0.0..0.99, got \"", Ctx::Text(h), "\""));
        }
        if (v < 0.0 || v >= 1.0) {
          return c.Error(h, ap + ".headroom",
                         Cat("value ", v, " must be at least 0.0 and below 1.0: the share of capacity kept "
                             "for calls of keys a node already holds"));
        }
        app->affinity_headroom = v;
      }
    }
  }
  bool full_given = false;
  if (const YAML::Node& r = n["retry"]; r) {
    std::string rp = path + ".retry";
    AR_RETURN_IF_ERROR(c.Map(r, rp));
    AR_RETURN_IF_ERROR(c.OnlyKeys(r, rp, {"codes", "full_codes", "max_attempts"}));
    if (r["codes"]) AR_RETURN_IF_ERROR(ParseCodes(c, r["codes"], rp + ".codes", &app->retry_codes));
    if (r["full_codes"]) {
      AR_RETURN_IF_ERROR(ParseCodes(c, r["full_codes"], rp + ".full_codes", &app->full_codes));
      full_given = true;
    }
    if (r["max_attempts"]) {
      int64_t m;
      AR_ASSIGN(m, c.Int(r["max_attempts"], rp + ".max_attempts", 1, kMaxAttemptsLimit));
      app->max_attempts = static_cast<int>(m);
    }
  }
  if (!full_given) app->full_codes = app->retry_codes;
  if (const YAML::Node& s = n["session"]; s) {
    std::string sp = path + ".session";
    AR_RETURN_IF_ERROR(c.Map(s, sp));
    AR_RETURN_IF_ERROR(c.OnlyKeys(s, sp, {"lifetime"}));
    if (s["lifetime"]) AR_ASSIGN(app->session_lifetime_ms, c.Seconds(s["lifetime"], sp + ".lifetime", 1, 30 * 86400));
  }
  return absl::OkStatus();
}

absl::Status ParseCidrList(const Ctx& c, const YAML::Node& n, const std::string& path,
                           std::vector<std::string>* out) {
  if (!n.IsSequence()) return c.Error(n, path, "expected a list of networks, e.g. [\"10.0.0.0/8\"]");
  for (size_t i = 0; i < n.size(); ++i) {
    std::string p = Cat(path, "[", i, "]");
    std::string v;
    AR_ASSIGN(v, c.String(n[i], p));
    if (absl::Status s = internal::CheckCidr(v); !s.ok()) return c.Error(n[i], p, internal::ToStd(s.message()));
    out->push_back(v);
  }
  return absl::OkStatus();
}

absl::Status ParseStatus(const Ctx& c, const YAML::Node& n, StatusConfig* out) {
  AR_RETURN_IF_ERROR(c.Map(n, "status"));
  AR_RETURN_IF_ERROR(c.OnlyKeys(n, "status", {"allow_sources", "allow_uris", "keys", "replay_window", "max_expires"}));
  if (n["allow_sources"]) AR_RETURN_IF_ERROR(ParseCidrList(c, n["allow_sources"], "status.allow_sources", &out->allow_sources));
  if (n["allow_uris"]) AR_RETURN_IF_ERROR(ParseCidrList(c, n["allow_uris"], "status.allow_uris", &out->allow_uris));
  if (const YAML::Node& k = n["keys"]; k) {
    AR_RETURN_IF_ERROR(c.Map(k, "status.keys"));
    for (const auto& pool : k) {
      std::string pname = pool.first.Scalar();
      std::string pp = Cat("status.keys.", pname);
      AR_RETURN_IF_ERROR(ValidName(c, pool.first, pp, "pool", pname, kMaxPoolLen));
      AR_RETURN_IF_ERROR(c.Map(pool.second, pp));
      for (const auto& kv : pool.second) {
        std::string id = kv.first.Scalar();
        std::string kp = Cat(pp, ".", id);
        AR_RETURN_IF_ERROR(ValidName(c, kv.first, kp, "key id", id, 31));
        std::string secret;
        AR_ASSIGN(secret, c.String(kv.second, kp));
        if (secret.size() < 16) return c.Error(kv.second, kp, "a secret needs at least 16 characters");
        out->keys[pname][id] = secret;
      }
    }
  }
  if (n["replay_window"]) AR_ASSIGN(out->replay_window_ms, c.Seconds(n["replay_window"], "status.replay_window", 1, 3600));
  if (n["max_expires"]) AR_ASSIGN(out->max_expires_s, c.Int(n["max_expires"], "status.max_expires", 1, 86400));
  return absl::OkStatus();
}

absl::Status ParseCluster(const Ctx& c, const YAML::Node& n, ClusterConfig* out) {
  AR_RETURN_IF_ERROR(c.Map(n, "cluster"));
  AR_RETURN_IF_ERROR(c.OnlyKeys(n, "cluster", {"redis", "name", "proxy", "timeout_ms", "outage_headroom"}));
  out->enabled = true;
  if (!n["redis"]) return c.Error(n, "cluster", "missing required key \"redis\" (e.g. redis://127.0.0.1:6379/0)");
  if (!n["name"]) return c.Error(n, "cluster", "missing required key \"name\" (proxies with the same name share one state)");
  AR_ASSIGN(out->redis, c.String(n["redis"], "cluster.redis"));
  if (absl::StatusOr<internal::RedisUrl> u = internal::ParseRedisUrl(out->redis); !u.ok()) {
    return c.Error(n["redis"], "cluster.redis", internal::ToStd(u.status().message()));
  }
  AR_ASSIGN(out->name, c.String(n["name"], "cluster.name"));
  AR_RETURN_IF_ERROR(ValidName(c, n["name"], "cluster.name", "deployment name", out->name, 63));
  if (n["proxy"]) {
    AR_ASSIGN(out->proxy, c.String(n["proxy"], "cluster.proxy"));
    AR_RETURN_IF_ERROR(ValidName(c, n["proxy"], "cluster.proxy", "proxy id", out->proxy, 63));
  } else {
    char host[256] = {0};
    if (gethostname(host, sizeof host - 1) != 0 || host[0] == 0) {
      return c.Error(n, "cluster.proxy", "not given and the host name is unknown; set cluster.proxy");
    }
    out->proxy = host;
    if (!ValidName(c, n, "cluster.proxy", "proxy id", out->proxy, 63).ok()) {
      return c.Error(n, "cluster.proxy", Cat("not given and the host name \"", out->proxy,
                                             "\" is not a valid proxy id; set cluster.proxy"));
    }
  }
  if (n["timeout_ms"]) AR_ASSIGN(out->timeout_ms, c.Int(n["timeout_ms"], "cluster.timeout_ms", 1, 10000));
  if (n["outage_headroom"]) {
    AR_ASSIGN(out->outage_headroom_pct, c.Int(n["outage_headroom"], "cluster.outage_headroom", 0, 100));
  }
  return absl::OkStatus();
}

absl::Status ParseHealth(const Ctx& c, const YAML::Node& n, HealthConfig* out) {
  AR_RETURN_IF_ERROR(c.Map(n, "health"));
  AR_RETURN_IF_ERROR(c.OnlyKeys(n, "health", {"probe", "outlier", "panic_threshold", "slow_start", "latency"}));
  auto int_field = [&](const YAML::Node& m, const std::string& path, const char* key, int lo, int hi, int* dst) -> absl::Status {
    if (!m[key]) return absl::OkStatus();
    int64_t v;
    AR_ASSIGN(v, c.Int(m[key], Cat(path, ".", key), lo, hi));
    *dst = static_cast<int>(v);
    return absl::OkStatus();
  };
  if (const YAML::Node& p = n["probe"]; p) {
    AR_RETURN_IF_ERROR(c.Map(p, "health.probe"));
    AR_RETURN_IF_ERROR(c.OnlyKeys(p, "health.probe", {"down_after", "up_after"}));
    AR_RETURN_IF_ERROR(int_field(p, "health.probe", "down_after", 1, 100, &out->probe_down_after));
    AR_RETURN_IF_ERROR(int_field(p, "health.probe", "up_after", 1, 100, &out->probe_up_after));
  }
  if (const YAML::Node& o = n["outlier"]; o) {
    const std::string op = "health.outlier";
    AR_RETURN_IF_ERROR(c.Map(o, op));
    AR_RETURN_IF_ERROR(c.OnlyKeys(o, op, {"consecutive_failures", "base_ejection", "max_ejection",
                                          "max_ejected_percent", "failure_codes"}));
    AR_RETURN_IF_ERROR(int_field(o, op, "consecutive_failures", 1, 1000, &out->outlier_consecutive_failures));
    AR_RETURN_IF_ERROR(int_field(o, op, "max_ejected_percent", 0, 100, &out->outlier_max_ejected_percent));
    if (o["base_ejection"]) AR_ASSIGN(out->outlier_base_ejection_ms, c.Seconds(o["base_ejection"], op + ".base_ejection", 0.001, 86400));
    if (o["max_ejection"]) AR_ASSIGN(out->outlier_max_ejection_ms, c.Seconds(o["max_ejection"], op + ".max_ejection", 0.001, 86400));
    if (o["failure_codes"]) {
      const YAML::Node& fc = o["failure_codes"];
      if (!fc.IsSequence()) return c.Error(fc, op + ".failure_codes", "expected a list of SIP codes (0 = no answer)");
      out->outlier_failure_codes.clear();
      for (size_t i = 0; i < fc.size(); ++i) {
        int64_t v;
        AR_ASSIGN(v, c.Int(fc[i], Cat(op, ".failure_codes[", i, "]"), 0, 699));
        out->outlier_failure_codes.push_back(static_cast<int>(v));
      }
    }
  }
  AR_RETURN_IF_ERROR(int_field(n, "health", "panic_threshold", 0, 100, &out->panic_threshold));
  if (const YAML::Node& s = n["slow_start"]; s) {
    AR_RETURN_IF_ERROR(c.Map(s, "health.slow_start"));
    AR_RETURN_IF_ERROR(c.OnlyKeys(s, "health.slow_start", {"window"}));
    if (s["window"]) AR_ASSIGN(out->slow_start_ms, c.Seconds(s["window"], "health.slow_start.window", 0, 3600));
  }
  if (const YAML::Node& l = n["latency"]; l) {
    AR_RETURN_IF_ERROR(c.Map(l, "health.latency"));
    AR_RETURN_IF_ERROR(c.OnlyKeys(l, "health.latency", {"ewma_alpha"}));
    if (l["ewma_alpha"]) {
      double a = 0;
      if (!l["ewma_alpha"].IsScalar() || !YAML::convert<double>::decode(l["ewma_alpha"], a) || !(a > 0 && a <= 1)) {
        return c.Error(l["ewma_alpha"], "health.latency.ewma_alpha", "expected a number in (0, 1]");
      }
      out->latency_ewma_alpha = a;
    }
  }
  return absl::OkStatus();
}

// yaml-cpp keeps both entries of a repeated mapping key and lookups see only
// the first, so a repeated key would silently lose its second value. Walks the
// whole document (Python strategy options included) and reports the second
// occurrence with the key path. Collections reached again through an alias
// are visited once.
absl::Status CheckDuplicateKeys(const Ctx& c, const YAML::Node& n, const std::string& path,
                                std::set<size_t>* visited, int depth) {
  if (!n.IsMap() && !n.IsSequence()) return absl::OkStatus();
  if (depth > 64) return c.Error(n, path.empty() ? "(top level)" : path, "nested more than 64 levels deep");
  if (YAML::Mark m = n.Mark(); !m.is_null() && !visited->insert(static_cast<size_t>(m.pos)).second) {
    return absl::OkStatus();
  }
  if (n.IsSequence()) {
    for (size_t i = 0; i < n.size(); ++i) {
      AR_RETURN_IF_ERROR(CheckDuplicateKeys(c, n[i], Cat(path, "[", i, "]"), visited, depth + 1));
    }
    return absl::OkStatus();
  }
  std::map<std::string, YAML::Mark> seen;
  for (const auto& kv : n) {
    std::string key = kv.first.IsScalar() ? kv.first.Scalar() : Ctx::Text(kv.first);
    std::string kp = path.empty() ? key : Cat(path, ".", key);
    if (kv.first.IsScalar()) {
      auto [it, fresh] = seen.emplace(key, kv.first.Mark());
      if (!fresh) {
        return c.Error(kv.first, kp,
                       Cat("duplicate key \"", key, "\" (first at line ", it->second.line + 1, ", column ", it->second.column + 1,
                           "); YAML keeps only one of them"));
      }
    }
    AR_RETURN_IF_ERROR(CheckDuplicateKeys(c, kv.second, kp, visited, depth + 1));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<Config> ParseConfig(std::string_view yaml, std::string_view source) {
  return ParseConfig(yaml, source, nullptr);
}

absl::StatusOr<Config> ParseConfig(std::string_view yaml, std::string_view source,
                                   const StrategyResolver* resolver) {
  Ctx c(source);
  c.resolver = resolver;
  YAML::Node root;
  try {
    root = YAML::Load(std::string(yaml));
  } catch (const YAML::ParserException& e) {
    return absl::InvalidArgumentError(Cat(source, ":", e.mark.line + 1, ":",
                                                   e.mark.column + 1, ": YAML syntax error: ", e.msg));
  }
  Config cfg;
  cfg.text = std::string(yaml);
  if (cfg.text.size() >= internal::kConfigBytes) {
    return absl::InvalidArgumentError(Cat(source, ": configuration is ", cfg.text.size(),
                                                   " bytes, at most ", internal::kConfigBytes - 1,
                                                   " are stored"));
  }
  if (!root.IsDefined() || root.IsNull()) {
    // An empty file, only comments, or a bare "---": almost always a truncated or
    // wrong file. A router with nothing configured is written "{}".
    return absl::InvalidArgumentError(
        Cat(source, ": the configuration is empty (no YAML document); write {} for a router with "
                    "nothing configured"));
  }
  AR_RETURN_IF_ERROR(c.Map(root, "(top level)"));
  {
    std::set<size_t> visited;
    AR_RETURN_IF_ERROR(CheckDuplicateKeys(c, root, "", &visited, 0));
  }
  AR_RETURN_IF_ERROR(c.OnlyKeys(root, "", {"state", "nodes", "apps", "status", "health", "cluster"}));
  try {
    if (root["state"]) AR_RETURN_IF_ERROR(ParseState(c, root["state"], &cfg.state));
    if (root["status"]) AR_RETURN_IF_ERROR(ParseStatus(c, root["status"], &cfg.status));
    if (root["health"]) AR_RETURN_IF_ERROR(ParseHealth(c, root["health"], &cfg.health));
    if (root["cluster"]) AR_RETURN_IF_ERROR(ParseCluster(c, root["cluster"], &cfg.cluster));
    std::set<std::string> resources{std::string(kDefaultResource)};
    if (const YAML::Node& nodes = root["nodes"]; nodes && !nodes.IsNull()) {
      if (!nodes.IsSequence()) return c.Error(nodes, "nodes", "expected a list of nodes");
      std::map<std::string, size_t> seen;
      for (size_t i = 0; i < nodes.size(); ++i) {
        NodeSpec spec;
        std::string path = Cat("nodes[", i, "]");
        AR_RETURN_IF_ERROR(ParseNode(c, nodes[i], path, &spec));
        if (auto it = seen.find(spec.id); it != seen.end()) {
          return c.Error(nodes[i]["id"], path + ".id",
                         Cat("duplicate node id \"", spec.id, "\" (first at nodes[", it->second, "])"));
        }
        seen[spec.id] = i;
        for (const auto& [r, v] : spec.capacity) resources.insert(r);
        cfg.nodes.push_back(std::move(spec));
      }
      if (static_cast<int64_t>(cfg.nodes.size()) > cfg.state.max_nodes) {
        return c.Error(nodes, "nodes", Cat(cfg.nodes.size(), " nodes exceed state.max_nodes = ",
                                                    cfg.state.max_nodes));
      }
    }
    if (const YAML::Node& apps = root["apps"]; apps && !apps.IsNull()) {
      AR_RETURN_IF_ERROR(c.Map(apps, "apps"));
      if (apps.size() > kMaxApps) return c.Error(apps, "apps", Cat("at most ", kMaxApps, " apps"));
      for (const auto& kv : apps) {
        AppConfig app;
        app.name = kv.first.Scalar();
        std::string path = Cat("apps.", app.name);
        AR_RETURN_IF_ERROR(ValidName(c, kv.first, path, "app name", app.name, kMaxAppNameLen));
        app.retry_codes = {503};
        AR_RETURN_IF_ERROR(ParseApp(c, kv.second, path, &app));
        resources.insert(app.resource);
        cfg.apps[app.name] = std::move(app);
      }
    }
    if (resources.size() > kMaxResources) {
      return c.Error(root, "(resources)", Cat(resources.size(), " distinct resources, at most ",
                                                       kMaxResources, " are supported"));
    }
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(Cat(source, ":", e.mark.line + 1, ": ", e.msg));
  }
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
    return absl::InvalidArgumentError(Cat("node id \"", spec.id, "\" is invalid: must have 1 to ",
                                                   kMaxNodeIdLen, " characters of [A-Za-z0-9_.:-]"));
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
    if (k.empty() || k.size() > 31) return fail("attrs", Cat("attribute name \"", k, "\" must have 1 to 31 characters"));
    if (v.size() > 95) return fail("attrs", Cat("attribute ", k, " is longer than 95 characters"));
  }
  return absl::OkStatus();
}

}  // namespace approute
