// The object store: tensors, their life cycle (Create -> Seal -> Get/Release -> Delete, Abort),
// leases, sessions and eviction of unleased CACHE tensors when a pool is full.
// Owns all object, lease and session state, guarded by mu_. Borrows the host tier, whose
// PoolSet it also guards with mu_. Memory is zeroed outside the lock before it is reused.
#pragma once

#include <algorithm>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "daemon/memory/allocator.h"
#include "daemon/policy/eviction.h"
#include "daemon/store/types.h"
#include "daemon/tiers/gpu_tier.h"
#include "daemon/tiers/host_tier.h"
#include "daemon/tiers/pressure.h"
#include "daemon/tiers/ssd_tier.h"

namespace tensord::store {

// Every counter the store keeps, in one list: stats, gRPC and tensorctl are generated from it.
// clang-format off
#define TENSORD_STORE_COUNTERS(X) \
  X(creates) X(create_failures) X(seals) X(aborts) X(deletes) X(expirations)  \
  X(gets) X(get_hits) X(get_misses) X(leases_granted) X(leases_released)      \
  X(evictions) X(evicted_bytes) X(sessions_opened) X(sessions_closed)         \
  X(bytes_created) X(bytes_zeroed) X(rejected_requests)                        \
  X(promotions) X(promoted_bytes) X(demotions) X(demoted_bytes) X(demotion_failures) \
  X(promotion_failures) X(swap_misses) X(data_loss) X(pressure_waits)          \
  X(gpu_gets) X(gpu_hits) X(gpu_misses) X(gpu_creates) X(gpu_promotions)        \
  X(gpu_promoted_bytes) X(gpu_demotions) X(gpu_demoted_bytes) X(gpu_copy_failures) \
  X(gpu_evictions)
// clang-format on

struct Counters {
#define TENSORD_DECLARE_COUNTER(name) uint64_t name = 0;
  TENSORD_STORE_COUNTERS(TENSORD_DECLARE_COUNTER)
#undef TENSORD_DECLARE_COUNTER
};

// Calls fn(name, value) for every counter, in list order.
template <typename Fn>
void ForEachCounter(const Counters& c, Fn&& fn) {
#define TENSORD_VISIT_COUNTER(name) fn(#name, c.name);
  TENSORD_STORE_COUNTERS(TENSORD_VISIT_COUNTER)
#undef TENSORD_VISIT_COUNTER
}

struct PoolStatsEntry {
  std::string name;
  bool gpu = false;  // a pool of the GPU tier (arena = GPU arena id)
  uint32_t arena = 0;
  bool fixed = false;
  memory::AllocatorStats stats;
};

struct GpuDeviceStats {
  std::string name, model;
  uint32_t arena = 0;
  uint64_t arena_bytes = 0, used_bytes = 0;
  uint64_t device_free_bytes = 0, device_total_bytes = 0;
};

struct StoreStats {
  Counters counters;
  std::vector<PoolStatsEntry> pools;
  uint64_t capacity_bytes = 0;
  uint64_t used_bytes = 0;
  uint64_t pinned_bytes = 0;
  bool ssd_present = false;
  tiers::SsdStats ssd;
  tiers::SystemPressure system;
  double high_watermark = 0, low_watermark = 0;
  bool gpu_present = false;
  uint64_t gpu_capacity_bytes = 0, gpu_used_bytes = 0, gpu_pinned_bytes = 0;
  double gpu_high_watermark = 0, gpu_low_watermark = 0;
  bool gpu_host_pinned = false;
  std::vector<GpuDeviceStats> gpus;
  uint64_t sessions = 0;
  uint64_t leases = 0;
  uint64_t objects = 0;
};

struct ListResult {
  std::vector<TensorInfo> tensors;
  bool truncated = false;
};

struct StoreOptions {
  uint64_t max_leases_per_session = 1 << 20;
  uint64_t max_sessions = 4096;
  // Host-tier watermarks (fractions of capacity): above high the migrator demotes unleased
  // tensors to SSD until below low. Also when MemAvailable < min_mem_available.
  double high_watermark = 0.90;
  double low_watermark = 0.75;
  uint64_t min_mem_available = 0;
  // How long Create/Get wait for demotions to make room when the caller set no deadline.
  absl::Duration pressure_wait = absl::Seconds(10);
  // How often the migrator probes a degraded SSD tier to see whether it works again.
  absl::Duration swap_probe_interval = absl::Seconds(10);
  // GPU-tier watermarks (fractions of each arena): above high the GPU migrator demotes unleased
  // tensors to host until below low. (Device-wide free memory, cudaMemGetInfo, sizes the arena
  // at start; demotion inside a fixed arena cannot give memory back to other processes.)
  double gpu_high_watermark = 0.90;
  double gpu_low_watermark = 0.75;
  // The clock TTLs and expiry run on (borrowed; nullptr: real time). Tests pass a FakeClock.
  const Clock* clock = nullptr;
  // Reads system pressure (PSI, MemAvailable); empty: tiers::ReadSystemPressure. For tests.
  std::function<tiers::SystemPressure()> read_pressure;
};

class Store {
 public:
  // `host`, `ssd` (nullptr: no SSD tier) and `gpu` (nullptr: no GPU tier) are borrowed and
  // must outlive the store.
  Store(tiers::HostTier* host, StoreOptions options, tiers::SsdTier* ssd = nullptr,
        tiers::GpuTier* gpu = nullptr);
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  // Opens a session and returns its unguessable id. INVALID_ARGUMENT for a client_name over
  // 128 bytes or not valid text (ValidateClientName), RESOURCE_EXHAUSTED at max_sessions.
  absl::StatusOr<std::string> OpenSession(absl::string_view client_name);
  // Ends a session: releases its leases, aborts its unsealed creates and deletes its
  // session-scoped tensors. Unknown ids are ignored (closing is idempotent).
  void CloseSession(const std::string& session_id);

