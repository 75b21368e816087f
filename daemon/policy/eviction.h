// Eviction policies: pure decision code (DESIGN.md "Policies"). A policy tracks opaque handles
// the store gives it (one per sealed copy in one tier), hears inserts, accesses, pins and
// unpins (leases and moves in flight), and removals with their reason; asked for a demand
// (pools, bytes) it offers only eligible victims: tracked, unpinned, in those pools. It never
// touches memory or performs I/O; the store decides what to do with each victim (drop or demote)
// and says whether it took it. Not thread-safe: the store calls it under its own lock.
//
// Every policy here shares one base (TrackedPolicy): the table of tracked handles with their
// pins, the chain index (the `parent` hint of Create: a KV chain's previous block) and the
// lifetime statistics per pool class. A policy proper only orders its candidates (Scan); the
// base filters them and, when chain-aware, never offers a block before its cached children:
// a prefix lookup stops at the first missing block, so a chain is taken from its tail.
#pragma once

#include <array>
#include <cstdint>
#include <deque>
#include <limits>
#include <list>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/container/inlined_vector.h"
#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/clock.h"

namespace tensord::policy {

using Handle = uintptr_t;

// Why a copy stopped being tracked.
enum class RemovalReason : uint8_t {
  kDeleted = 0,  // Delete, Abort, expiry or the end of its session: the tensor is gone
  kDemoted = 1,  // the copy left this tier; another tier holds the tensor
  kEvicted = 2,  // a CACHE tensor dropped for room (or lost to a failed read)
};
const char* RemovalReasonName(RemovalReason r);

// What a tracked copy is to the policy: the pool it lives in, the bytes it holds there, and
// who it is: `id` names the tensor (a hash of namespace and key, stable across its copies and
// its trips between tiers; 0: anonymous), `parent` the tensor it continues (0: none).
// `moved`: the copy came by a move between tiers (a promotion, a demotion), not a write: its
// arrival is not a use (the Get that asked for a promotion records its own).
struct Footprint {
  uint32_t space = 0;
  uint64_t bytes = 0;
  uint64_t id = 0;
  uint64_t parent = 0;
  bool moved = false;
};

// A request for room: victims from these pools (empty: any) until `bytes` have been taken.
struct Demand {
  std::span<const uint32_t> spaces;
  uint64_t bytes = std::numeric_limits<uint64_t>::max();
};

// The store's answer for each victim offered: taken, refused, taken and enough (kLast), or
// refused and enough (kStop).
enum class Verdict : uint8_t { kTake, kSkip, kStop, kLast };

// What the policy has seen of one pool class's copies: how often a copy is used again after
// its first and second use (its insert is the first), and how long it sat idle between uses.
struct ClassLifetime {
  uint32_t space = 0;
  uint64_t inserted = 0;      // copies tracked so far (first use)
  uint64_t reused = 0;        // ... used a second time while tracked
  uint64_t reused_twice = 0;  // ... and a third time
  uint64_t idle_samples = 0;  // gaps between uses seen
  double idle_mean_s = 0;     // their mean
  double idle_median_s = 0;   // their median (within a factor of 2: a log histogram)
  double ReuseAfter1() const { return inserted ? double(reused) / double(inserted) : 0; }
  double ReuseAfter2() const { return reused ? double(reused_twice) / double(reused) : 0; }
};

class EvictionPolicy {
 public:
  virtual ~EvictionPolicy() = default;
  // Starts tracking `h` (a no-op if tracked), unpinned.
  virtual void Insert(Handle h, Footprint f) = 0;
  // Records a use of `h` (ignored if untracked).
  virtual void Access(Handle h) = 0;
  // A pinned handle is never offered; pins nest (ignored if untracked).
  virtual void Pin(Handle h) = 0;
  virtual void Unpin(Handle h) = 0;
  // Stops tracking `h` (ignored if untracked).
  virtual void Remove(Handle h, RemovalReason why) = 0;
  virtual bool Contains(Handle h) const = 0;
  // Offers eligible handles, best victim first, until the demand's bytes are taken, the store
  // answers kStop, or none is left. `visit` must not call back into the policy. A policy may
  // reorder its queues while it looks (S3-FIFO promotes what was used), never its membership.
  virtual void Victims(const Demand& demand, absl::FunctionRef<Verdict(Handle)> visit) = 0;
  virtual size_t size() const = 0;
  virtual const char* name() const = 0;
  // Per pool class, sorted by space.
  virtual std::vector<ClassLifetime> Lifetimes() const = 0;
};

struct PolicyOptions {
  const Clock* clock = nullptr;  // idle times; nullptr: real time
  // S3-FIFO: the small (probation) queue's share of the tracked bytes.
  double s3fifo_small = 0.10;
  // S3-FIFO: how many ids the ghost FIFO remembers, per tracked copy (at least 1024).
  double ghost_factor = 1.0;
  // SLRU: how many evicted ids (with their use counts) the history remembers, per tracked
  // copy (at least 1024).
  double history_factor = 4.0;
  // A class whose reuse after one use is below this fraction of all classes' (once it has
  // `min_class_samples` copies) is "never reused": S3-FIFO offers its unused copies first.
  double low_reuse_ratio = 0.5;
  uint64_t min_class_samples = 256;
};

// The known names: "lru", "s3fifo", "slru", each optionally "+chain" (chain-aware ordering).
inline constexpr std::array<absl::string_view, 6> kPolicyNames = {
    "lru", "s3fifo", "slru", "lru+chain", "s3fifo+chain", "slru+chain"};

// Returns the policy named `name`. INVALID_ARGUMENT for another name, listing them.
absl::StatusOr<std::unique_ptr<EvictionPolicy>> MakeEvictionPolicy(absl::string_view name,
                                                                   PolicyOptions options = {});

// The shared base: tracking, pins, eligibility, chains and lifetimes. Subclasses order.
class TrackedPolicy : public EvictionPolicy {
 public:
  void Insert(Handle h, Footprint f) final;
  void Access(Handle h) final;
  void Pin(Handle h) final;
  void Unpin(Handle h) final;
  void Remove(Handle h, RemovalReason why) final;
  bool Contains(Handle h) const final { return entries_.contains(h); }
  void Victims(const Demand& demand, absl::FunctionRef<Verdict(Handle)> visit) final;
  size_t size() const final { return entries_.size(); }
  std::vector<ClassLifetime> Lifetimes() const final;
  bool chain_aware() const { return chain_aware_; }

