// An in-memory tier for tests (CacheLib's MemoryDevice): ranges carved by the general
// allocator from one heap buffer, transfers are memcpy, and faults can be injected. It stands
// in for any tier (the mover's tests put it below host, where it keeps no checksum, so that
// damaged encoded bytes reach the codec) and is itself checked by the Tier interface tests.
#pragma once

#include <atomic>
#include <cstring>
#include <memory>

#include "absl/synchronization/mutex.h"
#include "daemon/memory/general_allocator.h"
#include "daemon/tiers/tier.h"

namespace tensord::tiers {

class FakeTier final : public Tier {
 public:
  FakeTier(TierId id, uint64_t size)
      : id_(id), memory_(new uint8_t[size]), size_(size), alloc_(0, size, 4096) {
    std::memset(memory_.get(), 0xCD, size);
  }

  TierId id() const override { return id_; }
  absl::Status Scrub(const Range& r) override {
    std::memset(memory_.get() + r.offset, 0, r.reserved);
    return absl::OkStatus();
  }
  TierUsage Usage() const override {
    absl::MutexLock lock(&mu_);
    const memory::AllocatorStats st = alloc_.Stats();
    return TierUsage{st.capacity_bytes, st.used_bytes, st.largest_free_bytes};
  }
  bool Healthy() const override { return !fail_writes && !fail_reads; }
  uint8_t* Address(const Range& r) const override { return memory_.get() + r.offset; }

  std::atomic<bool> fail_writes{false}, fail_reads{false};

 private:
  absl::StatusOr<Range> ReserveImpl(uint64_t nbytes, const Placement&) override {
    absl::MutexLock lock(&mu_);
    auto offset = alloc_.Allocate(nbytes);
    if (!offset.ok()) return offset.status();
    return Range{0, *offset, nbytes, alloc_.Reserved(nbytes), 0};
  }
  void FreeImpl(const Range& r) override {
    absl::MutexLock lock(&mu_);
    alloc_.Free(r.offset).IgnoreError();
  }
  void WriteImpl(std::span<const Transfer> items, TransferDone done) override {
    std::vector<absl::Status> out(items.size());
    for (size_t i = 0; i < items.size(); ++i) {
      if (fail_writes) {
        out[i] = absl::UnavailableError("injected write failure");
        continue;
      }
      std::memcpy(Address(*items[i].range), items[i].host, items[i].range->length);
    }
    std::move(done)(std::move(out));
  }
  void ReadImpl(std::span<const Transfer> items, TransferDone done) override {
    std::vector<absl::Status> out(items.size());
    for (size_t i = 0; i < items.size(); ++i) {
      if (fail_reads) {
        out[i] = absl::UnavailableError("injected read failure");
        continue;
      }
      std::memcpy(items[i].host, Address(*items[i].range), items[i].range->length);
    }
    std::move(done)(std::move(out));
  }

  const TierId id_;
  std::unique_ptr<uint8_t[]> memory_;
  const uint64_t size_;
  mutable absl::Mutex mu_;
  memory::GeneralAllocator alloc_;
};

}  // namespace tensord::tiers
