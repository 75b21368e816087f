// The remote tier (DESIGN.md "Tiers: Remote"): tensors kept in Redis 7 (standalone or Cluster)
// that the daemons of several machines share. One of the tiers behind tiers/tier.h, below SSD.
//
// Layout in Redis. A tensor is one value per chunk (chunk_bytes, 4 MiB by default):
//   <prefix>:<scope>:<len(ns)>:<ns>:<key>                     header + the first chunk's bytes
//   <prefix>:<scope>:<len(ns)>:<ns>:<key>:<content>:<i>       chunk i >= 1
// <scope> is "shared" for namespaces shared across daemons, else this daemon's instance name, so
// keys from different machines never collide by accident. <content> is a hash of the stored
// bytes, so the chunks are named by what they hold: a header can only ever lead to the chunks it
// was written with (there are never two keys that can disagree about a tensor — a reader that
// finds the header replaced, or a chunk gone, has a miss, never a mix). The header carries the
// tensor's metadata (dtype, shape, codec, sizes, durability, expiry) and an XXH3-64 of every
// chunk, checked on every read. Chunks are written first and the header last: a header is only
// visible once its chunks are. Expiry maps to PXAT on every key.
//
// Failure: every call has a timeout; when Redis is unreachable, slow or refuses us, the tier is
// degraded (Healthy() false, Reserve UNAVAILABLE, counted) and a probe thread brings it back when
// Redis answers again. Transfers run on the tier's own threads, never the caller's gRPC thread.
// Thread-safe.
#pragma once

#include <atomic>
#include <chrono>
#include <deque>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "common/work_queue.h"
#include "daemon/tiers/redis.h"
#include "daemon/tiers/tier.h"
#include "tensord/dtype.h"

namespace tensord::tiers {

// What the remote store keeps with a tensor so that another daemon can serve it (the header of
// its first chunk).
struct RemoteTensor {
  std::string ns, key;
  DType dtype = DType::kUnspecified;
  std::vector<int64_t> shape;
  uint64_t nbytes = 0;      // decoded
  uint8_t codec = 0;        // codec::CodecId of the stored bytes
  uint8_t durability = 0;   // store::Durability
  uint8_t compression = 0;  // codec::Compression of its policy
  std::string pool;         // the Create's pool class
  std::string parent;       // the Create's parent hint
  int64_t created_unix_ms = 0;
  int64_t expires_unix_ms = 0;  // 0: never
};

struct RemoteTierConfig {
  redis::Options redis;
  std::string prefix = "tensord";
  std::string instance;  // the scope of namespaces not shared; must not be "shared"
  // Namespaces shared across daemons: exact names, or prefixes ending in '*'.
  std::vector<std::string> shared_namespaces;
  uint64_t chunk_bytes = 4ull << 20;
  uint64_t capacity_bytes = 0;  // what this daemon may store there; 0: Redis's maxmemory
  int threads = 4;              // transfers in flight
  std::chrono::milliseconds probe_interval{1000};
};

struct RemoteStats {
  uint64_t lookups = 0, hits = 0, misses = 0;
  uint64_t puts = 0, gets = 0, put_bytes = 0, get_bytes = 0;  // tensors moved each way
  uint64_t put_ns = 0, get_ns = 0;                            // time those took
  uint64_t errors = 0, checksum_failures = 0, degradations = 0, redirections = 0;
  uint64_t stored_bytes = 0, entries = 0;  // what this daemon wrote and still references
  // Deletes that could not reach Redis wait for it (replayed before the tier serves again);
  // past 65,536 the oldest are dropped (their keys stay until their expiry or Redis's eviction).
  uint64_t pending_deletes = 0, deletes_replayed = 0, deletes_dropped = 0;
  uint64_t redis_used_bytes = 0, redis_max_bytes = 0;
  bool degraded = true, cluster = false;
  uint64_t nodes = 0;
  std::string addresses;
  std::string last_error;
};

// A tensor found in the remote store: a range to Read it through, and what it is.
struct RemoteFound {
  Range range;
  RemoteTensor tensor;
};

class RemoteTier final : public Tier {
 public:
  // Starts the tier. Redis need not be up (nor the password right): the tier then starts
  // degraded, says why in stats().last_error, and recovers when Redis answers. INVALID_ARGUMENT
  // for a bad configuration (no server, a chunk size under 64 KiB, instance "shared" or empty).
  static absl::StatusOr<std::unique_ptr<RemoteTier>> Create(RemoteTierConfig config);
  ~RemoteTier() override;

