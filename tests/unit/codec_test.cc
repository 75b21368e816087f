// Codecs in isolation: every codec round-trips every byte, a damaged copy is DATA_LOSS (never
// wrong bytes), and the lossless policy keeps raw bytes where compression does not pay.
#include "daemon/codec/codec.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

namespace tensord::codec {
namespace {

// float32 activations of a small range: zstd finds the repeated exponent bytes.
std::vector<uint8_t> Compressible(size_t n_floats) {
  std::vector<float> v(n_floats);
  for (size_t i = 0; i < n_floats; ++i) v[i] = std::round(std::sin(0.001 * i) * 64) / 64;
  const auto* p = reinterpret_cast<const uint8_t*>(v.data());
  return std::vector<uint8_t>(p, p + v.size() * sizeof(float));
}

std::vector<uint8_t> Random(size_t n) {
  std::mt19937_64 rng(7);
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

TEST(Codec, EveryCodecRoundTripsEveryByte) {
  for (const char* name : {"none", "zstd"}) {
    auto codec = CodecNamed(name);
    ASSERT_TRUE(codec.ok()) << name;
    for (const std::vector<uint8_t>& in : {Compressible(1 << 18), Random(12345), Random(1)}) {
      auto enc = (*codec)->Encode(in);
      ASSERT_TRUE(enc.ok()) << enc.status();
      std::vector<uint8_t> out(in.size(), 0xEE);
      ASSERT_TRUE((*codec)->Decode(*enc, out).ok()) << name;
      EXPECT_EQ(out, in) << name;
    }
  }
}

TEST(Codec, LosslessCompressesWhereItPaysAndKeepsRawBytesElsewhere) {
  const std::vector<uint8_t> floats = Compressible(1 << 18);  // 1 MiB
  auto e = EncodeFor(Compression::kLossless, floats);
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->codec, CodecId::kZstd);
  EXPECT_LT(e->stored_bytes, floats.size() / 2) << "smooth float32 data compresses";
  EXPECT_EQ(e->stored_bytes, e->bytes.size());

  const std::vector<uint8_t> noise = Random(1 << 20);
  auto raw = EncodeFor(Compression::kLossless, noise);
  ASSERT_TRUE(raw.ok());
  EXPECT_EQ(raw->codec, CodecId::kNone) << "random bytes do not compress: stored raw";
  EXPECT_TRUE(raw->bytes.empty()) << "raw: the caller writes its source, no copy";
  EXPECT_EQ(raw->stored_bytes, noise.size());

  auto none = EncodeFor(Compression::kNone, floats);
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none->codec, CodecId::kNone) << "policy none never encodes";
}

TEST(Codec, ADamagedCopyIsDataLossNeverWrongBytes) {
  const std::vector<uint8_t> in = Compressible(1 << 16);
  const Codec* zstd = *CodecFor(CodecId::kZstd);
  const std::vector<uint8_t> enc = *zstd->Encode(in);
  std::vector<uint8_t> out(in.size());

  std::vector<uint8_t> truncated(enc.begin(), enc.begin() + enc.size() / 2);
  EXPECT_EQ(zstd->Decode(truncated, out).code(), absl::StatusCode::kDataLoss);
  std::vector<uint8_t> garbage = Random(enc.size());
  EXPECT_EQ(zstd->Decode(garbage, out).code(), absl::StatusCode::kDataLoss);
  std::vector<uint8_t> wrong_size(in.size() + 1);
  EXPECT_EQ(zstd->Decode(enc, wrong_size).code(), absl::StatusCode::kDataLoss)
      << "a frame of another tensor's size";
  // The frame's content checksum catches a flipped byte anywhere.
  for (size_t at : {enc.size() / 3, enc.size() / 2, enc.size() - 2}) {
    std::vector<uint8_t> flipped = enc;
    flipped[at] ^= 0x5A;
    EXPECT_EQ(zstd->Decode(flipped, out).code(), absl::StatusCode::kDataLoss) << "byte " << at;
  }
  EXPECT_EQ((*CodecFor(CodecId::kNone))->Decode(truncated, out).code(),
            absl::StatusCode::kDataLoss);
}

TEST(Codec, NamesAndIds) {
  EXPECT_EQ(*ParseCompression("lossless"), Compression::kLossless);
  EXPECT_EQ(*ParseCompression("none"), Compression::kNone);
  EXPECT_EQ(*ParseCompression(""), Compression::kNone) << "unset is none";
  EXPECT_EQ(ParseCompression("fp8").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CodecFor(static_cast<CodecId>(200)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CodecNamed("lz4").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_STREQ(CompressionName(Compression::kLossless), "lossless");
}

}  // namespace
}  // namespace tensord::codec
