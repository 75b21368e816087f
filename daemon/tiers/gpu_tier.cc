// GPU tier construction and the CUDA device behind it.
#include "daemon/tiers/gpu_tier.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "daemon/memory/fixed_pool.h"
#include "daemon/memory/general_allocator.h"
#include "spdlog/spdlog.h"

namespace tensord::tiers {
namespace {

constexpr uint64_t kArenaAlign = 2 << 20;
constexpr uint64_t kGpuAlignment = 4096;  // every tensor starts on a 4 KiB boundary

// A real GPU: one cudaMalloc arena and one stream per copy direction, so promotions and
// demotions use both copy engines at once, plus one for zeroing freed ranges.
class CudaDevice final : public GpuDevice {
 public:
  static absl::StatusOr<std::unique_ptr<CudaDevice>> Open(int ordinal, uint64_t size) {
    auto info = cuda::GetDeviceInfo(ordinal);
    if (!info.ok()) return info.status();
    auto memory = cuda::DeviceMemory::Allocate(ordinal, size);
    if (!memory.ok()) {
      return absl::Status(memory.status().code(),
                          absl::StrCat("GPU ", ordinal, ": cannot allocate a ", FormatBytes(size),
                                       " arena: ", memory.status().message()));
    }
    auto handle = memory->IpcHandle();
    if (!handle.ok()) return handle.status();
    auto up = cuda::Stream::Create(ordinal);
    if (!up.ok()) return up.status();
    auto down = cuda::Stream::Create(ordinal);
    if (!down.ok()) return down.status();
    auto zero = cuda::Stream::Create(ordinal);
    if (!zero.ok()) return zero.status();
    auto d = std::unique_ptr<CudaDevice>(new CudaDevice());
    d->info_ = *std::move(info);
    d->memory_ = *std::move(memory);
    d->handle_ = *std::move(handle);
    d->up_ = *std::move(up);
    d->down_ = *std::move(down);
    d->zero_ = *std::move(zero);
    // Fresh device memory holds whatever an earlier process left: clear it once.
    if (absl::Status st = d->Zero(0, size); !st.ok()) return st;
    return d;
  }

  int ordinal() const override { return info_.ordinal; }
  std::string name() const override { return info_.name; }
  std::string uuid() const override { return info_.uuid; }
  uint64_t size() const override { return memory_.size(); }
  std::string ipc_handle() const override { return handle_; }
  uint8_t* base() const override { return memory_.get(); }

  absl::Status ToDevice(std::span<const Copy> copies) override {
    absl::MutexLock lock(&up_mu_);
    return Run(copies, cuda::CopyKind::kHostToDevice, up_);
  }
  absl::Status ToHost(std::span<const Copy> copies) override {
    absl::MutexLock lock(&down_mu_);
    return Run(copies, cuda::CopyKind::kDeviceToHost, down_);
  }
  // On its own stream: a Release that frees memory never waits behind a large copy.
  absl::Status Zero(uint64_t offset, uint64_t bytes) override {
    absl::MutexLock lock(&zero_mu_);
    if (absl::Status st = cuda::SetDevice(info_.ordinal); !st.ok()) return st;
    if (absl::Status st = cuda::MemsetAsync(memory_.get() + offset, 0, bytes, zero_.handle());
        !st.ok()) {
      return st;
    }
    return zero_.Synchronize();
  }
  absl::StatusOr<std::pair<uint64_t, uint64_t>> MemInfo() override {
    return cuda::MemInfo(info_.ordinal);
  }
  absl::Status WaitEvent(const std::string& handle, absl::Time deadline) override {
    return cuda::WaitIpcEvent(info_.ordinal, handle, deadline);
  }

 private:
  CudaDevice() = default;

  absl::Status Run(std::span<const Copy> copies, cuda::CopyKind kind, const cuda::Stream& s) {
    if (absl::Status st = cuda::SetDevice(info_.ordinal); !st.ok()) return st;
    for (const Copy& c : copies) {
      uint8_t* dev = memory_.get() + c.offset;
      absl::Status st = kind == cuda::CopyKind::kHostToDevice
                            ? cuda::CopyAsync(dev, c.host, c.bytes, kind, s.handle())
                            : cuda::CopyAsync(c.host, dev, c.bytes, kind, s.handle());
      if (!st.ok()) {
        s.Synchronize().IgnoreError();  // do not leave copies running into freed ranges
        return st;
      }
    }
    return s.Synchronize();
  }

