#include "status/report.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <cmath>
#include <nlohmann/json.hpp>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "approute/config.h"
#include "approute/limits.h"
#include "util/str_util.h"

namespace approute {

std::string ReportSigningString(int64_t ts, std::string_view node, std::string_view etag, int64_t expires,
                                std::string_view body) {
  return internal::Cat(ts, "\n", node, "\n", etag, "\n", expires, "\n", body);
}

std::string SignReport(std::string_view body, std::string_view keyid, std::string_view secret, int64_t ts,
                       std::string_view node, std::string_view etag, int64_t expires) {
  std::string data = ReportSigningString(ts, node, etag, expires, body);
  return internal::Cat("keyid=", keyid, ",ts=", ts, ",sig=", internal::HmacSha256Hex(secret, data));
}

namespace internal {
namespace {

using json = nlohmann::json;

absl::Status Bad(std::string_view what) { return absl::InvalidArgumentError(std::string(what)); }

absl::Status Metrics(const json& j, std::string_view field, std::map<std::string, double>* out) {
  if (!j.is_object()) return Bad(Cat(field, " must be an object of numbers"));
  for (const auto& [k, v] : j.items()) {
    if (!v.is_number()) return Bad(Cat(field, ".", k, " must be a number"));
    double d = v.get<double>();
    if (!std::isfinite(d) || d < 0) return Bad(Cat(field, ".", k, " must be a finite number >= 0"));
    (*out)[k] = d;
  }
  return absl::OkStatus();
}

}  // namespace

namespace {

// nlohmann's message without its "[json.exception.parse_error.101] " prefix.
std::string JsonWhat(const std::exception& e) {
  std::string what = e.what();
  size_t at = what.find("] ");
  return at == std::string::npos ? what : what.substr(at + 2);
}

absl::StatusOr<StatusReport> ParseReportObject(const json& j);

// A SAX pass that only follows where it is ("load.cpu"), so an error the
// parser reports (a number that overflows a double, bad syntax) names the
// field it was in. It builds nothing.
class FieldTracker final : public nlohmann::json_sax<json> {
 public:
  bool null() override { return Value(); }
  bool boolean(bool) override { return Value(); }
  bool number_integer(number_integer_t) override { return Value(); }
  bool number_unsigned(number_unsigned_t) override { return Value(); }
  bool number_float(number_float_t, const string_t&) override { return Value(); }
  bool string(string_t&) override { return Value(); }
  bool binary(binary_t&) override { return Value(); }
  bool start_object(std::size_t) override {
    path_.emplace_back();
    return true;
  }
  bool key(string_t& k) override {
    if (!path_.empty()) path_.back() = k;
    return true;
  }
  bool end_object() override { return Pop(); }
  bool start_array(std::size_t) override {
    path_.emplace_back();
    return true;
  }
  bool end_array() override { return Pop(); }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& ex) override {
    error_ = JsonWhat(ex);
    out_of_range_ = ex.id == 406;
    return false;
  }
  // Where the parser stopped, "" at the top level.
  std::string Field() const {
    std::string f;
    for (const auto& k : path_) {
      if (k.empty()) continue;
      if (!f.empty()) f += ".";
      f += k;
    }
    return f;
  }
  const std::string& error() const { return error_; }
  bool out_of_range() const { return out_of_range_; }

