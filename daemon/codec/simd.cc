// The element codecs' kernels, three times: portable C++, AVX2 + F16C + FMA on float tiles, and
// AVX-512 kernels that quantize straight from and to the tensor's dtype (functions compiled for
// their target with GCC's target attribute and called only when the CPU has it). Lambdas are
// avoided inside target functions: they would not inherit the target.
#include "daemon/codec/simd.h"

#include <cpuid.h>
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cfloat>
#include <cmath>
#include <cstring>

#include "daemon/codec/float.h"
#include "daemon/codec/simd_kernels.h"

namespace tensord::codec::simd {
namespace {

// AVX2, FMA and F16C, and an OS that saves the YMM registers (CPUID and XGETBV read directly:
// not every compiler's __builtin_cpu_supports knows "f16c").
bool CpuHasAvx2() {
  static const bool has = [] {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return false;
    const bool osxsave = c & (1u << 27), avx = c & (1u << 28), fma = c & (1u << 12),
               f16c = c & (1u << 29);
    if (!osxsave || !avx || !fma || !f16c) return false;
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    if ((lo & 0x6) != 0x6) return false;  // XMM and YMM state
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
    return (b & (1u << 5)) != 0;  // AVX2
  }();
  return has;
}

// AVX-512 F, DQ, BW, VL and BF16, and an OS that saves the opmask and ZMM registers.
bool CpuHasAvx512() {
  static const bool has = [] {
    if (!CpuHasAvx2()) return false;
    unsigned a, b, c, d;
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    if ((lo & 0xe6) != 0xe6) return false;  // XMM, YMM, opmask, ZMM0-15 upper, ZMM16-31
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
    const bool f = b & (1u << 16), dq = b & (1u << 17), bw = b & (1u << 30), vl = b & (1u << 31);
    if (!f || !dq || !bw || !vl) return false;
    if (!__get_cpuid_count(7, 1, &a, &b, &c, &d)) return false;
    return (a & (1u << 5)) != 0;  // AVX512_BF16
  }();
  return has;
}

std::atomic<int> forced_isa{static_cast<int>(Isa::kAvx512)};

// ---- portable ----

namespace portable {

void Widen(DType d, const uint8_t* src, size_t n, float* dst) {
  if (d == DType::kFloat32) {
    std::memcpy(dst, src, 4 * n);
    return;
  }
  const bool half = d == DType::kFloat16;
  for (size_t i = 0; i < n; ++i) {
    uint16_t h;
    std::memcpy(&h, src + 2 * i, 2);
    dst[i] = half ? HalfToFloat(h) : Bf16ToFloat(h);
  }
}

void Narrow(DType d, const float* src, size_t n, uint8_t* dst) {
  if (d == DType::kFloat32) {
    std::memcpy(dst, src, 4 * n);
    return;
  }
  const bool half = d == DType::kFloat16;
  for (size_t i = 0; i < n; ++i) {
    const uint16_t h = half ? FloatToHalf(src[i]) : FloatToBf16(src[i]);
    std::memcpy(dst + 2 * i, &h, 2);
  }
}

Stats Measure(const float* x, size_t n) {
  Stats s;
  if (n == 0) return s;
  s.min = s.max = x[0];
  for (size_t i = 0; i < n; ++i) {
    const float v = x[i];
    if (std::bit_cast<uint32_t>(v) == 0) ++s.zeros;
    if (!std::isfinite(v)) {
      s.finite = false;
      continue;
    }
    s.amax = std::max(s.amax, std::fabs(v));
    s.min = std::min(s.min, v);
    s.max = std::max(s.max, v);
    s.sum2 += double(v) * v;
  }
  return s;
}

float AbsMax(const float* x, size_t n) {
  float m = 0;
  for (size_t i = 0; i < n; ++i) {
    if (!std::isfinite(x[i])) return HUGE_VALF;
    m = std::max(m, std::fabs(x[i]));
  }
  return m;
}

void AbsMaxInto(const float* x, size_t n, float* acc) {
  for (size_t i = 0; i < n; ++i) acc[i] = std::max(acc[i], std::fabs(x[i]));
}

// Adds the error of y (rounded to dtype d first) against x.
void AddRoundedError(DType d, const float* x, float y, Error* err) {
  if (d != DType::kFloat32) {
    uint8_t tmp[4];
    Narrow(d, &y, 1, tmp);
    Widen(d, tmp, 1, &y);
  }
  const double e = double(*x) - double(y);
  err->err2 += e * e;
  err->ref2 += double(*x) * *x;
  err->max = std::max(err->max, float(std::fabs(e)));
}

void QuantizeInt8(const float* x, size_t n, const float* inv, const float* scale, bool per_element,
                  int8_t* q, DType d, Error* err) {
  for (size_t i = 0; i < n; ++i) {
    const size_t g = per_element ? i : 0;
    const float v = std::clamp(RoundEven(x[i] * inv[g]), -127.0f, 127.0f);
    q[i] = static_cast<int8_t>(v);
    if (err != nullptr) AddRoundedError(d, x + i, v * scale[g], err);
  }
}

void DequantizeInt8(const int8_t* q, size_t n, const float* scale, bool per_element, float* y) {
  for (size_t i = 0; i < n; ++i) y[i] = float(q[i]) * scale[per_element ? i : 0];
}

void QuantizeE4m3(const float* x, size_t n, float inv, float scale, uint8_t* q, DType d,
                  Error* err) {
  for (size_t i = 0; i < n; ++i) {
    q[i] = FloatToE4m3(x[i] * inv);
    if (err != nullptr) AddRoundedError(d, x + i, E4m3ToFloat(q[i]) * scale, err);
  }
}

void DequantizeE4m3(const uint8_t* q, size_t n, float scale, float* y) {
  for (size_t i = 0; i < n; ++i) y[i] = E4m3ToFloat(q[i]) * scale;
}

void AddError(const float* x, const float* y, size_t n, Error* e) {
  for (size_t i = 0; i < n; ++i) {
    const double d = double(x[i]) - double(y[i]);
    e->err2 += d * d;
    e->ref2 += double(x[i]) * x[i];
    e->max = std::max(e->max, float(std::fabs(d)));
  }
}

}  // namespace portable

// ---- AVX2 + F16C + FMA ----

namespace avx2 {

#define TENSORD_AVX2 __attribute__((target("avx2,f16c,fma")))

TENSORD_AVX2 inline __m256 Abs(__m256 v) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v); }

TENSORD_AVX2 inline float HMax(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
  return _mm_cvtss_f32(m);
}

TENSORD_AVX2 inline float HMin(__m256 v) {
  __m128 m = _mm_min_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_min_ps(m, _mm_movehl_ps(m, m));
  m = _mm_min_ss(m, _mm_shuffle_ps(m, m, 1));
  return _mm_cvtss_f32(m);
}

TENSORD_AVX2 inline double HSum(__m256d v) {
  alignas(32) double d[4];
  _mm256_store_pd(d, v);
  return (d[0] + d[1]) + (d[2] + d[3]);
}

// acc += v * v, in double: float squares overflow beyond |v| ~ 1.8e19 and underflow below
// ~1e-19, which would make a measured error 0.
TENSORD_AVX2 inline __m256d AddSquares(__m256 v, __m256d acc) {
  const __m256d lo = _mm256_cvtps_pd(_mm256_castps256_ps128(v));
  const __m256d hi = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
  return _mm256_fmadd_pd(hi, hi, _mm256_fmadd_pd(lo, lo, acc));
}

// bfloat16 bits (in the low half of each 32-bit lane) of eight floats, rounded to nearest even.
TENSORD_AVX2 inline __m256i Bf16Bits(__m256 v) {
  const __m256i x = _mm256_castps_si256(v);
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(x, 16), _mm256_set1_epi32(1));
  const __m256i rounded =
      _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(x, _mm256_set1_epi32(0x7fff)), lsb), 16);
  const __m256i quiet = _mm256_or_si256(_mm256_srli_epi32(x, 16), _mm256_set1_epi32(0x40));
  const __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(x, _mm256_set1_epi32(0x7fffffff)),
                                         _mm256_set1_epi32(0x7f800000));
  return _mm256_blendv_epi8(rounded, quiet, nan);
}

