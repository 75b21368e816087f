// Block I/O for the swap device: one interface, two engines. UringEngine owns one io_uring ring
// per I/O thread (bounded queue depth, batched submission); SyncEngine is the pread/pwrite
// fallback for kernels or sandboxes that refuse io_uring. Both split transfers into chunks,
// requeue short transfers and -EAGAIN, and accept a FaultPlan that injects errors at the
// syscall boundary for tests. Thread-safe: any thread may call Run; work is handed to the
// engine's own threads through a queue.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace tensord::io {

enum class Op { kRead, kWrite };

struct IoOp {
  Op op = Op::kRead;
  int fd = -1;
  uint8_t* buf = nullptr;  // borrowed; must stay valid until Run returns
  uint64_t len = 0;
  uint64_t offset = 0;
};

// A memory range that transfers mostly come from or go to (a host arena): the io_uring engine
// registers it with each ring as fixed buffers, in pieces of at most 1 GiB (the kernel's limit),
// so those transfers skip per-I/O page pinning. Borrowed; must outlive the engine.
struct FixedRegion {
  uint8_t* base = nullptr;
  uint64_t size = 0;
};

struct EngineOptions {
  int threads = 1;
  int queue_depth = 32;
  uint64_t chunk_bytes = 1 << 20;          // large transfers become queue_depth-parallel chunks
  bool force_sync = false;                 // use the pread/pwrite engine even where io_uring works
  std::vector<FixedRegion> fixed_regions;  // registered where the kernel and RLIMIT_MEMLOCK allow
};

// Injected faults, consulted once per completed chunk (thread-safe). A fault with count < 0 is
// persistent; otherwise it fires `count` more times.
class FaultPlan {
 public:
  enum class Kind { kNone, kError, kShort };
  struct Fault {
    Kind kind = Kind::kNone;
    Op op = Op::kRead;
    int error = 0;  // errno for kError
    int count = 0;
  };
  void Set(Fault fault) ABSL_LOCKS_EXCLUDED(mu_);
  void Clear() ABSL_LOCKS_EXCLUDED(mu_);
  // Returns the fault to apply to a chunk of `op`, consuming one use.
  Fault Next(Op op) ABSL_LOCKS_EXCLUDED(mu_);

 private:
  absl::Mutex mu_;
  Fault fault_ ABSL_GUARDED_BY(mu_);
};

class IoEngine {
 public:
  virtual ~IoEngine() = default;
  // Performs every op (concurrently, up to the queue depth) and returns when all are done:
  // OK, or the first error (RESOURCE_EXHAUSTED for ENOSPC, UNAVAILABLE for EIO and other
  // device errors, DATA_LOSS for a read past the end).
  virtual absl::Status Run(std::span<const IoOp> ops) = 0;
  // Returns "io_uring+fixed" (with registered buffers), "io_uring" or "pread" (the fallback).
  virtual const char* mode() const = 0;
  // Installs a fault plan (borrowed; must outlive the engine), or nullptr.
  virtual void set_fault_plan(FaultPlan* plan) = 0;
};

// Returns an io_uring engine, or the pread/pwrite engine when options.force_sync is set or
// the kernel refuses io_uring (EPERM/ENOSYS, as under default container seccomp).
std::unique_ptr<IoEngine> MakeEngine(const EngineOptions& options);

// Returns the io_uring engine. UNAVAILABLE if io_uring cannot be set up here.
absl::StatusOr<std::unique_ptr<IoEngine>> MakeUringEngine(const EngineOptions& options);
std::unique_ptr<IoEngine> MakeSyncEngine(const EngineOptions& options);

// Converts an errno from a transfer into a Status naming `what`.
absl::Status ErrnoStatus(int error, const std::string& what);

}  // namespace tensord::io
