// ThreadSanitizer builds only: makes Debian's abseil synchronisation visible to TSan.
// libabsl_synchronization is not instrumented, so TSan cannot see that absl::Mutex, CondVar and
// Notification order memory accesses, and reports every access they guard as a race (and
// suppressing those would hide our own races too). The link wraps (ld --wrap) each entry point
// tensord calls: the wrapper calls the real one and tells TSan what it did — an acquire of the
// mutex after locking, a release before unlocking (and around the waits that drop the lock), a
// release before Notify and an acquire after a wait that saw it. Built as a shared library
// linked into every TSan binary (CMakeLists.txt); the symbol list there must match.
#include <sanitizer/tsan_interface.h>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"

// TSan's runtime (not in GCC's sanitizer headers).
extern "C" void AnnotateIgnoreReadsBegin(const char* file, int line);
extern "C" void AnnotateIgnoreReadsEnd(const char* file, int line);

namespace {
using absl::Condition;
using absl::CondVar;
using absl::Duration;
using absl::Mutex;
using absl::Notification;
using absl::Time;

void Acquire(const void* p) { __tsan_acquire(const_cast<void*>(p)); }
void Release(const void* p) { __tsan_release(const_cast<void*>(p)); }
// HasBeenNotified() is inline: an acquire load of this flag in our (instrumented) code; a
// release on the flag's own address makes that load synchronise with Notify.
const void* Flag(const Notification* n) { return reinterpret_cast<const char*>(n) + sizeof(Mutex); }
// abseil evaluates Await/LockWhen conditions (our instrumented lambdas) inside Lock, Unlock and
// the waits, on whichever thread holds the mutex at that moment, where no acquire/release can be
// placed. Those conditions only read state the mutex guards, so reads made inside a real call
// are not recorded (writes still are); all our code does before and after the call is.
template <typename F>
auto Quiet(F f) {
  AnnotateIgnoreReadsBegin(__FILE__, __LINE__);
  struct End {
    ~End() { AnnotateIgnoreReadsEnd(__FILE__, __LINE__); }
  } end;
  return f();
}
}  // namespace

