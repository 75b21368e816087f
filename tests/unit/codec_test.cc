// Codecs in isolation: lossless codecs round-trip every bit of every dtype (NaN, Inf, denormals,
// -0), lossy ones stay within their known error on model-like data and report what they
// measured, a damaged copy is DATA_LOSS (never wrong bytes), and the automatic choice follows
// the policy: raw where nothing pays, sparse for zeros, lossy only within the budget.
#include "daemon/codec/codec.h"

#include <gtest/gtest.h>
#include <xxhash.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "daemon/codec/float.h"
#include "daemon/codec/parallel.h"
#include "daemon/codec/simd.h"

namespace tensord::codec {
namespace {

// A tensor's bytes with its dtype and shape.
struct Tensor {
  DType dtype;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
  TensorRef ref() const { return {dtype, shape, bytes}; }
};

template <typename T>
std::vector<uint8_t> Bytes(const std::vector<T>& v) {
  const auto* p = reinterpret_cast<const uint8_t*>(v.data());
  return std::vector<uint8_t>(p, p + v.size() * sizeof(T));
}

// Floats as `dtype` holds them.
Tensor FromFloats(DType dtype, std::vector<int64_t> shape, const std::vector<float>& v) {
  Tensor t{dtype, std::move(shape), {}};
  if (dtype == DType::kFloat32) {
    t.bytes = Bytes(v);
  } else {
    std::vector<uint16_t> h(v.size());
    for (size_t i = 0; i < v.size(); ++i) {
      h[i] = dtype == DType::kFloat16 ? FloatToHalf(v[i]) : FloatToBf16(v[i]);
    }
    t.bytes = Bytes(h);
  }
  return t;
}

std::vector<float> Gaussian(size_t n, uint32_t seed, float sigma = 1) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0, sigma);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

// A KV block: tokens x heads x 128, each channel with its own offset and scale (keys' outlier
// channels), plus noise.
std::vector<float> KvBlock(size_t tokens, size_t heads, uint32_t seed) {
  std::vector<float> v = Gaussian(tokens * heads * 128, seed);
  for (size_t i = 0; i < v.size(); ++i) {
    const size_t c = i % 128;
    v[i] = v[i] * (1 + float(c % 7)) + std::sin(float(c)) * 3;
  }
  return v;
}

const Codec& Named(const char* name) {
  auto c = CodecNamed(name);
  EXPECT_TRUE(c.ok()) << name;
  return **c;
}

// Encodes and decodes `t` with `c`; returns the decoded bytes (empty on failure).
std::vector<uint8_t> RoundTrip(const Codec& c, const Tensor& t, size_t* encoded = nullptr,
                               double budget = 0.01) {
  auto enc = c.Encode(t.ref(), budget);
  EXPECT_TRUE(enc.ok()) << c.name() << ": " << enc.status();
  if (!enc.ok()) return {};
  if (encoded != nullptr) *encoded = enc->size();
  std::vector<uint8_t> out(t.bytes.size(), 0xEE);
  const absl::Status st = c.Decode(*enc, t.ref(), out);
  EXPECT_TRUE(st.ok()) << c.name() << ": " << st;
  return st.ok() ? out : std::vector<uint8_t>{};
}

TEST(Float, NarrowFormatsRoundTripEveryValueTheyHold) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = HalfToFloat(uint16_t(h));
    if (std::isnan(f)) continue;
    ASSERT_EQ(FloatToHalf(f), h) << h;
    ASSERT_EQ(FloatToBf16(Bf16ToFloat(uint16_t(h))), h) << h;
  }
  for (uint32_t v = 0; v < 256; ++v) {
    if ((v & 0x7f) == 0x7f) continue;  // NaN
    ASSERT_EQ(FloatToE4m3(E4m3ToFloat(uint8_t(v))), v) << v;
  }
  EXPECT_EQ(HalfToFloat(FloatToHalf(1.0f + 1.0f / 4096)), 1.0f) << "ties to even";
  EXPECT_EQ(FloatToHalf(1e6f), 0x7c00) << "overflow to Inf";
  EXPECT_EQ(E4m3ToFloat(FloatToE4m3(1000.0f)), 448.0f) << "E4M3 saturates";
  EXPECT_EQ(E4m3ToFloat(FloatToE4m3(0.005859375f)), 0.005859375f) << "a denormal, 3 * 2^-9";
  EXPECT_EQ(E4m3ToFloat(FloatToE4m3(0.0029296875f)), 0.00390625f) << "1.5 * 2^-9: ties to even";
  EXPECT_TRUE(std::isnan(HalfToFloat(FloatToHalf(std::nanf("")))));
}

TEST(Codec, LosslessCodecsAreBitExactForEveryDtypeAndSpecialValue) {
  // Floats with every special: NaN with a payload, +-Inf, denormals, -0, the extremes.
  std::vector<uint32_t> f32 = {0x7fc01234, 0xff800000, 0x7f800000, 0x00000001, 0x807fffff,
                               0x80000000, 0x00000000, 0x7f7fffff, 0x3f800000};
  std::vector<uint16_t> f16 = {0x7e01, 0xfc00, 0x7c00, 0x0001, 0x83ff, 0x8000, 0x7bff, 0x3c00};
  std::mt19937 rng(1);
  for (int i = 0; i < 100000; ++i) {
    f32.push_back(rng() % 3 ? std::bit_cast<uint32_t>(float(rng() % 100) * 0.25f) : rng());
    f16.push_back(rng() % 3 ? FloatToHalf(float(rng() % 100) * 0.25f) : uint16_t(rng()));
  }
  std::vector<uint64_t> f64(30001);
  for (auto& x : f64) x = rng() % 2 ? std::bit_cast<uint64_t>(double(rng() % 50)) : rng();
  const Tensor tensors[] = {
      {DType::kFloat32, {}, Bytes(f32)},
      {DType::kFloat16, {int64_t(f16.size())}, Bytes(f16)},
      {DType::kBFloat16, {}, Bytes(f16)},
      {DType::kFloat64, {}, Bytes(f64)},
      {DType::kInt32, {}, Bytes(f32)},
      {DType::kUInt8, {}, Bytes(f16)},
      {DType::kFloat32, {1}, Bytes(std::vector<uint32_t>{0x7fc01234})},  // one element
      {DType::kUInt8, {0}, {}},                                          // empty
  };
  for (const char* name : {"none", "lossless", "sparse"}) {
    for (Tensor t : tensors) {
      // The sparse codec refuses tensors with too few zeros; zero three in four elements.
      if (std::string(name) == "sparse") {
        const size_t item = ItemSize(t.dtype);
        for (size_t i = 0; i + item <= t.bytes.size(); i += item) {
          if ((i / item) % 4 != 0) std::memset(t.bytes.data() + i, 0, item);
        }
      }
      if (std::string(name) == "sparse" && t.bytes.size() <= 4 * ItemSize(t.dtype)) continue;
      EXPECT_EQ(RoundTrip(Named(name), t), t.bytes) << name << " " << DTypeName(t.dtype);
    }
  }
  EXPECT_EQ(Named("sparse").Encode(tensors[0].ref()).status().code(),
            absl::StatusCode::kFailedPrecondition)
      << "too few zeros to pay";
  // Mostly zeros, with -0.0 among them (not a zero to the sparse codec: its bits are not).
  std::vector<float> sparse(1 << 18, 0.0f);
  for (size_t i = 0; i < sparse.size(); i += 9) sparse[i] = i % 2 ? -0.0f : float(i);
  const Tensor s{DType::kFloat32, {}, Bytes(sparse)};
  size_t size = 0;
  EXPECT_EQ(RoundTrip(Named("sparse"), s, &size), s.bytes);
  EXPECT_LT(size, s.bytes.size() / 4) << "an 89% sparse tensor";
}

