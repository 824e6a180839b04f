#include "routing/policies.h"

#include <cstring>

#include "state/stats.h"
#include "util/str_util.h"

namespace approute::internal {

const Policy* Policies::Find(std::string_view app) const {
  if (by_name.size() <= 8) {  // the usual few apps: a scan beats building a key string and hashing it
    const Policy* fallback = nullptr;
    for (const auto& [name, p] : by_name) {
      if (name == app) return p.get();
      if (name == "default") fallback = p.get();
    }
    return fallback;
  }
  if (auto it = by_name.find(ToAlphaNum(app)); it != by_name.end()) return it->second.get();
  if (auto d = by_name.find("default"); d != by_name.end()) return d->second.get();
  return nullptr;
}

uint32_t PolicyStore::AppSlotLocked(std::string_view name) const {
  Header& h = region_.header();
  for (uint32_t a = 0; a < kMaxApps; ++a) {
    if (h.apps[a].in_use && GetFixed(h.apps[a].name) == name) return a;
  }
  return kNil;
}

void PolicyStore::StoreLocked(const Config& cfg) {
  Header& h = region_.header();
  for (uint32_t a = 0; a < kMaxApps; ++a) {
    if (h.apps[a].in_use && !cfg.apps.count(std::string(GetFixed(h.apps[a].name)))) h.apps[a].in_use = 0;
  }
  for (const auto& [name, app] : cfg.apps) {
    if (AppSlotLocked(name) != kNil) continue;
    for (uint32_t a = 0; a < kMaxApps; ++a) {
      if (!h.apps[a].in_use) {
        SetFixed(h.apps[a].name, name);
        h.apps[a].ticket.store(0);
        RouterCounters::Reset(h.apps[a].counters);
        std::fill_n(region_.app_slots(a), region_.max_nodes(), 0);
        std::atomic_signal_fence(std::memory_order_seq_cst);
        h.apps[a].in_use = 1;
        break;
      }
    }
  }
  uint32_t next = 1 - (h.config_active.load(std::memory_order_relaxed) & 1);
  size_t n = std::min(cfg.text.size(), kConfigBytes);
  std::memcpy(h.config[next], cfg.text.data(), n);
  h.config_len[next] = static_cast<uint32_t>(n);
  h.config_active.store(next, std::memory_order_release);  // the commit point
  h.config_generation.fetch_add(1, std::memory_order_release);
}

std::string PolicyStore::StoredText() const {
  Header& h = region_.header();
  uint32_t a = h.config_active.load(std::memory_order_acquire) & 1;
  return std::string(h.config[a], std::min<size_t>(h.config_len[a], kConfigBytes));
}

absl::Status PolicyStore::Prepare(const Config& cfg, std::string_view source) {
  absl::flat_hash_map<std::string, std::unique_ptr<Strategy>> ready;
  for (const auto& [name, app] : cfg.apps) {
    absl::StatusOr<std::unique_ptr<Strategy>> st =
        MakeStrategyWith(resolver_.get(), app.strategy, app.strategy_params, true);
    if (!st.ok()) {
      return absl::InvalidArgumentError(Cat(source, ": apps.", name, ".strategy: ", st.status().message()));
    }
    ready[name] = *std::move(st);
  }
  absl::flat_hash_map<std::string, std::unique_ptr<Strategy>> old;  // destroyed after the lock
  std::lock_guard l(prepared_mu_);
  old.swap(prepared_);
  prepared_ = std::move(ready);
  prepared_text_ = cfg.text;
  return absl::OkStatus();
}

std::unique_ptr<Strategy> PolicyStore::TakePrepared(const std::string& text, const std::string& app) {
  std::lock_guard l(prepared_mu_);
  if (text != prepared_text_) return nullptr;
  auto it = prepared_.find(app);
  if (it == prepared_.end()) return nullptr;
  std::unique_ptr<Strategy> s = std::move(it->second);
  prepared_.erase(it);
  return s;
}

absl::StatusOr<std::shared_ptr<const Policies>> PolicyStore::Get() {
  Header& h = region_.header();
  uint64_t gen = h.config_generation.load(std::memory_order_acquire);
  {
    std::shared_lock l(mu_);
    if (policies_ && policies_->generation == gen) return policies_;
  }
  std::string text;
  auto pol = std::make_shared<Policies>();
  {
    RegistryLock g(h);
    pol->generation = h.config_generation.load(std::memory_order_acquire);
    text = StoredText();
  }
  absl::StatusOr<Config> cfg = ParseConfig(text, "<stored configuration>", resolver_.get());
  if (!cfg.ok()) return cfg.status();
  pol->health = cfg->health;
  pol->status = cfg->status;
  pol->sources = *NetList::Parse(cfg->status.allow_sources);
  pol->uris = *NetList::Parse(cfg->status.allow_uris.empty() ? cfg->status.allow_sources : cfg->status.allow_uris);
  std::vector<std::shared_ptr<Policy>> made;
  {
    RegistryLock g(h);
    for (auto& [name, app] : cfg->apps) {
      auto p = std::make_shared<Policy>();
      p->app_slot = AppSlotLocked(name);
      p->resource = nodes_.ResourceIndexLocked(app.resource, false);
      if (p->app_slot == kNil || p->resource == kNil) continue;  // a newer config is being applied
      bool all = true;
      for (size_t i = 1; i < app.resources.size(); ++i) {
        const uint32_t r = nodes_.ResourceIndexLocked(app.resources[i], false);
        if (r == kNil)
          all = false;
        else
          p->extra |= 1u << r;
      }
      if (!all) continue;
      p->config = app;
      p->health = cfg->health;
      made.push_back(std::move(p));
    }
  }
  for (auto& p : made) {
    if (std::unique_ptr<Strategy> ready = TakePrepared(text, p->config.name)) {
      p->strategy = std::move(ready);
    } else {
      absl::StatusOr<std::unique_ptr<Strategy>> st =
          MakeStrategyWith(resolver_.get(), p->config.strategy, p->config.strategy_params, false);
      if (!st.ok()) {
        return absl::Status(st.status().code(), Cat("apps.", p->config.name, ".strategy: ", st.status().message()));
      }
      p->strategy = *std::move(st);
    }
    p->compact = dynamic_cast<const CompactStrategy*>(p->strategy.get());
    pol->by_slot[p->app_slot] = p;
    pol->by_name[p->config.name] = p;
  }
  std::shared_ptr<const Policies> old;  // dropped after the lock: strategies may need the GIL
  std::unique_lock l(mu_);
  if (!policies_ || policies_->generation < pol->generation) {
    old = std::move(policies_);
    policies_ = pol;
  }
  return policies_;
}

absl::StatusOr<const Policies*> PolicyStore::Cached() {
  thread_local Cache cache;
  return Cached(cache);
}

absl::StatusOr<const Policies*> PolicyStore::Cached(Cache& cache) {
  uint64_t gen = region_.header().config_generation.load(std::memory_order_acquire);
  if (cache.router != router_id_) cache = Cache{router_id_, nullptr};
  if (!cache.policies || cache.policies->generation != gen) {
    absl::StatusOr<std::shared_ptr<const Policies>> p = Get();
    if (!p.ok()) return p.status();
    cache.policies = *std::move(p);
  }
  return cache.policies.get();
}

}  // namespace approute::internal
