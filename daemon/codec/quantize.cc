// The lossy element codecs: float32 -> FP16 / BF16, FP8 E4M3 with block scales, INT8 with
// per-channel or per-token scales, and 4-bit asymmetric groups of 64. Each decodes to the
// source dtype; the store measures every round trip (codec.cc) and keeps it only within budget.
#include <algorithm>
#include <cmath>

#include "absl/synchronization/mutex.h"
#include "daemon/codec/internal.h"
#include "daemon/codec/parallel.h"

namespace tensord::codec::internal {
namespace {

// Runs fn(lo, hi) over [0, n) in chunks of `chunk` elements on the codec pool.
template <typename Fn>
void Chunks(size_t n, size_t chunk, Fn&& fn) {
  ParallelFor((n + chunk - 1) / chunk,
              [&](size_t c) { fn(c * chunk, std::min(n, (c + 1) * chunk)); });
}

bool AllFinite(const TensorRef& t) {
  const size_t n = Elements(t);
  std::atomic<bool> finite{true};
  Chunks(n, kChunkElements, [&](size_t lo, size_t hi) {
    for (size_t i = lo; i < hi; ++i) {
      if (!std::isfinite(Load(t.dtype, t.bytes.data(), i))) {
        finite = false;
        return;
      }
    }
  });
  return finite;
}

absl::Status NonFinite(const char* codec) {
  return absl::FailedPreconditionError(absl::StrCat(codec, ": the tensor has NaN or Inf values"));
}

// float32 -> a 16-bit float format, element by element. Payload: the 16-bit values.
class Narrow final : public Codec {
 public:
  Narrow(CodecId id, const char* name, uint16_t (*to)(float), float (*from)(uint16_t))
      : id_(id), name_(name), to_(to), from_(from) {}
  CodecId id() const override { return id_; }
  const char* name() const override { return name_; }
  bool lossy() const override { return true; }
  bool Accepts(const TensorRef& t) const override { return t.dtype == DType::kFloat32; }

 protected:
  absl::Status EncodePayload(const TensorRef& t, double, std::vector<uint8_t>* out) const override {
    const size_t n = Elements(t), base = out->size();
    out->resize(base + 2 * n);
    uint8_t* dst = out->data() + base;
    Chunks(n, kChunkElements, [&](size_t lo, size_t hi) {
      for (size_t i = lo; i < hi; ++i) {
        const uint16_t h = to_(Load(DType::kFloat32, t.bytes.data(), i));
        std::memcpy(dst + 2 * i, &h, 2);
      }
    });
    return absl::OkStatus();
  }
  absl::Status DecodePayload(std::span<const uint8_t> payload, const TensorRef&,
                             std::span<uint8_t> out) const override {
    const size_t n = out.size() / 4;
    if (payload.size() != 2 * n) return Damaged(name_, "wrong size");
    Chunks(n, kChunkElements, [&](size_t lo, size_t hi) {
      for (size_t i = lo; i < hi; ++i) {
        uint16_t h;
        std::memcpy(&h, payload.data() + 2 * i, 2);
        Store(DType::kFloat32, out.data(), i, from_(h));
      }
    });
    return absl::OkStatus();
  }

 private:
  const CodecId id_;
  const char* const name_;
  uint16_t (*const to_)(float);
  float (*const from_)(uint16_t);
};

// FP8 E4M3 with a float32 scale per block of 256 elements (max |x| of the block maps to 448).
// Payload: the scales, then one byte per element.
class Fp8 final : public Codec {
 public:
  static constexpr size_t kBlock = 256;
  CodecId id() const override { return CodecId::kFp8E4m3; }
  const char* name() const override { return "fp8_e4m3"; }
  bool lossy() const override { return true; }
  bool Accepts(const TensorRef& t) const override { return IsFloat(t.dtype); }

