// What the builds of codec/simd.h share inside daemon/codec/simd*.cc: when a block's float
// error sums can be trusted, the double-precision error of a block from its codes, and the
// AVX-512 kernels (simd_avx512.cc), which simd.cc calls only on CPUs that have them.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "daemon/codec/simd.h"

namespace tensord::codec::simd {

// The vector kernels add squares in float lanes and move them to double sums every block of
// 2048 elements. Float squares overflow beyond |v| ~ 1.8e19 and lose everything below ~1e-19:
// a block whose sums are not finite, or so small that its squares may have underflowed (below
// 2^-60), is added again in double from its inputs, which rare tensors of extreme magnitude pay.
// A zero sum is not trusted either (every square may have underflowed), nor a tiny error sum
// where a difference was not zero.
inline bool TrustedSums(double err2, double ref2, float max) {
  constexpr double kSmallestTrusted = 0x1p-60;
  return std::isfinite(err2) && std::isfinite(ref2) && ref2 >= kSmallestTrusted &&
         (err2 >= kSmallestTrusted || max == 0);
}

namespace exact {

// The error terms of elements [lo, hi) against their codes, added in double (the max too).
void AddInt8Error(DType d, const uint8_t* src, size_t lo, size_t hi, const Int8Scales& s,
                  const int8_t* q, Error* err);
void AddE4m3Error(DType d, const uint8_t* src, size_t lo, size_t hi, const uint8_t* scales,
                  const uint8_t* q, Error* err);

}  // namespace exact

namespace avx512 {

// The functions of codec/simd.h of the same names.
bool AbsMaxRuns(DType d, const uint8_t* src, size_t n, size_t run, float* run_max, float* col_max);
void Int8ScalesOf(const float* maxima, size_t n, float* scale, float* inv);
void QuantizeInt8(DType d, const uint8_t* src, size_t lo, size_t hi, const Int8Scales& s, int8_t* q,
                  Error* err);
void DequantizeInt8(const int8_t* q, size_t lo, size_t hi, const Int8Scales& s, DType d,
                    uint8_t* dst);
bool QuantizeE4m3(DType d, const uint8_t* src, size_t lo, size_t hi, uint8_t* scales, uint8_t* q,
                  Error* err);
void DequantizeE4m3(const uint8_t* q, size_t lo, size_t hi, const uint8_t* scales, DType d,
                    uint8_t* dst);
bool QuantizeInt4(DType d, const uint8_t* src, size_t lo, size_t hi, uint8_t* params,
                  uint8_t* packed);
void DequantizeInt4(const uint8_t* params, const uint8_t* packed, size_t lo, size_t hi, DType d,
                    uint8_t* dst);

}  // namespace avx512
}  // namespace tensord::codec::simd
