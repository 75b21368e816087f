// The store's façade: sessions, Create/Seal/Abort, Get's fast path, Release, Delete, Stat, List,
// statistics and expiry. Each takes mu_ once for its bookkeeping; what must wait (moves, room)
// goes to the executor (lift.cc, migration.cc), and freed memory to the scrubber (copies.cc).
#include "daemon/store/store.h"

#include <xxh_x86dispatch.h>  // XXH3 with the AVX2 / AVX-512 code this CPU has

#include <algorithm>

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

std::unique_ptr<policy::EvictionPolicy> MakePolicy(const StoreOptions& o, TierId t) {
  if (o.make_policy) return o.make_policy(t);
  policy::PolicyOptions po;
  po.clock = o.clock;
  po.s3fifo_small = o.s3fifo_small;
  auto p = policy::MakeEvictionPolicy(o.eviction, po);
  if (!p.ok()) {
    spdlog::critical("{}", p.status().ToString());  // the configuration validates the name
    std::abort();
  }
  return *std::move(p);
}

// Waits for an asynchronous call's one result.
template <typename T, typename Start>
T Wait(Start start) {
  std::optional<T> result;
  absl::Notification done;
  start([&](T r) {
    result.emplace(std::move(r));
    done.Notify();
  });
  done.WaitForNotification();
  return *std::move(result);
}

}  // namespace

Store::Store(tiers::HostTier* host, StoreOptions options, tiers::SsdTier* ssd, tiers::GpuTier* gpu,
             tiers::RemoteTier* remote)
    : host_(host),
      ssd_(ssd),
      gpu_(gpu),
      remote_(remote),
      tiers_{gpu, host, ssd, remote},
      options_(std::move(options)),
      mover_(tiers_, std::max(1, options_.executor_threads)),
      table_(options_.clock),
      system_(options_.read_pressure ? options_.read_pressure() : tiers::ReadSystemPressure()),
      lookahead_(options_.max_hints),
      predictor_(options_.predictor_keys, options_.max_sessions),
      index_(options_.index) {
  tenant_use_.resize(options_.tenants.size());
  policies_[tiers::Index(TierId::kHost)] = MakePolicy(options_, TierId::kHost);
  // The SSD tier's copies are ranked too: a full SSD lets its coldest CACHE copies go
  // (MakeSsdRoom) rather than refuse demotions.
  if (ssd_ != nullptr) policies_[tiers::Index(TierId::kSsd)] = MakePolicy(options_, TierId::kSsd);
  if (gpu_ != nullptr) policies_[tiers::Index(TierId::kGpu)] = MakePolicy(options_, TierId::kGpu);
}

Store::~Store() { Quiesce(); }

void Store::Quiesce() {
  // Executor work may start room writes, and room writes free ranges: until both are idle.
  do {
    mover_.WaitIdle();
    room_writes_.WaitIdle();
  } while (!mover_.Idle() || !room_writes_.Idle());
}

absl::Time Store::Clamp(absl::Time deadline) const {
  return std::min(deadline, absl::Now() + options_.pressure_wait);
}

absl::StatusOr<std::string> Store::OpenSession(absl::string_view client_name, TenantId tenant) {
  if (auto st = ValidateClientName(client_name); !st.ok()) return st;
  auto session = std::make_unique<Session>();
  session->id = RandomHex(16);
  session->name = std::string(client_name);
  session->tenant = tenant;
  std::string id = session->id;
  absl::MutexLock lock(&mu_);
  if (table_.sessions() >= options_.max_sessions) {
    return absl::ResourceExhaustedError(
        absl::StrCat("the daemon already has ", table_.sessions(), " sessions, its maximum"));
  }
  TenantUse& use = tenant_use_[tenant];
  if (tenant != kNoTenant) {
    const TenantConfig& cfg = options_.tenants.config(tenant);
    if (cfg.max_sessions > 0 && use.sessions >= cfg.max_sessions) {
      ++use.quota_rejections;
      return absl::ResourceExhaustedError(absl::StrCat("tenant '", cfg.name, "' already has ",
                                                       use.sessions, " sessions, its maximum"));
    }
  }
  ++use.sessions;
  ++counters_.sessions_opened;
  spdlog::debug("session {} opened by '{}'", id.substr(0, 8), session->name);
  table_.AddSession(std::move(session));
  return id;
}

