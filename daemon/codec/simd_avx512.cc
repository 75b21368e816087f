// The AVX-512 kernels of codec/simd.h's quantizers. Each reads the tensor's own dtype and
// writes codes (or decodes codes into the dtype) in one pass over 16 lanes, where the AVX2
// build widens a tile to floats first and narrows it after: at 1 MiB, in cache, the tile's
// round trip cost more than the arithmetic. The results are the portable kernels' bit for bit:
//  - maxima are taken on the bits (|x| orders as its bits do, sign cleared), exact;
//  - bfloat16 is narrowed by VCVTNEPS2BF16 (nearest even, NaN quieted), which flushes denormal
//    results to zero: where a scale could produce one (tiny tensors), the integer rounding of
//    the portable kernels runs instead (kExact);
//  - E4M3 values are built as float bits (code << 20: the exponent and mantissa fields line up
//    2^120 below) and scaled by 2^120 * scale in one multiplication, exact up to its rounding.
// Compiled for the target with GCC's target attribute; called only where the CPU has it.
// GCC 12 warns that its own AVX-512 intrinsics read their _mm512_undefined_*() operand (GCC bug
// 105593, fixed in 13); the warning points into the header, so it is silenced there only.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#else
#include <immintrin.h>
#endif

#include <algorithm>
#include <cfloat>
#include <cstring>
#include <vector>

#include "daemon/codec/float.h"
#include "daemon/codec/simd_kernels.h"

