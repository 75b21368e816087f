// Vector kernels of the element codecs: they work on runs of float32 values (a tile of a tensor
// widened from its dtype), so each codec's loop is written once and runs as AVX2 + F16C code on
// CPUs that have it (chosen at run time: Debian builds for baseline x86-64) and as plain C++
// elsewhere. Codes and values are identical on both paths (round to nearest even everywhere;
// simd.cc is built without floating-point contraction); sums agree to rounding.
//
// Inputs to the quantizers are finite (the codecs check first); stateless and thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>

#include "tensord/dtype.h"

namespace tensord::codec::simd {

// Elements per tile: the float buffers a codec keeps on its stack.
inline constexpr size_t kTile = 2048;

// Whether the AVX2 + F16C + FMA kernels run (false: the portable ones).
bool Vectorized();
// Forces the portable kernels (tests comparing both paths); false restores the CPU's choice.
void ForcePortable(bool portable);

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
// acc[i] = max(acc[i], |x[i]|).
void AbsMaxInto(const float* x, size_t n, float* acc);

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

// INT8: q[i] = clamp(round(x[i] * inv), -127, 127), with inv and scale one per element
// (per_element) or one for the run. With `err`, also adds the round trip's error terms against
// y[i] = q[i] * scale stored in dtype d (what Decode writes), in the same pass.
void QuantizeInt8(const float* x, size_t n, const float* inv, const float* scale, bool per_element,
                  int8_t* q, DType d, Error* err);
void DequantizeInt8(const int8_t* q, size_t n, const float* scale, bool per_element, float* y);

// FP8 E4M3 (OCP "fn": bias 7, max 448, saturating): q[i] = e4m3(x[i] * inv); `err` as above
// with y[i] = value(q[i]) * scale.
void QuantizeE4m3(const float* x, size_t n, float inv, float scale, uint8_t* q, DType d,
                  Error* err);
void DequantizeE4m3(const uint8_t* q, size_t n, float scale, float* y);

}  // namespace tensord::codec::simd
