// Fixed-size block pool over a contiguous range of an arena.
#include "daemon/memory/fixed_pool.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace tensord::memory {

FixedPool::FixedPool(uint64_t base, uint64_t block_size, uint64_t block_count)
    : base_(base), block_size_(block_size), block_count_(block_count), in_use_(block_count) {
  free_.reserve(block_count);
  // Push in reverse so the first allocation gets block 0: addresses grow predictably.
  for (uint64_t i = block_count; i > 0; --i) free_.push_back(static_cast<uint32_t>(i - 1));
}

absl::StatusOr<uint64_t> FixedPool::Allocate(uint64_t size) {
  Settle();
  if (size == 0 || size > block_size_) {
    return absl::InvalidArgumentError(
        absl::StrCat(size, " bytes do not fit a block of ", block_size_));
  }
  if (free_.empty()) {
    ++failures_;
    return absl::ResourceExhaustedError(absl::StrCat("all ", block_count_, " blocks in use"));
  }
  const uint32_t index = free_.back();
  free_.pop_back();
  in_use_[index] = true;
  ++allocations_;
  return base_ + index * block_size_;
}

void FixedPool::Settle() {
  if (stale_ == 0) return;
  free_.erase(std::remove_if(free_.begin(), free_.end(), [&](uint32_t b) { return in_use_[b]; }),
              free_.end());
  stale_ = 0;
}

absl::Status FixedPool::Free(uint64_t offset) {
  Settle();  // a claimed block must leave the free stack before it can come back to it
  if (offset < base_ || (offset - base_) % block_size_ != 0 ||
      (offset - base_) / block_size_ >= block_count_) {
    return absl::InvalidArgumentError(absl::StrCat("offset ", offset, " is not a block"));
  }
  const uint64_t index = (offset - base_) / block_size_;
  if (!in_use_[index]) {
    return absl::InvalidArgumentError(absl::StrCat("block at ", offset, " is already free"));
  }
  in_use_[index] = false;
  free_.push_back(static_cast<uint32_t>(index));
  return absl::OkStatus();
}

absl::Status FixedPool::Claim(uint64_t offset, uint64_t size) {
  if (size == 0 || size > block_size_ || offset < base_ || (offset - base_) % block_size_ != 0 ||
      (offset - base_) / block_size_ >= block_count_) {
    return absl::InvalidArgumentError(
        absl::StrCat(size, " bytes at offset ", offset, " are not a block of this pool"));
  }
  const uint64_t index = (offset - base_) / block_size_;
  if (in_use_[index]) {
    return absl::InvalidArgumentError(absl::StrCat("block at ", offset, " is already in use"));
  }
  in_use_[index] = true;
  ++stale_;  // still on the free stack: rebuilt once, at the next Allocate or Free (claims come in
             // bulk)
  ++allocations_;
  return absl::OkStatus();
}

uint64_t FixedPool::Reserved(uint64_t) const { return block_size_; }

bool FixedPool::Fits(uint64_t size) const { return size > 0 && size <= block_size_; }

AllocatorStats FixedPool::Stats() const {
  AllocatorStats s;
  s.capacity_bytes = block_size_ * block_count_;
  s.block_size = block_size_;
  s.blocks_total = block_count_;
  s.blocks_used = block_count_ - (free_.size() - stale_);
  s.used_bytes = s.blocks_used * block_size_;
  s.free_bytes = s.capacity_bytes - s.used_bytes;
  // Any free block serves any request: a fixed pool is never fragmented.
  s.largest_free_bytes = s.free_bytes;
  s.allocations = allocations_;
  s.allocation_failures = failures_;
  return s;
}

}  // namespace tensord::memory