namespace tensord::codec::simd::avx512 {
namespace {

#define TENSORD_AVX512 \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx2,f16c,fma")))
#define TENSORD_AVX512_INLINE TENSORD_AVX512 inline __attribute__((always_inline))

// How y is rounded to the dtype when the error is measured: not at all (no error wanted), by
// the conversion instructions, or exactly as the portable kernels do for bfloat16 denormals.
enum Round { kNoError = 0, kFast = 1, kExact = 2 };

constexpr size_t kBlock = 2048;  // elements per flush of the float error lanes

template <DType D>
constexpr size_t kItem = D == DType::kFloat32 ? 4 : 2;

// The bits of max |x| beyond which a value is Inf or NaN, per dtype.
template <DType D>
constexpr uint32_t kInfBits = D == DType::kFloat32   ? 0x7f800000u
                              : D == DType::kFloat16 ? 0x7c00u
                                                     : 0x7f80u;

// Max |x| bits of D as a float (F16C for float16: the table lookup showed in profiles).
template <DType D>
TENSORD_AVX512_INLINE float FromBits(uint32_t bits) {
  if constexpr (D == DType::kFloat32) return std::bit_cast<float>(bits);
  if constexpr (D == DType::kFloat16) return _cvtsh_ss(static_cast<unsigned short>(bits));
  return std::bit_cast<float>(bits << 16);
}

// The first n lanes (n <= 16).
TENSORD_AVX512 inline __mmask16 Mask16(size_t n) { return static_cast<__mmask16>((1u << n) - 1); }

// 16 values of D (16-bit) as floats.
template <DType D>
TENSORD_AVX512_INLINE __m512 Widen16(__m256i h) {
  if constexpr (D == DType::kFloat16) return _mm512_cvtph_ps(h);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

// 16 elements of dtype D at p as floats; lanes outside `m` read as 0.
template <DType D>
TENSORD_AVX512 inline __m512 Load(const uint8_t* p, __mmask16 m) {
  if constexpr (D == DType::kFloat32) {
    return _mm512_maskz_loadu_ps(m, p);
  } else {
    return Widen16<D>(_mm256_maskz_loadu_epi16(m, p));
  }
}

template <DType D>
TENSORD_AVX512 inline __m512 Load(const uint8_t* p) {
  if constexpr (D == DType::kFloat32) {
    return _mm512_loadu_ps(p);
  } else {
    return Widen16<D>(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
}

// Sixteen floats as 16-bit values of D (float16 or bfloat16), rounded to nearest even.
template <DType D, Round R>
TENSORD_AVX512 inline __m256i Bits16(__m512 y) {
  if constexpr (D == DType::kFloat16) {
    return _mm512_cvtps_ph(y, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  } else if constexpr (R != kExact) {
    return reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(y));
  } else {  // FloatToBf16's integer rounding: denormals kept, NaN quieted
    const __m512i x = _mm512_castps_si512(y);
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(x, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_srli_epi32(
        _mm512_add_epi32(_mm512_add_epi32(x, _mm512_set1_epi32(0x7fff)), lsb), 16);
    const __mmask16 nan = _mm512_cmpgt_epu32_mask(
        _mm512_and_si512(x, _mm512_set1_epi32(0x7fffffff)), _mm512_set1_epi32(0x7f800000));
    r = _mm512_mask_or_epi32(r, nan, _mm512_srli_epi32(x, 16), _mm512_set1_epi32(0x40));
    return _mm512_cvtepi32_epi16(r);
  }
}

template <DType D, Round R>
TENSORD_AVX512 inline void Store(uint8_t* p, __m512 y) {
  if constexpr (D == DType::kFloat32) {
    _mm512_storeu_ps(p, y);
  } else {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), Bits16<D, R>(y));
  }
}

template <DType D, Round R>
TENSORD_AVX512 inline void Store(uint8_t* p, __m512 y, __mmask16 m) {
  if constexpr (D == DType::kFloat32) {
    _mm512_mask_storeu_ps(p, m, y);
  } else {
    _mm256_mask_storeu_epi16(p, m, Bits16<D, R>(y));
  }
}

// y as D stores it and reads it back.
template <DType D, Round R>
TENSORD_AVX512 inline __m512 Rounded(__m512 y) {
  if constexpr (D == DType::kFloat32) {
    return y;
  } else {
    return Widen16<D>(Bits16<D, R>(y));
  }
}

// The error terms of 16 lanes in float until a block ends (codec/simd_kernels.h).
struct Lanes {
  __m512 err2, ref2, max;
};

TENSORD_AVX512_INLINE Lanes NoLanes() {
  return {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
}

// Adds x's error against y, a value D holds exactly.
TENSORD_AVX512_INLINE void AddExactLanes(__m512 x, __m512 y, Lanes* e) {
  const __m512 diff = _mm512_sub_ps(x, y);
  e->err2 = _mm512_fmadd_ps(diff, diff, e->err2);
  e->ref2 = _mm512_fmadd_ps(x, x, e->ref2);
  e->max = _mm512_range_ps(e->max, diff, 0x0b);  // max of |max| and |diff|, sign cleared
}

template <DType D, Round R>
TENSORD_AVX512 inline void AddLanes(__m512 x, __m512 y, Lanes* e) {
  if constexpr (R != kNoError) AddExactLanes(x, Rounded<D, R>(y), e);
}

TENSORD_AVX512 inline double SumLanes(__m512 v) {
  const __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
  const __m512d hi =
      _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
  return _mm512_reduce_add_pd(_mm512_add_pd(lo, hi));
}

// Moves a block's sums into `e`; false when they cannot be trusted (only the max is added; the
// caller adds the block again in double).
TENSORD_AVX512 inline bool Flush(const Lanes& lanes, Error* e) {
  const double err2 = SumLanes(lanes.err2), ref2 = SumLanes(lanes.ref2);
  const float max = _mm512_reduce_max_ps(lanes.max);
  e->max = std::max(e->max, max);
  if (!TrustedSums(err2, ref2, max)) return false;
  e->err2 += err2;
  e->ref2 += ref2;
  return true;
}

// ---- maxima ----

// Max of 32 unsigned 16-bit lanes.
TENSORD_AVX512 inline uint32_t MaxU16(__m512i v) {
  const __m256i a = _mm256_max_epu16(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64(v, 1));
  __m128i b = _mm_max_epu16(_mm256_castsi256_si128(a), _mm256_extracti128_si256(a, 1));
  b = _mm_xor_si128(b, _mm_set1_epi16(-1));  // max = ~min(~v): PHMINPOSUW finds the min
  return 0xffffu & ~static_cast<uint32_t>(_mm_cvtsi128_si32(_mm_minpos_epu16(b)));
}

// |x| as unsigned bits, 32 lanes of 16 bits or 16 of 32: the operations of each width.
struct Bits16Lanes {
  using Bits = uint16_t;
  using Mask = __mmask32;
  static constexpr size_t kLanes = 32;
  static TENSORD_AVX512_INLINE __m512i Abs(__m512i v) {
    return _mm512_and_si512(v, _mm512_set1_epi16(0x7fff));
  }
  static TENSORD_AVX512_INLINE __m512i Max(__m512i a, __m512i b) { return _mm512_max_epu16(a, b); }
  static TENSORD_AVX512_INLINE __m512i Load(Mask k, const void* p) {
    return _mm512_maskz_loadu_epi16(k, p);
  }
  static TENSORD_AVX512_INLINE void Store(void* p, Mask k, __m512i v) {
    _mm512_mask_storeu_epi16(p, k, v);
  }
  static TENSORD_AVX512_INLINE uint32_t Reduce(__m512i v) { return MaxU16(v); }
};

struct Bits32Lanes {
  using Bits = uint32_t;
  using Mask = __mmask16;
  static constexpr size_t kLanes = 16;
  static TENSORD_AVX512_INLINE __m512i Abs(__m512i v) {
    return _mm512_and_si512(v, _mm512_set1_epi32(0x7fffffff));
  }
  static TENSORD_AVX512_INLINE __m512i Max(__m512i a, __m512i b) { return _mm512_max_epu32(a, b); }
  static TENSORD_AVX512_INLINE __m512i Load(Mask k, const void* p) {
    return _mm512_maskz_loadu_epi32(k, p);
  }
  static TENSORD_AVX512_INLINE void Store(void* p, Mask k, __m512i v) {
    _mm512_mask_storeu_epi32(p, k, v);
  }
  static TENSORD_AVX512_INLINE uint32_t Reduce(__m512i v) { return _mm512_reduce_max_epu32(v); }
};

// Max |x| bits of p[0, len), folded into cols[0, len) per element where kCols.
template <typename L, bool kCols>
TENSORD_AVX512_INLINE uint32_t AbsMaxRunOf(const uint8_t* p, size_t len, typename L::Bits* cols) {
  using Bits = typename L::Bits;
  __m512i m = _mm512_setzero_si512();
  size_t j = 0;
  for (; j + L::kLanes <= len; j += L::kLanes) {
    const __m512i v = L::Abs(_mm512_loadu_si512(p + sizeof(Bits) * j));
    m = L::Max(m, v);
    if constexpr (kCols) _mm512_storeu_si512(cols + j, L::Max(_mm512_loadu_si512(cols + j), v));
  }
  if (j < len) {
    const auto k = static_cast<typename L::Mask>((uint64_t{1} << (len - j)) - 1);
    const __m512i v = L::Abs(L::Load(k, p + sizeof(Bits) * j));
    m = L::Max(m, v);
    if constexpr (kCols) L::Store(cols + j, k, L::Max(L::Load(k, cols + j), v));
  }
  return L::Reduce(m);
}

template <DType D, bool kCols>
TENSORD_AVX512_INLINE uint32_t AbsMaxRun(const uint8_t* p, size_t len, void* cols) {
  if constexpr (D == DType::kFloat32) {
    return AbsMaxRunOf<Bits32Lanes, kCols>(p, len, static_cast<uint32_t*>(cols));
  } else {
    return AbsMaxRunOf<Bits16Lanes, kCols>(p, len, static_cast<uint16_t*>(cols));
  }
}

// AbsMaxRun over `rows` rows of V whole vectors each (V <= 8), the column maxima (cols[0, V
// vectors)) kept in registers between rows: through memory, each row's loads of the columns
// would wait for the previous row's 64-byte stores, which Zen 4 does not forward to 64-byte
// loads. Named registers, not an array: GCC kept an array of them on the stack.
#define TENSORD_COLUMN(k)                                       \
  if constexpr (V > k) {                                        \
    const __m512i x = L::Abs(_mm512_loadu_si512(row + 64 * k)); \
    m = L::Max(m, x);                                           \
    c##k = L::Max(c##k, x);                                     \
  }
template <DType D, int V>
TENSORD_AVX512 uint32_t AbsMaxRowsInRegisters(const uint8_t* src, size_t rows, float* run_max,
                                              void* cols) {
  static_assert(V >= 1 && V <= 8);
  using L = std::conditional_t<D == DType::kFloat32, Bits32Lanes, Bits16Lanes>;
  __m512i* out = static_cast<__m512i*>(cols);
  const __m512i zero = _mm512_setzero_si512();
  __m512i c0 = zero, c1 = zero, c2 = zero, c3 = zero, c4 = zero, c5 = zero, c6 = zero, c7 = zero;
  uint32_t worst = 0;
  for (size_t r = 0; r < rows; ++r) {
    const uint8_t* row = src + 64 * V * r;
    __m512i m = zero;
    TENSORD_COLUMN(0)
    TENSORD_COLUMN(1)
    TENSORD_COLUMN(2)
    TENSORD_COLUMN(3)
    TENSORD_COLUMN(4)
    TENSORD_COLUMN(5)
    TENSORD_COLUMN(6)
    TENSORD_COLUMN(7)
    const uint32_t bits = L::Reduce(m);
    worst = std::max(worst, bits);
    run_max[r] = FromBits<D>(bits);
  }
  const __m512i c[8] = {c0, c1, c2, c3, c4, c5, c6, c7};
  for (int v = 0; v < V; ++v) _mm512_storeu_si512(out + v, c[v]);
  return worst;
}
#undef TENSORD_COLUMN

template <DType D, bool kCols>
TENSORD_AVX512 bool AbsMaxRunsT(const uint8_t* src, size_t n, size_t run, float* run_max,
                                float* col_max) {
  using Bits = std::conditional_t<D == DType::kFloat32, uint32_t, uint16_t>;
  std::vector<Bits> cols(kCols ? run : 0, 0);
  uint32_t worst = 0;
  size_t whole = 0;  // elements done in registers
  if (kCols && run * sizeof(Bits) % 64 == 0 && run * sizeof(Bits) <= 8 * 64) {
    const size_t rows = n / run;
    whole = rows * run;
    using Fn = uint32_t (*)(const uint8_t*, size_t, float*, void*);
    static constexpr Fn kByVectors[] = {
        nullptr,
        AbsMaxRowsInRegisters<D, 1>,
        AbsMaxRowsInRegisters<D, 2>,
        AbsMaxRowsInRegisters<D, 3>,
        AbsMaxRowsInRegisters<D, 4>,
        AbsMaxRowsInRegisters<D, 5>,
        AbsMaxRowsInRegisters<D, 6>,
        AbsMaxRowsInRegisters<D, 7>,
        AbsMaxRowsInRegisters<D, 8>,
    };
    worst = kByVectors[run * sizeof(Bits) / 64](src, rows, run_max, cols.data());
  }
  for (size_t r0 = whole; r0 < n; r0 += run) {
    const uint32_t bits =
        AbsMaxRun<D, kCols>(src + kItem<D> * r0, std::min(run, n - r0), cols.data());
    worst = std::max(worst, bits);
    run_max[r0 / run] = FromBits<D>(bits);
  }
  for (size_t c = 0; c < cols.size(); ++c) col_max[c] = std::max(col_max[c], FromBits<D>(cols[c]));
  return worst < kInfBits<D>;
}

// Whether elements [lo, hi) are all +-0: a block Flush does not trust for its zero sums, whose
// exact sums are zero too (zero-padded KV pages, ReLU outputs: no element-wise redo).
template <DType D>
TENSORD_AVX512 bool AllZero(const uint8_t* src, size_t lo, size_t hi) {
  return AbsMaxRun<D, false>(src + kItem<D> * lo, hi - lo, nullptr) == 0;
}

// ---- INT8 ----

// 16 per-element scales at p; lanes outside `m` read as 0 unless kFull.
template <bool kFull>
TENSORD_AVX512_INLINE __m512 Scales(__mmask16 m, const float* p) {
  return kFull ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps(m, p);
}

// The codes of one vector of an INT8 group (int32 lanes, not yet clamped to [-127, 127]; the
// packs clamp them), its error terms added: x's lanes in `m` (all of them where kFull), the
// scales at inv/scale (columns) or inv1/scale1 (rows).
template <DType D, bool kColumns, Round R, bool kFull>
TENSORD_AVX512_INLINE __m512i Int8Codes(__m512 x, __mmask16 m, const float* inv, const float* scale,
                                        __m512 inv1, __m512 scale1, Lanes* lanes) {
  const __m512i v = _mm512_cvtps_epi32(
      _mm512_mul_ps(x, kColumns ? Scales<kFull>(m, inv) : inv1));  // nearest even
  if constexpr (R != kNoError) {
    const __m512i c =
        _mm512_min_epi32(_mm512_max_epi32(v, _mm512_set1_epi32(-127)), _mm512_set1_epi32(127));
    const __m512 sc = kColumns ? Scales<kFull>(m, scale) : scale1;
    AddLanes<D, R>(x, _mm512_mul_ps(_mm512_cvtepi32_ps(c), sc), lanes);
  }
  return v;
}

// One vector of an INT8 group, stored: saturated to [-128, 127], then -128 raised to -127.
template <DType D, bool kColumns, Round R, bool kFull>
TENSORD_AVX512_INLINE void Int8Vector(__m512 x, __mmask16 m, const float* inv, const float* scale,
                                      __m512 inv1, __m512 scale1, int8_t* q, Lanes* lanes) {
  const __m128i b = _mm_max_epi8(_mm512_cvtsepi32_epi8(Int8Codes<D, kColumns, R, kFull>(
                                     x, m, inv, scale, inv1, scale1, lanes)),
                                 _mm_set1_epi8(-127));
  if constexpr (kFull) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q), b);
  } else {
    _mm_mask_storeu_epi8(q, m, b);
  }
}

// b after two packs of four vectors v0..v3 (dword j of 128-bit lane k holds elements
// 4k..4k+3 of v_j), in element order.
TENSORD_AVX512_INLINE __m512i InOrder(__m512i b) {
  const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  return _mm512_permutexvar_epi32(order, b);
}

// Four vectors of int32 codes (in element order) as 64 int8 codes, clamped to [-127, 127]:
// two saturating packs and one permutation, where four VPMOVSDB and clamps cost twice as much.
TENSORD_AVX512_INLINE __m512i PackInt8(__m512i v0, __m512i v1, __m512i v2, __m512i v3) {
  const __m512i b = _mm512_packs_epi16(_mm512_packs_epi32(v0, v1), _mm512_packs_epi32(v2, v3));
  return _mm512_max_epi8(InOrder(b), _mm512_set1_epi8(-127));
}

// The same for codes within [0, 255].
TENSORD_AVX512_INLINE __m512i PackBytes(__m512i v0, __m512i v1, __m512i v2, __m512i v3) {
  return InOrder(_mm512_packus_epi16(_mm512_packus_epi32(v0, v1), _mm512_packus_epi32(v2, v3)));
}

// Elements [at, end) of one group: one scale (rows) or one per element (columns).
template <DType D, bool kColumns, Round R>
TENSORD_AVX512_INLINE void Int8Segment(const uint8_t* src, size_t at, size_t end, const float* inv,
                                       const float* scale, int8_t* q, Lanes* lanes) {
  const __m512 inv1 = _mm512_set1_ps(*inv), scale1 = _mm512_set1_ps(*scale);
  size_t i = at;
  for (; i + 64 <= end; i += 64) {
    __m512i v[4];
#pragma GCC unroll 4  // v[] in registers: a 64-byte store reloaded at once stalls (Zen 4)
    for (size_t j = 0; j < 4; ++j) {
      const size_t k = i - at + 16 * j;
      v[j] = Int8Codes<D, kColumns, R, true>(Load<D>(src + kItem<D> * (i + 16 * j)), 0xffff,
                                             inv + k, scale + k, inv1, scale1, lanes);
    }
    _mm512_storeu_si512(q + i, PackInt8(v[0], v[1], v[2], v[3]));
  }
  for (; i + 16 <= end; i += 16) {
    Int8Vector<D, kColumns, R, true>(Load<D>(src + kItem<D> * i), 0xffff, inv + (i - at),
                                     scale + (i - at), inv1, scale1, q + i, lanes);
  }
  if (i < end) {
    const __mmask16 m = Mask16(end - i);
    Int8Vector<D, kColumns, R, false>(Load<D>(src + kItem<D> * i, m), m, inv + (i - at),
                                      scale + (i - at), inv1, scale1, q + i, lanes);
  }
}

template <DType D, bool kColumns, Round R>
TENSORD_AVX512 void QuantizeInt8T(const uint8_t* src, size_t lo, size_t hi, const Int8Scales& s,
                                  int8_t* q, Error* err) {
  for (size_t blk = lo; blk < hi;) {
    const size_t blk_end = std::min(hi, (blk / kBlock + 1) * kBlock);
    Lanes lanes = NoLanes();
    for (size_t at = blk; at < blk_end;) {
      const size_t end = std::min(blk_end, at + (s.group - at % s.group));
      const size_t g = s.Index(at);
      Int8Segment<D, kColumns, R>(src, at, end, s.inv + g, s.scale + g, q, &lanes);
      at = end;
    }
    if (R != kNoError && !Flush(lanes, err) && !AllZero<D>(src, blk, blk_end)) {
      exact::AddInt8Error(D, src, blk, blk_end, s, q, err);
    }
    blk = blk_end;
  }
}

template <DType D, bool kColumns, Round R>
TENSORD_AVX512 void DequantizeInt8T(const int8_t* q, size_t lo, size_t hi, const Int8Scales& s,
                                    uint8_t* dst) {
  for (size_t at = lo; at < hi;) {
    const size_t end = std::min(hi, at + (s.group - at % s.group));
    const float* scale = s.scale + s.Index(at);
    const __m512 scale1 = _mm512_set1_ps(*scale);
    size_t i = at;
    for (; i + 16 <= end; i += 16) {
      const __m512 sc = kColumns ? _mm512_loadu_ps(scale + (i - at)) : scale1;
      const __m512i v =
          _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q + i)));
      Store<D, R>(dst + kItem<D> * i, _mm512_mul_ps(_mm512_cvtepi32_ps(v), sc));
    }
    if (i < end) {
      const __mmask16 m = Mask16(end - i);
      const __m512 sc = kColumns ? _mm512_maskz_loadu_ps(m, scale + (i - at)) : scale1;
      const __m512i v = _mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(m, q + i));
      Store<D, R>(dst + kItem<D> * i, _mm512_mul_ps(_mm512_cvtepi32_ps(v), sc), m);
    }
    at = end;
  }
}

