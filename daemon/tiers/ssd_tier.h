// The SSD tier: preallocated swap files opened O_DIRECT, each carved into 4 KiB-aligned extents
// by the general allocator (new extents rotate among the files, spreading I/O over devices),
// written and read through an IoEngine; one of the tiers behind tiers/tier.h. Every extent carries
// an XXH3 checksum of its bytes, taken when written and verified on every read, so a faulty device
// never serves wrong bytes. After `degrade_after` consecutive I/O failures the tier is marked
// degraded and refuses new writes (reads are still attempted). Thread-safe: the extent allocator
// and counters are guarded by mu_; I/O runs without the lock.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/config.h"
#include "common/unique_fd.h"
#include "daemon/io/io_engine.h"
#include "daemon/memory/general_allocator.h"
#include "daemon/tiers/tier.h"

namespace tensord::tiers {

struct SsdTierConfig {
  std::vector<SwapFileConfig> files;  // e.g. one per NVMe device; extents rotate among them
  io::EngineOptions engine;
  int degrade_after = 3;  // consecutive failed operations
  // The compressed RAM front (0: none): encoded copies that saved at least `ram_min_saving` of
  // their bytes stay in this much RAM instead of going to a file; the oldest are written back to
  // the files when it is full.
  uint64_t ram_capacity = 0;
  double ram_min_saving = 0.25;
};

// An extent: Range::space is the index into SsdTierConfig::files, `reserved` a 4 KiB multiple,
// `checksum` the XXH3-64 of the `length` bytes written. In the RAM front: space kRamSpace, offset
// the entry's handle.
using SsdExtent = Range;
inline constexpr uint32_t kRamSpace = 0xffffffffu;

struct SsdStats {
  uint64_t capacity_bytes = 0, used_bytes = 0, largest_free_bytes = 0, free_bytes = 0;
  uint64_t reads = 0, writes = 0, bytes_read = 0, bytes_written = 0;
  uint64_t io_errors = 0, checksum_failures = 0;
  uint64_t read_ns = 0, write_ns = 0;  // time spent in completed transfers
  bool degraded = false;
  const char* engine = "";
  // The compressed RAM front: its size, the encoded bytes and entries it holds, what they are
  // decoded, reads it served, entries written back to the files.
  uint64_t ram_capacity = 0, ram_used_bytes = 0, ram_entries = 0, ram_logical_bytes = 0;
  uint64_t ram_reads = 0, ram_writebacks = 0, ram_writeback_bytes = 0;
};

class SsdTier final : public Tier {
 public:
  // Creates or reuses the swap files, preallocates them and opens them O_DIRECT.
  // With config.ram_capacity, a compressed RAM front sits before them (zswap's idea): Reserve
  // puts a copy there when Placement::decoded_bytes shows its encoding saved ram_min_saving and
  // it fits (after writing the oldest entries back to the files, if need be); reads and frees
  // find an entry wherever it is by then. The store sees one tier.
  // INVALID_ARGUMENT for no file or a size that is not a positive multiple of 4 KiB; the errno
  // otherwise.
  static absl::StatusOr<std::unique_ptr<SsdTier>> Create(const SsdTierConfig& config,
                                                         std::unique_ptr<io::IoEngine> engine);
  ~SsdTier() override;

  // The Tier interface. Reserve rotates new extents among the files (spreading I/O over
  // devices); RESOURCE_EXHAUSTED when full, UNAVAILABLE when degraded. Write takes each item's
  // checksum, Read verifies it (DATA_LOSS on a mismatch; the bytes are then untrustworthy). A
  // batch that fails is retried item by item, so that only the items that fail again report an
  // error. Transfers complete before Write/Read return. Thread-safe.
  TierId id() const override { return TierId::kSsd; }
  absl::Status Scrub(const Range&) override { return absl::OkStatus(); }
  TierUsage Usage() const override;
  bool Healthy() const override { return !const_cast<SsdTier*>(this)->degraded(); }
  uint8_t* Address(const Range&) const override { return nullptr; }
  using Tier::Read;
  using Tier::Write;

  // Conveniences over the interface: reserves an extent and writes `len` bytes from `src`
  // (borrowed), freeing the extent if the write fails; reads one extent into `dst`.
  absl::StatusOr<SsdExtent> Write(const uint8_t* src, uint64_t len);
  absl::Status Read(const SsdExtent& extent, uint8_t* dst);

  // Marks an extent a restart found in the index as in use again. INVALID_ARGUMENT when it is
  // not a file extent of this tier, overlaps one claimed already, or its sizes disagree.
  absl::Status Claim(const SsdExtent& extent) ABSL_LOCKS_EXCLUDED(mu_);
  // fdatasyncs the swap files (a clean stop: what the index points at is on the device).
  void Sync();

