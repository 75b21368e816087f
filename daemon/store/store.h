// The store's façade (DESIGN.md "Store"): the public operations on tensors (Create -> Seal ->
// Get/Release -> Delete, Abort; Prefetch, Evict), sessions and statistics. Behind it: the object
// table (store/object_table.h: objects, copies per tier, leases, sessions, expiry), the tiers
// (tiers/tier.h), the mover (store/mover.h: every copy between tiers, with the codec stage) and
// the policies (policy/: eviction victims, pressure demand). mu_ guards the table, the policies
// and the host and GPU tiers' pools. Requests that must wait (a swap-in, a copy up, room) are
// handed to the store's executor and complete through their callback when their move is done;
// freed memory is scrubbed on the mover's scrubber thread, never under the lock.
#pragma once

#include <algorithm>
#include <deque>
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
#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "daemon/memory/allocator.h"
#include "daemon/policy/eviction.h"
#include "daemon/policy/lookahead.h"
#include "daemon/policy/predictor.h"
#include "daemon/store/index.h"
#include "daemon/store/mover.h"
#include "daemon/store/object_table.h"
#include "daemon/store/tenants.h"
#include "daemon/store/types.h"
#include "daemon/tiers/gpu_tier.h"
#include "daemon/tiers/host_tier.h"
#include "daemon/tiers/pressure.h"
#include "daemon/tiers/remote_tier.h"
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
  X(gpu_evictions) X(prefetches) X(prefetched_bytes) X(codec_encodes) X(codec_encode_in_bytes)  \
  X(codec_encode_out_bytes) X(codec_stored_raw) X(codec_decodes) X(codec_decode_in_bytes)     \
  X(codec_decode_out_bytes) X(codec_decode_failures) X(codec_over_budget)                          \
  X(lookahead_hints) X(lookahead_refreshed) X(lookahead_unknown) X(lookahead_dropped)  \
  X(lookahead_expired) X(lookahead_issued) X(lookahead_used) X(lookahead_wasted)       \
  X(lookahead_late) X(lookahead_failed) X(lookahead_bytes) X(lookahead_predicted)  \
  X(lookahead_remote_found) X(lookahead_remote_missed)                             \
  X(restored) X(restored_bytes) X(restore_dropped) X(restore_verified) X(restore_verify_failures) \
  X(peer_denied) X(remote_publishes) X(remote_published_bytes) X(remote_publish_failures) \
  X(remote_lookups) X(remote_hits) X(remote_misses) X(remote_demotions) X(remote_publish_skipped) \
  X(remote_deletes) X(ssd_evictions) X(ssd_evicted_bytes) X(ssd_drops)
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
  policy::ClassLifetime lifetime;  // the tier policy's view of this pool's copies
};

struct GpuDeviceStats {
  std::string name, model;
  uint32_t arena = 0;
  uint64_t arena_bytes = 0, used_bytes = 0;
  uint64_t device_free_bytes = 0, device_total_bytes = 0;
};

// One tenant's use of the daemon (index 0: the shared memory and the operator's sessions).
struct TenantStats {
  std::string name;
  uint64_t sessions = 0, leases = 0;
  uint64_t host_capacity_bytes = 0, host_used_bytes = 0;
  uint64_t ssd_bytes = 0, gpu_bytes = 0;
  uint64_t quota_rejections = 0;  // RESOURCE_EXHAUSTED for a quota of its own
  uint64_t denied_requests = 0;   // PERMISSION_DENIED by the service
};

struct StoreStats {
  Counters counters;
  std::vector<TenantStats> tenants;  // by TenantId, when tenants are configured
  std::vector<PoolStatsEntry> pools;
  uint64_t capacity_bytes = 0;
  uint64_t used_bytes = 0;
  uint64_t pinned_bytes = 0;
  bool ssd_present = false;
  tiers::SsdStats ssd;
  bool remote_present = false;
  tiers::RemoteStats remote;
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
  std::vector<CodecStat> codecs;  // per codec, those that have run
};

struct ListResult {
  std::vector<TensorInfo> tensors;
  bool truncated = false;
};