// The real functions, as ld --wrap names them, and the wrappers it routes our calls to. C
// linkage with the mangled names of the C++ members (this = the first argument).
extern "C" {
// Mutex::Lock(), Unlock(), ReaderLock(), ReaderUnlock(), TryLock(), ReaderTryLock()
void __real__ZN4absl7debian35Mutex4LockEv(Mutex*);
void __real__ZN4absl7debian35Mutex6UnlockEv(Mutex*);
void __real__ZN4absl7debian35Mutex10ReaderLockEv(Mutex*);
void __real__ZN4absl7debian35Mutex12ReaderUnlockEv(Mutex*);
bool __real__ZN4absl7debian35Mutex7TryLockEv(Mutex*);
bool __real__ZN4absl7debian35Mutex13ReaderTryLockEv(Mutex*);
// Mutex::Await(const Condition&), AwaitWithTimeout(.., Duration), AwaitWithDeadline(.., Time)
void __real__ZN4absl7debian35Mutex5AwaitERKNS0_9ConditionE(Mutex*, const Condition*);
bool __real__ZN4absl7debian35Mutex16AwaitWithTimeoutERKNS0_9ConditionENS0_8DurationE(
    Mutex*, const Condition*, Duration);
bool __real__ZN4absl7debian35Mutex17AwaitWithDeadlineERKNS0_9ConditionENS0_4TimeE(Mutex*,
                                                                                  const Condition*,
                                                                                  Time);
// Mutex::LockWhen(const Condition&), LockWhenWithTimeout, ReaderLockWhen
void __real__ZN4absl7debian35Mutex8LockWhenERKNS0_9ConditionE(Mutex*, const Condition*);
bool __real__ZN4absl7debian35Mutex19LockWhenWithTimeoutERKNS0_9ConditionENS0_8DurationE(
    Mutex*, const Condition*, Duration);
void __real__ZN4absl7debian35Mutex14ReaderLockWhenERKNS0_9ConditionE(Mutex*, const Condition*);
// CondVar::Wait(Mutex*), WaitWithTimeout(Mutex*, Duration), WaitWithDeadline(Mutex*, Time)
void __real__ZN4absl7debian37CondVar4WaitEPNS0_5MutexE(CondVar*, Mutex*);
bool __real__ZN4absl7debian37CondVar15WaitWithTimeoutEPNS0_5MutexENS0_8DurationE(CondVar*, Mutex*,
                                                                                 Duration);
bool __real__ZN4absl7debian37CondVar16WaitWithDeadlineEPNS0_5MutexENS0_4TimeE(CondVar*, Mutex*,
                                                                              Time);
// Notification::Notify(), WaitForNotification() const, WaitForNotificationWithTimeout(Duration)
// const, WaitForNotificationWithDeadline(Time) const
void __real__ZN4absl7debian312Notification6NotifyEv(Notification*);
void __real__ZNK4absl7debian312Notification19WaitForNotificationEv(const Notification*);
bool __real__ZNK4absl7debian312Notification30WaitForNotificationWithTimeoutENS0_8DurationE(
    const Notification*, Duration);
bool __real__ZNK4absl7debian312Notification31WaitForNotificationWithDeadlineENS0_4TimeE(
    const Notification*, Time);

void __wrap__ZN4absl7debian35Mutex4LockEv(Mutex* mu) {
  Quiet([&] { return __real__ZN4absl7debian35Mutex4LockEv(mu); });
  Acquire(mu);
}
void __wrap__ZN4absl7debian35Mutex6UnlockEv(Mutex* mu) {
  Release(mu);
  Quiet([&] { return __real__ZN4absl7debian35Mutex6UnlockEv(mu); });
}
void __wrap__ZN4absl7debian35Mutex10ReaderLockEv(Mutex* mu) {
  Quiet([&] { return __real__ZN4absl7debian35Mutex10ReaderLockEv(mu); });
  Acquire(mu);
}
void __wrap__ZN4absl7debian35Mutex12ReaderUnlockEv(Mutex* mu) {
  // (A plain release: GCC's interface has no release-merge, so a reader's section orders the
  // next reader's too — stricter than abseil, never looser for writers.)
  Release(mu);
  Quiet([&] { return __real__ZN4absl7debian35Mutex12ReaderUnlockEv(mu); });
}
bool __wrap__ZN4absl7debian35Mutex7TryLockEv(Mutex* mu) {
  const bool got = Quiet([&] { return __real__ZN4absl7debian35Mutex7TryLockEv(mu); });
  if (got) Acquire(mu);
  return got;
}
bool __wrap__ZN4absl7debian35Mutex13ReaderTryLockEv(Mutex* mu) {
  const bool got = Quiet([&] { return __real__ZN4absl7debian35Mutex13ReaderTryLockEv(mu); });
  if (got) Acquire(mu);
  return got;
}
void __wrap__ZN4absl7debian35Mutex5AwaitERKNS0_9ConditionE(Mutex* mu, const Condition* c) {
  Release(mu);
  Quiet([&] { return __real__ZN4absl7debian35Mutex5AwaitERKNS0_9ConditionE(mu, c); });
  Acquire(mu);
}
bool __wrap__ZN4absl7debian35Mutex16AwaitWithTimeoutERKNS0_9ConditionENS0_8DurationE(
    Mutex* mu, const Condition* c, Duration d) {
  Release(mu);
  const bool r = Quiet([&] {
    return __real__ZN4absl7debian35Mutex16AwaitWithTimeoutERKNS0_9ConditionENS0_8DurationE(mu, c,
                                                                                           d);
  });
  Acquire(mu);
  return r;
}
bool __wrap__ZN4absl7debian35Mutex17AwaitWithDeadlineERKNS0_9ConditionENS0_4TimeE(
    Mutex* mu, const Condition* c, Time t) {
  Release(mu);
  const bool r = Quiet([&] {
    return __real__ZN4absl7debian35Mutex17AwaitWithDeadlineERKNS0_9ConditionENS0_4TimeE(mu, c, t);
  });
  Acquire(mu);
  return r;
}
void __wrap__ZN4absl7debian35Mutex8LockWhenERKNS0_9ConditionE(Mutex* mu, const Condition* c) {
  Quiet([&] { return __real__ZN4absl7debian35Mutex8LockWhenERKNS0_9ConditionE(mu, c); });
  Acquire(mu);
}
bool __wrap__ZN4absl7debian35Mutex19LockWhenWithTimeoutERKNS0_9ConditionENS0_8DurationE(
    Mutex* mu, const Condition* c, Duration d) {
  const bool r = Quiet([&] {
    return __real__ZN4absl7debian35Mutex19LockWhenWithTimeoutERKNS0_9ConditionENS0_8DurationE(mu, c,
                                                                                              d);
  });
  Acquire(mu);
  return r;
}
void __wrap__ZN4absl7debian35Mutex14ReaderLockWhenERKNS0_9ConditionE(Mutex* mu,
                                                                     const Condition* c) {
  Quiet([&] { return __real__ZN4absl7debian35Mutex14ReaderLockWhenERKNS0_9ConditionE(mu, c); });
  Acquire(mu);
}
void __wrap__ZN4absl7debian37CondVar4WaitEPNS0_5MutexE(CondVar* cv, Mutex* mu) {
  Release(mu);
  Quiet([&] { return __real__ZN4absl7debian37CondVar4WaitEPNS0_5MutexE(cv, mu); });
  Acquire(mu);
}
bool __wrap__ZN4absl7debian37CondVar15WaitWithTimeoutEPNS0_5MutexENS0_8DurationE(CondVar* cv,
                                                                                 Mutex* mu,
                                                                                 Duration d) {
  Release(mu);
  const bool r = Quiet([&] {
    return __real__ZN4absl7debian37CondVar15WaitWithTimeoutEPNS0_5MutexENS0_8DurationE(cv, mu, d);
  });
  Acquire(mu);
  return r;
}
bool __wrap__ZN4absl7debian37CondVar16WaitWithDeadlineEPNS0_5MutexENS0_4TimeE(CondVar* cv,
                                                                              Mutex* mu, Time t) {
  Release(mu);
  const bool r = Quiet([&] {
    return __real__ZN4absl7debian37CondVar16WaitWithDeadlineEPNS0_5MutexENS0_4TimeE(cv, mu, t);
  });
  Acquire(mu);
  return r;
}
void __wrap__ZN4absl7debian312Notification6NotifyEv(Notification* n) {
  Release(n);
  Release(Flag(n));
  Quiet([&] { return __real__ZN4absl7debian312Notification6NotifyEv(n); });
}
void __wrap__ZNK4absl7debian312Notification19WaitForNotificationEv(const Notification* n) {
  Quiet([&] { return __real__ZNK4absl7debian312Notification19WaitForNotificationEv(n); });
  Acquire(n);
}
bool __wrap__ZNK4absl7debian312Notification30WaitForNotificationWithTimeoutENS0_8DurationE(
    const Notification* n, Duration d) {
  const bool r = Quiet([&] {
    return __real__ZNK4absl7debian312Notification30WaitForNotificationWithTimeoutENS0_8DurationE(n,
                                                                                                 d);
  });
  if (r) Acquire(n);
  return r;
}
bool __wrap__ZNK4absl7debian312Notification31WaitForNotificationWithDeadlineENS0_4TimeE(
    const Notification* n, Time t) {
  const bool r = Quiet([&] {
    return __real__ZNK4absl7debian312Notification31WaitForNotificationWithDeadlineENS0_4TimeE(n, t);
  });
  if (r) Acquire(n);
  return r;
}
}  // extern "C"
