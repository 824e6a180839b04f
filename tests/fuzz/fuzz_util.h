// fuzz_util.h — what the harnesses compare: a router's visible state as text.
#ifndef APPROUTE_TESTS_FUZZ_FUZZ_UTIL_H_
#define APPROUTE_TESTS_FUZZ_FUZZ_UTIL_H_

#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>

#include "approute/router.h"

namespace approute::fuzz {

// Every field of every node, sorted by id (Nodes() order is slot order), and
// the table counts. Two equal strings mean no visible change.
inline std::string Describe(const Router& r) {
  std::ostringstream o;
  o.precision(17);
  std::map<std::string, const NodeStatus*> by_id;
  std::vector<NodeStatus> nodes = r.Nodes();
  for (const NodeStatus& n : nodes) by_id[n.spec.id] = &n;
  for (const auto& [id, n] : by_id) {
    const NodeSpec& s = n->spec;
    o << id << '|' << s.uri << '|' << s.pool << '|' << s.weight << '|' << s.priority << '|' << static_cast<int>(s.state)
      << '|' << static_cast<int>(n->health) << '|' << n->origin << '|' << n->lease_expires_ms << '|'
      << n->load_updated_ms << '|' << n->routed_total << '|' << n->ejected_until_ms << '|' << n->latency_ewma_ms << '|'
      << n->error_rate;
    for (const auto& [k, v] : s.capacity) o << " cap:" << k << '=' << v;
    for (const auto& [k, v] : s.attrs) o << " attr:" << k << '=' << v;
    for (const auto& [k, v] : n->sessions) o << " ses:" << k << '=' << v;
    for (const auto& [k, v] : n->load) o << " load:" << k << '=' << v;
    for (const auto& [k, v] : n->quality) o << " q:" << k << '=' << v;
    o << '\n';
  }
  RouterStats st = r.Stats();
  o << "nodes=" << st.nodes << " sessions=" << st.sessions << " affinities=" << st.affinities << " max=" << st.max_nodes
    << '/' << st.max_sessions << '/' << st.max_affinities << '\n';
  return o.str();
}

// A failed property: print both sides and abort, so libFuzzer records the input.
[[noreturn]] inline void Fail(const char* what, const std::string& a = "", const std::string& b = "") {
  std::fprintf(stderr, "property failed: %s\n--- before\n%s--- after\n%s", what, a.c_str(), b.c_str());
  std::abort();
}

}  // namespace approute::fuzz

#endif  // APPROUTE_TESTS_FUZZ_FUZZ_UTIL_H_
