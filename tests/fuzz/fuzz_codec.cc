// libFuzzer harness: the codecs (daemon/codec). Their decoders read swap copies from disk and
// encodings other daemons wrote to the shared Redis, where anyone who can write may put any
// bytes under a valid checksum; their encoders take whatever bytes a client stored. The input's
// first bytes choose a codec, a dtype, a shape and a kernel build; the rest is used twice:
//  - as an encoding's payload, wrapped in a valid envelope (the 24-byte header of codec.cc,
//    'TDC2' with its segmented checksum or the older 'TDC1' one) and decoded into a tensor of the
//    chosen shape: a decode either succeeds or returns DATA_LOSS, never reads or writes out of
//    bounds (ASan);
//  - as a tensor's bytes, encoded by every codec that accepts it: each encoding decodes again,
//    lossless ones to the very bytes; and the element codecs' encodings of finite tensors (4-bit
//    included) are the same bytes on the portable kernels and on the best ones this CPU runs
//    (AVX-512 here).
#include <xxhash.h>

#include <cstdlib>
#include <cstring>
#include <vector>

#include "daemon/codec/codec.h"
#include "daemon/codec/simd.h"

namespace tensord {
namespace {

void Require(bool ok) {
  if (!ok) std::abort();
}

constexpr DType kDtypes[] = {DType::kFloat32, DType::kFloat16, DType::kBFloat16, DType::kInt32,
                             DType::kUInt8};
constexpr size_t kMaxElements = 16384;  // keeps an input fast (zstd, SVD)

codec::Bytes Envelope(codec::CodecId id, DType d, uint64_t nbytes, const uint8_t* payload,
                      size_t size, bool old) {
  codec::Bytes out(24 + size);
  const uint32_t magic = old ? 0x31434454 : 0x32434454;  // 'TDC1', 'TDC2'
  const uint64_t hash = old ? XXH3_64bits(payload, size) : codec::PayloadHash({payload, size});
  std::memcpy(out.data(), &magic, 4);
  out[4] = static_cast<uint8_t>(id);
  out[5] = static_cast<uint8_t>(d);
  out[6] = out[7] = 0;
  std::memcpy(out.data() + 8, &nbytes, 8);
  std::memcpy(out.data() + 16, &hash, 8);
  if (size > 0) std::memcpy(out.data() + 24, payload, size);
  return out;
}

bool AllFinite(DType d, const uint8_t* p, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    uint32_t bits = 0;
    if (d == DType::kFloat32) {
      std::memcpy(&bits, p + 4 * i, 4);
      if ((bits & 0x7f800000u) == 0x7f800000u) return false;
    } else {
      uint16_t h;
      std::memcpy(&h, p + 2 * i, 2);
      if (d == DType::kFloat16 && (h & 0x7c00) == 0x7c00) return false;
      if (d == DType::kBFloat16 && (h & 0x7f80) == 0x7f80) return false;
    }
  }
  return true;
}

}  // namespace
}  // namespace tensord

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace tensord;
  if (size < 4) return 0;
  const std::vector<const codec::Codec*> codecs = codec::AllCodecs();
  const codec::Codec& chosen = *codecs[data[0] % codecs.size()];
  const DType dtype = kDtypes[data[1] % std::size(kDtypes)];
  const size_t item = ItemSize(dtype);
  const size_t cols = 1 + data[2] % 200;  // a 2-D shape when it divides the elements
  const bool best = data[3] & 1;          // which kernels decode
  const bool old = data[3] & 2;           // the envelope before segmented checksums
  const uint8_t* body = data + 4;
  const size_t body_size = size - 4;
  struct RestoreIsa {
    ~RestoreIsa() { codec::simd::ForceIsa(codec::simd::BestIsa()); }
  } restore;
  codec::simd::ForceIsa(best ? codec::simd::BestIsa() : codec::simd::Isa::kPortable);

  // The body as a payload, decoded into a tensor of its own element count (or of the count the
  // body's first two bytes name).
  {
    size_t n = body_size / item;
    if (body_size >= 2) n = std::min<size_t>(kMaxElements, (size_t(body[0]) << 8 | body[1]) + 1);
    std::vector<int64_t> shape;
    if (n % cols == 0 && cols > 1) shape = {int64_t(n / cols), int64_t(cols)};
    std::vector<uint8_t> out(n * item, 0xa5);
    const codec::TensorRef like{dtype, shape, {out.data(), out.size()}};
    const codec::Bytes enc = Envelope(chosen.id(), dtype, out.size(), body, body_size, old);
    const absl::Status st = chosen.Decode(enc, like, out);
    Require(st.ok() || st.code() == absl::StatusCode::kDataLoss);
  }

  // The body as a tensor's bytes, through every codec that takes it.
  const size_t n = std::min(kMaxElements, body_size / item);
  if (n == 0) return 0;
  std::vector<int64_t> shape;
  if (n % cols == 0 && cols > 1) shape = {int64_t(n / cols), int64_t(cols)};
  const codec::TensorRef t{dtype, shape, {body, n * item}};
  const bool finite = dtype == DType::kInt32 || dtype == DType::kUInt8 || AllFinite(dtype, body, n);
  for (const codec::Codec* c : codecs) {
    if (!c->Accepts(t) || (c->id() == codec::CodecId::kLowRank && n > 4096)) continue;
    codec::simd::ForceIsa(codec::simd::Isa::kPortable);
    codec::Quality q;
    absl::StatusOr<codec::Bytes> enc = c->EncodeMeasured(t, 1, &q);
    if (!enc.ok()) {
      // A codec may decline a tensor (NaN/Inf or values beyond its range for lossy ones, too
      // few zeros for sparse), and say so with these codes only.
      Require(enc.status().code() == absl::StatusCode::kFailedPrecondition ||
              enc.status().code() == absl::StatusCode::kInvalidArgument);
      continue;
    }
    std::vector<uint8_t> back(n * item);
    Require(c->Decode(*enc, t, back).ok());
    if (!c->lossy()) Require(std::memcmp(back.data(), body, back.size()) == 0);
    const bool element_codec = c->id() == codec::CodecId::kInt8 ||
                               c->id() == codec::CodecId::kFp8E4m3 ||
                               c->id() == codec::CodecId::kInt4G64 ||
                               c->id() == codec::CodecId::kFp16 || c->id() == codec::CodecId::kBf16;
    if (element_codec && finite) {
      codec::simd::ForceIsa(codec::simd::BestIsa());
      absl::StatusOr<codec::Bytes> fast = c->Encode(t, 1);
      Require(fast.ok() && *fast == *enc);
      std::vector<uint8_t> fast_back(n * item);
      Require(c->Decode(*fast, t, fast_back).ok() && fast_back == back);
    }
  }
  return 0;
}
