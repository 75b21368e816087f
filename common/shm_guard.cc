// The SIGBUS handler reads a fixed table of lock-free atomics and calls only ftruncate(2), both
// async-signal-safe. Slots are claimed and freed under a mutex, never from the handler.
#include "common/shm_guard.h"

#include <fcntl.h>
#include <signal.h>
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
  const uintptr_t addr = reinterpret_cast<uintptr_t>(info->si_addr);
  for (Slot& s : g_slots) {
    const uintptr_t end = s.end.load(std::memory_order_acquire);
    const uintptr_t begin = s.begin.load(std::memory_order_relaxed);
    if (end == 0 || addr < begin || addr >= end) continue;
    const int fd = s.fd.load(std::memory_order_relaxed);
    if (fd >= 0 && ftruncate(fd, static_cast<off_t>(end - begin)) == 0) {
      g_repairs.fetch_add(1, std::memory_order_relaxed);
      return;  // the access is retried and finds the page
    }
    break;
  }
  // Not ours, or it could not be repaired: what would have happened without this handler.
  if (g_previous.sa_flags & SA_SIGINFO) {
    if (g_previous.sa_sigaction != nullptr) return g_previous.sa_sigaction(sig, info, context);
  }
  sigaction(SIGBUS, &g_previous, nullptr);  // returning re-raises it under that action
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
    s.fd.store(dup);
    s.begin.store(reinterpret_cast<uintptr_t>(data), std::memory_order_relaxed);
    s.end.store(reinterpret_cast<uintptr_t>(data) + size, std::memory_order_release);
    return i;
  }
  return -1;
}

void Unregister(int slot) {
  if (slot < 0 || slot >= kSlots) return;
  std::lock_guard<std::mutex> lock(g_mu);
  Slot& s = g_slots[slot];
  s.end.store(0, std::memory_order_release);
  s.begin.store(0, std::memory_order_relaxed);
  // The mapping goes right after: no fault in it can be in a handler now.
  ::close(s.fd.exchange(-1));
}

uint64_t Repairs() { return g_repairs.load(std::memory_order_relaxed); }

}  // namespace tensord::shm_guard