  // Allocates an unsealed tensor the caller then writes. Evicts unleased CACHE tensors of the
  // candidate pools if needed. INVALID_ARGUMENT (bad field), FAILED_PRECONDITION (unknown
  // session), ALREADY_EXISTS, RESOURCE_EXHAUSTED (no room after eviction; lease quota).
  // Under pressure it waits for demotions until `deadline` (at most options.pressure_wait).
  absl::StatusOr<TensorInfo> Create(const std::string& session_id, const CreateParams& params,
                                    absl::Time deadline = absl::InfiniteFuture());
  // Makes an unsealed tensor visible and immutable. NOT_FOUND, FAILED_PRECONDITION (already
  // sealed, unknown session), PERMISSION_DENIED (another session's create).
  // A GPU tensor's Seal may carry the client's interprocess CUDA event, recorded after its
  // writes: the tensor becomes visible only once the event has completed (INVALID_ARGUMENT for
  // a malformed handle or one on a host tensor, DEADLINE_EXCEEDED).
  absl::Status Seal(const std::string& session_id, absl::string_view ns, absl::string_view key,
                    const std::string& cuda_event = "",
                    absl::Time deadline = absl::InfiniteFuture());
  // Drops an unsealed tensor. NOT_FOUND, FAILED_PRECONDITION (sealed), PERMISSION_DENIED.
  absl::Status Abort(const std::string& session_id, absl::string_view ns, absl::string_view key);
  // Leases each key's host copy. Whole-call errors: FAILED_PRECONDITION (unknown session, or
  // want=GPU without a GPU tier), INVALID_ARGUMENT (batch size, namespace, tier). Per-key
  // errors: INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION (unsealed), RESOURCE_EXHAUSTED.
  // SSD-resident tensors are promoted to host first (concurrent Gets share one read); a
  // failed read drops a CACHE tensor (NOT_FOUND, a miss) and fails a DURABLE one (DATA_LOSS).
  // want=GPU leases a GPU copy, copying host (or SSD, through host) copies up first; `device`
  // picks the GPU for such copies (-1: any). want=ANY leases the host copy, else the GPU copy,
  // else promotes from SSD to host.
  absl::StatusOr<std::vector<GetOutcome>> Get(const std::string& session_id, absl::string_view ns,
                                              std::span<const std::string> keys, WantTier want,
                                              absl::Time deadline = absl::InfiniteFuture(),
                                              int device = -1);
  // Ends leases, all or nothing. NOT_FOUND if any id is not a lease of this session,
  // INVALID_ARGUMENT for an empty or duplicated list, FAILED_PRECONDITION (unknown session).
  absl::Status Release(const std::string& session_id, std::span<const uint64_t> lease_ids);
  // Removes a sealed tensor's key now; its memory is freed when the last lease ends.
  // INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION (unknown session, or unsealed: Abort it
  // instead).
  absl::Status Delete(const std::string& session_id, absl::string_view ns, absl::string_view key);
  // Returns one tensor's metadata. INVALID_ARGUMENT, NOT_FOUND.
  absl::StatusOr<TensorInfo> Stat(absl::string_view ns, absl::string_view key);
  // Returns tensors of `ns` whose key starts with `prefix`, sorted by key, at most `limit`.
  absl::StatusOr<ListResult> List(absl::string_view ns, absl::string_view prefix, uint32_t limit);
  StoreStats Stats();
  // Deletes every tensor whose TTL has passed and returns how many ranges that freed. Lookups
  // already hide expired tensors; this reclaims their memory (the daemon calls it periodically).
  size_t ExpireDue();

