// Value types of the object model (DESIGN.md "Object model"), independent of gRPC.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "daemon/codec/codec.h"
#include "tensord/dtype.h"

namespace tensord::store {

enum class Durability : int32_t { kDurable = 1, kCache = 2 };
enum class Scope : int32_t { kGlobal = 1, kSession = 2 };
// kSsd and kRemote describe where a tensor is (Stat), never what a request wants.
enum class WantTier : int32_t { kAny = 0, kHost = 1, kGpu = 2, kSsd = 3, kRemote = 4 };

struct CreateParams {
  std::string ns;
  std::string key;
  DType dtype = DType::kUnspecified;
  std::vector<int64_t> shape;
  uint64_t nbytes = 0;  // 0: derived from shape and dtype
  std::string pool;     // empty: best fit
  Durability durability = Durability::kDurable;
  Scope scope = Scope::kGlobal;
  int64_t ttl_ms = 0;               // 0: no expiry; else deleted this long after Seal
  WantTier tier = WantTier::kHost;  // kHost (or kAny) or kGpu: where the client writes it
  int device = -1;                  // kGpu: the daemon's GPU ordinal; -1: any
  // How copies below the host tier may be stored (the codec stage); kDefault: the pool class's.
  codec::Policy compression{codec::Compression::kDefault};
  std::string parent;  // optional: the key this tensor continues (a KV chain's previous block)
};

// A byte range in an arena of the host tier (segment) or of the GPU tier (device arena).
struct Location {
  WantTier tier = WantTier::kHost;  // kHost, kGpu, or kSsd (then arena/offset mean nothing)
  uint32_t arena = 0;
  uint64_t offset = 0;
  uint64_t length = 0;
};

struct TensorInfo {
  std::string ns;
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
  bool on_host = true;  // else only on the SSD tier; `location` is then meaningless
  bool on_ssd = false;  // has a (clean) SSD copy
  bool on_gpu = false;  // has a copy on the GPU tier, at gpu_location
  Location gpu_location;
  codec::Policy compression;      // as resolved at Create
  uint64_t ssd_stored_bytes = 0;  // bytes its SSD copy takes (encoded), when on_ssd
  codec::CodecId ssd_codec = codec::CodecId::kNone;  // ... and how it is encoded
  double ssd_rel_rmse = 0;                           // ... with this measured error
  std::string parent;                                // the Create's parent hint; empty: none
  uint64_t remote_stored_bytes = 0;  // bytes its remote copy takes; 0: none known here
};

// One key's answer in a batched Get.
struct GetOutcome {
  absl::Status status;
  TensorInfo info;
  uint64_t lease_id = 0;
};

}  // namespace tensord::store
