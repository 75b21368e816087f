// Migration downward: room for requests (MakeRoom, CACHE victims), demotion of unleased host
// copies to SSD through the codec stage (the migrator), of GPU copies to host (the GPU migrator,
// and requests that need GPU room), and the operator's Evict. Victims come from each tier's
// eviction policy, the demand from the pressure policy; the mover carries the bytes. The lock
// is never held during a move: copies being read have a reader, copies being written are in
// flight, so Delete, Abort or a session's end only retire the object and the last move frees it.
#include <algorithm>

#include "absl/strings/str_cat.h"
#include "daemon/policy/pressure.h"
#include "daemon/store/store.h"
#include "daemon/store/validation.h"
#include "spdlog/spdlog.h"

namespace tensord::store {
namespace {

constexpr size_t kMaxWritesPerRound = 64;
// SSD room made for one demotion round at most.
constexpr uint64_t kMaxSsdRoomPerRound = uint64_t{256} << 20;
constexpr size_t kMaxGpuDemotionsPerRound = 64;
constexpr absl::Duration kIdleTick = absl::Milliseconds(20);
constexpr absl::Duration kPressureReadEvery = absl::Milliseconds(100);

using policy::Verdict;

}  // namespace

std::pair<uint64_t, uint64_t> Store::HostUsage() const {
  const tiers::TierUsage u = host_->Usage();
  return {u.used_bytes, u.capacity_bytes};
}

std::vector<uint64_t> Store::TenantDemotionTargets(bool short_of_memory) const {
  if (!options_.tenants.enabled()) return {};
  const std::vector<tiers::TierUsage> host = HostUseByTenant();
  std::vector<uint64_t> target(host.size());
  for (size_t t = 0; t < target.size(); ++t) {
    target[t] = policy::DemotionDemand(
        policy::TierPressure{host[t].used_bytes, host[t].capacity_bytes, options_.high_watermark,
                             options_.low_watermark, short_of_memory});
  }
  return target;
}

bool Store::SsdUsable(uint64_t nbytes) {
  if (ssd_ == nullptr) return false;
  const tiers::SsdStats st = ssd_->Stats();
  return !st.degraded && st.largest_free_bytes >= nbytes;
}

bool Store::MakeSsdRoom(uint64_t nbytes, uint64_t largest, TenantId tenant, Frees* frees) {
  policy::EvictionPolicy* p = PolicyOf(TierId::kSsd);
  if (ssd_ == nullptr || ssd_->degraded() || p == nullptr) return false;
  // Freed ranges need not be adjacent: rounds of victims until the largest free range is
  // enough, or nothing more may go (or the rest is coming from copies moving to Redis). A call
  // lets at most twice what it asked for go, and stops when a round gains no room (fragments
  // it cannot join).
  uint64_t budget = 2 * std::max(nbytes, largest);
  tiers::SsdStats st = ssd_->Stats();
  for (int round = 0; round < 8 && budget > 0; ++round) {
    if (st.free_bytes >= nbytes && st.largest_free_bytes >= largest) return true;
    uint64_t want = std::max(nbytes - std::min(nbytes, st.free_bytes),
                             largest - std::min(largest, st.largest_free_bytes));
    // Copies on their way to Redis give their room soon: no more victims for that.
    if (want <= ssd_to_remote_bytes_) return false;
    want = std::min(want - ssd_to_remote_bytes_, budget);
    std::vector<Object*> victims;  // collected first: dropping edits the policy
    uint64_t got = 0;
    p->Victims(policy::Demand{{}, want}, [&](policy::Handle h) {
      Object* o = ObjectOf(h);
      const Copy& ssd = o->copy(TierId::kSsd);
      // A DURABLE copy is the tensor's; a pinned object is being moved or promised; a hinted
      // one is about to be read; another tenant's tensors are never evicted for this one's
      // demotions; a copy in the RAM front frees no room in the files.
      if (o->durability != Durability::kCache || o->pins > 0 || o->tenant != tenant ||
          o->guarded != 0 || lookahead_.Find(h) != nullptr || ssd.range.space == tiers::kRamSpace) {
        return Verdict::kSkip;
      }
      victims.push_back(o);
      got += ssd.range.reserved;
      return got >= want ? Verdict::kLast : Verdict::kTake;
    });
    if (victims.empty()) return false;
    for (Object* o : victims) {
      const uint64_t reserved = o->copy(TierId::kSsd).range.reserved;
      if (o->copy(TierId::kHost).present || o->copy(TierId::kGpu).present) {
        ++counters_.ssd_drops;  // a clean copy of a tensor in memory: nothing is lost
        DropCopy(o, TierId::kSsd, policy::RemovalReason::kDemoted, frees);
      } else if (o->copy(TierId::kRemote).present && remote_->Healthy()) {
        ++counters_.remote_demotions;  // lives on in Redis: a later Get reads it back
        DropCopy(o, TierId::kSsd, policy::RemovalReason::kDemoted, frees);
      } else if (const RemoteTake take = RemoteTakes(*o, ssd_to_remote_bytes_);
                 take == RemoteTake::kYes) {
        StartSsdToRemote(o);  // the tier below: its room comes when the copy is in Redis
      } else if (take == RemoteTake::kLater) {
        continue;  // Redis is busy with others: it waits for its turn, not dropped
      } else {
        spdlog::debug("making SSD room: '{}' ({} bytes) is evicted", o->key, o->nbytes);
        ++counters_.ssd_evictions;
        counters_.ssd_evicted_bytes += o->nbytes;
        ++counters_.evictions;
        counters_.evicted_bytes += o->nbytes;
        Retire(o, policy::RemovalReason::kEvicted, frees);
      }
      budget -= std::min(budget, reserved);
    }
    const tiers::SsdStats before = st;
    st = ssd_->Stats();
    if (st.free_bytes <= before.free_bytes && st.largest_free_bytes <= before.largest_free_bytes &&
        ssd_to_remote_bytes_ == 0) {
      break;  // no room gained
    }
  }
  return st.free_bytes >= nbytes && st.largest_free_bytes >= largest;
}

bool Store::SelectVictims(std::span<const uint32_t> pools, uint64_t nbytes, bool may_move,
                          Frees* frees, bool* waits) {
  // Bytes each candidate pool would have after the victims so far: enough in one pool ends
  // the selection. For the general pool this is an estimate (freed ranges may not be adjacent);
  // the caller retries and selects more if the allocation still fails.
  absl::flat_hash_map<uint32_t, uint64_t> gained;
  if (may_move) {  // what is on its way to Redis from these pools comes back soon
    for (uint32_t p : pools) {
      if (auto it = host_to_remote_by_pool_.find(p); it != host_to_remote_by_pool_.end()) {
        gained[p] = it->second;
      }
    }
  }
  std::vector<Object*> victims;  // collected first: dropping edits the policy
  std::vector<RemoteTake> takes;
  uint64_t writes = 0;  // bytes of the victims chosen to move to Redis
  PolicyOf(TierId::kHost)->Victims(policy::Demand{pools}, [&](policy::Handle h) {
    // Unleased CACHE tensors, and host copies of tensors the GPU also holds.
    Object* o = ObjectOf(h);
    // With an index, a DURABLE tensor keeps a copy that survives the daemon (GPU memory does
    // not): its host copy goes only through a demotion to SSD.
    if (o->durability != Durability::kCache &&
        (!o->copy(TierId::kGpu).present || index_ != nullptr)) {
      return Verdict::kSkip;
    }
    RemoteTake take = RemoteTake::kNo;
    if (may_move && !o->copy(TierId::kGpu).present && !o->copy(TierId::kRemote).present) {
      take = RemoteTakes(*o, publishing_bytes_ + writes);
      // Redis is busy with others: it waits for its turn (not dropped, and no room counted).
      if (take == RemoteTake::kLater) {
        if (waits != nullptr) *waits = true;
        return Verdict::kSkip;
      }
      if (take == RemoteTake::kYes) writes += o->nbytes;
    }
    victims.push_back(o);
    takes.push_back(take);
    const tiers::Range& r = o->copy(TierId::kHost).range;
    const memory::Allocator& alloc = *host_->pools()[r.space].allocator;
    const uint64_t got = gained[r.space] += r.reserved;
    return std::max(alloc.Stats().largest_free_bytes, got) >= alloc.Reserved(nbytes)
               ? Verdict::kLast
               : Verdict::kTake;
  });
  for (size_t i = 0; i < victims.size(); ++i) {
    Object* o = victims[i];
    spdlog::debug("making room: '{}' ({} bytes) leaves the host tier", o->key, o->nbytes);
    if (o->copy(TierId::kGpu).present) {
      DropCopy(o, TierId::kHost, policy::RemovalReason::kDemoted, frees);  // lives on the GPU
    } else if (o->copy(TierId::kRemote).present && remote_->Healthy()) {
      ++counters_.remote_demotions;  // lives on in Redis: a later Get reads it back
      DropCopy(o, TierId::kHost, policy::RemovalReason::kDemoted, frees);
    } else if (takes[i] == RemoteTake::kYes) {
      StartPublish(o, /*demote=*/true);  // the tier below: its memory returns once it is there
    } else {
      ++counters_.evictions;
      counters_.evicted_bytes += o->nbytes;
      Retire(o, policy::RemovalReason::kEvicted, frees);
    }
  }
  return !frees->empty();
}

bool Store::MakeRoom(std::span<const uint32_t> pools, uint64_t nbytes, absl::Time deadline,
                     Frees* frees) {
  // 0. Memory freed moments ago is being scrubbed: wait a little for some of it to come back
  //    before choosing victims (it may be enough); if none does, go on.
  if (reclaiming_bytes_ > 0 && absl::Now() < deadline) {
    const uint64_t seen = host_frees_;
    auto returned = [this, seen]()
                        ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return host_frees_ != seen; };
    if (mu_.AwaitWithTimeout(absl::Condition(&returned),
                             std::min(deadline - absl::Now(), absl::Milliseconds(200)))) {
      return true;
    }
  }
  // 1. With a usable SSD tier, demote (keep) rather than drop: ask the migrator and wait for
  //    host memory to come back. Tensors being written right now count: their memory is about
  //    to return.
  bool demotable = demoting_bytes_ > 0;
  // The first demotable tensor, when it has to be written: whose SSD copies may make room
  // for it, and its size. One that needs no write needs no SSD room.
  std::optional<TenantId> whose;
  uint64_t write_bytes = 0;
  if (!demotable || !SsdUsable(nbytes)) {
    PolicyOf(TierId::kHost)->Victims(policy::Demand{pools}, [&](policy::Handle h) {
      const Object* o = ObjectOf(h);
      const bool writes = !o->copy(TierId::kSsd).present && !DropsWithoutWrite(*o);
      if (writes && !QuotaAllows(o->tenant, TierId::kSsd, o->nbytes, /*count=*/false).ok()) {
        return Verdict::kSkip;
      }
      demotable = true;
      if (writes) {
        whose = o->tenant;
        write_bytes = o->nbytes;
      }
      return Verdict::kStop;
    });
  }
  const absl::Time now = absl::Now();
  const auto wait_for_frees = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const uint64_t seen = host_frees_;
    auto freed = [this, seen]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return host_frees_ != seen; };
    mu_.AwaitWithTimeout(absl::Condition(&freed),
                         std::min(deadline - now, absl::Milliseconds(200)));
  };
  if (ssd_ != nullptr && !ssd_->degraded() && demotable && now < deadline &&
      (SsdUsable(nbytes) || (demotable && !whose) ||
       (whose &&
        (MakeSsdRoom(write_bytes, write_bytes, *whose, frees) || ssd_to_remote_bytes_ > 0)))) {
    ++counters_.pressure_waits;
    for (uint32_t p : pools) pool_demand_[p] += nbytes;
    migrate_now_ = true;
    wait_for_frees();
    for (uint32_t p : pools) {
      if ((pool_demand_[p] -= nbytes) == 0) pool_demand_.erase(p);
    }
    return true;
  }
  // 2. Without a usable SSD, unleased CACHE tensors move to the remote tier when it takes them
  //    (remote_demotions) and are dropped otherwise (their contract allows it). Tensors already
  //    on their way to Redis from these pools bring their memory back soon: they count as room
  //    (no more go for it while they are enough), and the request waits for them.
  const bool may_move = now < deadline;
  // Whether what is on its way from one of these pools, with its largest free range, is
  // enough (any: whether anything is on its way).
  const auto coming = [&](bool any) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    for (uint32_t p : pools) {
      auto it = host_to_remote_by_pool_.find(p);
      if (it == host_to_remote_by_pool_.end()) continue;
      const memory::Allocator& alloc = *host_->pools()[p].allocator;
      if (any || std::max(alloc.Stats().largest_free_bytes, it->second) >= alloc.Reserved(nbytes)) {
        return true;
      }
    }
    return false;
  };
  const auto wait_for_moves = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    ++counters_.pressure_waits;
    wait_for_frees();
    return true;
  };
  if (may_move && coming(false)) return wait_for_moves();
  bool waits = false;  // a victim waits for Redis's backlog
  if (SelectVictims(pools, nbytes, may_move, frees, &waits)) return true;
  // Nothing freed now: moves to Redis from these pools (started now or before), or victims
  // waiting for their turn there, are what room there is to wait for.
  if (may_move && (waits || coming(true))) return wait_for_moves();
  return false;
}