void Store::CloseSession(const std::string& session_id) {
  Frees frees;
  {
    absl::MutexLock lock(&mu_);
    Session* s = table_.FindSession(session_id);
    if (s == nullptr) return;
    predictor_.EndStream(reinterpret_cast<uintptr_t>(s));
    const size_t leases = s->leases.size(), creating = s->creating.size();
    const size_t scoped = s->scoped.size();
    for (uint64_t lease : std::vector<uint64_t>(s->leases.begin(), s->leases.end())) {
      DropLease(lease, &frees);
    }
    for (Object* o : std::vector<Object*>(s->creating.begin(), s->creating.end())) {
      ++counters_.aborts;
      Retire(o, policy::RemovalReason::kDeleted, &frees);
    }
    for (Object* o : std::vector<Object*>(s->scoped.begin(), s->scoped.end())) {
      Retire(o, policy::RemovalReason::kDeleted, &frees);
    }
    ++counters_.sessions_closed;
    --tenant_use_[s->tenant].sessions;
    spdlog::info(
        "session {} ('{}') closed: {} leases released, {} creates aborted, {} "
        "session tensors freed",
        session_id.substr(0, 8), s->name, leases, creating, scoped);
    table_.EraseSession(session_id);
  }
  Reclaim(std::move(frees));
}

absl::StatusOr<TensorInfo> Store::TryAllocate(Session* s, const CreateParams& params,
                                              uint64_t nbytes) {
  const TierId t = params.tier == WantTier::kGpu ? TierId::kGpu : TierId::kHost;
  const TenantId tenant = options_.tenants.OwnerOf(params.ns);
  tiers::Placement where{params.pool, params.device};
  if (t == TierId::kHost) where.tenant = tenant;
  auto range = TierOf(t)->Reserve(nbytes, where);
  if (!range.ok()) return range.status();
  auto o = std::make_unique<Object>();
  o->ns = params.ns;
  o->key = params.key;
  o->dtype = params.dtype;
  o->shape = params.shape;
  o->nbytes = nbytes;
  o->tenant = tenant;
  // Where a copy of it goes back to on this tier: its fixed class, else the best fit.
  const memory::Pool& home = (t == TierId::kHost ? host_->pools() : gpu_->pools())[range->space];
  o->pool_class = t == TierId::kHost && home.fixed ? home.name : "";
  o->durability = params.durability;
  o->scope = params.scope;
  o->compression = ResolveCompression(params, home.name);
  o->parent = params.parent;
  o->id = TensorId(params.ns, params.key);
  o->parent_id = params.parent.empty() ? 0 : TensorId(params.ns, params.parent);
  o->owner = s;
  o->ttl_ms = params.ttl_ms;
  o->created_unix_ms = table_.NowUnixMs();
  Copy& c = o->copy(t);
  c.present = true;
  c.range = *range;
  ChargeCopy(*o, t, +1);
  TensorInfo info = Info(*o);
  Object* raw = o.get();
  if (!lost_.empty()) lost_.erase(ObjectTable::TableKey(params.ns, params.key));
  if (!table_.Insert(std::move(o))) {  // CreateLocked checked the key: not reached
    TierOf(t)->Free(*range);
    return absl::InternalError(absl::StrCat("key '", params.key, "' appeared during Create"));
  }
  s->creating.insert(raw);
  ++counters_.creates;
  if (t == TierId::kGpu) ++counters_.gpu_creates;
  counters_.bytes_created += nbytes;
  return info;
}

