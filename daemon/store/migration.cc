// Tier migration: demotion of unleased host tensors to the SSD tier (the migrator thread),
// promotion of SSD-resident tensors on Get, and waiting for room under pressure. The lock is
// never held during SSD I/O: objects in flight are pinned (Object::pins) instead, so Delete,
// Abort or session end only retire them and the last pin frees them.
#include <algorithm>

#include "absl/strings/str_cat.h"
#include "daemon/policy/pressure.h"
#include "daemon/store/store.h"
#include "daemon/store/validation.h"
#include "spdlog/spdlog.h"

namespace tensord::store {
namespace {

constexpr size_t kMaxWritesPerRound = 64;
constexpr absl::Duration kIdleTick = absl::Milliseconds(20);
constexpr absl::Duration kPressureReadEvery = absl::Milliseconds(100);

}  // namespace

bool Store::AwaitCleared(Object* o, bool Object::*flag, absl::Time deadline,
                         std::vector<PendingFree>* frees) {
  ++o->pins;
  auto cleared = [o, flag]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !(o->*flag); };
  const bool ok = mu_.AwaitWithTimeout(absl::Condition(&cleared), deadline - absl::Now());
  --o->pins;
  MaybeFreeRetired(o, frees);
  return ok;
}

absl::Time Store::Clamp(absl::Time deadline) const {
  return std::min(deadline, absl::Now() + options_.pressure_wait);
}

void Store::DropHostCopy(Object* o, std::vector<PendingFree>* frees) {
  eviction_->Remove(HandleOf(o));
  frees->push_back(PendingFree{o->pool, o->offset, o->reserved});
  reclaiming_bytes_ += o->reserved;
  o->on_host = false;
}

std::pair<uint64_t, uint64_t> Store::HostUsage() const {
  uint64_t used = 0, capacity = 0;
  for (uint32_t i = 0; i < host_->pools().size(); ++i) {
    const memory::AllocatorStats st = host_->pools()[i].allocator->Stats();
    used += st.used_bytes;
    capacity += st.capacity_bytes;
  }
  return {used, capacity};
}

bool Store::GetMayBlock(absl::string_view ns, std::span<const std::string> keys, WantTier want) {
  if (ssd_ == nullptr && gpu_ == nullptr) return false;
  absl::MutexLock lock(&mu_);
  return std::any_of(keys.begin(), keys.end(), [&](const std::string& key) {
    const Object* o = FindObject(ns, key);
    if (o == nullptr) return false;
    if (want == WantTier::kGpu) return !o->gpu.has_value();
    return !o->on_host && !(want == WantTier::kAny && o->gpu);
  });
}

bool Store::CreateMayBlock(WantTier tier) {
  // Any Create may have to wait for demotions when its pool is full, whatever the tier's total:
  // with an SSD tier (or on the GPU tier), every Create leaves gRPC's threads.
  return ssd_ != nullptr || (tier == WantTier::kGpu && gpu_ != nullptr);
}

bool Store::SsdUsable(uint64_t nbytes) {
  if (ssd_ == nullptr) return false;
  const tiers::SsdStats st = ssd_->Stats();
  return !st.degraded && st.largest_free_bytes >= nbytes;
}

bool Store::MakeRoom(std::span<const uint32_t> pools, uint64_t nbytes, absl::Time deadline,
                     std::vector<PendingFree>* frees) {
  // 1. With a usable SSD tier, demote (keep) rather than drop: ask the migrator and wait for
  //    host memory to come back.
  //    Tensors the migrator is writing right now count: their memory is about to return.
  bool demotable = demoting_bytes_ > 0;
  if (!demotable) {
    ForEachVictim([&](const Object* o) {
      demotable = o->leases == 0 && o->pins == 0 &&
                  std::find(pools.begin(), pools.end(), o->pool) != pools.end();
      return !demotable;
    });
  }
  const absl::Time now = absl::Now();
  if (demotable && now < deadline && SsdUsable(nbytes)) {
    ++counters_.pressure_waits;
    for (uint32_t p : pools) pool_demand_[p] += nbytes;
    migrate_now_ = true;
    const uint64_t seen = host_frees_;
    auto freed = [this, seen]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return host_frees_ != seen; };
    mu_.AwaitWithTimeout(absl::Condition(&freed),
                         std::min(deadline - now, absl::Milliseconds(200)));
    for (uint32_t p : pools) {
      if ((pool_demand_[p] -= nbytes) == 0) pool_demand_.erase(p);
    }
    return true;
  }
  // 2. Drop unleased CACHE tensors (their contract allows it).
  if (SelectVictims(pools, nbytes, frees)) return true;
  // 3. Memory being zeroed by other requests may be enough.
  auto none_reclaiming = [this]()
                             ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return reclaiming_bytes_ == 0; };
  return reclaiming_bytes_ > 0 &&
         mu_.AwaitWithTimeout(absl::Condition(&none_reclaiming), absl::Seconds(5));
}