uint64_t Store::DemoteOnce() {
  Frees frees;
  uint64_t moved = 0;
  {
    absl::MutexLock lock(&mu_);
    migrate_now_ = false;
    if (ssd_ == nullptr || ssd_->degraded()) return 0;
    const bool short_of_memory = policy::SystemShort(
        system_.mem_available_known, system_.mem_available_bytes, options_.min_mem_available);
    // Watermarks hold per tenant: one tenant filling its memory demotes only its own tensors.
    std::vector<uint64_t> tenant_target = TenantDemotionTargets(short_of_memory);
    uint64_t target = 0;
    if (tenant_target.empty()) {
      const auto [used, capacity] = HostUsage();
      target = policy::DemotionDemand(policy::TierPressure{
          used, capacity, options_.high_watermark, options_.low_watermark, short_of_memory});
    } else {
      for (uint64_t t : tenant_target) target += t;
    }
    uint64_t demand = 0;
    for (const auto& [pool, bytes] : pool_demand_) demand += bytes;
    if (target == 0 && demand == 0) return 0;
    std::vector<Object*> chosen;  // chosen first: demotion edits the policy
    uint64_t swap_free = ssd_->Stats().largest_free_bytes;   // victims that cannot fit wait
    std::vector<uint64_t> to_swap(options_.tenants.size());  // by tenant: chosen this round
    // Wanted victims that found no swap space: their bytes and the largest, by tenant.
    absl::flat_hash_map<TenantId, std::pair<uint64_t, uint64_t>> short_of;
    uint64_t short_bytes = 0;
    uint64_t writes = 0;           // bytes of the chosen victims still to be written
    std::optional<TenantId> only;  // the second choice: the tenant the SSD made room for
    const auto select = [&](uint64_t want) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      PolicyOf(TierId::kHost)->Victims(policy::Demand{{}, want}, [&](policy::Handle h) {
        Object* o = ObjectOf(h);
        if (chosen.size() >= kMaxWritesPerRound) return Verdict::kStop;
        if (only && o->tenant != *only) return Verdict::kSkip;
        if (o->copy(TierId::kSsd).in_flight) return Verdict::kSkip;
        // Only what is wanted: a pool waited on, or a tenant (or the tier) above its mark.
        const bool wanted = pool_demand_.contains(o->copy(TierId::kHost).range.space);
        if (target == 0 && !wanted) return Verdict::kSkip;
        if (!tenant_target.empty() && !wanted && tenant_target[o->tenant] == 0) {
          return Verdict::kSkip;
        }
        if (!o->copy(TierId::kSsd).present && !DropsWithoutWrite(*o)) {
          if (o->nbytes > swap_free) {
            short_bytes += o->nbytes;
            auto& [bytes, largest] = short_of[o->tenant];
            bytes += o->nbytes;
            largest = std::max(largest, o->nbytes);
            return short_bytes >= std::min(want, kMaxSsdRoomPerRound) ? Verdict::kStop
                                                                      : Verdict::kSkip;
          }
          // Its tenant's swap is full: it stays (a CACHE one may be dropped for room).
          if (!QuotaAllows(o->tenant, TierId::kSsd, to_swap[o->tenant] + o->nbytes,
                           /*count=*/false)
                   .ok()) {
            return Verdict::kSkip;
          }
          to_swap[o->tenant] += o->nbytes;
          writes += o->nbytes;
          swap_free -= std::min(swap_free, o->nbytes);  // a rough bound: extents may fragment
        }
        if (!tenant_target.empty() && !wanted) {
          uint64_t& left = tenant_target[o->tenant];
          left -= std::min(left, o->copy(TierId::kHost).range.reserved);
        }
        chosen.push_back(o);
        return Verdict::kTake;
      });
    };
    select(std::max(target, demand));
    moved = StartDemotions(chosen, &frees);
    // A full SSD lets its coldest CACHE copies go for the victims that did not fit, which are
    // then chosen again (their demotions now being written count as in flight).
    // One tenant per round (the one most short): its own SSD copies make the room, and only its
    // tensors are chosen into it. The first choice's writes have not reserved their room yet:
    // they count.
    const auto most = std::max_element(
        short_of.begin(), short_of.end(),
        [](const auto& a, const auto& b) { return a.second.first < b.second.first; });
    if (most != short_of.end() &&
        MakeSsdRoom(std::min(most->second.first, kMaxSsdRoomPerRound) + writes,
                    most->second.second + writes, most->first, &frees)) {
      const uint64_t again = most->second.first;
      only = most->first;
      chosen.clear();
      short_bytes = 0;
      short_of.clear();
      const uint64_t largest = ssd_->Stats().largest_free_bytes;
      swap_free = largest - std::min(largest, writes);
      select(again);
      moved += StartDemotions(chosen, &frees);
    }
  }
  Reclaim(std::move(frees), /*now=*/true);  // copies dropped without a write: back at once
  frees.clear();
  moved += FinishDemotions(&frees);
  Reclaim(std::move(frees), /*now=*/true);
  return moved;
}