 protected:
  TrackedPolicy(bool chain_aware, PolicyOptions options);

  struct Entry {
    Footprint f;
    uint32_t pins = 0;
    uint32_t uses = 1;
    absl::Time last_use;
    // The subclass's place for it: which queue, where in it, how often used there.
    uint8_t queue = 0;
    uint8_t freq = 0;
    std::list<Handle>::iterator pos;
  };
  // Hooks: the entry is in entries_ for OnInsert and OnAccess, and still in it for OnRemove.
  virtual void OnInsert(Handle h, Entry& e) = 0;
  virtual void OnAccess(Handle h, Entry& e) = 0;
  virtual void OnRemove(Handle h, Entry& e, RemovalReason why) = 0;
  // Calls offer(h) for candidates, best victim first, until it returns false.
  virtual void Scan(absl::FunctionRef<bool(Handle)> offer) = 0;
  // Whether taking `e` (chain-aware) goes on with its parent in the next call: a chain that
  // lost its tail goes whole. Not for a copy taken for its own class (S3-FIFO's low-reuse
  // queue: a partial last block says nothing about the blocks before it).
  virtual bool ContinuesChain(const Entry&) const { return true; }

  Entry& EntryOf(Handle h) { return entries_.find(h)->second; }
  const Entry& EntryOf(Handle h) const { return entries_.find(h)->second; }
  // Whether the class has been seen reused far less often than the others.
  bool LowReuse(uint32_t space) const;
  const PolicyOptions& options() const { return options_; }
  uint64_t tracked_bytes() const { return tracked_bytes_; }