GetOutcome Store::PromoteAndLease(const std::string& session_id, absl::string_view ns,
                                  const std::string& key, absl::Time deadline) {
  GetOutcome r;
  std::vector<PendingFree> frees;
  while (true) {
    Object* o = nullptr;
    tiers::SsdExtent extent;
    std::optional<Object::GpuCopy> gpu_copy;
    uint32_t pool = 0;
    uint64_t offset = 0;
    {
      absl::MutexLock lock(&mu_);
      Session* s = FindSession(session_id);
      o = s == nullptr ? nullptr : FindObject(ns, key);
      if (s == nullptr) {
        r.status = absl::FailedPreconditionError("session closed during Get");
        break;
      }
      if (o == nullptr) {
        ++counters_.get_misses;
        r.status = absl::NotFoundError(absl::StrCat("no tensor '", key, "'"));
        break;
      }
      if (!o->sealed) {  // deleted and created again while the lock was dropped
        r.status = absl::FailedPreconditionError(absl::StrCat("'", key, "' is not sealed yet"));
        break;
      }
      if (o->on_host) {  // promoted meanwhile (by a concurrent Get)
        ++counters_.get_hits;
        GrantLease(s, o, &r);
        break;
      }
      if (o->promoting) {  // share the read in flight
        if (!AwaitCleared(o, &Object::promoting, deadline, &frees)) {
          r.status = absl::DeadlineExceededError(absl::StrCat("'", key, "' still swapping in"));
          break;
        }
        continue;
      }
      auto pools = HostCandidates(*o);
      auto where = pools.ok() ? AllocateHost(*pools, o->nbytes) : pools.status();
      if (!where.ok()) {
        const uint64_t nbytes = o->nbytes;  // o may be freed below
        ++o->pins;                          // MakeRoom may wait: keep o alive
        const bool retry = pools.ok() && MakeRoom(*pools, nbytes, deadline, &frees);
        --o->pins;
        MaybeFreeRetired(o, &frees);
        if (retry) {
          mu_.Unlock();
          Reclaim(frees);
          frees.clear();
          mu_.Lock();
          continue;
        }
        r.status = absl::ResourceExhaustedError(
            absl::StrCat("no host room to swap in '", key, "' (", nbytes, " bytes)"));
        break;
      }
      std::tie(pool, offset) = *where;
      o->promoting = true;
      ++o->pins;
      if (o->gpu) {  // copy down from the GPU: faster than the SSD, and never stale
        gpu_copy = *o->gpu;
      } else {
        extent = *o->ssd;
      }
    }
    const uint32_t arena = host_->pools()[pool].arena;
    const uint64_t nbytes = gpu_copy ? o->nbytes : extent.length;  // o is pinned
    const uint64_t reserved = host_->pools()[pool].allocator->Reserved(nbytes);
    uint8_t* const dst = host_->Address(arena, offset);
    absl::Status st;
    if (gpu_copy) {
      const tiers::GpuDevice::Copy copy{gpu_copy->offset, dst, nbytes};
      st = gpu_->device(gpu_->pools()[gpu_copy->pool].arena).ToHost({&copy, 1});
    } else {
      st = ssd_->Read(extent, dst);
    }
    absl::MutexLock lock(&mu_);
    FinishPromotion(session_id, key, o, pool, offset, reserved, st, &r, &frees,
                    gpu_copy.has_value());
    break;
  }
  Reclaim(frees);
  return r;
}