uint64_t Store::DemoteToRemote() {
  Frees frees;
  uint64_t moved = 0;
  {
    absl::MutexLock lock(&mu_);
    const bool asked = migrate_now_;
    migrate_now_ = false;
    if (!remote_->Healthy()) return 0;
    // A round that found nothing to move is not repeated for a while (it walks the whole host
    // tier), unless room is asked for.
    if (!asked && absl::Now() < remote_demotion_idle_until_) return 0;
    const bool short_of_memory = policy::SystemShort(
        system_.mem_available_known, system_.mem_available_bytes, options_.min_mem_available);
    // Tenants' tensors never go to Redis: with tenants, the shared pools' own watermark.
    uint64_t target = 0;
    if (std::vector<uint64_t> by_tenant = TenantDemotionTargets(short_of_memory);
        !by_tenant.empty()) {
      target = by_tenant[kNoTenant];
    } else {
      const auto [used, capacity] = HostUsage();
      target = policy::DemotionDemand(policy::TierPressure{
          used, capacity, options_.high_watermark, options_.low_watermark, short_of_memory});
    }
    // What is on its way there already counts.
    uint64_t moving = 0;
    for (const auto& [pool, bytes] : host_to_remote_by_pool_) moving += bytes;
    target -= std::min(target, moving);
    if (target == 0) return 0;
    std::vector<Object*> chosen;  // chosen first: demotion edits the policy
    uint64_t got = 0, writes = 0;
    bool busy = false;  // Redis's backlog is full: not "nothing to move"
    PolicyOf(TierId::kHost)->Victims(policy::Demand{{}, target}, [&](policy::Handle h) {
      Object* o = ObjectOf(h);
      if (chosen.size() >= kMaxWritesPerRound) return Verdict::kStop;
      // CACHE tensors with a Redis copy, or that Redis takes; nothing is dropped ahead of
      // need (MakeRoom does that), and GPU-held ones are the GPU migrator's.
      if (o->durability != Durability::kCache || o->copy(TierId::kGpu).present) {
        return Verdict::kSkip;
      }
      if (!o->copy(TierId::kRemote).present) {
        const RemoteTake take = RemoteTakes(*o, publishing_bytes_ + writes);
        if (take == RemoteTake::kLater) {
          busy = true;
          return Verdict::kStop;  // the backlog is full (or it is on its way already)
        }
        if (take == RemoteTake::kNo) return Verdict::kSkip;
        writes += o->nbytes;
      }
      chosen.push_back(o);
      got += o->copy(TierId::kHost).range.reserved;
      return got >= target ? Verdict::kLast : Verdict::kTake;
    });
    if (chosen.empty() && !busy && moving == 0) {
      remote_demotion_idle_until_ = absl::Now() + absl::Seconds(1);
    }
    for (Object* o : chosen) {
      moved += o->copy(TierId::kHost).range.reserved;
      if (o->copy(TierId::kRemote).present) {
        ++counters_.remote_demotions;  // lives on in Redis: a later Get reads it back
        DropCopy(o, TierId::kHost, policy::RemovalReason::kDemoted, &frees);
      } else {
        StartPublish(o, /*demote=*/true);  // its memory returns once it is there
      }
    }
  }
  Reclaim(std::move(frees), /*now=*/true);
  return moved;
}