  // Hints for the service, cheap and racy: whether a Get of `keys` would read from the SSD tier,
  // and whether a Create may wait for demotions (any Create, with an SSD tier).
  bool GetMayBlock(absl::string_view ns, std::span<const std::string> keys,
                   WantTier want = WantTier::kAny) ABSL_LOCKS_EXCLUDED(mu_);
  bool CreateMayBlock(WantTier tier = WantTier::kHost) ABSL_LOCKS_EXCLUDED(mu_);

  // Runs the migrator until `stop` is notified: demotes unleased host tensors to SSD whenever
  // the host tier is above its high watermark, the system is short of memory, or a request
  // waits for room. Reads system pressure every 100 ms whatever tiers exist (without an SSD tier
  // that is all it does). Call from one dedicated thread.
  void RunMigrator(absl::Notification* stop) ABSL_LOCKS_EXCLUDED(mu_);
  // Reads PSI and MemAvailable now into the stats (also done at construction).
  void ReadPressure() ABSL_LOCKS_EXCLUDED(mu_);
  // One migration round; returns the bytes it moved off the host tier.
  uint64_t DemoteOnce() ABSL_LOCKS_EXCLUDED(mu_);
  // Runs the GPU migrator until `stop` is notified: keeps every GPU arena under its high
  // watermark by demoting unleased GPU copies to host.
  // Returns at once without a GPU tier.
  void RunGpuMigrator(absl::Notification* stop) ABSL_LOCKS_EXCLUDED(mu_);
  // One GPU migration round over every arena; returns the GPU bytes it freed.
  uint64_t DemoteGpuOnce() ABSL_LOCKS_EXCLUDED(mu_);
  // Frees at least `want` bytes of GPU memory on `device` (-1: any) if it can: unleased GPU
  // copies go down to host (a copy that exists elsewhere is just dropped; a CACHE tensor with
  // no host room is evicted). Returns the GPU bytes freed.
  uint64_t DemoteGpu(int device, uint64_t want) ABSL_LOCKS_EXCLUDED(mu_);
  // The operator's evict: moves one unleased tensor one tier down now. A GPU copy goes to host
  // (or is dropped when another copy exists); a host copy is demoted to SSD when the tier is
  // usable, else dropped if it is CACHE. Returns what happened. NOT_FOUND,
  // FAILED_PRECONDITION (unsealed, leased, or DURABLE without an SSD tier), UNAVAILABLE (the
  // write failed; the tensor stays on the host), INVALID_ARGUMENT.
  absl::StatusOr<std::string> Evict(absl::string_view ns, absl::string_view key)
      ABSL_LOCKS_EXCLUDED(mu_);

  // Returns the daemon's address of a location (for tests and benchmarks in-process).
  uint8_t* Address(const Location& loc) const {
    return loc.tier == WantTier::kGpu ? gpu_->device(loc.arena).base() + loc.offset
                                      : host_->Address(loc.arena, loc.offset);
  }

