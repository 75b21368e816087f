// The io_uring engine (liburing): one ring per worker thread, at most queue_depth chunks in
// flight per ring, new chunks submitted in batches, short transfers and -EAGAIN resubmitted.
#include <liburing.h>

#include <cstring>
#include <deque>

#include "absl/strings/str_cat.h"
#include "daemon/io/chunked_engine.h"
#include "spdlog/spdlog.h"

namespace tensord::io {
namespace {

class UringEngine final : public internal::ChunkedEngine {
 public:
  explicit UringEngine(const EngineOptions& options) : ChunkedEngine(options) { StartWorkers(); }
  ~UringEngine() override { StopWorkers(); }
  const char* mode() const override { return "io_uring"; }

 private:
  void Worker(int index) override;
};

void UringEngine::Worker(int index) {
  io_uring ring;
  const unsigned depth = static_cast<unsigned>(std::max(1, options_.queue_depth));
  if (int rc = io_uring_queue_init(depth, &ring, 0); rc < 0) {
    // Probed at construction, so this is unexpected: fail every chunk rather than hang.
    spdlog::error("io_uring worker {}: queue_init: {}", index, std::strerror(-rc));
    std::vector<internal::Chunk> work;
    while (queue_.Pop(&work, 1, true) > 0) {
      work.back().batch->Done(ErrnoStatus(-rc, "io_uring setup"));
      work.clear();
    }
    return;
  }
  std::vector<internal::Chunk> slots(depth);
  std::vector<unsigned> free_slots;
  for (unsigned i = depth; i > 0; --i) free_slots.push_back(i - 1);
  std::deque<unsigned> resubmit;  // slots whose chunk must go again (short, -EAGAIN)
  unsigned inflight = 0;
  std::vector<internal::Chunk> fresh;
  while (true) {
    fresh.clear();
    if (!free_slots.empty()) {
      const bool block = inflight == 0 && resubmit.empty();
      if (queue_.Pop(&fresh, free_slots.size(), block) == 0 && block) break;  // stopped
    }
    for (internal::Chunk& c : fresh) {
      const unsigned slot = free_slots.back();
      free_slots.pop_back();
      slots[slot] = c;
      resubmit.push_back(slot);
    }
    unsigned queued = 0;
    while (!resubmit.empty()) {
      io_uring_sqe* sqe = io_uring_get_sqe(&ring);
      if (sqe == nullptr) break;
      const unsigned slot = resubmit.front();
      resubmit.pop_front();
      const IoOp& op = slots[slot].op;
      if (op.op == Op::kRead) {
        io_uring_prep_read(sqe, op.fd, op.buf, static_cast<unsigned>(op.len), op.offset);
      } else {
        io_uring_prep_write(sqe, op.fd, op.buf, static_cast<unsigned>(op.len), op.offset);
      }
      io_uring_sqe_set_data64(sqe, slot);
      ++queued;
    }
    if (queued > 0) {
      io_uring_submit(&ring);
      inflight += queued;
    }
    if (inflight == 0) continue;
    io_uring_cqe* cqe = nullptr;
    int rc = io_uring_wait_cqe(&ring, &cqe);
    if (rc == -EINTR) continue;
    while (rc == 0 && cqe != nullptr) {
      const auto slot = static_cast<unsigned>(io_uring_cqe_get_data64(cqe));
      const int64_t res = cqe->res;
      io_uring_cqe_seen(&ring, cqe);
      --inflight;
      if (internal::Settle(slots[slot], res, plan_.load())) {
        free_slots.push_back(slot);
      } else {
        resubmit.push_back(slot);
      }
      rc = io_uring_peek_cqe(&ring, &cqe);
    }
  }
  io_uring_queue_exit(&ring);
}

}  // namespace

absl::StatusOr<std::unique_ptr<IoEngine>> MakeUringEngine(const EngineOptions& options) {
  // Probe once here: containers with default seccomp answer EPERM, old kernels ENOSYS.
  io_uring probe;
  if (int rc = io_uring_queue_init(4, &probe, 0); rc < 0) {
    return ErrnoStatus(-rc, "io_uring_queue_init");
  }
  io_uring_queue_exit(&probe);
  return std::unique_ptr<IoEngine>(new UringEngine(options));
}

}  // namespace tensord::io
