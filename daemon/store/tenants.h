// Tenants: who owns which namespace, and each tenant's quotas. Index 0 is no tenant: the
// operator's view (every namespace) and the namespaces no tenant owns; index i + 1 is the
// configuration's i-th [[tenant]]. Immutable after construction, so shared without a lock.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "common/config.h"

namespace tensord::store {

using TenantId = uint16_t;
inline constexpr TenantId kNoTenant = 0;

class Tenants {
 public:
  Tenants() = default;
  explicit Tenants(std::vector<TenantConfig> configs) : configs_(std::move(configs)) {}

  // Whether tenants are configured at all (without, every peer is the operator).
  bool enabled() const { return !configs_.empty(); }
  // Tenant ids, kNoTenant included.
  size_t size() const { return configs_.size() + 1; }
  // Returns the tenant that owns `ns`, or kNoTenant.
  TenantId OwnerOf(absl::string_view ns) const;
  // Whether `tenant` may touch `ns`: its own namespaces; kNoTenant may touch every one.
  bool Allows(TenantId tenant, absl::string_view ns) const {
    return tenant == kNoTenant || OwnerOf(ns) == tenant;
  }
  // Returns the tenant that lists `uid`, or nullopt.
  std::optional<TenantId> ByUid(uid_t uid) const;
  // Returns the tenant a peer is: a uid listed by a tenant first, then a gid (its primary or a
  // supplementary one) listed by a tenant; nullopt when it is none of them.
  std::optional<TenantId> Identify(uid_t uid, gid_t gid, std::span<const gid_t> groups) const;
  // The configuration of tenant `t` (not kNoTenant).
  const TenantConfig& config(TenantId t) const { return configs_[t - 1]; }
  std::string name(TenantId t) const { return t == kNoTenant ? "" : configs_[t - 1].name; }

 private:
  std::vector<TenantConfig> configs_;
};

// Whether `ns` matches `pattern`: equal to it, or, for a pattern ending in '*', starting with
// what comes before the '*'.
bool NamespaceMatches(absl::string_view pattern, absl::string_view ns);

}  // namespace tensord::store