void Store::FinishPromotion(const std::string& session_id, const std::string& key, Object* o,
                            uint32_t pool, uint64_t offset, uint64_t reserved,
                            const absl::Status& st, GetOutcome* r, std::vector<PendingFree>* frees,
                            bool from_gpu) {
  o->promoting = false;
  --o->pins;
  Session* s = FindSession(session_id);
  if (st.ok() && !o->retired && s != nullptr && o->on_host) {
    // Another copy arrived first (a GPU demotion): lease that one, return ours.
    frees->push_back(PendingFree{pool, offset, reserved});
    reclaiming_bytes_ += reserved;
    ++counters_.get_hits;
    GrantLease(s, o, r);
    return;
  }
  if (st.ok() && !o->retired && s != nullptr) {
    o->pool = pool;
    o->offset = offset;
    o->reserved = reserved;
    o->on_host = true;
    eviction_->Insert(HandleOf(o));
    if (from_gpu) {
      ++counters_.gpu_demotions;
      counters_.gpu_demoted_bytes += o->nbytes;
    } else {
      ++counters_.promotions;
      counters_.promoted_bytes += o->nbytes;
    }
    ++counters_.get_hits;
    GrantLease(s, o, r);
    return;
  }
  frees->push_back(PendingFree{pool, offset, reserved});  // the range we read into
  reclaiming_bytes_ += reserved;
  if (!st.ok() && from_gpu) {  // the GPU copy is still there: a failed copy loses nothing
    ++counters_.gpu_copy_failures;
    spdlog::error("copying '{}' down from the GPU failed: {}", key, st.ToString());
    r->status =
        absl::Status(st.code(), absl::StrCat("copying '", key, "' from the GPU: ", st.message()));
    MaybeFreeRetired(o, frees);
    return;
  }
  if (st.ok()) {
    r->status =
        s == nullptr
            ? absl::FailedPreconditionError("session closed during Get")
            : absl::NotFoundError(absl::StrCat("'", key, "' was deleted while swapping in"));
    MaybeFreeRetired(o, frees);
    return;
  }
  ++counters_.promotion_failures;
  if (o->durability == Durability::kCache) {
    // A CACHE tensor may be dropped: count a miss, never serve the bad bytes.
    ++counters_.swap_misses;
    ++counters_.get_misses;
    spdlog::warn("dropping CACHE tensor '{}': swap-in failed: {}", key, st.ToString());
    if (o->retired) {
      MaybeFreeRetired(o, frees);
    } else {
      Retire(o, frees);
    }
    r->status = absl::NotFoundError(absl::StrCat("'", key, "' was lost from swap (CACHE)"));
  } else {
    ++counters_.data_loss;
    spdlog::error("DURABLE tensor '{}' cannot be read from swap: {}", key, st.ToString());
    MaybeFreeRetired(o, frees);
    r->status = absl::DataLossError(
        absl::StrCat("'", key, "' cannot be read back from swap: ", st.message()));
  }
}

