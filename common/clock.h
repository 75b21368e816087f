// Time through a clock that tests can fake (TTL and expiry run on it), so tests advance time
// instead of sleeping. Waits with a timeout (absl::Mutex::AwaitWithTimeout) still use real time.
#pragma once

#include <atomic>
#include <cstdint>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace tensord {

class Clock {
 public:
  virtual ~Clock() = default;
  virtual absl::Time Now() const = 0;
  // Milliseconds since the Unix epoch.
  int64_t NowUnixMs() const { return absl::ToUnixMillis(Now()); }
  // The process's real clock (never destroyed).
  static const Clock* Real();
};

// A clock that moves only when told. Thread-safe.
class FakeClock final : public Clock {
 public:
  explicit FakeClock(absl::Time start = absl::FromUnixSeconds(1'800'000'000))
      : ns_(absl::ToUnixNanos(start)) {}
  absl::Time Now() const override { return absl::FromUnixNanos(ns_.load()); }
  void Advance(absl::Duration d) { ns_.fetch_add(absl::ToInt64Nanoseconds(d)); }

 private:
  std::atomic<int64_t> ns_;
};

namespace internal {
class RealClock final : public Clock {
 public:
  absl::Time Now() const override { return absl::Now(); }
};
}  // namespace internal

inline const Clock* Clock::Real() {
  static const internal::RealClock* const clock = new internal::RealClock();
  return clock;
}

}  // namespace tensord
