// The public Router: factories, Reload, and forwarding to Router::Impl.
//
// No exception escapes a public method: the core reports errors as statuses,
// and anything unexpected (std::bad_alloc, a library's exception) becomes
// Internal here (ReportResult: 500; views: empty).
#include <exception>

#include "router/router_impl.h"

namespace approute {
namespace {

template <typename F>
auto Guard(F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const std::exception& e) {
    return absl::InternalError(Cat("unexpected error: ", e.what()));
  } catch (...) {
    return absl::InternalError("unexpected error");
  }
}

}  // namespace

Router::Router(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Router::~Router() = default;

absl::StatusOr<std::unique_ptr<Router>> Router::FromYaml(std::string_view yaml, RouterOptions options,
                                                         std::string_view source) {
  return Guard([&]() -> absl::StatusOr<std::unique_ptr<Router>> {
    if (absl::Status s = Impl::CheckUpkeep(options.upkeep_interval_ms); !s.ok()) return s;
    absl::StatusOr<Config> cfg = ParseConfig(yaml, source, options.strategies.get());
    if (!cfg.ok()) return cfg.status();
    absl::StatusOr<std::unique_ptr<Region>> region;
    if (options.shared.empty()) {
      region = Region::CreatePrivate(cfg->state);
    } else {
      bool created = false;
      region = Region::OpenShared(options.shared, cfg->state, &created);
    }
    if (!region.ok()) return region.status();
    auto impl = std::make_unique<Impl>(*std::move(region), options);
    // A segment left by processes that died (a crashed Kamailio) is put right first.
    impl->Recover(options.now_ms ? options.now_ms() : RealNowMs());
    if (absl::Status s = impl->Prepare(*cfg, source); !s.ok()) return s;
    if (absl::Status s = impl->Apply(*cfg); !s.ok()) return s;
    if (absl::Status s = impl->UseCluster(cfg->cluster); !s.ok()) return s;
    impl->SyncClusterMembers();
    impl->StartUpkeep(options.upkeep_interval_ms);
    return std::unique_ptr<Router>(new Router(std::move(impl)));
  });
}

absl::StatusOr<std::unique_ptr<Router>> Router::FromFile(const std::string& path, RouterOptions options) {
  absl::StatusOr<Config> cfg = Guard([&]() -> absl::StatusOr<Config> { return LoadConfigFile(path); });
  if (!cfg.ok()) return cfg.status();
  return FromYaml(cfg->text, std::move(options), path);
}

absl::StatusOr<std::unique_ptr<Router>> Router::Attach(const std::string& shared, RouterOptions options) {
  return Guard([&]() -> absl::StatusOr<std::unique_ptr<Router>> {
    absl::StatusOr<std::unique_ptr<Region>> region = Region::AttachShared(shared);
    if (!region.ok()) return region.status();
    auto impl = std::make_unique<Impl>(*std::move(region), options);
    impl->UseStoredCluster();
    return std::unique_ptr<Router>(new Router(std::move(impl)));
  });
}

absl::StatusOr<bool> Router::Unlink(const std::string& shared) {
  return Guard([&]() -> absl::StatusOr<bool> { return Region::Unlink(shared); });
}

absl::Status Router::Reload(std::string_view yaml, std::string_view source) {
  return Guard([&]() -> absl::Status {
    absl::StatusOr<Config> cfg = ParseConfig(yaml, source, impl_->resolver());
    if (!cfg.ok()) return cfg.status();
    StateLimits have = impl_->limits();
    if (cfg->state.max_nodes != have.max_nodes || cfg->state.max_sessions != have.max_sessions ||
        cfg->state.max_affinities != have.max_affinities) {
      return absl::FailedPreconditionError(
          Cat(source, ": state limits cannot change on reload (the region has max_nodes ", have.max_nodes,
              ", max_sessions ", have.max_sessions, ", max_affinities ", have.max_affinities, ")"));
    }
    if (absl::Status s = impl_->CheckClusterUnchanged(cfg->cluster, source); !s.ok()) return s;
    if (absl::Status s = impl_->Prepare(*cfg, source); !s.ok()) return s;
    return impl_->Apply(*cfg);
  });
}

absl::StatusOr<Decision> Router::Route(const RouteRequest& request) {
  return Guard([&] { return impl_->Route(request); });
}
absl::StatusOr<Decision> Router::Retry(std::string_view call_id, int code) {
  return Guard([&] { return impl_->Retry(call_id, code); });
}
absl::StatusOr<ExplainTrace> Router::Explain(const ExplainRequest& request) const {
  return Guard([&] { return impl_->Explain(request); });
}
absl::Status Router::Confirm(std::string_view call_id) {
  return Guard([&] { return impl_->Confirm(call_id); });
}
absl::Status Router::End(std::string_view call_id) {
  return Guard([&] { return impl_->End(call_id, false); });
}
absl::Status Router::Abandon(std::string_view call_id) {
  return Guard([&] { return impl_->End(call_id, true); });
}
absl::Status Router::AddNode(const NodeSpec& spec) {
  return Guard([&] { return impl_->nodes().Add(spec); });
}
absl::Status Router::UpdateNode(const NodeSpec& spec) {
  return Guard([&] { return impl_->nodes().Update(spec); });
}
absl::Status Router::RemoveNode(std::string_view id) {
  return Guard([&] { return impl_->nodes().Remove(id); });
}
absl::Status Router::Drain(std::string_view id, std::optional<int64_t> deadline_ms) {
  if (deadline_ms && *deadline_ms < 0) {
    return absl::InvalidArgumentError(Cat("drain deadline must be >= 0 ms, got ", *deadline_ms));
  }
  return Guard([&] { return impl_->Drain(id, deadline_ms.value_or(-1)); });
}

absl::Status Router::SetState(std::string_view id, AdminState state) {
  return Guard([&] { return impl_->SetState(id, state); });
}
absl::Status Router::SetHealth(std::string_view id, Health health) {
  return Guard([&] { return impl_->SetHealth(id, health); });
}
absl::Status Router::ReportLoad(std::string_view id, const std::map<std::string, double>& metrics) {
  return Guard([&] { return impl_->ReportLoad(id, metrics); });
}
absl::StatusOr<NodeStatus> Router::Node(std::string_view id) const {
  return Guard([&] { return impl_->Node(id); });
}
ReportResult Router::ApplyReport(const ReportRequest& report) {
  try {
    return impl_->ApplyReport(report);
  } catch (const std::exception& e) {
    return ServerError(Cat("unexpected error: ", e.what()));
  } catch (...) {
    return ServerError("unexpected error");
  }
}
absl::Status Router::ReportProbe(std::string_view id, int code, double rtt_ms) {
  return Guard([&] { return impl_->ReportProbe(id, code, rtt_ms); });
}
absl::Status Router::ReportCallResult(std::string_view id, int code, double latency_ms) {
  return Guard([&] { return impl_->ReportCallResult(id, code, latency_ms); });
}
// Views return plain values: on an unexpected exception they return what
// they have (empty), never throw.
std::vector<NodeStatus> Router::Nodes() const {
  try {
    return impl_->Nodes();
  } catch (...) {
    return {};
  }
}
ClusterStatus Router::Cluster() const {
  try {
    return impl_->ClusterView();
  } catch (...) {
    return {};
  }
}

RouterStats Router::Stats() const {
  try {
    return impl_->Stats();
  } catch (...) {
    return {};
  }
}
std::vector<SessionInfo> Router::Sessions(const ListFilter& filter) const {
  try {
    return impl_->Sessions(filter);
  } catch (...) {
    return {};
  }
}
std::vector<AffinityInfo> Router::Affinities(const ListFilter& filter) const {
  try {
    return impl_->Affinities(filter);
  } catch (...) {
    return {};
  }
}
int64_t Router::Sweep() {
  try {
    return impl_->Sweep();
  } catch (...) {
    return 0;
  }
}
const std::string& Router::shared_name() const { return impl_->name(); }

}  // namespace approute
