// The look-ahead queue (DESIGN.md "Policies"): tensors a scheduler said its next requests will
// read, in the order they will be read. Decisions only: which hinted tensors are inside the
// protected window (rank order, while their bytes fit each tier's budget), which of those still
// need a move up, and which expired. The store guards the window's copies against eviction,
// issues the moves and counts what happened. Handles are the store's (opaque, never 0). Not
// thread-safe: the store calls it under its lock.
#pragma once

#include <array>
#include <cstdint>
#include <deque>
#include <list>
#include <map>
#include <optional>

#include "absl/container/flat_hash_map.h"
#include "absl/functional/function_ref.h"
#include "absl/time/time.h"
#include "daemon/policy/eviction.h"

namespace tensord::policy {

// Tiers a hint can promote to (the store's tier indices).
inline constexpr size_t kHintTiers = 3;

struct Hinted {
  Handle h = 0;
  uint64_t bytes = 0;
  uint8_t tier = 0;  // where it is wanted (a store tier index)
  int device = -1;
  absl::Time expiry;
  bool in_window = false;  // guarded against eviction on `tier`
  bool issued = false;     // a move up was started for it
  bool arrived = false;    // ... and finished
  uint64_t issue = 0;      // which move: a batch's report applies only to the move it started
  std::multimap<absl::Time, Handle>::iterator expiry_at;  // its place in the expiry index
};

class LookAhead {
 public:
  explicit LookAhead(size_t max_entries) : max_entries_(max_entries) {}

  enum class Added { kAdded, kRefreshed, kFull };
  // Appends h (lowest priority so far). A handle already queued keeps its rank and takes the
  // later expiry (kRefreshed); a full queue refuses new handles (kFull).
  Added Add(Handle h, uint64_t bytes, uint8_t tier, int device, absl::Time expiry);
  // Removes h's entry (read, deleted, failed) and returns it.
  std::optional<Hinted> Take(Handle h);
  Hinted* Find(Handle h);
  // Removes every entry expired at `now`, handing each to `gone` first.
  void Expire(absl::Time now, absl::FunctionRef<void(const Hinted&)> gone);
  // Extends the window in rank order while the next entry's bytes fit its tier's budget (bytes
  // already in the window count), calling `entered` for each entry that enters it. An entry
  // that does not fit stops the extension: ranks are never skipped. (One larger than the whole
  // budget enters an empty window alone, so that it cannot block the queue.)
  void Extend(const std::array<uint64_t, kHintTiers>& budget,
              absl::FunctionRef<void(Hinted&)> entered);
  // Queues an entry of the window for a move up, and pops up to `max` of them (rank order)
  // that are still in the window and unissued and go together with the first one popped
  // (`together(first, e)`: same tier, device, namespace).
  void NeedsMove(Handle h) { to_move_.push_back(h); }
  std::vector<Hinted*> NextMoves(size_t max,
                                 absl::FunctionRef<bool(const Hinted&, const Hinted&)> together);

  size_t size() const { return where_.size(); }
  bool empty() const { return where_.empty(); }
  uint64_t window_bytes(size_t tier) const { return window_bytes_[tier]; }

 private:
  using Order = std::list<Hinted>;
  void Erase(Order::iterator it);

  const size_t max_entries_;
  Order order_;                              // rank order
  Order::iterator frontier_ = order_.end();  // the first entry not in the window
  absl::flat_hash_map<Handle, Order::iterator> where_;
  std::array<uint64_t, kHintTiers> window_bytes_ = {};
  std::deque<Handle> to_move_;
  std::multimap<absl::Time, Handle> expiries_;  // every entry, soonest expiry first
};

}  // namespace tensord::policy