 protected:
  absl::Status EncodePayload(const TensorRef& t, double, std::vector<uint8_t>* out) const override {
    if (!AllFinite(t)) return NonFinite(name());
    const size_t n = Elements(t), blocks = (n + kBlock - 1) / kBlock, base = out->size();
    out->resize(base + 4 * blocks + n);
    uint8_t* scales = out->data() + base;
    uint8_t* codes = scales + 4 * blocks;
    Chunks(n, kChunkElements, [&](size_t lo, size_t hi) {  // chunks are whole blocks
      for (size_t b0 = lo; b0 < hi; b0 += kBlock) {
        const size_t b1 = std::min(hi, b0 + kBlock);
        float amax = 0;
        for (size_t i = b0; i < b1; ++i)
          amax = std::max(amax, std::fabs(Load(t.dtype, t.bytes.data(), i)));
        const float scale = amax > 0 ? amax / kFp8E4m3Max : 1.0f;
        std::memcpy(scales + 4 * (b0 / kBlock), &scale, 4);
        for (size_t i = b0; i < b1; ++i)
          codes[i] = FloatToE4m3(Load(t.dtype, t.bytes.data(), i) / scale);
      }
    });
    return absl::OkStatus();
  }
  absl::Status DecodePayload(std::span<const uint8_t> payload, const TensorRef& like,
                             std::span<uint8_t> out) const override {
    const size_t n = Elements(like), blocks = (n + kBlock - 1) / kBlock;
    if (payload.size() != 4 * blocks + n) return Damaged(name(), "wrong size");
    const uint8_t* codes = payload.data() + 4 * blocks;
    Chunks(n, kChunkElements, [&](size_t lo, size_t hi) {
      for (size_t i = lo; i < hi; ++i) {
        float scale;
        std::memcpy(&scale, payload.data() + 4 * (i / kBlock), 4);
        Store(like.dtype, out.data(), i, E4m3ToFloat(codes[i]) * scale);
      }
    });
    return absl::OkStatus();
  }
};

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
  absl::Status EncodePayload(const TensorRef& t, double, std::vector<uint8_t>* out) const override {
    if (!AllFinite(t)) return NonFinite(name());
    const size_t n = Elements(t);
    const auto [rows, cols] = Matrix(t);
    // A "row" for per-token scales: the last dimension, unless the tensor has none (1-D) or
    // it is too short or too long to share one scale well.
    const size_t run = t.shape.size() >= 2 && cols >= 32 && cols <= 65536 ? cols : 256;
    const size_t runs = (n + run - 1) / run;
    // Row maxima, and column maxima where the tensor has columns (merged per chunk of rows).
    std::vector<float> row_max(runs, 0);
    const bool by_column = rows >= 64 && cols >= 2 && cols <= (1u << 20);
    std::vector<float> col_max(by_column ? cols : 0, 0);
    absl::Mutex mu;
    const size_t rows_per_chunk = std::max<size_t>(1, kChunkElements / run);
    Chunks(runs, rows_per_chunk, [&](size_t r0, size_t r1) {
      std::vector<float> local(col_max.size(), 0);
      for (size_t r = r0; r < r1; ++r) {
        float m = 0;
        size_t c = by_column ? (r * run) % cols : 0;  // the column of element i
        for (size_t i = r * run; i < std::min(n, (r + 1) * run); ++i) {
          const float a = std::fabs(Load(t.dtype, t.bytes.data(), i));
          m = std::max(m, a);
          if (by_column) {
            local[c] = std::max(local[c], a);
            if (++c == cols) c = 0;
          }
        }
        row_max[r] = m;
      }
      if (!by_column) return;
      absl::MutexLock lock(&mu);
      for (size_t c = 0; c < cols; ++c) col_max[c] = std::max(col_max[c], local[c]);
    });
    // Noise energy is proportional to the elements each scale covers times its square.
    double rows_noise = 0, cols_noise = 0;
    for (size_t r = 0; r < runs; ++r) rows_noise += double(row_max[r]) * row_max[r] * run;
    for (float m : col_max) cols_noise += double(m) * m * rows;
    const Layout layout = by_column && cols_noise < rows_noise ? kColumns : kRows;
    const std::vector<float>& maxima = layout == kColumns ? col_max : row_max;
    Append(out, uint8_t(layout));
    Append(out, uint32_t(layout == kColumns ? cols : run));
    const size_t base = out->size();
    out->resize(base + 4 * maxima.size() + n);
    std::vector<float> scales(maxima.size()), inverse(maxima.size());
    for (size_t g = 0; g < maxima.size(); ++g) {
      scales[g] = maxima[g] > 0 ? maxima[g] / 127.0f : 1.0f;
      inverse[g] = 1.0f / scales[g];
      std::memcpy(out->data() + base + 4 * g, &scales[g], 4);
    }
    int8_t* q = reinterpret_cast<int8_t*>(out->data() + base + 4 * maxima.size());
    const size_t group = layout == kColumns ? cols : run;
    Chunks(n, kChunkElements, [&](size_t lo, size_t hi) {
      // Walks (scale index, position in its group) without a division per element.
      size_t g = layout == kColumns ? lo % cols : lo / run, k = lo % group;
      for (size_t i = lo; i < hi; ++i) {
        const float v = RoundEven(Load(t.dtype, t.bytes.data(), i) * inverse[g]);
        q[i] = static_cast<int8_t>(std::clamp(v, -127.0f, 127.0f));
        if (layout == kColumns) {
          if (++g == cols) g = 0;
        } else if (++k == run) {
          k = 0;
          ++g;
        }
      }
    });
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
    Chunks(n, kChunkElements, [&](size_t lo, size_t hi) {
      size_t g = layout == kColumns ? lo % group : lo / group, k = lo % group;
      for (size_t i = lo; i < hi; ++i) {
        Store(like.dtype, out.data(), i, float(static_cast<int8_t>(q[i])) * scale[g]);
        if (layout == kColumns) {
          if (++g == group) g = 0;
        } else if (++k == group) {
          k = 0;
          ++g;
        }
      }
    });
    return absl::OkStatus();
  }
};

// Asymmetric 4-bit in groups of 64: each group's minimum and step (float16 each), 16 levels
// between. Payload: the (min, step) pairs, then two values per byte (low nibble first).
class Int4 final : public Codec {
 public:
  static constexpr size_t kGroup = 64;
  CodecId id() const override { return CodecId::kInt4G64; }
  const char* name() const override { return "int4_g64"; }
  bool lossy() const override { return true; }
  bool Accepts(const TensorRef& t) const override { return IsFloat(t.dtype); }