  // The Tier interface. Reserve needs where.remote (the tensor it will hold; INVALID_ARGUMENT
  // without), UNAVAILABLE when degraded, RESOURCE_EXHAUSTED past capacity_bytes. Write stores
  // chunks then header; Read verifies the header and every chunk: NOT_FOUND when the tensor is no
  // longer there (expired, evicted by Redis, replaced by another writer), DATA_LOSS when bytes do
  // not match their checksum, UNAVAILABLE / DEADLINE_EXCEEDED when Redis does not answer.
  TierId id() const override { return TierId::kRemote; }
  absl::Status Scrub(const Range&) override { return absl::OkStatus(); }
  TierUsage Usage() const override;
  bool Healthy() const override { return !degraded_.load(); }
  uint8_t* Address(const Range&) const override { return nullptr; }

  // Looks a tensor up by name: NOT_FOUND when absent, DATA_LOSS when its header is damaged,
  // UNAVAILABLE when degraded or Redis does not answer. The range is this tier's until Free.
  // `counted`: a lookup for a Get, counted in lookups/hits/misses (a Stat's is not).
  absl::StatusOr<RemoteFound> Find(absl::string_view ns, absl::string_view key,
                                   bool counted = true);
  // Deletes a range's tensor from Redis (a client's Delete), then frees the range. The failure
  // when Redis could not be told (the range is freed all the same; the delete is queued and
  // done when Redis answers again, before the tier serves).
  absl::Status Erase(const Range& range);
  // Deletes a tensor by name, one this daemon may never have seen (another daemon's, in a
  // shared namespace): true when Redis held it, false when not; UNAVAILABLE when degraded or
  // Redis does not answer. A damaged header is deleted too. `content`: the erased tensor's
  // content hash (its Range's checksum), 0 for a damaged header.
  absl::StatusOr<bool> EraseNamed(absl::string_view ns, absl::string_view key,
                                  uint64_t* content = nullptr);
  // Whether `ns` is shared across daemons.
  bool Shared(absl::string_view ns) const;
  // The Redis key of a tensor's header.
  std::string BaseKey(absl::string_view ns, absl::string_view key) const;
  RemoteStats stats() const;

 private:
  struct Entry;
  explicit RemoteTier(RemoteTierConfig config);
  absl::StatusOr<Range> ReserveImpl(uint64_t nbytes, const Placement& where) override;
  // Frees the handle; a tensor this daemon wrote in a namespace it does not share is deleted
  // from Redis too (nobody else can reach it).
  void FreeImpl(const Range& range) override;
  void WriteImpl(std::span<const Transfer> items, TransferDone done) override;
  void ReadImpl(std::span<const Transfer> items, TransferDone done) override;

  absl::Status WriteOne(const Transfer& t);
  absl::Status ReadOne(const Transfer& t);
  std::shared_ptr<redis::Client> client() const;
  // Books a failure; transport failures degrade the tier until the probe succeeds.
  absl::Status Failed(absl::Status s);
  void Probe();
  void ProbeLoop();
  struct PendingDelete {
    std::string base;
    uint64_t content = 0;
    uint32_t chunks = 0;
    int attempts = 0;  // replays Redis refused
  };
  // Deletes a tensor's keys (the header only while it still holds `content`). When it fails
  // (degraded, Redis silent, busy or refusing) the delete is queued for Probe to replay.
  absl::Status DeleteKeys(const std::string& base, uint64_t content, uint32_t chunks);
  // One delete's commands; the raw failure, booked by the caller.
  absl::Status DeleteKeysOn(redis::Client& c, const PendingDelete& d);
  // Replays the queued deletes; false when some stay queued (the tier is then degraded).
  bool FlushDeletes(redis::Client& c);
  void QueueDelete(PendingDelete d) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const RemoteTierConfig config_;
  std::atomic<bool> degraded_{true};
  mutable absl::Mutex mu_;
  std::shared_ptr<redis::Client> client_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<uint64_t, std::shared_ptr<Entry>> entries_ ABSL_GUARDED_BY(mu_);
  uint64_t next_handle_ ABSL_GUARDED_BY(mu_) = 1;
  RemoteStats stats_ ABSL_GUARDED_BY(mu_);
  std::deque<PendingDelete> pending_deletes_ ABSL_GUARDED_BY(mu_);
  absl::Notification stop_;
  WorkQueue io_;
  std::thread prober_;
};

// The header's wire form (exposed for tests and the fuzzer). Parse returns DATA_LOSS for any
// damage (bad magic, version, lengths, checksum).
struct RemoteHeader {
  RemoteTensor tensor;
  uint64_t stored_bytes = 0;
  uint32_t chunk_bytes = 0;
  uint64_t content = 0;              // hash of the chunk checksums and the size
  std::vector<uint64_t> chunk_sums;  // XXH3-64 of each chunk's bytes
  uint32_t header_bytes = 0;         // set by Parse: where chunk 0's bytes start
};
std::string SerializeRemoteHeader(const RemoteHeader& h);
// The content hash of stored bytes with these chunk checksums.
uint64_t RemoteContentHash(const std::vector<uint64_t>& chunk_sums, uint64_t stored_bytes);
absl::StatusOr<RemoteHeader> ParseRemoteHeader(absl::string_view bytes);

}  // namespace tensord::tiers
