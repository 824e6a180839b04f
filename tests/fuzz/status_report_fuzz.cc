// Fuzzes Router::ApplyReport: the JSON body, X-Approute-Auth, Expires,
// SIP-If-Match and the source address. Half of the inputs are signed
// correctly (SignReport over "<ts>\n<node>\n<etag>\n<expires>\n<body>" under
// the pool's key), so the fuzzer gets past the HMAC into the body checks.
// Properties: the code is one of 200/400/403/412/503; a refused report
// changes nothing (every node field and the counts, fuzz_util.h); an
// accepted one names a node that exists afterwards and has an entity tag.
#include <fuzzer/FuzzedDataProvider.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "approute/router.h"
#include "fuzz_util.h"

namespace {

constexpr char kSecret[] = "0123456789abcdef-media";
constexpr char kYaml[] = R"(
state: {max_nodes: 12, max_sessions: 256, max_affinities: 256}
status:
  allow_sources: ["127.0.0.0/8", "::1"]
  allow_uris: ["127.0.0.0/8", "10.0.0.0/8"]
  keys: {media: {k1: "0123456789abcdef-media"}}
  replay_window: 30
  max_expires: 600
nodes:
  - {id: static1, uri: "sip:10.0.0.1:5060", pool: media, capacity: {calls: 4}}
apps:
  conference: {pool: media, strategy: least_loaded, affinity: {grace: 60}}
)";

std::atomic<int64_t> g_now{1'700'000'000'000};

approute::Router& TheRouter() {
  static std::unique_ptr<approute::Router> r = [] {
    approute::RouterOptions o;
    o.now_ms = [] { return g_now.load(); };
    auto made = approute::Router::FromYaml(kYaml, o);
    if (!made.ok()) approute::fuzz::Fail("the harness's config is refused", made.status().ToString());
    return *std::move(made);
  }();
  return *r;
}

std::string g_last_etag;  // of the last accepted report, to exercise refreshes

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  approute::Router& r = TheRouter();
  FuzzedDataProvider in(data, size);
  const uint8_t mode = in.ConsumeIntegral<uint8_t>();
  g_now += in.ConsumeIntegralInRange<int64_t>(0, 2000);  // ms; leases run out now and then

  approute::ReportRequest req;
  req.source = (mode & 1) ? in.ConsumeRandomLengthString(48) : std::string("127.0.0.1");
  req.expires = (mode & 2) ? in.ConsumeIntegral<int64_t>() : in.ConsumeIntegralInRange<int64_t>(-2, 700);
  req.if_match = (mode & 4) ? g_last_etag : ((mode & 8) ? in.ConsumeRandomLengthString(32) : "");
  std::string node;
  if (mode & 16) {
    // A well-formed frame around fuzzed fields: a node the signature names.
    static const char* kIds[] = {"ast1", "ast2", "ast3", "static1"};
    node = (mode & 32) ? in.ConsumeRandomLengthString(70) : kIds[in.ConsumeIntegralInRange<int>(0, 3)];
    std::string uri = in.ConsumeRandomLengthString(64);
    std::string rest = in.ConsumeRandomLengthString(256);
    req.body = "{\"node\": \"" + node + "\", \"uri\": \"" + uri +
               "\", \"pool\": \"media\", \"seq\": " + std::to_string(in.ConsumeIntegral<uint32_t>()) +
               (rest.empty() ? "" : ", " + rest) + "}";
    if (mode & 64) req.body.clear();  // a refresh or leave carries no body
  } else {
    node = in.ConsumeRandomLengthString(70);
    req.body = in.ConsumeRemainingBytesAsString();
  }
  const int64_t ts = g_now.load() / 1000 + ((mode & 128) ? in.ConsumeIntegralInRange<int64_t>(-40, 40) : 0);
  if (mode & 32 && !(mode & 16)) {
    req.auth = in.ConsumeRemainingBytesAsString();  // garbage auth
  } else {
    req.auth = approute::SignReport(req.body, "k1", kSecret, ts, node, req.if_match, req.expires);
  }

  const std::string before = approute::fuzz::Describe(r);
  approute::ReportResult res = r.ApplyReport(req);
  const std::string after = approute::fuzz::Describe(r);
  switch (res.code) {
    case 200:
    case 400:
    case 403:
    case 412:
    case 503:
      break;
    default:
      approute::fuzz::Fail("unexpected response code", std::to_string(res.code), res.reason);
  }
  if (res.code != 200) {
    if (before != after)
      approute::fuzz::Fail(("a refused report changed the router: " + res.reason).c_str(), before, after);
    if (res.reason.empty()) approute::fuzz::Fail("a refusal without a reason");
    return 0;
  }
  if (res.node_id.empty()) approute::fuzz::Fail("accepted without a node id");
  if (req.expires != 0) {
    if (!r.Node(res.node_id).ok()) approute::fuzz::Fail("an accepted report's node does not exist", res.node_id);
    if (res.etag.empty()) approute::fuzz::Fail("accepted without an entity tag");
    g_last_etag = res.etag;
  }
  return 0;
}