TENSORD_AVX2 inline __m128i Pack32To16(__m256i v) {
  return _mm_packus_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
}

TENSORD_AVX2 void Widen(DType d, const uint8_t* src, size_t n, float* dst) {
  if (d == DType::kFloat32) {
    std::memcpy(dst, src, 4 * n);
    return;
  }
  size_t i = 0;
  if (d == DType::kFloat16) {
    for (; i + 8 <= n; i += 8) {
      const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 2 * i));
      _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(h));
    }
  } else {
    for (; i + 8 <= n; i += 8) {
      const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 2 * i));
      const __m256i w = _mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16);
      _mm256_storeu_ps(dst + i, _mm256_castsi256_ps(w));
    }
  }
  portable::Widen(d, src + 2 * i, n - i, dst + i);
}

TENSORD_AVX2 void Narrow(DType d, const float* src, size_t n, uint8_t* dst) {
  if (d == DType::kFloat32) {
    std::memcpy(dst, src, 4 * n);
    return;
  }
  size_t i = 0;
  if (d == DType::kFloat16) {
    for (; i + 8 <= n; i += 8) {
      const __m128i h =
          _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + 2 * i), h);
    }
  } else {
    for (; i + 8 <= n; i += 8) {
      const __m128i b = Pack32To16(Bf16Bits(_mm256_loadu_ps(src + i)));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + 2 * i), b);
    }
  }
  portable::Narrow(d, src + i, n - i, dst + 2 * i);
}

