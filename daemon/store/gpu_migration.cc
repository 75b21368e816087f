// The GPU tier's side of the store: copies up to the GPU on Get(want=GPU), GPU demotion to host
// (the GPU migrator, and requests that need GPU room), and the helpers they share. As with the
// SSD, the lock is never held during a copy: objects in flight are pinned.
#include <algorithm>

#include "absl/strings/str_cat.h"
#include "daemon/policy/pressure.h"
#include "daemon/store/store.h"
#include "spdlog/spdlog.h"

namespace tensord::store {
namespace {

constexpr size_t kMaxGpuDemotionsPerRound = 64;
constexpr absl::Duration kGpuIdleTick = absl::Milliseconds(20);

}  // namespace

absl::StatusOr<std::vector<uint32_t>> Store::HostCandidates(const Object& o) const {
  const memory::Pool& home = host_->pools()[o.pool];
  return host_->pools().Candidates(o.nbytes, home.fixed ? home.name : "");
}

absl::StatusOr<Store::Object::GpuCopy> Store::AllocateGpu(std::span<const uint32_t> pools,
                                                          uint64_t nbytes) {
  for (uint32_t pool : pools) {
    memory::Allocator& alloc = *gpu_->pools()[pool].allocator;
    auto offset = alloc.Allocate(nbytes);
    if (offset.ok()) return Object::GpuCopy{pool, *offset, alloc.Reserved(nbytes)};
  }
  return absl::ResourceExhaustedError("no free GPU range");
}

Location Store::GpuLocation(const Object& o) const {
  return Location{WantTier::kGpu, gpu_->pools()[o.gpu->pool].arena, o.gpu->offset, o.nbytes};
}

bool Store::HasCopyBelowGpu(const Object& o) const {
  return o.on_host || (o.ssd.has_value() && ssd_ != nullptr && !ssd_->degraded());
}

bool Store::HostHasRoomFor(const Object& o) const {
  auto pools = HostCandidates(o);
  if (!pools.ok()) return false;
  for (uint32_t p : *pools) {
    const memory::Allocator& alloc = *host_->pools()[p].allocator;
    if (alloc.Stats().largest_free_bytes >= alloc.Reserved(o.nbytes)) return true;
  }
  return false;
}

void Store::DropGpuCopy(Object* o, std::vector<PendingFree>* frees) {
  gpu_eviction_->Remove(HandleOf(o));
  frees->push_back(PendingFree{o->gpu->pool, o->gpu->offset, o->gpu->reserved, /*gpu=*/true});
  o->gpu.reset();
}

GetOutcome Store::CopyUpAndLease(const std::string& session_id, absl::string_view ns,
                                 const std::string& key, int device, absl::Time deadline) {
  GetOutcome r;
  std::vector<PendingFree> frees;
  uint64_t host_lease = 0;  // held while copying up a tensor this call swapped in
  while (true) {
    Object* o = nullptr;
    Object::GpuCopy dst;
    const uint8_t* src = nullptr;
    {
      absl::MutexLock lock(&mu_);
      Session* s = FindSession(session_id);
      o = s == nullptr ? nullptr : FindObject(ns, key);
      if (s == nullptr) {
        r.status = absl::FailedPreconditionError("session closed during Get");
        break;
      }
      if (o == nullptr) {
        r.status = absl::NotFoundError(absl::StrCat("no tensor '", key, "'"));
        break;
      }
      if (!o->sealed) {  // deleted and created again while the lock was dropped
        r.status = absl::FailedPreconditionError(absl::StrCat("'", key, "' is not sealed yet"));
        break;
      }
      if (o->gpu) {  // copied up meanwhile (by a concurrent Get), or already there
        GrantLease(s, o, &r, /*gpu=*/true);
        break;
      }
      if (o->gpu_moving) {  // share the copy in flight
        if (!AwaitCleared(o, &Object::gpu_moving, deadline, &frees)) {
          r.status = absl::DeadlineExceededError(absl::StrCat("'", key, "' still copying to GPU"));
          break;
        }
        continue;
      }
      if (!o->on_host) {  // only on SSD: swap it in first, holding a host lease meanwhile
        if (host_lease != 0) {
          r.status = absl::UnavailableError(absl::StrCat("'", key, "' left the host tier"));
          break;
        }
        mu_.Unlock();
        GetOutcome h = PromoteAndLease(session_id, ns, key, deadline);
        mu_.Lock();
        if (!h.status.ok()) {
          r = std::move(h);
          break;
        }
        host_lease = h.lease_id;
        continue;
      }
      auto pools = gpu_->Candidates(o->nbytes, device, "");
      if (!pools.ok()) {
        r.status = pools.status();
        break;
      }
      auto where = AllocateGpu(*pools, o->nbytes);
      if (!where.ok()) {
        const uint64_t nbytes = o->nbytes;
        ++o->pins;  // keep o alive, and on the host, while room is made
        mu_.Unlock();
        const uint64_t freed = DemoteGpu(device, nbytes);
        mu_.Lock();
        --o->pins;
        MaybeFreeRetired(o, &frees);
        if (freed > 0 && absl::Now() < deadline) continue;
        r.status = absl::ResourceExhaustedError(absl::StrCat(
            "no GPU room for '", key, "' (", nbytes, " bytes): the rest is leased or unsealed"));
        break;
      }
      dst = *where;
      src = host_->Address(host_->pools()[o->pool].arena, o->offset);
      o->gpu_moving = true;
      ++o->pins;
    }
    const tiers::GpuDevice::Copy copy{dst.offset, const_cast<uint8_t*>(src), o->nbytes};
    const absl::Status st = gpu_->device(gpu_->pools()[dst.pool].arena).ToDevice({&copy, 1});
    absl::MutexLock lock(&mu_);
    FinishCopyUp(session_id, key, o, dst, st, &r, &frees);
    break;
  }
  if (host_lease != 0) {
    absl::MutexLock lock(&mu_);
    if (leases_.contains(host_lease)) DropLease(host_lease, &frees);
  }
  Reclaim(frees);
  return r;
}

void Store::FinishCopyUp(const std::string& session_id, const std::string& key, Object* o,
                         const Object::GpuCopy& dst, const absl::Status& st, GetOutcome* r,
                         std::vector<PendingFree>* frees) {
  o->gpu_moving = false;
  --o->pins;
  Session* s = FindSession(session_id);
  if (st.ok() && !o->retired && s != nullptr) {
    o->gpu = dst;
    gpu_eviction_->Insert(HandleOf(o));
    ++counters_.gpu_promotions;
    counters_.gpu_promoted_bytes += o->nbytes;
    GrantLease(s, o, r, /*gpu=*/true);
    return;
  }
  frees->push_back(PendingFree{dst.pool, dst.offset, dst.reserved, /*gpu=*/true});
  if (!st.ok()) {
    ++counters_.gpu_copy_failures;
    spdlog::error("copying '{}' up to the GPU failed: {}", key, st.ToString());
    r->status =
        absl::Status(st.code(), absl::StrCat("copying '", key, "' to the GPU: ", st.message()));
  } else {
    r->status =
        s == nullptr
            ? absl::FailedPreconditionError("session closed during Get")
            : absl::NotFoundError(absl::StrCat("'", key, "' was deleted while copying to the GPU"));
  }
  MaybeFreeRetired(o, frees);
}

void Store::CopyUpMany(const std::string& session_id, absl::string_view ns,
                       std::span<const std::string> keys, std::span<const size_t> which, int device,
                       absl::Time deadline, std::vector<GetOutcome>* out) {
  struct Up {
    size_t i;
    Object* o;
    Object::GpuCopy dst;
    uint8_t* src;
  };
  std::vector<Up> ups;
  std::vector<size_t> alone;  // waits for room, a swap-in or another copy: one by one
  std::vector<PendingFree> frees;
  {
    absl::MutexLock lock(&mu_);
    const bool session = FindSession(session_id) != nullptr;
    for (size_t i : which) {
      Object* o = session ? FindObject(ns, keys[i]) : nullptr;
      if (o == nullptr || !o->sealed || o->gpu || o->gpu_moving || !o->on_host) {
        alone.push_back(i);
        continue;
      }
      auto pools = gpu_->Candidates(o->nbytes, device, "");
      auto where = pools.ok() ? AllocateGpu(*pools, o->nbytes) : pools.status();
      if (!where.ok()) {
        alone.push_back(i);
        continue;
      }
      o->gpu_moving = true;
      ++o->pins;
      ups.push_back(Up{i, o, *where, host_->Address(host_->pools()[o->pool].arena, o->offset)});
    }
  }
  if (!ups.empty()) {
    // One batch per device: every copy enqueued on its up stream, then one wait.
    std::vector<absl::Status> results(ups.size());
    std::vector<std::vector<tiers::GpuDevice::Copy>> copies(gpu_->arenas().size());
    std::vector<std::vector<size_t>> index(gpu_->arenas().size());
    for (size_t j = 0; j < ups.size(); ++j) {
      const uint32_t arena = gpu_->pools()[ups[j].dst.pool].arena;
      copies[arena].push_back({ups[j].dst.offset, ups[j].src, ups[j].o->nbytes});  // o pinned
      index[arena].push_back(j);
    }
    for (uint32_t a = 0; a < copies.size(); ++a) {
      if (copies[a].empty()) continue;
      const absl::Status st = gpu_->device(a).ToDevice(copies[a]);
      for (size_t j : index[a]) results[j] = st;
    }
    absl::MutexLock lock(&mu_);
    for (size_t j = 0; j < ups.size(); ++j) {
      FinishCopyUp(session_id, keys[ups[j].i], ups[j].o, ups[j].dst, results[j], &(*out)[ups[j].i],
                   &frees);
    }
  }
  Reclaim(frees);
  for (size_t i : alone) (*out)[i] = CopyUpAndLease(session_id, ns, keys[i], device, deadline);
}

uint64_t Store::StartGpuDemotions(std::span<Object* const> chosen, std::vector<GpuDown>* downs,
                                  std::vector<PendingFree>* frees) {
  uint64_t freed = 0;
  for (Object* o : chosen) {
    const uint64_t reserved = o->gpu->reserved;
    if (HasCopyBelowGpu(*o)) {  // another copy exists: just drop this one
      ++counters_.gpu_demotions;
      DropGpuCopy(o, frees);
      freed += reserved;
      continue;
    }
    auto pools = HostCandidates(*o);
    auto where = pools.ok() ? AllocateHost(*pools, o->nbytes) : pools.status();
    if (!where.ok()) {
      if (o->durability == Durability::kCache) {
        ++counters_.gpu_evictions;
        ++counters_.evictions;
        counters_.evicted_bytes += o->nbytes;
        spdlog::debug("evicting CACHE tensor '{}' from the GPU: no host room", o->key);
        Retire(o, frees);
        freed += reserved;
      }  // a DURABLE tensor stays on the GPU until the host tier has room again

      continue;
    }
    const auto [pool, offset] = *where;
    ++o->pins;
    o->promoting = true;  // a Get for a host copy waits for this one instead of making its own
    downs->push_back(GpuDown{o, pool, offset, host_->pools()[pool].allocator->Reserved(o->nbytes)});
  }
  return freed;
}

uint64_t Store::FinishGpuDemotions(std::span<const GpuDown> downs,
                                   std::vector<PendingFree>* frees) {
  if (downs.empty()) return 0;
  // One batch per device: every copy enqueued on its down stream, then one wait.
  std::vector<absl::Status> results(downs.size());
  {
    std::vector<std::vector<tiers::GpuDevice::Copy>> per_arena(gpu_->arenas().size());
    std::vector<std::vector<size_t>> index(gpu_->arenas().size());
    {
      absl::MutexLock lock(&mu_);  // o->gpu and the pool table are read under the lock
      for (size_t i = 0; i < downs.size(); ++i) {
        const GpuDown& d = downs[i];
        const uint32_t arena = gpu_->pools()[d.o->gpu->pool].arena;
        per_arena[arena].push_back({d.o->gpu->offset,
                                    host_->Address(host_->pools()[d.pool].arena, d.offset),
                                    d.o->nbytes});
        index[arena].push_back(i);
      }
    }
    for (uint32_t a = 0; a < per_arena.size(); ++a) {
      if (per_arena[a].empty()) continue;
      const absl::Status st = gpu_->device(a).ToHost(per_arena[a]);
      for (size_t i : index[a]) results[i] = st;
    }
  }
  uint64_t freed = 0;
  absl::MutexLock lock(&mu_);
  for (size_t i = 0; i < downs.size(); ++i) {
    const GpuDown& d = downs[i];
    Object* o = d.o;
    --o->pins;
    o->promoting = false;
    if (!results[i].ok() || o->retired || o->on_host) {
      if (!results[i].ok()) {
        ++counters_.gpu_copy_failures;
        spdlog::error("demoting '{}' from the GPU failed: {}", o->key, results[i].ToString());
      }
      frees->push_back(PendingFree{d.pool, d.offset, d.reserved});
      reclaiming_bytes_ += d.reserved;
    } else {
      o->pool = d.pool;
      o->offset = d.offset;
      o->reserved = d.reserved;
      o->on_host = true;
      eviction_->Insert(HandleOf(o));
      ++counters_.gpu_demotions;
      counters_.gpu_demoted_bytes += o->nbytes;
      if (o->gpu_leases == 0 && o->pins == 0 && o->gpu) {
        freed += o->gpu->reserved;
        DropGpuCopy(o, frees);
      }
    }
    MaybeFreeRetired(o, frees);
  }
  ++host_frees_;  // wakes waiters: GPU memory came back
  return freed;
}

uint64_t Store::DemoteGpu(int device, uint64_t want) {
  if (gpu_ == nullptr || want == 0) return 0;
  const std::vector<uint32_t> pools = gpu_->PoolsOn(device);
  std::vector<GpuDown> downs;
  std::vector<PendingFree> frees;
  uint64_t freed = 0;
  {
    absl::MutexLock lock(&mu_);
    std::vector<Object*> chosen;  // chosen first: demotion edits the policy
    uint64_t picked = 0;
    gpu_eviction_->Victims([&](policy::Handle h) {
      Object* o = ObjectOf(h);
      if (picked >= want || chosen.size() >= kMaxGpuDemotionsPerRound) return false;
      if (o->gpu_leases > 0 || o->pins > 0 || !o->gpu || !InPools(pools, o->gpu->pool)) {
        return true;
      }
      if (o->durability == Durability::kDurable && !HasCopyBelowGpu(*o) && !HostHasRoomFor(*o)) {
        return true;  // it would stay: do not let it stand in for tensors that can move
      }
      picked += o->gpu->reserved;
      chosen.push_back(o);
      return true;
    });
    freed = StartGpuDemotions(chosen, &downs, &frees);
  }
  freed += FinishGpuDemotions(downs, &frees);
  Reclaim(frees);
  return freed;
}

uint64_t Store::DemoteGpuOnce() {
  if (gpu_ == nullptr) return 0;
  // Per arena: above the high watermark, down to low.
  std::vector<std::pair<int, uint64_t>> wants;
  {
    absl::MutexLock lock(&mu_);
    for (uint32_t i = 0; i < gpu_->pools().size(); ++i) {
      const memory::AllocatorStats st = gpu_->pools()[i].allocator->Stats();
      // Device-wide memory does not count: demotion inside a fixed arena gives none back.
      const uint64_t want = policy::DemotionDemand(
          policy::TierPressure{st.used_bytes, st.capacity_bytes, options_.gpu_high_watermark,
                               options_.gpu_low_watermark, /*system_short=*/false});
      const int device = gpu_->arenas()[gpu_->pools()[i].arena].device;
      if (want > 0) wants.emplace_back(device, want);
    }
  }
  uint64_t freed = 0;
  for (const auto& [device, want] : wants) freed += DemoteGpu(device, want);
  return freed;
}

void Store::RunGpuMigrator(absl::Notification* stop) {
  if (gpu_ == nullptr) return;
  while (!stop->HasBeenNotified()) {
    if (DemoteGpuOnce() > 0) continue;
    stop->WaitForNotificationWithTimeout(kGpuIdleTick);
  }
}

absl::StatusOr<std::string> Store::EvictFromGpu(absl::string_view ns, absl::string_view key) {
  std::vector<GpuDown> downs;
  std::vector<PendingFree> frees;
  std::string outcome;
  {
    absl::MutexLock lock(&mu_);
    Object* o = FindObject(ns, key);
    if (o == nullptr) return absl::NotFoundError(absl::StrCat("no tensor '", key, "'"));
    if (!o->sealed) {
      return absl::FailedPreconditionError(absl::StrCat("'", key, "' is not sealed yet"));
    }
    if (!o->gpu) return absl::FailedPreconditionError(absl::StrCat("'", key, "' left the GPU"));
    if (o->gpu_leases > 0 || o->pins > 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          "'", key, "' is leased on the GPU (", o->gpu_leases, "); it stays until released"));
    }
    const bool elsewhere = HasCopyBelowGpu(*o);
    const bool cache = o->durability == Durability::kCache;
    Object* const chosen[] = {o};
    StartGpuDemotions(chosen, &downs, &frees);  // may retire and free o: not used below
    if (elsewhere) {
      outcome = "GPU copy dropped (another tier holds it)";
    } else if (!downs.empty()) {
      outcome = "demoted to host";
    } else if (cache) {
      outcome = "dropped (CACHE, no host room)";
    } else {
      return absl::ResourceExhaustedError(
          absl::StrCat("'", key, "' is DURABLE and the host tier has no room for it now"));
    }
  }
  FinishGpuDemotions(downs, &frees);
  Reclaim(frees);
  absl::MutexLock lock(&mu_);
  const Object* o = FindObject(ns, key);
  if (o != nullptr && !downs.empty() && !o->on_host) {
    return absl::UnavailableError(absl::StrCat("'", key, "' could not be copied off the GPU"));
  }
  return outcome;
}

}  // namespace tensord::store