 private:
  struct Session;
  struct Object {
    std::string ns, key;
    DType dtype = DType::kUnspecified;
    std::vector<int64_t> shape;
    uint64_t nbytes = 0;
    uint32_t pool = 0;
    uint64_t offset = 0;
    uint64_t reserved = 0;
    Durability durability = Durability::kDurable;
    Scope scope = Scope::kGlobal;
    bool sealed = false;
    bool retired = false;      // unreachable by key; freed when the last lease ends
    Session* owner = nullptr;  // set while unsealed or session-scoped
    uint32_t leases = 0;
    int64_t created_unix_ms = 0;
    int64_t ttl_ms = 0;
    bool on_host = true;                  // pool/offset/reserved hold a valid copy
    std::optional<tiers::SsdExtent> ssd;  // a clean copy on the SSD tier
    int pins = 0;                         // in-flight transfers and waiters: defer freeing
    bool promoting = false;
    bool expiring = false;
    std::multimap<int64_t, Object*>::iterator expiry_it;  // valid while `expiring`
    // The GPU tier. A GPU Create starts with only this copy (on_host false); a promotion adds
    // one beside the host copy. Sealed tensors never change, so every copy is identical.
    struct GpuCopy {
      uint32_t pool = 0;  // of the GPU tier's PoolSet
      uint64_t offset = 0;
      uint64_t reserved = 0;
    };
    std::optional<GpuCopy> gpu;
    uint32_t gpu_leases = 0;  // `leases` counts host leases
    bool gpu_moving = false;  // a copy up to the GPU is in flight
  };
  struct Session {
    std::string id;
    std::string name;
    absl::flat_hash_set<uint64_t> leases;
    absl::flat_hash_set<Object*> creating;
    absl::flat_hash_set<Object*> scoped;
  };
  struct LeaseEntry {
    Session* session;
    Object* object;
    bool gpu = false;
  };
  struct PendingWrite {
    Object* o;
    const uint8_t* src;
  };
  struct PendingFree {
    uint32_t pool;
    uint64_t offset;
    uint64_t reserved;
    bool gpu = false;  // a range of the GPU tier's pools
  };
  // A GPU copy on its way down to host range (pool, offset).
  struct GpuDown {
    Object* o;
    uint32_t pool;
    uint64_t offset, reserved;
  };