TENSORD_AVX2 Stats Measure(const float* x, size_t n) {
  Stats s;
  if (n < 8) return portable::Measure(x, n);
  __m256 amax = _mm256_setzero_ps(), mn = _mm256_loadu_ps(x), mx = mn;
  __m256d sum2 = _mm256_setzero_pd();
  __m256 bad = _mm256_setzero_ps();
  size_t zeros = 0, i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    const __m256 diff = _mm256_sub_ps(v, v);  // NaN exactly where v is Inf or NaN
    bad = _mm256_or_ps(bad, _mm256_cmp_ps(diff, diff, _CMP_UNORD_Q));
    amax = _mm256_max_ps(amax, Abs(v));
    mn = _mm256_min_ps(mn, v);
    mx = _mm256_max_ps(mx, v);
    sum2 = AddSquares(v, sum2);
    const __m256i z = _mm256_cmpeq_epi32(_mm256_castps_si256(v), _mm256_setzero_si256());
    zeros += std::popcount(static_cast<uint32_t>(_mm256_movemask_ps(_mm256_castsi256_ps(z))));
  }
  s.finite = _mm256_movemask_ps(bad) == 0;
  s.amax = HMax(amax);
  s.min = HMin(mn);
  s.max = HMax(mx);
  s.sum2 = HSum(sum2);
  s.zeros = zeros;
  if (i < n) {
    const Stats t = portable::Measure(x + i, n - i);
    s.finite = s.finite && t.finite;
    s.amax = std::max(s.amax, t.amax);
    s.min = std::min(s.min, t.min);
    s.max = std::max(s.max, t.max);
    s.sum2 += t.sum2;
    s.zeros += t.zeros;
  }
  return s;
}

TENSORD_AVX2 float AbsMax(const float* x, size_t n) {
  __m256 m = _mm256_setzero_ps(), bad = _mm256_setzero_ps();
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    const __m256 diff = _mm256_sub_ps(v, v);  // NaN exactly where v is Inf or NaN
    bad = _mm256_or_ps(bad, _mm256_cmp_ps(diff, diff, _CMP_UNORD_Q));
    m = _mm256_max_ps(m, Abs(v));
  }
  if (_mm256_movemask_ps(bad) != 0) return HUGE_VALF;
  return std::max(HMax(m), portable::AbsMax(x + i, n - i));
}

TENSORD_AVX2 void AbsMaxInto(const float* x, size_t n, float* acc) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(acc + i, _mm256_max_ps(_mm256_loadu_ps(acc + i), Abs(_mm256_loadu_ps(x + i))));
  }
  portable::AbsMaxInto(x + i, n - i, acc + i);
}

// Eight int32 lanes (within the int8 range) stored as eight bytes.
TENSORD_AVX2 inline void Store8(__m256i v, uint8_t* dst, bool is_unsigned) {
  const __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  const __m128i b = is_unsigned ? _mm_packus_epi16(w, w) : _mm_packs_epi16(w, w);
  _mm_storel_epi64(reinterpret_cast<__m128i*>(dst), b);
}

// Error terms of eight lanes, kept in registers until the run ends. The squares add up in
// float lanes (two FMAs per vector, where widening to double took ten operations) and move to
// double sums every kFlushEvery vectors, so a lane never adds more than that many terms. Float
// squares overflow beyond |v| ~ 1.8e19 and lose everything below ~1e-19: a block whose float
// sums are not finite, or so small that its squares may have underflowed, is added again in
// double from the saved inputs (Redo), which rare tensors of extreme magnitude pay.
struct ErrorLanes {
  __m256 err2, ref2;
  __m256 max;
};

inline constexpr size_t kFlushEvery = 256;  // vectors: 2048 elements, a tile

