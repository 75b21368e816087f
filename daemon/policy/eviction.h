// Eviction policies: pure decision code (DESIGN.md "Policies"). A policy tracks opaque handles
// the store gives it (one per sealed copy in one tier), hears inserts, accesses, pins and
// unpins (leases and moves in flight), and removals with their reason; asked for a demand
// (pools, bytes) it offers only eligible victims: tracked, unpinned, in those pools. It never
// touches memory or performs I/O; the store decides what to do with each victim (drop or demote)
// and says whether it took it. Not thread-safe: the store calls it under its own lock.
#pragma once

#include <cstdint>
#include <limits>
#include <list>
#include <memory>
#include <span>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace tensord::policy {

using Handle = uintptr_t;

// Why a copy stopped being tracked.
enum class RemovalReason : uint8_t {
  kDeleted = 0,  // Delete, Abort, expiry or the end of its session: the tensor is gone
  kDemoted = 1,  // the copy left this tier; another tier holds the tensor
  kEvicted = 2,  // a CACHE tensor dropped for room (or lost to a failed read)
};
const char* RemovalReasonName(RemovalReason r);

// What a victim is to the policy: the pool it lives in and the bytes it holds there.
struct Footprint {
  uint32_t space = 0;
  uint64_t bytes = 0;
};

// A request for room: victims from these pools (empty: any) until `bytes` have been taken.
struct Demand {
  std::span<const uint32_t> spaces;
  uint64_t bytes = std::numeric_limits<uint64_t>::max();
};

// The store's answer for each victim offered.
enum class Verdict : uint8_t { kTake, kSkip, kStop };

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
  // answers kStop, or none is left. `visit` must not call back into the policy.
  virtual void Victims(const Demand& demand, absl::FunctionRef<Verdict(Handle)> visit) const = 0;
  virtual size_t size() const = 0;
  virtual const char* name() const = 0;
};

// Returns the policy named `name` ("lru"). INVALID_ARGUMENT for another name, listing them.
absl::StatusOr<std::unique_ptr<EvictionPolicy>> MakeEvictionPolicy(absl::string_view name);

// Least recently used first.
class LruPolicy final : public EvictionPolicy {
 public:
  void Insert(Handle h, Footprint f) override;
  void Access(Handle h) override;
  void Pin(Handle h) override;
  void Unpin(Handle h) override;
  void Remove(Handle h, RemovalReason why) override;
  bool Contains(Handle h) const override { return where_.contains(h); }
  void Victims(const Demand& demand, absl::FunctionRef<Verdict(Handle)> visit) const override;
  size_t size() const override { return where_.size(); }
  const char* name() const override { return "lru"; }

 private:
  struct Entry {
    Handle h;
    Footprint f;
    uint32_t pins = 0;
  };
  std::list<Entry> order_;  // most recent first
  absl::flat_hash_map<Handle, std::list<Entry>::iterator> where_;
};

}  // namespace tensord::policy
