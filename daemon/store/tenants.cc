// Namespace ownership and peer identification for tenants (a handful of tenants with a few
// patterns each: linear scans).
#include "daemon/store/tenants.h"

#include <algorithm>

#include "absl/strings/match.h"

namespace tensord::store {

bool NamespaceMatches(absl::string_view pattern, absl::string_view ns) {
  if (absl::EndsWith(pattern, "*")) {
    pattern.remove_suffix(1);
    return absl::StartsWith(ns, pattern);
  }
  return pattern == ns;
}

TenantId Tenants::OwnerOf(absl::string_view ns) const {
  for (size_t i = 0; i < configs_.size(); ++i) {
    for (const std::string& p : configs_[i].namespaces) {
      if (NamespaceMatches(p, ns)) return static_cast<TenantId>(i + 1);
    }
  }
  return kNoTenant;
}

std::optional<TenantId> Tenants::ByUid(uid_t uid) const {
  for (size_t i = 0; i < configs_.size(); ++i) {
    const auto& uids = configs_[i].uids;
    if (std::find(uids.begin(), uids.end(), uid) != uids.end()) {
      return static_cast<TenantId>(i + 1);
    }
  }
  return std::nullopt;
}

std::optional<TenantId> Tenants::Identify(uid_t uid, gid_t gid,
                                          std::span<const gid_t> groups) const {
  if (auto t = ByUid(uid)) return t;
  for (size_t i = 0; i < configs_.size(); ++i) {
    for (gid_t g : configs_[i].gids) {
      if (g == gid || std::find(groups.begin(), groups.end(), g) != groups.end()) {
        return static_cast<TenantId>(i + 1);
      }
    }
  }
  return std::nullopt;
}

}  // namespace tensord::store
