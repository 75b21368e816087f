// The GPU tier: one device-memory arena per configured GPU, carved by the same PoolSet and
// allocators as the host tier (offsets, never addresses) and shared with clients through one
// CUDA IPC handle per arena. Copies between the host arenas and the GPU arenas run on the
// daemon's own streams, from host memory registered with the driver (pinned).
// What the tier needs of a device is the GpuDevice interface: CudaDevice drives a real GPU;
// unit tests give a fake over host memory, so the store's GPU logic is tested without one.
#pragma once

#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/config.h"
#include "common/cuda.h"
#include "daemon/memory/pool_set.h"
#include "daemon/tiers/host_tier.h"

namespace tensord::tiers {

class GpuDevice {
 public:
  // One copy between host memory and the arena at `offset`.
  struct Copy {
    uint64_t offset = 0;
    uint8_t* host = nullptr;
    uint64_t bytes = 0;
  };
  virtual ~GpuDevice() = default;
  virtual int ordinal() const = 0;
  virtual std::string name() const = 0;
  virtual std::string uuid() const = 0;        // cuda::kUuidBytes raw bytes
  virtual uint64_t size() const = 0;           // arena bytes
  virtual std::string ipc_handle() const = 0;  // cuda::kIpcHandleBytes, opened by clients
  virtual uint8_t* base() const = 0;           // the arena's device address in the daemon
  // Copies host -> arena (ToDevice) or arena -> host (ToHost): every copy is enqueued, then
  // one wait. Returns when all are complete. Thread-safe.
  virtual absl::Status ToDevice(std::span<const Copy> copies) = 0;
  virtual absl::Status ToHost(std::span<const Copy> copies) = 0;
  virtual absl::Status Zero(uint64_t offset, uint64_t bytes) = 0;
  // Free and total bytes of the whole device (every process's use counts).
  virtual absl::StatusOr<std::pair<uint64_t, uint64_t>> MemInfo() = 0;
  // Waits until a client's interprocess event (sent with Seal) has completed.
  virtual absl::Status WaitEvent(const std::string& handle, absl::Time deadline) = 0;
};

// A GPU arena as clients see it (Attach).
struct GpuArena {
  uint32_t id = 0;  // index in the tier; a GPU location's `arena`
  int device = 0;   // the daemon's ordinal
  std::string name;
  std::string uuid;
  uint64_t size = 0;
  std::string ipc_handle;
};

class GpuTier final : public Tier {
 public:
  // Opens the configured devices and allocates their arenas. Returns nullptr when the tier is
  // absent (mode off, or auto and no usable GPU), with the reason in *absent. FAILED_PRECONDITION
  // when mode is on and there is no GPU; the CUDA error when an arena cannot be made.
  // Registers the host arenas with the driver when config.pin_host (a refusal is logged: copies
  // are then synchronous).
  static absl::StatusOr<std::unique_ptr<GpuTier>> Open(const GpuConfig& config, HostTier* host,
                                                       std::string* absent);
  // A tier over the given devices (tests, benchmarks), each arena carved into `classes` and a
  // general pool. INVALID_ARGUMENT when the classes do not fit an arena.
  static absl::StatusOr<std::unique_ptr<GpuTier>> ForDevices(
      std::vector<std::unique_ptr<GpuDevice>> devices,
      const std::vector<PoolClassConfig>& classes = {});
  ~GpuTier();

  memory::PoolSet& pools() { return pools_; }
  const memory::PoolSet& pools() const { return pools_; }
  const std::vector<GpuArena>& arenas() const { return arenas_; }
  GpuDevice& device(uint32_t arena) const { return *devices_[arena]; }
  // Pools of the arena on `device` (the daemon's ordinal), or of every arena when device < 0.
  std::vector<uint32_t> PoolsOn(int device) const;
  // The pools a tensor of `nbytes` may go to on `device` (-1: any), best first: with `pool`
  // empty, the best-fitting fixed classes then the general pools; else that class ("kv" names
  // "gpu<N>.kv" on each device). INVALID_ARGUMENT for an unknown class or device, or a size
  // that can never fit.
  absl::StatusOr<std::vector<uint32_t>> Candidates(uint64_t nbytes, int device,
                                                   absl::string_view pool) const;
  bool host_pinned() const { return host_pinned_; }
  // Whether every device still answers (a CUDA context with a sticky error does not). Cheap:
  // one cudaMemGetInfo per device.
  bool Healthy() const override;

  // The Tier interface: ranges of the arenas' pools (Range::space is the pool index; Placement
  // picks the device and class as Candidates does). A batch is one enqueue per device on the
  // daemon's streams, then one wait. Scrub zeroes on the device. Reserve/Free/Usage: under the
  // store's lock.
  TierId id() const override { return TierId::kGpu; }
  absl::Status Scrub(const Range& range) override;
  TierUsage Usage() const override { return UsageOf(pools_); }
  uint8_t* Address(const Range& range) const override {
    return devices_[pools_[range.space].arena]->base() + range.offset;
  }

 private:
  GpuTier() = default;
  absl::StatusOr<Range> ReserveImpl(uint64_t nbytes, const Placement& where) override;
  void FreeImpl(const Range& range) override { FreePooled(pools_, range); }
  void WriteImpl(std::span<const Transfer> items, TransferDone done) override;
  void ReadImpl(std::span<const Transfer> items, TransferDone done) override;
  // One ToDevice/ToHost per arena; every item gets its arena's status.
  std::vector<absl::Status> CopyPerArena(bool to_device, std::span<const Transfer> items);
  absl::Status AddDevice(std::unique_ptr<GpuDevice> device,
                         const std::vector<PoolClassConfig>& classes);

  std::vector<std::unique_ptr<GpuDevice>> devices_;
  std::vector<GpuArena> arenas_;
  memory::PoolSet pools_;
  std::vector<cuda::HostRegistration> registrations_;
  bool host_pinned_ = false;
};

}  // namespace tensord::tiers
