// SlruPolicy: segmented LRU whose entry level comes from a history of evicted ids' use counts
// (eviction.h says why). Ordering only; tracking, pins and chains are TrackedPolicy's.
#include <algorithm>

#include "daemon/policy/eviction.h"

namespace tensord::policy {
namespace {

constexpr size_t kMinHistory = 1024;
constexpr uint8_t kMaxUses = 255;
// Work per call, so that no single call stalls the store's lock after a mass eviction or
// delete: levels and the history converge over the following calls instead.
constexpr int kRebalanceSteps = 8;
constexpr size_t kForgetSteps = 4;

}  // namespace

void SlruPolicy::Place(Handle h, Entry& e, int level, bool victim_end) {
  auto& list = levels_[level];
  e.pos = victim_end ? list.insert(list.end(), h) : list.insert(list.begin(), h);
  e.queue = static_cast<uint8_t>(level);
  level_bytes_[level] += e.f.bytes;
}

void SlruPolicy::Move(Entry& e, int level) {
  level_bytes_[e.queue] -= e.f.bytes;
  levels_[level].splice(levels_[level].begin(), levels_[e.queue], e.pos);
  e.queue = static_cast<uint8_t>(level);
  level_bytes_[level] += e.f.bytes;
}

void SlruPolicy::Rebalance() {
  const uint64_t share = tracked_bytes() / kLevels;
  int steps = kRebalanceSteps;
  for (int l = kLevels - 1; l > 0; --l) {
    auto& list = levels_[l];
    while (level_bytes_[l] > share && !list.empty() && steps-- > 0) {
      Move(EntryOf(list.back()), l - 1);
    }
  }
}

int SlruPolicy::LevelFor(const Entry& e, int wanted) const {
  // A copy larger than a level's share would push the whole level down: it stays at the
  // bottom, where its size alone makes it an early victim anyway.
  return e.f.bytes * kLevels > tracked_bytes() ? 0 : std::min(wanted, kLevels - 1);
}

void SlruPolicy::OnInsert(Handle h, Entry& e) {
  const uint32_t past = history_.Take(e.f.id).value_or(0);
  // A write is a use; a copy that came by a move brings only its past ones (at least one).
  e.freq = static_cast<uint8_t>(std::clamp<uint32_t>(past + (e.f.moved ? 0 : 1), 1, kMaxUses));
  if (LowReuse(e.f.space)) {
    Place(h, e, 0, /*victim_end=*/true);
  } else {
    Place(h, e, LevelFor(e, e.freq - 1));
  }
  Rebalance();
}

void SlruPolicy::OnAccess(Handle, Entry& e) {
  if (e.freq < kMaxUses) ++e.freq;
  Move(e, LevelFor(e, e.queue + 1));
  Rebalance();
}

void SlruPolicy::OnRemove(Handle, Entry& e, RemovalReason why) {
  levels_[e.queue].erase(e.pos);
  level_bytes_[e.queue] -= e.f.bytes;
  // A deleted tensor is gone; a demoted or evicted one may come back, with its uses.
  if (why != RemovalReason::kDeleted && e.f.id != 0) Remember(e.f.id, e.freq);
}

void SlruPolicy::Remember(uint64_t id, uint32_t uses) {
  history_.Remember(
      id, uses,
      std::max(kMinHistory, static_cast<size_t>(options().history_factor * double(size()))),
      kForgetSteps);
}

void SlruPolicy::Scan(absl::FunctionRef<bool(Handle)> offer) {
  for (const auto& list : levels_) {
    for (auto it = list.rbegin(); it != list.rend(); ++it) {  // least recent first
      if (!offer(*it)) return;
    }
  }
}

}  // namespace tensord::policy
