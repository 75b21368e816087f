// Pool selection: exact classes first (O(1), unfragmented), the general allocator otherwise.
#include "daemon/memory/pool_set.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace tensord::memory {

uint32_t PoolSet::Add(std::string name, uint32_t arena, bool fixed,
                      std::unique_ptr<Allocator> allocator, uint16_t tenant) {
  pools_.push_back(Pool{std::move(name), arena, fixed, std::move(allocator), tenant});
  return static_cast<uint32_t>(pools_.size() - 1);
}

absl::StatusOr<std::vector<uint32_t>> PoolSet::Candidates(uint64_t nbytes,
                                                          absl::string_view pool_name,
                                                          uint16_t tenant) const {
  std::vector<uint32_t> out;
  if (tenant != 0 && !pool_name.empty()) {
    bool has = false;
    for (const Pool& p : pools_) has |= p.tenant == tenant && p.name == pool_name;
    if (!has) pool_name = {};  // a tenant's memory has no such class: its best fit
  }
  if (!pool_name.empty()) {
    for (uint32_t i = 0; i < pools_.size(); ++i) {
      if (pools_[i].name != pool_name || pools_[i].tenant != tenant) continue;
      if (!pools_[i].allocator->Fits(nbytes)) {
        return absl::InvalidArgumentError(absl::StrCat(nbytes, " bytes never fit pool '", pool_name,
                                                       "' (block size ",
                                                       pools_[i].allocator->Reserved(1), ")"));
      }
      out.push_back(i);
    }
    if (out.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("unknown pool '", pool_name, "'"));
    }
    return out;
  }
  std::vector<uint32_t> fixed;
  for (uint32_t i = 0; i < pools_.size(); ++i) {
    const Allocator& a = *pools_[i].allocator;
    if (pools_[i].tenant == tenant && pools_[i].fixed && a.Fits(nbytes) &&
        a.Reserved(nbytes) / 2 <= nbytes) {
      fixed.push_back(i);
    }
  }
  std::sort(fixed.begin(), fixed.end(), [&](uint32_t a, uint32_t b) {
    return pools_[a].allocator->Reserved(1) < pools_[b].allocator->Reserved(1);
  });
  out = std::move(fixed);
  for (uint32_t i = 0; i < pools_.size(); ++i) {
    if (pools_[i].tenant == tenant && !pools_[i].fixed && pools_[i].allocator->Fits(nbytes)) {
      out.push_back(i);
    }
  }
  if (out.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(nbytes, " bytes fit no pool of this tier (is the tier large enough?)"));
  }
  return out;
}

}  // namespace tensord::memory
