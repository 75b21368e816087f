// The lossy element codecs: float32 -> FP16 / BF16, FP8 E4M3 with block scales, INT8 with
// per-channel or per-token scales, and 4-bit asymmetric groups of 64. Each decodes to the
// source dtype; every encode measures its round trip (codec.cc keeps it only within budget).
//
// FP16/BF16, FP8 and INT8 work tile by tile on floats (codec/simd.h: AVX2 where the CPU has it):
// a tile is widened from the tensor's dtype, quantized, reconstructed exactly as Decode will
// reconstruct it (rounded to the dtype too), and its error added up, all while in cache.
#include <algorithm>
#include <array>
#include <cfloat>
#include <cmath>

#include "daemon/codec/internal.h"
#include "daemon/codec/parallel.h"
#include "daemon/codec/simd.h"

namespace tensord::codec::internal {
namespace {

using Tile = std::array<float, simd::kTile>;

// Runs fn(lo, hi) over [0, n) in chunks of `chunk` elements on the codec pool.
template <typename Fn>
void Chunks(size_t n, size_t chunk, Fn&& fn) {
  ParallelFor((n + chunk - 1) / chunk,
              [&](size_t c) { fn(c * chunk, std::min(n, (c + 1) * chunk)); });
}

// Calls fn(at, len) for consecutive tiles of [lo, hi).
template <typename Fn>
void Segments(size_t lo, size_t hi, Fn&& fn) {
  for (size_t at = lo; at < hi; at += simd::kTile) fn(at, std::min(hi - at, simd::kTile));
}

const uint8_t* ElementPtr(const TensorRef& t, size_t i) {
  return t.bytes.data() + i * ItemSize(t.dtype);
}

absl::Status NonFinite(const char* codec) {
  return absl::FailedPreconditionError(absl::StrCat(codec, ": the tensor has NaN or Inf values"));
}

// The per-chunk error terms of a ParallelFor, summed into a Quality.
class ErrorSum {
 public:
  explicit ErrorSum(size_t chunks) : parts_(chunks) {}
  simd::Error* part(size_t c) { return &parts_[c]; }
  Quality Total() const {
    simd::Error e;
    for (const simd::Error& p : parts_) e.Add(p);
    Quality q;
    q.max_abs_error = e.max;
    q.rel_rmse = e.err2 == 0 ? 0 : e.ref2 == 0 ? HUGE_VAL : std::sqrt(e.err2 / e.ref2);
    return q;
  }

 private:
  std::vector<simd::Error> parts_;
};

size_t ChunkCount(size_t n, size_t chunk) { return (n + chunk - 1) / chunk; }

bool AllFinite(const TensorRef& t) {
  std::atomic<bool> finite{true};
  Chunks(Elements(t), kChunkElements, [&](size_t lo, size_t hi) {
    Tile x;
    Segments(lo, hi, [&](size_t at, size_t len) {
      simd::Widen(t.dtype, ElementPtr(t, at), len, x.data());
      if (!std::isfinite(simd::AbsMax(x.data(), len))) finite = false;
    });
  });
  return finite;
}

// float32 -> a 16-bit float format, element by element. Payload: the 16-bit values.
class Narrow final : public Codec {
 public:
  Narrow(CodecId id, const char* name, DType to) : id_(id), name_(name), to_(to) {}
  CodecId id() const override { return id_; }
  const char* name() const override { return name_; }
  bool lossy() const override { return true; }
  bool Accepts(const TensorRef& t) const override { return t.dtype == DType::kFloat32; }