struct StoreOptions {
  // The compression of tensors whose Create leaves it to the pool class (COMPRESSION_DEFAULT):
  // by host pool class name, else `default_compression`. A lossy default applies to CACHE
  // tensors only; DURABLE ones are then stored losslessly.
  std::map<std::string, codec::Policy> class_compression;
  codec::Policy default_compression;
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
  // The eviction policy of the host and GPU tiers, by name (policy::MakeEvictionPolicy).
  std::string eviction = "lru";
  // S3-FIFO's small queue: its share of a tier's tracked bytes (policy::PolicyOptions).
  double s3fifo_small = 0.10;
  // Makes the policies instead of `eviction` when set (tests observe the policy through it).
  std::function<std::unique_ptr<policy::EvictionPolicy>(TierId)> make_policy;
  // Threads of the store's executor: requests waiting for moves or room.
  int executor_threads = 4;
  // Look-ahead (Hint): the share of each tier that hinted tensors may hold protected from
  // eviction, how many hints are queued at most, and how long a hint lasts by default.
  double hint_share = 0.25;
  size_t max_hints = size_t{1} << 20;
  absl::Duration hint_ttl = absl::Seconds(30);
  // Prediction without hints: each session's Gets teach a successor table (at most
  // predictor_keys keys) and strides on numbered keys; a predicted tensor is queued as a hint
  // for predict_ttl (the same window, promotions and counters; lookahead_predicted counts them).
  bool predict = true;
  size_t predictor_keys = size_t{1} << 16;
  absl::Duration predict_ttl = absl::Seconds(5);
  // Warm restart: where every sealed, global tensor's state is recorded as it changes
  // (borrowed; nullptr: nothing survives the store).
  Index* index = nullptr;
  // Who owns which namespace, and the quotas. A tenant's tensors use its host pools only.
  Tenants tenants;
  // The remote tier (when the store has one): which sealed tensors are published there as soon
  // as they are sealed (write-through), and whether a Get that finds nothing here looks there.
  // Only global tensors of namespaces no tenant owns are published or looked up.
  bool remote_publish_cache = true;
  bool remote_publish_durable = false;
  // CACHE tensors without a Redis copy that the SSD tier lets go for room are moved there
  // (SSD -> Redis, as they are encoded) instead of being dropped.
  bool remote_demote_cache = true;
  // Host pool classes that say otherwise: true, every tensor of the class is published (CACHE
  // and DURABLE); false, none is.
  absl::flat_hash_map<std::string, bool> remote_publish_pools;
  bool remote_lookup = true;
};

// What Store::Restore found in the index.
struct RestoreReport {
  uint64_t tensors = 0, bytes = 0;            // restored
  uint64_t host_copies = 0, ssd_copies = 0;   // ... with a copy there
  uint64_t dropped = 0, dropped_durable = 0;  // records refused, or left with no copy
  uint64_t copies_dropped = 0;                // copies refused (their tensor kept another)
};

// What a Hint call did with its keys.
struct HintOutcome {
  uint64_t accepted = 0;   // queued
  uint64_t refreshed = 0;  // queued already (a duplicate): rank kept, expiry extended
  uint64_t unknown = 0;    // no such sealed tensor: ignored
  uint64_t dropped = 0;    // the queue was full (options.max_hints)
  uint64_t remote = 0;     // not here: looked up in the remote tier, queued when found there
};

// One key's answer in a Prefetch.
struct PrefetchOutcome {
  absl::Status status;
  bool moved = false;  // false: it was there already
};

using CreateDone = absl::AnyInvocable<void(absl::StatusOr<TensorInfo>) &&>;
using GetDone = absl::AnyInvocable<void(absl::StatusOr<std::vector<GetOutcome>>) &&>;
using PrefetchDone = absl::AnyInvocable<void(absl::StatusOr<std::vector<PrefetchOutcome>>) &&>;
using EvictDone = absl::AnyInvocable<void(absl::StatusOr<std::string>) &&>;

class Store {
 public:
  // `host`, `ssd` (nullptr: no SSD tier) and `gpu` (nullptr: no GPU tier) are borrowed and
  // must outlive the store. INVALID_ARGUMENT-worthy options (an unknown eviction policy) abort:
  // the configuration validated them.
  Store(tiers::HostTier* host, StoreOptions options, tiers::SsdTier* ssd = nullptr,
        tiers::GpuTier* gpu = nullptr, tiers::RemoteTier* remote = nullptr);
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  // Opens a session and returns its unguessable id. INVALID_ARGUMENT for a client_name over
  // 128 bytes or not valid text (ValidateClientName), RESOURCE_EXHAUSTED at max_sessions or
  // at the tenant's max_sessions. The session's leases count against `tenant`'s quota.
  absl::StatusOr<std::string> OpenSession(absl::string_view client_name,
                                          TenantId tenant = kNoTenant);
  const Tenants& tenants() const { return options_.tenants; }
  // Counts a request the service refused with PERMISSION_DENIED (peer_denied; and for
  // `tenant`, when it is one).
  void CountDenied(std::optional<TenantId> tenant);
  // Ends a session: releases its leases, aborts its unsealed creates and deletes its
  // session-scoped tensors. Unknown ids are ignored (closing is idempotent).
  void CloseSession(const std::string& session_id);

