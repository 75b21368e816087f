// Codecs: pure functions over a tensor's bytes, dtype and shape (DESIGN.md "Codecs"). The mover
// applies them below the host tier (encode on the way down, decode and verify on the way up); a
// codec knows nothing of tiers, objects or I/O.
//
// Every encoding starts with one envelope (codec id, dtype, decoded size, PayloadHash of the
// payload), so a damaged or misfiled copy decodes to DATA_LOSS, never to wrong bytes. Lossless
// codecs are bit-exact for every dtype (NaN payloads, Inf, denormals, -0 included); lossy ones
// decode to the source dtype and every encode reports its measured round-trip error.
//
// Thread-safe: codecs hold no state. Large tensors are split into chunks that run on the codec
// pool (codec/parallel.h), with the calling thread taking part.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <new>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "daemon/codec/pages.h"
#include "tensord/dtype.h"

namespace tensord::codec {

// Allocates whole 4 KiB pages, page-aligned, from the codec's page cache (codec/pages.h), and
// leaves new elements uninitialised: an encoding is written in full by its codec and goes to an
// O_DIRECT swap file as it is (an unaligned buffer would take a bounce copy).
template <typename T>
struct PageAllocator {
  using value_type = T;
  PageAllocator() = default;
  template <typename U>
  PageAllocator(const PageAllocator<U>&) {}  // NOLINT: rebinding is implicit
  T* allocate(size_t n) {
    void* p = TakePages(n * sizeof(T));
    if (p == nullptr) throw std::bad_alloc();
    return static_cast<T*>(p);
  }
  void deallocate(T* p, size_t n) { GivePages(p, n * sizeof(T)); }
  template <typename U>
  void construct(U* p) {
    ::new (static_cast<void*>(p)) U;  // default-initialised: no zeroing pass
  }
  template <typename U, typename... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }
  template <typename U>
  bool operator==(const PageAllocator<U>&) const {
    return true;
  }
};

// An encoding's bytes.
using Bytes = std::vector<uint8_t, PageAllocator<uint8_t>>;

// How a stored copy is encoded; kept with the copy (and, later, in the persistent index), so the
// numbers never change meaning. 1 was an early zstd-only codec and stays unused.
enum class CodecId : uint8_t {
  kNone = 0,      // the raw bytes (no envelope)
  kLossless = 2,  // byte grouping of multi-byte fields + zstd per 256 KiB chunk
  kFp16 = 3,      // float32 -> IEEE half
  kBf16 = 4,      // float32 -> bfloat16
  kFp8E4m3 = 5,   // float -> FP8 E4M3 with a float32 scale per 256 elements
  kInt8 = 6,      // symmetric int8, per-channel or per-token scales
  kInt4G64 = 7,   // asymmetric 4-bit, a (min, scale) pair per 64 elements
  kSparse = 8,    // bitmap of non-zero elements + their values (lossless)
  kLowRank = 9,   // 2-D: U*S and V of a truncated SVD, rank chosen for the budget
};
inline constexpr int kMaxCodecId = 9;

// What a tensor's Create allows for its copies below the host tier.
enum class Compression : uint8_t {
  kNone = 0,      // stored as is
  kLossless = 1,  // a lossless codec, where it pays
  kLossy = 2,     // any codec whose measured error stays within the budget
  kDefault = 3,   // the pool class's setting (resolved at Create; never stored)
};

// A tensor's compression policy.
struct Policy {
  Compression mode = Compression::kNone;
  double budget = 0;     // kLossy: the largest relative RMSE allowed, in (0, 1)
  uint32_t allowed = 0;  // kLossy: bit (1 << CodecId) per codec allowed; 0: any
  bool Allows(CodecId id) const { return allowed == 0 || (allowed >> int(id)) & 1u; }
};

// The bytes of one tensor, as the store holds them.
struct TensorRef {
  DType dtype = DType::kUInt8;
  std::span<const int64_t> shape;  // empty: one dimension of all the bytes
  std::span<const uint8_t> bytes;
};

// The measured round trip of a lossy encoding: ||x - y|| / ||x|| and max |x - y|, over the
// elements as the source dtype holds them. Zero for lossless codecs.
struct Quality {
  double rel_rmse = 0;
  double max_abs_error = 0;
};

