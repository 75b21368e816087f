// General-purpose range allocator with best-fit placement and coalescing of free neighbours,
// for tensors that fit no fixed pool class. Reports its fragmentation.
#pragma once

#include <map>
#include <set>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "daemon/memory/allocator.h"

namespace tensord::memory {

class GeneralAllocator final : public Allocator {
 public:
  // Manages [base, base + size); every allocation is rounded up to, and aligned on, `alignment`
  // (a power of two; 4 KiB keeps ranges usable for O_DIRECT I/O).
  GeneralAllocator(uint64_t base, uint64_t size, uint64_t alignment = 4096);

  absl::StatusOr<uint64_t> Allocate(uint64_t size) override;
  absl::Status Free(uint64_t offset) override;
  absl::Status Claim(uint64_t offset, uint64_t size) override;
  uint64_t Reserved(uint64_t size) const override;
  bool Fits(uint64_t size) const override;
  AllocatorStats Stats() const override;

 private:
  void InsertFree(uint64_t offset, uint64_t size);
  void EraseFree(std::map<uint64_t, uint64_t>::iterator it);

  uint64_t base_;
  uint64_t size_;
  uint64_t alignment_;
  std::map<uint64_t, uint64_t> free_by_offset_;           // offset -> size
  std::set<std::pair<uint64_t, uint64_t>> free_by_size_;  // (size, offset), for best fit
  absl::flat_hash_map<uint64_t, uint64_t> allocated_;     // offset -> reserved size
  uint64_t used_ = 0;
  uint64_t allocations_ = 0;
  uint64_t failures_ = 0;
};

}  // namespace tensord::memory