TEST(Codec, ByteGroupingCompressesBf16WeightsWhereZstdAloneDoesLess) {
  // Weights of N(0, 0.02): the exponent byte has little entropy; the mantissa byte a lot.
  const Tensor w = FromFloats(DType::kBFloat16, {1024, 1024}, Gaussian(1 << 20, 2, 0.02f));
  size_t grouped = 0;
  EXPECT_EQ(RoundTrip(Named("lossless"), w, &grouped), w.bytes);
  const Tensor as_bytes{DType::kUInt8, {}, w.bytes};  // the same bytes, ungrouped
  size_t plain = 0;
  RoundTrip(Named("lossless"), as_bytes, &plain);
  const double ratio = double(w.bytes.size()) / double(grouped);
  EXPECT_GT(ratio, 1.25) << "bf16 weights";
  EXPECT_LT(grouped, plain) << "grouping the exponent bytes pays";
}

struct LossyCase {
  const char* codec;
  DType dtype;
  double max_error;  // relative RMSE on the KV-like block
  double min_ratio;
};

TEST(Codec, LossyCodecsStayWithinTheirKnownErrorAndReportIt) {
  const std::vector<float> kv = KvBlock(256, 8, 3);
  const LossyCase cases[] = {
      {"fp16", DType::kFloat32, 5e-4, 1.99},    {"bf16", DType::kFloat32, 4e-3, 1.99},
      {"fp8_e4m3", DType::kFloat16, 0.04, 1.9}, {"int8", DType::kFloat16, 0.01, 1.9},
      {"int4_g64", DType::kFloat16, 0.12, 3.4}, {"int8", DType::kBFloat16, 0.01, 1.9},
      {"fp8_e4m3", DType::kFloat32, 0.04, 3.8},
  };
  for (const LossyCase& c : cases) {
    const Tensor t = FromFloats(c.dtype, {256, 8, 128}, kv);
    const Codec& codec = Named(c.codec);
    EXPECT_TRUE(codec.lossy());
    size_t size = 0;
    const std::vector<uint8_t> back = RoundTrip(codec, t, &size);
    ASSERT_EQ(back.size(), t.bytes.size()) << c.codec;
    const Quality q = Measure(c.dtype, t.bytes, back);
    EXPECT_GT(q.rel_rmse, 0) << c.codec << " is lossy";
    EXPECT_LE(q.rel_rmse, c.max_error) << c.codec << " on " << DTypeName(c.dtype);
    EXPECT_GT(q.max_abs_error, 0) << c.codec;
    EXPECT_GE(double(t.bytes.size()) / double(size), c.min_ratio) << c.codec;
  }
  // Codecs refuse what they cannot encode.
  const Tensor ints{DType::kInt32, {}, std::vector<uint8_t>(4096)};
  for (const char* name : {"fp16", "fp8_e4m3", "int8", "int4_g64", "lowrank"}) {
    EXPECT_EQ(Named(name).Encode(ints.ref()).status().code(), absl::StatusCode::kFailedPrecondition)
        << name;
  }
  std::vector<float> with_nan = Gaussian(4096, 4);
  with_nan[17] = std::nanf("");
  const Tensor nan = FromFloats(DType::kFloat16, {}, with_nan);
  EXPECT_EQ(Named("int8").Encode(nan.ref()).status().code(), absl::StatusCode::kFailedPrecondition);
}

// The builds of the kernels this CPU runs beyond the portable one (AVX2, AVX-512).
std::vector<simd::Isa> VectorIsas() {
  std::vector<simd::Isa> isas;
  for (simd::Isa isa : {simd::Isa::kAvx2, simd::Isa::kAvx512}) {
    if (isa <= simd::BestIsa()) isas.push_back(isa);
  }
  return isas;
}

// Restores the CPU's best kernels when a test that forced others ends.
struct RestoreIsa {
  ~RestoreIsa() { simd::ForceIsa(simd::BestIsa()); }
};

// Encodes t with c on the portable kernels and on each vector build this CPU runs: the same
// encoding, and the same decoded bytes. `what` names the case in failures.
void ExpectSameOnEveryIsa(const Codec& c, const Tensor& t, const std::string& what) {
  simd::ForceIsa(simd::Isa::kPortable);
  auto ref_enc = c.Encode(t.ref());
  ASSERT_TRUE(ref_enc.ok()) << ref_enc.status();
  std::vector<uint8_t> ref_back(t.bytes.size());
  ASSERT_TRUE(c.Decode(*ref_enc, t.ref(), ref_back).ok());
  for (simd::Isa isa : VectorIsas()) {
    simd::ForceIsa(isa);
    auto enc = c.Encode(t.ref());
    ASSERT_TRUE(enc.ok()) << enc.status();
    EXPECT_EQ(*enc, *ref_enc) << simd::IsaName(isa) << " " << c.name() << " on " << what;
    std::vector<uint8_t> back(t.bytes.size());
    ASSERT_TRUE(c.Decode(*ref_enc, t.ref(), back).ok());
    EXPECT_EQ(back, ref_back) << simd::IsaName(isa) << " " << c.name() << " on " << what;
  }
}

std::span<const uint8_t> AsBytes(const std::vector<float>& v) {
  return {reinterpret_cast<const uint8_t*>(v.data()), 4 * v.size()};
}