  static std::string TableKey(absl::string_view ns, absl::string_view key);
  Session* FindSession(const std::string& id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  Object* FindObject(absl::string_view ns, absl::string_view key)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  TensorInfo Info(const Object& o) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool Expired(const Object& o) const;
  // Now, on options_.clock.
  int64_t NowUnixMs() const;
  // One attempt of Create under the lock. Sets *retry when it freed memory (eviction,
  // expiry) or waited for reclaiming, so the caller reclaims `frees` and tries again.
  absl::StatusOr<TensorInfo> CreateLocked(const std::string& session_id, const CreateParams& params,
                                          uint64_t nbytes, absl::Time deadline,
                                          std::vector<PendingFree>* frees, bool* retry,
                                          uint64_t* gpu_room) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Seal's bookkeeping. `expected` (non-null): the key must still name that object.
  absl::Status SealLocked(const std::string& session_id, absl::string_view ns,
                          absl::string_view key, Object* expected)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Allocates in `pools` (of the GPU tier when params.tier is kGpu) and registers the object.
  absl::StatusOr<TensorInfo> TryAllocate(Session* s, const CreateParams& params, uint64_t nbytes,
                                         std::span<const uint32_t> pools)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool SelectVictims(std::span<const uint32_t> pools, uint64_t nbytes,
                     std::vector<PendingFree>* frees) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Retire(Object* o, std::vector<PendingFree>* frees) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ExpireLocked(std::vector<PendingFree>* frees) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void FreeObject(Object* o, std::vector<PendingFree>* frees) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void DropLease(uint64_t lease_id, std::vector<PendingFree>* frees)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Tries the candidate pools; returns {pool, offset} or RESOURCE_EXHAUSTED.
  absl::StatusOr<std::pair<uint32_t, uint64_t>> AllocateHost(std::span<const uint32_t> pools,
                                                             uint64_t nbytes)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // When no pool has room: asks the migrator for `nbytes` and waits briefly for memory to come
  // back, or drops CACHE victims. Returns true if the caller should retry, false if nothing
  // can make room.
  bool MakeRoom(std::span<const uint32_t> pools, uint64_t nbytes, absl::Time deadline,
                std::vector<PendingFree>* frees) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool SsdUsable(uint64_t nbytes) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Promotes one SSD-resident tensor and leases it (the lock is dropped during the read).
  GetOutcome PromoteAndLease(const std::string& session_id, absl::string_view ns,
                             const std::string& key, absl::Time deadline) ABSL_LOCKS_EXCLUDED(mu_);
  // Promotes and leases keys[i] for each i in `which` (SSD-resident at the first look): those
  // that fit in host memory now are read in one engine batch, the rest one by one.
  void PromoteMany(const std::string& session_id, absl::string_view ns,
                   std::span<const std::string> keys, std::span<const size_t> which,
                   absl::Time deadline, std::vector<GetOutcome>* out) ABSL_LOCKS_EXCLUDED(mu_);
  // Completes a swap-in (or, from_gpu, a copy down from the GPU) of `o` into host range (pool,
  // offset) that ended with `st`: leases it, or frees the range and fails (a CACHE tensor is
  // dropped, a DURABLE one is DATA_LOSS).
  void FinishPromotion(const std::string& session_id, const std::string& key, Object* o,
                       uint32_t pool, uint64_t offset, uint64_t reserved, const absl::Status& st,
                       GetOutcome* r, std::vector<PendingFree>* frees, bool from_gpu = false)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Grants a lease on the host copy (or, with `gpu`, the GPU copy) of a sealed object.
  void GrantLease(Session* s, Object* o, GetOutcome* r, bool gpu = false)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Whether a lease, a transfer or a waiter holds the object.
  static bool Held(const Object& o) { return o.leases > 0 || o.gpu_leases > 0 || o.pins > 0; }
  // Host pools a copy of `o` may go to (its fixed class, or best fit).
  absl::StatusOr<std::vector<uint32_t>> HostCandidates(const Object& o) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<Object::GpuCopy> AllocateGpu(std::span<const uint32_t> pools, uint64_t nbytes)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  Location GpuLocation(const Object& o) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Copies one object up to the GPU (from host; SSD-only objects are promoted to host first)
  // and leases the GPU copy.
  GetOutcome CopyUpAndLease(const std::string& session_id, absl::string_view ns,
                            const std::string& key, int device, absl::Time deadline)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Copies up and leases keys[i] for each i in `which` (no GPU copy at the first look): those
  // on the host with GPU room now go in one batch per device, the rest one by one.
  void CopyUpMany(const std::string& session_id, absl::string_view ns,
                  std::span<const std::string> keys, std::span<const size_t> which, int device,
                  absl::Time deadline, std::vector<GetOutcome>* out) ABSL_LOCKS_EXCLUDED(mu_);
  // Completes a copy up of `o` into `dst` that ended with `st`: leases the GPU copy, or frees
  // `dst` and fails.
  void FinishCopyUp(const std::string& session_id, const std::string& key, Object* o,
                    const Object::GpuCopy& dst, const absl::Status& st, GetOutcome* r,
                    std::vector<PendingFree>* frees) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // GPU demotion in two steps around the copy, like the SSD's: StartGpuDemotions (lock held)
  // drops GPU copies that exist elsewhere, evicts CACHE ones with no host room and queues the
  // rest in *downs with a host range, pinned; FinishGpuDemotions (lock not held) copies them
  // down and completes each. Both return the GPU bytes they freed.
  uint64_t StartGpuDemotions(std::span<Object* const> chosen, std::vector<GpuDown>* downs,
                             std::vector<PendingFree>* frees) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  uint64_t FinishGpuDemotions(std::span<const GpuDown> downs, std::vector<PendingFree>* frees)
      ABSL_LOCKS_EXCLUDED(mu_);
  void DropGpuCopy(Object* o, std::vector<PendingFree>* frees) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Whether a GPU copy may be dropped without a copy down: a host copy, or an SSD copy on a
  // device that is not degraded.
  bool HasCopyBelowGpu(const Object& o) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Whether some host pool could take a copy of `o` now (its largest free range).
  bool HostHasRoomFor(const Object& o) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Evict of a tensor with a GPU copy: that copy goes one tier down.
  absl::StatusOr<std::string> EvictFromGpu(absl::string_view ns, absl::string_view key)
      ABSL_LOCKS_EXCLUDED(mu_);
  static bool InPools(std::span<const uint32_t> pools, uint32_t pool) {
    return std::find(pools.begin(), pools.end(), pool) != pools.end();
  }
  // The eviction policy tracks every sealed host-resident object, by its address.
  static policy::Handle HandleOf(Object* o) { return reinterpret_cast<policy::Handle>(o); }
  static Object* ObjectOf(policy::Handle h) { return reinterpret_cast<Object*>(h); }
  // Visits tracked objects best victim first (per the policy) until `visit` returns false.
  template <typename Fn>
  void ForEachVictim(Fn&& visit) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    eviction_->Victims([&](policy::Handle h) { return visit(ObjectOf(h)); });
  }
  // Demotion in two steps around the write: StartDemotions (lock held) drops the host copy of
  // objects whose SSD copy is current and queues the others in writing_, pinned;
  // FinishDemotions (lock not held) writes the queue in one batch and completes each.
  // Both return the host bytes they freed.
  uint64_t StartDemotions(std::span<Object* const> chosen, std::vector<PendingFree>* frees)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  uint64_t FinishDemotions(std::vector<PendingFree>* frees) ABSL_LOCKS_EXCLUDED(mu_);
  // Whether a host copy may leave for SSD without a write because the GPU holds the tensor:
  // CACHE tensors only; a DURABLE one still gets an SSD copy (a GPU fault must not lose it).
  static bool DropsWithoutWrite(const Object& o) {
    return o.gpu.has_value() && o.durability == Durability::kCache;
  }
  // Releases the host copy of a demoted object (its SSD copy stays).
  void DropHostCopy(Object* o, std::vector<PendingFree>* frees) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Waits, with `o` pinned, until o->*flag (a transfer in flight) is false or `deadline`; returns
  // whether it cleared. `o` may be freed on return: the caller looks the key up again.
  bool AwaitCleared(Object* o, bool Object::*flag, absl::Time deadline,
                    std::vector<PendingFree>* frees) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Frees a retired object if nothing holds it any more.
  void MaybeFreeRetired(Object* o, std::vector<PendingFree>* frees)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Time Clamp(absl::Time deadline) const;
  // Bytes used and capacity of the host tier, over all pools.
  std::pair<uint64_t, uint64_t> HostUsage() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Zeroes freed ranges without the lock, then returns them to their pools.
  void Reclaim(const std::vector<PendingFree>& frees) ABSL_LOCKS_EXCLUDED(mu_);