void Store::PromoteMany(const std::string& session_id, absl::string_view ns,
                        std::span<const std::string> keys, std::span<const size_t> which,
                        absl::Time deadline, std::vector<GetOutcome>* out) {
  struct Read {
    size_t i;
    Object* o;
    uint32_t pool;
    uint64_t offset, reserved;
    tiers::SsdTier::ReadItem item;
  };
  std::vector<Read> reads;
  std::vector<size_t> alone;  // waits for room or for another Get's read: one by one
  std::vector<PendingFree> frees;
  {
    absl::MutexLock lock(&mu_);
    const bool session = FindSession(session_id) != nullptr;
    for (size_t i : which) {
      Object* o = session ? FindObject(ns, keys[i]) : nullptr;
      if (o == nullptr || o->on_host || o->promoting || o->gpu) {
        alone.push_back(i);
        continue;
      }
      auto pools = HostCandidates(*o);
      auto where = pools.ok() ? AllocateHost(*pools, o->nbytes) : pools.status();
      if (!where.ok()) {
        alone.push_back(i);
        continue;
      }
      const auto [pool, offset] = *where;
      const uint32_t arena = host_->pools()[pool].arena;
      o->promoting = true;
      ++o->pins;
      reads.push_back(Read{i,
                           o,
                           pool,
                           offset,
                           host_->pools()[pool].allocator->Reserved(o->nbytes),
                           {*o->ssd, host_->Address(arena, offset)}});
    }
  }
  if (!reads.empty()) {
    std::vector<tiers::SsdTier::ReadItem> items;
    items.reserve(reads.size());
    for (const Read& r : reads) items.push_back(r.item);
    const std::vector<absl::Status> results = ssd_->ReadMany(items);
    absl::MutexLock lock(&mu_);
    for (size_t j = 0; j < reads.size(); ++j) {
      const Read& r = reads[j];
      FinishPromotion(session_id, keys[r.i], r.o, r.pool, r.offset, r.reserved, results[j],
                      &(*out)[r.i], &frees);
    }
  }
  Reclaim(frees);
  for (size_t i : alone) (*out)[i] = PromoteAndLease(session_id, ns, keys[i], deadline);
}

uint64_t Store::DemoteOnce() {
  std::vector<PendingFree> frees;
  uint64_t moved = 0;
  {
    absl::MutexLock lock(&mu_);
    migrate_now_ = false;
    if (ssd_ == nullptr || ssd_->degraded()) return 0;
    const auto [used, capacity] = HostUsage();
    const uint64_t target = policy::DemotionDemand(policy::TierPressure{
        used, capacity, options_.high_watermark, options_.low_watermark,
        policy::SystemShort(system_.mem_available_known, system_.mem_available_bytes,
                            options_.min_mem_available)});
    uint64_t demand = 0;
    for (const auto& [pool, bytes] : pool_demand_) demand += bytes;
    if (target == 0 && demand == 0) return 0;
    uint64_t picked = 0;
    std::vector<Object*> chosen;  // chosen first: DropHostCopy edits the policy
    uint64_t swap_free = ssd_->Stats().largest_free_bytes;  // victims that cannot fit wait
    ForEachVictim([&](Object* o) {
      if (picked >= std::max(target, demand) || chosen.size() >= kMaxWritesPerRound) return false;
      if (o->leases > 0 || o->pins > 0 || !o->on_host) return true;
      if (!o->ssd.has_value() && !DropsWithoutWrite(*o)) {
        if (o->nbytes > swap_free) return true;
        swap_free -= std::min(swap_free, o->nbytes);  // a rough bound: extents may fragment
      }
      if (target == 0 && !pool_demand_.contains(o->pool)) return true;
      picked += o->reserved;
      chosen.push_back(o);
      return true;
    });
    moved = StartDemotions(chosen, &frees);
  }
  moved += FinishDemotions(&frees);
  Reclaim(frees);
  return moved;
}

uint64_t Store::StartDemotions(std::span<Object* const> chosen, std::vector<PendingFree>* frees) {
  uint64_t moved = 0;
  for (Object* o : chosen) {
    if (o->ssd.has_value() || DropsWithoutWrite(*o)) {  // another copy exists: no I/O
      ++counters_.demotions;
      moved += o->reserved;
      DropHostCopy(o, frees);
      continue;
    }
    ++o->pins;
    demoting_bytes_ += o->reserved;
    writing_.push_back(PendingWrite{o, host_->Address(host_->pools()[o->pool].arena, o->offset)});
  }
  return moved;
}

