// The shared placement: several processes, one state.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "approute/router.h"
#include "state/region.h"
#include "test_util.h"

namespace approute {
namespace {

using testing::MakeRouter;
using testing::MustRoute;
using testing::Sessions;

std::string SegName(const std::string& tag) { return "approute-test-" + tag + "-" + std::to_string(getpid()); }

class SharedTest : public ::testing::Test {
 protected:
  void TearDown() override {
    for (const auto& n : names_) (void)Router::Unlink(n);
  }
  std::string Name(const std::string& tag) {
    names_.push_back(SegName(tag));
    (void)Router::Unlink(names_.back());
    return names_.back();
  }
  std::vector<std::string> names_;
};

const char* kYaml = R"(
nodes:
  - {id: m1, uri: "sip:10.0.0.1", pool: media}
  - {id: m2, uri: "sip:10.0.0.2", pool: media}
  - {id: m3, uri: "sip:10.0.0.3", pool: media}
  - {id: r1, uri: "sip:10.0.1.1", pool: rr}
  - {id: r2, uri: "sip:10.0.1.2", pool: rr}
  - {id: r3, uri: "sip:10.0.1.3", pool: rr}
  - {id: r4, uri: "sip:10.0.1.4", pool: rr}
apps:
  conference: {pool: media, strategy: random, affinity: {grace: 600}}
  rr: {pool: rr, strategy: round_robin}
  wrr: {pool: rr, strategy: weighted_round_robin}
)";

TEST_F(SharedTest, CreateThenAttachSeesTheSameState) {
  std::string name = Name("attach");
  RouterOptions o{.shared = name};
  auto a = MakeRouter(kYaml, o);
  Decision d = MustRoute(*a, "conference", "c1", "dom");
  absl::StatusOr<std::unique_ptr<Router>> b = Router::Attach(name);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(Sessions(**b, d.node_id, "calls"), 1);
  EXPECT_EQ(MustRoute(**b, "conference", "c2", "dom").node_id, d.node_id) << "policies come from the segment";
  ASSERT_TRUE((*b)->End("c1").ok());
  EXPECT_EQ(a->End("c1").code(), absl::StatusCode::kNotFound);
  // A second FromYaml on the same name attaches and re-applies: sessions survive ("restart").
  a.reset();
  auto again = MakeRouter(kYaml, o);
  EXPECT_EQ(again->Stats().sessions, 1);
  EXPECT_EQ(MustRoute(*again, "conference", "c3", "dom").node_id, d.node_id);
}

TEST_F(SharedTest, LayoutAndCapacityMismatchesAreClearErrors) {
  std::string name = Name("mismatch");
  auto a = MakeRouter(kYaml, RouterOptions{.shared = name});
  std::string other = std::string("state: {max_sessions: 100}\n") + kYaml;
  absl::StatusOr<std::unique_ptr<Router>> b = Router::FromYaml(other, RouterOptions{.shared = name});
  ASSERT_EQ(b.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(std::string(b.status().message()).find("max_sessions: 65536"), std::string::npos) << b.status();

  // A segment that is not ours at all.
  std::string junk = Name("junk");
  int fd = shm_open(("/" + junk).c_str(), O_CREAT | O_RDWR, 0600);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(ftruncate(fd, 1 << 20), 0);
  void* p = mmap(nullptr, 1 << 20, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  std::memset(p, 0x5a, 1 << 20);
  munmap(p, 1 << 20);
  close(fd);
  absl::StatusOr<std::unique_ptr<Router>> c = Router::Attach(junk);
  ASSERT_EQ(c.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(std::string(c.status().message()).find("not an approute state region"), std::string::npos);

  EXPECT_EQ(Router::Attach(Name("absent")).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(Router::Attach("bad/name").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(SharedTest, AProcessKilledHoldingALockDoesNotWedgeOthers) {
  std::string name = Name("robust");
  auto a = MakeRouter(kYaml, RouterOptions{.shared = name});
  pid_t pid = fork();
  if (pid == 0) {
    auto region = internal::Region::AttachShared(name);
    if (!region.ok()) _exit(2);
    (*region)->header().registry_mu.Lock();
    for (auto& s : (*region)->header().session_shards) s.mu.Lock();
    _exit(0);  // dies holding the registry lock and every session shard lock
  }
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  NodeSpec s{.id = "after", .uri = "sip:10.0.0.99", .pool = "media"};
  EXPECT_TRUE(a->AddNode(s).ok());
  EXPECT_TRUE(MustRoute(*a, "rr", "x1").ok);
  EXPECT_TRUE(a->End("x1").ok());
}

// Several processes route and end calls concurrently against one segment.
TEST_F(SharedTest, ManyProcessesShareOneState) {
  std::string name = Name("multi");
  auto parent = MakeRouter(kYaml, RouterOptions{.shared = name});
  const int kProcs = 4, kCalls = 2000, kKeys = 40;
  std::string dir = ::testing::TempDir();
  std::vector<pid_t> pids;
  for (int p = 0; p < kProcs; ++p) {
    pid_t pid = fork();
    if (pid == 0) {
      absl::StatusOr<std::unique_ptr<Router>> r = Router::Attach(name);
      if (!r.ok()) _exit(3);
      std::ofstream out(dir + "/approute-mp-" + std::to_string(getpid()));
      for (int i = 0; i < kCalls; ++i) {
        std::string cid = "p" + std::to_string(p) + "-" + std::to_string(i);
        std::string key = "dom" + std::to_string((i * 7 + p) % kKeys);
        RouteRequest req{.app = "conference", .call_id = cid, .key = key};
        absl::StatusOr<Decision> d = (*r)->Route(req);
        if (!d.ok() || !d->ok) _exit(4);
        out << "aff " << key << " " << d->node_id << " " << cid << " " << (i % 3 == 0 ? "live" : "ended") << "\n";
        if (i % 3 != 0 && !(*r)->End(cid).ok()) _exit(5);
        RouteRequest rr{.app = (i % 2) ? "rr" : "wrr", .call_id = "rr-" + cid};
        absl::StatusOr<Decision> d2 = (*r)->Route(rr);
        if (!d2.ok() || !d2->ok || !(*r)->End(rr.call_id).ok()) _exit(6);
      }
      out.close();
      _exit(0);
    }
    pids.push_back(pid);
  }
  for (pid_t pid : pids) {
    int status = 0;
    waitpid(pid, &status, 0);
    ASSERT_TRUE(WIFEXITED(status)) << "child killed";
    ASSERT_EQ(WEXITSTATUS(status), 0) << "child failed";
  }
  std::map<std::string, std::set<std::string>> key_nodes;
  std::map<std::string, int> live_per_node;
  int live = 0;
  for (pid_t pid : pids) {
    std::ifstream in(dir + "/approute-mp-" + std::to_string(pid));
    std::string tag, key, node, cid, state;
    while (in >> tag >> key >> node >> cid >> state) {
      key_nodes[key].insert(node);
      if (state == "live") {
        ++live;
        live_per_node[node]++;
      }
    }
    std::remove((dir + "/approute-mp-" + std::to_string(pid)).c_str());
  }
  ASSERT_EQ(key_nodes.size(), static_cast<size_t>(kKeys));
  for (const auto& [key, nodes] : key_nodes) EXPECT_EQ(nodes.size(), 1u) << key << " went to several nodes";
  EXPECT_EQ(parent->Stats().sessions, live);
  for (const char* n : {"m1", "m2", "m3"}) EXPECT_EQ(Sessions(*parent, n, "calls"), live_per_node[n]) << n;
  for (const char* n : {"r1", "r2", "r3", "r4"}) {
    EXPECT_EQ(Sessions(*parent, n, "calls"), 0) << n;
    // kProcs * kCalls calls over 4 equal nodes, half by rr and half by smooth wrr: exactly even.
    EXPECT_EQ(parent->Node(n)->routed_total, static_cast<uint64_t>(kProcs * kCalls / 4)) << n;
  }
  EXPECT_EQ(parent->Stats().affinities, kKeys);
}

}  // namespace
}  // namespace approute
