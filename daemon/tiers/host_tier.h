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
#include "daemon/tiers/tier.h"

namespace tensord::tiers {

struct HostSegment {
  uint32_t id = 0;
  std::string shm_name;
  uint64_t size = 0;
  std::string pool;
  uint16_t tenant = 0;  // whose segment (store::TenantId); 0: shared
};

class HostTier final : public Tier {
 public:
  // Creates one segment per fixed pool class and one for the general pool with the rest of the
  // capacity, after one segment per partition (tenant i + 1's is partitions[i], pool
  // "tenant.<name>", in the partition's group and mode). Segment names are `name_prefix` + 128
  // random bits, created exclusively. With a `manifest` path (a warm restart): first tries to take
  // over the segments the last instance listed there — only when the layout is the same, and each
  // segment is owned by this user with the configured mode and size and carries the trailer that
  // instance wrote (its generation, index, size and layout, checksummed); otherwise creates new
  // ones under a new random generation, writes their trailers, then the manifest (atomic replace).
  // INVALID_ARGUMENT for pool classes that do not fit the capacity; INTERNAL/PERMISSION_DENIED
  // when shared memory cannot be created.
  static absl::StatusOr<std::unique_ptr<HostTier>> Create(const HostTierConfig& config,
                                                          const std::string& name_prefix,
                                                          const std::string& manifest = "");
  // Whether Create took over the last instance's segments (their tensors' bytes are there).
  bool reattached() const { return reattached_; }
  uint64_t generation() const { return generation_; }
  // Leaves the segments in place when the tier is destroyed (a stop that keeps its tensors).
  void Keep();

  // Removes segments named `name_prefix`* owned by this user: leftovers of a crashed instance.
  // Call only while holding the instance lock. Returns how many were removed.
  static int RemoveStale(const std::string& name_prefix);
  // Bytes at the end of each segment for its trailer (never handed to a pool).
  static constexpr uint64_t kTrailerBytes = 4096;

  const std::vector<HostSegment>& segments() const { return segments_; }
  memory::PoolSet& pools() { return pools_; }
  const memory::PoolSet& pools() const { return pools_; }
  uint64_t capacity() const { return capacity_; }
  bool zero_on_free() const { return zero_on_free_; }

  // Returns the daemon's address of `offset` in `arena`; the caller has checked the range.
  uint8_t* Address(uint32_t arena, uint64_t offset) const { return shm_[arena].data() + offset; }

  // The Tier interface: ranges of the pools (Range::space is the pool index), transfers are
  // memcpy, Scrub zeroes (the store skips it when zero_on_free is off). Reserve/Free/Usage: under
  // the store's lock.
  TierId id() const override { return TierId::kHost; }
  absl::Status Scrub(const Range& range) override;
  TierUsage Usage() const override;
  bool Healthy() const override { return true; }
  uint8_t* Address(const Range& range) const override {
    return Address(pools_[range.space].arena, range.offset);
  }

 private:
  HostTier() = default;
  absl::StatusOr<Range> ReserveImpl(uint64_t nbytes, const Placement& where) override;
  void FreeImpl(const Range& range) override;
  void WriteImpl(std::span<const Transfer> items, TransferDone done) override;
  void ReadImpl(std::span<const Transfer> items, TransferDone done) override;
  // One segment to create: its pool and size (the pool's bytes, then the trailer).
  struct Plan {
    std::string pool;
    bool fixed = false;
    uint64_t block_size = 0, blocks = 0, bytes = 0, size = 0;
    uint16_t tenant = 0;
    mode_t mode = 0600;
    gid_t group = static_cast<gid_t>(-1);  // ShmSegment::kNoGroup: the daemon's
  };
  static absl::StatusOr<std::vector<Plan>> Layout(const HostTierConfig& config);
  // Takes over the segments `manifest` lists when they match `plans`; false (and nothing kept)
  // otherwise, saying why in the log.
  bool Reattach(const std::vector<Plan>& plans, const std::string& manifest,
                const std::string& name_prefix, const HostTierConfig& config);
  // Writes each new segment's trailer and the manifest for generation_.
  absl::Status Publish(const std::string& manifest);
  void AddPools(const std::vector<Plan>& plans);

  bool reattached_ = false;
  uint64_t generation_ = 0;
  uint64_t layout_ = 0;  // a hash of the plans: a manifest of another layout is not taken over

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

// Pool-carved tiers (host, GPU) share these: the first of `candidates` (best first) with room
// (RESOURCE_EXHAUSTED if none; the candidates' error as is), freeing (an unknown range is a
// daemon bug: abort), and usage summed over the pools.
absl::StatusOr<Range> ReservePooled(memory::PoolSet& pools,
                                    absl::StatusOr<std::vector<uint32_t>> candidates,
                                    uint64_t nbytes);
void FreePooled(memory::PoolSet& pools, const Range& range);
TierUsage UsageOf(const memory::PoolSet& pools);

// Returns the shared-memory name prefix of the instance whose run directory is `run_dir`:
// "tensord." + a hash of its absolute path + ".", so instances in different directories never
// touch each other's segments.
std::string ShmPrefixFor(const std::string& run_dir);

}  // namespace tensord::tiers