// Whether a scale of count could produce a bfloat16 denormal (|q| >= 1, so below FLT_MIN).
bool TinyScales(const float* scale, size_t count) {
  for (size_t g = 0; g < count; ++g) {
    if (std::fabs(scale[g]) < FLT_MIN) return true;
  }
  return false;
}

// The same for the scales [lo, hi) uses: never more of them than elements (a crafted payload's
// column count may be as large as the tensor; every chunk must not read them all).
bool AnyTinyScale(size_t lo, size_t hi, const Int8Scales& s) {
  if (!s.columns) return TinyScales(s.scale + lo / s.group, (hi - 1) / s.group + 1 - lo / s.group);
  if (hi - lo >= s.group) return TinyScales(s.scale, s.group);
  const size_t c0 = lo % s.group, c1 = (hi - 1) % s.group;
  if (c0 <= c1) return TinyScales(s.scale + c0, c1 - c0 + 1);
  return TinyScales(s.scale + c0, s.group - c0) || TinyScales(s.scale, c1 + 1);
}

// Calls Op::Run<D, kColumns, R> for a run-time dtype, layout and rounding.
template <class Op, DType D, bool C, class... A>
void ByRound(Round r, A... a) {
  switch (r) {
    case kNoError:
      return Op::template Run<D, C, kNoError>(a...);
    case kFast:
      return Op::template Run<D, C, kFast>(a...);
    case kExact:
      return Op::template Run<D, C, kExact>(a...);
  }
}

