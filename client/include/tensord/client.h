// tensord C++ client: the whole public API. Connects to a tensord daemon over its Unix socket,
// holds a session (an Attach stream) for as long as the client or any of its leases live,
// and exposes host tensors zero-copy through shared-memory segments mapped once per client.
//
//   auto client = tensord::Client::Connect({.socket_path = "./run/tensord.sock"});
//   auto t = (*client)->Create("layer.0.k", tensord::DType::kFloat16, {1, 32, 2048, 128});
//   std::memcpy(t->data(), src, t->nbytes());
//   t->Seal();
//   auto lease = (*client)->Get("layer.0.k");   // lease->data() points into shared memory
//
// GPU tensors (daemons with a GPU tier): Create with CreateOptions{.tier = Tier::kGpu} returns
// a device pointer; write it on any stream, then Seal(stream): the library records a CUDA
// event there and the daemon publishes the tensor once that event completes. Get(key,
// Tier::kGpu) returns a device pointer into the daemon's arena (opened once per arena through
// CUDA IPC), copying the tensor up to the GPU first if it is not there.
//
// Every call has a deadline (ClientOptions::deadline) and returns absl::Status codes as listed
// in the README. A Client is safe to use from several threads; Lease and WritableTensor are
// not (move them to one owner).
//
// Daemon restarts: a Client survives them. When its session has ended (the daemon stopped, was
// killed, or restarted), its next call first opens a new session, retrying with backoff (50 ms
// doubling to 1 s) for up to ClientOptions::reconnect_timeout, and a call that fails because the
// daemon went away mid-call is sent once more on the new session. Sessions are not restored:
// leases and unsealed creates belong to the instance that granted them and die with it. A Lease
// or WritableTensor made before the restart reports valid() == false; its data pointer stays
// mapped (to the old instance's memory, which the new one may reuse: read nothing through it),
// and Release / Seal / Abort on it return FAILED_PRECONDITION without reaching the new daemon.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "tensord/dtype.h"

