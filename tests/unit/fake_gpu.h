// A GPU device for unit tests: its "device memory" is host memory, copies are memcpy, and
// faults can be injected. Lets the store's GPU logic (copy-up, copy-down, demotion under
// pressure, lease accounting) run where there is no GPU; the real CudaDevice is exercised by
// the GPU integration tests and benchmark.
#pragma once

#include <atomic>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "daemon/tiers/gpu_tier.h"

namespace tensord::tiers {

class FakeGpuDevice final : public GpuDevice {
 public:
  FakeGpuDevice(int ordinal, uint64_t size)
      : ordinal_(ordinal), memory_(new uint8_t[size]), size_(size) {
    std::memset(memory_.get(), 0xAB, size);  // garbage, like fresh device memory
  }

  int ordinal() const override { return ordinal_; }
  std::string name() const override { return "Fake GPU"; }
  std::string uuid() const override { return std::string(16, static_cast<char>('A' + ordinal_)); }
  uint64_t size() const override { return size_; }
  std::string ipc_handle() const override { return std::string(64, 'h'); }
  uint8_t* base() const override { return memory_.get(); }

  absl::Status ToDevice(std::span<const Copy> copies) override {
    if (fail_copies) return absl::InternalError("injected copy failure");
    for (const Copy& c : copies) std::memcpy(memory_.get() + c.offset, c.host, c.bytes);
    up_copies += copies.size();
    ++up_batches;
    return absl::OkStatus();
  }
  absl::Status ToHost(std::span<const Copy> copies) override {
    if (fail_copies) return absl::InternalError("injected copy failure");
    for (const Copy& c : copies) std::memcpy(c.host, memory_.get() + c.offset, c.bytes);
    down_copies += copies.size();
    return absl::OkStatus();
  }
  absl::Status Zero(uint64_t offset, uint64_t bytes) override {
    std::memset(memory_.get() + offset, 0, bytes);
    return absl::OkStatus();
  }
  absl::StatusOr<std::pair<uint64_t, uint64_t>> MemInfo() override {
    if (lost) return absl::InternalError("cudaErrorIllegalAddress (injected)");
    return std::make_pair(device_free.load(), size_ * 2);
  }
  // "done" completes at once; anything else never completes.
  absl::Status WaitEvent(const std::string& handle, absl::Time deadline) override {
    if (handle.size() != 64) return absl::InvalidArgumentError("bad event handle size");
    if (handle == std::string(64, 'd')) return absl::OkStatus();
    absl::SleepFor(std::max(absl::ZeroDuration(), deadline - absl::Now()));
    return absl::DeadlineExceededError("the client's writes did not complete");
  }

  std::atomic<bool> fail_copies{false};
  std::atomic<bool> lost{false};  // the context has a sticky error
  std::atomic<uint64_t> up_copies{0}, down_copies{0}, up_batches{0};
  std::atomic<uint64_t> device_free{uint64_t{1} << 40};

 private:
  int ordinal_;
  std::unique_ptr<uint8_t[]> memory_;
  uint64_t size_;
};

}  // namespace tensord::tiers
