// The codec pool: worker threads pull tasks; a ParallelFor is a shared counter of indices that
// the caller and any idle worker drain.
#include "daemon/codec/parallel.h"

#include <algorithm>
#include <atomic>
#include <memory>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "common/work_queue.h"

namespace tensord::codec {
namespace {

struct Batch {
  Batch(absl::FunctionRef<void(size_t)> f, size_t count) : fn(f), n(count) {}
  absl::FunctionRef<void(size_t)> fn;
  size_t n;
  std::atomic<size_t> next{0};
  std::atomic<size_t> done{0};
  absl::Mutex mu;
  // Runs indices until none is left; returns how many this thread ran.
  void Drain() {
    size_t ran = 0;
    for (size_t i; (i = next.fetch_add(1)) < n;) {
      fn(i);
      ++ran;
    }
    if (ran > 0 && done.fetch_add(ran) + ran == n) {
      absl::MutexLock lock(&mu);  // wakes the caller waiting on `done`
    }
  }
};

thread_local bool on_pool_thread = false;

class Pool {
 public:
  // `threads` in all, the caller of ParallelFor being one: threads - 1 workers.
  explicit Pool(int threads) : threads_(threads), queue_(threads - 1) {}
  int threads() const { return threads_; }
  void Help(std::shared_ptr<Batch> b, int helpers) {
    for (int i = 0; i < helpers; ++i) {
      queue_.Schedule([b] {
        on_pool_thread = true;  // only codec work runs here: a nested ParallelFor runs inline
        b->Drain();
      });
    }
  }

 private:
  const int threads_;
  WorkQueue queue_;
};

absl::Mutex pool_mu;
std::shared_ptr<Pool> pool ABSL_GUARDED_BY(pool_mu);
int requested_threads ABSL_GUARDED_BY(pool_mu) = 0;

std::shared_ptr<Pool> GetPool() {
  absl::MutexLock lock(&pool_mu);
  if (pool == nullptr) {
    const int n = requested_threads > 0
                      ? requested_threads
                      : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
    pool = std::make_shared<Pool>(n);
  }
  return pool;
}

}  // namespace

void SetCodecThreads(int threads) {
  std::shared_ptr<Pool> old;
  {
    absl::MutexLock lock(&pool_mu);
    requested_threads = threads;
    old = std::move(pool);  // the next use builds one of the new size
  }
}  // `old` joins here once its last user lets go

int CodecThreads() { return GetPool()->threads(); }

void ParallelFor(size_t n, absl::FunctionRef<void(size_t)> fn) {
  if (n == 0) return;
  std::shared_ptr<Pool> p = n == 1 || on_pool_thread ? nullptr : GetPool();
  if (p == nullptr || p->threads() == 1) {
    for (size_t i = 0; i < n; ++i) fn(i);
    return;
  }
  auto b = std::make_shared<Batch>(fn, n);
  // The caller is one worker; the pool lends up to threads-1 more (the caller's core counts).
  p->Help(b, static_cast<int>(std::min<size_t>(n - 1, size_t(p->threads() - 1))));
  b->Drain();
  absl::MutexLock lock(&b->mu);
  b->mu.Await(absl::Condition(
      +[](Batch* b) { return b->done.load() == b->n; }, b.get()));
}

}  // namespace tensord::codec