template <class Op, class... A>
void Dispatch(DType d, bool columns, Round r, A... a) {
  switch (d) {
    case DType::kFloat32:
      return columns ? ByRound<Op, DType::kFloat32, true>(r, a...)
                     : ByRound<Op, DType::kFloat32, false>(r, a...);
    case DType::kFloat16:
      return columns ? ByRound<Op, DType::kFloat16, true>(r, a...)
                     : ByRound<Op, DType::kFloat16, false>(r, a...);
    default:
      return columns ? ByRound<Op, DType::kBFloat16, true>(r, a...)
                     : ByRound<Op, DType::kBFloat16, false>(r, a...);
  }
}

struct QuantizeInt8Op {
  template <DType D, bool C, Round R>
  static void Run(const uint8_t* src, size_t lo, size_t hi, const Int8Scales* s, int8_t* q,
                  Error* err) {
    QuantizeInt8T<D, C, R>(src, lo, hi, *s, q, err);
  }
};

struct DequantizeInt8Op {
  template <DType D, bool C, Round R>
  static void Run(const int8_t* q, size_t lo, size_t hi, const Int8Scales* s, uint8_t* dst) {
    DequantizeInt8T<D, C, R>(q, lo, hi, *s, dst);
  }
};

// ---- FP8 E4M3 ----

// The constants of a block's decoding: value bits (code << 20) * c1 * c2, with c2 = 1 unless
// 2^120 * scale would overflow.
struct E4m3Scale {
  float c1, c2;
  bool two;
  explicit E4m3Scale(float scale)
      : c1(std::fabs(scale) < 0x1p8f ? scale * 0x1p120f : 0x1p120f),
        c2(std::fabs(scale) < 0x1p8f ? 1.0f : scale),
        two(!(std::fabs(scale) < 0x1p8f)) {}
};