uint64_t Store::StartDemotions(std::span<Object* const> chosen, Frees* frees) {
  uint64_t moved = 0;
  for (Object* o : chosen) {
    if (o->copy(TierId::kSsd).present || DropsWithoutWrite(*o)) {  // another copy: no I/O
      ++counters_.demotions;
      moved += o->copy(TierId::kHost).range.reserved;
      DropCopy(o, TierId::kHost, policy::RemovalReason::kDemoted, frees);
      continue;
    }
    AddReader(o, TierId::kHost);
    o->copy(TierId::kSsd).in_flight = true;
    ++o->pins;
    demoting_bytes_ += o->copy(TierId::kHost).range.reserved;
    writing_.push_back(o);
  }
  return moved;
}

uint64_t Store::FinishDemotions(Frees* frees) {
  std::vector<Object*> writes;
  std::vector<MoveItem> items;
  {
    absl::MutexLock lock(&mu_);
    writes.swap(writing_);
    for (Object* o : writes) {
      MoveItem m;
      m.src = o->copy(TierId::kHost).range;
      m.nbytes = o->nbytes;
      m.compression = o->compression;
      m.dtype = o->dtype;
      m.shape = o->shape;
      m.persistent = index_ != nullptr && o->durability == Durability::kDurable;
      items.push_back(std::move(m));
    }
  }
  if (writes.empty()) return 0;
  mover_.Run(TierId::kHost, TierId::kSsd, items);  // one batch, through the codec stage
  uint64_t moved = 0;
  absl::MutexLock lock(&mu_);
  for (size_t i = 0; i < writes.size(); ++i) {
    Object* o = writes[i];
    Copy& host = o->copy(TierId::kHost);
    o->copy(TierId::kSsd).in_flight = false;
    DropReader(o, TierId::kHost);
    --o->pins;
    demoting_bytes_ -= host.range.reserved;
    if (!items[i].status.ok()) {
      ++counters_.demotion_failures;
      spdlog::warn("demotion of '{}' failed: {}", o->key, items[i].status.ToString());
    } else if (o->retired) {
      ssd_->Free(items[i].dst);
    } else {
      AddCopy(o, TierId::kSsd, items[i].dst, items[i].dst_codec, items[i].dst_rel_rmse);
      ++counters_.demotions;
      counters_.demoted_bytes += o->nbytes;
      if (!host.held() && host.present) {
        moved += host.range.reserved;
        DropCopy(o, TierId::kHost, policy::RemovalReason::kDemoted, frees);
      }
    }
    MaybeFreeRetired(o, frees);
  }
  return moved;
}