  // Allocates an unsealed tensor the caller then writes. Evicts unleased CACHE tensors of the
  // candidate pools if needed. INVALID_ARGUMENT (bad field), FAILED_PRECONDITION (unknown
  // session), ALREADY_EXISTS, RESOURCE_EXHAUSTED (no room after eviction; lease quota).
  // Under pressure it waits for demotions until `deadline` (at most options.pressure_wait):
  // such a Create completes on the store's executor. `done` runs once, maybe before CreateAsync
  // returns. Create is the blocking form.
  void CreateAsync(const std::string& session_id, const CreateParams& params, absl::Time deadline,
                   CreateDone done);
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
  // else promotes from SSD to host. A Get that finds a move of the key in flight waits for it.
  // Keys that need a move complete on the store's executor when their moves are done; `done`
  // runs once (inline when every key was a hit). Get is the blocking form.
  void GetAsync(const std::string& session_id, absl::string_view ns, std::vector<std::string> keys,
                WantTier want, absl::Time deadline, int device, GetDone done);
  absl::StatusOr<std::vector<GetOutcome>> Get(const std::string& session_id, absl::string_view ns,
                                              std::span<const std::string> keys, WantTier want,
                                              absl::Time deadline = absl::InfiniteFuture(),
                                              int device = -1);
  // Promotes each key to `tier` (HOST or GPU) without leasing it: from SSD (or GPU) to host, or
  // up to the GPU (`device`, -1: any). The copy then serves the next Get at once, and stays
  // until migration or eviction moves it again. Whole-call errors as Get's; per key: OK (moved,
  // or there already), NOT_FOUND, FAILED_PRECONDITION (unsealed), RESOURCE_EXHAUSTED (no room),
  // DATA_LOSS or NOT_FOUND (a failed read of a DURABLE or CACHE tensor), DEADLINE_EXCEEDED.
  void PrefetchAsync(absl::string_view ns, std::vector<std::string> keys, WantTier tier,
                     absl::Time deadline, int device, PrefetchDone done);
  absl::StatusOr<std::vector<PrefetchOutcome>> Prefetch(
      absl::string_view ns, std::span<const std::string> keys, WantTier tier = WantTier::kHost,
      absl::Time deadline = absl::InfiniteFuture(), int device = -1);
  // Look-ahead: `keys` are what the next requests will read, in that order. Each known, sealed
  // key is queued after those already queued (a duplicate keeps its rank) until it is read by a
  // Get, deleted, or `ttl` passes (0: options.hint_ttl; at most an hour). The first queued
  // tensors, as many as fit options.hint_share of `tier`, are protected from eviction there and
  // promoted to it (from SSD, or to the GPU) through the mover, lowest rank first, one batch at
  // a time so that demand moves are not starved. Unknown keys are counted and ignored.
  // INVALID_ARGUMENT (namespace, a key, more than kMaxHintKeys keys, tier SSD, ttl),
  // FAILED_PRECONDITION (tier GPU without a GPU tier).
  static constexpr size_t kMaxHintKeys = 65536;
  absl::StatusOr<HintOutcome> Hint(absl::string_view ns, std::span<const std::string> keys,
                                   WantTier tier = WantTier::kHost,
                                   absl::Duration ttl = absl::ZeroDuration(), int device = -1)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Runs the look-ahead: expires stale hints, extends the protected window, starts the next
  // promotion batch. Hint, Get and the migrator call it; tests may.
  void PumpLookAhead() ABSL_LOCKS_EXCLUDED(mu_);
  // Queues a hint of o (sealed) to `to`, counting the outcome into *out; CountHints books an
  // outcome in the store's counters.
  void QueueHint(Object* o, TierId to, int device, absl::Time expiry, HintOutcome* out)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void CountHints(const HintOutcome& h) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A Hint's keys that are not here: looked up in the remote tier (on the executor); those found
  // are adopted and queued as hinted, to `to` (lookahead_remote_found / _missed). The caller
  // took a slot of hint_lookups_in_flight_; this gives it back.
  void HintRemote(absl::string_view ns, std::vector<std::string> keys, TierId to, int device,
                  absl::Time expiry) ABSL_LOCKS_EXCLUDED(mu_);
  // Ends leases, all or nothing. NOT_FOUND if any id is not a lease of this session,
  // INVALID_ARGUMENT for an empty or duplicated list, FAILED_PRECONDITION (unknown session).
  absl::Status Release(const std::string& session_id, std::span<const uint64_t> lease_ids);
  // Removes a sealed tensor's key now; its memory is freed when the last lease ends, its remote
  // copy deleted from Redis (now, or when Redis answers again). A key not here is looked up in
  // the remote tier where ConsultsRemote(ns): another daemon's tensor is deleted there.
  // INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION (unknown session, or unsealed: Abort it
  // instead), UNAVAILABLE (not here, and the remote tier is degraded: retry).
  absl::Status Delete(const std::string& session_id, absl::string_view ns, absl::string_view key);
  // Returns one tensor's metadata; a key not here is looked up in the remote tier where
  // ConsultsRemote(ns) (location.tier kRemote: a Get brings it). INVALID_ARGUMENT, NOT_FOUND.
  absl::StatusOr<TensorInfo> Stat(absl::string_view ns, absl::string_view key);
  // Whether Delete and Stat of a key of `ns` not held here ask the remote tier (Redis I/O, up to
  // its timeouts: callers keep them off threads that must not block).
  bool ConsultsRemote(absl::string_view ns) const;
  // Whether (ns, key) is in the table now (Delete and Stat of it do no Redis I/O).
  bool Holds(absl::string_view ns, absl::string_view key) ABSL_LOCKS_EXCLUDED(mu_);
  // Returns tensors of `ns` whose key starts with `prefix`, sorted by key, at most `limit`.
  absl::StatusOr<ListResult> List(absl::string_view ns, absl::string_view prefix, uint32_t limit);
  StoreStats Stats();
  // Deletes every tensor whose TTL has passed and returns how many ranges that freed. Lookups
  // already hide expired tensors; this reclaims their memory (the daemon calls it periodically).
  size_t ExpireDue();
  // Waits until no request is waiting on the executor and every freed range is back in its
  // pool (tests; freed memory is scrubbed asynchronously).
  void Quiesce();