TENSORD_AVX512_INLINE __m512 E4m3Times(__m512i value_bits, const E4m3Scale& k) {
  const __m512 y = _mm512_mul_ps(_mm512_castsi512_ps(value_bits), _mm512_set1_ps(k.c1));
  return k.two ? _mm512_mul_ps(y, _mm512_set1_ps(k.c2)) : y;
}

// Max |x| of a block of dtype D as float; +Inf where a value is Inf or NaN.
template <DType D>
TENSORD_AVX512 float BlockAbsMax(const uint8_t* p, size_t len) {
  const uint32_t bits = AbsMaxRun<D, false>(p, len, nullptr);
  return bits >= kInfBits<D> ? HUGE_VALF : FromBits<D>(bits);
}

// The codes of one vector (sign included, as int32 lanes), its error terms added.
template <DType D, Round R>
TENSORD_AVX512_INLINE __m512i E4m3Codes(__m512 x, __m512 inv, const E4m3Scale& k, Lanes* lanes) {
  const __m512i bits = _mm512_castps_si512(_mm512_mul_ps(x, inv));
  const __m512i abs = _mm512_and_si512(bits, _mm512_set1_epi32(0x7fffffff));
  // Normal range: FloatToE4m3's integer rounding (the subtraction of 120 << 23 wraps for values
  // below 2^-6, which take the denormal branch).
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(abs, 20), _mm512_set1_epi32(1));
  __m512i code = _mm512_srli_epi32(
      _mm512_add_epi32(_mm512_add_epi32(abs, _mm512_set1_epi32(0x7ffff - (120 << 23))), lsb), 20);
  // Below 2^-6: round(|x| * 512), units of the smallest denormal (8 is the first normal).
  const __mmask16 small = _mm512_cmplt_epu32_mask(abs, _mm512_set1_epi32(0x3c800000));
  code = _mm512_mask_cvtps_epi32(code, small,
                                 _mm512_mul_ps(_mm512_castsi512_ps(abs), _mm512_set1_ps(512.0f)));
  code = _mm512_min_epu32(code, _mm512_set1_epi32(0x7e));
  if constexpr (R != kNoError) {
    // The code's value as float bits 2^120 below it, the sign from x.
    const __m512i value = _mm512_ternarylogic_epi32(_mm512_slli_epi32(code, 20), bits,
                                                    _mm512_set1_epi32(0x80000000), 0xf8);
    AddLanes<D, R>(x, E4m3Times(value, k), lanes);
  }
  // code | (sign byte & 0x80)
  return _mm512_ternarylogic_epi32(code, _mm512_srli_epi32(bits, 24), _mm512_set1_epi32(0x80),
                                   0xf8);
}

template <DType D, Round R>
TENSORD_AVX512_INLINE void E4m3Block(const uint8_t* src, size_t b0, size_t len, float scale,
                                     uint8_t* q, Lanes* lanes) {
  const __m512 inv = _mm512_set1_ps(1.0f / scale);
  const E4m3Scale k(scale);
  const size_t end = b0 + len;
  size_t i = b0;
  for (; i + 64 <= end; i += 64) {
    __m512i c[4];
#pragma GCC unroll 4  // as in Int8Segment
    for (size_t j = 0; j < 4; ++j) {
      c[j] = E4m3Codes<D, R>(Load<D>(src + kItem<D> * (i + 16 * j)), inv, k, lanes);
    }
    _mm512_storeu_si512(q + i, PackBytes(c[0], c[1], c[2], c[3]));
  }
  for (; i + 16 <= end; i += 16) {
    const __m512i c = E4m3Codes<D, R>(Load<D>(src + kItem<D> * i), inv, k, lanes);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q + i), _mm512_cvtepi32_epi8(c));
  }
  if (i < end) {
    const __mmask16 m = Mask16(end - i);
    const __m512i c = E4m3Codes<D, R>(Load<D>(src + kItem<D> * i, m), inv, k, lanes);
    _mm_mask_storeu_epi8(q + i, m, _mm512_cvtepi32_epi8(c));
  }
}

// ---- FP8 of float16 and bfloat16 by a power-of-two scale, in 16-bit lanes ----
//
// With scale = 2^k, x / scale only moves x's exponent, so E4M3 rounding is integer rounding of
// x's own bits: the code of |x| is (|x| + half - 1 + lsb - (F << M)) >> (M - 3), for the M
// mantissa bits of D and F = (D's bias - 7) + k, wherever the result is an E4M3 normal. That is
// about a third of the float path's operations per element, on 32 lanes at a time. Lanes below
// `hi` (E4M3 denormals, and D's own denormals) are zero when x is +-0, and otherwise rare: a
// vector with one takes the float path (E4m3Codes), which gives the same codes.
template <DType D>
struct E4m3Pow2 {
  static constexpr int kMant = D == DType::kFloat16 ? 10 : 7;
  static constexpr int kDrop = kMant - 3;
  __m512i bias, hi, dec;  // per 16-bit lane: the rounding constant, the denormal bound, F << M
  TENSORD_AVX512 explicit E4m3Pow2(int k) {
    const int f = (D == DType::kFloat16 ? 15 : 127) - 7 + k;
    bias = _mm512_set1_epi16(static_cast<int16_t>((1 << (kDrop - 1)) - 1 - (f << kMant)));
    hi = _mm512_set1_epi16(static_cast<int16_t>(std::max(1 << kMant, (f + 1) << kMant)));
    dec = _mm512_set1_epi16(static_cast<int16_t>(f << kMant));
  }
};

// The block's scale as 2^k, k in [-110, 7] (Fp8Scale's powers of two, and amax / 448 where that
// happens to be one), or false.
inline bool Pow2Scale(float scale, int* k) {
  const uint32_t bits = std::bit_cast<uint32_t>(scale);
  if ((bits & 0x7fffff) != 0) return false;
  *k = static_cast<int>(bits >> 23) - 127;
  return *k >= -110 && *k <= 7;
}