namespace tensord {

enum class Durability : int32_t { kDurable = 1, kCache = 2 };
enum class Scope : int32_t { kGlobal = 1, kSession = 2 };
// kSsd, kRemote: in Stat answers only (a tensor on the SSD tier, or only in the remote tier)
enum class Tier : int32_t { kAny = 0, kHost = 1, kGpu = 2, kSsd = 3, kRemote = 4 };
// How the daemon may store a tensor's copies below the host tier (swap): as its pool class says
// (kDefault), raw, losslessly encoded, or lossy within an error budget (the relative RMSE of the
// round trip). Decoded and verified on the way back up.
enum class Compression : int32_t { kDefault = 0, kLossless = 1, kLossy = 2, kNone = 3 };
// "default", "none", "lossless", "lossy".
const char* CompressionName(Compression c);

struct ClientOptions {
  // Empty: $TENSORD_SOCKET, else ./run/tensord.sock.
  std::string socket_path;
  // Namespace of every key this client names; empty is the default namespace.
  std::string ns;
  std::string client_name = "cpp-client";
  std::chrono::milliseconds deadline{10000};
  // How long a call waits for a restarted (or stopped) daemon to take a new session before it
  // fails with UNAVAILABLE; 0: never reconnect (calls fail as the dead session's would).
  std::chrono::milliseconds reconnect_timeout{30000};
};

struct CreateOptions {
  std::string pool;  // empty: the daemon picks the best-fitting pool class (on kGpu: a [[gpu.pool]]
                     // class name, on the chosen device)
  Tier tier = Tier::kHost;  // kHost or kGpu: where the tensor is created and written
  int device = -1;          // kGpu: this process's CUDA ordinal; -1: any of the daemon's GPUs
  Durability durability = Durability::kDurable;
  Scope scope = Scope::kGlobal;
  int64_t ttl_ms = 0;  // 0: never expires; else deleted this long after Seal
  Compression compression = Compression::kDefault;
  double error_budget = 0;          // kLossy: the largest relative RMSE allowed, e.g. 0.01
  std::vector<std::string> codecs;  // kLossy: the codecs allowed ("int8", "fp8_e4m3", ...)
  // Optional: the key this tensor continues (e.g. the previous block of a KV prefix chain), a
  // hint for the daemon's eviction; it need not exist.
  std::string parent;
};

struct Location {
  Tier tier = Tier::kHost;
  uint32_t arena = 0;
  uint64_t offset = 0;
  uint64_t length = 0;
};

struct TensorInfo {
  std::string key;
  DType dtype = DType::kUnspecified;
  std::vector<int64_t> shape;
  uint64_t nbytes = 0;
  std::string pool;
  Durability durability = Durability::kDurable;
  Scope scope = Scope::kGlobal;
  bool sealed = false;
  Location location;
  uint32_t leases = 0;
  int64_t created_unix_ms = 0;
  int64_t ttl_ms = 0;
  bool on_gpu = false;                           // has a copy on the GPU tier
  Compression compression = Compression::kNone;  // as the daemon resolved it
  double error_budget = 0;
  std::vector<std::string> codecs;
  uint64_t ssd_stored_bytes = 0;     // bytes its swap copy takes (encoded); 0: none
  uint64_t remote_stored_bytes = 0;  // bytes its copy in the remote tier takes; 0: none known
  std::string ssd_codec;             // how the swap copy is encoded; empty: none
  double ssd_rel_rmse = 0;           // ... and its measured error (lossy codecs)
  std::string parent;                // the Create's parent hint; empty: none
};

// One key's answer to Prefetch.
struct PrefetchResult {
  absl::Status status;
  bool moved = false;  // false: it was on that tier already
};

// What the daemon did with a Hint's keys.
struct HintResult {
  uint64_t accepted = 0;   // queued
  uint64_t refreshed = 0;  // queued already: rank kept, expiry extended
  uint64_t unknown = 0;    // no such sealed tensor
  uint64_t dropped = 0;    // the daemon's hint queue is full
  uint64_t remote = 0;     // not here: looked up in the remote tier, queued when found there
};

struct PoolStats {
  std::string name;
  Tier tier = Tier::kHost;
  std::string kind;  // "fixed" or "general"
  uint64_t capacity_bytes = 0, used_bytes = 0, block_size = 0, blocks_total = 0, blocks_used = 0;
  uint64_t largest_free_bytes = 0, allocations = 0, allocation_failures = 0;
  double fragmentation = 0;
  // The eviction policy's lifetime statistics of the pool's copies: copies seen, the share
  // used again after one use and after two, idle time between uses (median within 2x).
  uint64_t lifetime_copies = 0, idle_samples = 0;
  double reuse_after_1 = 0, reuse_after_2 = 0, idle_mean_s = 0, idle_median_s = 0;
};

struct TierStats {
  Tier tier = Tier::kHost;
  bool present = false;
  uint64_t capacity_bytes = 0, used_bytes = 0, pinned_bytes = 0, hits = 0, misses = 0;
  uint64_t evictions = 0;
  double hit_ratio = 0;
};

// The SSD tier's swap device (present only with the SSD tier).
struct SwapStats {
  bool present = false;
  std::string engine;  // "io_uring" or "pread"
  bool degraded = false;
  uint64_t reads = 0, writes = 0, bytes_read = 0, bytes_written = 0;
  double read_mbps = 0, write_mbps = 0;  // over the time spent in transfers
  uint64_t io_errors = 0, checksum_failures = 0, largest_free_bytes = 0;
  double fragmentation = 0;
  // The compressed RAM front (ssd.compressed_ram): size, encoded bytes and tensors held, their
  // decoded bytes, reads served from it, entries written back to the files.
  uint64_t ram_capacity_bytes = 0, ram_used_bytes = 0, ram_entries = 0, ram_logical_bytes = 0;
  uint64_t ram_reads = 0, ram_writebacks = 0, ram_writeback_bytes = 0;
};

// The remote tier (Redis, shared with other daemons; present only when configured).
struct RemoteStats {
  bool present = false;
  std::string addresses;
  bool cluster = false, degraded = false;
  uint64_t nodes = 0, lookups = 0, hits = 0, misses = 0;
  uint64_t puts = 0, gets = 0, put_bytes = 0, get_bytes = 0;
  double put_mbps = 0, get_mbps = 0, put_latency_ms = 0, get_latency_ms = 0;
  uint64_t errors = 0, checksum_failures = 0, degradations = 0, redirections = 0;
  uint64_t stored_bytes = 0, entries = 0, redis_used_bytes = 0, redis_max_bytes = 0;
  std::string last_error;
  uint64_t pending_deletes = 0, deletes_replayed = 0, deletes_dropped = 0;
};

// Host memory pressure as the migrator sees it.
struct PressureStats {
  double host_used_ratio = 0, high_watermark = 0, low_watermark = 0;
  // System readings; nullopt where the daemon's kernel gives none (not available is not 0).
  std::optional<uint64_t> mem_available_bytes;
  std::optional<double> psi_some_avg10, psi_full_avg10;  // /proc/pressure/memory, percent
  double gpu_used_ratio = 0, gpu_high_watermark = 0, gpu_low_watermark = 0;
};

// One GPU of the daemon's GPU tier.
struct GpuStats {
  std::string gpu, model;
  uint64_t arena_bytes = 0, used_bytes = 0, device_free_bytes = 0, device_total_bytes = 0;
  bool host_pinned = false;
};

// One codec of the daemon's codec stage (those that have run).
struct CodecStats {
  std::string codec;
  uint64_t encodes = 0, encode_in_bytes = 0, encode_out_bytes = 0;
  uint64_t decodes = 0, decode_in_bytes = 0, decode_out_bytes = 0, decode_failures = 0;
  uint64_t tried = 0, over_budget = 0;
  double ratio = 0, encode_gbps = 0, decode_gbps = 0, max_rel_rmse = 0;
};

// One tenant's use of the daemon (a tenant sees its own; the operator every one, "" included:
// the shared memory and the operator's sessions).
struct TenantStats {
  std::string tenant;
  uint64_t sessions = 0, leases = 0, host_capacity_bytes = 0, host_used_bytes = 0;
  uint64_t ssd_bytes = 0, gpu_bytes = 0, quota_rejections = 0, denied_requests = 0;
};

struct Stats {
  std::vector<TierStats> tiers;
  std::vector<PoolStats> pools;
  std::map<std::string, uint64_t> counters;
  uint64_t sessions = 0, leases = 0, objects = 0, uptime_ms = 0;
  SwapStats swap;
  RemoteStats remote;
  PressureStats pressure;
  std::vector<GpuStats> gpus;
  std::vector<CodecStats> codecs;
  std::vector<TenantStats> tenants;  // when the daemon has [[tenant]]s
};

namespace internal {
class Session;
}

// A tensor this client is writing. Seal() publishes it; destroying it unsealed aborts it.
class WritableTensor {
 public:
  WritableTensor(WritableTensor&&) noexcept;
  WritableTensor& operator=(WritableTensor&&) noexcept;
  ~WritableTensor();

