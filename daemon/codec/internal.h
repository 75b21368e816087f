// What the codec files share: element access by dtype, a bounds-checked reader of payloads,
// and the codec objects themselves.
#pragma once

#include <cstring>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "daemon/codec/codec.h"
#include "daemon/codec/float.h"

namespace tensord::codec::internal {

// Elements per parallel chunk of the element-wise codecs (a multiple of 64 and of 8).
inline constexpr size_t kChunkElements = 1 << 16;

inline bool IsFloat(DType d) {
  return d == DType::kFloat32 || d == DType::kFloat16 || d == DType::kBFloat16;
}

inline size_t Elements(const TensorRef& t) {
  const size_t item = ItemSize(t.dtype);
  return item == 0 ? 0 : t.bytes.size() / item;
}

// The shape as (rows, columns): all but the last dimension, and the last; a 0- or 1-D tensor
// is one row.
inline std::pair<size_t, size_t> Matrix(const TensorRef& t) {
  const size_t n = Elements(t);
  if (t.shape.size() < 2 || t.shape.back() <= 0) return {1, n};
  const size_t cols = static_cast<size_t>(t.shape.back());
  return n % cols == 0 ? std::pair{n / cols, cols} : std::pair{size_t(1), n};
}

// Element i of a float32, float16 or bfloat16 tensor, as float.
inline float Load(DType d, const uint8_t* p, size_t i) {
  if (d == DType::kFloat32) {
    float f;
    std::memcpy(&f, p + 4 * i, 4);
    return f;
  }
  uint16_t h;
  std::memcpy(&h, p + 2 * i, 2);
  return d == DType::kFloat16 ? HalfToFloat(h) : Bf16ToFloat(h);
}

inline void Store(DType d, uint8_t* p, size_t i, float f) {
  if (d == DType::kFloat32) {
    std::memcpy(p + 4 * i, &f, 4);
    return;
  }
  const uint16_t h = d == DType::kFloat16 ? FloatToHalf(f) : FloatToBf16(f);
  std::memcpy(p + 2 * i, &h, 2);
}

template <typename T>
void Append(Bytes* out, const T& v) {
  const size_t at = out->size();
  out->resize(at + sizeof(T));
  std::memcpy(out->data() + at, &v, sizeof(T));
}

// Reads a payload front to back; every read is checked against its end.
class Reader {
 public:
  explicit Reader(std::span<const uint8_t> in) : in_(in) {}
  template <typename T>
  bool Read(T* v) {
    if (in_.size() - at_ < sizeof(T)) return false;
    std::memcpy(v, in_.data() + at_, sizeof(T));
    at_ += sizeof(T);
    return true;
  }
  // The next n bytes (empty span and false when there are fewer).
  bool Take(size_t n, std::span<const uint8_t>* out) {
    if (in_.size() - at_ < n) return false;
    *out = in_.subspan(at_, n);
    at_ += n;
    return true;
  }
  size_t left() const { return in_.size() - at_; }

 private:
  std::span<const uint8_t> in_;
  size_t at_ = 0;
};

inline absl::Status Damaged(const char* codec, const char* what) {
  return absl::DataLossError(absl::StrCat(codec, " copy is damaged: ", what));
}

// The codec objects (one each, stateless).
const Codec& LosslessCodec();
const Codec& SparseCodec();
const Codec& Fp16Codec();
const Codec& Bf16Codec();
const Codec& Fp8Codec();
const Codec& Int8Codec();
const Codec& Int4Codec();
const Codec& LowRankCodec();

}  // namespace tensord::codec::internal
