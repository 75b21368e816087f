// The page cache of codec/pages.h: one free list per power-of-two size class.
#include "daemon/codec/pages.h"

#include <bit>
#include <cstdlib>
#include <vector>

#include "absl/synchronization/mutex.h"

namespace tensord::codec {
namespace {

constexpr size_t kPage = 4096;
constexpr int kClasses = 48;

size_t ClassBytes(size_t bytes) { return std::bit_ceil(bytes < kPage ? kPage : bytes); }

struct Cache {
  absl::Mutex mu;
  std::vector<void*> free[kClasses] ABSL_GUARDED_BY(mu);
  size_t cached ABSL_GUARDED_BY(mu) = 0;
};

Cache& TheCache() {
  static Cache* cache = new Cache;  // never destroyed: buffers may be given back at exit
  return *cache;
}

}  // namespace

#if defined(__SANITIZE_ADDRESS__)
#define TENSORD_PAGE_CACHE 0  // ASan builds: no reuse, so a use after free is caught
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TENSORD_PAGE_CACHE 0
#endif
#endif
#ifndef TENSORD_PAGE_CACHE
#define TENSORD_PAGE_CACHE 1
#endif

void* TakePages(size_t bytes) {
  const size_t size = ClassBytes(bytes);
  if (!TENSORD_PAGE_CACHE) return std::aligned_alloc(kPage, size);
  const int c = std::countr_zero(size);
  {
    Cache& cache = TheCache();
    absl::MutexLock lock(&cache.mu);
    if (c < kClasses && !cache.free[c].empty()) {
      void* p = cache.free[c].back();
      cache.free[c].pop_back();
      cache.cached -= size;
      return p;
    }
  }
  return std::aligned_alloc(kPage, size);
}

void GivePages(void* p, size_t bytes) {
  if (p == nullptr) return;
  if (!TENSORD_PAGE_CACHE) return std::free(p);
  const size_t size = ClassBytes(bytes);
  const int c = std::countr_zero(size);
  {
    Cache& cache = TheCache();
    absl::MutexLock lock(&cache.mu);
    if (c < kClasses && cache.cached + size <= kPageCacheBytes) {
      cache.free[c].push_back(p);
      cache.cached += size;
      return;
    }
  }
  std::free(p);
}

}  // namespace tensord::codec
