// The codec pool: worker threads watch for the latest batch; a ParallelFor's indices are split
// into one share per thread, which the caller and any idle worker drain, their own share first.
#include "daemon/codec/parallel.h"

#include <immintrin.h>
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <memory>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"

namespace tensord::codec {
namespace {

// How long an idle worker keeps watching for a batch, and a caller for its last chunks, before
// it sleeps. A 1 MiB KV block takes about 50 us on two cores and a futex wake-up tens of us on a
// VM, so sleeping between the back-to-back blocks of a swap-out (or between a Create's two
// passes) would cost more than the work; an idle pool spins this long once, then sleeps.
constexpr auto kSpin = std::chrono::microseconds(200);

// Calls done() until it is true or `until` passed; returns its last answer.
template <typename Fn>
bool SpinUntil(std::chrono::steady_clock::time_point until, Fn&& done) {
  for (int i = 0;; ++i) {
    if (done()) return true;
    _mm_pause();
    if (i % 64 == 63 && std::chrono::steady_clock::now() >= until) return done();
  }
}

// A ParallelFor's indices, split into one contiguous share per thread of the pool (the caller's
// first): each thread runs its own share first, then takes what is left of the others'. A thread
// thus runs the same part of every pass over a tensor (its maxima, then its codes, then the
// checksum of those codes), which its cache still holds: on this VM, indices dealt out in
// arrival order made a 1 MiB encode slower on two cores than on one.
struct Batch {
  Batch(absl::FunctionRef<void(size_t)> f, size_t count, int helpers, int threads)
      : fn(f), n(count), shares(threads), tickets(helpers), next(new Cursor[threads]) {
    for (int k = 0; k < shares; ++k) next[k].at = Begin(k);
  }
  struct alignas(64) Cursor {  // a cache line each: a share's claims do not slow the others'
    std::atomic<size_t> at;
  };
  absl::FunctionRef<void(size_t)> fn;
  const size_t n;
  const int shares;
  std::atomic<int> tickets;        // workers that may still join
  std::unique_ptr<Cursor[]> next;  // per share: its next index
  std::atomic<size_t> done{0};
  absl::Mutex mu;
  size_t Begin(int share) const { return n * share / shares; }
  // Runs indices until none is left: share `own`'s, then the others'.
  void Drain(int own) {
    size_t ran = 0;
    for (int j = 0; j < shares; ++j) {
      const int k = (own + j) % shares;
      const size_t end = Begin(k + 1);
      if (next[k].at.load(std::memory_order_relaxed) >= end) continue;  // drained: no write
      for (size_t i; (i = next[k].at.fetch_add(1)) < end;) {
        fn(i);
        ++ran;
      }
    }
    if (ran > 0 && done.fetch_add(ran) + ran == n) {
      absl::MutexLock lock(&mu);  // wakes a caller asleep on `done`
    }
  }
  bool Finished() const { return done.load() == n; }
};

thread_local bool on_pool_thread = false;

class Pool {
 public:
  // `threads` in all, the caller of ParallelFor being one: threads - 1 workers.
  explicit Pool(int threads) : threads_(threads) {
    for (int i = 1; i < threads; ++i) workers_.emplace_back([this, i] { Work(i); });
  }
  ~Pool() {
    {
      absl::MutexLock lock(&mu_);
      stopping_ = true;
    }
    generation_.fetch_add(1);
    generation_.notify_all();
    for (std::thread& t : workers_) t.join();
  }
  int threads() const { return threads_; }
  // Offers b to its helpers (replacing an earlier batch: its caller finishes it alone); wakes
  // as many sleeping workers (spinning ones may take the tickets first).
  void Post(std::shared_ptr<Batch> b) {
    const int helpers = b->tickets.load();
    {
      absl::MutexLock lock(&mu_);
      current_ = std::move(b);
    }
    generation_.fetch_add(1);
    for (int i = 0; i < helpers; ++i) generation_.notify_one();
  }
  void Retire(const Batch* b) {
    absl::MutexLock lock(&mu_);
    if (current_.get() == b) current_.reset();
  }

 private:
  // A worker that helped spins for the next batch until kSpin after its work; one that did
  // not (no ticket left) sleeps at once, so an idle or oversized pool burns no CPU.
  void Work(int share) {
    on_pool_thread = true;  // only codec work runs here: a nested ParallelFor runs inline
    uint32_t seen = 0;      // the generation a new pool starts at: a Post or stop before this
                            // thread ran is seen, not waited for
    auto hot_until = std::chrono::steady_clock::now();
    while (true) {
      const auto changed = [&] { return generation_.load() != seen; };
      if (!changed() && !SpinUntil(hot_until, changed)) generation_.wait(seen);
      seen = generation_.load();
      std::shared_ptr<Batch> b;
      {
        absl::MutexLock lock(&mu_);
        if (stopping_) return;
        b = current_;
      }
      if (b != nullptr && b->tickets.fetch_sub(1) > 0) {
        b->Drain(share);
        hot_until = std::chrono::steady_clock::now() + kSpin;
      }
    }
  }

  const int threads_;
  std::atomic<uint32_t> generation_{0};  // bumped by each Post (and by stopping)
  absl::Mutex mu_;
  std::shared_ptr<Batch> current_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> workers_;
};

// The cores this process may run on (its affinity mask, which a cpuset or taskset narrows),
// not every core the machine has.
int UsableCores() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
}

absl::Mutex pool_mu;
std::shared_ptr<Pool> pool ABSL_GUARDED_BY(pool_mu);
int requested_threads ABSL_GUARDED_BY(pool_mu) = 0;

std::shared_ptr<Pool> GetPool() {
  absl::MutexLock lock(&pool_mu);
  if (pool == nullptr) {
    const int n = requested_threads > 0 ? requested_threads : UsableCores();
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
  // The caller is one worker; up to threads - 1 help.
  auto b = std::make_shared<Batch>(
      fn, n, static_cast<int>(std::min<size_t>(n - 1, p->threads() - 1)), p->threads());
  p->Post(b);
  b->Drain(0);
  if (!SpinUntil(std::chrono::steady_clock::now() + kSpin, [&] { return b->Finished(); })) {
    absl::MutexLock lock(&b->mu);
    b->mu.Await(absl::Condition(
        +[](Batch* b) { return b->Finished(); }, b.get()));
  }
  p->Retire(b.get());
}

}  // namespace tensord::codec