// The vector kernels (AVX2 + F16C, AVX-512 where the CPU has them) give the very bits the
// portable ones give: every half and bfloat16 value, E4M3 codes over the whole range with ties,
// INT8 by rows and by columns with short tails, their decodings into every dtype, and the
// encodings of whole tensors (tiny ones too, where AVX-512 must not flush bfloat16 denormals).
TEST(Simd, VectorAndPortableKernelsAgreeBitForBit) {
  if (VectorIsas().empty()) {
    GTEST_SKIP() << "this CPU has no AVX2 + F16C: only the portable kernels run";
  }
  RestoreIsa restore;
  // Every 16-bit pattern, widened and narrowed back, both formats.
  std::vector<uint16_t> all(65536);
  for (uint32_t h = 0; h < 65536; ++h) all[h] = uint16_t(h);
  const auto round_trip = [&](simd::Isa isa, DType d, std::vector<float>* wide,
                              std::vector<uint16_t>* narrow) {
    simd::ForceIsa(isa);
    wide->resize(all.size());
    simd::Widen(d, reinterpret_cast<const uint8_t*>(all.data()), all.size(), wide->data());
    narrow->resize(all.size());
    simd::Narrow(d, wide->data(), all.size(), reinterpret_cast<uint8_t*>(narrow->data()));
  };
  for (DType d : {DType::kFloat16, DType::kBFloat16}) {
    std::vector<float> ref_wide, wide;
    std::vector<uint16_t> ref_narrow, narrow;
    round_trip(simd::Isa::kPortable, d, &ref_wide, &ref_narrow);
    for (simd::Isa isa : VectorIsas()) {
      round_trip(isa, d, &wide, &narrow);
      // NaN stays NaN on both paths (F16C quiets a signalling NaN's payload); the rest exact.
      for (size_t h = 0; h < all.size(); ++h) {
        const float a = wide[h], b = ref_wide[h];
        if (std::isnan(a) || std::isnan(b)) {
          ASSERT_TRUE(std::isnan(a) && std::isnan(b)) << DTypeName(d) << " " << h;
          continue;
        }
        ASSERT_EQ(std::bit_cast<uint32_t>(a), std::bit_cast<uint32_t>(b))
            << simd::IsaName(isa) << " " << DTypeName(d) << " " << h;
        ASSERT_EQ(narrow[h], ref_narrow[h])
            << simd::IsaName(isa) << " " << DTypeName(d) << " " << h;
      }
    }
  }
  // Floats across every binade E4M3 holds (denormals, ties, saturation at 448), in blocks
  // whose max |x| is 448 so that their scale is exactly 1; the tensor ends in a short block.
  std::vector<float> x;
  const auto add = [&](float v) {
    if (x.size() % simd::kFp8Block == 0) x.push_back(x.size() % 512 ? -448.0f : 448.0f);
    x.push_back(std::clamp(v, -440.0f, 440.0f));
  };
  std::mt19937 rng(7);
  for (int e = -14; e <= 9; ++e) {
    for (int k = 0; k < 64; ++k) {
      const float m = 1 + float(rng() % 4096) / 4096;
      add(std::ldexp(k % 2 ? -m : m, e));
      add(std::ldexp(1 + float(k % 8) / 8 + 1.0f / 16, e));  // ties
    }
  }
  x.resize(x.size() - 37);
  // INT8: values within range of a fixed scale, by columns (48 wide: vectors and a tail of 16)
  // and by rows of 100 (a tail of 4).
  constexpr size_t kCols = 48, kRow = 100;
  std::vector<float> small(x.size() / kCols * kCols);
  for (size_t i = 0; i < small.size(); ++i) small[i] = std::clamp(x[i], -300.0f, 300.0f);
  const std::vector<float> inv(small.size(), 0.37f), scale(small.size(), 1 / 0.37f);
  const simd::Int8Scales by_cols{scale.data(), inv.data(), kCols, true};
  const simd::Int8Scales by_rows{scale.data(), inv.data(), kRow, false};
  struct Out {
    std::vector<uint8_t> e4m3, e4m3_scales;
    std::vector<int8_t> cols, rows;
    simd::Error ee, ec, er;
  };
  const auto quantize = [&](simd::Isa isa, Out* o) {
    simd::ForceIsa(isa);
    o->e4m3.resize(x.size());
    o->e4m3_scales.resize(4 * ((x.size() + simd::kFp8Block - 1) / simd::kFp8Block));
    ASSERT_TRUE(simd::QuantizeE4m3(DType::kFloat32, AsBytes(x).data(), 0, x.size(),
                                   o->e4m3_scales.data(), o->e4m3.data(), &o->ee));
    o->cols.resize(small.size());
    o->rows.resize(small.size());
    // In two calls, the second starting inside a row and a column group.
    const size_t half = small.size() / 2 + 7;
    for (auto [lo, hi] : {std::pair<size_t, size_t>{0, half}, {half, small.size()}}) {
      simd::QuantizeInt8(DType::kFloat32, AsBytes(small).data(), lo, hi, by_cols, o->cols.data(),
                         &o->ec);
      simd::QuantizeInt8(DType::kFloat32, AsBytes(small).data(), lo, hi, by_rows, o->rows.data(),
                         &o->er);
    }
  };
  Out ref;
  quantize(simd::Isa::kPortable, &ref);
  float first_scale;
  std::memcpy(&first_scale, ref.e4m3_scales.data(), 4);
  ASSERT_EQ(first_scale, 1.0f)
      << "a block of max 448 has scale 1: its values are coded as they are";
  for (simd::Isa isa : VectorIsas()) {
    Out o;
    quantize(isa, &o);
    const char* name = simd::IsaName(isa);
    EXPECT_EQ(o.e4m3, ref.e4m3) << name;
    EXPECT_EQ(o.e4m3_scales, ref.e4m3_scales) << name;
    EXPECT_EQ(o.cols, ref.cols) << name;
    EXPECT_EQ(o.rows, ref.rows) << name;
    // The error terms: float lanes against double sums, equal to rounding.
    for (auto [a, b] : {std::pair{o.ee, ref.ee}, {o.ec, ref.ec}, {o.er, ref.er}}) {
      EXPECT_NEAR(a.err2, b.err2, 1e-5 * b.err2) << name;
      EXPECT_NEAR(a.ref2, b.ref2, 1e-5 * b.ref2) << name;
      EXPECT_EQ(a.max, b.max) << name;
    }
    // Decoding into every dtype: identical bytes.
    for (DType d : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
      const size_t item = ItemSize(d);
      std::vector<uint8_t> de[2], dc[2], dr[2];
      for (int k = 0; k < 2; ++k) {
        simd::ForceIsa(k == 0 ? simd::Isa::kPortable : isa);
        de[k].resize(item * x.size());
        simd::DequantizeE4m3(ref.e4m3.data(), 0, x.size(), ref.e4m3_scales.data(), d, de[k].data());
        dc[k].resize(item * small.size());
        dr[k].resize(item * small.size());
        simd::DequantizeInt8(ref.cols.data(), 0, small.size(), by_cols, d, dc[k].data());
        simd::DequantizeInt8(ref.rows.data(), 0, small.size(), by_rows, d, dr[k].data());
      }
      EXPECT_EQ(de[0], de[1]) << name << " " << DTypeName(d);
      EXPECT_EQ(dc[0], dc[1]) << name << " " << DTypeName(d);
      EXPECT_EQ(dr[0], dr[1]) << name << " " << DTypeName(d);
    }
  }
  // Whole encodings and their decodings: KV blocks (per-channel or per-token int8), rows of 100,
  // narrow rows (16 columns: int8 columns over runs of 256), and a tensor so small that its
  // bfloat16 round trip has denormals.
  struct Case {
    std::vector<int64_t> shape;
    float magnitude;
  };
  for (const Case& k : {Case{{96, 8, 128}, 1}, Case{{96, 8, 100}, 1}, Case{{4800, 16}, 1},
                        Case{{96, 8, 128}, 1e-37f}}) {
    const size_t n = 96 * 8 * 128;
    std::vector<float> kv = KvBlock(96, 8, 11);
    for (float& v : kv) v *= k.magnitude;
    kv.resize(std::min(n, size_t(k.shape[0] * k.shape[1] * (k.shape.size() > 2 ? k.shape[2] : 1))));
    for (const char* name : {"fp8_e4m3", "int8", "fp16", "bf16"}) {
      for (DType d : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
        const Codec& c = Named(name);
        const Tensor t = FromFloats(d, k.shape, kv);
        if (!c.Accepts(t.ref())) continue;
        ExpectSameOnEveryIsa(
            c, t, absl::StrCat(std::string(DTypeName(d)), " x", k.magnitude, " ", k.shape[1]));
      }
    }
  }
}