// Codes (sign included) of 32 values of D at p, in 16-bit lanes.
template <DType D, Round R>
TENSORD_AVX512_INLINE __m512i E4m3Codes32(const uint8_t* p, const E4m3Pow2<D>& c, __m512 inv,
                                          const E4m3Scale& k, Lanes* lanes) {
  constexpr int kDrop = E4m3Pow2<D>::kDrop;
  const __m512i h = _mm512_loadu_si512(p);
  const __m512i a = _mm512_and_si512(h, _mm512_set1_epi16(0x7fff));
  const __mmask32 low = _mm512_cmplt_epu16_mask(a, c.hi);
  if (_mm512_mask_test_epi16_mask(low, a, a) != 0) [[unlikely]] {
    const __m256i h0 = _mm512_castsi512_si256(h), h1 = _mm512_extracti64x4_epi64(h, 1);
    const __m512i c0 = E4m3Codes<D, R>(Widen16<D>(h0), inv, k, lanes);
    const __m512i c1 = E4m3Codes<D, R>(Widen16<D>(h1), inv, k, lanes);
    return _mm512_inserti64x4(_mm512_castsi256_si512(_mm512_cvtepi32_epi16(c0)),
                              _mm512_cvtepi32_epi16(c1), 1);
  }
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi16(a, kDrop), _mm512_set1_epi16(1));
  // +-0 (the lanes below hi here) code as 0; every other lane is an E4M3 normal.
  const __m512i code = _mm512_maskz_srai_epi16(
      static_cast<__mmask32>(~low), _mm512_add_epi16(_mm512_add_epi16(a, c.bias), lsb), kDrop);
  if constexpr (R != kNoError) {
    // The decoded |value| is exact in D: |x| - value is the error, x^2 the reference.
    const __m512i value =
        _mm512_maskz_add_epi16(static_cast<__mmask32>(~low), _mm512_slli_epi16(code, kDrop), c.dec);
    for (int half = 0; half < 2; ++half) {
      const __m512 x =
          Widen16<D>(half == 0 ? _mm512_castsi512_si256(a) : _mm512_extracti64x4_epi64(a, 1));
      const __m512 y = Widen16<D>(half == 0 ? _mm512_castsi512_si256(value)
                                            : _mm512_extracti64x4_epi64(value, 1));
      AddExactLanes(x, y, lanes);
    }
  }
  // code | (sign byte & 0x80)
  return _mm512_ternarylogic_epi32(code, _mm512_srli_epi16(h, 8), _mm512_set1_epi16(0x80), 0xf8);
}

// E4m3Block for float16 and bfloat16 blocks whose scale is 2^k.
template <DType D, Round R>
TENSORD_AVX512_INLINE void E4m3BlockPow2(const uint8_t* src, size_t b0, size_t len, int k,
                                         float scale, uint8_t* q, Lanes* lanes) {
  const E4m3Pow2<D> c(k);
  const __m512 inv = _mm512_set1_ps(1.0f / scale);
  const E4m3Scale ks(scale);
  const size_t end = b0 + len;
  size_t i = b0;
  for (; i + 64 <= end; i += 64) {
    const __m512i c0 = E4m3Codes32<D, R>(src + 2 * i, c, inv, ks, lanes);
    const __m512i c1 = E4m3Codes32<D, R>(src + 2 * (i + 32), c, inv, ks, lanes);
    // The pack interleaves 128-bit lanes; the permutation puts the eight quarters in order.
    const __m512i order = _mm512_setr_epi64(0, 2, 4, 6, 1, 3, 5, 7);
    _mm512_storeu_si512(q + i, _mm512_permutexvar_epi64(order, _mm512_packus_epi16(c0, c1)));
  }
  if (i < end) E4m3Block<D, R>(src, i, end - i, scale, q, lanes);
}

// Below this scale the smallest E4M3 value (2^-9) times the scale is a float denormal.
constexpr float kE4m3TinyScale = 0x1p-117f;

template <DType D, Round R>
TENSORD_AVX512 bool QuantizeE4m3T(const uint8_t* src, size_t lo, size_t hi, uint8_t* scales,
                                  uint8_t* q, Error* err) {
  for (size_t blk = lo; blk < hi;) {
    const size_t blk_end = std::min(hi, (blk / kBlock + 1) * kBlock);
    Lanes lanes = NoLanes();
    for (size_t b0 = blk; b0 < blk_end; b0 += kFp8Block) {
      const size_t len = std::min(blk_end - b0, kFp8Block);
      const float amax = BlockAbsMax<D>(src + kItem<D> * b0, len);
      if (amax == HUGE_VALF) return false;
      const float scale = Fp8Scale(amax);
      std::memcpy(scales + 4 * (b0 / kFp8Block), &scale, 4);
      int k = 0;
      if (D != DType::kFloat32 && Pow2Scale(scale, &k)) {
        E4m3BlockPow2<D, R>(src, b0, len, k, scale, q, &lanes);
      } else if (R == kFast && D == DType::kBFloat16 && scale < kE4m3TinyScale) {
        E4m3Block<D, kExact>(src, b0, len, scale, q, &lanes);
      } else {
        E4m3Block<D, R>(src, b0, len, scale, q, &lanes);
      }
    }
    if (R != kNoError && !Flush(lanes, err) && !AllZero<D>(src, blk, blk_end)) {
      exact::AddE4m3Error(D, src, blk, blk_end, scales, q, err);
    }
    blk = blk_end;
  }
  return true;
}

template <DType D, Round R>
TENSORD_AVX512 void DequantizeE4m3Block(const uint8_t* q, size_t b0, size_t len, float scale,
                                        uint8_t* dst) {
  const E4m3Scale k(scale);
  const __m512i fields = _mm512_set1_epi32(static_cast<int>(0x87f00000u));
  size_t i = b0;
  for (; i + 16 <= b0 + len; i += 16) {
    // Sign-extended codes shifted by 20: the sign lands in bit 31, the magnitude in 20..26.
    const __m512i c =
        _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q + i)));
    Store<D, R>(dst + kItem<D> * i,
                E4m3Times(_mm512_and_si512(_mm512_slli_epi32(c, 20), fields), k));
  }
  if (i < b0 + len) {
    const __mmask16 m = Mask16(b0 + len - i);
    const __m512i c = _mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(m, q + i));
    Store<D, R>(dst + kItem<D> * i,
                E4m3Times(_mm512_and_si512(_mm512_slli_epi32(c, 20), fields), k), m);
  }
}

template <DType D>
void DequantizeE4m3T(const uint8_t* q, size_t lo, size_t hi, const uint8_t* scales, uint8_t* dst) {
  for (size_t b0 = lo; b0 < hi; b0 += kFp8Block) {
    float scale;
    std::memcpy(&scale, scales + 4 * (b0 / kFp8Block), 4);
    const size_t len = std::min(hi - b0, kFp8Block);
    if (D == DType::kBFloat16 && std::fabs(scale) < kE4m3TinyScale) {
      DequantizeE4m3Block<D, kExact>(q, b0, len, scale, dst);
    } else {
      DequantizeE4m3Block<D, kFast>(q, b0, len, scale, dst);
    }
  }
}