 private:
  struct ClassStats {
    uint64_t inserted = 0, reused = 0, reused_twice = 0;
    uint64_t idle_samples = 0;
    double idle_sum_s = 0;
    std::array<uint64_t, 48> idle_log2_ms = {};  // bucket b: [2^(b-1), 2^b) ms
  };
  // The tracked children of `h` not yet taken in this Victims call.
  bool HasLiveChildren(Handle h, const absl::flat_hash_set<Handle>& taken) const;
  // A leaf under `top` (no live children) that may be offered and was not refused; 0 if none
  // within the budget.
  Handle FindLeaf(Handle top, const absl::flat_hash_set<Handle>& taken,
                  const absl::flat_hash_set<Handle>& refused, const Demand& demand) const;
  bool Eligible(Handle h, const Entry& e, const Demand& demand) const;

  const bool chain_aware_;
  const PolicyOptions options_;
  const Clock* const clock_;
  absl::flat_hash_map<Handle, Entry> entries_;
  uint64_t tracked_bytes_ = 0;
  // The chain index: tensor id -> its tracked copy; parent id -> its tracked children.
  absl::flat_hash_map<uint64_t, Handle> by_id_;
  absl::flat_hash_map<uint64_t, absl::InlinedVector<Handle, 2>> children_;
  absl::flat_hash_map<uint32_t, ClassStats> classes_;
  // Chain-aware: the parent of the last block taken, a leaf once its children went. The next
  // call goes on with that chain first instead of searching it again from its head.
  Handle resume_ = 0;
};

// A bounded memory of tensor ids that left a tier, each with a small value (S3-FIFO's ghosts:
// none; SLRU's history: the use count), forgotten oldest first. A FIFO of (id, number) gives
// the order; the map keeps each id's latest number, so the FIFO entries an id left behind (it
// came back, or was remembered again) are stale and skipped when they reach the front.
class IdHistory {
 public:
  // Remembers `value` for `id`, then forgets the oldest while more than `cap` entries are
  // queued, at most `max_forget` of them.
  void Remember(uint64_t id, uint32_t value, size_t cap, size_t max_forget = SIZE_MAX) {
    const uint64_t n = next_++;
    ids_[id] = {value, n};
    fifo_.emplace_back(id, n);
    for (; fifo_.size() > cap && max_forget > 0; --max_forget) {
      const auto [old, num] = fifo_.front();
      fifo_.pop_front();
      if (auto it = ids_.find(old); it != ids_.end() && it->second.second == num) ids_.erase(it);
    }
  }
  // Returns and forgets the value remembered for `id`, if any (id 0: never remembered).
  std::optional<uint32_t> Take(uint64_t id) {
    auto it = id != 0 ? ids_.find(id) : ids_.end();
    if (it == ids_.end()) return std::nullopt;
    const uint32_t v = it->second.first;
    ids_.erase(it);  // its FIFO entry is stale now
    return v;
  }
  size_t size() const { return ids_.size(); }

 private:
  std::deque<std::pair<uint64_t, uint64_t>> fifo_;                    // (id, number), oldest first
  absl::flat_hash_map<uint64_t, std::pair<uint32_t, uint64_t>> ids_;  // id -> (value, number)
  uint64_t next_ = 0;
};

// Least recently used first.
class LruPolicy final : public TrackedPolicy {
 public:
  explicit LruPolicy(bool chain_aware = false, PolicyOptions options = {})
      : TrackedPolicy(chain_aware, options) {}
  const char* name() const override { return chain_aware() ? "lru+chain" : "lru"; }

 private:
  void OnInsert(Handle h, Entry& e) override;
  void OnAccess(Handle h, Entry& e) override;
  void OnRemove(Handle h, Entry& e, RemovalReason why) override;
  void Scan(absl::FunctionRef<bool(Handle)> offer) override;

  std::list<Handle> order_;  // most recent first
};

// S3-FIFO (Yang et al., SOSP'23): new copies enter a small FIFO; one used again while there
// moves to the main FIFO when it reaches the small queue's head, an unused one leaves (and is
// remembered in a ghost FIFO of tensor ids: inserted again, it goes straight to main). Main
// re-queues a used copy (up to 3 uses) instead of offering it. Copies of "never reused" pool
// classes (LowReuse) sit in a third FIFO offered before the small one.
class S3FifoPolicy final : public TrackedPolicy {
 public:
  explicit S3FifoPolicy(bool chain_aware = false, PolicyOptions options = {})
      : TrackedPolicy(chain_aware, options) {}
  const char* name() const override { return chain_aware() ? "s3fifo+chain" : "s3fifo"; }
  // Which queue holds `h` (tests): 0 small, 1 main, 2 low-reuse; -1 untracked.
  int QueueOf(Handle h) const;
  size_t ghosts() const { return ghost_.size(); }

