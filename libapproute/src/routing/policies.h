// policies.h — the parsed configuration every process routes by: one
// Policy per app (its config, resource index, app slot and strategy), the
// status and health settings, and the stored YAML they come from.
//
// Owns: the stored configuration text (Header::config, double-buffered),
// the app slots (Header::apps), Header::config_generation; in this process,
// the parsed Policies and the strategies built for them.
// Locking: the stored text and app slots change under the registry mutex;
// each process parses the text again when config_generation moves (a
// per-thread cache makes the hot path lock-free). Strategies are built
// without the region's lock: a Python one imports code.
// Crash: the text is written to the inactive buffer and published by one
// store, so a process killed while storing leaves the old text intact.
#ifndef APPROUTE_SRC_ROUTING_POLICIES_H_
#define APPROUTE_SRC_ROUTING_POLICIES_H_

#include <algorithm>
#include <cstdint>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "approute/config.h"
#include "approute/strategy.h"
#include "routing/compact_pick.h"
#include "state/node_table.h"
#include "state/region.h"
#include "util/net.h"

namespace approute::internal {

struct Policy {
  AppConfig config;
  HealthConfig health;  // router-wide, copied here for the hot path
  uint32_t app_slot = 0;
  uint32_t resource = 0;
  // Bit r: a session also takes a unit of resource r (config.resources past
  // the first); 0 for an app of one resource.
  uint32_t extra = 0;
  std::unique_ptr<Strategy> strategy;
  // The strategy's compact pick (compact_pick.h), or nullptr: it needs the
  // full candidates.
  const CompactStrategy* compact = nullptr;
  bool IsRetryCode(int code) const {
    return std::find(config.retry_codes.begin(), config.retry_codes.end(), code) != config.retry_codes.end();
  }
  bool IsFullCode(int code) const {
    return std::find(config.full_codes.begin(), config.full_codes.end(), code) != config.full_codes.end();
  }
};

struct Policies {
  uint64_t generation = 0;
  HealthConfig health;
  StatusConfig status;
  NetList sources;  // status.allow_sources
  NetList uris;     // status.allow_uris (or allow_sources)
  absl::flat_hash_map<std::string, std::shared_ptr<Policy>> by_name;
  std::vector<std::shared_ptr<Policy>> by_slot = std::vector<std::shared_ptr<Policy>>(kMaxApps);

  // The policy for `app`, else the "default" one; nullptr when neither exists.
  const Policy* Find(std::string_view app) const;
};

class PolicyStore {
 public:
  PolicyStore(const Region& region, NodeTable& nodes, uint64_t router_id)
      : region_(region), nodes_(nodes), router_id_(router_id) {}

  void SetResolver(std::shared_ptr<StrategyResolver> r) { resolver_ = std::move(r); }
  StrategyResolver* resolver() const { return resolver_.get(); }

  // Builds every app's strategy of `cfg` (strict: an error rejects the
  // configuration) and keeps them for the first Get() of that text, so each
  // is constructed once.
  absl::Status Prepare(const Config& cfg, std::string_view source);
  // Stores cfg's text and assigns app slots (registry mutex held).
  void StoreLocked(const Config& cfg);
  std::string StoredText() const;

  // The policies of the stored configuration, parsed again when it changed.
  absl::StatusOr<std::shared_ptr<const Policies>> Get();
  // The same through a per-thread cache: no lock while nothing changed.
  absl::StatusOr<const Policies*> Cached();
  // The same through a cache the caller keeps (one thread's, e.g. inside a
  // thread_local it shares with other caches: one TLS lookup for all).
  struct Cache {
    uint64_t router = 0;
    std::shared_ptr<const Policies> policies;
  };
  absl::StatusOr<const Policies*> Cached(Cache& cache);

 private:
  uint32_t AppSlotLocked(std::string_view name) const;
  std::unique_ptr<Strategy> TakePrepared(const std::string& text, const std::string& app);

  const Region& region_;
  NodeTable& nodes_;
  const uint64_t router_id_;
  std::shared_ptr<StrategyResolver> resolver_;
  std::shared_mutex mu_;  // guards policies_ (the pointer)
  std::shared_ptr<const Policies> policies_;
  std::mutex prepared_mu_;
  absl::flat_hash_map<std::string, std::unique_ptr<Strategy>> prepared_;
  std::string prepared_text_;
};

}  // namespace approute::internal

#endif  // APPROUTE_SRC_ROUTING_POLICIES_H_