bool Store::HasCopyBelowGpu(const Object& o) const {
  return o.copy(TierId::kHost).present ||
         (o.copy(TierId::kSsd).present && ssd_ != nullptr && !ssd_->degraded());
}

bool Store::HostHasRoomFor(const Object& o) const {
  auto pools = host_->pools().Candidates(o.nbytes, o.pool_class, o.tenant);
  if (!pools.ok()) return false;
  for (uint32_t p : *pools) {
    const memory::Allocator& alloc = *host_->pools()[p].allocator;
    if (alloc.Stats().largest_free_bytes >= alloc.Reserved(o.nbytes)) return true;
  }
  return false;
}

uint64_t Store::StartGpuDemotions(std::span<Object* const> chosen, std::vector<Booked>* downs,
                                  Frees* frees) {
  uint64_t freed = 0;
  for (Object* o : chosen) {
    const uint64_t reserved = o->copy(TierId::kGpu).range.reserved;
    if (HasCopyBelowGpu(*o)) {  // another copy exists: just drop this one
      ++counters_.gpu_demotions;
      DropCopy(o, TierId::kGpu, policy::RemovalReason::kDemoted, frees);
      freed += reserved;
      continue;
    }
    // A Get for a host copy finds this one in flight and waits for it.
    auto booked = Book(0, o, TierId::kHost, -1);
    if (!booked.ok()) {
      if (o->durability == Durability::kCache) {
        ++counters_.gpu_evictions;
        ++counters_.evictions;
        counters_.evicted_bytes += o->nbytes;
        spdlog::debug("evicting CACHE tensor '{}' from the GPU: no host room", o->key);
        Retire(o, policy::RemovalReason::kEvicted, frees);
        freed += reserved;
      }  // a DURABLE tensor stays on the GPU until the host tier has room again
      continue;
    }
    downs->push_back(*std::move(booked));
  }
  return freed;
}

