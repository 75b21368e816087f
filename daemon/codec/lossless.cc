// The lossless codecs: byte grouping + zstd per chunk, and the sparse bitmap codec.
#include <emmintrin.h>
#include <zstd.h>

#include <algorithm>
#include <memory>

#include "daemon/codec/internal.h"
#include "daemon/codec/parallel.h"

namespace tensord::codec::internal {
namespace {

// Source bytes per chunk: large enough for zstd to find the exponent bytes' repetition, small
// enough that a 64 MiB tensor keeps every core busy.
constexpr uint32_t kChunkBytes = 256 << 10;
// A chunk is stored raw (flag in its size word) when zstd saves less than this share.
constexpr double kChunkMinSaving = 0.05;
constexpr uint32_t kRawChunk = 0x80000000u;
// Level 1: cold tensors are written on the migrator's time; speed matters more than the last
// few percent of ratio.
constexpr int kZstdLevel = 1;

// SSE2 (every x86-64 CPU) splits 2-byte elements into their low and high bytes, 16 elements
// at a time; returns how many elements it did.
size_t SplitPairs(const uint8_t* in, size_t count, uint8_t* lo, uint8_t* hi) {
  const __m128i mask = _mm_set1_epi16(0x00ff);
  size_t i = 0;
  for (; i + 16 <= count; i += 16) {
    const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(in + 2 * i));
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(in + 2 * i + 16));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(lo + i),
                     _mm_packus_epi16(_mm_and_si128(a, mask), _mm_and_si128(b, mask)));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(hi + i),
                     _mm_packus_epi16(_mm_srli_epi16(a, 8), _mm_srli_epi16(b, 8)));
  }
  return i;
}

// The inverse: interleaves lo[i] and hi[i] into out[2i], out[2i+1].
size_t JoinPairs(const uint8_t* lo, const uint8_t* hi, size_t count, uint8_t* out) {
  size_t i = 0;
  for (; i + 16 <= count; i += 16) {
    const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(lo + i));
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(hi + i));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 2 * i), _mm_unpacklo_epi8(a, b));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 2 * i + 16), _mm_unpackhi_epi8(a, b));
  }
  return i;
}

// Element i's byte b goes to plane b: the exponent bytes of a float tensor end up together.
void Group(const uint8_t* in, size_t n, size_t item, uint8_t* out) {
  const size_t count = n / item;
  size_t done = 0;
  if (item == 2) {
    done = SplitPairs(in, count, out, out + count);
  } else if (item == 4) {
    // Two rounds of pairs: bytes (0,2) and (1,3) first, then each of those split again.
    std::vector<uint8_t> even(2 * count), odd(2 * count);
    const size_t pairs = SplitPairs(in, 2 * count, even.data(), odd.data()) / 2;
    done = std::min(SplitPairs(even.data(), pairs, out, out + 2 * count),
                    SplitPairs(odd.data(), pairs, out + count, out + 3 * count));
  }
  for (size_t i = done; i < count; ++i) {
    for (size_t b = 0; b < item; ++b) out[b * count + i] = in[i * item + b];
  }
}

void Ungroup(const uint8_t* in, size_t n, size_t item, uint8_t* out) {
  const size_t count = n / item;
  size_t done = 0;
  if (item == 2) {
    done = JoinPairs(in, in + count, count, out);
  } else if (item == 4) {
    std::vector<uint8_t> even(2 * count), odd(2 * count);
    const size_t a = JoinPairs(in, in + 2 * count, count, even.data());
    const size_t b = JoinPairs(in + count, in + 3 * count, count, odd.data());
    done = std::min(a, b);
    done = JoinPairs(even.data(), odd.data(), 2 * done, out) / 2;
  }
  for (size_t i = done; i < count; ++i) {
    for (size_t b = 0; b < item; ++b) out[i * item + b] = in[b * count + i];
  }
}

ZSTD_CCtx* ThreadCCtx() {
  thread_local std::unique_ptr<ZSTD_CCtx, decltype(&ZSTD_freeCCtx)> ctx(ZSTD_createCCtx(),
                                                                        &ZSTD_freeCCtx);
  return ctx.get();
}

ZSTD_DCtx* ThreadDCtx() {
  thread_local std::unique_ptr<ZSTD_DCtx, decltype(&ZSTD_freeDCtx)> ctx(ZSTD_createDCtx(),
                                                                        &ZSTD_freeDCtx);
  return ctx.get();
}