  // Warm restart (restart.cc). Rebuilds the table from an index read at start, before any
  // request: each record is checked like a Create (names, dtype, shape, sizes) and its copies'
  // ranges are claimed again in their tiers (host copies only when `host_reattached`: the last
  // instance's segments were taken over); a record refused, or left with no copy, is dropped
  // and logged (a DURABLE one as data loss). Restored tensors are served at once but their bytes
  // are not yet checked: VerifyRestored checks them in the background, and a Get checks one
  // first if it is still waiting. A host copy waiting for its check holds a reader, so that no
  // migration moves unchecked bytes.
  RestoreReport Restore(const LoadedIndex& loaded, bool host_reattached) ABSL_LOCKS_EXCLUDED(mu_);
  // Checks every restored tensor's bytes (host copy: the XXH3 of its bytes against the index;
  // SSD-only: a read, which checks the extent's checksum) until all are checked or `stop` is
  // notified. What fails is dropped (restore_verify_failures; a DURABLE tensor left without a
  // copy is logged as data loss) and never served. Returns the bytes checked.
  uint64_t VerifyRestored(absl::Notification* stop) ABSL_LOCKS_EXCLUDED(mu_);
  // Restored tensors not yet checked.
  size_t Unverified() ABSL_LOCKS_EXCLUDED(mu_);

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
  // write failed; the tensor stays on the host), INVALID_ARGUMENT. EvictAsync completes on the
  // executor.
  void EvictAsync(absl::string_view ns, absl::string_view key, EvictDone done);
  absl::StatusOr<std::string> Evict(absl::string_view ns, absl::string_view key)
      ABSL_LOCKS_EXCLUDED(mu_);

  // Returns the daemon's address of a location (for tests and benchmarks in-process).
  uint8_t* Address(const Location& loc) const {
    return loc.tier == WantTier::kGpu ? gpu_->device(loc.arena).base() + loc.offset
                                      : host_->Address(loc.arena, loc.offset);
  }

 private:
  // A range to scrub and return to its tier once no lock is held.
  struct PendingFree {
    TierId tier;
    tiers::Range range;
    bool erase = false;        // remote tier: delete the tensor there (a client's Delete)
    std::string erasing;       // erase: its key in remote_erasing_, forgotten once erased...
    absl::Time erasing_until;  // ... if the entry is still this one (not a later Delete's)
  };
  // The PendingFree of a remote copy that o lets go of (erased from Redis if o was deleted).
  PendingFree RemoteFree(const Object& o, const tiers::Range& range) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  using Frees = std::vector<PendingFree>;
  // One batched trip of keys up to a tier: Get's misses (leased on arrival) or a Prefetch.
  struct Lift;
  // One key's move, booked under the lock and carried out without it.
  struct Booked {
    size_t i;  // index into the request's keys
    Object* o;
    TierId from;
    MoveItem item;
  };

  tiers::Tier* TierOf(TierId t) const { return tiers_[tiers::Index(t)]; }
  policy::EvictionPolicy* PolicyOf(TierId t) const { return policies_[tiers::Index(t)].get(); }
  static policy::Handle HandleOf(Object* o) { return reinterpret_cast<policy::Handle>(o); }
  static Object* ObjectOf(policy::Handle h) { return reinterpret_cast<Object*>(h); }
  // A move of o's copy in `from` (its range and encoding), the destination left to the caller.
  static MoveItem MoveFrom(const Object& o, TierId from) {
    const Copy& src = o.copy(from);
    MoveItem item;
    item.src = src.range;
    item.src_codec = src.codec;
    item.nbytes = o.nbytes;
    item.dtype = o.dtype;
    item.shape = o.shape;
    return item;
  }
  static policy::Footprint FootprintOf(const Object& o, const tiers::Range& r, bool moved) {
    return {r.space, r.reserved, o.id, o.parent_id, moved};
  }
  absl::Time Clamp(absl::Time deadline) const;

