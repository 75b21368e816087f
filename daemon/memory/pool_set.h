// The pool classes of one tier: named fixed-size pools plus general allocators, each carving
// one arena. Chooses which pools a request may use. Device-agnostic: it knows offsets and
// arena ids, never addresses. Not thread-safe: owned and locked by the store.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "daemon/memory/allocator.h"

namespace tensord::memory {

struct Pool {
  std::string name;
  uint32_t arena = 0;
  bool fixed = false;
  std::unique_ptr<Allocator> allocator;
  uint16_t tenant = 0;  // whose memory this is (store::TenantId); 0: shared
};

class PoolSet {
 public:
  // Adds a pool carving `arena` for `tenant`; takes ownership of `allocator`. Returns the pool
  // index.
  uint32_t Add(std::string name, uint32_t arena, bool fixed, std::unique_ptr<Allocator> allocator,
               uint16_t tenant = 0);

  // Returns the pools a tensor of `nbytes` may go to, best first. With `pool_name` empty, that
  // is the smallest fixed class whose block fits without wasting more than half, then the
  // general pools. Only `tenant`'s pools are candidates; a tenant without the named class gets
  // its best fit. INVALID_ARGUMENT for an unknown pool name or a size the named pool (or every
  // pool) can never hold.
  absl::StatusOr<std::vector<uint32_t>> Candidates(uint64_t nbytes, absl::string_view pool_name,
                                                   uint16_t tenant = 0) const;

  size_t size() const { return pools_.size(); }
  Pool& operator[](uint32_t index) { return pools_[index]; }
  const Pool& operator[](uint32_t index) const { return pools_[index]; }

 private:
  std::vector<Pool> pools_;
};

}  // namespace tensord::memory
