// Tenant quotas and their accounting: sessions, leases, and the SSD and GPU bytes of each
// tenant's copies (its host bytes are its own pools, a hard partition). Quotas are checked when
// a copy is booked; moves already in flight at that moment can pass a quota by their size.
#include "absl/strings/str_cat.h"
#include "daemon/store/store.h"

namespace tensord::store {

absl::Status Store::QuotaAllows(TenantId tenant, TierId t, uint64_t nbytes, bool count) {
  if (tenant == kNoTenant || t == TierId::kHost) return absl::OkStatus();
  const TenantConfig& cfg = options_.tenants.config(tenant);
  TenantUse& use = tenant_use_[tenant];
  const bool gpu = t == TierId::kGpu;
  const uint64_t limit = gpu ? cfg.gpu_bytes : cfg.ssd_bytes;
  const uint64_t used = gpu ? use.gpu_bytes : use.ssd_bytes;
  if (gpu) {
    // One IPC handle maps a whole arena: a tenant given one could reach every GPU tensor.
    return absl::PermissionDeniedError(absl::StrCat(
        "tenant '", cfg.name, "' has no GPU memory (the GPU tier serves the operator only)"));
  }
  if (limit == 0 || used + nbytes <= limit) return absl::OkStatus();
  if (count) ++use.quota_rejections;
  return absl::ResourceExhaustedError(absl::StrCat("tenant '", cfg.name, "' would hold ",
                                                   used + nbytes, " bytes on ", tiers::TierName(t),
                                                   ", over its quota of ", limit));
}

absl::Status Store::LeaseQuotaAllows(TenantId tenant) {
  if (tenant == kNoTenant) return absl::OkStatus();
  const TenantConfig& cfg = options_.tenants.config(tenant);
  TenantUse& use = tenant_use_[tenant];
  if (cfg.max_leases == 0 || use.leases < cfg.max_leases) return absl::OkStatus();
  ++use.quota_rejections;
  return absl::ResourceExhaustedError(absl::StrCat("tenant '", cfg.name, "' holds ", use.leases,
                                                   " leases, its maximum; Release some"));
}

void Store::CountDenied(std::optional<TenantId> tenant) {
  absl::MutexLock lock(&mu_);
  ++counters_.peer_denied;
  if (tenant && *tenant < tenant_use_.size()) ++tenant_use_[*tenant].denied;
}

void Store::ChargeCopy(const Object& o, TierId t, int sign) {
  if (t == TierId::kHost || t == TierId::kRemote) return;
  TenantUse& use = tenant_use_[o.tenant];
  uint64_t& bytes = t == TierId::kGpu ? use.gpu_bytes : use.ssd_bytes;
  const uint64_t n = o.copy(t).range.reserved;
  bytes = sign > 0 ? bytes + n : bytes - std::min(bytes, n);
}

void Store::TenantStatsLocked(StoreStats* st) const {
  if (!options_.tenants.enabled()) return;
  st->tenants.resize(options_.tenants.size());
  for (TenantId t = 0; t < st->tenants.size(); ++t) {
    TenantStats& ts = st->tenants[t];
    const TenantUse& use = tenant_use_[t];
    ts.name = options_.tenants.name(t);
    ts.sessions = use.sessions;
    ts.leases = use.leases;
    ts.ssd_bytes = use.ssd_bytes;
    ts.gpu_bytes = use.gpu_bytes;
    ts.quota_rejections = use.quota_rejections;
    ts.denied_requests = use.denied;
  }
  const std::vector<tiers::TierUsage> host = HostUseByTenant();
  for (TenantId t = 0; t < host.size(); ++t) {
    st->tenants[t].host_capacity_bytes = host[t].capacity_bytes;
    st->tenants[t].host_used_bytes = host[t].used_bytes;
  }
}

std::vector<tiers::TierUsage> Store::HostUseByTenant() const {
  std::vector<tiers::TierUsage> out(options_.tenants.size());
  const memory::PoolSet& pools = host_->pools();
  for (uint32_t i = 0; i < pools.size(); ++i) {
    const memory::AllocatorStats a = pools[i].allocator->Stats();
    out[pools[i].tenant].capacity_bytes += a.capacity_bytes;
    out[pools[i].tenant].used_bytes += a.used_bytes;
  }
  return out;
}

}  // namespace tensord::store
