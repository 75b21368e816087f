// The look-ahead queue: ranks, the protected window and expiry.
#include "daemon/policy/lookahead.h"

#include <algorithm>

namespace tensord::policy {

LookAhead::Added LookAhead::Add(Handle h, uint64_t bytes, uint8_t tier, int device,
                                absl::Time expiry) {
  if (auto it = where_.find(h); it != where_.end()) {
    Hinted& e = *it->second;
    if (expiry > e.expiry) {
      e.expiry = expiry;
      expiries_.erase(e.expiry_at);
      e.expiry_at = expiries_.emplace(expiry, h);
    }
    return Added::kRefreshed;
  }
  if (where_.size() >= max_entries_) return Added::kFull;
  order_.push_back(Hinted{h, bytes, tier, device, expiry});
  auto it = std::prev(order_.end());
  it->expiry_at = expiries_.emplace(expiry, h);
  where_.emplace(h, it);
  if (frontier_ == order_.end()) frontier_ = it;
  return Added::kAdded;
}

void LookAhead::Erase(Order::iterator it) {
  if (it->in_window) window_bytes_[it->tier] -= it->bytes;
  if (it == frontier_) ++frontier_;
  expiries_.erase(it->expiry_at);
  where_.erase(it->h);
  order_.erase(it);
}

std::optional<Hinted> LookAhead::Take(Handle h) {
  auto it = where_.find(h);
  if (it == where_.end()) return std::nullopt;
  Hinted out = *it->second;
  Erase(it->second);
  return out;
}

Hinted* LookAhead::Find(Handle h) {
  auto it = where_.find(h);
  return it == where_.end() ? nullptr : &*it->second;
}

void LookAhead::Expire(absl::Time now, absl::FunctionRef<void(const Hinted&)> gone) {
  while (!expiries_.empty() && expiries_.begin()->first <= now) {
    auto it = where_.find(expiries_.begin()->second)->second;
    gone(*it);
    Erase(it);
  }
}

void LookAhead::Extend(const std::array<uint64_t, kHintTiers>& budget,
                       absl::FunctionRef<void(Hinted&)> entered) {
  while (frontier_ != order_.end()) {
    Hinted& e = *frontier_;
    if (window_bytes_[e.tier] > 0 && window_bytes_[e.tier] + e.bytes > budget[e.tier]) return;
    window_bytes_[e.tier] += e.bytes;
    e.in_window = true;
    ++frontier_;
    entered(e);
  }
}

std::vector<Hinted*> LookAhead::NextMoves(
    size_t max, absl::FunctionRef<bool(const Hinted&, const Hinted&)> together) {
  std::vector<Hinted*> out;
  while (!to_move_.empty() && out.size() < max) {
    Hinted* e = Find(to_move_.front());
    if (e == nullptr || e->issued || !e->in_window) {
      to_move_.pop_front();  // read, gone or moved meanwhile
      continue;
    }
    if (!out.empty() && !together(*out.front(), *e)) break;
    to_move_.pop_front();
    out.push_back(e);
  }
  return out;
}

}  // namespace tensord::policy