// The vector kernels add their squares in float lanes; a tensor whose squares overflow or
// underflow float (|x| ~ 1e25 or 1e-25) still gets the error the portable double sums give,
// through the kernels and through a whole int8 / fp8 encode of float32 data.
TEST(Simd, ErrorTermsSurviveMagnitudesFloatSquaresCannotHold) {
  if (VectorIsas().empty()) {
    GTEST_SKIP() << "this CPU has no AVX2 + F16C: only the portable kernels run";
  }
  RestoreIsa restore;
  for (const float magnitude : {1e25f, 1e-25f, 1e-3f}) {
    std::vector<float> x = Gaussian(4096 + 5, 3);
    for (float& v : x) v *= magnitude;
    const float amax = *std::max_element(
        x.begin(), x.end(), [](float a, float b) { return std::fabs(a) < std::fabs(b); });
    const float scale = std::fabs(amax) / 127, inv = 127 / std::fabs(amax);
    const simd::Int8Scales one{&scale, &inv, x.size(), false};
    for (simd::Isa isa : VectorIsas()) {
      simd::Error e[2], f[2], a[2];
      std::vector<int8_t> q(x.size());
      std::vector<uint8_t> q8(x.size()), scales(4 * (x.size() / simd::kFp8Block + 1));
      std::vector<float> y(x.size());
      for (int portable = 0; portable < 2; ++portable) {
        simd::ForceIsa(portable == 1 ? simd::Isa::kPortable : isa);
        simd::QuantizeInt8(DType::kFloat32, AsBytes(x).data(), 0, x.size(), one, q.data(),
                           &e[portable]);
        ASSERT_TRUE(simd::QuantizeE4m3(DType::kFloat32, AsBytes(x).data(), 0, x.size(),
                                       scales.data(), q8.data(), &f[portable]));
        for (size_t i = 0; i < x.size(); ++i) y[i] = x[i] * 1.001f;
        simd::AddError(x.data(), y.data(), x.size(), &a[portable]);
      }
      for (const simd::Error* t : {e, f, a}) {
        ASSERT_GT(t[1].ref2, 0) << magnitude;
        ASSERT_GT(t[1].err2, 0) << magnitude;
        EXPECT_NEAR(t[0].err2 / t[1].err2, 1, 1e-5) << simd::IsaName(isa) << " " << magnitude;
        EXPECT_NEAR(t[0].ref2 / t[1].ref2, 1, 1e-5) << simd::IsaName(isa) << " " << magnitude;
        EXPECT_EQ(t[0].max, t[1].max) << simd::IsaName(isa) << " " << magnitude;
      }
    }
    simd::ForceIsa(simd::BestIsa());
    // Exact large values beside tiny differences whose squares underflow float: the error is
    // small, never zero.
    std::vector<float> big(4096, 1.0f), near(4096, 1.0f);
    for (size_t i = 0; i < big.size(); i += 2) {
      big[i] = 1e-25f;
      near[i] = 2e-25f;
    }
    simd::Error u[2];
    for (int portable = 0; portable < 2; ++portable) {
      simd::ForceIsa(portable == 1 ? simd::Isa::kPortable : simd::BestIsa());
      simd::AddError(big.data(), near.data(), big.size(), &u[portable]);
    }
    simd::ForceIsa(simd::BestIsa());
    ASSERT_GT(u[1].err2, 0);
    EXPECT_NEAR(u[0].err2 / u[1].err2, 1, 1e-5);
    const Tensor t = FromFloats(DType::kFloat32, {int64_t(x.size())}, x);
    for (const char* name : {"int8", "fp8_e4m3"}) {
      Quality measured;
      auto enc = Named(name).EncodeMeasured(t.ref(), 1, &measured);
      ASSERT_TRUE(enc.ok()) << enc.status();
      std::vector<uint8_t> back(t.ref().bytes.size());
      ASSERT_TRUE(Named(name).Decode(*enc, t.ref(), back).ok());
      const Quality found = Measure(DType::kFloat32, t.ref().bytes, back);
      EXPECT_GT(measured.rel_rmse, 1e-4) << name << " " << magnitude;
      EXPECT_NEAR(measured.rel_rmse, found.rel_rmse, 1e-4 * found.rel_rmse)
          << name << " " << magnitude;
    }
  }
}

// Zero-padded blocks (unfilled KV pages) and blocks of tiny values, whose float error sums
// cannot be trusted, are measured by every ISA as the portable kernels measure them.
TEST(Simd, MeasuredErrorOfZeroAndTinyBlocksIsThePortableOne) {
  if (VectorIsas().empty()) {
    GTEST_SKIP() << "this CPU has no AVX2 + F16C: only the portable kernels run";
  }
  RestoreIsa restore;
  std::vector<float> kv = KvBlock(96, 8, 13);
  for (float& v : kv) v *= 1e-24f;  // squares below float's range: every block is redone
  std::fill(kv.begin() + 8192, kv.begin() + 40000, 0.0f);  // whole blocks of zeros
  for (const char* name : {"int8", "fp8_e4m3"}) {
    for (DType d : {DType::kFloat32, DType::kBFloat16}) {
      const Tensor t = FromFloats(d, {96, 8, 128}, kv);
      simd::ForceIsa(simd::Isa::kPortable);
      Quality ref;
      ASSERT_TRUE(Named(name).EncodeMeasured(t.ref(), 1, &ref).ok());
      ASSERT_GT(ref.rel_rmse, 0);
      for (simd::Isa isa : VectorIsas()) {
        simd::ForceIsa(isa);
        Quality q;
        ASSERT_TRUE(Named(name).EncodeMeasured(t.ref(), 1, &q).ok());
        EXPECT_NEAR(q.rel_rmse, ref.rel_rmse, 1e-5 * ref.rel_rmse)
            << simd::IsaName(isa) << " " << name << " " << DTypeName(d);
        EXPECT_EQ(q.max_abs_error, ref.max_abs_error)
            << simd::IsaName(isa) << " " << name << " " << DTypeName(d);
      }
    }
  }
}

