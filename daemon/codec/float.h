// Scalar conversions between float32 and the narrow floating-point formats the codecs store:
// IEEE half, bfloat16 and FP8 E4M3 (the OCP "fn" variant: bias 7, max 448, no infinities, NaN
// 0x7f). All round to nearest, ties to even.
#pragma once

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>

namespace tensord::codec {

// Rounds to the nearest integer, ties to even, for |x| < 2^22: adding and removing 1.5 * 2^23
// leaves no fraction bits (the FPU's default rounding does the rest). Branch-free and inlined,
// unlike std::nearbyint, which saves and restores the floating-point environment per call.
// (Without -ffast-math, which this project never uses, the compiler may not fold it to x.)
inline float RoundEven(float x) {
  constexpr float m = 12582912.0f;
  return (x + m) - m;
}

inline uint16_t FloatToHalf(float f) {
  const uint32_t x = std::bit_cast<uint32_t>(f);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000);
  const uint32_t abs = x & 0x7fffffff;
  if (abs > 0x7f800000) return sign | 0x7e00 | ((abs >> 13) & 0x3ff);  // NaN stays NaN
  if (abs >= 0x477ff000) return sign | 0x7c00;                         // >= 65520 (and Inf): Inf
  if (abs < 0x38800000) {  // below 2^-14: a half denormal (or 0)
    const float q = RoundEven(std::bit_cast<float>(abs) * 16777216.0f);  // units of 2^-24
    return sign | static_cast<uint16_t>(q);  // 1024 becomes the smallest normal, as it should
  }
  return sign | static_cast<uint16_t>((abs + 0xfff + ((abs >> 13) & 1) - 0x38000000) >> 13);
}

inline float HalfToFloatSlow(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000) << 16;
  const uint32_t e = (h >> 10) & 0x1f, m = h & 0x3ff;
  if (e == 0) {
    return std::bit_cast<float>(std::bit_cast<uint32_t>(std::ldexp(float(m), -24)) | sign);
  }
  if (e == 31) return std::bit_cast<float>(sign | 0x7f800000 | (m << 13));
  return std::bit_cast<float>(sign | ((e + 112) << 23) | (m << 13));
}

// All 65536 halves as floats (256 KiB, built once): a load instead of branches per element.
inline const float* HalfTable() {
  static const float* table = [] {
    auto* t = new float[65536];
    for (uint32_t h = 0; h < 65536; ++h) t[h] = HalfToFloatSlow(static_cast<uint16_t>(h));
    return t;
  }();
  return table;
}

inline float HalfToFloat(uint16_t h) { return HalfTable()[h]; }

inline uint16_t FloatToBf16(float f) {
  const uint32_t x = std::bit_cast<uint32_t>(f);
  if ((x & 0x7fffffff) > 0x7f800000) return static_cast<uint16_t>((x >> 16) | 0x40);  // quiet NaN
  return static_cast<uint16_t>((x + 0x7fff + ((x >> 16) & 1)) >> 16);
}

inline float Bf16ToFloat(uint16_t b) { return std::bit_cast<float>(uint32_t(b) << 16); }

inline constexpr float kFp8E4m3Max = 448.0f;

// Values beyond +-448 saturate to +-448.
inline uint8_t FloatToE4m3(float f) {
  const uint32_t x = std::bit_cast<uint32_t>(f);
  const uint8_t sign = static_cast<uint8_t>((x >> 24) & 0x80);
  const uint32_t abs = x & 0x7fffffff;
  if (abs > 0x7f800000) return sign | 0x7f;
  const float a = std::bit_cast<float>(abs);
  if (a >= kFp8E4m3Max) return sign | 0x7e;
  if (a < 0.015625f) {  // below 2^-6: a denormal in units of 2^-9 (8 becomes the first normal)
    return sign | static_cast<uint8_t>(RoundEven(a * 512.0f));
  }
  const uint32_t code = (abs + 0x7ffff + ((abs >> 20) & 1) - (120u << 23)) >> 20;
  return sign | static_cast<uint8_t>(code > 0x7e ? 0x7e : code);
}

inline float E4m3ToFloat(uint8_t v) {
  const uint32_t e = (v >> 3) & 0xf, m = v & 7;
  float a;
  if (e == 0xf && m == 7) {
    a = std::numeric_limits<float>::quiet_NaN();
  } else if (e == 0) {
    a = std::ldexp(float(m), -9);
  } else {
    a = std::bit_cast<float>(((e + 120) << 23) | (m << 20));
  }
  return (v & 0x80) ? -a : a;
}

}  // namespace tensord::codec