TENSORD_AVX2 inline ErrorLanes NoError() {
  return {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
}

TENSORD_AVX2 inline __m256 Rounded(DType d, __m256 y) {
  if (d == DType::kFloat16) {
    return _mm256_cvtph_ps(_mm256_cvtps_ph(y, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
  if (d == DType::kBFloat16) return _mm256_castsi256_ps(_mm256_slli_epi32(Bf16Bits(y), 16));
  return y;
}

// Adds x against y once y is stored in dtype d and read back.
TENSORD_AVX2 inline void AddLanes(DType d, __m256 x, __m256 y, ErrorLanes* e) {
  const __m256 diff = _mm256_sub_ps(x, Rounded(d, y));
  e->err2 = _mm256_fmadd_ps(diff, diff, e->err2);
  e->ref2 = _mm256_fmadd_ps(x, x, e->ref2);
  e->max = _mm256_max_ps(e->max, Abs(diff));
}

TENSORD_AVX2 inline double HSumPs(__m256 v) {
  const __m256d lo = _mm256_cvtps_pd(_mm256_castps256_ps128(v));
  const __m256d hi = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
  return HSum(_mm256_add_pd(lo, hi));
}

// Moves a block's float sums into `e`; false when they cannot be trusted (then nothing is
// added but the max, and the caller redoes the block in double).
TENSORD_AVX2 inline bool Flush(ErrorLanes* lanes, Error* e) {
  const double err2 = HSumPs(lanes->err2), ref2 = HSumPs(lanes->ref2);
  const float max = HMax(lanes->max);  // this block's largest difference
  e->max = std::max(e->max, max);
  lanes->err2 = lanes->ref2 = _mm256_setzero_ps();
  if (!TrustedSums(err2, ref2, max)) return false;
  e->err2 += err2;
  e->ref2 += ref2;
  return true;
}

// The error terms of x against y (y not yet rounded to d) in double: a block Flush refused.
TENSORD_AVX2 inline void AddLanesExact(DType d, __m256 x, __m256 y, __m256d* err2, __m256d* ref2) {
  const __m256 diff = _mm256_sub_ps(x, Rounded(d, y));
  *err2 = AddSquares(diff, *err2);
  *ref2 = AddSquares(x, *ref2);
}

// The blocks of a run's whole vectors: [at, end) of at most kFlushEvery vectors each.
inline size_t BlockEnd(size_t at, size_t n) { return std::min(n / 8 * 8, at + 8 * kFlushEvery); }

TENSORD_AVX2 inline __m256 Int8Value(const int8_t* q, __m256 scale) {
  const __m256i v = _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(q)));
  return _mm256_mul_ps(_mm256_cvtepi32_ps(v), scale);
}

TENSORD_AVX2 void QuantizeInt8(const float* x, size_t n, const float* inv, const float* scale,
                               bool per_element, int8_t* q, DType d, Error* err) {
  const __m256i lo = _mm256_set1_epi32(-127), hi = _mm256_set1_epi32(127);
  const __m256 inv1 = _mm256_set1_ps(inv[0]), scale1 = _mm256_set1_ps(scale[0]);
  size_t i = 0;
  while (i + 8 <= n) {
    const size_t begin = i, end = BlockEnd(i, n);
    ErrorLanes lanes = NoError();
    for (; i < end; i += 8) {
      const __m256 iv = per_element ? _mm256_loadu_ps(inv + i) : inv1;
      const __m256 xv = _mm256_loadu_ps(x + i);
      __m256i v = _mm256_cvtps_epi32(_mm256_mul_ps(xv, iv));  // nearest even
      v = _mm256_min_epi32(_mm256_max_epi32(v, lo), hi);
      Store8(v, reinterpret_cast<uint8_t*>(q + i), false);
      if (err == nullptr) continue;
      const __m256 sc = per_element ? _mm256_loadu_ps(scale + i) : scale1;
      AddLanes(d, xv, _mm256_mul_ps(_mm256_cvtepi32_ps(v), sc), &lanes);
    }
    if (err == nullptr || Flush(&lanes, err)) continue;
    __m256d err2 = _mm256_setzero_pd(), ref2 = _mm256_setzero_pd();
    for (size_t j = begin; j < end; j += 8) {
      const __m256 sc = per_element ? _mm256_loadu_ps(scale + j) : scale1;
      AddLanesExact(d, _mm256_loadu_ps(x + j), Int8Value(q + j, sc), &err2, &ref2);
    }
    err->err2 += HSum(err2);
    err->ref2 += HSum(ref2);
  }
  portable::QuantizeInt8(x + i, n - i, per_element ? inv + i : inv, per_element ? scale + i : scale,
                         per_element, q + i, d, err);
}

TENSORD_AVX2 void DequantizeInt8(const int8_t* q, size_t n, const float* scale, bool per_element,
                                 float* y) {
  const __m256 scale1 = _mm256_set1_ps(scale[0]);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(y + i, Int8Value(q + i, per_element ? _mm256_loadu_ps(scale + i) : scale1));
  }
  portable::DequantizeInt8(q + i, n - i, per_element ? scale + i : scale, per_element, y + i);
}

// The E4M3 value of eight codes (sign bit included; 0x7f/0xff never occur: encodes saturate).
TENSORD_AVX2 inline __m256 E4m3Value(__m256i code) {
  const __m256i mag = _mm256_and_si256(code, _mm256_set1_epi32(0x7f));
  // Normal: exponent e + 120 in float32's field, the 3 mantissa bits on top of its fraction.
  const __m256 normal = _mm256_castsi256_ps(
      _mm256_add_epi32(_mm256_slli_epi32(mag, 20), _mm256_set1_epi32(120 << 23)));
  const __m256 denormal = _mm256_mul_ps(_mm256_cvtepi32_ps(mag), _mm256_set1_ps(1.0f / 512));
  const __m256i is_denormal = _mm256_cmpgt_epi32(_mm256_set1_epi32(8), mag);
  const __m256 a = _mm256_blendv_ps(normal, denormal, _mm256_castsi256_ps(is_denormal));
  const __m256i sign = _mm256_slli_epi32(_mm256_and_si256(code, _mm256_set1_epi32(0x80)), 24);
  return _mm256_or_ps(a, _mm256_castsi256_ps(sign));
}

TENSORD_AVX2 void QuantizeE4m3(const float* x, size_t n, float inv, float scale, uint8_t* q,
                               DType d, Error* err) {
  const __m256 iv = _mm256_set1_ps(inv), sc = _mm256_set1_ps(scale);
  const __m256i abs_mask = _mm256_set1_epi32(0x7fffffff), max_code = _mm256_set1_epi32(0x7e);
  size_t i = 0;
  while (i + 8 <= n) {
    const size_t begin = i, end = BlockEnd(i, n);
    ErrorLanes lanes = NoError();
    for (; i < end; i += 8) {
      const __m256 xv = _mm256_loadu_ps(x + i);
      const __m256i bits = _mm256_castps_si256(_mm256_mul_ps(xv, iv));
      const __m256i sign = _mm256_and_si256(_mm256_srli_epi32(bits, 24), _mm256_set1_epi32(0x80));
      const __m256i abs = _mm256_and_si256(bits, abs_mask);
      // Normal range: the scalar FloatToE4m3's integer rounding, eight lanes at once.
      const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(abs, 20), _mm256_set1_epi32(1));
      __m256i normal = _mm256_add_epi32(_mm256_add_epi32(abs, _mm256_set1_epi32(0x7ffff)), lsb);
      normal = _mm256_srli_epi32(_mm256_sub_epi32(normal, _mm256_set1_epi32(120 << 23)), 20);
      // Below 2^-6: round(|x| * 512), units of the smallest denormal (can reach 8, the first
      // normal code).
      const __m256i denormal =
          _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_castsi256_ps(abs), _mm256_set1_ps(512.0f)));
      const __m256i small = _mm256_cmpgt_epi32(_mm256_set1_epi32(0x3c800000), abs);  // < 2^-6
      __m256i code = _mm256_blendv_epi8(normal, denormal, small);
      // The normal path's subtraction wraps for tiny values; those took the denormal branch.
      code = _mm256_min_epu32(code, max_code);
      code = _mm256_or_si256(code, sign);
      Store8(code, q + i, true);
      if (err != nullptr) AddLanes(d, xv, _mm256_mul_ps(E4m3Value(code), sc), &lanes);
    }
    if (err == nullptr || Flush(&lanes, err)) continue;
    __m256d err2 = _mm256_setzero_pd(), ref2 = _mm256_setzero_pd();
    for (size_t j = begin; j < end; j += 8) {
      const __m256i code =
          _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(q + j)));
      AddLanesExact(d, _mm256_loadu_ps(x + j), _mm256_mul_ps(E4m3Value(code), sc), &err2, &ref2);
    }
    err->err2 += HSum(err2);
    err->ref2 += HSum(ref2);
  }
  portable::QuantizeE4m3(x + i, n - i, inv, scale, q + i, d, err);
}