 private:
  bool Value() { return true; }
  bool Pop() {
    if (!path_.empty()) path_.pop_back();
    return true;
  }
  std::vector<std::string> path_;
  std::string error_;
  bool out_of_range_ = false;
};

}  // namespace

absl::StatusOr<StatusReport> ParseStatusReport(std::string_view body) {
  json j;
  try {
    FieldTracker where;
    if (!json::sax_parse(body.begin(), body.end(), &where)) {
      std::string field = where.Field();
      if (where.out_of_range()) {
        return Bad(Cat(field.empty() ? std::string("a number") : field, " is out of range: ", where.error()));
      }
      return Bad(Cat("body is not valid JSON: ", where.error(), field.empty() ? "" : " (in " + field + ")"));
    }
    j = json::parse(body.begin(), body.end());
  } catch (const std::exception& e) {
    return Bad(Cat("body is not valid JSON: ", JsonWhat(e)));
  }
  try {
    return ParseReportObject(j);
  } catch (const std::exception& e) {
    // Every field is type-checked before it is read; this is the last line.
    return Bad(Cat("body could not be read: ", JsonWhat(e)));
  }
}

namespace {

// Integers a report may carry: what a double holds exactly (2^53 - 1), the
// largest any JSON implementation agrees on.
constexpr uint64_t kMaxJsonInt = (uint64_t{1} << 53) - 1;

bool IsIntegerIn(const json& v, int64_t lo, uint64_t hi) {
  if (v.is_number_unsigned())
    return v.get<uint64_t>() <= hi && (lo <= 0 || v.get<uint64_t>() >= static_cast<uint64_t>(lo));
  if (v.is_number_integer())
    return v.get<int64_t>() >= lo && (v.get<int64_t>() < 0 || static_cast<uint64_t>(v.get<int64_t>()) <= hi);
  return false;
}

absl::StatusOr<StatusReport> ParseReportObject(const json& j) {
  if (!j.is_object()) return Bad("body must be a JSON object");
  StatusReport r;
  bool has_seq = false;
  for (const auto& [k, v] : j.items()) {
    if (k == "node" || k == "uri" || k == "pool" || k == "state" || k == "health") {
      if (!v.is_string()) return Bad(Cat(k, " must be a string"));
      std::string s = v.get<std::string>();
      if (k == "node") r.node = s;
      if (k == "uri") r.uri = s;
      if (k == "pool") r.pool = s;
      if (k == "state") {
        if (s == "active")
          r.state = AdminState::kActive;
        else if (s == "draining")
          r.state = AdminState::kDraining;
        else
          return Bad(Cat("state \"", s, "\" must be active or draining"));
      }
      if (k == "health") {
        if (s != "up" && s != "down") return Bad(Cat("health \"", s, "\" must be up or down"));
        r.down = s == "down";
      }
    } else if (k == "weight") {
      if (!IsIntegerIn(v, 0, 1000000)) return Bad("weight must be an integer 0..1000000");
      r.weight = static_cast<int32_t>(v.get<int64_t>());
    } else if (k == "seq") {
      if (!IsIntegerIn(v, 0, kMaxJsonInt)) return Bad(Cat("seq must be an integer 0..", kMaxJsonInt));
      r.seq = v.get<uint64_t>();
      has_seq = true;
    } else if (k == "capacity") {
      if (!v.is_object()) return Bad("capacity must be an object of integers");
      for (const auto& [res, c] : v.items()) {
        if (!IsIntegerIn(c, 0, kMaxJsonInt)) return Bad(Cat("capacity.", res, " must be an integer 0..", kMaxJsonInt));
        r.capacity[res] = c.get<int64_t>();
      }
    } else if (k == "load") {
      if (absl::Status s = Metrics(v, "load", &r.load); !s.ok()) return s;
    } else if (k == "quality") {
      if (absl::Status s = Metrics(v, "quality", &r.quality); !s.ok()) return s;
    } else {
      return Bad(Cat("unknown field \"", k, "\""));
    }
  }
  if (r.node.empty()) return Bad("missing field \"node\"");
  if (r.uri.empty()) return Bad("missing field \"uri\"");
  if (!has_seq) return Bad("missing field \"seq\"");
  NodeSpec spec;
  spec.id = r.node;
  spec.uri = r.uri;
  spec.pool = r.pool;
  spec.capacity = r.capacity;
  if (absl::Status s = ValidateNodeSpec(spec); !s.ok()) return Bad(ToStd(s.message()));
  return r;
}

}  // namespace

absl::StatusOr<Credential> ParseCredential(std::string_view header) {
  Credential c;
  bool has_ts = false;
  for (absl::string_view part : absl::StrSplit(ToAlphaNum(header), ',')) {
    std::pair<absl::string_view, absl::string_view> kv = absl::StrSplit(part, absl::MaxSplits('=', 1));
    absl::string_view k = absl::StripAsciiWhitespace(kv.first);
    absl::string_view v = absl::StripAsciiWhitespace(kv.second);
    if (k == "keyid")
      c.keyid = std::string(v);
    else if (k == "sig")
      c.sig = absl::AsciiStrToLower(v);
    else if (k == "ts") {
      if (!absl::SimpleAtoi(v, &c.ts)) return Bad("X-Approute-Auth ts is not an integer");
      has_ts = true;
    }
  }
  if (c.keyid.empty() || !has_ts || c.sig.empty()) {
    return Bad("X-Approute-Auth must be keyid=K,ts=UNIX,sig=HEX");
  }
  return c;
}

std::string HmacSha256Hex(std::string_view key, std::string_view data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(data.data()),
       data.size(), out, &len);
  return absl::BytesToHexString(absl::string_view(reinterpret_cast<const char*>(out), len));
}

bool SignaturesEqual(std::string_view a, std::string_view b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

}  // namespace internal
}  // namespace approute