 protected:
  bool MeasuresWhileEncoding() const override { return true; }
  absl::Status EncodePayload(const TensorRef& t, double, Bytes* out,
                             Quality* quality) const override {
    const size_t n = Elements(t), base = out->size();
    out->resize(base + 2 * n);
    uint8_t* dst = out->data() + base;
    ErrorSum err(ChunkCount(n, kChunkElements));
    std::atomic<bool> finite{true};
    Chunks(n, kChunkElements, [&](size_t lo, size_t hi) {
      Tile x, y;
      Segments(lo, hi, [&](size_t at, size_t len) {
        simd::Widen(DType::kFloat32, ElementPtr(t, at), len, x.data());
        if (!std::isfinite(simd::AbsMax(x.data(), len))) finite = false;  // like the others
        simd::Narrow(to_, x.data(), len, dst + 2 * at);
        if (quality == nullptr) return;
        simd::Widen(to_, dst + 2 * at, len, y.data());
        simd::AddError(x.data(), y.data(), len, err.part(lo / kChunkElements));
      });
    });
    if (!finite) return NonFinite(name_);
    if (quality != nullptr) *quality = err.Total();
    return absl::OkStatus();
  }
  absl::Status DecodePayload(std::span<const uint8_t> payload, const TensorRef&,
                             std::span<uint8_t> out) const override {
    const size_t n = out.size() / 4;
    if (payload.size() != 2 * n) return Damaged(name_, "wrong size");
    Chunks(n, kChunkElements, [&](size_t lo, size_t hi) {
      Tile y;
      Segments(lo, hi, [&](size_t at, size_t len) {
        simd::Widen(to_, payload.data() + 2 * at, len, y.data());
        simd::Narrow(DType::kFloat32, y.data(), len, out.data() + 4 * at);
      });
    });
    return absl::OkStatus();
  }

 private:
  const CodecId id_;
  const char* const name_;
  const DType to_;
};

// FP8 E4M3 with a float32 scale per block of 256 elements (simd::Fp8Scale: max |x| of the block
// maps into (224, 448], by a power of two where it can).
// Payload: the scales, then one byte per element.
class Fp8 final : public Codec {
 public:
  static constexpr size_t kBlock = simd::kFp8Block;
  static_assert(kChunkElements % kBlock == 0);
  CodecId id() const override { return CodecId::kFp8E4m3; }
  const char* name() const override { return "fp8_e4m3"; }
  bool lossy() const override { return true; }
  bool Accepts(const TensorRef& t) const override { return IsFloat(t.dtype); }

 protected:
  bool MeasuresWhileEncoding() const override { return true; }
  absl::Status EncodePayload(const TensorRef& t, double, Bytes* out,
                             Quality* quality) const override {
    const size_t n = Elements(t), blocks = (n + kBlock - 1) / kBlock, base = out->size();
    out->resize(base + 4 * blocks + n);
    uint8_t* scales = out->data() + base;
    uint8_t* codes = scales + 4 * blocks;
    std::atomic<bool> finite{true};
    ErrorSum err(ChunkCount(n, kChunkElements));
    Chunks(n, kChunkElements, [&](size_t lo, size_t hi) {  // chunks are whole blocks
      if (!simd::QuantizeE4m3(t.dtype, t.bytes.data(), lo, hi, scales, codes,
                              quality != nullptr ? err.part(lo / kChunkElements) : nullptr)) {
        finite = false;
      }
    });
    if (!finite) return NonFinite(name());
    if (quality != nullptr) *quality = err.Total();
    return absl::OkStatus();
  }
  absl::Status DecodePayload(std::span<const uint8_t> payload, const TensorRef& like,
                             std::span<uint8_t> out) const override {
    const size_t n = Elements(like), blocks = (n + kBlock - 1) / kBlock;
    if (payload.size() != 4 * blocks + n) return Damaged(name(), "wrong size");
    Chunks(n, kChunkElements, [&](size_t lo, size_t hi) {
      simd::DequantizeE4m3(payload.data() + 4 * blocks, lo, hi, payload.data(), like.dtype,
                           out.data());
    });
    return absl::OkStatus();
  }
};

// The sum of v[i]^2 in double, in eight independent lanes: one running sum is a chain of
// dependent additions (4 cycles each), which for the 4096 row maxima of a 1 MiB KV block took
// a tenth of its whole INT8 encode, serially.
double SumOfSquares(const std::vector<float>& v) {
  double lane[8] = {};
  size_t i = 0;
  for (; i + 8 <= v.size(); i += 8) {
    for (size_t k = 0; k < 8; ++k) lane[k] += double(v[i + k]) * v[i + k];
  }
  for (; i < v.size(); ++i) lane[0] += double(v[i]) * v[i];
  double sum = 0;
  for (double l : lane) sum += l;
  return sum;
}

// Symmetric INT8. The scales follow the shape: per channel (one per column of the last
// dimension, over all rows: keys' outlier channels) or per token (one per row: values), the
// one whose quantization noise the scales predict lower; 1-D tensors and short rows use
// blocks of 256. Payload: u8 layout, u32 group, float32 scales, int8 values.
class Int8 final : public Codec {
 public:
  enum Layout : uint8_t { kRows = 0, kColumns = 1 };
  CodecId id() const override { return CodecId::kInt8; }
  const char* name() const override { return "int8"; }
  bool lossy() const override { return true; }
  bool Accepts(const TensorRef& t) const override { return IsFloat(t.dtype); }