  cuda::DeviceInfo info_;
  cuda::DeviceMemory memory_;
  std::string handle_;
  absl::Mutex up_mu_, down_mu_, zero_mu_;
  cuda::Stream up_, down_, zero_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<GpuTier>> GpuTier::Open(const GpuConfig& config, HostTier* host,
                                                       std::string* absent) {
  if (config.mode == "off") {
    *absent = "gpu.mode is off";
    return nullptr;
  }
  std::string why;
  const int count = cuda::DeviceCount(&why);
  if (count == 0) {
    if (config.mode == "on") {
      return absl::FailedPreconditionError(
          absl::StrCat("gpu.mode is on but no GPU is usable: ", why));
    }
    *absent = why;
    return nullptr;
  }
  auto wanted = ParseDeviceList(config.devices);
  if (!wanted.ok()) return wanted.status();
  if (wanted->empty()) {
    for (int d = 0; d < count; ++d) wanted->push_back(d);
  }
  auto tier = std::unique_ptr<GpuTier>(new GpuTier());
  for (int d : *wanted) {
    if (d >= count) {
      return absl::InvalidArgumentError(
          absl::StrCat("gpu.devices names GPU ", d, " but only ", count, " are visible"));
    }
    uint64_t size = config.size;
    if (size == 0) {
      auto mem = cuda::MemInfo(d);
      if (!mem.ok()) return mem.status();
      size = static_cast<uint64_t>(config.memory_fraction * static_cast<double>(mem->first));
    }
    size = size / kArenaAlign * kArenaAlign;
    if (size == 0) return absl::InvalidArgumentError(absl::StrCat("GPU ", d, ": arena size is 0"));
    auto device = CudaDevice::Open(d, size);
    if (!device.ok()) {
      if (config.mode == "on") return device.status();
      // auto: a busy, exclusive-mode or too small device is skipped, not fatal.
      spdlog::warn("GPU {} is not used: {}", d, device.status().ToString());
      continue;
    }
    spdlog::info("GPU tier: device {} ({}), arena {}", d, (*device)->name(), FormatBytes(size));
    if (absl::Status st = tier->AddDevice(*std::move(device), config.pools); !st.ok()) return st;
  }
  if (tier->devices_.empty()) {
    *absent = "no configured GPU could be opened (see the warnings above)";
    return nullptr;
  }
  if (config.pin_host) {
    tier->host_pinned_ = true;
    for (const HostSegment& seg : host->segments()) {
      auto reg = cuda::HostRegistration::Register(host->Address(seg.id, 0), seg.size);
      if (!reg.ok()) {
        spdlog::warn("host segment {} could not be pinned ({}): host<->GPU copies are slower",
                     seg.shm_name, reg.status().ToString());
        tier->host_pinned_ = false;
        continue;
      }
      tier->registrations_.push_back(*std::move(reg));
    }
  }
  return tier;
}

absl::StatusOr<std::unique_ptr<GpuTier>> GpuTier::ForDevices(
    std::vector<std::unique_ptr<GpuDevice>> devices, const std::vector<PoolClassConfig>& classes) {
  auto tier = std::unique_ptr<GpuTier>(new GpuTier());
  for (auto& d : devices) {
    if (absl::Status st = tier->AddDevice(std::move(d), classes); !st.ok()) return st;
  }
  return tier;
}

GpuTier::~GpuTier() = default;

absl::Status GpuTier::AddDevice(std::unique_ptr<GpuDevice> device,
                                const std::vector<PoolClassConfig>& classes) {
  const auto id = static_cast<uint32_t>(devices_.size());
  GpuArena arena{id,
                 device->ordinal(),
                 absl::StrCat("gpu", device->ordinal()),
                 device->uuid(),
                 device->size(),
                 device->ipc_handle()};
  // Fixed classes first, each block aligned like the general pool's ranges; then the rest.
  uint64_t offset = 0;
  for (const PoolClassConfig& c : classes) {
    auto count = BlockCount(c, arena.size);
    if (!count.ok()) return count.status();
    const uint64_t block = (c.block_size + kGpuAlignment - 1) / kGpuAlignment * kGpuAlignment;
    if (offset + block * *count > arena.size) {
      return absl::InvalidArgumentError(absl::StrCat("GPU pool classes need more than the ",
                                                     FormatBytes(arena.size), " arena of ",
                                                     arena.name));
    }
    pools_.Add(absl::StrCat(arena.name, ".", c.name), id, /*fixed=*/true,
               std::make_unique<memory::FixedPool>(offset, block, *count));
    offset += block * *count;
  }
  if (arena.size - offset >= kGpuAlignment) {
    pools_.Add(
        arena.name, id, /*fixed=*/false,
        std::make_unique<memory::GeneralAllocator>(offset, arena.size - offset, kGpuAlignment));
  }
  arenas_.push_back(std::move(arena));
  devices_.push_back(std::move(device));
  return absl::OkStatus();
}

absl::StatusOr<std::vector<uint32_t>> GpuTier::Candidates(uint64_t nbytes, int device,
                                                          absl::string_view pool) const {
  if (device < -1 || (device >= 0 && PoolsOn(device).empty())) {
    return absl::InvalidArgumentError(absl::StrCat("the daemon has no arena on GPU ", device));
  }
  std::vector<uint32_t> out;
  if (pool.empty()) {
    auto all = pools_.Candidates(nbytes, "");
    if (!all.ok()) return all.status();
    for (uint32_t p : *all) {
      if (device < 0 || arenas_[pools_[p].arena].device == device) out.push_back(p);
    }
  } else {
    for (const GpuArena& a : arenas_) {
      if (device >= 0 && a.device != device) continue;
      auto named = pools_.Candidates(nbytes, absl::StrCat(a.name, ".", pool));
      if (!named.ok()) return named.status();
      out.insert(out.end(), named->begin(), named->end());
    }
  }
  if (out.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(nbytes, " bytes can never fit the GPU arena of device ", device));
  }
  return out;
}

bool GpuTier::Healthy() const {
  for (const auto& d : devices_) {
    if (!d->MemInfo().ok()) return false;
  }
  return true;
}

std::vector<uint32_t> GpuTier::PoolsOn(int device) const {
  std::vector<uint32_t> out;
  for (uint32_t i = 0; i < pools_.size(); ++i) {
    if (device < 0 || arenas_[pools_[i].arena].device == device) out.push_back(i);
  }
  return out;
}

absl::StatusOr<Range> GpuTier::ReserveImpl(uint64_t nbytes, const Placement& where) {
  return ReservePooled(pools_, Candidates(nbytes, where.device, where.pool), nbytes);
}

absl::Status GpuTier::Scrub(const Range& range) {
  return devices_[pools_[range.space].arena]->Zero(range.offset, range.reserved);
}

std::vector<absl::Status> GpuTier::CopyPerArena(bool to_device, std::span<const Transfer> items) {
  std::vector<absl::Status> out(items.size());
  std::vector<std::vector<GpuDevice::Copy>> copies(devices_.size());
  std::vector<std::vector<size_t>> index(devices_.size());
  for (size_t i = 0; i < items.size(); ++i) {
    const Range& r = *items[i].range;
    const uint32_t arena = pools_[r.space].arena;
    copies[arena].push_back({r.offset, items[i].host, r.length});
    index[arena].push_back(i);
  }
  for (uint32_t a = 0; a < copies.size(); ++a) {
    if (copies[a].empty()) continue;
    const absl::Status st =
        to_device ? devices_[a]->ToDevice(copies[a]) : devices_[a]->ToHost(copies[a]);
    for (size_t i : index[a]) out[i] = st;
  }
  return out;
}

void GpuTier::WriteImpl(std::span<const Transfer> items, TransferDone done) {
  std::move(done)(CopyPerArena(/*to_device=*/true, items));
}

void GpuTier::ReadImpl(std::span<const Transfer> items, TransferDone done) {
  std::move(done)(CopyPerArena(/*to_device=*/false, items));
}

}  // namespace tensord::tiers