void Store::CreateAsync(const std::string& session_id, const CreateParams& params,
                        absl::Time deadline, CreateDone done) {
  auto nbytes = ValidateCreate(params);
  if (!nbytes.ok()) {
    {
      absl::MutexLock lock(&mu_);
      ++counters_.rejected_requests;
    }
    std::move(done)(nbytes.status());  // never under the lock: it may call back into the store
    return;
  }
  // First attempt here; one that must wait for room (or for memory being scrubbed) continues on
  // the executor.
  absl::StatusOr<TensorInfo> result;
  bool retry = false;
  uint64_t gpu_room = 0;
  Frees frees;
  {
    absl::MutexLock lock(&mu_);
    (void)CreateLocked(session_id, params, *nbytes, deadline, /*may_wait=*/false, &frees, &retry,
                       &gpu_room, &result);
  }
  Reclaim(std::move(frees));
  if (!retry && gpu_room == 0) {
    std::move(done)(std::move(result));
    return;
  }
  mover_.Submit([this, session_id, params, n = *nbytes, deadline = Clamp(deadline),
                 done = std::move(done)]() mutable {
    std::move(done)(CreateWaiting(session_id, params, n, deadline));
  });
}

absl::StatusOr<TensorInfo> Store::Create(const std::string& session_id, const CreateParams& params,
                                         absl::Time deadline) {
  return Wait<absl::StatusOr<TensorInfo>>(
      [&](CreateDone d) { CreateAsync(session_id, params, deadline, std::move(d)); });
}

absl::StatusOr<TensorInfo> Store::CreateWaiting(const std::string& session_id,
                                                const CreateParams& params, uint64_t nbytes,
                                                absl::Time deadline) {
  for (int round = 0; round < kMaxEvictionRounds || absl::Now() < deadline; ++round) {
    Frees frees;
    bool retry = false;
    uint64_t gpu_room = 0;
    absl::StatusOr<TensorInfo> result;
    {
      absl::MutexLock lock(&mu_);
      (void)CreateLocked(session_id, params, nbytes, deadline, /*may_wait=*/true, &frees, &retry,
                         &gpu_room, &result);
    }
    Reclaim(std::move(frees), /*now=*/true);  // evicted or expired: free for the next round
    if (gpu_room > 0 && DemoteGpu(params.device, gpu_room) == 0) {
      absl::MutexLock lock(&mu_);
      ++counters_.create_failures;
      return absl::ResourceExhaustedError(absl::StrCat(
          "no GPU room for ", nbytes,
          " bytes: the rest is held by leased or unsealed tensors, or cannot move to host"));
    }
    if (!retry && gpu_room == 0) return result;
  }
  return absl::ResourceExhaustedError("no room after repeated eviction (heavy contention)");
}