  // Returns the writable bytes, or nullptr once sealed or aborted (no write after seal). For a
  // GPU tensor this is a device pointer on device().
  void* data() const { return open_ ? data_ : nullptr; }
  uint64_t nbytes() const { return info_.nbytes; }
  const TensorInfo& info() const { return info_; }
  bool on_gpu() const { return info_.location.tier == Tier::kGpu; }
  int device() const { return device_; }  // this process's CUDA ordinal; -1 for host tensors
  // Whether the session it was created in still exists: false once the daemon restarted (or
  // ended the session) — the unsealed tensor is gone and data() points at memory the daemon
  // may reuse — and for a moved-from tensor.
  bool valid() const;
  // Publishes the tensor. FAILED_PRECONDITION if already sealed or aborted, or if !valid() (then
  // nothing is sent to the daemon). For a GPU tensor,
  // `cuda_stream` (a cudaStream_t; nullptr: the legacy default stream) is where the writes were
  // issued: the daemon publishes the tensor once they are complete.
  absl::Status Seal(void* cuda_stream = nullptr);
  // Drops the tensor. FAILED_PRECONDITION if already sealed or aborted, or if !valid() (nothing
  // to drop). For a GPU tensor, abort only once no write to it is still queued: its range is
  // reused at once.
  absl::Status Abort();

 private:
  friend class Client;
  WritableTensor(std::shared_ptr<internal::Session> session, TensorInfo info, void* data,
                 int device = -1);

