// Eviction policies: pure decision code (DESIGN.md "Policies"). A policy tracks opaque handles
// the store gives it (one per host-resident sealed tensor), hears about inserts, accesses and
// removals, and ranks victims; it never touches memory or performs I/O. The store decides which
// of the ranked candidates it can actually move (unleased, not in flight) and acts.
// Not thread-safe: the store calls it under its own lock.
#pragma once

#include <cstdint>
#include <list>
#include <memory>

#include "absl/container/flat_hash_map.h"
#include "absl/functional/function_ref.h"

namespace tensord::policy {

using Handle = uintptr_t;

class EvictionPolicy {
 public:
  virtual ~EvictionPolicy() = default;
  // Starts tracking `h` (a no-op if tracked).
  virtual void Insert(Handle h) = 0;
  // Records a use of `h` (ignored if untracked).
  virtual void Access(Handle h) = 0;
  // Stops tracking `h` (ignored if untracked).
  virtual void Remove(Handle h) = 0;
  virtual bool Contains(Handle h) const = 0;
  // Calls visit(h) for tracked handles, best victim first, until it returns false. `visit`
  // must not call back into the policy.
  virtual void Victims(absl::FunctionRef<bool(Handle)> visit) const = 0;
  virtual size_t size() const = 0;
  virtual const char* name() const = 0;
};

// Least recently used first.
class LruPolicy final : public EvictionPolicy {
 public:
  void Insert(Handle h) override;
  void Access(Handle h) override;
  void Remove(Handle h) override;
  bool Contains(Handle h) const override { return where_.contains(h); }
  void Victims(absl::FunctionRef<bool(Handle)> visit) const override;
  size_t size() const override { return where_.size(); }
  const char* name() const override { return "lru"; }

 private:
  std::list<Handle> order_;  // most recent first
  absl::flat_hash_map<Handle, std::list<Handle>::iterator> where_;
};

}  // namespace tensord::policy