  SsdStats Stats() const;
  bool degraded();
  // For a degraded tier: writes one 4 KiB block, reads it back and, if both work and the bytes
  // match, clears the degraded mark. Returns whether the tier is usable now.
  bool Probe();
  // The fault plan the engine consults (for tests and the fault-injection switch).
  io::FaultPlan& faults() { return faults_; }

 private:
  struct File {
    std::string path;
    UniqueFd fd;
    memory::GeneralAllocator extents;
  };
  SsdTier(const SsdTierConfig& config, std::vector<UniqueFd> fds,
          std::unique_ptr<io::IoEngine> engine);
  struct Piece {
    int fd;
    uint8_t* buf;
    uint64_t len;
    uint64_t offset;  // 4 KiB-aligned
  };
  absl::StatusOr<Range> ReserveImpl(uint64_t nbytes, const Placement& where) override;
  void FreeImpl(const Range& range) override;
  void WriteImpl(std::span<const Transfer> items, TransferDone done) override;
  void ReadImpl(std::span<const Transfer> items, TransferDone done) override;
  std::vector<Piece> PiecesOf(std::span<const Transfer> items) const;
  // Runs a batch's file items through `files` (one batch) and its RAM-front items through
  // `ram`; one status per item, in order.
  std::vector<absl::Status> Split(
      std::span<const Transfer> items,
      absl::FunctionRef<std::vector<absl::Status>(std::span<const Transfer>)> files,
      absl::FunctionRef<absl::Status(const Transfer&)> ram);
  // Runs the pieces as one batch, then alone where the batch failed: one status per piece.
  std::vector<absl::Status> TransferEach(io::Op op, std::span<const Piece> pieces);
  // Runs the pieces as one engine batch; unaligned parts go through small bounce buffers.
  absl::Status RunPieces(io::Op op, std::span<const Piece> pieces);
  void Account(io::Op op, uint64_t count, uint64_t bytes, uint64_t ns, const absl::Status& st);

  // The compressed RAM front (ssd_ram.cc). An entry's bytes are shared so a read can copy them
  // without the lock while a write-back or a Free runs.
  struct RamEntry {
    uint64_t length = 0, decoded = 0;
    std::shared_ptr<const std::vector<uint8_t>> bytes;  // null until written
    bool writing_back = false;  // a write-back is in flight (its bytes stay until it ends)
    bool freed = false;         // freed during its write-back: the write-back cleans up
  };
  bool IsRam(const Range& r) const { return r.space == kRamSpace; }
  // A front entry for `nbytes`, or nullopt when the copy does not belong there or no room
  // can be made.
  std::optional<Range> ReserveRam(uint64_t nbytes, uint64_t decoded);
  // Writes the oldest written entries back to the files until `nbytes` more fit in the front;
  // returns whether they do.
  bool MakeRamRoom(uint64_t nbytes);
  // Front parts of a transfer batch: writes store the bytes, reads copy them (or read the
  // written-back extent), both checking checksums as the files do.
  absl::Status WriteRam(const Transfer& t);
  absl::Status ReadRam(const Transfer& t);
  void FreeRam(const Range& r);
  void AddRamStats(SsdStats* s) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Reserves a file extent (mu_ held): the files' part of ReserveImpl.
  absl::StatusOr<Range> ReserveFile(uint64_t nbytes) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void FreeFile(const Range& extent) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const SsdTierConfig config_;
  std::unique_ptr<io::IoEngine> engine_;
  io::FaultPlan faults_;

  mutable absl::Mutex mu_;
  std::vector<std::unique_ptr<File>> files_;  // fds fixed; extents guarded by mu_
  size_t next_file_ ABSL_GUARDED_BY(mu_) = 0;
  SsdStats stats_ ABSL_GUARDED_BY(mu_);
  // Per direction: a device whose writes fail degrades even while reads still work.
  int consecutive_failures_[2] ABSL_GUARDED_BY(mu_) = {0, 0};  // [read, write]
  // Entries in RAM by handle (handles grow: oldest first), and those written back to a file.
  std::map<uint64_t, RamEntry> ram_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<uint64_t, Range> ram_on_file_ ABSL_GUARDED_BY(mu_);
  uint64_t next_ram_handle_ ABSL_GUARDED_BY(mu_) = 1;
  uint64_t ram_used_ ABSL_GUARDED_BY(mu_) = 0, ram_logical_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t ram_leaving_ ABSL_GUARDED_BY(mu_) = 0;  // bytes of write-backs in flight
  uint64_t ram_reads_ ABSL_GUARDED_BY(mu_) = 0, ram_writebacks_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t ram_writeback_bytes_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace tensord::tiers