 private:
  enum Queue : uint8_t { kSmall = 0, kMain = 1, kLow = 2 };
  void OnInsert(Handle h, Entry& e) override;
  void OnAccess(Handle h, Entry& e) override;
  void OnRemove(Handle h, Entry& e, RemovalReason why) override;
  void Scan(absl::FunctionRef<bool(Handle)> offer) override;
  bool ContinuesChain(const Entry& e) const override { return e.queue != kLow; }
  // Offers the unused copies of a probation queue; used ones move to main. False: stop.
  bool ScanProbation(Queue q, absl::FunctionRef<bool(Handle)> offer);
  bool ScanMain(absl::FunctionRef<bool(Handle)> offer);
  void Enqueue(Handle h, Entry& e, Queue q);
  void Remember(uint64_t id);

  std::array<std::list<Handle>, 3> queues_;  // oldest first
  std::array<uint64_t, 3> queue_bytes_ = {};
  // Ghosts: ids evicted from probation, as many as copies are tracked (at least 1024).
  IdHistory ghost_;
};

// Segmented LRU with a use history (daemon/policy/slru.cc). Three LRU levels, each held to a
// third of the tracked bytes: a use moves a copy one level up, a full level pushes its least
// recent copy one level down, and victims come from the bottom level first. A copy enters at
// the level its past uses earned: the history remembers how often each recently evicted
// tensor was used (PolicyOptions::history_factor ids per tracked copy), so a block read
// twice before comes back above one read once. On KV-cache block traces a block's chance of
// being read again soon grows with its uses (trace_bench: 6.5% within a 10% cache's reach
// after one use, 15% after two, 24% after three), and a history that outlives the copy is
// what sees it: the reuse distance is several times the cache. Copies of "never reused" pool
// classes (LowReuse) enter the bottom level at its victim end.
class SlruPolicy final : public TrackedPolicy {
 public:
  static constexpr int kLevels = 3;
  explicit SlruPolicy(bool chain_aware = false, PolicyOptions options = {})
      : TrackedPolicy(chain_aware, options) {}
  const char* name() const override { return chain_aware() ? "slru+chain" : "slru"; }
  // The level of `h` (tests): 0 (victims first) .. kLevels - 1; -1 untracked.
  int LevelOf(Handle h) const { return Contains(h) ? EntryOf(h).queue : -1; }
  // How many evicted ids the history remembers (tests).
  size_t remembered() const { return history_.size(); }

 private:
  void OnInsert(Handle h, Entry& e) override;
  void OnAccess(Handle h, Entry& e) override;
  void OnRemove(Handle h, Entry& e, RemovalReason why) override;
  void Scan(absl::FunctionRef<bool(Handle)> offer) override;
  // A block taken on its own (no cached children: typically a chain's tail) does not make
  // the next call go on with its parent: the parent keeps its own level. A chain being
  // drained from a candidate's subtree still goes on up (the base's rule). trace_bench: not
  // going on after a lone tail is +6% prefix hits at 10%; not going on at all is -4%.
  bool ContinuesChain(const Entry&) const override { return false; }

  // Puts `e` at level `level`, most recent (or least, `victim_end`) first.
  void Place(Handle h, Entry& e, int level, bool victim_end = false);
  // The level `e` goes to when it wants `wanted` (capped; 0 for a copy over a level's share).
  int LevelFor(const Entry& e, int wanted) const;
  // Moves `e` to the most recent end of `level` (no allocation: a splice).
  void Move(Entry& e, int level);
  // Moves the least recent copies of over-full levels one level down (a few per call).
  void Rebalance();
  void Remember(uint64_t id, uint32_t uses);

  std::array<std::list<Handle>, kLevels> levels_;  // most recent first
  std::array<uint64_t, kLevels> level_bytes_ = {};
  // Evicted or demoted ids with their use counts.
  IdHistory history_;
};

}  // namespace tensord::policy
