// Configuration types shared by the daemon and its tools, and the parser for byte sizes
// ("1GiB", "256MiB", "4096"). Loading from TOML and flags lives in daemon/config.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace tensord {

// One pool class: `block_count` blocks of `block_size` bytes, or as many as fit in `share`
// of the tier's capacity when block_count is 0.
struct PoolClassConfig {
  std::string name;
  uint64_t block_size = 0;
  uint64_t block_count = 0;
  double share = 0.0;
  // How the class's tensors are stored below the host tier when their Create leaves it to the
  // pool (COMPRESSION_DEFAULT): "none", "lossless", "lossy" (CACHE tensors only; DURABLE ones
  // get lossless), or empty for [policy] compression.
  std::string compression;
  double error_budget = 0;          // lossy: the largest relative RMSE; 0: [policy] error_budget
  std::vector<std::string> codecs;  // lossy: the codecs allowed; empty: any
  // Whether the class's tensors are published to the remote tier when sealed: "publish" (CACHE
  // and DURABLE), "never", or empty for [remote] publish_cache / publish_durable.
  std::string remote;
};

// A share of the host tier that belongs to one tenant: its own segment, shared through its group.
struct HostPartition {
  std::string tenant;
  uint64_t bytes = 0;
  gid_t group = 0;
  mode_t mode = 0660;
};

struct HostTierConfig {
  uint64_t capacity = uint64_t{1} << 30;
  mode_t shm_mode = 0600;
  bool prefault = true;
  bool zero_on_free = true;
  std::vector<PoolClassConfig> pools;  // fixed classes; the rest is the general pool
  // Tenants' segments, carved out of `capacity` (the daemon fills this from [[tenant]]).
  std::vector<HostPartition> partitions;
};

inline constexpr uint64_t kDefaultSwapSize = uint64_t{4} << 30;

struct SwapFileConfig {
  std::string path;  // created (0600) if missing and preallocated with fallocate
  uint64_t size = 0;
};

// The SSD tier: off unless it has a swap file.
struct SsdConfig {
  std::vector<SwapFileConfig> files;  // e.g. one per NVMe device
  int io_threads = 1;
  int queue_depth = 32;
  bool force_fallback = false;  // pread/pwrite even where io_uring works
  int degrade_after = 3;
  double high_watermark = 0.90;  // of the host tier
  double low_watermark = 0.75;
  uint64_t min_mem_available = 0;  // demote when MemAvailable falls below (0: ignore)
  // The compressed RAM front of the swap files (0: off): encoded swap copies that saved at
  // least compressed_min_saving of their bytes stay in this much RAM (zswap's idea).
  uint64_t compressed_ram = 0;
  double compressed_min_saving = 0.25;
};

// The remote tier: off unless it has an address. Redis 7, standalone or Cluster.
struct RemoteConfig {
  std::string addresses;      // "host:port[,host:port...]": any node(s) of it
  std::string user;           // ACL user (empty: the default user)
  std::string password_file;  // the password, alone in a file only the daemon may read
  std::string instance;       // this daemon's scope for unshared namespaces; empty: hostname
  std::string prefix = "tensord";
  std::string shared_namespaces;  // comma-separated names, or prefixes ending in '*'
  uint64_t chunk_size = 4ull << 20;
  uint64_t capacity = 0;         // bytes this daemon may keep there; 0: Redis's maxmemory
  int timeout_ms = 2000;         // every connect, send and receive
  int connections = 4;           // per Redis node
  bool publish_cache = true;     // CACHE tensors are written there when sealed
  bool publish_durable = false;  // ... and DURABLE ones
  // CACHE tensors the SSD tier lets go for room are written there instead of being dropped.
  bool demote_cache = true;
  bool lookup = true;  // a Get that finds nothing here looks there
};

