// Fixed-size block pool: O(1) allocate and free, no fragmentation. Used for the tensor classes
// a model repeats (KV-cache blocks, image features, embeddings).
#pragma once

#include <vector>

#include "daemon/memory/allocator.h"

namespace tensord::memory {

class FixedPool final : public Allocator {
 public:
  // Manages `block_count` blocks of `block_size` bytes starting at arena offset `base`.
  FixedPool(uint64_t base, uint64_t block_size, uint64_t block_count);

  absl::StatusOr<uint64_t> Allocate(uint64_t size) override;
  absl::Status Free(uint64_t offset) override;
  absl::Status Claim(uint64_t offset, uint64_t size) override;
  uint64_t Reserved(uint64_t size) const override;
  bool Fits(uint64_t size) const override;
  AllocatorStats Stats() const override;

 private:
  uint64_t base_;
  uint64_t block_size_;
  uint64_t block_count_;
  std::vector<uint32_t> free_;  // stack of free block indices; LIFO keeps hot blocks warm
  std::vector<bool> in_use_;    // catches double frees
  uint64_t stale_ = 0;          // claimed blocks free_ still lists (Settle removes them)
  void Settle();
  uint64_t allocations_ = 0;
  uint64_t failures_ = 0;
};

}  // namespace tensord::memory
