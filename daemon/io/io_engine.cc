// Shared engine machinery, the pread/pwrite fallback engine and engine selection.
#include "daemon/io/io_engine.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "daemon/io/chunked_engine.h"
#include "spdlog/spdlog.h"

namespace tensord::io {

absl::Status ErrnoStatus(int error, const std::string& what) {
  const std::string msg = absl::StrCat(what, ": ", std::strerror(error));
  switch (error) {
    case ENOSPC:
    case EDQUOT:
      return absl::ResourceExhaustedError(msg);
    case EINVAL:
    case EBADF:
      return absl::InternalError(msg);
    default:
      return absl::UnavailableError(msg);
  }
}

void FaultPlan::Set(Fault fault) {
  absl::MutexLock lock(&mu_);
  fault_ = fault;
}

void FaultPlan::Clear() { Set(Fault{}); }

FaultPlan::Fault FaultPlan::Next(Op op) {
  absl::MutexLock lock(&mu_);
  if (fault_.kind == Kind::kNone || fault_.op != op || fault_.count == 0) return Fault{};
  if (fault_.count > 0) --fault_.count;
  return fault_;
}

namespace internal {

void Batch::Done(const absl::Status& st) {
  absl::MutexLock lock(&mu);
  if (status.ok() && !st.ok()) status = st;
  --remaining;
}

void WorkQueue::Push(std::vector<Chunk> chunks) {
  absl::MutexLock lock(&mu_);
  for (Chunk& c : chunks) chunks_.push_back(c);
}

size_t WorkQueue::Pop(std::vector<Chunk>* out, size_t max, bool block) {
  absl::MutexLock lock(&mu_);
  if (block) {
    auto ready = [this]()
                     ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !chunks_.empty() || stopped_; };
    mu_.Await(absl::Condition(&ready));
  }
  size_t n = 0;
  while (n < max && !chunks_.empty()) {
    out->push_back(chunks_.front());
    chunks_.pop_front();
    ++n;
  }
  return n;
}

void WorkQueue::Stop() {
  absl::MutexLock lock(&mu_);
  stopped_ = true;
}

bool WorkQueue::stopped() {
  absl::MutexLock lock(&mu_);
  return stopped_;
}

bool Settle(Chunk& chunk, int64_t result, FaultPlan* plan) {
  if (plan != nullptr && result > 0) {
    const FaultPlan::Fault f = plan->Next(chunk.op.op);
    if (f.kind == FaultPlan::Kind::kError) result = -f.error;
    // A short transfer keeps O_DIRECT alignment, as a real one on a block device would.
    if (f.kind == FaultPlan::Kind::kShort && result >= 8192) result = result / 2 / 4096 * 4096;
  }
  if (result == -EAGAIN || result == -EINTR) return false;
  const char* what = chunk.op.op == Op::kRead ? "swap read" : "swap write";
  if (result < 0) {
    chunk.batch->Done(
        ErrnoStatus(static_cast<int>(-result), absl::StrCat(what, " at offset ", chunk.op.offset)));
    return true;
  }
  if (result == 0) {
    chunk.batch->Done(absl::DataLossError(
        absl::StrCat(what, " at offset ", chunk.op.offset, " transferred nothing (end of file)")));
    return true;
  }
  const auto done = static_cast<uint64_t>(result);
  chunk.op.buf += done;
  chunk.op.offset += done;
  chunk.op.len -= std::min(done, chunk.op.len);
  if (chunk.op.len > 0) return false;  // short transfer: submit the rest
  chunk.batch->Done(absl::OkStatus());
  return true;
}

ChunkedEngine::~ChunkedEngine() { StopWorkers(); }

void ChunkedEngine::StopWorkers() {
  queue_.Stop();
  for (std::thread& t : workers_) t.join();
  workers_.clear();
}

void ChunkedEngine::StartWorkers() {
  for (int i = 0; i < std::max(1, options_.threads); ++i) {
    workers_.emplace_back([this, i] { Worker(i); });
  }
}

constexpr uint64_t kMinChunk = 128 << 10;

absl::Status ChunkedEngine::Run(std::span<const IoOp> ops) {
  Batch batch;
  std::vector<Chunk> chunks;
  // A small batch is cut finer, so that it still fills the queue: the device sees the same
  // parallelism for one 16 MiB tensor as for a stream of them.
  uint64_t total = 0;
  for (const IoOp& op : ops) total += op.len;
  const uint64_t slots = static_cast<uint64_t>(std::max(1, options_.queue_depth)) *
                         static_cast<uint64_t>(std::max(1, options_.threads));
  const uint64_t chunk_bytes = std::clamp<uint64_t>(
      (total / slots + 4095) / 4096 * 4096, std::min<uint64_t>(kMinChunk, options_.chunk_bytes),
      options_.chunk_bytes);
  for (const IoOp& op : ops) {
    for (uint64_t done = 0; done < op.len; done += chunk_bytes) {
      IoOp part = op;
      part.buf += done;
      part.offset += done;
      part.len = std::min<uint64_t>(chunk_bytes, op.len - done);
      chunks.push_back(Chunk{&batch, part});
    }
  }
  if (chunks.empty()) return absl::OkStatus();
  {
    absl::MutexLock lock(&batch.mu);
    batch.remaining = chunks.size();
  }
  queue_.Push(std::move(chunks));
  absl::MutexLock lock(&batch.mu);
  auto done = [&batch]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(batch.mu) { return batch.remaining == 0; };
  batch.mu.Await(absl::Condition(&done));
  return batch.status;
}

}  // namespace internal

namespace {

// pread/pwrite on worker threads: the fallback where io_uring is refused.
class SyncEngine final : public internal::ChunkedEngine {
 public:
  explicit SyncEngine(const EngineOptions& options) : ChunkedEngine(options) { StartWorkers(); }
  ~SyncEngine() override { StopWorkers(); }
  const char* mode() const override { return "pread"; }

 private:
  void Worker(int) override {
    std::vector<internal::Chunk> work;
    while (queue_.Pop(&work, 1, /*block=*/true) > 0) {
      internal::Chunk& c = work.back();
      while (true) {
        const ssize_t n = c.op.op == Op::kRead ? pread(c.op.fd, c.op.buf, c.op.len, c.op.offset)
                                               : pwrite(c.op.fd, c.op.buf, c.op.len, c.op.offset);
        if (internal::Settle(c, n < 0 ? -errno : n, plan_.load())) break;
      }
      work.clear();
    }
  }
};

}  // namespace

std::unique_ptr<IoEngine> MakeSyncEngine(const EngineOptions& options) {
  return std::make_unique<SyncEngine>(options);
}

std::unique_ptr<IoEngine> MakeEngine(const EngineOptions& options) {
  if (!options.force_sync) {
    auto uring = MakeUringEngine(options);
    if (uring.ok()) return *std::move(uring);
    spdlog::warn("io_uring unavailable ({}); swap uses the pread/pwrite fallback",
                 uring.status().ToString());
  }
  return MakeSyncEngine(options);
}

}  // namespace tensord::io
