// The identity codec and zstd, and the choice between them for a compression policy.
#include "daemon/codec/codec.h"

#include <zstd.h>

#include <cstring>
#include <memory>

#include "absl/strings/str_cat.h"

namespace tensord::codec {
namespace {

// Level 1: cold tensors are written on the migrator's time; speed matters more than the last
// few percent of ratio.
constexpr int kZstdLevel = 1;
// Below this saving the raw bytes are kept: decoding would cost time for nothing.
constexpr double kMinSaving = 0.03;

class NoneCodec final : public Codec {
 public:
  CodecId id() const override { return CodecId::kNone; }
  const char* name() const override { return "none"; }
  absl::StatusOr<std::vector<uint8_t>> Encode(std::span<const uint8_t> in) const override {
    return std::vector<uint8_t>(in.begin(), in.end());
  }
  absl::Status Decode(std::span<const uint8_t> in, std::span<uint8_t> out) const override {
    if (in.size() != out.size()) {
      return absl::DataLossError(
          absl::StrCat("raw copy is ", in.size(), " bytes, the tensor ", out.size()));
    }
    if (!in.empty() && in.data() != out.data()) std::memmove(out.data(), in.data(), in.size());
    return absl::OkStatus();
  }
};

class ZstdCodec final : public Codec {
 public:
  CodecId id() const override { return CodecId::kZstd; }
  const char* name() const override { return "zstd"; }
  absl::StatusOr<std::vector<uint8_t>> Encode(std::span<const uint8_t> in) const override {
    std::vector<uint8_t> out(ZSTD_compressBound(in.size()));
    // The frame carries its content size and a checksum of the content, so a decode verifies.
    std::unique_ptr<ZSTD_CCtx, decltype(&ZSTD_freeCCtx)> ctx(ZSTD_createCCtx(), &ZSTD_freeCCtx);
    if (ctx == nullptr) return absl::ResourceExhaustedError("zstd: no memory for a context");
    ZSTD_CCtx_setParameter(ctx.get(), ZSTD_c_compressionLevel, kZstdLevel);
    ZSTD_CCtx_setParameter(ctx.get(), ZSTD_c_checksumFlag, 1);
    ZSTD_CCtx_setParameter(ctx.get(), ZSTD_c_contentSizeFlag, 1);
    const size_t n = ZSTD_compress2(ctx.get(), out.data(), out.size(), in.data(), in.size());
    if (ZSTD_isError(n)) {
      return absl::InternalError(absl::StrCat("zstd compression: ", ZSTD_getErrorName(n)));
    }
    out.resize(n);
    return out;
  }
  absl::Status Decode(std::span<const uint8_t> in, std::span<uint8_t> out) const override {
    // The frame records its content size: it must be the tensor's, before anything is written.
    const unsigned long long size = ZSTD_getFrameContentSize(in.data(), in.size());
    if (size == ZSTD_CONTENTSIZE_ERROR || size == ZSTD_CONTENTSIZE_UNKNOWN) {
      return absl::DataLossError("zstd copy is not a complete zstd frame");
    }
    if (size != out.size()) {
      return absl::DataLossError(
          absl::StrCat("zstd copy decodes to ", size, " bytes, the tensor has ", out.size()));
    }
    const size_t n = ZSTD_decompress(out.data(), out.size(), in.data(), in.size());
    if (ZSTD_isError(n) || n != out.size()) {
      return absl::DataLossError(absl::StrCat("zstd copy does not decode: ",
                                              ZSTD_isError(n) ? ZSTD_getErrorName(n) : "short"));
    }
    return absl::OkStatus();
  }
};

const NoneCodec kNoneCodec;
const ZstdCodec kZstdCodec;
const Codec* const kCodecs[] = {&kNoneCodec, &kZstdCodec};

}  // namespace

absl::StatusOr<const Codec*> CodecFor(CodecId id) {
  for (const Codec* c : kCodecs) {
    if (c->id() == id) return c;
  }
  return absl::InvalidArgumentError(absl::StrCat("no codec has id ", static_cast<int>(id)));
}

absl::StatusOr<const Codec*> CodecNamed(absl::string_view name) {
  for (const Codec* c : kCodecs) {
    if (name == c->name()) return c;
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown codec '", name, "' (none, zstd)"));
}

absl::StatusOr<Compression> ParseCompression(absl::string_view name) {
  if (name == "none" || name.empty()) return Compression::kNone;
  if (name == "lossless") return Compression::kLossless;
  return absl::InvalidArgumentError("compression is 'none' or 'lossless'");
}

const char* CompressionName(Compression c) {
  return c == Compression::kLossless ? "lossless" : "none";
}

absl::StatusOr<Encoded> EncodeFor(Compression policy, std::span<const uint8_t> in) {
  Encoded raw{CodecId::kNone, {}, in.size()};
  if (policy == Compression::kNone || in.empty()) return raw;
  auto bytes = kZstdCodec.Encode(in);
  if (!bytes.ok()) return bytes.status();
  if (static_cast<double>(bytes->size()) > (1.0 - kMinSaving) * static_cast<double>(in.size())) {
    return raw;  // does not pay
  }
  Encoded e{CodecId::kZstd, *std::move(bytes), 0};
  e.stored_bytes = e.bytes.size();
  return e;
}

}  // namespace tensord::codec
