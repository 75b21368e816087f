// The eviction policies and their registry.
#include "daemon/policy/eviction.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace tensord::policy {

const char* RemovalReasonName(RemovalReason r) {
  switch (r) {
    case RemovalReason::kDeleted:
      return "deleted";
    case RemovalReason::kDemoted:
      return "demoted";
    case RemovalReason::kEvicted:
      return "evicted";
  }
  return "?";
}

absl::StatusOr<std::unique_ptr<EvictionPolicy>> MakeEvictionPolicy(absl::string_view name) {
  if (name == "lru") return std::make_unique<LruPolicy>();
  return absl::InvalidArgumentError(
      absl::StrCat("unknown eviction policy '", name, "' (known: lru)"));
}

void LruPolicy::Insert(Handle h, Footprint f) {
  if (where_.contains(h)) return;
  order_.push_front(Entry{h, f});
  where_.emplace(h, order_.begin());
}

void LruPolicy::Access(Handle h) {
  auto it = where_.find(h);
  if (it != where_.end()) order_.splice(order_.begin(), order_, it->second);
}

void LruPolicy::Pin(Handle h) {
  if (auto it = where_.find(h); it != where_.end()) ++it->second->pins;
}

void LruPolicy::Unpin(Handle h) {
  if (auto it = where_.find(h); it != where_.end() && it->second->pins > 0) --it->second->pins;
}

void LruPolicy::Remove(Handle h, RemovalReason) {
  auto it = where_.find(h);
  if (it == where_.end()) return;
  order_.erase(it->second);
  where_.erase(it);
}

void LruPolicy::Victims(const Demand& demand, absl::FunctionRef<Verdict(Handle)> visit) const {
  uint64_t taken = 0;
  for (auto it = order_.rbegin(); it != order_.rend() && taken < demand.bytes; ++it) {
    if (it->pins > 0) continue;
    if (!demand.spaces.empty() &&
        std::find(demand.spaces.begin(), demand.spaces.end(), it->f.space) == demand.spaces.end()) {
      continue;
    }
    switch (visit(it->h)) {
      case Verdict::kTake:
        taken += it->f.bytes;
        break;
      case Verdict::kSkip:
        break;
      case Verdict::kStop:
        return;
    }
  }
}

}  // namespace tensord::policy
