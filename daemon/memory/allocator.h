// The allocator interface shared by fixed-size block pools and the general allocator. Offsets
// are relative to one arena, so the same code carves host shared memory and GPU memory.
// Not thread-safe: the owner (the store) serialises every call under its lock.
#pragma once

#include <cstdint>

#include "absl/status/statusor.h"

namespace tensord::memory {

struct AllocatorStats {
  uint64_t capacity_bytes = 0;
  uint64_t used_bytes = 0;  // reserved bytes, including rounding
  uint64_t block_size = 0;  // 0 for the general allocator
  uint64_t blocks_total = 0;
  uint64_t blocks_used = 0;
  uint64_t free_bytes = 0;
  uint64_t largest_free_bytes = 0;
  uint64_t allocations = 0;
  uint64_t allocation_failures = 0;

  // Returns 1 - largest free range / free bytes (0 when nothing is free or all is contiguous).
  double Fragmentation() const {
    return free_bytes == 0
               ? 0.0
               : 1.0 - static_cast<double>(largest_free_bytes) / static_cast<double>(free_bytes);
  }
};

class Allocator {
 public:
  virtual ~Allocator() = default;
  // Reserves at least `size` bytes and returns their offset. RESOURCE_EXHAUSTED when no free
  // range fits now; INVALID_ARGUMENT when `size` is 0 or can never fit (see Fits).
  virtual absl::StatusOr<uint64_t> Allocate(uint64_t size) = 0;
  // Returns a range to the free space. INVALID_ARGUMENT if `offset` is not an allocated range
  // (a daemon bug: callers treat it as an invariant violation).
  virtual absl::Status Free(uint64_t offset) = 0;
  // Reserves the range an earlier Allocate(size) returned at `offset` (a restart re-creating its
  // allocations from the index). INVALID_ARGUMENT when that range is not free, not where an
  // allocation of `size` could start, or outside the arena.
  virtual absl::Status Claim(uint64_t offset, uint64_t size) = 0;
  // Returns the bytes an allocation of `size` reserves (rounded to block or alignment).
  virtual uint64_t Reserved(uint64_t size) const = 0;
  // Returns whether `size` could be allocated were the allocator empty.
  virtual bool Fits(uint64_t size) const = 0;
  virtual AllocatorStats Stats() const = 0;
};

}  // namespace tensord::memory
