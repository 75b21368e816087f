#include "daemon/policy/eviction.h"

namespace tensord::policy {

void LruPolicy::Insert(Handle h) {
  if (where_.contains(h)) return;
  order_.push_front(h);
  where_.emplace(h, order_.begin());
}

void LruPolicy::Access(Handle h) {
  auto it = where_.find(h);
  if (it != where_.end()) order_.splice(order_.begin(), order_, it->second);
}

void LruPolicy::Remove(Handle h) {
  auto it = where_.find(h);
  if (it == where_.end()) return;
  order_.erase(it->second);
  where_.erase(it);
}

void LruPolicy::Victims(absl::FunctionRef<bool(Handle)> visit) const {
  for (auto it = order_.rbegin(); it != order_.rend(); ++it) {
    if (!visit(*it)) return;
  }
}

}  // namespace tensord::policy
