// The SIGBUS handler reads a fixed table of lock-free atomics and calls only ftruncate(2), both
// async-signal-safe. Slots are claimed and freed under a mutex, never from the handler.
#include "common/shm_guard.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <mutex>

namespace tensord::shm_guard {
namespace {

struct Slot {
  std::atomic<uintptr_t> begin{0}, end{0};  // end == 0: free
  std::atomic<int> fd{-1};
};
constexpr int kSlots = 1024;
Slot g_slots[kSlots];
std::atomic<uint64_t> g_repairs{0};
std::mutex g_mu;  // claims and frees slots
struct sigaction g_previous;
std::once_flag g_installed;

void OnSigbus(int sig, siginfo_t* info, void* context) {
  // Only a fault past the end of a file (BUS_ADRERR) of a segment that is now shorter than its
  // mapping: a full /dev/shm or a memory error must not be "repaired" into an endless retry.
  if (info->si_code == BUS_ADRERR) {
    const uintptr_t addr = reinterpret_cast<uintptr_t>(info->si_addr);
    for (Slot& s : g_slots) {
      const uintptr_t begin = s.begin.load(std::memory_order_acquire);
      const uintptr_t end = s.end.load(std::memory_order_acquire);
      if (end == 0 || addr < begin || addr >= end) continue;
      const int fd = s.fd.load(std::memory_order_acquire);
      if (s.end.load(std::memory_order_acquire) != end) break;  // unregistered meanwhile
      struct stat st;
      const off_t size = static_cast<off_t>(end - begin);
      if (fd >= 0 && fstat(fd, &st) == 0 && st.st_size < size && ftruncate(fd, size) == 0) {
        g_repairs.fetch_add(1, std::memory_order_relaxed);
        return;  // the access is retried and finds the page
      }
      break;
    }
  }
  // Not ours: what would have happened without this handler.
  if ((g_previous.sa_flags & SA_SIGINFO) && g_previous.sa_sigaction != nullptr) {
    return g_previous.sa_sigaction(sig, info, context);
  }
  if (!(g_previous.sa_flags & SA_SIGINFO) && g_previous.sa_handler == SIG_IGN) return;
  if (!(g_previous.sa_flags & SA_SIGINFO) && g_previous.sa_handler != SIG_DFL) {
    return g_previous.sa_handler(sig);
  }
  sigaction(SIGBUS, &g_previous, nullptr);
  // A fault re-raises itself when the access is retried; a signal someone sent must be raised.
  if (info->si_code <= 0) raise(sig);
}

}  // namespace

void Install() {
  std::call_once(g_installed, [] {
    struct sigaction sa {};
    sa.sa_sigaction = OnSigbus;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, &g_previous);
  });
}

int Register(uint8_t* data, uint64_t size, int fd) {
  std::lock_guard<std::mutex> lock(g_mu);
  for (int i = 0; i < kSlots; ++i) {
    Slot& s = g_slots[i];
    if (s.end.load(std::memory_order_relaxed) != 0 || s.fd.load() >= 0) continue;
    const int dup = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (dup < 0) return -1;
    s.fd.store(dup, std::memory_order_release);
    s.begin.store(reinterpret_cast<uintptr_t>(data), std::memory_order_release);
    s.end.store(reinterpret_cast<uintptr_t>(data) + size, std::memory_order_release);
    return i;
  }
  return -1;
}

void Unregister(int slot) {
  if (slot < 0 || slot >= kSlots) return;
  std::lock_guard<std::mutex> lock(g_mu);
  Slot& s = g_slots[slot];
  // begin stays: a handler that read the old end then sees a consistent range, and re-checks
  // end after taking the fd. The mapping goes right after: no fault in it can be in a handler.
  s.end.store(0, std::memory_order_release);
  ::close(s.fd.exchange(-1));
}

uint64_t Repairs() { return g_repairs.load(std::memory_order_relaxed); }

}  // namespace tensord::shm_guard