// FP8 of float16 and bfloat16 blocks whose scale is a power of two: the AVX-512 kernels round
// the 16-bit values themselves, and fall back to float for E4M3 and float16 denormals. Every
// finite value (a sample of them for the widest bfloat16 blocks) under block maxima across each
// dtype's range, both ways a maximum maps (1.5 * 2^e to 384, 1.9 * 2^e to 243), and maxima that
// keep the amax / 448 scale (>= 2^15, < 2^-100; 1.75 * 2^e makes that scale a power of two the
// 16-bit kernel takes), gives the portable codes, scales and error.
TEST(Simd, Fp8OfEvery16BitValueUnderEveryScaleIsThePortableOne) {
  if (VectorIsas().empty()) {
    GTEST_SKIP() << "this CPU has no AVX2 + F16C: only the portable kernels run";
  }
  RestoreIsa restore;
  std::mt19937 rng(5);
  for (DType d : {DType::kFloat16, DType::kBFloat16}) {
    const auto value = [d](uint16_t h) {
      return d == DType::kFloat16 ? HalfToFloat(h) : Bf16ToFloat(h);
    };
    const auto bits = [d](float f) {
      return d == DType::kFloat16 ? FloatToHalf(f) : FloatToBf16(f);
    };
    std::vector<uint16_t> finite;  // non-negative finite values, ascending
    for (uint32_t h = 0; h < 0x8000; ++h) {
      if (std::isfinite(value(uint16_t(h)))) finite.push_back(uint16_t(h));
    }
    std::vector<uint16_t> x;
    size_t pow2_blocks = 0;
    const int lo_e = d == DType::kFloat16 ? -24 : -133, hi_e = d == DType::kFloat16 ? 15 : 127;
    for (int e = lo_e; e <= hi_e; ++e) {
      for (float m :
           {1.5f, 1.9f, 1.75f}) {  // 1.75: amax / 448 a power of two beyond 2^15 and below 2^-100
        const uint16_t amax = bits(std::ldexp(m, e));
        if (!std::isfinite(value(amax)) || value(amax) == 0) continue;
        pow2_blocks += value(amax) >= 0x1p-100f && value(amax) < 0x1p15f;
        // The values at most amax, every one of them or 16384 at random, in blocks of 256 led
        // by +-amax; signs at random.
        const size_t count = std::upper_bound(finite.begin(), finite.end(), amax) - finite.begin();
        const size_t take = std::min<size_t>(count, 16384);
        for (size_t i = 0; i < take; ++i) {
          if (x.size() % simd::kFp8Block == 0) x.push_back(amax | (rng() % 2 ? 0x8000 : 0));
          const uint16_t v = finite[take == count ? i : rng() % count];
          x.push_back(v | (rng() % 2 ? 0x8000 : 0));
        }
        while (x.size() % simd::kFp8Block != 0) x.push_back(0);
      }
    }
    ASSERT_GT(pow2_blocks, 40u);
    x.resize(x.size() - 37);  // a short block at the end
    const uint8_t* src = reinterpret_cast<const uint8_t*>(x.data());
    const size_t blocks = (x.size() + simd::kFp8Block - 1) / simd::kFp8Block;
    std::vector<uint8_t> ref_q(x.size()), ref_s(4 * blocks), ref_q0(x.size()), ref_s0(4 * blocks);
    simd::Error ref_e;
    simd::ForceIsa(simd::Isa::kPortable);
    ASSERT_TRUE(simd::QuantizeE4m3(d, src, 0, x.size(), ref_s.data(), ref_q.data(), &ref_e));
    ASSERT_TRUE(simd::QuantizeE4m3(d, src, 0, x.size(), ref_s0.data(), ref_q0.data(), nullptr));
    EXPECT_EQ(ref_q0, ref_q);
    for (simd::Isa isa : VectorIsas()) {
      simd::ForceIsa(isa);
      for (bool measure : {true, false}) {
        std::vector<uint8_t> q(x.size()), s(4 * blocks);
        simd::Error e;
        ASSERT_TRUE(
            simd::QuantizeE4m3(d, src, 0, x.size(), s.data(), q.data(), measure ? &e : nullptr));
        EXPECT_EQ(s, ref_s) << simd::IsaName(isa) << " " << DTypeName(d);
        for (size_t i = 0; i < x.size(); ++i) {
          ASSERT_EQ(q[i], ref_q[i]) << simd::IsaName(isa) << " " << DTypeName(d) << " element " << i
                                    << " = " << value(x[i]) << " in block " << i / 256;
        }
        if (!measure) continue;
        EXPECT_NEAR(e.err2, ref_e.err2, 1e-5 * ref_e.err2) << simd::IsaName(isa);
        EXPECT_NEAR(e.ref2, ref_e.ref2, 1e-5 * ref_e.ref2) << simd::IsaName(isa);
        EXPECT_EQ(e.max, ref_e.max) << simd::IsaName(isa);
      }
    }
  }
}

// 4-bit: the AVX-512 kernels compute sixteen groups' (min, step) at once and pack nibbles in
// vectors; the encodings and decodings are the portable bytes for every dtype, with groups of
// +0, -0 and both, constant groups (step 0), float16-denormal steps, values near the +-60000
// limit, and a tensor whose last group is short and odd. Beyond the limit both refuse.
TEST(Simd, Int4OfEveryKindOfGroupIsThePortableOne) {
  if (VectorIsas().empty()) {
    GTEST_SKIP() << "this CPU has no AVX2 + F16C: only the portable kernels run";
  }
  RestoreIsa restore;
  std::vector<float> x = KvBlock(40, 8, 21);  // 40960 values
  const size_t g = simd::kInt4Group;
  std::fill(x.begin(), x.begin() + g, 0.0f);
  std::fill(x.begin() + g, x.begin() + 2 * g, -0.0f);
  for (size_t i = 2 * g; i < 3 * g; ++i) x[i] = i % 3 ? 0.0f : -0.0f;
  std::fill(x.begin() + 3 * g, x.begin() + 4 * g, 1.25f);
  for (size_t i = 4 * g; i < 5 * g; ++i) x[i] = float(i % 7) * 1e-7f;  // steps below 2^-14
  for (size_t i = 5 * g; i < 6 * g; ++i) x[i] = i % 2 ? 59999.0f : -59000.0f;
  for (size_t i = 6 * g; i < 7 * g; ++i) x[i] = -3.0f + float(i % 5) * 1e-3f;
  x.resize(x.size() - 51);  // the last group: 13 values
  for (DType d : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
    const Tensor t = FromFloats(d, {int64_t(x.size())}, x);
    const Codec& c = Named("int4_g64");
    ExpectSameOnEveryIsa(c, t, std::string(DTypeName(d)));
    // A group beyond the limit: refused on every path.
    std::vector<float> big = x;
    big[7 * g + 3] = 70000.0f;
    const Tensor tb = FromFloats(DType::kFloat32, {int64_t(big.size())}, big);
    for (simd::Isa isa : {simd::Isa::kPortable, simd::BestIsa()}) {
      simd::ForceIsa(isa);
      EXPECT_EQ(c.Encode(tb.ref()).status().code(), absl::StatusCode::kFailedPrecondition);
    }
  }
}

