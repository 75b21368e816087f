// libFuzzer harness: a sequence of requests decoded from the input against a real store (a
// shared-memory host tier of 512 KiB, an SSD tier of 2 MiB on a memory-backed I/O engine, the
// mover and its codec stage). Keys come from a small set (so requests meet each other's
// tensors) plus raw fuzz bytes (invalid text). Invariants checked after every step: a Get that
// succeeds returns exactly the bytes its tensor was created with (never another's, never
// stale), and a sealed DURABLE tensor never disappears unless deleted.
#include <fuzzer/FuzzedDataProvider.h>
#include <unistd.h>

#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "common/random.h"
#include "daemon/store/store.h"
#include "daemon/tiers/host_tier.h"
#include "daemon/tiers/ssd_tier.h"
#include "spdlog/spdlog.h"
#include "tests/unit/fake_engine.h"

namespace tensord {
namespace {

constexpr uint64_t kMiB = 1 << 20;

void Require(bool ok) {
  if (!ok) std::abort();
}

// What the harness created: the generation stamped into the bytes, and its contract.
struct Made {
  uint32_t generation = 0;
  uint64_t nbytes = 0;
  bool sealed = false;
  bool durable = false;
};

uint8_t Pattern(const std::string& key, uint32_t generation, uint64_t i) {
  return static_cast<uint8_t>(std::hash<std::string>()(key) + generation * 131 + i * 7);
}

class Harness {
 public:
  explicit Harness(FuzzedDataProvider* in) : in_(*in) {}

  bool Start() {
    HostTierConfig host;
    host.capacity = kMiB / 2;  // small: pressure, demotion and room-making within a few steps
    host.prefault = false;
    auto tier = tiers::HostTier::Create(host, "tensord.fuzz." + RandomHex(6) + ".");
    if (!tier.ok()) return false;
    host_ = *std::move(tier);
    tiers::SsdTierConfig ssd;
    ssd.files = {{swap_path_, 2 * kMiB}};
    ssd.ram_capacity = in_.ConsumeBool() ? kMiB / 4 : 0;
    auto s = tiers::SsdTier::Create(ssd, std::make_unique<io::FakeEngine>(2 * kMiB));
    if (!s.ok()) return false;
    ssd_ = *std::move(s);
    store::StoreOptions options;
    options.max_leases_per_session = 16;
    options.max_sessions = 4;
    store_ = std::make_unique<store::Store>(host_.get(), options, ssd_.get());
    session_ = *store_->OpenSession("fuzz");
    return true;
  }

  void Stop() {
    store_.reset();
    ssd_.reset();
    host_.reset();
    unlink(swap_path_.c_str());
  }

  std::string Key() {
    if (in_.ConsumeIntegralInRange(0, 9) == 0) return in_.ConsumeRandomLengthString(40);
    return "k" + std::to_string(in_.ConsumeIntegralInRange(0, 11));
  }

  std::vector<std::string> Keys() {
    std::vector<std::string> keys(in_.ConsumeIntegralInRange(0, 5));
    for (auto& k : keys) k = Key();
    return keys;
  }

  store::WantTier Tier() {
    return static_cast<store::WantTier>(in_.ConsumeIntegralInRange(0, 4));  // 4: invalid
  }

  void Step() {
    // Short: a request that must wait for room (no migrator thread runs here) gives up soon.
    const absl::Time deadline = absl::Now() + absl::Milliseconds(2);
    switch (in_.ConsumeIntegralInRange(0, 10)) {
      case 0:
      case 1:
        return Create(deadline);
      case 2:
      case 3:
        return Get(deadline);
      case 4:
        if (!leases_.empty()) {
          const size_t n = in_.ConsumeIntegralInRange<size_t>(1, leases_.size());
          (void)store_->Release(session_, {leases_.data(), n});
          leases_.erase(leases_.begin(), leases_.begin() + static_cast<ptrdiff_t>(n));
        }
        return;
      case 5: {
        const std::string key = Key();
        if (store_->Delete(session_, "", key).ok()) made_.erase(key);
        return;
      }
      case 6:
        (void)store_->Evict("", Key());
        return;
      case 7:
        (void)store_->Hint("", Keys(), Tier(),
                           absl::Milliseconds(in_.ConsumeIntegralInRange(0, 100)));
        return;
      case 8:
        (void)store_->Prefetch("", Keys(), Tier(), deadline);
        return;
      case 9:
        (void)store_->DemoteOnce();
        (void)store_->Stat("", Key());
        (void)store_->List("", in_.ConsumeRandomLengthString(4), 8);
        return;
      default:  // the session ends (a client's death): its leases and unsealed creates go
        store_->CloseSession(session_);
        leases_.clear();
        for (auto it = made_.begin(); it != made_.end();) {
          it = it->second.sealed ? std::next(it) : made_.erase(it);
        }
        session_ = *store_->OpenSession("fuzz");
        return;
    }
  }

