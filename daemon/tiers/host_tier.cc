// Host tier construction: pool classes laid out as shared-memory segments.
#include "daemon/tiers/host_tier.h"

#include <xxh_x86dispatch.h>  // XXH3 with the AVX2 / AVX-512 code this CPU has

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/random.h"
#include "daemon/memory/fixed_pool.h"
#include "daemon/memory/general_allocator.h"
#include "spdlog/spdlog.h"

namespace tensord::tiers {
namespace {

constexpr uint64_t kSegmentAlign = 2 << 20;  // whole huge pages: no partial page at the end

uint64_t RoundUp(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

}  // namespace

absl::StatusOr<uint64_t> BlockCount(const PoolClassConfig& pool, uint64_t capacity) {
  if (pool.name.empty()) return absl::InvalidArgumentError("a pool class has no name");
  if (pool.name == "general") {
    return absl::InvalidArgumentError("pool name 'general' is reserved for the general pool");
  }
  if (pool.block_size == 0) {
    return absl::InvalidArgumentError(absl::StrCat("pool '", pool.name, "' has block_size 0"));
  }
  uint64_t count = pool.block_count;
  if (count == 0) {
    if (!(pool.share > 0.0 && pool.share <= 1.0)) {  // NaN too
      return absl::InvalidArgumentError(
          absl::StrCat("pool '", pool.name, "' needs block_count or a share in (0, 1]"));
    }
    count = static_cast<uint64_t>(pool.share * static_cast<double>(capacity)) / pool.block_size;
  }
  if (count == 0) {
    return absl::InvalidArgumentError(absl::StrCat("pool '", pool.name, "' gets no block of ",
                                                   pool.block_size, " bytes from its share"));
  }
  return count;
}

std::string ShmPrefixFor(const std::string& run_dir) {
  std::error_code ec;
  std::string abs = std::filesystem::weakly_canonical(run_dir, ec).string();
  if (ec) abs = run_dir;
  return absl::StrFormat("tensord.%016x.", XXH3_64bits(abs.data(), abs.size()));
}

int HostTier::RemoveStale(const std::string& name_prefix) {
  int removed = 0;
  for (const std::string& name : ShmSegment::ListOwned(name_prefix)) {
    if (ShmSegment::Remove(name)) {
      spdlog::warn("removed stale shared-memory segment /dev/shm/{} of an earlier instance", name);
      ++removed;
    }
  }
  return removed;
}

absl::StatusOr<std::vector<HostTier::Plan>> HostTier::Layout(const HostTierConfig& config) {
  std::vector<Plan> plans;
  uint64_t shared = config.capacity;
  for (size_t i = 0; i < config.partitions.size(); ++i) {
    const HostPartition& part = config.partitions[i];
    const uint64_t bytes = part.bytes / 4096 * 4096;
    if (bytes == 0 || bytes > shared) {
      return absl::InvalidArgumentError(
          absl::StrCat("tenant '", part.tenant, "' gets no host memory of its own"));
    }
    shared -= part.bytes;
    plans.push_back(Plan{absl::StrCat("tenant.", part.tenant), false, 0, 0, bytes,
                         RoundUp(bytes + kTrailerBytes, kSegmentAlign),
                         static_cast<uint16_t>(i + 1), part.mode, part.group});
  }
  uint64_t fixed_total = 0;
  for (const PoolClassConfig& pool : config.pools) {
    auto count = BlockCount(pool, shared);
    if (!count.ok()) return count.status();
    const uint64_t bytes = pool.block_size * *count;
    fixed_total += bytes;
    if (fixed_total > shared) {
      return absl::InvalidArgumentError(absl::StrCat("pool classes need ", fixed_total,
                                                     " bytes, more than the host capacity ", shared,
                                                     " left by tenants"));
    }
    plans.push_back(Plan{pool.name, true, pool.block_size, *count, bytes,
                         RoundUp(bytes + kTrailerBytes, kSegmentAlign), 0, config.shm_mode});
  }
  const uint64_t general = (shared - fixed_total) / 4096 * 4096;
  if (general >= 4096) {
    plans.push_back(Plan{"general", false, 0, 0, general,
                         RoundUp(general + kTrailerBytes, kSegmentAlign), 0, config.shm_mode});
  }
  if (plans.empty()) return absl::InvalidArgumentError("host tier has no capacity");
  return plans;
}

void HostTier::AddPools(const std::vector<Plan>& plans) {
  for (uint32_t arena = 0; arena < plans.size(); ++arena) {
    const Plan& p = plans[arena];
    segments_.push_back(HostSegment{arena, shm_[arena].name(), p.size, p.pool, p.tenant});
    if (p.fixed) {
      pools_.Add(p.pool, arena, /*fixed=*/true,
                 std::make_unique<memory::FixedPool>(0, p.block_size, p.blocks), p.tenant);
      spdlog::info("host pool '{}': {} blocks of {} bytes", p.pool, p.blocks, p.block_size);
    } else {
      pools_.Add(p.pool, arena, /*fixed=*/false,
                 std::make_unique<memory::GeneralAllocator>(0, p.bytes), p.tenant);
    }
  }
}

absl::StatusOr<std::unique_ptr<HostTier>> HostTier::Create(const HostTierConfig& config,
                                                           const std::string& name_prefix,
                                                           const std::string& manifest) {
  auto plans = Layout(config);
  if (!plans.ok()) return plans.status();
  std::unique_ptr<HostTier> tier(new HostTier());
  tier->zero_on_free_ = config.zero_on_free;
  tier->capacity_ = config.capacity;
  for (const Plan& p : *plans) {
    const std::string line =
        absl::StrCat(p.pool, "/", p.fixed, "/", p.block_size, "/", p.blocks, "/", p.bytes, "/",
                     p.size, "/", p.mode, "/", p.tenant, "/", p.group, ";");
    tier->layout_ = XXH3_64bits_withSeed(line.data(), line.size(), tier->layout_);
  }
  if (!manifest.empty() && tier->Reattach(*plans, manifest, name_prefix, config)) {
    tier->reattached_ = true;
  } else {
    // Whatever carries our prefix now belongs to no instance (we hold the run directory's lock).
    RemoveStale(name_prefix);
    tier->generation_ = std::strtoull(RandomHex(8).c_str(), nullptr, 16);
    const std::string base = name_prefix + RandomHex(16) + ".";
    for (uint32_t arena = 0; arena < plans->size(); ++arena) {
      const Plan& p = (*plans)[arena];
      auto seg =
          ShmSegment::Create(absl::StrCat(base, arena), p.size, p.mode, config.prefault, p.group);
      if (!seg.ok()) return seg.status();
      tier->shm_.push_back(*std::move(seg));
    }
  }
  tier->AddPools(*plans);
  if (!manifest.empty() && !tier->reattached_) {
    if (absl::Status st = tier->Publish(manifest); !st.ok()) return st;
  }
  return tier;
}

void HostTier::Keep() {
  for (ShmSegment& seg : shm_) seg.Keep();
}

absl::StatusOr<Range> ReservePooled(memory::PoolSet& pools,
                                    absl::StatusOr<std::vector<uint32_t>> candidates,
                                    uint64_t nbytes) {
  if (!candidates.ok()) return candidates.status();
  for (uint32_t pool : *candidates) {
    memory::Allocator& alloc = *pools[pool].allocator;
    if (auto offset = alloc.Allocate(nbytes); offset.ok()) {
      return Range{pool, *offset, nbytes, alloc.Reserved(nbytes), 0};
    }
  }
  return absl::ResourceExhaustedError("no free range");
}

void FreePooled(memory::PoolSet& pools, const Range& range) {
  if (absl::Status st = pools[range.space].allocator->Free(range.offset); !st.ok()) {
    spdlog::critical("store invariant broken: {}", st.ToString());
    std::abort();
  }
}

TierUsage UsageOf(const memory::PoolSet& pools) {
  TierUsage u;
  for (uint32_t i = 0; i < pools.size(); ++i) {
    const memory::AllocatorStats st = pools[i].allocator->Stats();
    u.capacity_bytes += st.capacity_bytes;
    u.used_bytes += st.used_bytes;
    u.largest_free_bytes = std::max(u.largest_free_bytes, st.largest_free_bytes);
  }
  return u;
}

absl::StatusOr<Range> HostTier::ReserveImpl(uint64_t nbytes, const Placement& where) {
  return ReservePooled(pools_, pools_.Candidates(nbytes, where.pool, where.tenant), nbytes);
}

void HostTier::FreeImpl(const Range& range) { FreePooled(pools_, range); }

absl::Status HostTier::Scrub(const Range& range) {
  std::memset(Address(range), 0, range.reserved);
  return absl::OkStatus();
}

void HostTier::WriteImpl(std::span<const Transfer> items, TransferDone done) {
  for (const Transfer& t : items) std::memcpy(Address(*t.range), t.host, t.range->length);
  std::move(done)(std::vector<absl::Status>(items.size()));
}

void HostTier::ReadImpl(std::span<const Transfer> items, TransferDone done) {
  for (const Transfer& t : items) std::memcpy(t.host, Address(*t.range), t.range->length);
  std::move(done)(std::vector<absl::Status>(items.size()));
}

TierUsage HostTier::Usage() const { return UsageOf(pools_); }

}  // namespace tensord::tiers