absl::Status Store::CreateLocked(const std::string& session_id, const CreateParams& params,
                                 uint64_t nbytes, absl::Time deadline, bool may_wait, Frees* frees,
                                 bool* retry, uint64_t* gpu_room, absl::StatusOr<TensorInfo>* out) {
  auto finish = [out](absl::StatusOr<TensorInfo> r) {
    *out = std::move(r);
    return absl::OkStatus();
  };
  Session* s = table_.FindSession(session_id);
  if (s == nullptr) return finish(UnknownSession());
  ExpireLocked(frees);  // an expired tensor frees its key and its memory
  // Looked up with FindAny, not Find (which hides expired tensors): one that expired after
  // ExpireLocked read the clock still holds the key, and is retired here.
  if (Object* o = table_.FindAny(params.ns, params.key); o != nullptr) {
    if (!table_.Expired(*o)) {
      ++counters_.create_failures;
      return finish(absl::AlreadyExistsError(absl::StrCat("key '", params.key, "' exists")));
    }
    ++counters_.expirations;
    Retire(o, policy::RemovalReason::kDeleted, frees);
  }
  const bool on_gpu = params.tier == WantTier::kGpu;
  if (on_gpu && gpu_ == nullptr) {
    ++counters_.rejected_requests;
    return finish(absl::FailedPreconditionError("the GPU tier is not present in this daemon"));
  }
  const TenantId tenant = options_.tenants.OwnerOf(params.ns);
  auto pools = on_gpu ? gpu_->Candidates(nbytes, params.device, params.pool)
                      : host_->pools().Candidates(nbytes, params.pool, tenant);
  if (!pools.ok()) {
    ++counters_.rejected_requests;
    return finish(pools.status());
  }
  if (on_gpu) {  // a quota is no reason to wait for room
    if (absl::Status q = QuotaAllows(tenant, TierId::kGpu, nbytes); !q.ok()) return finish(q);
  }
  if (frees->empty()) {  // else expiry freed ranges: retry once they are back
    auto info = TryAllocate(s, params, nbytes);
    if (info.ok() || info.status().code() != absl::StatusCode::kResourceExhausted) {
      return finish(std::move(info));
    }
  }
  *retry = true;
  if (!may_wait) return finish(absl::UnavailableError("retry"));
  if (on_gpu) {
    if (frees->empty()) *gpu_room = nbytes;  // the caller demotes GPU tensors, then retries
    return finish(absl::UnavailableError("retry"));
  }
  if (!frees->empty() || MakeRoom(*pools, nbytes, deadline, frees)) {
    return finish(absl::UnavailableError("retry"));
  }
  *retry = false;
  ++counters_.create_failures;
  return finish(absl::ResourceExhaustedError(
      absl::StrCat("no room for ", nbytes, " bytes in pool '", host_->pools()[(*pools)[0]].name,
                   "': the rest is held by DURABLE, leased or unsealed tensors")));
}

absl::Status Store::Seal(const std::string& session_id, absl::string_view ns, absl::string_view key,
                         const std::string& cuda_event, absl::Time deadline) {
  if (auto st = ValidateNamespace(ns); !st.ok()) return st;
  if (auto st = ValidateKey(key); !st.ok()) return st;
  if (cuda_event.empty() && index_ == nullptr) {
    absl::MutexLock lock(&mu_);
    return SealLocked(session_id, ns, key, nullptr);
  }
  // Wait, without the lock, until the client's writes to the GPU copy are complete; or take the
  // checksum of a host tensor's bytes for the index.
  Object* waited = nullptr;
  tiers::GpuDevice* device = nullptr;
  const uint8_t* bytes = nullptr;
  {
    absl::MutexLock lock(&mu_);
    Session* s = table_.FindSession(session_id);
    if (s == nullptr) return UnknownSession();
    waited = table_.Find(ns, key);
    if (waited == nullptr) return absl::NotFoundError(absl::StrCat("no tensor '", key, "'"));
    // The same codes, in the same order, as a Seal without an event (SealLocked).
    if (waited->sealed) {
      return absl::FailedPreconditionError(absl::StrCat("'", key, "' is already sealed"));
    }
    if (waited->owner != s) {
      return absl::PermissionDeniedError(absl::StrCat("'", key, "' is another session's create"));
    }
    const Copy& g = waited->copy(TierId::kGpu);
    if (!cuda_event.empty()) {
      if (!g.present) {
        return absl::InvalidArgumentError(
            absl::StrCat("a CUDA event is only for sealing a GPU tensor; '", key, "' is on host"));
      }
      device = &gpu_->device(gpu_->pools()[g.range.space].arena);
    } else if (const Copy& h = waited->copy(TierId::kHost); h.present) {
      bytes = host_->Address(h.range);
    }
    ++waited->pins;
  }
  absl::Status st =
      device != nullptr ? device->WaitEvent(cuda_event, Clamp(deadline)) : absl::OkStatus();
  // The creator wrote the bytes before its Seal: what a restart will check them against.
  const std::optional<uint64_t> sum =
      bytes != nullptr ? std::optional<uint64_t>(XXH3_64bits(bytes, waited->nbytes)) : std::nullopt;
  Frees frees;
  {
    absl::MutexLock lock(&mu_);
    --waited->pins;
    if (st.ok()) st = SealLocked(session_id, ns, key, waited, sum);
    MaybeFreeRetired(waited, &frees);  // aborted during the wait: freed now
  }
  Reclaim(std::move(frees));
  return st;
}