  void Create(absl::Time deadline) {
    store::CreateParams p;
    p.key = Key();
    const bool floats = in_.ConsumeBool();
    p.dtype = floats ? DType::kFloat16 : DType::kUInt8;
    const int64_t n = in_.ConsumeIntegralInRange<int64_t>(1, 64) * 1024;
    p.shape = {floats ? n / 2 : n};
    p.durability = in_.ConsumeBool() ? store::Durability::kDurable : store::Durability::kCache;
    p.compression.mode =
        in_.ConsumeBool() ? codec::Compression::kLossless : codec::Compression::kNone;
    p.parent = in_.ConsumeBool() ? Key() : "";
    auto info = store_->Create(session_, p, deadline);
    if (!info.ok()) return;
    // A live key cannot be created twice; only a CACHE tensor may have been dropped meanwhile.
    if (auto old = made_.find(p.key); old != made_.end()) {
      Require(old->second.sealed && !old->second.durable);
    }
    Made m{++generation_, info->nbytes, false, p.durability == store::Durability::kDurable};
    uint8_t* bytes = store_->Address(info->location);
    for (uint64_t i = 0; i < m.nbytes; ++i) bytes[i] = Pattern(p.key, m.generation, i);
    made_[p.key] = m;
    switch (in_.ConsumeIntegralInRange(0, 3)) {
      case 0:
        if (store_->Abort(session_, "", p.key).ok()) made_.erase(p.key);
        return;
      case 1:
        return;  // left unsealed
      default:
        if (store_->Seal(session_, "", p.key, "", deadline).ok()) made_[p.key].sealed = true;
    }
  }

  void Get(absl::Time deadline) {
    std::vector<std::string> keys = Keys();
    auto got = store_->Get(session_, "", keys, Tier(), deadline);
    if (!got.ok()) return;
    Require(got->size() == keys.size());
    for (size_t i = 0; i < keys.size(); ++i) {
      const store::GetOutcome& r = (*got)[i];
      auto m = made_.find(keys[i]);
      if (!r.status.ok()) {
        // No fault is injected here: damaged or inconsistent copies are bugs.
        Require(r.status.code() != absl::StatusCode::kDataLoss &&
                r.status.code() != absl::StatusCode::kInternal);
        // A sealed DURABLE tensor is never lost: no room now is fine, NOT_FOUND is not.
        Require(!(m != made_.end() && m->second.sealed && m->second.durable &&
                  r.status.code() == absl::StatusCode::kNotFound));
        continue;
      }
      Require(m != made_.end() && m->second.sealed && r.info.nbytes == m->second.nbytes);
      const uint8_t* bytes = store_->Address(r.info.location);
      for (uint64_t b = 0; b < r.info.nbytes; b += 509) {
        Require(bytes[b] == Pattern(keys[i], m->second.generation, b));
      }
      leases_.push_back(r.lease_id);
    }
  }

 private:
  FuzzedDataProvider& in_;
  std::unique_ptr<tiers::HostTier> host_;
  std::unique_ptr<tiers::SsdTier> ssd_;
  std::unique_ptr<store::Store> store_;
  std::string session_;
  std::map<std::string, Made> made_;
  std::vector<uint64_t> leases_;
  uint32_t generation_ = 0;
  const std::string swap_path_ = "/tmp/tensord-fuzz-" + std::to_string(getpid()) + ".swap";
};

}  // namespace
}  // namespace tensord

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  spdlog::set_level(spdlog::level::off);  // the store's warnings about fuzzed requests
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  tensord::Harness h(&in);
  if (!h.Start()) std::abort();
  for (int step = 0; step < 64 && in.remaining_bytes() > 0; ++step) h.Step();
  h.Stop();
  return 0;
}