TENSORD_AVX2 void DequantizeE4m3(const uint8_t* q, size_t n, float scale, float* y) {
  const __m256 sc = _mm256_set1_ps(scale);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256i code =
        _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(q + i)));
    _mm256_storeu_ps(y + i, _mm256_mul_ps(E4m3Value(code), sc));
  }
  portable::DequantizeE4m3(q + i, n - i, scale, y + i);
}

TENSORD_AVX2 void AddError(const float* x, const float* y, size_t n, Error* e) {
  size_t i = 0;
  while (i + 8 <= n) {
    const size_t begin = i, end = BlockEnd(i, n);
    ErrorLanes lanes = NoError();
    for (; i < end; i += 8) {
      AddLanes(DType::kFloat32, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i), &lanes);
    }
    if (Flush(&lanes, e)) continue;
    __m256d err2 = _mm256_setzero_pd(), ref2 = _mm256_setzero_pd();
    for (size_t j = begin; j < end; j += 8) {
      AddLanesExact(DType::kFloat32, _mm256_loadu_ps(x + j), _mm256_loadu_ps(y + j), &err2, &ref2);
    }
    e->err2 += HSum(err2);
    e->ref2 += HSum(ref2);
  }
  portable::AddError(x + i, y + i, n - i, e);
}

#undef TENSORD_AVX2

}  // namespace avx2