 protected:
  absl::Status EncodePayload(const TensorRef& t, double, std::vector<uint8_t>* out) const override {
    if (!AllFinite(t)) return NonFinite(name());
    const size_t n = Elements(t), groups = (n + kGroup - 1) / kGroup, base = out->size();
    out->resize(base + 4 * groups + (n + 1) / 2, 0);
    uint8_t* params = out->data() + base;
    uint8_t* packed = params + 4 * groups;
    std::atomic<bool> range_ok{true};
    Chunks(n, kChunkElements, [&](size_t lo, size_t hi) {  // whole groups, even counts
      for (size_t g0 = lo; g0 < hi; g0 += kGroup) {
        const size_t g1 = std::min(hi, g0 + kGroup);
        float lo_v = HUGE_VALF, hi_v = -HUGE_VALF;
        for (size_t i = g0; i < g1; ++i) {
          const float v = Load(t.dtype, t.bytes.data(), i);
          lo_v = std::min(lo_v, v);
          hi_v = std::max(hi_v, v);
        }
        if (std::fabs(lo_v) > 60000 || std::fabs(hi_v) > 60000) range_ok = false;
        // The stored (rounded) min and step are the ones quantized against.
        const uint16_t min16 = FloatToHalf(lo_v);
        const float min = HalfToFloat(min16);
        const uint16_t step16 = FloatToHalf(std::max(0.0f, hi_v - min) / 15.0f);
        const float step = HalfToFloat(step16);
        std::memcpy(params + 4 * (g0 / kGroup), &min16, 2);
        std::memcpy(params + 4 * (g0 / kGroup) + 2, &step16, 2);
        const float inv = step > 0 ? 1.0f / step : 0.0f;
        for (size_t i = g0; i < g1; ++i) {
          const float v = Load(t.dtype, t.bytes.data(), i);
          const int q = int(std::clamp(RoundEven((v - min) * inv), 0.0f, 15.0f));
          packed[i / 2] |= uint8_t(q << (4 * (i % 2)));
        }
      }
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
      for (size_t i = lo; i < hi; ++i) {
        uint16_t min16, step16;
        std::memcpy(&min16, payload.data() + 4 * (i / kGroup), 2);
        std::memcpy(&step16, payload.data() + 4 * (i / kGroup) + 2, 2);
        const int q = (packed[i / 2] >> (4 * (i % 2))) & 0xf;
        Store(like.dtype, out.data(), i, HalfToFloat(min16) + float(q) * HalfToFloat(step16));
      }
    });
    return absl::OkStatus();
  }
};

}  // namespace

const Codec& Fp16Codec() {
  static const Narrow c(CodecId::kFp16, "fp16", FloatToHalf, HalfToFloat);
  return c;
}

const Codec& Bf16Codec() {
  static const Narrow c(CodecId::kBf16, "bf16", FloatToBf16, Bf16ToFloat);
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