// Payload: u32 chunk bytes, u32 chunks, u32 size (| kRawChunk) per chunk, then the chunks.
class Lossless final : public Codec {
 public:
  CodecId id() const override { return CodecId::kLossless; }
  const char* name() const override { return "lossless"; }
  bool lossy() const override { return false; }
  bool Accepts(const TensorRef&) const override { return true; }

 protected:
  absl::Status EncodePayload(const TensorRef& t, double, Bytes* out, Quality*) const override {
    const size_t item = ItemSize(t.dtype);
    const uint32_t chunk = kChunkBytes / uint32_t(item) * uint32_t(item);
    const size_t n = t.bytes.size();
    const size_t chunks = (n + chunk - 1) / chunk;
    std::vector<std::vector<uint8_t>> parts(chunks);
    std::vector<uint32_t> sizes(chunks);
    std::vector<absl::Status> errors(chunks);
    ParallelFor(chunks, [&](size_t c) {
      const uint8_t* src = t.bytes.data() + c * chunk;
      const size_t len = std::min<size_t>(chunk, n - c * chunk);
      std::vector<uint8_t> grouped;
      const uint8_t* plain = src;
      if (item > 1) {
        grouped.resize(len);
        Group(src, len, item, grouped.data());
        plain = grouped.data();
      }
      std::vector<uint8_t>& part = parts[c];
      part.resize(ZSTD_compressBound(len));
      const size_t z =
          ZSTD_compressCCtx(ThreadCCtx(), part.data(), part.size(), plain, len, kZstdLevel);
      if (ZSTD_isError(z)) {
        errors[c] = absl::InternalError(absl::StrCat("zstd: ", ZSTD_getErrorName(z)));
        return;
      }
      if (double(z) > (1.0 - kChunkMinSaving) * double(len)) {  // does not pay: raw
        part.assign(src, src + len);
        sizes[c] = uint32_t(len) | kRawChunk;
      } else {
        part.resize(z);
        sizes[c] = uint32_t(z);
      }
    });
    for (const absl::Status& st : errors) {
      if (!st.ok()) return st;
    }
    Append(out, chunk);
    Append(out, uint32_t(chunks));
    size_t total = 0;
    for (size_t c = 0; c < chunks; ++c) {
      Append(out, sizes[c]);
      total += parts[c].size();
    }
    out->reserve(out->size() + total);
    for (const auto& part : parts) out->insert(out->end(), part.begin(), part.end());
    return absl::OkStatus();
  }

  absl::Status DecodePayload(std::span<const uint8_t> payload, const TensorRef& like,
                             std::span<uint8_t> out) const override {
    Reader r(payload);
    uint32_t chunk = 0, chunks = 0;
    const size_t item = ItemSize(like.dtype);
    if (!r.Read(&chunk) || !r.Read(&chunks) || chunk == 0 || chunk % item != 0 ||
        chunks != (out.size() + chunk - 1) / chunk || r.left() / 4 < chunks) {
      return Damaged(name(), "bad chunk table");
    }
    std::vector<uint32_t> sizes(chunks);
    std::vector<std::span<const uint8_t>> parts(chunks);
    for (uint32_t& s : sizes) r.Read(&s);
    for (size_t c = 0; c < chunks; ++c) {
      if (!r.Take(sizes[c] & ~kRawChunk, &parts[c])) return Damaged(name(), "truncated");
    }
    if (r.left() != 0) return Damaged(name(), "trailing bytes");
    std::vector<absl::Status> errors(chunks);
    ParallelFor(chunks, [&](size_t c) {
      uint8_t* dst = out.data() + c * chunk;
      const size_t len = std::min<size_t>(chunk, out.size() - c * size_t(chunk));
      if (sizes[c] & kRawChunk) {
        if (parts[c].size() != len) {
          errors[c] = Damaged(name(), "raw chunk of the wrong size");
        } else {
          std::memcpy(dst, parts[c].data(), len);
        }
        return;
      }
      std::vector<uint8_t> grouped(item > 1 ? len : 0);
      uint8_t* into = item > 1 ? grouped.data() : dst;
      const size_t z =
          ZSTD_decompressDCtx(ThreadDCtx(), into, len, parts[c].data(), parts[c].size());
      if (ZSTD_isError(z) || z != len) {
        errors[c] = Damaged(name(), "a chunk does not decode");
        return;
      }
      if (item > 1) Ungroup(into, len, item, dst);
    });
    for (const absl::Status& st : errors) {
      if (!st.ok()) return st;
    }
    return absl::OkStatus();
  }
};

