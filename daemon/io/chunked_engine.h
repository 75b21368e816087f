// Internal to io/: the machinery both engines share. Run() splits ops into chunks and hands
// them to the engine's worker threads through a WorkQueue; each chunk's completion is settled
// (errors, short transfers, -EAGAIN) by Settle(), and Run() returns when its batch is done.
#pragma once

#include <deque>
#include <thread>
#include <vector>

#include "daemon/io/io_engine.h"

namespace tensord::io::internal {

// The ops of one Run() call; completed chunks count down `remaining`.
struct Batch {
  absl::Mutex mu;
  size_t remaining ABSL_GUARDED_BY(mu) = 0;
  absl::Status status ABSL_GUARDED_BY(mu);
  void Done(const absl::Status& st);
};

struct Chunk {
  Batch* batch = nullptr;
  IoOp op;
};

class WorkQueue {
 public:
  void Push(std::vector<Chunk> chunks) ABSL_LOCKS_EXCLUDED(mu_);
  // Appends up to `max` chunks to `out`; if `block`, waits until there is one or Stop().
  // Returns how many were taken.
  size_t Pop(std::vector<Chunk>* out, size_t max, bool block) ABSL_LOCKS_EXCLUDED(mu_);
  void Stop() ABSL_LOCKS_EXCLUDED(mu_);
  bool stopped() ABSL_LOCKS_EXCLUDED(mu_);

 private:
  absl::Mutex mu_;
  std::deque<Chunk> chunks_ ABSL_GUARDED_BY(mu_);
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
};

// Applies one completion result (bytes, or -errno) to a chunk. Returns true when the chunk is
// finished (its batch told), false when the chunk (advanced past what was transferred) must be
// submitted again.
bool Settle(Chunk& chunk, int64_t result, FaultPlan* plan);

// Base of both engines: Run(), the queue and the worker threads.
class ChunkedEngine : public IoEngine {
 public:
  explicit ChunkedEngine(const EngineOptions& options) : options_(options) {}
  ~ChunkedEngine() override;
  absl::Status Run(std::span<const IoOp> ops) override;
  void set_fault_plan(FaultPlan* plan) override { plan_.store(plan); }

 protected:
  // Starts options_.threads workers running Worker(i). Call from the derived constructor.
  void StartWorkers();
  // Stops the queue and joins the workers. Call from the derived destructor, so that no worker
  // runs derived code while the derived object is torn down. Idempotent.
  void StopWorkers();
  virtual void Worker(int index) = 0;

  const EngineOptions options_;
  WorkQueue queue_;
  std::atomic<FaultPlan*> plan_{nullptr};

 private:
  std::vector<std::thread> workers_;
};

}  // namespace tensord::io::internal
