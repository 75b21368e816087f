// The one interface every tier implements (DESIGN.md "Store: one table, copies per tier"): the
// host (shared memory), GPU (CUDA arenas) and SSD (swap files) tiers, and an in-memory fake for
// tests. A tier reserves and frees ranges and moves bytes between its ranges and host memory in
// batches; what it needs to do that (CUDA streams, io_uring rings) stays inside it. The mover is
// the only caller of the transfers; the store the only caller of Reserve/Free.
//
// Checks and counters live in the public calls, the work in the private *Impl ones (CacheLib's
// navy Device): every implementation gets the same range checks and statistics.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace tensord::tiers {

// Fastest first: moves go down (toward kSsd) and up (toward kGpu); kHost is the hub every move
// passes through.
// kRemote (Redis, shared between machines) is below kSsd.
enum class TierId : uint8_t { kGpu = 0, kHost = 1, kSsd = 2, kRemote = 3 };
inline constexpr size_t kTierCount = 4;
inline constexpr std::array<TierId, kTierCount> kAllTiers = {TierId::kGpu, TierId::kHost,
                                                             TierId::kSsd, TierId::kRemote};
inline size_t Index(TierId t) { return static_cast<size_t>(t); }
const char* TierName(TierId t);

struct RemoteTensor;  // tiers/remote_tier.h

// A reserved range of a tier. `space` is a pool (host, GPU) or a swap file (SSD).
struct Range {
  uint32_t space = 0;
  uint64_t offset = 0;
  uint64_t length = 0;    // bytes stored there (below the host tier: the encoded size)
  uint64_t reserved = 0;  // bytes the allocator set aside (block or alignment rounding)
  uint64_t checksum = 0;  // XXH3-64 of the stored bytes, where the tier keeps one (SSD)
};

// Where a new range may go: a pool (host, GPU), a device (GPU), and for the SSD tier whether a
// copy compressed well enough for its RAM front.
struct Placement {
  absl::string_view pool;  // a pool class; empty: the best fit
  int device = -1;         // GPU tier: the daemon's GPU ordinal; -1: any
  // Below the host tier: the tensor's decoded size when the range holds an encoding of it (the
  // SSD tier's RAM front keeps copies that compress well); 0: raw or unknown.
  uint64_t decoded_bytes = 0;
  // The copy must survive the daemon (warm restart of a DURABLE tensor): the SSD tier keeps it in
  // a file, never in its RAM front.
  bool persistent = false;
  // Host tier: whose memory (store::TenantId): only that tenant's pools; 0: the shared ones.
  uint16_t tenant = 0;
  // Remote tier: the tensor the range will hold (its name and header there); borrowed for the
  // call. Its `codec` is that of the bytes the range will hold.
  const RemoteTensor* remote = nullptr;
};

// One transfer of a batch: range->length bytes between `host` and the range. A write may set
// range->checksum.
struct Transfer {
  Range* range;
  uint8_t* host;
};

// Called once per batch with one status per item, in order.
using TransferDone = absl::AnyInvocable<void(std::vector<absl::Status>) &&>;

struct TierUsage {
  uint64_t capacity_bytes = 0;
  uint64_t used_bytes = 0;
  uint64_t largest_free_bytes = 0;
};

struct TransferCounters {
  uint64_t writes = 0, reads = 0, bytes_written = 0, bytes_read = 0, failures = 0;
};

class Tier {
 public:
  virtual ~Tier() = default;
  virtual TierId id() const = 0;

  // Reserves a range for `nbytes` bytes as `where` allows. RESOURCE_EXHAUSTED when no range fits
  // now, INVALID_ARGUMENT when none ever can, UNAVAILABLE when the tier refuses writes (degraded).
  // Host and GPU tiers: the caller serialises Reserve, Free and Usage (the store's lock guards
  // their pools); the SSD tier locks itself.
  absl::StatusOr<Range> Reserve(uint64_t nbytes, const Placement& where);
  // Returns a range to the free space; the caller scrubbed it first where that is wanted.
  void Free(const Range& range);
  // Zeroes a range nobody uses any more (no lock: it belongs to no object and no free list).
  // Tiers whose ranges are never mapped by clients (SSD) do nothing.
  virtual absl::Status Scrub(const Range& range) = 0;

  // Copies host bytes into the ranges (Write) or range bytes into host memory (Read), the whole
  // batch in flight together, then calls `done`. A read verifies what the tier can (the SSD
  // tier's checksum: DATA_LOSS). Items whose range is larger than it was reserved fail with
  // INTERNAL without being attempted. `done` may run before Write/Read returns.
  void Write(std::span<const Transfer> items, TransferDone done);
  void Read(std::span<const Transfer> items, TransferDone done);
  // The blocking form of Write/Read, for callers on their own threads (the mover).
  std::vector<absl::Status> WriteAll(std::span<const Transfer> items);
  std::vector<absl::Status> ReadAll(std::span<const Transfer> items);

  virtual TierUsage Usage() const = 0;
  // Whether the tier works (a degraded swap device or a faulted GPU context does not).
  virtual bool Healthy() const = 0;
  // The daemon's address of a range's bytes; nullptr for tiers clients cannot map (SSD).
  virtual uint8_t* Address(const Range& range) const = 0;
  TransferCounters counters() const;

 private:
  virtual absl::StatusOr<Range> ReserveImpl(uint64_t nbytes, const Placement& where) = 0;
  virtual void FreeImpl(const Range& range) = 0;
  virtual void WriteImpl(std::span<const Transfer> items, TransferDone done) = 0;
  virtual void ReadImpl(std::span<const Transfer> items, TransferDone done) = 0;
  void Run(bool write, std::span<const Transfer> items, TransferDone done);

  std::atomic<uint64_t> writes_{0}, reads_{0}, bytes_written_{0}, bytes_read_{0}, failures_{0};
};

}  // namespace tensord::tiers