// Payload: u64 non-zero elements, a bitmap (bit i: element i is not all-zero bytes), then the
// non-zero elements in order. Lossless: -0.0 and NaN payloads are non-zero bytes.
class Sparse final : public Codec {
 public:
  CodecId id() const override { return CodecId::kSparse; }
  const char* name() const override { return "sparse"; }
  bool lossy() const override { return false; }
  bool Accepts(const TensorRef& t) const override {
    const size_t item = ItemSize(t.dtype);
    return item == 1 || item == 2 || item == 4 || item == 8;
  }

 protected:
  static bool Zero(const uint8_t* p, size_t item) {
    static constexpr uint8_t kZeros[8] = {};
    return std::memcmp(p, kZeros, item) == 0;
  }

  absl::Status EncodePayload(const TensorRef& t, double, Bytes* out, Quality*) const override {
    const size_t item = ItemSize(t.dtype), n = Elements(t);
    const size_t chunks = (n + kChunkElements - 1) / kChunkElements;
    std::vector<size_t> nonzero(chunks + 1, 0);
    ParallelFor(chunks, [&](size_t c) {
      const size_t lo = c * kChunkElements, hi = std::min(n, lo + kChunkElements);
      for (size_t i = lo; i < hi; ++i) nonzero[c + 1] += !Zero(t.bytes.data() + i * item, item);
    });
    for (size_t c = 0; c < chunks; ++c) nonzero[c + 1] += nonzero[c];
    const size_t bitmap = (n + 7) / 8, values = nonzero[chunks] * item;
    if (double(bitmap + values) > (1.0 - kMinSaving) * double(t.bytes.size())) {
      return absl::FailedPreconditionError("sparse: too few zeros to pay");
    }
    Append(out, uint64_t(nonzero[chunks]));
    const size_t base = out->size();
    out->resize(base + bitmap + values, 0);
    uint8_t* bits = out->data() + base;
    uint8_t* vals = bits + bitmap;
    ParallelFor(chunks, [&](size_t c) {  // chunks are multiples of 8 elements: no shared byte
      const size_t lo = c * kChunkElements, hi = std::min(n, lo + kChunkElements);
      uint8_t* v = vals + nonzero[c] * item;
      for (size_t i = lo; i < hi; ++i) {
        const uint8_t* e = t.bytes.data() + i * item;
        if (Zero(e, item)) continue;
        bits[i / 8] |= uint8_t(1u << (i % 8));
        std::memcpy(v, e, item);
        v += item;
      }
    });
    return absl::OkStatus();
  }

  absl::Status DecodePayload(std::span<const uint8_t> payload, const TensorRef& like,
                             std::span<uint8_t> out) const override {
    const size_t item = ItemSize(like.dtype), n = out.size() / item;
    Reader r(payload);
    uint64_t count = 0;
    std::span<const uint8_t> bits, vals;
    if (!r.Read(&count) || count > n || !r.Take((n + 7) / 8, &bits) ||
        !r.Take(count * item, &vals) || r.left() != 0) {
      return Damaged(name(), "sizes do not match");
    }
    const size_t chunks = (n + kChunkElements - 1) / kChunkElements;
    std::vector<size_t> at(chunks + 1, 0);
    for (size_t c = 0; c < chunks; ++c) {  // popcount per chunk: where its values start
      const size_t lo = c * kChunkElements / 8, hi = std::min(bits.size(), lo + kChunkElements / 8);
      size_t ones = 0;
      for (size_t b = lo; b < hi; ++b) ones += std::popcount(bits[b]);
      at[c + 1] = at[c] + ones;
    }
    if (at[chunks] != count) return Damaged(name(), "bitmap and values disagree");
    ParallelFor(chunks, [&](size_t c) {
      const size_t lo = c * kChunkElements, hi = std::min(n, lo + kChunkElements);
      const uint8_t* v = vals.data() + at[c] * item;
      for (size_t i = lo; i < hi; ++i) {
        uint8_t* e = out.data() + i * item;
        if (bits[i / 8] >> (i % 8) & 1) {
          std::memcpy(e, v, item);
          v += item;
        } else {
          std::memset(e, 0, item);
        }
      }
    });
    return absl::OkStatus();
  }
};

}  // namespace

const Codec& LosslessCodec() {
  static const Lossless c;
  return c;
}

const Codec& SparseCodec() {
  static const Sparse c;
  return c;
}

}  // namespace tensord::codec::internal