absl::Status Store::SealLocked(const std::string& session_id, absl::string_view ns,
                               absl::string_view key, Object* expected,
                               std::optional<uint64_t> checksum) {
  Session* s = table_.FindSession(session_id);
  if (s == nullptr) return UnknownSession();
  Object* o = table_.Find(ns, key);
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
  for (TierId t : tiers::kAllTiers) {
    if (o->copy(t).present) TrackCopy(o, t);
  }
  table_.Arm(o);
  ++counters_.seals;
  if (checksum) {
    o->checksum = *checksum;
    o->has_checksum = true;
  }
  Persist(o);
  MaybePublish(o);
  return absl::OkStatus();
}

absl::Status Store::Abort(const std::string& session_id, absl::string_view ns,
                          absl::string_view key) {
  if (auto st = ValidateNamespace(ns); !st.ok()) return st;
  if (auto st = ValidateKey(key); !st.ok()) return st;
  Frees frees;
  {
    absl::MutexLock lock(&mu_);
    Session* s = table_.FindSession(session_id);
    if (s == nullptr) return UnknownSession();
    Object* o = table_.Find(ns, key);
    if (o == nullptr) return absl::NotFoundError(absl::StrCat("no tensor '", key, "'"));
    if (o->sealed) {
      return absl::FailedPreconditionError(absl::StrCat("'", key, "' is sealed; Delete it"));
    }
    if (o->owner != s) {
      return absl::PermissionDeniedError(absl::StrCat("'", key, "' is another session's create"));
    }
    ++counters_.aborts;
    Retire(o, policy::RemovalReason::kDeleted, &frees);
  }
  Reclaim(std::move(frees));
  return absl::OkStatus();
}

absl::Status Store::CheckWant(WantTier want, int device) const {
  switch (want) {
    case WantTier::kAny:
    case WantTier::kHost:
      return absl::OkStatus();
    case WantTier::kGpu:
      if (gpu_ == nullptr) {
        return absl::FailedPreconditionError(
            "the GPU tier is not present in this daemon (no usable GPU, or gpu.mode is off)");
      }
      if (device < -1 || (device >= 0 && gpu_->PoolsOn(device).empty())) {
        return absl::InvalidArgumentError(absl::StrCat("the daemon has no arena on GPU ", device));
      }
      return absl::OkStatus();
    default:
      return absl::InvalidArgumentError("leases are granted on the HOST or GPU tier only");
  }
}

absl::StatusOr<std::vector<GetOutcome>> Store::Get(const std::string& session_id,
                                                   absl::string_view ns,
                                                   std::span<const std::string> keys, WantTier want,
                                                   absl::Time deadline, int device) {
  return Wait<absl::StatusOr<std::vector<GetOutcome>>>([&](GetDone d) {
    GetAsync(session_id, ns, std::vector<std::string>(keys.begin(), keys.end()), want, deadline,
             device, std::move(d));
  });
}

absl::StatusOr<std::vector<PrefetchOutcome>> Store::Prefetch(absl::string_view ns,
                                                             std::span<const std::string> keys,
                                                             WantTier tier, absl::Time deadline,
                                                             int device) {
  return Wait<absl::StatusOr<std::vector<PrefetchOutcome>>>([&](PrefetchDone d) {
    PrefetchAsync(ns, std::vector<std::string>(keys.begin(), keys.end()), tier, deadline, device,
                  std::move(d));
  });
}

