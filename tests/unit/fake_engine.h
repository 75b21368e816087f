// A memory-backed IoEngine for unit tests: ops copy to and from one byte vector per fd, so tier and
// store logic can be tested without a device, deterministically. It honours a FaultPlan like the
// real engines: one consultation per op; kError fails the op with the planned errno; kShort is
// ignored (requeueing short transfers is the real engines' job, tested on real files in ssd_test).
#pragma once

#include <cstring>
#include <map>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "daemon/io/io_engine.h"

namespace tensord::io {

class FakeEngine final : public IoEngine {
 public:
  // Each fd is a device of `size` bytes.
  explicit FakeEngine(uint64_t size) : size_(size) {}

  absl::Status Run(std::span<const IoOp> ops) override {
    absl::MutexLock lock(&mu_);
    for (const IoOp& op : ops) {
      if (op.offset + op.len > size_) {
        return absl::DataLossError("fake engine: transfer past the end");
      }
      FaultPlan::Fault f;
      if (FaultPlan* plan = plan_; plan != nullptr) f = plan->Next(op.op);
      if (f.kind == FaultPlan::Kind::kError) return ErrnoStatus(f.error, "fake engine");
      Copy(op);
      ++ops_;
    }
    return absl::OkStatus();
  }
  const char* mode() const override { return "fake"; }
  void set_fault_plan(FaultPlan* plan) override {
    absl::MutexLock lock(&mu_);
    plan_ = plan;
  }
  uint64_t ops() {
    absl::MutexLock lock(&mu_);
    return ops_;
  }

 private:
  void Copy(const IoOp& op) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    std::vector<uint8_t>& device = devices_[op.fd];
    device.resize(size_);
    uint8_t* dev = device.data() + op.offset;
    if (op.op == Op::kRead) {
      std::memcpy(op.buf, dev, op.len);
    } else {
      std::memcpy(dev, op.buf, op.len);
    }
  }

  absl::Mutex mu_;
  const uint64_t size_;
  std::map<int, std::vector<uint8_t>> devices_ ABSL_GUARDED_BY(mu_);
  FaultPlan* plan_ ABSL_GUARDED_BY(mu_) = nullptr;
  uint64_t ops_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace tensord::io