uint64_t Store::FinishDemotions(std::vector<PendingFree>* frees) {
  std::vector<PendingWrite> writes;
  {
    absl::MutexLock lock(&mu_);
    writes.swap(writing_);
  }
  if (writes.empty()) return 0;
  // One engine batch: the writes are in flight together.
  std::vector<tiers::SsdTier::WriteItem> items;
  items.reserve(writes.size());
  for (const PendingWrite& w : writes) items.push_back({w.src, w.o->nbytes});
  std::vector<absl::StatusOr<tiers::SsdExtent>> extents = ssd_->WriteMany(items);
  uint64_t moved = 0;
  absl::MutexLock lock(&mu_);
  for (size_t i = 0; i < writes.size(); ++i) {
    Object* o = writes[i].o;
    --o->pins;
    demoting_bytes_ -= o->reserved;
    if (!extents[i].ok()) {
      ++counters_.demotion_failures;
      spdlog::warn("demotion of '{}' failed: {}", o->key, extents[i].status().ToString());
    } else if (o->retired) {
      ssd_->Free(*extents[i]);
    } else {
      o->ssd = *extents[i];
      ++counters_.demotions;
      counters_.demoted_bytes += o->nbytes;
      if (o->leases == 0 && o->pins == 0 && o->on_host) {
        moved += o->reserved;
        DropHostCopy(o, frees);
      }
    }
    MaybeFreeRetired(o, frees);
  }
  return moved;
}

absl::StatusOr<std::string> Store::Evict(absl::string_view ns, absl::string_view key) {
  if (auto st = ValidateNamespace(ns); !st.ok()) return st;
  if (auto st = ValidateKey(key); !st.ok()) return st;
  std::vector<PendingFree> frees;
  std::string outcome;
  {
    absl::ReleasableMutexLock lock(&mu_);
    Object* o = FindObject(ns, key);
    if (o == nullptr) return absl::NotFoundError(absl::StrCat("no tensor '", key, "'"));
    if (!o->sealed) {
      return absl::FailedPreconditionError(absl::StrCat("'", key, "' is not sealed yet"));
    }
    if (o->gpu) {
      lock.Release();
      return EvictFromGpu(ns, key);
    }
    if (!o->on_host) return std::string("already on SSD only");
    if (o->leases > 0 || o->pins > 0) {
      return absl::FailedPreconditionError(
          absl::StrCat("'", key, "' is leased (", o->leases, "); it stays until released"));
    }
    if (ssd_ != nullptr && !ssd_->degraded()) {
      outcome = o->ssd.has_value() ? "demoted to SSD (its SSD copy was current)" : "demoted to SSD";
      Object* const chosen[] = {o};
      StartDemotions(chosen, &frees);
    } else if (o->durability == Durability::kCache) {
      ++counters_.evictions;
      counters_.evicted_bytes += o->nbytes;
      Retire(o, &frees);
      outcome = "dropped (CACHE)";
    } else {
      return absl::FailedPreconditionError(
          absl::StrCat("'", key, "' is DURABLE and there is no usable SSD tier to demote it to"));
    }
  }
  if (ssd_ != nullptr) FinishDemotions(&frees);
  Reclaim(frees);
  absl::MutexLock lock(&mu_);
  const Object* o = FindObject(ns, key);
  if (o != nullptr && o->on_host && o->pins == 0 && outcome.starts_with("demoted")) {
    return absl::UnavailableError(absl::StrCat("'", key, "' could not be written to SSD"));
  }
  return outcome;
}

void Store::ReadPressure() {
  const tiers::SystemPressure p =
      options_.read_pressure ? options_.read_pressure() : tiers::ReadSystemPressure();
  absl::MutexLock lock(&mu_);
  system_ = p;
}

void Store::RunMigrator(absl::Notification* stop) {
  absl::Time last_read = absl::InfinitePast(), last_probe = absl::Now();
  while (!stop->HasBeenNotified()) {
    // System pressure is read whatever tiers exist: operators query it over GetStats and
    // Prometheus even when there is nothing to demote to.
    if (absl::Now() - last_read >= kPressureReadEvery) {
      ReadPressure();
      last_read = absl::Now();
    }
    if (ssd_ == nullptr) {
      stop->WaitForNotificationWithTimeout(kPressureReadEvery);
      continue;
    }
    if (absl::Now() - last_probe >= options_.swap_probe_interval) {
      last_probe = absl::Now();
      if (ssd_->degraded()) ssd_->Probe();
    }
    if (DemoteOnce() > 0) continue;
    absl::MutexLock lock(&mu_);
    auto wanted = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return migrate_now_; };
    mu_.AwaitWithTimeout(absl::Condition(&wanted), kIdleTick);
  }
}

}  // namespace tensord::store
