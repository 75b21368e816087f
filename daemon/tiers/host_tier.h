// The host tier: POSIX shared-memory arenas that clients map, one per pool class, carved by a
// PoolSet. Owns the segments (removed when it is destroyed) and nothing else; allocation state
// lives in the PoolSet, which the store locks.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/config.h"
#include "common/shm_segment.h"
#include "daemon/memory/pool_set.h"

namespace tensord::tiers {

struct HostSegment {
  uint32_t id = 0;
  std::string shm_name;
  uint64_t size = 0;
  std::string pool;
};

class HostTier {
 public:
  // Creates one segment per fixed pool class and one for the general pool with the rest of the
  // capacity. Segment names are `name_prefix` + 128 random bits, created exclusively.
  // INVALID_ARGUMENT for pool classes that do not fit the capacity; INTERNAL/PERMISSION_DENIED
  // when shared memory cannot be created.
  static absl::StatusOr<std::unique_ptr<HostTier>> Create(const HostTierConfig& config,
                                                          const std::string& name_prefix);

  // Removes segments named `name_prefix`* owned by this user: leftovers of a crashed instance.
  // Call only while holding the instance lock. Returns how many were removed.
  static int RemoveStale(const std::string& name_prefix);

  const std::vector<HostSegment>& segments() const { return segments_; }
  memory::PoolSet& pools() { return pools_; }
  const memory::PoolSet& pools() const { return pools_; }
  uint64_t capacity() const { return capacity_; }
  bool zero_on_free() const { return zero_on_free_; }

  // Returns the daemon's address of `offset` in `arena`; the caller has checked the range.
  uint8_t* Address(uint32_t arena, uint64_t offset) const { return shm_[arena].data() + offset; }

 private:
  HostTier() = default;
  absl::Status AddSegment(const std::string& name, uint64_t size, const std::string& pool,
                          const HostTierConfig& config);

  std::vector<ShmSegment> shm_;
  std::vector<HostSegment> segments_;
  memory::PoolSet pools_;
  uint64_t capacity_ = 0;
  bool zero_on_free_ = true;
};

// Blocks of one fixed pool class in a tier of `capacity` bytes: block_count, or as many as
// fit in its share. INVALID_ARGUMENT for a nameless, reserved ("general"), zero-sized or
// shareless class, or one that gets no block.
absl::StatusOr<uint64_t> BlockCount(const PoolClassConfig& pool, uint64_t capacity);

// Returns the shared-memory name prefix of the instance whose run directory is `run_dir`:
// "tensord." + a hash of its absolute path + ".", so instances in different directories never
// touch each other's segments.
std::string ShmPrefixFor(const std::string& run_dir);

}  // namespace tensord::tiers