// ---- the quantizers on float tiles (portable and AVX2) ----

// The float-tile kernels of one build.
struct TileKernels {
  void (*widen)(DType, const uint8_t*, size_t, float*);
  void (*narrow)(DType, const float*, size_t, uint8_t*);
  float (*abs_max)(const float*, size_t);
  void (*abs_max_into)(const float*, size_t, float*);
  void (*quantize_int8)(const float*, size_t, const float*, const float*, bool, int8_t*, DType,
                        Error*);
  void (*dequantize_int8)(const int8_t*, size_t, const float*, bool, float*);
  void (*quantize_e4m3)(const float*, size_t, float, float, uint8_t*, DType, Error*);
  void (*dequantize_e4m3)(const uint8_t*, size_t, float, float*);
};

constexpr TileKernels kPortableTiles{portable::Widen,        portable::Narrow,
                                     portable::AbsMax,       portable::AbsMaxInto,
                                     portable::QuantizeInt8, portable::DequantizeInt8,
                                     portable::QuantizeE4m3, portable::DequantizeE4m3};
constexpr TileKernels kAvx2Tiles{avx2::Widen,        avx2::Narrow,        avx2::AbsMax,
                                 avx2::AbsMaxInto,   avx2::QuantizeInt8,  avx2::DequantizeInt8,
                                 avx2::QuantizeE4m3, avx2::DequantizeE4m3};

namespace tiled {

bool AbsMaxRuns(const TileKernels& k, DType d, const uint8_t* src, size_t n, size_t run,
                float* run_max, float* col_max) {
  const size_t item = ItemSize(d);
  float x[kTile];
  bool finite = true;
  for (size_t r0 = 0; r0 < n; r0 += run) {
    const size_t end = std::min(n, r0 + run);
    float m = 0;
    for (size_t at = r0; at < end; at += kTile) {
      const size_t len = std::min(end - at, kTile);
      k.widen(d, src + item * at, len, x);
      const float a = k.abs_max(x, len);
      finite = finite && std::isfinite(a);
      m = std::max(m, a);
      if (col_max != nullptr) k.abs_max_into(x, len, col_max + (at - r0));
    }
    run_max[r0 / run] = m;
  }
  return finite;
}

// The length of the segment at `at`: up to hi, a tile, and the end of its group.
size_t SegmentLength(size_t at, size_t hi, const Int8Scales& s) {
  return std::min({hi - at, kTile, s.group - at % s.group});
}

void QuantizeInt8(const TileKernels& k, DType d, const uint8_t* src, size_t lo, size_t hi,
                  const Int8Scales& s, int8_t* q, Error* err) {
  const size_t item = ItemSize(d);
  float x[kTile];
  for (size_t at = lo, len; at < hi; at += len) {
    len = SegmentLength(at, hi, s);
    const size_t g = s.Index(at);
    k.widen(d, src + item * at, len, x);
    k.quantize_int8(x, len, s.inv + g, s.scale + g, s.columns, q + at, d, err);
  }
}

void DequantizeInt8(const TileKernels& k, const int8_t* q, size_t lo, size_t hi,
                    const Int8Scales& s, DType d, uint8_t* dst) {
  const size_t item = ItemSize(d);
  float y[kTile];
  for (size_t at = lo, len; at < hi; at += len) {
    len = SegmentLength(at, hi, s);
    k.dequantize_int8(q + at, len, s.scale + s.Index(at), s.columns, y);
    k.narrow(d, y, len, dst + item * at);
  }
}

float BlockScale(const uint8_t* scales, size_t b0) {
  float scale;
  std::memcpy(&scale, scales + 4 * (b0 / kFp8Block), 4);
  return scale;
}

bool QuantizeE4m3(const TileKernels& k, DType d, const uint8_t* src, size_t lo, size_t hi,
                  uint8_t* scales, uint8_t* q, Error* err) {
  const size_t item = ItemSize(d);
  float x[kFp8Block];
  for (size_t b0 = lo; b0 < hi; b0 += kFp8Block) {
    const size_t len = std::min(hi - b0, kFp8Block);
    k.widen(d, src + item * b0, len, x);
    const float amax = k.abs_max(x, len);
    if (!std::isfinite(amax)) return false;
    const float scale = Fp8Scale(amax);
    std::memcpy(scales + 4 * (b0 / kFp8Block), &scale, 4);
    k.quantize_e4m3(x, len, 1.0f / scale, scale, q + b0, d, err);
  }
  return true;
}

void DequantizeE4m3(const TileKernels& k, const uint8_t* q, size_t lo, size_t hi,
                    const uint8_t* scales, DType d, uint8_t* dst) {
  const size_t item = ItemSize(d);
  float y[kFp8Block];
  for (size_t b0 = lo; b0 < hi; b0 += kFp8Block) {
    const size_t len = std::min(hi - b0, kFp8Block);
    k.dequantize_e4m3(q + b0, len, BlockScale(scales, b0), y);
    k.narrow(d, y, len, dst + item * b0);
  }
}

// The minimum and maximum of x[0, n) (n > 0), in eight independent lanes: a single running
// min/max is a chain of dependent instructions, several times slower.
std::pair<float, float> MinMax(const float* x, size_t n) {
  float lo[8], hi[8];
  for (size_t k = 0; k < 8; ++k) lo[k] = hi[k] = x[0];
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (size_t k = 0; k < 8; ++k) {
      lo[k] = std::min(lo[k], x[i + k]);
      hi[k] = std::max(hi[k], x[i + k]);
    }
  }
  for (; i < n; ++i) {
    lo[0] = std::min(lo[0], x[i]);
    hi[0] = std::max(hi[0], x[i]);
  }
  return {*std::min_element(lo, lo + 8), *std::max_element(hi, hi + 8)};
}

