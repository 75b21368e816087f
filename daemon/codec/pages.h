// Page-aligned buffers for encodings and the mover's staging, kept for reuse: a swap-out of a
// 16 MiB tensor would otherwise map, fault in and unmap 8 MiB of fresh memory each time (glibc
// serves such sizes with mmap), which costs more than the codec itself. Up to kPageCacheBytes of
// freed buffers stay cached, by size class (powers of two pages). Thread-safe.
#pragma once

#include <cstddef>

namespace tensord::codec {

inline constexpr size_t kPageCacheBytes = size_t{128} << 20;

// Returns a 4 KiB-aligned buffer of at least `bytes` (its contents undefined); nullptr when the
// system has no memory.
void* TakePages(size_t bytes);
// Returns a buffer from TakePages(bytes) (the same `bytes`).
void GivePages(void* p, size_t bytes);

}  // namespace tensord::codec