  std::shared_ptr<internal::Session> session_;
  TensorInfo info_;
  void* data_ = nullptr;
  bool open_ = false;
  int device_ = -1;
};

// A lease on a sealed tensor: the bytes stay where they are, unchanged, until it is released
// (explicitly or by destruction). Keeps the client's session alive while it exists.
class Lease {
 public:
  Lease(Lease&&) noexcept;
  Lease& operator=(Lease&&) noexcept;
  ~Lease();

  // The bytes: in shared memory, or for a GPU lease (on_gpu()) a device pointer on device().
  const void* data() const { return data_; }
  bool on_gpu() const { return info_.location.tier == Tier::kGpu; }
  int device() const { return device_; }  // this process's CUDA ordinal; -1 for host leases
  template <typename T>
  const T* data_as() const {
    return static_cast<const T*>(data_);
  }
  uint64_t nbytes() const { return info_.nbytes; }
  const TensorInfo& info() const { return info_; }
  uint64_t lease_id() const { return lease_id_; }
  bool held() const { return lease_id_ != 0; }
  // Whether the session that granted the lease still exists (independent of held()): false once
  // the daemon restarted or ended the session. An invalid lease pins nothing: data() still
  // points into the old mapping (so reading does not crash) but the bytes may have been reused.
  bool valid() const;
  // Ends the lease now. The pointer must not be used afterwards: for a GPU lease, release only
  // once the work reading it has completed (synchronize its stream), as before a cudaFree.
  // FAILED_PRECONDITION (and nothing sent) for a lease that is no longer valid().
  absl::Status Release();

 private:
  friend class Client;
  Lease(std::shared_ptr<internal::Session> session, TensorInfo info, const void* data,
        uint64_t lease_id);

  std::shared_ptr<internal::Session> session_;
  TensorInfo info_;
  const void* data_ = nullptr;
  uint64_t lease_id_ = 0;
  int device_ = -1;
};

class Client {
 public:
  // Connects and attaches (opens a session). UNAVAILABLE if no daemon answers in time (no
  // reconnect_timeout wait here: the first connection is not retried).
  static absl::StatusOr<std::unique_ptr<Client>> Connect(const ClientOptions& options = {});
  // Detaches once no Lease or WritableTensor of this client is left.
  ~Client();

  // Allocates a tensor and returns its writable view.
  absl::StatusOr<WritableTensor> Create(std::string_view key, DType dtype,
                                        std::vector<int64_t> shape,
                                        const CreateOptions& options = {});
  // Leases one sealed tensor. kAny: the host copy, else the GPU copy (only if this process can
  // open it), else a swap-in. kHost: a host copy. kGpu: a GPU copy, on `device` (this process's
  // CUDA ordinal; -1: any) when it has to be copied up; a tensor already on another of the
  // daemon's GPUs is served there. FAILED_PRECONDITION for kGpu when the daemon has no GPU tier.
  absl::StatusOr<Lease> Get(std::string_view key, Tier want = Tier::kAny, int device = -1);
  // Leases many tensors in one round trip; one result per key, in order.
  absl::StatusOr<std::vector<absl::StatusOr<Lease>>> GetBatch(std::span<const std::string> keys,
                                                              Tier want = Tier::kAny,
                                                              int device = -1);
  // Promotes tensors to `tier` (kHost, or kGpu on `device`: this process's CUDA ordinal, -1: any)
  // without leasing them, so that the next Get finds them there: a swap-in from SSD, a copy
  // down from or up to the GPU; a key not here is looked up in the remote tier when the daemon
  // has one (at most 64 keys a call). Returns when every move is done; one result per key: OK,
  // NOT_FOUND, FAILED_PRECONDITION (unsealed), RESOURCE_EXHAUSTED (no room), DATA_LOSS.
  absl::StatusOr<std::vector<PrefetchResult>> Prefetch(std::span<const std::string> keys,
                                                       Tier tier = Tier::kHost, int device = -1);
  // Look-ahead: tells the daemon that the next requests will read `keys`, in this order. It
  // guards the first ones (as many as fit its hint share of `tier`) against eviction and
  // promotes them there ahead of use; a hint ends when its key is read, deleted, or `ttl`
  // (0: the daemon's default, 30 s; at most 1 h) passes. Returns at once. INVALID_ARGUMENT
  // (more than 65,536 keys, a bad key, tier SSD, ttl), FAILED_PRECONDITION (no GPU tier).
  absl::StatusOr<HintResult> Hint(std::span<const std::string> keys, Tier tier = Tier::kHost,
                                  std::chrono::milliseconds ttl = std::chrono::milliseconds(0),
                                  int device = -1);
  // Releases many leases in one round trip (all or nothing). FAILED_PRECONDITION, and nothing
  // released, if one of them is no longer valid() (release those one by one, or drop them).
  absl::Status ReleaseAll(std::span<Lease> leases);
  absl::Status Delete(std::string_view key);
  absl::StatusOr<TensorInfo> Stat(std::string_view key);
  // Moves an unleased tensor one tier down now: a GPU copy to host (or dropped when another
  // copy exists), a host copy to SSD (or dropped if CACHE and there is no SSD tier); returns
  // what the daemon did. FAILED_PRECONDITION if leased, or DURABLE without an SSD tier.
  absl::StatusOr<std::string> Evict(std::string_view key);
  // Returns tensors whose key starts with `prefix`, sorted, at most `limit` (0: 1000).
  absl::StatusOr<std::vector<TensorInfo>> List(std::string_view prefix = "", uint32_t limit = 0);
  absl::StatusOr<Stats> GetStats();
  // Streams the statistics: now, then every `interval` (100 ms to 60 s), calling `on_stats`
  // with each until it returns false (then OK) or the stream fails. Blocks; no call deadline.
  absl::Status WatchStats(std::chrono::milliseconds interval,
                          const std::function<bool(const Stats&)>& on_stats);
  // GetStats as JSON, field names as in tensord/v1/tensord.proto (for tools).
  absl::StatusOr<std::string> GetStatsJson();
  // grpc.health.v1 of the daemon: "" (overall), "tensord.v1.Tensord" and one entry per tier
  // ("tensord.host", "tensord.ssd", "tensord.gpu"), each "SERVING", "NOT_SERVING" or "UNKNOWN".
  absl::StatusOr<std::vector<std::pair<std::string, std::string>>> Health();
  // An empty round trip to the daemon.
  absl::Status Ping();