bool QuantizeInt4(const TileKernels& k, DType d, const uint8_t* src, size_t lo, size_t hi,
                  uint8_t* params, uint8_t* packed) {
  const size_t item = ItemSize(d);
  float x[kInt4Group];
  bool ok = true;
  for (size_t g0 = lo; g0 < hi; g0 += kInt4Group) {
    const size_t len = std::min(hi - g0, kInt4Group);
    k.widen(d, src + item * g0, len, x);
    const auto [lo_v, hi_v] = MinMax(x, len);
    if (std::fabs(lo_v) > 60000 || std::fabs(hi_v) > 60000) {
      ok = false;
      continue;
    }
    // The stored (rounded) min and step are the ones quantized against; a min of -0 as +0 (the
    // order the vector kernels meet +0 and -0 in is not this one).
    const uint16_t min16 = FloatToHalf(lo_v + 0.0f);
    const float min = HalfToFloat(min16);
    const uint16_t step16 = FloatToHalf(std::max(0.0f, hi_v - min) / 15.0f);
    const float step = HalfToFloat(step16);
    const size_t group = g0 / kInt4Group;
    std::memcpy(params + 4 * group, &min16, 2);
    std::memcpy(params + 4 * group + 2, &step16, 2);
    const float inv = step > 0 ? 1.0f / step : 0.0f;
    const auto level = [&](size_t i) {
      return uint8_t(std::clamp(RoundEven((x[i] - min) * inv), 0.0f, 15.0f));
    };
    size_t i = 0;
    for (; i + 2 <= len; i += 2) packed[(g0 + i) / 2] = uint8_t(level(i) | level(i + 1) << 4);
    if (i < len) packed[(g0 + i) / 2] = level(i);  // the tensor's odd last element
  }
  return ok;
}

void DequantizeInt4(const TileKernels& k, const uint8_t* params, const uint8_t* packed, size_t lo,
                    size_t hi, DType d, uint8_t* dst) {
  const size_t item = ItemSize(d);
  float y[kInt4Group];
  for (size_t g0 = lo; g0 < hi; g0 += kInt4Group) {
    const size_t len = std::min(hi - g0, kInt4Group);
    uint16_t min16, step16;
    std::memcpy(&min16, params + 4 * (g0 / kInt4Group), 2);
    std::memcpy(&step16, params + 4 * (g0 / kInt4Group) + 2, 2);
    const float min = HalfToFloat(min16), step = HalfToFloat(step16);
    for (size_t i = 0; i < len; ++i) {
      const int q = (packed[(g0 + i) / 2] >> (4 * ((g0 + i) % 2))) & 0xf;
      y[i] = min + float(q) * step;
    }
    k.narrow(d, y, len, dst + item * g0);
  }
}

}  // namespace tiled

}  // namespace

namespace exact {

// The error terms of [lo, hi) in double, from the codes already written: a block whose float
// lanes could not be trusted (the AVX-512 kernels' counterpart of the AVX2 redo).
void AddInt8Error(DType d, const uint8_t* src, size_t lo, size_t hi, const Int8Scales& s,
                  const int8_t* q, Error* err) {
  const size_t item = ItemSize(d);
  for (size_t i = lo; i < hi; ++i) {
    float x;
    portable::Widen(d, src + item * i, 1, &x);
    portable::AddRoundedError(d, &x, float(q[i]) * s.scale[s.Index(i)], err);
  }
}

void AddE4m3Error(DType d, const uint8_t* src, size_t lo, size_t hi, const uint8_t* scales,
                  const uint8_t* q, Error* err) {
  const size_t item = ItemSize(d);
  for (size_t i = lo; i < hi; ++i) {
    float x;
    portable::Widen(d, src + item * i, 1, &x);
    portable::AddRoundedError(d, &x, E4m3ToFloat(q[i]) * tiled::BlockScale(scales, i), err);
  }
}

}  // namespace exact