// The GPU tier: one arena per device, carved like the host tier, shared through CUDA IPC.
struct GpuConfig {
  std::string mode = "auto";     // auto: use the GPUs if there are any; on: fail without; off
  std::string devices = "all";   // "all" or a list of ordinals, "0,2"
  uint64_t size = 0;             // arena bytes per device; 0: memory_fraction of free memory
  double memory_fraction = 0.5;  // of the device's free memory at start, when size is 0
  double high_watermark = 0.90;  // of the arena: demote unleased tensors to host above ...
  double low_watermark = 0.75;   // ... down to this
  bool pin_host = true;          // register the host arenas with the driver (pinned copies)
  // Fixed classes carved at the start of every device's arena (share: of the arena); the rest
  // is that device's general pool. Pools are named "gpu<N>.<class>".
  std::vector<PoolClassConfig> pools;
};

// Decisions: which policies the store uses.
struct PolicyConfig {
  // The eviction policy of the host and GPU tiers (tests/bench/trace_bench measures them).
  std::string eviction = "slru+chain";
  double s3fifo_small = 0.10;  // S3-FIFO's small queue: its share of a tier's tracked bytes
  double hint_share = 0.25;    // look-ahead: the share of each tier hinted tensors may hold
  bool predict = true;         // successor and stride prediction from each session's Gets
  // The compression of tensors whose Create and pool class leave it open.
  std::string compression = "none";
  double error_budget = 0.01;  // for a lossy compression that names no budget
};

// One [[tenant]]: the peers it is (by uid, or by a gid among their groups), the namespaces it
// owns, and its quotas. With no tenants, every peer that can reach the socket may use every
// namespace, as one implicit tenant.
struct TenantConfig {
  std::string name;
  std::vector<uid_t> uids;
  std::vector<gid_t> gids;
  std::vector<std::string> namespaces;  // exact names, or prefixes ending in '*'
  uint64_t host_bytes = 0;              // its own host segment (required)
  uint64_t ssd_bytes = 0;               // its swap copies; 0: no limit
  uint64_t gpu_bytes = 0;               // its GPU copies; 0: no GPU access
  uint64_t max_leases = 0;              // held at once by its sessions; 0: no limit of its own
  uint64_t max_sessions = 0;            // 0: no limit of its own
  // Its segment is owned by the daemon's user, in this group (default: the first of gids),
  // with this mode: only the group's members (and the daemon) can open it.
  gid_t segment_group = 0;
  mode_t segment_mode = 0660;
};

struct DaemonConfig {
  std::string run_dir = "./run";
  std::string socket_path;  // empty: <run_dir>/tensord.sock
  // Warm restart: keep the sealed tensors (their segments, the object index and the swap files'
  // extents) across a stop or a crash. state_dir holds the index; empty: run_dir.
  bool persist = true;
  std::string state_dir;
  mode_t socket_mode = 0600;
  std::string log_level = "info";
  uint64_t max_leases_per_session = 1 << 20;
  uint64_t max_sessions = 4096;
  int64_t drain_timeout_ms = 10000;
  int metrics_port = 0;  // Prometheus text endpoint on 127.0.0.1 (0: off)  // on SIGTERM: how long
                         // to wait for clients to release leases
  HostTierConfig host;
  SsdConfig ssd;
  GpuConfig gpu;
  RemoteConfig remote;
  PolicyConfig policy;
  std::vector<TenantConfig> tenants;
};

// Parses "123", "4KiB", "16MiB", "1GiB", "2TiB" (also "K", "M", "G", "KB"...: powers of 1024).
// INVALID_ARGUMENT for anything else or on overflow.
absl::StatusOr<uint64_t> ParseBytes(absl::string_view text);

// Parses gpu.devices: "all" (an empty list) or comma-separated ordinals "0,2", each at most 63,
// none repeated. INVALID_ARGUMENT otherwise.
absl::StatusOr<std::vector<int>> ParseDeviceList(absl::string_view text);

// Returns "1.0 GiB"-style text for humans.
std::string FormatBytes(uint64_t bytes);

}  // namespace tensord