  // --- store.cc: the façade's own steps.
  absl::Status CreateLocked(const std::string& session_id, const CreateParams& params,
                            uint64_t nbytes, absl::Time deadline, bool may_wait, Frees* frees,
                            bool* retry, uint64_t* gpu_room, absl::StatusOr<TensorInfo>* out)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<TensorInfo> CreateWaiting(const std::string& session_id,
                                           const CreateParams& params, uint64_t nbytes,
                                           absl::Time deadline) ABSL_LOCKS_EXCLUDED(mu_);
  absl::StatusOr<TensorInfo> TryAllocate(Session* s, const CreateParams& params, uint64_t nbytes)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status SealLocked(const std::string& session_id, absl::string_view ns,
                          absl::string_view key, Object* expected,
                          std::optional<uint64_t> checksum = std::nullopt)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status CheckWant(WantTier want, int device) const;
  void ExpireLocked(Frees* frees) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // --- copies.cc: copies, leases and their policy notices.
  TensorInfo Info(const Object& o) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  Location LocationOf(const Object& o, TierId t) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void GrantLease(Session* s, Object* o, TierId t, GetOutcome* r)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void DropLease(uint64_t lease_id, Frees* frees) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Readers keep a copy where it is (a move reading it, a request needing it).
  void AddReader(Object* o, TierId t) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void DropReader(Object* o, TierId t) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Tells t's policy when the copy's held state (leases or readers) changed from `was_held`.
  void SyncPin(Object* o, TierId t, bool was_held) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Starts t's policy tracking o's copy there, with its pins (held; guarded by a hint).
  // `moved`: the copy came by a move, not a write (policy::Footprint::moved).
  void TrackCopy(Object* o, TierId t, bool moved = false) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  static uint8_t TierBit(TierId t) { return uint8_t(1u << tiers::Index(t)); }
  static bool Guarded(const Object& o, TierId t) { return (o.guarded & TierBit(t)) != 0; }
  // A move into t finished: the copy is now `range` (encoded by `codec`, with this error).
  void AddCopy(Object* o, TierId t, const tiers::Range& range, codec::CodecId codec,
               float rel_rmse = 0) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The compression a Create gets: its own, or (kDefault) its pool class's; a lossy default
  // is lossless for a DURABLE tensor.
  codec::Policy ResolveCompression(const CreateParams& params, const std::string& pool) const;
  // Drops t's copy (the policy hears `why`); its range is freed (SSD) or queued in `frees`.
  void DropCopy(Object* o, TierId t, policy::RemovalReason why, Frees* frees)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Queues a range for scrubbing and freeing (an SSD range is freed at once).
  void FreeRange(TierId t, const tiers::Range& range, Frees* frees)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Removes o's key (Delete, Abort, expiry, session end, a lost CACHE tensor); its copies go
  // when nothing holds it.
  void Retire(Object* o, policy::RemovalReason why, Frees* frees)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void MaybeFreeRetired(Object* o, Frees* frees) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Scrubs freed ranges without the lock, then returns them to their pools: on the scrubber
  // thread, or (`now`, from the store's own threads) before returning.
  void Reclaim(Frees frees, bool now = false) ABSL_LOCKS_EXCLUDED(mu_);
  void ReturnRanges(const Frees& frees, uint64_t scrubbed) ABSL_LOCKS_EXCLUDED(mu_);

