// Vector kernels of the element codecs, in three builds chosen at run time (Debian builds for
// baseline x86-64): plain C++; AVX2 + F16C + FMA, which work on runs of float32 values (a tile
// of a tensor widened from its dtype); and AVX-512 (F, BW, VL, DQ, BF16), whose quantizers read
// and write the tensor's own dtype in one pass (no float tile in between). Codes and values are
// identical on all paths (round to nearest even everywhere; simd.cc is built without
// floating-point contraction); error sums agree to rounding.
//
// The kernels assume the default floating-point environment (no flush-to-zero or
// denormals-are-zero), which the daemon never changes. Stateless and thread-safe.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>

#include "tensord/dtype.h"

namespace tensord::codec::simd {

// Elements per tile: the float buffers a codec keeps on its stack.
inline constexpr size_t kTile = 2048;

// The kernels a CPU can run, slowest first.
enum class Isa { kPortable = 0, kAvx2 = 1, kAvx512 = 2 };
// The best this CPU (and OS) runs.
Isa BestIsa();
// The kernels in use: the best, or less where a test forced it.
Isa ActiveIsa();
// Runs at most `isa` (tests comparing paths); ForceIsa(BestIsa()) restores.
void ForceIsa(Isa isa);
const char* IsaName(Isa isa);

// dst[i] = src element i (float32, float16 or bfloat16) as float.
void Widen(DType d, const uint8_t* src, size_t n, float* dst);
// Stores src[i] in dtype d (float32, float16 or bfloat16), rounding to nearest even; NaN stays
// NaN, values beyond the format's range become Inf.
void Narrow(DType d, const float* src, size_t n, uint8_t* dst);

// Statistics of a run: max |x|, min, max, sum of squares, all-zero elements (bits), whether
// every value is finite.
struct Stats {
  float amax = 0, min = 0, max = 0;
  double sum2 = 0;
  size_t zeros = 0;
  bool finite = true;
};
Stats Measure(const float* x, size_t n);
// Returns max |x| of a run; +Inf when a value is Inf or NaN.
float AbsMax(const float* x, size_t n);
// The round trip's error terms: sum (x-y)^2, sum x^2, max |x-y|, added to the totals.
struct Error {
  double err2 = 0, ref2 = 0;
  float max = 0;
  void Add(const Error& o) {
    err2 += o.err2;
    ref2 += o.ref2;
    max = max > o.max ? max : o.max;
  }
};
void AddError(const float* x, const float* y, size_t n, Error* e);

// ---- the quantizers, on a tensor's bytes (float32, float16 or bfloat16) ----

// Maximum |x| of each run of `run` elements of src[0, n) into run_max[k] (the last run may be
// short), and, where col_max is given, of each column (element i in column i % run) folded into
// col_max[0, run). False when a value is Inf or NaN (the maxima are then meaningless).
bool AbsMaxRuns(DType d, const uint8_t* src, size_t n, size_t run, float* run_max, float* col_max);

// INT8 scales of group maxima: scale = max(m / 127, FLT_MIN) (1 where m is 0: its inverse must
// be finite), inv = 1 / scale.
void Int8ScalesOf(const float* maxima, size_t n, float* scale, float* inv);

// INT8 scales: one per run of `group` elements (rows), or one per column of rows `group` long
// (columns); `inv` holds their inverses (needed to quantize only; may be null to decode).
struct Int8Scales {
  const float* scale;
  const float* inv;
  size_t group;
  bool columns;
  size_t Index(size_t i) const { return columns ? i % group : i / group; }
};
// q[i] = clamp(round(x[i] * inv), -127, 127) for elements [lo, hi) of src (which, like q,
// starts at the tensor's element 0); values must be finite. With `err`, also adds the round
// trip's error terms against y[i] = q[i] * scale stored in d (what DequantizeInt8 writes).
void QuantizeInt8(DType d, const uint8_t* src, size_t lo, size_t hi, const Int8Scales& s, int8_t* q,
                  Error* err);
// dst element i (dtype d) = q[i] * scale, for [lo, hi).
void DequantizeInt8(const int8_t* q, size_t lo, size_t hi, const Int8Scales& s, DType d,
                    uint8_t* dst);

// FP8 E4M3 (OCP "fn": bias 7, max 448, saturating) with a float32 scale per block of
// kFp8Block elements (Fp8Scale of the block's max |x|), q[i] = e4m3(x[i] * (1 / scale)).
inline constexpr size_t kFp8Block = 256;
// The scale of a block whose max |x| is amax. For amax in [2^-100, 2^15): the power of two that
// maps amax into (224, 448], so that x / scale is exact (a shift of the exponent) and a code
// depends on x's bits alone: the AVX-512 kernels round float16 and bfloat16 bits in 16-bit lanes.
// E4M3's relative precision is the same in every binade, so this loses nothing measurable
// against mapping amax to 448 exactly. Beyond 2^15 a value could round up to 2^16 (float16's
// Inf); such blocks, tiny ones and all-zero ones keep amax / 448 (at least FLT_MIN: a scale
// that underflows would make its inverse infinite), or 1. Only the encoder chooses: a decoder
// reads the scale.
inline float Fp8Scale(float amax) {
  if (amax >= 0x1p-100f && amax < 0x1p15f) {
    const uint32_t bits = std::bit_cast<uint32_t>(amax);
    const int e = static_cast<int>(bits >> 23) - 127;             // amax = 1.m * 2^e
    const int k = (bits & 0x7fffff) <= 0x600000 ? e - 8 : e - 7;  // 1.m <= 1.75: 1.m * 2^8
    return std::bit_cast<float>(static_cast<uint32_t>(k + 127) << 23);
  }
  return amax > 0 ? (amax / 448.0f < 0x1p-126f ? 0x1p-126f : amax / 448.0f) : 1.0f;
}
// Encodes elements [lo, hi) of src (lo a multiple of kFp8Block), writing the blocks' scales
// (float32, unaligned) at scales + 4 * (block index) and codes at q[lo, hi); `err` as for INT8.
// False when a value is Inf or NaN (the output is then incomplete).
bool QuantizeE4m3(DType d, const uint8_t* src, size_t lo, size_t hi, uint8_t* scales, uint8_t* q,
                  Error* err);
// dst element i (dtype d) = value(q[i]) * its block's scale, for [lo, hi) (lo a multiple of
// kFp8Block). Codes 0x7f and 0xff (NaN) never come out of QuantizeE4m3, which saturates; the
// vector builds decode them as +-480 * scale, the portable one as NaN.
void DequantizeE4m3(const uint8_t* q, size_t lo, size_t hi, const uint8_t* scales, DType d,
                    uint8_t* dst);

// Asymmetric 4-bit in groups of kInt4Group elements: a group's min (a min of -0 stored as +0) and
// step
// ((max - min) / 15) as float16, stored as (min, step) at params + 4 * group; its codes
// round((x - min) * (1 / step)) clamped to [0, 15] (0 where step is 0), two per byte, low
// nibble first, at packed + i / 2 (a tensor's odd last element has high nibble 0). Encodes
// [lo, hi), lo a multiple of kInt4Group, of finite values; false when a group's min or max is
// beyond +-60000 (its float16 min could be Inf, its levels NaN; the output is then incomplete).
inline constexpr size_t kInt4Group = 64;
bool QuantizeInt4(DType d, const uint8_t* src, size_t lo, size_t hi, uint8_t* params,
                  uint8_t* packed);
// dst element i (dtype d) = min + code * step of its group, for [lo, hi) (lo as above).
void DequantizeInt4(const uint8_t* params, const uint8_t* packed, size_t lo, size_t hi, DType d,
                    uint8_t* dst);

}  // namespace tensord::codec::simd
