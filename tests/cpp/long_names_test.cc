// Call ids and keys longer than their slot: stored as a prefix plus the
// XXH3-128 digest of the whole value, found again by the whole value (route,
// retry, confirm, end) and by the stored form a listing shows; only values
// over the largest SIP message are refused.
#include <gtest/gtest.h>

#include <set>
#include <string>

#include "approute/limits.h"
#include "approute/router.h"
#include "test_util.h"
#include "util/stored_name.h"

namespace approute {
namespace {

using internal::kDigestHexLen;
using internal::kDigestTag;
using internal::StoredName;
using testing::MakeRouter;
using testing::MustRoute;

const char* kYaml = R"(
nodes:
  - {id: a, uri: "sip:10.0.0.1", pool: media, capacity: {calls: 10}}
  - {id: b, uri: "sip:10.0.0.2", pool: media, capacity: {calls: 10}}
  - {id: c, uri: "sip:10.0.0.3", pool: media, capacity: {calls: 10}}
apps:
  conference:
    pool: media
    strategy: round_robin
    affinity: {grace: 60}
    retry: {codes: [503], full_codes: [503], max_attempts: 3}
)";

// A Call-ID as a long-winded SBC writes it: `len` bytes, `tail` at the end.
std::string LongCallId(size_t len, const std::string& tail) {
  std::string s = "sbc-";
  while (s.size() + tail.size() + 12 < len) s += "a1b2c3d4e5f6";
  s.resize(len - tail.size() - 12, 'x');
  return s + "@example.com" + tail;  // 12 bytes
}

bool IsLowerHex(std::string_view s) { return s.find_first_not_of("0123456789abcdef") == std::string_view::npos; }

TEST(StoredName, AValueThatFitsIsKeptAsItIs) {
  const std::string exact(kMaxCallIdLen, 'k');
  StoredName n(exact, kMaxCallIdLen);
  EXPECT_FALSE(n.digested());
  EXPECT_EQ(n.view(), exact);
}

TEST(StoredName, ALongerValueBecomesPrefixTagAndDigest) {
  const std::string v = LongCallId(300, "");
  StoredName n(v, kMaxCallIdLen);
  ASSERT_TRUE(n.digested());
  const std::string_view s = n.view();
  EXPECT_EQ(s.size(), kMaxCallIdLen);
  const size_t prefix = s.size() - kDigestTag.size() - kDigestHexLen;
  EXPECT_EQ(s.substr(0, prefix), std::string_view(v).substr(0, prefix)) << "the listing shows the value's start";
  EXPECT_EQ(s.substr(prefix, kDigestTag.size()), kDigestTag);
  EXPECT_TRUE(IsLowerHex(s.substr(prefix + kDigestTag.size()))) << s;
  // Deterministic (every process and host must agree) and whole-value: one
  // byte changed at the far end gives another stored form.
  StoredName again(v, kMaxCallIdLen);
  EXPECT_EQ(again.view(), s);
  std::string other = v;
  other.back() = 'y';
  EXPECT_NE(StoredName(other, kMaxCallIdLen).view(), s);
  // One byte over the slot is enough to digest.
  EXPECT_TRUE(StoredName(std::string(kMaxCallIdLen + 1, 'k'), kMaxCallIdLen).digested());
}

TEST(StoredName, ThePrefixNeverSplitsAUtf8Character) {
  // "é" is two bytes; a run of them puts a character across any cut.
  std::string v;
  for (int i = 0; i < 100; ++i) v += "\xc3\xa9";
  for (size_t shift = 0; shift < 2; ++shift) {
    const std::string value = std::string(shift, 'x') + v;
    StoredName n(value, kMaxKeyLen);
    ASSERT_TRUE(n.digested());
    const size_t prefix = n.view().find(kDigestTag);
    ASSERT_NE(prefix, std::string_view::npos);
    EXPECT_EQ(prefix, internal::StoredPrefixLen(value, kMaxKeyLen));
    // The byte after the prefix in the value starts a character.
    EXPECT_NE(static_cast<unsigned char>(value[prefix]) & 0xC0, 0x80) << "shift " << shift;
  }
}

TEST(LongNames, A300ByteCallIdRoutesRetriesAndEndsByItsFullValue) {
  auto r = MakeRouter(kYaml);
  const std::string call = LongCallId(300, "-1");
  Decision d = MustRoute(*r, "conference", call, "room");
  ASSERT_TRUE(d.ok) << d.detail;
  EXPECT_EQ(r->Stats().sessions, 1);
  // A second INVITE with the same Call-ID is the same call.
  Decision again = MustRoute(*r, "conference", call, "room");
  EXPECT_EQ(again.reason, "session");
  EXPECT_EQ(again.node_id, d.node_id);
  // A Call-ID differing only in its last byte is another call.
  Decision other = MustRoute(*r, "conference", LongCallId(300, "-2"), "room");
  EXPECT_EQ(other.reason, "affinity");
  EXPECT_EQ(r->Stats().sessions, 2);

  absl::StatusOr<Decision> moved = r->Retry(call, 503);
  ASSERT_TRUE(moved.ok()) << moved.status();
  EXPECT_TRUE(moved->ok);
  EXPECT_NE(moved->node_id, d.node_id);
  ASSERT_TRUE(r->Confirm(call).ok());
  ASSERT_TRUE(r->End(call).ok());
  EXPECT_EQ(r->End(call).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(r->Stats().sessions, 1);
}

TEST(LongNames, TheListingShowsTheStoredFormAndItEndsTheSession) {
  auto r = MakeRouter(kYaml);
  const std::string call = LongCallId(500, "");
  MustRoute(*r, "conference", call, "k");
  std::vector<SessionInfo> rows = r->Sessions();
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].call_id, StoredName(call, kMaxCallIdLen).view());
  EXPECT_EQ(rows[0].call_id.substr(0, 20), call.substr(0, 20));
  // An operator pastes the listed id (`approute end ID`).
  ASSERT_TRUE(r->End(rows[0].call_id).ok());
  EXPECT_TRUE(r->Sessions().empty());
  for (const NodeStatus& n : r->Nodes()) EXPECT_EQ(n.sessions.at("calls"), 0) << n.spec.id;
}