  tiers::HostTier* const host_;
  tiers::SsdTier* const ssd_;
  tiers::GpuTier* const gpu_;
  const StoreOptions options_;

  absl::Mutex mu_;
  absl::flat_hash_map<std::string, std::unique_ptr<Object>> objects_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<Object*, std::unique_ptr<Object>> retired_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, std::unique_ptr<Session>> sessions_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<uint64_t, LeaseEntry> leases_ ABSL_GUARDED_BY(mu_);
  const std::unique_ptr<policy::EvictionPolicy> eviction_ ABSL_GUARDED_BY(mu_);
  // Tracks the GPU copies of sealed objects (victims of GPU demotion).
  const std::unique_ptr<policy::EvictionPolicy> gpu_eviction_ ABSL_GUARDED_BY(mu_);
  uint64_t gpu_pinned_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  std::multimap<int64_t, Object*> expiries_ ABSL_GUARDED_BY(mu_);  // unix ms -> sealed object
  uint64_t next_lease_id_ ABSL_GUARDED_BY(mu_) = 1;
  uint64_t pinned_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t reclaiming_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t demoting_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<PendingWrite> writing_
      ABSL_GUARDED_BY(mu_);  // started, not yet written  // host bytes being written to SSD
  uint64_t host_frees_ ABSL_GUARDED_BY(mu_) = 0;  // bumped whenever host memory returns
  absl::flat_hash_map<uint32_t, uint64_t> pool_demand_ ABSL_GUARDED_BY(mu_);  // bytes waited for
  bool migrate_now_ ABSL_GUARDED_BY(mu_) = false;
  tiers::SystemPressure system_ ABSL_GUARDED_BY(mu_);  // last reading by the migrator
  Counters counters_ ABSL_GUARDED_BY(mu_);
};

}  // namespace tensord::store