// ---- 4-bit ----
//
// Sixteen groups at a time: each group's min and max (4 vectors, reduced), then the float16
// rounding of the sixteen mins and steps in one vector, then each group's codes.

constexpr size_t kInt4Batch = 16;  // groups whose parameters are computed together

// The codes of 16 values (int32 lanes, in [0, 15]; 0 outside m), packed two per byte into the
// low 8 bytes.
TENSORD_AVX512_INLINE __m128i Int4Nibbles(__m512 x, __mmask16 m, __m512 min, __m512 inv) {
  __m512 v = _mm512_mul_ps(_mm512_sub_ps(x, min), inv);
  v = _mm512_min_ps(_mm512_max_ps(v, _mm512_setzero_ps()), _mm512_set1_ps(15.0f));
  const __m512i c = _mm512_maskz_cvtps_epi32(m, v);  // nearest even, as RoundEven
  // Each 64-bit lane holds an even element (low half) and an odd one: even | odd << 4.
  return _mm512_cvtepi64_epi8(_mm512_or_si512(c, _mm512_srli_epi64(c, 28)));
}

template <DType D>
TENSORD_AVX512 bool QuantizeInt4T(const uint8_t* src, size_t lo, size_t hi, uint8_t* params,
                                  uint8_t* packed) {
  bool ok = true;
  for (size_t b0 = lo; b0 < hi; b0 += kInt4Batch * kInt4Group) {
    const size_t groups = std::min(kInt4Batch, (hi - b0 + kInt4Group - 1) / kInt4Group);
    alignas(64) float mins[kInt4Batch] = {}, maxs[kInt4Batch] = {};
    for (size_t g = 0; g < groups; ++g) {
      const size_t at = b0 + g * kInt4Group, len = std::min(hi - at, kInt4Group);
      __m512 lo_v = _mm512_set1_ps(HUGE_VALF), hi_v = _mm512_set1_ps(-HUGE_VALF);
      for (size_t j = 0; j < len; j += 16) {
        const __mmask16 m = len - j >= 16 ? __mmask16(0xffff) : Mask16(len - j);
        const __m512 x = Load<D>(src + kItem<D> * (at + j), m);
        lo_v = _mm512_mask_min_ps(lo_v, m, lo_v, x);
        hi_v = _mm512_mask_max_ps(hi_v, m, hi_v, x);
      }
      mins[g] = _mm512_reduce_min_ps(lo_v);
      maxs[g] = _mm512_reduce_max_ps(hi_v);
    }
    const __mmask16 live = Mask16(groups);
    const __m512 lo_v = _mm512_load_ps(mins), hi_v = _mm512_load_ps(maxs);
    const __m512 big = _mm512_set1_ps(60000.0f);
    const __m512 abs_mask = _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff));
    if (_mm512_mask_cmp_ps_mask(live, _mm512_and_ps(lo_v, abs_mask), big, _CMP_GT_OQ) != 0 ||
        _mm512_mask_cmp_ps_mask(live, _mm512_and_ps(hi_v, abs_mask), big, _CMP_GT_OQ) != 0) {
      ok = false;  // the encode fails: nothing more of this batch is needed
      continue;
    }
    // As the portable kernel: min (a min of -0 as +0) and step rounded to float16 and back.
    const __m256i min16 = _mm512_cvtps_ph(_mm512_add_ps(lo_v, _mm512_setzero_ps()),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512 min = _mm512_cvtph_ps(min16);
    const __m512 range = _mm512_max_ps(_mm512_sub_ps(hi_v, min), _mm512_setzero_ps());
    const __m256i step16 = _mm512_cvtps_ph(_mm512_div_ps(range, _mm512_set1_ps(15.0f)),
                                           _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512 step = _mm512_cvtph_ps(step16);
    const __m512 inv = _mm512_maskz_div_ps(
        _mm512_cmp_ps_mask(step, _mm512_setzero_ps(), _CMP_GT_OQ), _mm512_set1_ps(1.0f), step);
    // (min, step) pairs: the two 16-bit vectors interleaved, 16 x 4 bytes.
    const __m512i pairs = _mm512_or_si512(_mm512_cvtepu16_epi32(min16),
                                          _mm512_slli_epi32(_mm512_cvtepu16_epi32(step16), 16));
    _mm512_mask_storeu_epi32(params + 4 * (b0 / kInt4Group), live, pairs);
    alignas(64) float mins_r[kInt4Batch], invs[kInt4Batch];
    _mm512_store_ps(mins_r, min);
    _mm512_store_ps(invs, inv);
    for (size_t g = 0; g < groups; ++g) {
      const size_t at = b0 + g * kInt4Group, len = std::min(hi - at, kInt4Group);
      const __m512 gmin = _mm512_set1_ps(mins_r[g]), ginv = _mm512_set1_ps(invs[g]);
      uint8_t* out = packed + at / 2;
      if (len == kInt4Group) {
        for (size_t j = 0; j < kInt4Group; j += 16) {
          const __m128i b = Int4Nibbles(Load<D>(src + kItem<D> * (at + j)), 0xffff, gmin, ginv);
          _mm_storel_epi64(reinterpret_cast<__m128i*>(out + j / 2), b);
        }
        continue;
      }
      for (size_t j = 0; j < len; j += 16) {  // the tensor's last, short group
        const size_t n = std::min<size_t>(16, len - j);
        const __mmask16 m = Mask16(n);
        const __m128i b = Int4Nibbles(Load<D>(src + kItem<D> * (at + j), m), m, gmin, ginv);
        _mm_mask_storeu_epi8(out + j / 2, Mask16((n + 1) / 2), b);
      }
    }
  }
  return ok;
}