  // --- remote.cc: the remote tier (write-through at Seal, lookups on a miss).
  // Whether tensors of `ns` go to (and are looked up in) the remote tier.
  bool RemoteServes(const Object& o) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool RemoteLooksUp(absl::string_view ns) const;
  absl::Status DeleteRemote(absl::string_view ns, absl::string_view key) ABSL_LOCKS_EXCLUDED(mu_);
  absl::StatusOr<TensorInfo> StatRemote(absl::string_view ns, absl::string_view key)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Starts writing o's host copy to the remote tier when its options say so (after its Seal).
  void MaybePublish(Object* o) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Writes o's host copy to the remote tier (on the executor). `demote`: to make host room (no
  // usable SSD below): once the copy is in Redis the host copy goes (remote_demotions), unless
  // leased meanwhile; a failure marks o remote_refused, so the next room made drops it.
  void StartPublish(Object* o, bool demote) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Publish(Object* o, MoveItem item, bool demote) ABSL_LOCKS_EXCLUDED(mu_);
  // Bytes that may wait to be written to Redis, from host and from SSD each.
  uint64_t RemoteBacklog() const;
  // The tensor as the remote tier names and describes it.
  tiers::RemoteTensor RemoteTensorOf(const Object& o) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Whether a CACHE tensor a tier lets go (a full SSD, or host memory with no usable SSD below)
  // moves to the remote tier (remote.demote_cache, its pool class, a healthy tier), or will once
  // that tier's backlog of such moves (`backlog` bytes now) has room.
  enum class RemoteTake { kNo, kYes, kLater };
  RemoteTake RemoteTakes(const Object& o, uint64_t backlog) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Moves o's SSD copy to the remote tier as it is encoded (on the executor); once there, the
  // SSD copy goes (remote_demotions). A failure leaves it on SSD, to be dropped next time.
  void StartSsdToRemote(Object* o) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void FinishSsdToRemote(Object* o, MoveItem item) ABSL_LOCKS_EXCLUDED(mu_);
  // Looks up in the remote tier the keys of `lift` that were not here (lift->remote): a tensor
  // found there joins the table with its remote copy and is lifted like any other.
  void FindRemote(Lift* lift) ABSL_LOCKS_EXCLUDED(mu_);
  // A tensor found in the remote tier, checked like a Create and added to the table (nullptr
  // and *why when refused).
  Object* AdoptRemote(absl::string_view ns, absl::string_view key, const tiers::RemoteFound& f,
                      absl::Status* why) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // --- restart.cc: the index and the checks after a restart.
  // Records o's state in the index (a sealed, global tensor; copies on host and in SSD files),
  // or its end when no copy there would survive the daemon. Before o's range goes free.
  void Persist(Object* o) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Checks a restored tensor's host copy now, under the lock (a Get that found it waiting).
  // OK when the tensor still has a copy to serve; else what the Get answers (the tensor is gone).
  absl::Status VerifyNow(Object* o, Frees* frees) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A check's result for o's copy in t: keeps it (ending its wait) or drops it and, when no
  // copy is left, the tensor. Returns VerifyNow's status.
  absl::Status Checked(Object* o, TierId t, bool good, Frees* frees)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // What a lookup of a key with no tensor answers: DATA_LOSS for a DURABLE tensor a restart
  // lost (MarkLost), else NOT_FOUND.
  absl::Status Missing(absl::string_view ns, absl::string_view key) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void MarkLost(absl::string_view ns, absl::string_view key) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // --- lookahead.cc: hints.
  // Guards o's copy in t against eviction (a policy pin while guarded, whenever the copy is
  // tracked), or stops guarding it.
  void Guard(Object* o, TierId t) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Unguard(Object* o, TierId t) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // o's copy in t left while guarded: queue its move back up.
  void GuardedCopyLeft(Object* o, TierId t) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Session s read `key` of ns: learns from it and, when `queue` (the last key of a batch: the
  // batch's own keys need no prediction), queues what it predicts that is not where the Get
  // (`want`, `device`) would find it. Returns whether it queued anything.
  bool Predict(Session* s, absl::string_view ns, absl::string_view key, WantTier want, int device,
               bool queue) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A Get read o: its hint is used (or late). Returns whether o was hinted.
  bool ConsumeHint(Object* o) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // o is leaving (retired): its hint goes, wasted if it had been promoted.
  void ForgetHint(Object* o) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Time Now() const {
    return (options_.clock != nullptr ? options_.clock : Clock::Real())->Now();
  }

  // --- lift.cc: moves up, for Get and Prefetch (on the executor).
  // A lift of `nkeys` keys to `want`'s tier, after the whole-call checks of `call` ("Get",
  // "Prefetch"): INVALID_ARGUMENT (batch size, namespace, tier, device), FAILED_PRECONDITION.
  absl::StatusOr<std::unique_ptr<Lift>> NewLift(absl::string_view call, absl::string_view ns,
                                                size_t nkeys, WantTier want, absl::Time deadline,
                                                int device) const;
  void RunLift(Lift* lift) ABSL_LOCKS_EXCLUDED(mu_);
  // Books the keys that can move now in one batch per source tier and returns them; the rest
  // are left in `alone`.
  std::vector<Booked> BookLifts(Lift* lift, std::vector<size_t>* alone)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The source a copy in `to` is made from: for the GPU the host copy; for the host the GPU
  // copy (faster and never stale), else the SSD copy. nullopt: none exists yet.
  std::optional<TierId> SourceFor(const Object& o, TierId to) const;
  // Reserves `to`'s range for `o` and marks the move in flight.
  absl::StatusOr<Booked> Book(size_t i, Object* o, TierId to, int device)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RunBooked(std::span<Booked> booked, TierId to) ABSL_LOCKS_EXCLUDED(mu_);
  void FinishLift(Lift* lift, Booked& b, Frees* frees) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void LiftFailed(Lift* lift, Booked& b, Frees* frees) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // One key, waiting for moves in flight and for room as needed.
  void LiftOne(Lift* lift, size_t i, TierId to) ABSL_LOCKS_EXCLUDED(mu_);
  // LiftOne's step under the lock: completes key i, or says what to do next without the lock
  // (with the booked move in *b, or the pinned object that needs GPU room in *room_for).
  enum class LiftStep { kDone, kRetry, kMove, kUpToHost, kGpuRoom };
  LiftStep DecideLift(Lift* lift, size_t i, TierId to, bool host_held, Booked* b, Object** room_for,
                      Frees* frees) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A copy up of an SSD-only tensor: swaps it in first and returns it with its host copy held
  // (a reader and a pin), or nullptr with key i's error set.
  Object* LiftToHostAndHold(Lift* lift, size_t i) ABSL_LOCKS_EXCLUDED(mu_);
  // Demotes GPU copies for room for `o` (pinned, its host copy held; both let go here).
  // Returns whether to try again; else key i's error is set.
  bool MakeGpuRoom(Lift* lift, size_t i, Object* o, Frees* frees) ABSL_LOCKS_EXCLUDED(mu_);
  // Completes key i of the lift that found its copy in `t`: a lease, or "there already".
  void Arrived(Lift* lift, size_t i, Object* o, TierId t, bool moved)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Waits, with `o` pinned, until its copy in `t` is no longer in flight, or `deadline`;
  // returns whether it cleared. `o` may be freed on return: look the key up again.
  bool AwaitArrival(Object* o, TierId t, absl::Time deadline, Frees* frees)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // --- migration.cc: room, demotion, migrators and Evict.
  // When no host pool has room: waits for memory being scrubbed, or asks the migrator for
  // `nbytes` and waits briefly for memory to come back, or (no usable SSD) moves CACHE victims
  // to the remote tier and waits for them, or drops them. Returns true if the caller should
  // retry, false if nothing can make room.
  bool MakeRoom(std::span<const uint32_t> pools, uint64_t nbytes, absl::Time deadline, Frees* frees)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Unleased CACHE host copies for `nbytes` in one of `pools`: dropped when another tier holds
  // the tensor, else (`may_move`) moved to the remote tier if it takes them, else retired.
  // Returns whether anything was freed now; *waits: whether a victim was left to wait for the
  // remote tier's backlog.
  bool SelectVictims(std::span<const uint32_t> pools, uint64_t nbytes, bool may_move, Frees* frees,
                     bool* waits = nullptr) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool SsdUsable(uint64_t nbytes) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Makes the SSD tier's free bytes reach `nbytes` and its largest free range `largest` (when
  // it can) by letting CACHE copies at the SSD policy's victim end go: kept where another copy
  // lives (memory, or Redis while the remote tier serves), else evicted. Only `tenant`'s
  // copies go (for its own demotions); DURABLE, held, hinted and pinned ones stay. Returns
  // whether the SSD then has the room.
  bool MakeSsdRoom(uint64_t nbytes, uint64_t largest, TenantId tenant, Frees* frees)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Host -> SSD in two steps around the write: StartDemotions (lock held) drops host copies
  // whose data lives elsewhere and queues the others in writing_; FinishDemotions writes the
  // queue as one batch through the codec stage. Both return the host bytes they freed.
  uint64_t StartDemotions(std::span<Object* const> chosen, Frees* frees)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Without an SSD tier: above the high watermark, CACHE host copies go down to the remote
  // tier (dropped where Redis has them, moved where it takes them) until the low one. Returns
  // the host bytes it freed or started moving.
  uint64_t DemoteToRemote() ABSL_LOCKS_EXCLUDED(mu_);
  uint64_t FinishDemotions(Frees* frees) ABSL_LOCKS_EXCLUDED(mu_);
  // GPU -> host the same way; the copies down are returned by Start and run by Finish.
  uint64_t StartGpuDemotions(std::span<Object* const> chosen, std::vector<Booked>* downs,
                             Frees* frees) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  uint64_t FinishGpuDemotions(std::span<Booked> downs, Frees* frees) ABSL_LOCKS_EXCLUDED(mu_);
  // Whether a host copy may leave without a write because the GPU holds the tensor: CACHE
  // tensors only; a DURABLE one still gets an SSD copy (a GPU fault must not lose it).
  static bool DropsWithoutWrite(const Object& o) {
    return o.copy(TierId::kGpu).present && o.durability == Durability::kCache;
  }
  // Whether a GPU copy may be dropped without a copy down: a host copy, or an SSD copy on a
  // device that is not degraded.
  bool HasCopyBelowGpu(const Object& o) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool HostHasRoomFor(const Object& o) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<std::string> EvictHost(Object* o, Frees* frees, bool* wrote)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<std::string> EvictFromGpu(absl::string_view ns, absl::string_view key)
      ABSL_LOCKS_EXCLUDED(mu_);
  std::pair<uint64_t, uint64_t> HostUsage() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // With tenants: the bytes each tenant's host memory (by TenantId) should demote to get below
  // the low watermark (once above the high one); empty without tenants.
  std::vector<uint64_t> TenantDemotionTargets(bool short_of_memory) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Tenant quotas (store/tenant_quota.cc). OK, or RESOURCE_EXHAUSTED (counted) when `nbytes`
  // more in tier `t` (SSD or GPU) would take `tenant` past its quota; PERMISSION_DENIED for a
  // GPU copy of a tenant without GPU bytes.
  absl::Status QuotaAllows(TenantId tenant, TierId t, uint64_t nbytes, bool count = true)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Whether one more lease for a session of `tenant` stays within its max_leases.
  absl::Status LeaseQuotaAllows(TenantId tenant) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Adds (or with `sign` -1 removes) o's copy in t to its tenant's SSD or GPU bytes.
  void ChargeCopy(const Object& o, TierId t, int sign) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void TenantStatsLocked(StoreStats* st) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Each tenant's host memory (its pools; kNoTenant: the shared ones), by TenantId.
  std::vector<tiers::TierUsage> HostUseByTenant() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  tiers::HostTier* const host_;
  tiers::SsdTier* const ssd_;
  tiers::GpuTier* const gpu_;
  tiers::RemoteTier* const remote_;
  const std::array<tiers::Tier*, tiers::kTierCount> tiers_;
  const StoreOptions options_;
  Mover mover_;

  absl::Mutex mu_;
  ObjectTable table_ ABSL_GUARDED_BY(mu_);
  // Per tier (none for SSD): tracks the sealed copies there, offers victims.
  std::array<std::unique_ptr<policy::EvictionPolicy>, tiers::kTierCount> policies_
      ABSL_GUARDED_BY(mu_);
  std::array<uint64_t, tiers::kTierCount> pinned_bytes_ ABSL_GUARDED_BY(mu_) = {};
  uint64_t reclaiming_bytes_ ABSL_GUARDED_BY(mu_) = 0;   // host bytes queued for scrubbing
  uint64_t demoting_bytes_ ABSL_GUARDED_BY(mu_) = 0;     // host bytes being written to SSD
  uint64_t publishing_bytes_ ABSL_GUARDED_BY(mu_) = 0;   // host bytes being written to Redis
  int hint_lookups_in_flight_ ABSL_GUARDED_BY(mu_) = 0;  // Hints' Redis lookups running
  // Host bytes being moved to Redis to make room, by host pool (space): their memory returns
  // when they are there.
  absl::flat_hash_map<uint32_t, uint64_t> host_to_remote_by_pool_ ABSL_GUARDED_BY(mu_);
  // DemoteToRemote found nothing to move: it looks again after this (or when asked to).
  absl::Time remote_demotion_idle_until_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  // SSD bytes whose copies are being moved to Redis: room the SSD tier is about to get.
  uint64_t ssd_to_remote_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<Object*> writing_ ABSL_GUARDED_BY(mu_);  // started, not yet written
  uint64_t host_frees_ ABSL_GUARDED_BY(mu_) = 0;       // bumped whenever memory returns
  absl::flat_hash_map<uint32_t, uint64_t> pool_demand_ ABSL_GUARDED_BY(mu_);  // bytes waited for
  bool migrate_now_ ABSL_GUARDED_BY(mu_) = false;
  tiers::SystemPressure system_ ABSL_GUARDED_BY(mu_);  // last reading by the migrator
  Counters counters_ ABSL_GUARDED_BY(mu_);
  // By TenantId: what each uses of what its quotas bound.
  struct TenantUse {
    uint64_t sessions = 0, leases = 0, ssd_bytes = 0, gpu_bytes = 0, quota_rejections = 0;
    uint64_t denied = 0;
  };
  std::vector<TenantUse> tenant_use_ ABSL_GUARDED_BY(mu_);
  policy::LookAhead lookahead_ ABSL_GUARDED_BY(mu_);
  policy::Predictor predictor_ ABSL_GUARDED_BY(mu_);
  Index* const index_;
  std::deque<std::pair<std::string, std::string>> to_verify_ ABSL_GUARDED_BY(mu_);  // ns, key
  // DURABLE tensors a restart could not bring back intact, by table key: a Get or Stat of one
  // answers DATA_LOSS (not NOT_FOUND) until it is created again or deleted. At most kMaxLost.
  static constexpr size_t kMaxLost = 1 << 16;
  absl::flat_hash_set<std::string> lost_ ABSL_GUARDED_BY(mu_);
  // Keys deleted here whose remote copy is not yet erased from Redis (the erase runs off the
  // lock, after the last lease): no Get or Stat here finds them there meanwhile. Until the time
  // given, at most (a lease held longer reopens the window).
  absl::flat_hash_map<std::string, absl::Time> remote_erasing_ ABSL_GUARDED_BY(mu_);
  // Marks (ns, key) as being erased from Redis for a minute at most; returns the mark's end.
  absl::Time MarkRemoteErasing(absl::string_view ns, absl::string_view key)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool RemoteErasing(absl::string_view ns, absl::string_view key)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool lookahead_pumping_ ABSL_GUARDED_BY(mu_) = false;  // a thread runs PumpLookAhead
  bool lookahead_again_ ABSL_GUARDED_BY(mu_) = false;    // ... and must look once more
  int lookahead_moving_ ABSL_GUARDED_BY(mu_) = 0;        // promotion batches in flight
  uint64_t lookahead_issues_ ABSL_GUARDED_BY(mu_) = 0;   // moves started, numbering each
  // Writes to the remote tier that make host room. Not the executor: a Create or swap-in that
  // waits for room waits there, and must not hold up the writes it waits for. Declared last,
  // so destroyed (its queue run) first.
  WorkQueue room_writes_{2};
};

}  // namespace tensord::store