// The quantizers measure their round trip while encoding; what they report is what a Decode
// followed by Measure finds.
TEST(Codec, ErrorMeasuredWhileEncodingIsTheDecodedRoundTrips) {
  const std::vector<float> kv = KvBlock(200, 8, 5);
  for (const char* name : {"fp8_e4m3", "int8", "fp16", "bf16", "int4_g64"}) {
    for (DType d : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
      const Codec& c = Named(name);
      const Tensor t = FromFloats(d, {200, 8, 128}, kv);
      if (!c.Accepts(t.ref())) continue;
      Quality q;
      auto enc = c.EncodeMeasured(t.ref(), 0.01, &q);
      ASSERT_TRUE(enc.ok()) << enc.status();
      std::vector<uint8_t> back(t.bytes.size());
      ASSERT_TRUE(c.Decode(*enc, t.ref(), back).ok());
      const Quality m = Measure(d, t.bytes, back);
      EXPECT_NEAR(q.rel_rmse, m.rel_rmse, 1e-4 * m.rel_rmse + 1e-9) << name << " " << DTypeName(d);
      EXPECT_NEAR(q.max_abs_error, m.max_abs_error, 1e-5 * m.max_abs_error) << name;
      EXPECT_GT(q.rel_rmse, 0) << name;
    }
  }
  // Magnitudes whose squares leave float's range: the error is still measured, not 0.
  for (float scale : {1e20f, 1e-21f}) {
    std::vector<float> v = KvBlock(64, 8, 6);
    for (float& f : v) f *= scale;
    const Tensor t = FromFloats(DType::kFloat32, {64, 8, 128}, v);
    for (const char* name : {"fp8_e4m3", "int8"}) {
      Quality q;
      auto enc = Named(name).EncodeMeasured(t.ref(), 0.01, &q);
      ASSERT_TRUE(enc.ok()) << name << " " << scale << ": " << enc.status();
      std::vector<uint8_t> back(t.bytes.size());
      ASSERT_TRUE(Named(name).Decode(*enc, t.ref(), back).ok());
      const Quality m = Measure(DType::kFloat32, t.bytes, back);
      EXPECT_GT(q.rel_rmse, 1e-4) << name << " at scale " << scale;
      EXPECT_NEAR(q.rel_rmse, m.rel_rmse, 1e-4 * m.rel_rmse) << name << " at scale " << scale;
    }
  }
}

TEST(Codec, Int8ScalesFollowTheOutliersChannelOrToken) {
  // One channel (column) 100x the others: per-channel scales keep the rest precise.
  std::vector<float> keys = Gaussian(512 * 128, 5);
  for (size_t i = 0; i < keys.size(); i += 128) keys[i] *= 100;
  // One token (row) 100x the others: per-token scales.
  std::vector<float> values = Gaussian(512 * 128, 6);
  for (size_t i = 0; i < 128; ++i) values[200 * 128 + i] *= 100;
  for (const auto& v : {keys, values}) {
    const Tensor t = FromFloats(DType::kFloat32, {512, 128}, v);
    // The error measured on everything but the outliers: what a bad scale choice ruins.
    std::vector<uint8_t> back = RoundTrip(Named("int8"), t);
    double err2 = 0, ref2 = 0;
    for (size_t i = 0; i < v.size(); ++i) {
      if (i % 128 == 0 || i / 128 == 200) continue;
      float y;
      std::memcpy(&y, back.data() + 4 * i, 4);
      err2 += (v[i] - y) * (v[i] - y);
      ref2 += v[i] * v[i];
    }
    EXPECT_LT(std::sqrt(err2 / ref2), 0.01);
  }
}