template <DType D>
TENSORD_AVX512 void DequantizeInt4T(const uint8_t* params, const uint8_t* packed, size_t lo,
                                    size_t hi, uint8_t* dst) {
  for (size_t b0 = lo; b0 < hi; b0 += kInt4Batch * kInt4Group) {
    const size_t groups = std::min(kInt4Batch, (hi - b0 + kInt4Group - 1) / kInt4Group);
    const __m512i pairs = _mm512_maskz_loadu_epi32(Mask16(groups), params + 4 * (b0 / kInt4Group));
    alignas(64) float mins[kInt4Batch], steps[kInt4Batch];
    _mm512_store_ps(mins, _mm512_cvtph_ps(_mm512_cvtepi32_epi16(pairs)));
    _mm512_store_ps(steps, _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(pairs, 16))));
    for (size_t g = 0; g < groups; ++g) {
      const size_t at = b0 + g * kInt4Group, len = std::min(hi - at, kInt4Group);
      const __m512 gmin = _mm512_set1_ps(mins[g]), gstep = _mm512_set1_ps(steps[g]);
      for (size_t j = 0; j < len; j += 16) {
        const size_t n = std::min<size_t>(16, len - j);
        // Eight bytes, one per 64-bit lane: its low nibble in the lane's low half, its high
        // nibble in the high half.
        const __m512i b =
            _mm512_cvtepu8_epi64(_mm_maskz_loadu_epi8(Mask16((n + 1) / 2), packed + (at + j) / 2));
        const __m512i c = _mm512_ternarylogic_epi64(
            _mm512_and_si512(b, _mm512_set1_epi64(0xf)), _mm512_slli_epi64(b, 28),
            _mm512_set1_epi64(int64_t{0xf} << 32), 0xf8);  // a | (b & c)
        // min + code * step, not fused: the portable kernel rounds the product first.
        const __m512 y = _mm512_add_ps(gmin, _mm512_mul_ps(_mm512_cvtepi32_ps(c), gstep));
        // Never a float denormal (min and step are float16 values: multiples of 2^-24), so the
        // bfloat16 conversion instruction rounds as the portable kernel does.
        if (n == 16) {
          Store<D, kFast>(dst + kItem<D> * (at + j), y);
        } else {
          Store<D, kFast>(dst + kItem<D> * (at + j), y, Mask16(n));
        }
      }
    }
  }
}

}  // namespace

bool AbsMaxRuns(DType d, const uint8_t* src, size_t n, size_t run, float* run_max, float* col_max) {
  const bool cols = col_max != nullptr;
  switch (d) {
    case DType::kFloat32:
      return cols ? AbsMaxRunsT<DType::kFloat32, true>(src, n, run, run_max, col_max)
                  : AbsMaxRunsT<DType::kFloat32, false>(src, n, run, run_max, col_max);
    case DType::kFloat16:
      return cols ? AbsMaxRunsT<DType::kFloat16, true>(src, n, run, run_max, col_max)
                  : AbsMaxRunsT<DType::kFloat16, false>(src, n, run, run_max, col_max);
    default:
      return cols ? AbsMaxRunsT<DType::kBFloat16, true>(src, n, run, run_max, col_max)
                  : AbsMaxRunsT<DType::kBFloat16, false>(src, n, run, run_max, col_max);
  }
}

TENSORD_AVX512 void Int8ScalesOf(const float* maxima, size_t n, float* scale, float* inv) {
  for (size_t g = 0; g < n; g += 16) {
    const __mmask16 m = n - g >= 16 ? __mmask16(0xffff) : Mask16(n - g);
    const __m512 v = _mm512_maskz_loadu_ps(m, maxima + g);
    __m512 s = _mm512_max_ps(_mm512_div_ps(v, _mm512_set1_ps(127.0f)), _mm512_set1_ps(FLT_MIN));
    s = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_GT_OQ),
                             _mm512_set1_ps(1.0f), s);
    _mm512_mask_storeu_ps(scale + g, m, s);
    _mm512_mask_storeu_ps(inv + g, m, _mm512_div_ps(_mm512_set1_ps(1.0f), s));
  }
}

void QuantizeInt8(DType d, const uint8_t* src, size_t lo, size_t hi, const Int8Scales& s, int8_t* q,
                  Error* err) {
  if (lo >= hi) return;
  Round round = err == nullptr ? kNoError : kFast;
  if (round == kFast && d == DType::kBFloat16 && AnyTinyScale(lo, hi, s)) round = kExact;
  Dispatch<QuantizeInt8Op>(d, s.columns, round, src, lo, hi, &s, q, err);
}

void DequantizeInt8(const int8_t* q, size_t lo, size_t hi, const Int8Scales& s, DType d,
                    uint8_t* dst) {
  if (lo >= hi) return;
  Round round = kFast;
  if (d == DType::kBFloat16 && AnyTinyScale(lo, hi, s)) round = kExact;
  Dispatch<DequantizeInt8Op>(d, s.columns, round, q, lo, hi, &s, dst);
}

bool QuantizeE4m3(DType d, const uint8_t* src, size_t lo, size_t hi, uint8_t* scales, uint8_t* q,
                  Error* err) {
  const bool measure = err != nullptr;
  switch (d) {
    case DType::kFloat32:
      return measure ? QuantizeE4m3T<DType::kFloat32, kFast>(src, lo, hi, scales, q, err)
                     : QuantizeE4m3T<DType::kFloat32, kNoError>(src, lo, hi, scales, q, err);
    case DType::kFloat16:
      return measure ? QuantizeE4m3T<DType::kFloat16, kFast>(src, lo, hi, scales, q, err)
                     : QuantizeE4m3T<DType::kFloat16, kNoError>(src, lo, hi, scales, q, err);
    default:
      return measure ? QuantizeE4m3T<DType::kBFloat16, kFast>(src, lo, hi, scales, q, err)
                     : QuantizeE4m3T<DType::kBFloat16, kNoError>(src, lo, hi, scales, q, err);
  }
}

void DequantizeE4m3(const uint8_t* q, size_t lo, size_t hi, const uint8_t* scales, DType d,
                    uint8_t* dst) {
  switch (d) {
    case DType::kFloat32:
      return DequantizeE4m3T<DType::kFloat32>(q, lo, hi, scales, dst);
    case DType::kFloat16:
      return DequantizeE4m3T<DType::kFloat16>(q, lo, hi, scales, dst);
    default:
      return DequantizeE4m3T<DType::kBFloat16>(q, lo, hi, scales, dst);
  }
}

bool QuantizeInt4(DType d, const uint8_t* src, size_t lo, size_t hi, uint8_t* params,
                  uint8_t* packed) {
  switch (d) {
    case DType::kFloat32:
      return QuantizeInt4T<DType::kFloat32>(src, lo, hi, params, packed);
    case DType::kFloat16:
      return QuantizeInt4T<DType::kFloat16>(src, lo, hi, params, packed);
    default:
      return QuantizeInt4T<DType::kBFloat16>(src, lo, hi, params, packed);
  }
}

void DequantizeInt4(const uint8_t* params, const uint8_t* packed, size_t lo, size_t hi, DType d,
                    uint8_t* dst) {
  switch (d) {
    case DType::kFloat32:
      return DequantizeInt4T<DType::kFloat32>(params, packed, lo, hi, dst);
    case DType::kFloat16:
      return DequantizeInt4T<DType::kFloat16>(params, packed, lo, hi, dst);
    default:
      return DequantizeInt4T<DType::kBFloat16>(params, packed, lo, hi, dst);
  }
}

}  // namespace tensord::codec::simd::avx512
