// An eviction policy for tests: LRU underneath, with a log of what the store told it (inserts,
// pins, unpins and removals with their reason), so tests can check that the policy hears
// everything it needs to decide well.
#pragma once

#include <memory>
#include <mutex>
#include <vector>

#include "daemon/policy/eviction.h"

namespace tensord::policy {

struct PolicyLog {
  std::mutex mu;
  std::vector<std::pair<Handle, RemovalReason>> removals;
  int inserts = 0, pins = 0, unpins = 0, accesses = 0;

  int Count(RemovalReason r) {
    std::lock_guard<std::mutex> lock(mu);
    int n = 0;
    for (const auto& [h, why] : removals) n += why == r;
    return n;
  }
};

class RecordingPolicy final : public EvictionPolicy {
 public:
  explicit RecordingPolicy(std::shared_ptr<PolicyLog> log) : log_(std::move(log)) {}
  void Insert(Handle h, Footprint f) override {
    if (!lru_.Contains(h)) Note([&] { ++log_->inserts; });
    lru_.Insert(h, f);
  }
  void Access(Handle h) override {
    Note([&] { ++log_->accesses; });
    lru_.Access(h);
  }
  void Pin(Handle h) override {
    if (lru_.Contains(h)) Note([&] { ++log_->pins; });
    lru_.Pin(h);
  }
  void Unpin(Handle h) override {
    if (lru_.Contains(h)) Note([&] { ++log_->unpins; });
    lru_.Unpin(h);
  }
  void Remove(Handle h, RemovalReason why) override {
    if (lru_.Contains(h)) Note([&] { log_->removals.emplace_back(h, why); });
    lru_.Remove(h, why);
  }
  bool Contains(Handle h) const override { return lru_.Contains(h); }
  void Victims(const Demand& d, absl::FunctionRef<Verdict(Handle)> visit) override {
    lru_.Victims(d, visit);
  }
  std::vector<ClassLifetime> Lifetimes() const override { return lru_.Lifetimes(); }
  size_t size() const override { return lru_.size(); }
  const char* name() const override { return "recording"; }

 private:
  template <typename Fn>
  void Note(Fn fn) {
    std::lock_guard<std::mutex> lock(log_->mu);
    fn();
  }
  std::shared_ptr<PolicyLog> log_;
  LruPolicy lru_;
};

}  // namespace tensord::policy
