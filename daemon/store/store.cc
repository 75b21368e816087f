// Object store implementation. Every public method takes mu_ once for its bookkeeping; the only
// work done outside it is zeroing freed memory (Reclaim), which can take milliseconds.
#include "daemon/store/store.h"

#include <algorithm>
#include <chrono>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/random.h"
#include "daemon/store/validation.h"
#include "spdlog/spdlog.h"

namespace tensord::store {
namespace {

constexpr int kMaxEvictionRounds = 64;

absl::Status UnknownSession() {
  return absl::FailedPreconditionError("unknown or closed session; Attach first");
}

}  // namespace

Store::Store(tiers::HostTier* host, StoreOptions options, tiers::SsdTier* ssd, tiers::GpuTier* gpu)
    : host_(host),
      ssd_(ssd),
      gpu_(gpu),
      options_(options),
      eviction_(std::make_unique<policy::LruPolicy>()),
      gpu_eviction_(std::make_unique<policy::LruPolicy>()),
      system_(options_.read_pressure ? options_.read_pressure() : tiers::ReadSystemPressure()) {}

Store::~Store() = default;

std::string Store::TableKey(absl::string_view ns, absl::string_view key) {
  // Keys never contain NUL (validated), so this concatenation is unambiguous.
  return absl::StrCat(ns, absl::string_view("\0", 1), key);
}

Store::Session* Store::FindSession(const std::string& id) {
  auto it = sessions_.find(id);
  return it == sessions_.end() ? nullptr : it->second.get();
}

Store::Object* Store::FindObject(absl::string_view ns, absl::string_view key) {
  auto it = objects_.find(TableKey(ns, key));
  if (it == objects_.end() || Expired(*it->second)) return nullptr;
  return it->second.get();
}

int64_t Store::NowUnixMs() const {
  return (options_.clock != nullptr ? options_.clock : Clock::Real())->NowUnixMs();
}

bool Store::Expired(const Object& o) const {
  // Expired tensors stay in the table until ExpireLocked retires them, but are never served.
  return o.expiring && o.expiry_it->first <= NowUnixMs();
}

TensorInfo Store::Info(const Object& o) const {
  TensorInfo info;
  info.ns = o.ns;
  info.key = o.key;
  info.dtype = o.dtype;
  info.shape = o.shape;
  info.nbytes = o.nbytes;
  info.pool = o.on_host || !o.gpu ? host_->pools()[o.pool].name : gpu_->pools()[o.gpu->pool].name;
  info.durability = o.durability;
  info.scope = o.scope;
  info.sealed = o.sealed;
  if (o.on_host) {
    info.location = Location{WantTier::kHost, host_->pools()[o.pool].arena, o.offset, o.nbytes};
  } else if (o.gpu) {
    info.location = GpuLocation(o);
  } else {
    info.location = Location{WantTier::kSsd, 0, 0, o.nbytes};
  }
  info.on_gpu = o.gpu.has_value();
  if (o.gpu) info.gpu_location = GpuLocation(o);
  info.leases = o.leases + o.gpu_leases;
  info.created_unix_ms = o.created_unix_ms;
  info.ttl_ms = o.ttl_ms;
  info.on_host = o.on_host;
  info.on_ssd = o.ssd.has_value();
  return info;
}

absl::StatusOr<std::string> Store::OpenSession(absl::string_view client_name) {
  if (auto st = ValidateClientName(client_name); !st.ok()) return st;
  auto session = std::make_unique<Session>();
  session->id = RandomHex(16);
  session->name = std::string(client_name);
  std::string id = session->id;
  absl::MutexLock lock(&mu_);
  if (sessions_.size() >= options_.max_sessions) {
    return absl::ResourceExhaustedError(
        absl::StrCat("the daemon already has ", sessions_.size(), " sessions, its maximum"));
  }
  ++counters_.sessions_opened;
  spdlog::debug("session {} opened by '{}'", id.substr(0, 8), session->name);
  sessions_.emplace(id, std::move(session));
  return id;
}

void Store::CloseSession(const std::string& session_id) {
  std::vector<PendingFree> frees;
  {
    absl::MutexLock lock(&mu_);
    Session* s = FindSession(session_id);
    if (s == nullptr) return;
    const size_t leases = s->leases.size(), creating = s->creating.size();
    const size_t scoped = s->scoped.size();
    for (uint64_t lease : std::vector<uint64_t>(s->leases.begin(), s->leases.end())) {
      DropLease(lease, &frees);
    }
    for (Object* o : std::vector<Object*>(s->creating.begin(), s->creating.end())) {
      ++counters_.aborts;
      Retire(o, &frees);
    }
    for (Object* o : std::vector<Object*>(s->scoped.begin(), s->scoped.end())) Retire(o, &frees);
    ++counters_.sessions_closed;
    spdlog::info(
        "session {} ('{}') closed: {} leases released, {} creates aborted, {} "
        "session tensors freed",
        session_id.substr(0, 8), s->name, leases, creating, scoped);
    sessions_.erase(session_id);
  }
  Reclaim(frees);
}

absl::StatusOr<TensorInfo> Store::TryAllocate(Session* s, const CreateParams& params,
                                              uint64_t nbytes, std::span<const uint32_t> pools) {
  const bool on_gpu = params.tier == WantTier::kGpu;
  std::optional<Object::GpuCopy> gpu_copy;
  absl::StatusOr<std::pair<uint32_t, uint64_t>> where;
  if (on_gpu) {
    auto copy = AllocateGpu(pools, nbytes);
    if (!copy.ok()) return copy.status();
    gpu_copy = *copy;
    // The host pool its copy will go to when it is demoted (0 if no pool can ever hold it).
    auto home = host_->pools().Candidates(nbytes, "");
    where = std::make_pair(home.ok() ? (*home)[0] : 0u, uint64_t{0});
  } else {
    where = AllocateHost(pools, nbytes);
  }
  if (where.ok()) {
    const auto [pool, offset] = *where;
    memory::Allocator& alloc = *host_->pools()[pool].allocator;
    auto o = std::make_unique<Object>();
    o->on_host = !on_gpu;
    o->gpu = gpu_copy;
    o->ns = params.ns;
    o->key = params.key;
    o->dtype = params.dtype;
    o->shape = params.shape;
    o->nbytes = nbytes;
    o->pool = pool;
    o->offset = offset;
    o->reserved = on_gpu ? 0 : alloc.Reserved(nbytes);
    o->durability = params.durability;
    o->scope = params.scope;
    o->owner = s;
    o->ttl_ms = params.ttl_ms;
    o->created_unix_ms = NowUnixMs();
    TensorInfo info = Info(*o);
    Object* raw = o.get();
    if (!objects_.try_emplace(TableKey(params.ns, params.key), std::move(o)).second) {
      // CreateLocked checked the key: not reached
      if (on_gpu) {
        gpu_->pools()[gpu_copy->pool].allocator->Free(gpu_copy->offset).IgnoreError();
      } else {
        alloc.Free(offset).IgnoreError();
      }
      return absl::InternalError(absl::StrCat("key '", params.key, "' appeared during Create"));
    }
    s->creating.insert(raw);
    ++counters_.creates;
    if (on_gpu) ++counters_.gpu_creates;
    counters_.bytes_created += nbytes;
    return info;
  }
  return where.status();
}

absl::StatusOr<std::pair<uint32_t, uint64_t>> Store::AllocateHost(std::span<const uint32_t> pools,
                                                                  uint64_t nbytes) {
  for (uint32_t pool : pools) {
    auto offset = host_->pools()[pool].allocator->Allocate(nbytes);
    if (offset.ok()) return std::make_pair(pool, *offset);
  }
  return absl::ResourceExhaustedError("no free range");
}

bool Store::SelectVictims(std::span<const uint32_t> pools, uint64_t nbytes,
                          std::vector<PendingFree>* frees) {
  // Bytes each candidate pool would have after the victims so far: enough in one pool ends
  // the selection. For the general pool this is an estimate (freed ranges may not be adjacent);
  // the caller retries and selects more if the allocation still fails.
  absl::flat_hash_map<uint32_t, uint64_t> gained;
  std::vector<Object*> victims;  // collected first: Retire edits the policy
  ForEachVictim([&](Object* o) {
    // Unleased CACHE tensors, and host copies of tensors the GPU also holds.
    if ((o->durability == Durability::kCache || o->gpu) && o->leases == 0 && o->pins == 0 &&
        std::find(pools.begin(), pools.end(), o->pool) != pools.end()) {
      victims.push_back(o);
    }
    return true;
  });
  for (Object* o : victims) {
    const memory::Allocator& alloc = *host_->pools()[o->pool].allocator;
    const uint64_t need = alloc.Reserved(nbytes);
    const uint64_t largest = alloc.Stats().largest_free_bytes;
    spdlog::debug("making room: '{}' ({} bytes) leaves the host tier", o->key, o->nbytes);
    const uint32_t pool = o->pool;
    gained[pool] += o->reserved;
    if (o->gpu) {
      DropHostCopy(o, frees);  // it lives on in its GPU copy
    } else {
      ++counters_.evictions;
      counters_.evicted_bytes += o->nbytes;
      Retire(o, frees);
    }
    if (std::max(largest, gained[pool]) >= need) return true;
  }
  return !frees->empty();
}

absl::StatusOr<TensorInfo> Store::Create(const std::string& session_id, const CreateParams& params,
                                         absl::Time deadline) {
  deadline = Clamp(deadline);
  auto nbytes = ValidateCreate(params);
  if (!nbytes.ok()) {
    absl::MutexLock lock(&mu_);
    ++counters_.rejected_requests;
    return nbytes.status();
  }
  for (int round = 0; round < kMaxEvictionRounds || absl::Now() < deadline; ++round) {
    std::vector<PendingFree> frees;
    bool retry = false;
    uint64_t gpu_room = 0;
    absl::StatusOr<TensorInfo> result;
    {
      absl::MutexLock lock(&mu_);
      result = CreateLocked(session_id, params, *nbytes, deadline, &frees, &retry, &gpu_room);
    }
    Reclaim(frees);  // evicted or expired tensors: zeroed, then free for the next round
    if (gpu_room > 0 && DemoteGpu(params.device, gpu_room) == 0) {
      absl::MutexLock lock(&mu_);
      ++counters_.create_failures;
      return absl::ResourceExhaustedError(absl::StrCat(
          "no GPU room for ", *nbytes,
          " bytes: the rest is held by leased or unsealed tensors, or cannot move to host"));
    }
    if (!retry) return result;
  }
  return absl::ResourceExhaustedError("no room after repeated eviction (heavy contention)");
}

absl::StatusOr<TensorInfo> Store::CreateLocked(const std::string& session_id,
                                               const CreateParams& params, uint64_t nbytes,
                                               absl::Time deadline, std::vector<PendingFree>* frees,
                                               bool* retry, uint64_t* gpu_room) {
  Session* s = FindSession(session_id);
  if (s == nullptr) return UnknownSession();
  ExpireLocked(frees);  // an expired tensor frees its key and its memory
  // Looked up directly, not through FindObject (which hides expired tensors): one that expired
  // after ExpireLocked read the clock still holds the key, and is retired here.
  if (auto it = objects_.find(TableKey(params.ns, params.key)); it != objects_.end()) {
    if (!Expired(*it->second)) {
      ++counters_.create_failures;
      return absl::AlreadyExistsError(absl::StrCat("key '", params.key, "' exists"));
    }
    ++counters_.expirations;
    Retire(it->second.get(), frees);
  }
  if (params.tier == WantTier::kGpu) {
    if (gpu_ == nullptr) {
      ++counters_.rejected_requests;
      return absl::FailedPreconditionError("the GPU tier is not present in this daemon");
    }
    auto pools = gpu_->Candidates(nbytes, params.device, params.pool);
    if (!pools.ok()) {
      ++counters_.rejected_requests;
      return pools.status();
    }
    if (frees->empty()) {  // else expiry freed ranges: retry once they are back
      auto info = TryAllocate(s, params, nbytes, *pools);
      if (info.ok() || info.status().code() != absl::StatusCode::kResourceExhausted) return info;
      *gpu_room = nbytes;  // the caller demotes GPU tensors to host, then retries
    }
    *retry = true;
    return absl::UnavailableError("retry");
  }
  auto pools = host_->pools().Candidates(nbytes, params.pool);
  if (!pools.ok()) {
    ++counters_.rejected_requests;
    return pools.status();
  }
  if (frees->empty()) {
    auto info = TryAllocate(s, params, nbytes, *pools);
    if (info.ok()) return info;
  }
  if (!frees->empty() || MakeRoom(*pools, nbytes, deadline, frees)) {
    *retry = true;
    return absl::UnavailableError("retry");
  }
  ++counters_.create_failures;
  return absl::ResourceExhaustedError(
      absl::StrCat("no room for ", nbytes, " bytes in pool '", host_->pools()[(*pools)[0]].name,
                   "': the rest is held by DURABLE, leased or unsealed tensors"));
}

absl::Status Store::Seal(const std::string& session_id, absl::string_view ns, absl::string_view key,
                         const std::string& cuda_event, absl::Time deadline) {
  if (auto st = ValidateNamespace(ns); !st.ok()) return st;
  if (auto st = ValidateKey(key); !st.ok()) return st;
  if (!cuda_event.empty()) {
    // Wait, without the lock, until the client's writes to the GPU copy are complete.
    Object* waited = nullptr;
    tiers::GpuDevice* device = nullptr;
    {
      absl::MutexLock lock(&mu_);
      Session* s = FindSession(session_id);
      if (s == nullptr) return UnknownSession();
      waited = FindObject(ns, key);
      if (waited == nullptr) return absl::NotFoundError(absl::StrCat("no tensor '", key, "'"));
      // The same codes, in the same order, as a Seal without an event (SealLocked).
      if (waited->sealed) {
        return absl::FailedPreconditionError(absl::StrCat("'", key, "' is already sealed"));
      }
      if (waited->owner != s) {
        return absl::PermissionDeniedError(absl::StrCat("'", key, "' is another session's create"));
      }
      if (!waited->gpu) {
        return absl::InvalidArgumentError(
            absl::StrCat("a CUDA event is only for sealing a GPU tensor; '", key, "' is on host"));
      }
      device = &gpu_->device(gpu_->pools()[waited->gpu->pool].arena);
      ++waited->pins;
    }
    absl::Status st = device->WaitEvent(cuda_event, Clamp(deadline));
    std::vector<PendingFree> frees;
    {
      absl::MutexLock lock(&mu_);
      --waited->pins;
      if (st.ok()) st = SealLocked(session_id, ns, key, waited);
      MaybeFreeRetired(waited, &frees);  // aborted during the wait: freed now
    }
    Reclaim(frees);
    return st;
  }
  absl::MutexLock lock(&mu_);
  return SealLocked(session_id, ns, key, nullptr);
}

absl::Status Store::SealLocked(const std::string& session_id, absl::string_view ns,
                               absl::string_view key, Object* expected) {
  Session* s = FindSession(session_id);
  if (s == nullptr) return UnknownSession();
  Object* o = FindObject(ns, key);
  if (o == nullptr || (expected != nullptr && o != expected)) {
    return absl::NotFoundError(absl::StrCat("no tensor '", key, "' (aborted during its Seal?)"));
  }
  if (o->sealed)
    return absl::FailedPreconditionError(absl::StrCat("'", key, "' is already sealed"));
  if (o->owner != s) {
    return absl::PermissionDeniedError(absl::StrCat("'", key, "' is another session's create"));
  }
  o->sealed = true;
  s->creating.erase(o);
  if (o->scope == Scope::kSession) {
    s->scoped.insert(o);
  } else {
    o->owner = nullptr;
  }
  if (o->on_host) eviction_->Insert(HandleOf(o));
  if (o->gpu) gpu_eviction_->Insert(HandleOf(o));
  if (o->ttl_ms > 0) {
    o->expiry_it = expiries_.emplace(NowUnixMs() + o->ttl_ms, o);
    o->expiring = true;
  }
  ++counters_.seals;
  return absl::OkStatus();
}

absl::Status Store::Abort(const std::string& session_id, absl::string_view ns,
                          absl::string_view key) {
  if (auto st = ValidateNamespace(ns); !st.ok()) return st;
  if (auto st = ValidateKey(key); !st.ok()) return st;
  std::vector<PendingFree> frees;
  {
    absl::MutexLock lock(&mu_);
    Session* s = FindSession(session_id);
    if (s == nullptr) return UnknownSession();
    Object* o = FindObject(ns, key);
    if (o == nullptr) return absl::NotFoundError(absl::StrCat("no tensor '", key, "'"));
    if (o->sealed) {
      return absl::FailedPreconditionError(absl::StrCat("'", key, "' is sealed; Delete it"));
    }
    if (o->owner != s) {
      return absl::PermissionDeniedError(absl::StrCat("'", key, "' is another session's create"));
    }
    ++counters_.aborts;
    Retire(o, &frees);
  }
  Reclaim(frees);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<GetOutcome>> Store::Get(const std::string& session_id,
                                                   absl::string_view ns,
                                                   std::span<const std::string> keys, WantTier want,
                                                   absl::Time deadline, int device) {
  if (keys.empty() || keys.size() > kMaxBatchKeys) {
    return absl::InvalidArgumentError(
        absl::StrCat("a Get names 1 to ", kMaxBatchKeys, " keys, not ", keys.size()));
  }
  if (auto st = ValidateNamespace(ns); !st.ok()) return st;
  switch (want) {
    case WantTier::kAny:
    case WantTier::kHost:
      break;
    case WantTier::kGpu:
      if (gpu_ == nullptr) {
        return absl::FailedPreconditionError(
            "the GPU tier is not present in this daemon (no usable GPU, or gpu.mode is off)");
      }
      if (device < -1 || (device >= 0 && gpu_->PoolsOn(device).empty())) {
        return absl::InvalidArgumentError(absl::StrCat("the daemon has no arena on GPU ", device));
      }
      break;
    default:
      return absl::InvalidArgumentError("leases are granted on the HOST or GPU tier only");
  }
  std::vector<GetOutcome> out(keys.size());
  std::vector<size_t> promote, to_gpu;
  {
    absl::MutexLock lock(&mu_);
    Session* s = FindSession(session_id);
    if (s == nullptr) return UnknownSession();
    ++counters_.gets;
    if (want == WantTier::kGpu) ++counters_.gpu_gets;
    for (size_t i = 0; i < keys.size(); ++i) {
      GetOutcome& r = out[i];
      r.status = ValidateKey(keys[i]);
      if (!r.status.ok()) continue;
      Object* o = FindObject(ns, keys[i]);
      if (o == nullptr) {
        ++counters_.get_misses;
        r.status = absl::NotFoundError(absl::StrCat("no tensor '", keys[i], "'"));
        continue;
      }
      if (!o->sealed) {
        r.status = absl::FailedPreconditionError(absl::StrCat("'", keys[i], "' is not sealed yet"));
        continue;
      }
      if (s->leases.size() >= options_.max_leases_per_session) {
        r.status = absl::ResourceExhaustedError(
            absl::StrCat("session holds ", s->leases.size(), " leases, the maximum; Release some"));
        continue;
      }
      if (want == WantTier::kGpu) {
        if (o->gpu) {
          ++counters_.gpu_hits;
          GrantLease(s, o, &r, /*gpu=*/true);
        } else {
          ++counters_.gpu_misses;
          to_gpu.push_back(i);  // copied up after this pass, without the lock
        }
        continue;
      }
      if (!o->on_host && want == WantTier::kAny && o->gpu) {
        ++counters_.gpu_hits;
        GrantLease(s, o, &r, /*gpu=*/true);
        continue;
      }
      if (!o->on_host) {
        promote.push_back(i);  // after this pass, without holding the lock during the read
        continue;
      }
      ++counters_.get_hits;
      GrantLease(s, o, &r);
    }
  }
  deadline = Clamp(deadline);
  if (!promote.empty()) PromoteMany(session_id, ns, keys, promote, deadline, &out);
  if (!to_gpu.empty()) CopyUpMany(session_id, ns, keys, to_gpu, device, deadline, &out);
  return out;
}

void Store::GrantLease(Session* s, Object* o, GetOutcome* r, bool gpu) {
  ++counters_.leases_granted;
  if (gpu) {
    if (o->gpu_leases++ == 0) gpu_pinned_bytes_ += o->gpu->reserved;
    gpu_eviction_->Access(HandleOf(o));
  } else {
    if (o->leases++ == 0) pinned_bytes_ += o->reserved;
    eviction_->Access(HandleOf(o));
  }
  r->lease_id = next_lease_id_++;
  leases_.emplace(r->lease_id, LeaseEntry{s, o, gpu});
  s->leases.insert(r->lease_id);
  r->info = Info(*o);
  if (gpu) {
    r->info.location = GpuLocation(*o);
    r->info.pool = gpu_->pools()[o->gpu->pool].name;
  } else {
    r->info.location =
        Location{WantTier::kHost, host_->pools()[o->pool].arena, o->offset, o->nbytes};
    r->info.pool = host_->pools()[o->pool].name;
  }
}

absl::Status Store::Release(const std::string& session_id, std::span<const uint64_t> lease_ids) {
  if (lease_ids.empty() || lease_ids.size() > kMaxBatchKeys) {
    return absl::InvalidArgumentError(
        absl::StrCat("a Release names 1 to ", kMaxBatchKeys, " leases, not ", lease_ids.size()));
  }
  std::vector<PendingFree> frees;
  {
    absl::MutexLock lock(&mu_);
    Session* s = FindSession(session_id);
    if (s == nullptr) return UnknownSession();
    absl::flat_hash_set<uint64_t> seen;
    for (uint64_t id : lease_ids) {
      if (!seen.insert(id).second) {
        return absl::InvalidArgumentError(absl::StrCat("lease ", id, " is listed twice"));
      }
      if (!s->leases.contains(id)) {
        return absl::NotFoundError(absl::StrCat("lease ", id, " is not held by this session"));
      }
    }
    for (uint64_t id : lease_ids) DropLease(id, &frees);
  }
  Reclaim(frees);
  return absl::OkStatus();
}

absl::Status Store::Delete(const std::string& session_id, absl::string_view ns,
                           absl::string_view key) {
  if (auto st = ValidateNamespace(ns); !st.ok()) return st;
  if (auto st = ValidateKey(key); !st.ok()) return st;
  std::vector<PendingFree> frees;
  {
    absl::MutexLock lock(&mu_);
    if (FindSession(session_id) == nullptr) return UnknownSession();
    Object* o = FindObject(ns, key);
    if (o == nullptr) return absl::NotFoundError(absl::StrCat("no tensor '", key, "'"));
    if (!o->sealed) {
      return absl::FailedPreconditionError(
          absl::StrCat("'", key, "' is not sealed; its creator may Abort it"));
    }
    ++counters_.deletes;
    Retire(o, &frees);
  }
  Reclaim(frees);
  return absl::OkStatus();
}

absl::StatusOr<TensorInfo> Store::Stat(absl::string_view ns, absl::string_view key) {
  if (auto st = ValidateNamespace(ns); !st.ok()) return st;
  if (auto st = ValidateKey(key); !st.ok()) return st;
  absl::MutexLock lock(&mu_);
  Object* o = FindObject(ns, key);
  if (o == nullptr) return absl::NotFoundError(absl::StrCat("no tensor '", key, "'"));
  return Info(*o);
}

absl::StatusOr<ListResult> Store::List(absl::string_view ns, absl::string_view prefix,
                                       uint32_t limit) {
  if (auto st = ValidateNamespace(ns); !st.ok()) return st;
  if (prefix.size() > kMaxKeyBytes) return absl::InvalidArgumentError("prefix is too long");
  if (limit == 0) limit = 1000;
  if (limit > 10000) return absl::InvalidArgumentError("limit is at most 10000");
  ListResult out;
  absl::MutexLock lock(&mu_);
  for (const auto& [id, o] : objects_) {
    if (o->ns == ns && absl::StartsWith(o->key, prefix) && !Expired(*o)) {
      out.tensors.push_back(Info(*o));
    }
  }
  std::sort(out.tensors.begin(), out.tensors.end(),
            [](const TensorInfo& a, const TensorInfo& b) { return a.key < b.key; });
  if (out.tensors.size() > limit) {
    out.tensors.resize(limit);
    out.truncated = true;
  }
  return out;
}

StoreStats Store::Stats() {
  StoreStats st;
  if (gpu_ != nullptr) {  // the driver's view, read without the lock
    for (const tiers::GpuArena& a : gpu_->arenas()) {
      GpuDeviceStats g{a.name, gpu_->device(a.id).name(), a.id, a.size};
      if (auto mem = gpu_->device(a.id).MemInfo(); mem.ok()) {
        std::tie(g.device_free_bytes, g.device_total_bytes) = *mem;
      }
      st.gpus.push_back(std::move(g));
    }
    st.gpu_host_pinned = gpu_->host_pinned();
  }
  absl::MutexLock lock(&mu_);
  st.counters = counters_;
  const memory::PoolSet& pools = host_->pools();
  for (uint32_t i = 0; i < pools.size(); ++i) {
    st.pools.push_back(
        {pools[i].name, false, pools[i].arena, pools[i].fixed, pools[i].allocator->Stats()});
    st.used_bytes += st.pools.back().stats.used_bytes;
    st.capacity_bytes += st.pools.back().stats.capacity_bytes;
  }
  st.pinned_bytes = pinned_bytes_;
  if (gpu_ != nullptr) {
    st.gpu_present = true;
    for (uint32_t i = 0; i < gpu_->pools().size(); ++i) {
      const memory::Pool& p = gpu_->pools()[i];
      PoolStatsEntry e{p.name, true, p.arena, p.fixed, p.allocator->Stats()};
      st.gpu_used_bytes += e.stats.used_bytes;
      st.gpu_capacity_bytes += e.stats.capacity_bytes;
      st.gpus[p.arena].used_bytes += e.stats.used_bytes;
      st.pools.push_back(std::move(e));
    }
    st.gpu_pinned_bytes = gpu_pinned_bytes_;
    st.gpu_high_watermark = options_.gpu_high_watermark;
    st.gpu_low_watermark = options_.gpu_low_watermark;
  }
  st.ssd_present = ssd_ != nullptr;
  if (ssd_ != nullptr) st.ssd = ssd_->Stats();
  st.system = system_;
  st.high_watermark = options_.high_watermark;
  st.low_watermark = options_.low_watermark;
  st.sessions = sessions_.size();
  st.leases = leases_.size();
  st.objects = objects_.size() + retired_.size();
  return st;
}

void Store::Retire(Object* o, std::vector<PendingFree>* frees) {
  eviction_->Remove(HandleOf(o));
  gpu_eviction_->Remove(HandleOf(o));
  if (o->expiring) {
    expiries_.erase(o->expiry_it);
    o->expiring = false;
  }
  if (o->owner != nullptr) {
    o->owner->creating.erase(o);
    o->owner->scoped.erase(o);
    o->owner = nullptr;
  }
  auto node = objects_.extract(TableKey(o->ns, o->key));
  o->retired = true;
  if (!Held(*o)) {
    FreeObject(o, frees);
  } else {
    retired_.emplace(o, std::move(node.mapped()));
  }
}

void Store::ExpireLocked(std::vector<PendingFree>* frees) {
  const int64_t now = NowUnixMs();
  while (!expiries_.empty() && expiries_.begin()->first <= now) {
    ++counters_.expirations;
    Retire(expiries_.begin()->second, frees);  // erases the entry
  }
}

size_t Store::ExpireDue() {
  std::vector<PendingFree> frees;
  {
    absl::MutexLock lock(&mu_);
    ExpireLocked(&frees);
  }
  Reclaim(frees);
  return frees.size();
}

void Store::FreeObject(Object* o, std::vector<PendingFree>* frees) {
  if (o->on_host) {
    frees->push_back(PendingFree{o->pool, o->offset, o->reserved});
    reclaiming_bytes_ += o->reserved;
    o->on_host = false;
  }
  if (o->ssd.has_value()) {
    ssd_->Free(*o->ssd);
    o->ssd.reset();
  }
  if (o->gpu) DropGpuCopy(o, frees);
}

void Store::MaybeFreeRetired(Object* o, std::vector<PendingFree>* frees) {
  if (!o->retired || Held(*o)) return;
  FreeObject(o, frees);
  retired_.erase(o);  // deletes o
}

void Store::DropLease(uint64_t lease_id, std::vector<PendingFree>* frees) {
  auto it = leases_.find(lease_id);
  LeaseEntry entry = it->second;
  leases_.erase(it);
  entry.session->leases.erase(lease_id);
  ++counters_.leases_released;
  Object* o = entry.object;
  if (entry.gpu) {
    if (--o->gpu_leases == 0) gpu_pinned_bytes_ -= o->gpu->reserved;
  } else if (--o->leases == 0) {
    pinned_bytes_ -= o->reserved;
  }
  MaybeFreeRetired(o, frees);
}

void Store::Reclaim(const std::vector<PendingFree>& frees) {
  if (frees.empty()) return;
  uint64_t zeroed = 0;
  if (host_->zero_on_free()) {
    for (const PendingFree& f : frees) {
      // No lock: the range belongs to no object and to no free list until returned below.
      if (f.gpu) {
        tiers::GpuDevice& device = gpu_->device(gpu_->pools()[f.pool].arena);
        if (absl::Status st = device.Zero(f.offset, f.reserved); !st.ok()) {
          spdlog::error("zeroing a freed GPU range failed: {}", st.ToString());
        }
      } else {
        std::memset(host_->Address(host_->pools()[f.pool].arena, f.offset), 0, f.reserved);
      }
      zeroed += f.reserved;
    }
  }
  absl::MutexLock lock(&mu_);
  for (const PendingFree& f : frees) {
    memory::PoolSet& pools = f.gpu ? gpu_->pools() : host_->pools();
    absl::Status st = pools[f.pool].allocator->Free(f.offset);
    if (!st.ok()) {
      spdlog::critical("store invariant broken: {}", st.ToString());
      std::abort();
    }
    if (!f.gpu) reclaiming_bytes_ -= f.reserved;
  }
  ++host_frees_;
  counters_.bytes_zeroed += zeroed;
}

}  // namespace tensord::store