 protected:
  bool MeasuresWhileEncoding() const override { return true; }
  absl::Status EncodePayload(const TensorRef& t, double, Bytes* out,
                             Quality* quality) const override {
    const size_t n = Elements(t);
    // Not a structured binding: lambdas below use them (clang 14 cannot capture bindings).
    const std::pair<size_t, size_t> shape = Matrix(t);
    const size_t rows = shape.first, cols = shape.second;
    // A "row" for per-token scales: the last dimension, unless the tensor has none (1-D) or
    // it is too short or too long to share one scale well.
    const size_t run = t.shape.size() >= 2 && cols >= 32 && cols <= 65536 ? cols : 256;
    const size_t runs = (n + run - 1) / run;
    // Row maxima, and column maxima where the tensor has columns (merged per chunk of rows).
    std::vector<float> row_max(runs, 0);
    const bool by_column = rows >= 64 && cols >= 2 && cols <= (1u << 20);
    std::vector<float> col_max(by_column ? cols : 0, 0);
    std::atomic<bool> finite{true};
    // Maxima of each run of `period` elements into period_max (unless null) and, with
    // `columns`, of each column of rows `period` long into col_max.
    const auto take_maxima = [&](size_t period, float* period_max, bool columns) {
      const size_t periods = (n + period - 1) / period;
      const size_t per = std::max<size_t>(1, kChunkElements / period);
      // Each chunk's column maxima in a slot of its own, merged afterwards: merged under a lock,
      // two threads' merges of 2048 columns met and slept on it.
      std::vector<float> parts(columns ? ChunkCount(periods, per) * period : 0, 0.0f);
      Chunks(periods, per, [&](size_t r0, size_t r1) {
        const size_t count = std::min(n, r1 * period) - r0 * period;
        std::vector<float> scratch(period_max == nullptr ? r1 - r0 : 0);
        if (!simd::AbsMaxRuns(t.dtype, ElementPtr(t, r0 * period), count, period,
                              period_max != nullptr ? period_max + r0 : scratch.data(),
                              columns ? parts.data() + r0 / per * period : nullptr)) {
          finite = false;
        }
      });
      for (size_t at = 0; at < parts.size(); at += period) {
        for (size_t c = 0; c < period; ++c) col_max[c] = std::max(col_max[c], parts[at + c]);
      }
    };
    take_maxima(run, row_max.data(), by_column && cols == run);
    if (by_column && cols != run) take_maxima(cols, nullptr, true);  // rows of another length
    if (!finite) return NonFinite(name());
    // Noise energy is proportional to the elements each scale covers times its square.
    const double rows_noise = SumOfSquares(row_max) * double(run);
    const double cols_noise = SumOfSquares(col_max) * double(rows);
    const Layout layout = by_column && cols_noise < rows_noise ? kColumns : kRows;
    const std::vector<float>& maxima = layout == kColumns ? col_max : row_max;
    Append(out, uint8_t(layout));
    Append(out, uint32_t(layout == kColumns ? cols : run));
    const size_t base = out->size();
    out->resize(base + 4 * maxima.size() + n);
    std::vector<float> scales(maxima.size()), inverse(maxima.size());
    simd::Int8ScalesOf(maxima.data(), maxima.size(), scales.data(), inverse.data());
    std::memcpy(out->data() + base, scales.data(), 4 * scales.size());
    int8_t* q = reinterpret_cast<int8_t*>(out->data() + base + 4 * maxima.size());
    const simd::Int8Scales s{scales.data(), inverse.data(), layout == kColumns ? cols : run,
                             layout == kColumns};
    ErrorSum err(ChunkCount(n, kChunkElements));
    Chunks(n, kChunkElements, [&](size_t lo, size_t hi) {
      simd::QuantizeInt8(t.dtype, t.bytes.data(), lo, hi, s, q,
                         quality != nullptr ? err.part(lo / kChunkElements) : nullptr);
    });
    if (quality != nullptr) *quality = err.Total();
    return absl::OkStatus();
  }
  absl::Status DecodePayload(std::span<const uint8_t> payload, const TensorRef& like,
                             std::span<uint8_t> out) const override {
    const size_t n = Elements(like);
    Reader r(payload);
    uint8_t layout = 0;
    uint32_t group = 0;
    if (!r.Read(&layout) || !r.Read(&group) || group == 0 || layout > kColumns) {
      return Damaged(name(), "bad layout");
    }
    const size_t scales = layout == kColumns ? group : (n + group - 1) / group;
    std::span<const uint8_t> s, q;
    if ((layout == kColumns && n % group != 0) || !r.Take(4 * scales, &s) || !r.Take(n, &q) ||
        r.left() != 0) {
      return Damaged(name(), "wrong size");
    }
    std::vector<float> scale(scales);
    std::memcpy(scale.data(), s.data(), 4 * scales);
    const int8_t* codes = reinterpret_cast<const int8_t*>(q.data());
    const simd::Int8Scales sc{scale.data(), nullptr, group, layout == kColumns};
    Chunks(n, kChunkElements, [&](size_t lo, size_t hi) {
      simd::DequantizeInt8(codes, lo, hi, sc, like.dtype, out.data());
    });
    return absl::OkStatus();
  }
};

// Asymmetric 4-bit in groups of 64: each group's minimum and step (float16 each), 16 levels
// between. Payload: the (min, step) pairs, then two values per byte (low nibble first).
class Int4 final : public Codec {
 public:
  static constexpr size_t kGroup = simd::kInt4Group;
  static_assert(kChunkElements % kGroup == 0);
  CodecId id() const override { return CodecId::kInt4G64; }
  const char* name() const override { return "int4_g64"; }
  bool lossy() const override { return true; }
  bool Accepts(const TensorRef& t) const override { return IsFloat(t.dtype); }