absl::Status Store::Release(const std::string& session_id, std::span<const uint64_t> lease_ids) {
  if (lease_ids.empty() || lease_ids.size() > kMaxBatchKeys) {
    return absl::InvalidArgumentError(
        absl::StrCat("a Release names 1 to ", kMaxBatchKeys, " leases, not ", lease_ids.size()));
  }
  Frees frees;
  {
    absl::MutexLock lock(&mu_);
    Session* s = table_.FindSession(session_id);
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
  Reclaim(std::move(frees));
  return absl::OkStatus();
}

absl::Status Store::Delete(const std::string& session_id, absl::string_view ns,
                           absl::string_view key) {
  if (auto st = ValidateNamespace(ns); !st.ok()) return st;
  if (auto st = ValidateKey(key); !st.ok()) return st;
  Frees frees;
  bool ask_remote = false;  // not here: maybe another daemon's, in the remote tier
  {
    absl::MutexLock lock(&mu_);
    if (table_.FindSession(session_id) == nullptr) return UnknownSession();
    Object* o = table_.Find(ns, key);
    if (o == nullptr && !lost_.empty() && lost_.erase(ObjectTable::TableKey(ns, key)) > 0) {
      return absl::OkStatus();  // a tensor a restart lost: forgotten now
    }
    if (o == nullptr && !ConsultsRemote(ns)) {
      return absl::NotFoundError(absl::StrCat("no tensor '", key, "'"));
    }
    if (o != nullptr && !o->sealed) {
      return absl::FailedPreconditionError(
          absl::StrCat("'", key, "' is not sealed; its creator may Abort it"));
    }
    if (o == nullptr) {
      ask_remote = true;
    } else {
      ++counters_.deletes;
      o->erase_remote = true;
      Copy& remote = o->copy(TierId::kRemote);
      if (remote.present || remote.in_flight) {
        MarkRemoteErasing(ns, key);
        // Erased now, not after the last lease of its host copy.
        if (remote.present && !remote.held()) {
          DropCopy(o, TierId::kRemote, policy::RemovalReason::kDeleted, &frees);
        }
      }
      Retire(o, policy::RemovalReason::kDeleted, &frees);
    }
  }
  if (ask_remote) return DeleteRemote(ns, key);
  Reclaim(std::move(frees));
  return absl::OkStatus();
}

bool Store::Holds(absl::string_view ns, absl::string_view key) {
  absl::MutexLock lock(&mu_);
  return table_.Find(ns, key) != nullptr;
}

bool Store::ConsultsRemote(absl::string_view ns) const {
  return remote_ != nullptr && options_.remote_lookup && options_.tenants.OwnerOf(ns) == kNoTenant;
}

absl::StatusOr<TensorInfo> Store::Stat(absl::string_view ns, absl::string_view key) {
  if (auto st = ValidateNamespace(ns); !st.ok()) return st;
  if (auto st = ValidateKey(key); !st.ok()) return st;
  {
    absl::MutexLock lock(&mu_);
    Object* o = table_.Find(ns, key);
    if (o != nullptr) return Info(*o);
    if (!ConsultsRemote(ns) || (!lost_.empty() && lost_.contains(ObjectTable::TableKey(ns, key)))) {
      return Missing(ns, key);
    }
  }
  return StatRemote(ns, key);
}

absl::StatusOr<ListResult> Store::List(absl::string_view ns, absl::string_view prefix,
                                       uint32_t limit) {
  if (auto st = ValidateNamespace(ns); !st.ok()) return st;
  if (prefix.size() > kMaxKeyBytes) return absl::InvalidArgumentError("prefix is too long");
  if (limit == 0) limit = 1000;
  if (limit > 10000) return absl::InvalidArgumentError("limit is at most 10000");
  ListResult out;
  absl::MutexLock lock(&mu_);
  table_.ForEach([&](const Object& o) {
    if (o.ns == ns && absl::StartsWith(o.key, prefix) && !table_.Expired(o)) {
      out.tensors.push_back(Info(o));
    }
  });
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
  const CodecCounters codec = mover_.codec_counters();
  absl::MutexLock lock(&mu_);
  st.counters = counters_;
  st.counters.codec_encodes = codec.encodes;
  st.counters.codec_encode_in_bytes = codec.encode_in_bytes;
  st.counters.codec_encode_out_bytes = codec.encode_out_bytes;
  st.counters.codec_stored_raw = codec.stored_raw;
  st.counters.codec_decodes = codec.decodes;
  st.counters.codec_decode_in_bytes = codec.decode_in_bytes;
  st.counters.codec_decode_out_bytes = codec.decode_out_bytes;
  st.counters.codec_decode_failures = codec.decode_failures;
  st.counters.codec_over_budget = codec.over_budget;
  st.codecs = codec.codecs;
  const memory::PoolSet& pools = host_->pools();
  // A tier policy's lifetime statistics, by pool (space); a pool it saw nothing of has zeros.
  const auto lifetimes = [this](TierId t, size_t n) {
    std::vector<policy::ClassLifetime> out(n);
    for (uint32_t i = 0; i < n; ++i) out[i].space = i;
    for (const policy::ClassLifetime& l : PolicyOf(t)->Lifetimes()) {
      if (l.space < n) out[l.space] = l;
    }
    return out;
  };
  const std::vector<policy::ClassLifetime> host_lifetimes = lifetimes(TierId::kHost, pools.size());
  for (uint32_t i = 0; i < pools.size(); ++i) {
    st.pools.push_back({pools[i].name, false, pools[i].arena, pools[i].fixed,
                        pools[i].allocator->Stats(), host_lifetimes[i]});
    st.used_bytes += st.pools.back().stats.used_bytes;
    st.capacity_bytes += st.pools.back().stats.capacity_bytes;
  }
  st.pinned_bytes = pinned_bytes_[tiers::Index(TierId::kHost)];
  if (gpu_ != nullptr) {
    st.gpu_present = true;
    const std::vector<policy::ClassLifetime> gpu_lifetimes =
        lifetimes(TierId::kGpu, gpu_->pools().size());
    for (uint32_t i = 0; i < gpu_->pools().size(); ++i) {
      const memory::Pool& p = gpu_->pools()[i];
      PoolStatsEntry e{p.name, true, p.arena, p.fixed, p.allocator->Stats(), gpu_lifetimes[i]};
      st.gpu_used_bytes += e.stats.used_bytes;
      st.gpu_capacity_bytes += e.stats.capacity_bytes;
      st.gpus[p.arena].used_bytes += e.stats.used_bytes;
      st.pools.push_back(std::move(e));
    }
    st.gpu_pinned_bytes = pinned_bytes_[tiers::Index(TierId::kGpu)];
    st.gpu_high_watermark = options_.gpu_high_watermark;
    st.gpu_low_watermark = options_.gpu_low_watermark;
  }
  st.ssd_present = ssd_ != nullptr;
  if (ssd_ != nullptr) st.ssd = ssd_->Stats();
  st.remote_present = remote_ != nullptr;
  if (remote_ != nullptr) st.remote = remote_->stats();
  st.system = system_;
  st.high_watermark = options_.high_watermark;
  st.low_watermark = options_.low_watermark;
  st.sessions = table_.sessions();
  TenantStatsLocked(&st);
  st.leases = table_.leases();
  st.objects = table_.objects();
  return st;
}

void Store::ExpireLocked(Frees* frees) {
  while (Object* o = table_.Due()) {
    ++counters_.expirations;
    Retire(o, policy::RemovalReason::kDeleted, frees);  // disarms it
  }
}

size_t Store::ExpireDue() {
  Frees frees;
  {
    absl::MutexLock lock(&mu_);
    ExpireLocked(&frees);
  }
  const size_t n = frees.size();
  Reclaim(std::move(frees), /*now=*/true);  // the daemon's timer thread: scrub here
  return n;
}

}  // namespace tensord::store