TEST(Codec, LowRankFindsTheRankItsBudgetNeeds) {
  // A rank-4 256 x 128 matrix plus small noise.
  const size_t m = 256, n = 128;
  const std::vector<float> a = Gaussian(m * 4, 7), b = Gaussian(n * 4, 8), e = Gaussian(m * n, 9);
  std::vector<float> v(m * n);
  for (size_t i = 0; i < m; ++i) {
    for (size_t j = 0; j < n; ++j) {
      float x = 0;
      for (size_t k = 0; k < 4; ++k) x += a[i * 4 + k] * b[j * 4 + k];
      v[i * n + j] = x + 0.001f * e[i * n + j];
    }
  }
  const Tensor t = FromFloats(DType::kFloat32, {int64_t(m), int64_t(n)}, v);
  size_t size = 0;
  const std::vector<uint8_t> back = RoundTrip(Named("lowrank"), t, &size, 0.01);
  ASSERT_FALSE(back.empty());
  EXPECT_LE(Measure(DType::kFloat32, t.bytes, back).rel_rmse, 0.01);
  EXPECT_GT(double(t.bytes.size()) / double(size), 10.0) << "rank 4 of 128";
  // Full-rank noise cannot be stored at low rank within 1%: refused, not stored badly.
  const Tensor noise = FromFloats(DType::kFloat32, {256, 128}, Gaussian(m * n, 10));
  EXPECT_EQ(Named("lowrank").Encode(noise.ref(), 0.01).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST(Codec, ADamagedOrMisfiledEncodingIsDataLossNeverWrongBytes) {
  const Tensor t = FromFloats(DType::kFloat16, {64, 128}, KvBlock(64, 1, 11));
  for (const Codec* c : AllCodecs()) {
    if (c->id() == CodecId::kNone || !c->Accepts(t.ref())) continue;
    auto enc = c->Encode(t.ref(), 0.5);
    if (!enc.ok()) continue;  // e.g. sparse: no zeros here
    std::vector<uint8_t> out(t.bytes.size());
    for (size_t at : {size_t(0), size_t(5), size_t(30), enc->size() / 2, enc->size() - 1}) {
      ::tensord::codec::Bytes bad = *enc;
      bad[at] ^= 0x20;
      EXPECT_EQ(c->Decode(bad, t.ref(), out).code(), absl::StatusCode::kDataLoss)
          << c->name() << " byte " << at;
    }
    std::vector<uint8_t> cut(enc->begin(), enc->end() - 1);
    EXPECT_EQ(c->Decode(cut, t.ref(), out).code(), absl::StatusCode::kDataLoss) << c->name();
    std::vector<uint8_t> other_size(t.bytes.size() + 2);
    EXPECT_EQ(c->Decode(*enc, t.ref(), other_size).code(), absl::StatusCode::kDataLoss);
    const Tensor as_f32{DType::kFloat32, {}, t.bytes};
    EXPECT_EQ(c->Decode(*enc, as_f32.ref(), out).code(), absl::StatusCode::kDataLoss)
        << c->name() << ": decoded as another dtype";
    for (const Codec* other : AllCodecs()) {
      if (other == c || other->id() == CodecId::kNone) continue;
      EXPECT_EQ(other->Decode(*enc, t.ref(), out).code(), absl::StatusCode::kDataLoss)
          << c->name() << " decoded by " << other->name();
    }
    // A crafted copy: the envelope re-stamped for a uint8 tensor (the checksum covers the
    // payload only, so it still holds). An element codec never encodes uint8; decoding at its
    // own element size would write past the tensor. DATA_LOSS, the buffer untouched.
    if (c->Accepts({DType::kUInt8, {}, {}})) continue;
    ::tensord::codec::Bytes restamped = *enc;
    std::vector<uint8_t> bytes(t.bytes.size() / 2, 0x5a);  // as many uint8 elements
    const uint64_t nbytes = bytes.size();
    restamped[5] = static_cast<uint8_t>(DType::kUInt8);
    std::memcpy(restamped.data() + 8, &nbytes, 8);  // the envelope's decoded size
    const Tensor as_u8{DType::kUInt8, {int64_t(bytes.size())}, {}};
    TensorRef like = as_u8.ref();
    like.bytes = bytes;
    EXPECT_EQ(c->Decode(restamped, like, bytes).code(), absl::StatusCode::kDataLoss) << c->name();
    EXPECT_EQ(bytes, std::vector<uint8_t>(bytes.size(), 0x5a)) << c->name();
  }
}

// An envelope's checksum covers a large payload segment by segment (hashed in parallel), each
// one in its place; copies written before, with one XXH3 over the whole payload ('TDC1'), still
// decode, and above one segment neither kind passes for the other (up to 64 KiB both checksums
// are the XXH3 of the payload).
TEST(Codec, EveryChecksumSegmentIsVerifiedAndOldCopiesStillDecode) {
  const Tensor t = FromFloats(DType::kFloat16, {1024, 8, 128}, KvBlock(1024, 8, 17));
  for (const char* name : {"lossless", "int8"}) {
    const Codec& c = Named(name);
    auto enc = c.Encode(t.ref());
    ASSERT_TRUE(enc.ok()) << enc.status();
    const size_t payload = enc->size() - 24;
    ASSERT_GT(payload, 8 * kHashSegment) << name;
    EXPECT_EQ(std::memcmp(enc->data(), "TDC2", 4), 0) << name;
    std::vector<uint8_t> out(t.bytes.size()), back(t.bytes.size());
    ASSERT_TRUE(c.Decode(*enc, t.ref(), back).ok());
    for (size_t at :
         {size_t(24), 24 + kHashSegment - 1, 24 + 3 * kHashSegment + 77, 24 + payload - 1}) {
      ::tensord::codec::Bytes bad = *enc;
      bad[at] ^= 0x01;
      EXPECT_EQ(c.Decode(bad, t.ref(), out).code(), absl::StatusCode::kDataLoss)
          << name << " byte " << at;
    }
    // Two whole segments trade places: each hashes as before, the order does not.
    ::tensord::codec::Bytes swapped = *enc;
    std::swap_ranges(swapped.begin() + 24 + kHashSegment, swapped.begin() + 24 + 2 * kHashSegment,
                     swapped.begin() + 24 + 2 * kHashSegment);
    ASSERT_NE(swapped, *enc);
    EXPECT_EQ(c.Decode(swapped, t.ref(), out).code(), absl::StatusCode::kDataLoss) << name;
    // The format before: 'TDC1' and the XXH3 of the whole payload.
    ::tensord::codec::Bytes old = *enc;
    std::memcpy(old.data(), "TDC1", 4);
    EXPECT_EQ(c.Decode(old, t.ref(), out).code(), absl::StatusCode::kDataLoss)
        << name << ": a segmented checksum under the old magic";
    const uint64_t whole = XXH3_64bits(old.data() + 24, payload);
    std::memcpy(old.data() + 16, &whole, 8);
    std::fill(out.begin(), out.end(), 0);
    ASSERT_TRUE(c.Decode(old, t.ref(), out).ok()) << name;
    EXPECT_EQ(out, back) << name;
    std::memcpy(old.data(), "TDC2", 4);
    EXPECT_EQ(c.Decode(old, t.ref(), out).code(), absl::StatusCode::kDataLoss)
        << name << ": a whole-payload checksum under the new magic";
  }
}

TEST(Codec, TheAutomaticChoiceFollowsThePolicy) {
  const Tensor kv = FromFloats(DType::kFloat16, {256, 8, 128}, KvBlock(256, 8, 12));
  const Policy none{Compression::kNone}, lossless{Compression::kLossless};
  const Policy lossy{Compression::kLossy, 0.01};
  auto e = EncodeFor(none, kv.ref());
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->codec, CodecId::kNone);
  EXPECT_TRUE(e->tried.empty()) << "no codec work";
  // 1%: int8 or fp8 (4-bit cannot meet it on this data); the error it measured is reported.
  e = EncodeFor(lossy, kv.ref());
  ASSERT_TRUE(e.ok());
  EXPECT_TRUE(e->codec == CodecId::kInt8 || e->codec == CodecId::kFp8E4m3) << CodecName(e->codec);
  EXPECT_GT(e->quality.rel_rmse, 0);
  EXPECT_LE(e->quality.rel_rmse, 0.01);
  EXPECT_FALSE(e->over_budget);
  EXPECT_EQ(e->stored_bytes, e->bytes.size());
  std::vector<uint8_t> back(kv.bytes.size());
  ASSERT_TRUE((*CodecFor(e->codec))->Decode(e->bytes, kv.ref(), back).ok());
  // Measured while encoding (float sums per tile): the decoded round trip's, to rounding.
  EXPECT_NEAR(Measure(kv.dtype, kv.bytes, back).rel_rmse, e->quality.rel_rmse,
              1e-5 * e->quality.rel_rmse);
  // 15%: 4-bit groups do.
  e = EncodeFor({Compression::kLossy, 0.15}, kv.ref());
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->codec, CodecId::kInt4G64);
  EXPECT_FALSE(e->tried[0].sample) << "within budget on its slice: encoded whole";
  // 5%: 4-bit's ~9% is predicted close enough to try, but a slice shows it well over: it is
  // skipped (a sampled overrun) without encoding the whole tensor, and INT8 is kept.
  e = EncodeFor({Compression::kLossy, 0.05}, kv.ref());
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->codec, CodecId::kInt8) << CodecName(e->codec);
  EXPECT_FALSE(e->over_budget);
  ASSERT_GE(e->tried.size(), 2u);
  EXPECT_EQ(e->tried[0].codec, CodecId::kInt4G64);
  EXPECT_TRUE(e->tried[0].sample);
  EXPECT_TRUE(e->tried[0].over_budget);
  EXPECT_GT(e->tried[0].rel_rmse, 0.075);
  // Only the codecs the policy allows.
  Policy fp8_only = lossy;
  fp8_only.budget = 0.05;
  fp8_only.allowed = *CodecMask(std::vector<std::string>{"fp8_e4m3"});
  e = EncodeFor(fp8_only, kv.ref());
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->codec, CodecId::kFp8E4m3);
  // A budget nothing meets: lossless instead, and said so.
  e = EncodeFor({Compression::kLossy, 1e-6}, kv.ref());
  ASSERT_TRUE(e.ok());
  EXPECT_TRUE(e->over_budget);
  EXPECT_FALSE((*CodecFor(e->codec))->lossy());
  // Lossy on integers or on NaN: lossless.
  std::vector<int32_t> ints(1 << 16);
  for (size_t i = 0; i < ints.size(); ++i) ints[i] = int32_t(i % 1000);
  e = EncodeFor(lossy, {DType::kInt32, {}, Bytes(ints)});
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->codec, CodecId::kLossless);
  // Mostly zeros (a ReLU activation): the sparse codec is tried, the smaller encoding kept.
  std::vector<float> act = Gaussian(1 << 16, 14);
  for (float& x : act) x = x > 1.3f ? x : 0.0f;  // ~10% non-zero
  e = EncodeFor(lossless, {DType::kFloat32, {}, Bytes(act)});
  ASSERT_TRUE(e.ok());
  EXPECT_TRUE(e->codec == CodecId::kSparse || e->codec == CodecId::kLossless);
  EXPECT_EQ(e->tried.size(), 2u);
  EXPECT_EQ(e->tried[0].codec, CodecId::kSparse);
  EXPECT_LT(e->stored_bytes, act.size() * 4 / 4) << "10% non-zero: over 4x";
  // Random bytes and tiny tensors: raw.
  std::mt19937 rng(13);
  std::vector<uint8_t> noise(1 << 16);
  for (auto& b : noise) b = uint8_t(rng());
  e = EncodeFor(lossless, {DType::kUInt8, {}, noise});
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->codec, CodecId::kNone);
  EXPECT_EQ(e->stored_bytes, noise.size());
  e = EncodeFor(lossy, {DType::kUInt8, {}, std::vector<uint8_t>(100)});
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->codec, CodecId::kNone) << "below kMinEncodeBytes";
}