class Codec {
 public:
  virtual ~Codec() = default;
  virtual CodecId id() const = 0;
  virtual const char* name() const = 0;
  virtual bool lossy() const = 0;
  // Whether the codec can encode a tensor of this dtype and shape at all.
  virtual bool Accepts(const TensorRef& t) const = 0;
  // Returns `t` encoded (envelope included). `budget` guides a codec with a tunable precision
  // (low-rank's rank). FAILED_PRECONDITION when the codec does not apply or does not pay for
  // this tensor (non-finite values for a quantizer, a rank too high to save anything).
  absl::StatusOr<Bytes> Encode(const TensorRef& t, double budget = 0) const;
  // Decodes `in` into `out` (the tensor's dtype, shape and size). DATA_LOSS when `in` is not a
  // complete, intact encoding by this codec of such a tensor.
  absl::Status Decode(std::span<const uint8_t> in, const TensorRef& like,
                      std::span<uint8_t> out) const;
  // Encodes `t` and measures the round trip (lossy codecs): in the same pass where the codec
  // reconstructs each tile exactly as Decode will (the quantizers), else by Decode and Measure.
  absl::StatusOr<Bytes> EncodeMeasured(const TensorRef& t, double budget, Quality* quality) const;

 protected:
  // Whether EncodePayload fills its `quality` (the round trip, measured while encoding).
  virtual bool MeasuresWhileEncoding() const { return false; }
  // The payload after the envelope; `quality` (nullable) receives the measured round trip when
  // MeasuresWhileEncoding().
  virtual absl::Status EncodePayload(const TensorRef& t, double budget, Bytes* out,
                                     Quality* quality) const = 0;
  virtual absl::Status DecodePayload(std::span<const uint8_t> payload, const TensorRef& like,
                                     std::span<uint8_t> out) const = 0;
};

// The checksum in an encoding's envelope: the XXH3 of a payload of at most kHashSegment bytes,
// else the XXH3 of the XXH3s of its kHashSegment-byte segments (the last one shorter), as
// little-endian u64s. The segments are hashed on the codec pool, so that verifying a large
// copy is not one core's serial pass after a parallel decode (nor before it).
inline constexpr size_t kHashSegment = 64 << 10;
uint64_t PayloadHash(std::span<const uint8_t> payload);

// Returns the codec for `id` (kNone included). INVALID_ARGUMENT for an id no codec has.
absl::StatusOr<const Codec*> CodecFor(CodecId id);
// By name: "none", "lossless", "fp16", "bf16", "fp8_e4m3", "int8", "int4_g64", "sparse",
// "lowrank". INVALID_ARGUMENT otherwise, listing them.
absl::StatusOr<const Codec*> CodecNamed(absl::string_view name);
const char* CodecName(CodecId id);      // "unknown" for an id no codec has
std::vector<const Codec*> AllCodecs();  // kNone first

// "none", "lossless", "lossy" (and "default" where `allow_default`).
absl::StatusOr<Compression> ParseCompression(absl::string_view name, bool allow_default = false);
const char* CompressionName(Compression c);
// Checks a policy: a lossy one needs a budget in (0, 1) and names only known codecs.
absl::Status ValidatePolicy(const Policy& p);
// The allowed-codec mask of a list of names; INVALID_ARGUMENT for an unknown one.
absl::StatusOr<uint32_t> CodecMask(std::span<const std::string> names);
std::vector<std::string> CodecNames(uint32_t mask);

// Measures the round trip of `decoded` against `source` (same dtype and size).
Quality Measure(DType dtype, std::span<const uint8_t> source, std::span<const uint8_t> decoded);

// The outcome of encoding one tensor for a copy below the host tier.
struct Encoded {
  CodecId codec = CodecId::kNone;
  // The encoded bytes; empty for kNone, where the caller writes its source as is (no copy).
  Bytes bytes;
  uint64_t stored_bytes = 0;  // bytes.size(), or the source's size for kNone
  Quality quality;            // of the chosen encoding (lossy codecs only)
  // A lossy codec was tried and its measured error exceeded the budget (the tensor was then
  // stored losslessly): counted by the caller.
  bool over_budget = false;
  // The codecs tried, with their outcome, for the caller's counters.
  struct Try {
    CodecId codec;
    uint64_t out_bytes = 0;  // 0: it did not apply
    double rel_rmse = 0;
    double seconds = 0;        // encode (and, for lossy codecs, the checking decode)
    bool over_budget = false;  // its measured error exceeded the budget
    bool sample = false;       // measured on a slice of the tensor only (then skipped)
  };
  std::vector<Try> tried;
};

// Tensors smaller than this are stored raw: an envelope and a decode cost more than they save.
inline constexpr uint64_t kMinEncodeBytes = 4096;
// An encoding must save at least this share of the bytes, else the raw bytes are kept.
inline constexpr double kMinSaving = 0.05;

// Encodes `t` as `policy` allows, choosing the codec ("auto"): kNone stores it raw; kLossless
// takes the sparse codec for mostly-zero tensors and byte grouping + zstd otherwise; kLossy
// tries the allowed codecs from the highest ratio down, skipping those whose error the
// tensor's spread predicts far above the budget, and keeps the first whose measured error is
// within it (else lossless, marked over_budget). The raw bytes are kept where nothing saves
// kMinSaving.
absl::StatusOr<Encoded> EncodeFor(const Policy& policy, const TensorRef& t);

}  // namespace tensord::codec
