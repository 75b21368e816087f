// Codecs: pure functions over a tensor's bytes (DESIGN.md "Codecs"). The mover applies one on
// every move below the host tier (encode on the way down, decode and verify on the way up); a
// codec knows nothing of tiers, objects or I/O. This is the stage's first shape: the identity
// and one lossless codec (zstd over the raw bytes); the full set (byte grouping, FP16/BF16,
// FP8, INT8, 4-bit, sparse, low-rank, automatic choice) plugs in behind the same interface.
// Thread-safe: codecs hold no state.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace tensord::codec {

// How a stored copy is encoded; kept with the copy (and, later, in the persistent index), so the
// numbers never change meaning.
enum class CodecId : uint8_t {
  kNone = 0,  // the raw bytes
  kZstd = 1,  // zstd frame of the raw bytes
};

// What a tensor's Create allows (its `compression` field).
enum class Compression : uint8_t {
  kNone = 0,      // stored as is below the host tier
  kLossless = 1,  // any lossless codec, where it pays
};

class Codec {
 public:
  virtual ~Codec() = default;
  virtual CodecId id() const = 0;
  virtual const char* name() const = 0;
  // Returns `in` encoded. INTERNAL if the library fails.
  virtual absl::StatusOr<std::vector<uint8_t>> Encode(std::span<const uint8_t> in) const = 0;
  // Decodes `in` into `out`, which is exactly the original size. DATA_LOSS when `in` is not a
  // complete, valid encoding of out.size() bytes (the caller's copy is damaged).
  virtual absl::Status Decode(std::span<const uint8_t> in, std::span<uint8_t> out) const = 0;
};

// Returns the codec for `id`. INVALID_ARGUMENT for an id no codec has (a damaged record).
absl::StatusOr<const Codec*> CodecFor(CodecId id);
// Returns the codec for its name ("none", "zstd"). INVALID_ARGUMENT otherwise.
absl::StatusOr<const Codec*> CodecNamed(absl::string_view name);

// "none" or "lossless"; INVALID_ARGUMENT otherwise, naming the accepted values.
absl::StatusOr<Compression> ParseCompression(absl::string_view name);
const char* CompressionName(Compression c);

// The outcome of encoding one tensor for a copy below the host tier.
struct Encoded {
  CodecId codec = CodecId::kNone;
  // The encoded bytes; empty for kNone, where the caller writes its source as is (no copy).
  std::vector<uint8_t> bytes;
  // Bytes the copy takes: bytes.size(), or the source's size for kNone.
  uint64_t stored_bytes = 0;
};

// Encodes `in` as `policy` allows: kNone stores it raw; kLossless tries zstd and keeps the raw
// bytes when the encoding saves less than 3% (random bytes, already-compressed data).
absl::StatusOr<Encoded> EncodeFor(Compression policy, std::span<const uint8_t> in);

}  // namespace tensord::codec
