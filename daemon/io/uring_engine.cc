// The io_uring engine (liburing): one ring per worker thread, at most queue_depth chunks in
// flight per ring, new chunks submitted in batches, short transfers and -EAGAIN resubmitted.
// Transfers into or out of the configured fixed regions (the host arenas) use registered
// buffers (READ_FIXED/WRITE_FIXED) when the kernel accepted them; everything else plain I/O.
#include <liburing.h>
#include <sys/uio.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <deque>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/blocking_counter.h"
#include "daemon/io/chunked_engine.h"
#include "spdlog/spdlog.h"

namespace tensord::io {
namespace {

constexpr uint64_t kMaxFixedBuffer = uint64_t{1} << 30;  // the kernel's limit per buffer

// Splits regions into pieces of at most 1 GiB, sorted by address.
std::vector<iovec> FixedPieces(const std::vector<FixedRegion>& regions) {
  std::vector<iovec> pieces;
  for (const FixedRegion& r : regions) {
    for (uint64_t at = 0; at < r.size; at += kMaxFixedBuffer) {
      pieces.push_back(iovec{r.base + at, std::min(kMaxFixedBuffer, r.size - at)});
    }
  }
  std::sort(pieces.begin(), pieces.end(),
            [](const iovec& a, const iovec& b) { return a.iov_base < b.iov_base; });
  return pieces;
}

class UringEngine final : public internal::ChunkedEngine {
 public:
  explicit UringEngine(const EngineOptions& options)
      : ChunkedEngine(options),
        pieces_(FixedPieces(options.fixed_regions)),
        ready_(std::max(1, options.threads)) {
    StartWorkers();
    ready_.Wait();  // every ring is set up and has tried to register the buffers
    fixed_ = !pieces_.empty() && register_failures_.load() == 0;
    if (fixed_) spdlog::info("io_uring: {} fixed buffers registered", pieces_.size());
  }
  ~UringEngine() override { StopWorkers(); }
  const char* mode() const override { return fixed_ ? "io_uring+fixed" : "io_uring"; }

 private:
  void Worker(int index) override;
  // Returns the index of the registered piece holding [buf, buf + len), or -1.
  int FixedIndex(const uint8_t* buf, uint64_t len) const {
    auto it = std::upper_bound(pieces_.begin(), pieces_.end(), buf,
                               [](const uint8_t* p, const iovec& v) { return p < v.iov_base; });
    if (it == pieces_.begin()) return -1;
    --it;
    const auto* base = static_cast<const uint8_t*>(it->iov_base);
    if (buf + len > base + it->iov_len) return -1;
    return static_cast<int>(it - pieces_.begin());
  }

  const std::vector<iovec> pieces_;
  absl::BlockingCounter ready_;
  std::atomic<int> register_failures_{0};
  bool fixed_ = false;
};

void UringEngine::Worker(int index) {
  io_uring ring;
  const unsigned depth = static_cast<unsigned>(std::max(1, options_.queue_depth));
  if (int rc = io_uring_queue_init(depth, &ring, 0); rc < 0) {
    // Probed at construction, so this is unexpected: fail every chunk rather than hang.
    spdlog::error("io_uring worker {}: queue_init: {}", index, std::strerror(-rc));
    ready_.DecrementCount();
    std::vector<internal::Chunk> work;
    while (queue_.Pop(&work, 1, true) > 0) {
      work.back().batch->Done(ErrnoStatus(-rc, "io_uring setup"));
      work.clear();
    }
    return;
  }
  // Registered buffers pin the arenas once instead of per I/O. The kernel refuses them past
  // RLIMIT_MEMLOCK (without CAP_IPC_LOCK) or for memory it cannot pin: then plain I/O.
  bool fixed = false;
  if (!pieces_.empty()) {
    const int rc =
        io_uring_register_buffers(&ring, pieces_.data(), static_cast<unsigned>(pieces_.size()));
    fixed = rc == 0;
    if (!fixed) {
      ++register_failures_;
      spdlog::warn("io_uring worker {}: cannot register {} buffers ({}); unregistered I/O", index,
                   pieces_.size(), std::strerror(-rc));
    }
  }
  ready_.DecrementCount();
  std::vector<internal::Chunk> slots(depth);
  std::vector<unsigned> free_slots;
  for (unsigned i = depth; i > 0; --i) free_slots.push_back(i - 1);
  std::deque<unsigned> resubmit;  // slots whose chunk must go again (short, -EAGAIN)
  unsigned inflight = 0;          // submitted, not completed
  unsigned unsubmitted = 0;       // prepared SQEs the kernel has not taken yet
  std::vector<internal::Chunk> fresh;
  while (true) {
    fresh.clear();
    if (!free_slots.empty()) {
      const bool block = inflight == 0 && resubmit.empty() && unsubmitted == 0;
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
      const auto len = static_cast<unsigned>(op.len);
      const int buf_index = fixed ? FixedIndex(op.buf, op.len) : -1;
      if (buf_index >= 0 && op.op == Op::kRead) {
        io_uring_prep_read_fixed(sqe, op.fd, op.buf, len, op.offset, buf_index);
      } else if (buf_index >= 0) {
        io_uring_prep_write_fixed(sqe, op.fd, op.buf, len, op.offset, buf_index);
      } else if (op.op == Op::kRead) {
        io_uring_prep_read(sqe, op.fd, op.buf, len, op.offset);
      } else {
        io_uring_prep_write(sqe, op.fd, op.buf, len, op.offset);
      }
      io_uring_sqe_set_data64(sqe, slot);
      ++queued;
    }
    unsubmitted += queued;
    if (unsubmitted > 0) {
      // The kernel may take fewer than offered (or none: -EAGAIN, -EBUSY under memory
      // pressure); the rest stay in the ring and go with the next submit.
      const int rc = io_uring_submit(&ring);
      if (rc > 0) {
        inflight += static_cast<unsigned>(rc);
        unsubmitted -= std::min(unsubmitted, static_cast<unsigned>(rc));
      } else if (rc < 0 && inflight == 0) {
        spdlog::warn("io_uring worker {}: submit: {}; retrying", index, std::strerror(-rc));
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
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