TEST(Codec, PoliciesAndNamesAreValidated) {
  EXPECT_TRUE(ValidatePolicy({Compression::kLossy, 0.01}).ok());
  EXPECT_FALSE(ValidatePolicy({Compression::kLossy, 0}).ok());
  EXPECT_FALSE(ValidatePolicy({Compression::kLossy, 1.5}).ok());
  EXPECT_FALSE(ValidatePolicy({Compression::kLossy, std::nan("")}).ok());
  EXPECT_FALSE(ValidatePolicy({Compression::kNone, 0.01}).ok());
  EXPECT_FALSE(ValidatePolicy({Compression::kLossless, 0, 1u << 6}).ok());
  EXPECT_FALSE(ValidatePolicy({Compression::kLossy, 0.01, 1u << 31}).ok());
  EXPECT_FALSE(ValidatePolicy({static_cast<Compression>(9)}).ok());
  EXPECT_EQ(CodecMask(std::vector<std::string>{"int8", "zip"}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CodecNames(*CodecMask(std::vector<std::string>{"int8", "fp16"})),
            (std::vector<std::string>{"fp16", "int8"}));
  EXPECT_EQ(ParseCompression("lossy").value(), Compression::kLossy);
  EXPECT_FALSE(ParseCompression("default").ok());
  EXPECT_EQ(ParseCompression("default", true).value(), Compression::kDefault);
  EXPECT_EQ(CodecFor(static_cast<CodecId>(1)).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(CodecPool, ParallelForRunsEachIndexOnceAndNests) {
  std::vector<std::atomic<int>> runs(1000);
  ParallelFor(runs.size(), [&](size_t i) {
    ParallelFor(3, [&](size_t) { ++runs[i]; });  // nested: runs inline
  });
  for (const auto& r : runs) EXPECT_EQ(r.load(), 3);
  EXPECT_GE(CodecThreads(), 1);
  // Each thread starts on its own share of the indices: fewer indices than threads, shares of
  // one, uneven shares; every index still runs once.
  for (int threads : {2, 3, 5, 8}) {
    SetCodecThreads(threads);
    for (size_t n : {size_t(1), size_t(2), size_t(3), size_t(7), size_t(8), size_t(1001)}) {
      std::vector<std::atomic<int>> once(n);
      for (int rep = 0; rep < 20; ++rep) {
        ParallelFor(n, [&](size_t i) { ++once[i]; });
      }
      for (size_t i = 0; i < n; ++i) {
        ASSERT_EQ(once[i].load(), 20) << threads << " threads, " << n << " indices, index " << i;
      }
    }
  }
  SetCodecThreads(0);
}

// Pools come and go (SetCodecThreads) while callers use them: every index still runs once, from
// several callers at a time, and a pool whose workers had not started when it was last used
// and dropped shuts down (a worker that first looked at the generation after the stop once
// waited for a wake-up that never came: this test then hung).
TEST(CodecPool, PoolsReplacedUnderUseShutDownAndLoseNoWork) {
  struct Restore {
    ~Restore() { SetCodecThreads(0); }
  } restore;
  for (int round = 0; round < 300; ++round) {
    SetCodecThreads(2 + round % 4);
    std::atomic<int> ran{0};
    ParallelFor(2, [&](size_t) { ++ran; });  // likely before the new workers ever ran
    ASSERT_EQ(ran.load(), 2);
    SetCodecThreads(round % 3);  // drops the pool: its workers must stop
  }
  // Four callers while another thread keeps replacing the pool: a replaced pool goes when the
  // last caller using it returns, on that caller's thread.
  SetCodecThreads(3);
  std::atomic<bool> done{false};
  std::thread replacer([&] {
    for (int k = 0; !done; ++k) SetCodecThreads(2 + k % 3);
  });
  std::vector<std::thread> callers;
  std::vector<std::atomic<int>> runs(4 * 500);
  for (int c = 0; c < 4; ++c) {
    callers.emplace_back([&, c] {
      for (int k = 0; k < 50; ++k) {
        ParallelFor(10, [&](size_t i) { ++runs[c * 500 + k * 10 + i]; });
      }
    });
  }
  for (std::thread& t : callers) t.join();
  done = true;
  replacer.join();
  for (const auto& r : runs) EXPECT_EQ(r.load(), 1);
}

}  // namespace
}  // namespace tensord::codec