TEST(LongNames, ALongKeyKeepsItsAffinityAndOnlyTheWholeKeyMatches) {
  auto r = MakeRouter(kYaml);
  // A template such as {hdr:X-Tenant}/{to_user} can exceed a slot.
  const std::string tenant(150, 't');
  const std::string k1 = tenant + "/alice", k2 = tenant + "/bob";
  Decision d1 = MustRoute(*r, "conference", "c1", k1);
  Decision d2 = MustRoute(*r, "conference", "c2", k1);
  EXPECT_EQ(d2.reason, "affinity");
  EXPECT_EQ(d2.node_id, d1.node_id);
  Decision d3 = MustRoute(*r, "conference", "c3", k2);
  EXPECT_EQ(d3.reason, "strategy") << "same prefix, another key";
  std::set<std::string> keys;
  for (const AffinityInfo& a : r->Affinities()) keys.insert(a.key);
  EXPECT_EQ(keys, (std::set<std::string>{std::string(StoredName(k1, kMaxKeyLen).view()),
                                         std::string(StoredName(k2, kMaxKeyLen).view())}));
  for (const SessionInfo& s : r->Sessions()) EXPECT_LE(s.key.size(), kMaxKeyLen);
  // The retry of a call with a long key releases and re-claims the stored key.
  absl::StatusOr<Decision> moved = r->Retry("c1", 503);
  ASSERT_TRUE(moved.ok() && moved->ok) << moved.status();
  ASSERT_TRUE(r->End("c1").ok());
  ASSERT_TRUE(r->End("c2").ok());
  ASSERT_TRUE(r->End("c3").ok());
}

TEST(LongNames, OnlyAbsurdValuesAreRefusedWithTheLimitNamed) {
  auto r = MakeRouter(kYaml);
  const std::string huge(kMaxInputLen + 1, 'x');
  RouteRequest req{.app = "conference", .call_id = huge};
  absl::StatusOr<Decision> d = r->Route(req);
  ASSERT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(d.status().message().find("call_id is 65536 bytes long, at most 65535"), std::string::npos) << d.status();
  req = RouteRequest{.app = "conference", .call_id = "c", .key = huge};
  d = r->Route(req);
  ASSERT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(d.status().message().find("key is 65536 bytes long"), std::string::npos) << d.status();
  EXPECT_EQ(r->End(huge).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(r->Stats().sessions, 0) << "a refusal changes nothing";
  // The largest accepted value routes.
  MustRoute(*r, "conference", std::string(kMaxInputLen, 'y'), std::string(kMaxInputLen, 'z'));
  EXPECT_EQ(r->Stats().sessions, 1);
}

}  // namespace
}  // namespace approute