  // The current session's id (a new one after each reconnect).
  std::string session_id() const;
  // How many times this client replaced a dead session with a new one.
  uint64_t reconnects() const { return reconnects_.load(); }
  // Returns this client's mapping of a host segment (base, size), {nullptr, 0} if not mapped.
  std::pair<const uint8_t*, uint64_t> SegmentMapping(uint32_t arena) const;
  // Whether the daemon has a GPU tier that this process can open.
  bool gpu_usable() const;
  // How many times each GPU arena's IPC handle was opened (by arena id): at most 1 each, per
  // session.
  std::vector<uint64_t> GpuIpcOpens() const;

 private:
  Client(const ClientOptions& options, std::shared_ptr<internal::Session> session);

  // Returns the session now in use (a copy: a reconnect may replace it meanwhile).
  std::shared_ptr<internal::Session> Current() const;
  // Returns the session to call on: the current one, or, if it has died and reconnecting is on,
  // a new one (waits up to reconnect_timeout; UNAVAILABLE when it passes).
  absl::StatusOr<std::shared_ptr<internal::Session>> Live();
  // Replaces `dead` with a new session, unless another thread already did (then returns that
  // one). Marks `dead` dead first, so that its leases are invalid from now on.
  absl::StatusOr<std::shared_ptr<internal::Session>> Reconnect(
      const std::shared_ptr<internal::Session>& dead);
  // Runs `call(session)` on the live session, and once more on a new session if it failed
  // because the daemon lost the first. `call` returns absl::Status or absl::StatusOr<T>. Defined
  // in client.cc and used only there.
  template <typename Call>
  auto Retrying(Call call);

  const ClientOptions options_;
  mutable std::mutex mu_;
  std::shared_ptr<internal::Session> session_;   // guarded by mu_; replaced by Reconnect
  std::mutex reconnect_mu_;                      // held through a reconnect: one at a time
  absl::Status last_reconnect_error_;            // guarded by reconnect_mu_
  std::atomic<uint64_t> reconnect_attempts_{0};  // finished Reconnect attempts (either outcome)
  std::atomic<uint64_t> reconnects_{0};          // successful ones
};

}  // namespace tensord