 protected:
  absl::Status EncodePayload(const TensorRef& t, double, Bytes* out, Quality*) const override {
    if (!AllFinite(t)) return NonFinite(name());
    const size_t n = Elements(t), groups = (n + kGroup - 1) / kGroup, base = out->size();
    out->resize(base + 4 * groups + (n + 1) / 2);
    uint8_t* params = out->data() + base;
    uint8_t* packed = params + 4 * groups;
    std::atomic<bool> range_ok{true};
    Chunks(n, kChunkElements, [&](size_t lo, size_t hi) {  // whole groups
      if (!simd::QuantizeInt4(t.dtype, t.bytes.data(), lo, hi, params, packed)) range_ok = false;
    });
    if (!range_ok) return absl::FailedPreconditionError("int4_g64: values beyond float16 range");
    return absl::OkStatus();
  }
  absl::Status DecodePayload(std::span<const uint8_t> payload, const TensorRef& like,
                             std::span<uint8_t> out) const override {
    const size_t n = Elements(like), groups = (n + kGroup - 1) / kGroup;
    if (payload.size() != 4 * groups + (n + 1) / 2) return Damaged(name(), "wrong size");
    const uint8_t* packed = payload.data() + 4 * groups;
    Chunks(n, kChunkElements, [&](size_t lo, size_t hi) {
      simd::DequantizeInt4(payload.data(), packed, lo, hi, like.dtype, out.data());
    });
    return absl::OkStatus();
  }
};

}  // namespace

const Codec& Fp16Codec() {
  static const Narrow c(CodecId::kFp16, "fp16", DType::kFloat16);
  return c;
}

const Codec& Bf16Codec() {
  static const Narrow c(CodecId::kBf16, "bf16", DType::kBFloat16);
  return c;
}

const Codec& Fp8Codec() {
  static const Fp8 c;
  return c;
}

const Codec& Int8Codec() {
  static const Int8 c;
  return c;
}

const Codec& Int4Codec() {
  static const Int4 c;
  return c;
}

}  // namespace tensord::codec::internal