Isa BestIsa() { return CpuHasAvx512() ? Isa::kAvx512 : CpuHasAvx2() ? Isa::kAvx2 : Isa::kPortable; }

Isa ActiveIsa() {
  return static_cast<Isa>(
      std::min(static_cast<int>(BestIsa()), forced_isa.load(std::memory_order_relaxed)));
}

void ForceIsa(Isa isa) { forced_isa = static_cast<int>(isa); }

const char* IsaName(Isa isa) {
  switch (isa) {
    case Isa::kPortable:
      return "portable";
    case Isa::kAvx2:
      return "avx2";
    case Isa::kAvx512:
      return "avx512";
  }
  return "unknown";
}

namespace {
bool Avx2Up() { return ActiveIsa() >= Isa::kAvx2; }
const TileKernels& Tiles() { return Avx2Up() ? kAvx2Tiles : kPortableTiles; }
bool Avx512() { return ActiveIsa() == Isa::kAvx512; }
}  // namespace

void Widen(DType d, const uint8_t* src, size_t n, float* dst) { Tiles().widen(d, src, n, dst); }

void Narrow(DType d, const float* src, size_t n, uint8_t* dst) { Tiles().narrow(d, src, n, dst); }

Stats Measure(const float* x, size_t n) {
  return Avx2Up() ? avx2::Measure(x, n) : portable::Measure(x, n);
}

float AbsMax(const float* x, size_t n) { return Tiles().abs_max(x, n); }

void AddError(const float* x, const float* y, size_t n, Error* e) {
  Avx2Up() ? avx2::AddError(x, y, n, e) : portable::AddError(x, y, n, e);
}

bool AbsMaxRuns(DType d, const uint8_t* src, size_t n, size_t run, float* run_max, float* col_max) {
  if (n == 0) return true;
  if (Avx512()) return avx512::AbsMaxRuns(d, src, n, run, run_max, col_max);
  return tiled::AbsMaxRuns(Tiles(), d, src, n, run, run_max, col_max);
}

void Int8ScalesOf(const float* maxima, size_t n, float* scale, float* inv) {
  if (Avx512()) return avx512::Int8ScalesOf(maxima, n, scale, inv);
  for (size_t g = 0; g < n; ++g) {
    scale[g] = maxima[g] > 0 ? std::max(maxima[g] / 127.0f, FLT_MIN) : 1.0f;
    inv[g] = 1.0f / scale[g];
  }
}

void QuantizeInt8(DType d, const uint8_t* src, size_t lo, size_t hi, const Int8Scales& s, int8_t* q,
                  Error* err) {
  if (Avx512()) return avx512::QuantizeInt8(d, src, lo, hi, s, q, err);
  tiled::QuantizeInt8(Tiles(), d, src, lo, hi, s, q, err);
}

void DequantizeInt8(const int8_t* q, size_t lo, size_t hi, const Int8Scales& s, DType d,
                    uint8_t* dst) {
  if (Avx512()) return avx512::DequantizeInt8(q, lo, hi, s, d, dst);
  tiled::DequantizeInt8(Tiles(), q, lo, hi, s, d, dst);
}

bool QuantizeE4m3(DType d, const uint8_t* src, size_t lo, size_t hi, uint8_t* scales, uint8_t* q,
                  Error* err) {
  if (Avx512()) return avx512::QuantizeE4m3(d, src, lo, hi, scales, q, err);
  return tiled::QuantizeE4m3(Tiles(), d, src, lo, hi, scales, q, err);
}

void DequantizeE4m3(const uint8_t* q, size_t lo, size_t hi, const uint8_t* scales, DType d,
                    uint8_t* dst) {
  if (Avx512()) return avx512::DequantizeE4m3(q, lo, hi, scales, d, dst);
  tiled::DequantizeE4m3(Tiles(), q, lo, hi, scales, d, dst);
}

bool QuantizeInt4(DType d, const uint8_t* src, size_t lo, size_t hi, uint8_t* params,
                  uint8_t* packed) {
  if (Avx512()) return avx512::QuantizeInt4(d, src, lo, hi, params, packed);
  return tiled::QuantizeInt4(Tiles(), d, src, lo, hi, params, packed);
}

void DequantizeInt4(const uint8_t* params, const uint8_t* packed, size_t lo, size_t hi, DType d,
                    uint8_t* dst) {
  if (Avx512()) return avx512::DequantizeInt4(params, packed, lo, hi, d, dst);
  tiled::DequantizeInt4(Tiles(), params, packed, lo, hi, d, dst);
}

}  // namespace tensord::codec::simd