uint64_t Store::FinishGpuDemotions(std::span<Booked> downs, Frees* frees) {
  if (downs.empty()) return 0;
  RunBooked(downs, TierId::kHost);  // one batch per device
  uint64_t freed = 0;
  absl::MutexLock lock(&mu_);
  for (Booked& d : downs) {
    Object* o = d.o;
    Copy& host = o->copy(TierId::kHost);
    host.in_flight = false;
    DropReader(o, TierId::kGpu);
    --o->pins;
    if (!d.item.status.ok() || o->retired) {
      if (!d.item.status.ok()) {
        ++counters_.gpu_copy_failures;
        spdlog::error("demoting '{}' from the GPU failed: {}", o->key, d.item.status.ToString());
      }
      host.range = tiers::Range{};
      FreeRange(TierId::kHost, d.item.dst, frees);
    } else {
      AddCopy(o, TierId::kHost, d.item.dst, codec::CodecId::kNone);
      ++counters_.gpu_demotions;
      counters_.gpu_demoted_bytes += o->nbytes;
      const Copy& gpu = o->copy(TierId::kGpu);
      if (gpu.present && !gpu.held()) {
        freed += gpu.range.reserved;
        DropCopy(o, TierId::kGpu, policy::RemovalReason::kDemoted, frees);
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
  std::vector<Booked> downs;
  Frees frees;
  uint64_t freed = 0;
  {
    absl::MutexLock lock(&mu_);
    std::vector<Object*> chosen;  // chosen first: demotion edits the policy
    PolicyOf(TierId::kGpu)->Victims(policy::Demand{pools, want}, [&](policy::Handle h) {
      Object* o = ObjectOf(h);
      if (chosen.size() >= kMaxGpuDemotionsPerRound) return Verdict::kStop;
      if (o->copy(TierId::kHost).in_flight) return Verdict::kSkip;
      if (o->durability == Durability::kDurable && !HasCopyBelowGpu(*o) && !HostHasRoomFor(*o)) {
        return Verdict::kSkip;  // it would stay: do not let it stand in for tensors that can move
      }
      chosen.push_back(o);
      return Verdict::kTake;
    });
    freed = StartGpuDemotions(chosen, &downs, &frees);
  }
  freed += FinishGpuDemotions(downs, &frees);
  Reclaim(std::move(frees), /*now=*/true);
  return freed;
}

uint64_t Store::DemoteGpuOnce() {
  if (gpu_ == nullptr) return 0;
  // Per pool: above the high watermark, down to low.
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
    stop->WaitForNotificationWithTimeout(kIdleTick);
  }
}

void Store::EvictAsync(absl::string_view ns, absl::string_view key, EvictDone done) {
  mover_.Submit([this, ns = std::string(ns), key = std::string(key),
                 done = std::move(done)]() mutable { std::move(done)(Evict(ns, key)); });
}

absl::StatusOr<std::string> Store::EvictHost(Object* o, Frees* frees, bool* wrote) {
  const Copy& host = o->copy(TierId::kHost);
  if (!host.present) return std::string("already on SSD only");
  if (host.held() || o->copy(TierId::kSsd).in_flight) {
    return absl::FailedPreconditionError(
        absl::StrCat("'", o->key, "' is leased (", host.leases, "); it stays until released"));
  }
  const bool writes = !o->copy(TierId::kSsd).present && !DropsWithoutWrite(*o);
  absl::Status quota = absl::OkStatus();  // its tenant's swap quota, for a copy to write
  if (ssd_ != nullptr && !ssd_->degraded() && writes) {
    quota = QuotaAllows(o->tenant, TierId::kSsd, o->nbytes, o->durability != Durability::kCache);
  }
  if (ssd_ != nullptr && !ssd_->degraded() && quota.ok()) {
    std::string outcome = o->copy(TierId::kSsd).present
                              ? "demoted to SSD (its SSD copy was current)"
                              : "demoted to SSD";
    Object* const chosen[] = {o};
    StartDemotions(chosen, frees);
    *wrote = true;
    return outcome;
  }
  if (o->durability == Durability::kCache && o->copy(TierId::kRemote).present &&
      remote_->Healthy()) {
    ++counters_.remote_demotions;
    DropCopy(o, TierId::kHost, policy::RemovalReason::kDemoted, frees);
    return std::string("left to the remote tier (its Redis copy is current)");
  }
  if (o->durability == Durability::kCache) {
    ++counters_.evictions;
    counters_.evicted_bytes += o->nbytes;
    Retire(o, policy::RemovalReason::kEvicted, frees);
    return std::string("dropped (CACHE)");
  }
  if (!quota.ok()) return quota;
  return absl::FailedPreconditionError(
      absl::StrCat("'", o->key, "' is DURABLE and there is no usable SSD tier to demote it to"));
}

absl::StatusOr<std::string> Store::Evict(absl::string_view ns, absl::string_view key) {
  if (auto st = ValidateNamespace(ns); !st.ok()) return st;
  if (auto st = ValidateKey(key); !st.ok()) return st;
  Frees frees;
  absl::StatusOr<std::string> outcome;
  bool wrote = false, on_gpu = false;
  {
    absl::MutexLock lock(&mu_);
    Object* o = table_.Find(ns, key);
    if (o == nullptr) return absl::NotFoundError(absl::StrCat("no tensor '", key, "'"));
    if (!o->sealed) {
      return absl::FailedPreconditionError(absl::StrCat("'", key, "' is not sealed yet"));
    }
    on_gpu = o->copy(TierId::kGpu).present;
    if (!on_gpu) outcome = EvictHost(o, &frees, &wrote);
  }
  if (on_gpu) return EvictFromGpu(ns, key);  // its GPU copy goes one tier down
  if (wrote) FinishDemotions(&frees);
  Reclaim(std::move(frees), /*now=*/true);
  if (!outcome.ok() || !wrote) return outcome;
  absl::MutexLock lock(&mu_);
  const Object* o = table_.Find(ns, key);
  if (o != nullptr && o->copy(TierId::kHost).present && !o->copy(TierId::kSsd).present &&
      !o->copy(TierId::kSsd).in_flight) {  // in flight: the migrator took the write over
    return absl::UnavailableError(absl::StrCat("'", key, "' could not be written to SSD"));
  }
  return outcome;
}

absl::StatusOr<std::string> Store::EvictFromGpu(absl::string_view ns, absl::string_view key) {
  std::vector<Booked> downs;
  Frees frees;
  std::string outcome;
  {
    absl::MutexLock lock(&mu_);
    Object* o = table_.Find(ns, key);
    if (o == nullptr) return absl::NotFoundError(absl::StrCat("no tensor '", key, "'"));
    if (!o->sealed) {  // deleted and created again since Evict looked
      return absl::FailedPreconditionError(absl::StrCat("'", key, "' is not sealed yet"));
    }
    const Copy& gpu = o->copy(TierId::kGpu);
    if (!gpu.present)
      return absl::FailedPreconditionError(absl::StrCat("'", key, "' left the GPU"));
    if (gpu.held() || o->copy(TierId::kHost).in_flight) {
      return absl::FailedPreconditionError(absl::StrCat("'", key, "' is leased on the GPU (",
                                                        gpu.leases, "); it stays until released"));
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
  Reclaim(std::move(frees), /*now=*/true);
  absl::MutexLock lock(&mu_);
  const Object* o = table_.Find(ns, key);
  if (o != nullptr && !downs.empty() && !o->copy(TierId::kHost).present) {
    return absl::UnavailableError(absl::StrCat("'", key, "' could not be copied off the GPU"));
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
    PumpLookAhead();  // expires stale hints; moves the window on
    // System pressure is read whatever tiers exist: operators query it over GetStats and
    // Prometheus even when there is nothing to demote to.
    if (absl::Now() - last_read >= kPressureReadEvery) {
      ReadPressure();
      last_read = absl::Now();
    }
    if (ssd_ != nullptr && absl::Now() - last_probe >= options_.swap_probe_interval) {
      last_probe = absl::Now();
      if (ssd_->degraded()) ssd_->Probe();
    }
    if (ssd_ == nullptr && remote_ == nullptr) {  // nothing to demote to
      stop->WaitForNotificationWithTimeout(kPressureReadEvery);
      continue;
    }
    // Without a usable SSD tier the remote tier is the one below host memory.
    if (ssd_ == nullptr || ssd_->degraded() ? remote_ != nullptr && DemoteToRemote() > 0
                                            : DemoteOnce() > 0) {
      continue;
    }
    absl::MutexLock lock(&mu_);
    auto wanted = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return migrate_now_; };
    mu_.AwaitWithTimeout(absl::Condition(&wanted), kIdleTick);
  }
}

}  // namespace tensord::store
