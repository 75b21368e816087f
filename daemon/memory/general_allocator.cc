// Best-fit allocator over an offset range: two indexes of the free ranges (by offset for
// coalescing, by size for best fit), both O(log n).
#include "daemon/memory/general_allocator.h"

#include "absl/strings/str_cat.h"

namespace tensord::memory {

GeneralAllocator::GeneralAllocator(uint64_t base, uint64_t size, uint64_t alignment)
    : base_(base), size_(size - size % alignment), alignment_(alignment) {
  if (size_ > 0) InsertFree(base_, size_);
}

uint64_t GeneralAllocator::Reserved(uint64_t size) const {
  return (size + alignment_ - 1) & ~(alignment_ - 1);
}

bool GeneralAllocator::Fits(uint64_t size) const {
  return size > 0 && size <= size_ && Reserved(size) <= size_;
}

void GeneralAllocator::InsertFree(uint64_t offset, uint64_t size) {
  free_by_offset_.emplace(offset, size);
  free_by_size_.emplace(size, offset);
}

void GeneralAllocator::EraseFree(std::map<uint64_t, uint64_t>::iterator it) {
  free_by_size_.erase({it->second, it->first});
  free_by_offset_.erase(it);
}

absl::StatusOr<uint64_t> GeneralAllocator::Allocate(uint64_t size) {
  if (!Fits(size)) {
    return absl::InvalidArgumentError(
        absl::StrCat(size, " bytes can never fit an arena of ", size_));
  }
  const uint64_t need = Reserved(size);
  auto best = free_by_size_.lower_bound({need, 0});
  if (best == free_by_size_.end()) {
    ++failures_;
    return absl::ResourceExhaustedError(absl::StrCat("no free range of ", need, " bytes"));
  }
  const auto [range_size, offset] = *best;
  EraseFree(free_by_offset_.find(offset));
  if (range_size > need) InsertFree(offset + need, range_size - need);
  allocated_.emplace(offset, need);
  used_ += need;
  ++allocations_;
  return offset;
}

absl::Status GeneralAllocator::Free(uint64_t offset) {
  auto it = allocated_.find(offset);
  if (it == allocated_.end()) {
    return absl::InvalidArgumentError(absl::StrCat("offset ", offset, " is not allocated"));
  }
  uint64_t start = offset;
  uint64_t size = it->second;
  used_ -= size;
  allocated_.erase(it);
  // Coalesce with the free neighbour after, then the one before.
  auto next = free_by_offset_.lower_bound(start);
  if (next != free_by_offset_.end() && next->first == start + size) {
    size += next->second;
    EraseFree(next);
  }
  auto after = free_by_offset_.lower_bound(start);
  if (after != free_by_offset_.begin()) {
    auto prev = std::prev(after);
    if (prev->first + prev->second == start) {
      start = prev->first;
      size += prev->second;
      EraseFree(prev);
    }
  }
  InsertFree(start, size);
  return absl::OkStatus();
}

absl::Status GeneralAllocator::Claim(uint64_t offset, uint64_t size) {
  if (!Fits(size) || offset < base_ || (offset - base_) % alignment_ != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(size, " bytes at offset ", offset, " are not a range of this arena"));
  }
  const uint64_t need = Reserved(size);
  // The free range that would contain [offset, offset + need).
  auto it = free_by_offset_.upper_bound(offset);
  if (it == free_by_offset_.begin()) {
    return absl::InvalidArgumentError(absl::StrCat("offset ", offset, " is not free"));
  }
  it = std::prev(it);
  const uint64_t start = it->first, len = it->second;
  if (offset + need < offset || offset + need > start + len) {
    return absl::InvalidArgumentError(
        absl::StrCat(need, " bytes at offset ", offset, " are not all free"));
  }
  EraseFree(it);
  if (offset > start) InsertFree(start, offset - start);
  if (start + len > offset + need) InsertFree(offset + need, start + len - offset - need);
  allocated_.emplace(offset, need);
  used_ += need;
  ++allocations_;
  return absl::OkStatus();
}

AllocatorStats GeneralAllocator::Stats() const {
  AllocatorStats s;
  s.capacity_bytes = size_;
  s.used_bytes = used_;
  s.free_bytes = size_ - used_;
  s.largest_free_bytes = free_by_size_.empty() ? 0 : free_by_size_.rbegin()->first;
  s.blocks_used = allocated_.size();
  s.allocations = allocations_;
  s.allocation_failures = failures_;
  return s;
}

}  // namespace tensord::memory
