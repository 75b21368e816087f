// The envelope every encoding carries, the codec registry, policies, error measurement, and the
// automatic choice of a codec for a tensor ("auto").
#include "daemon/codec/codec.h"

#include <xxh_x86dispatch.h>  // XXH3 with the AVX2 / AVX-512 code this CPU has

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "daemon/codec/internal.h"
#include "daemon/codec/parallel.h"
#include "daemon/codec/simd.h"

namespace tensord::codec {
namespace {

using internal::IsFloat;

// 'TDC2', codec id, dtype, reserved, decoded size, PayloadHash of the payload. Copies written
// before (on SSD, in Redis, in a restart's index) carry 'TDC1' and the XXH3 of the whole payload:
// they still decode.
constexpr uint32_t kMagicWholeHash = 0x31434454;  // 'TDC1'
constexpr uint32_t kMagic = 0x32434454;           // 'TDC2'
struct Envelope {
  uint32_t magic = kMagic;
  uint8_t codec = 0;
  uint8_t dtype = 0;
  uint16_t reserved = 0;
  uint64_t nbytes = 0;
  uint64_t hash = 0;
};
static_assert(sizeof(Envelope) == 24);

// The identity: no envelope, the bytes as they are.
class NoneCodec final : public Codec {
 public:
  CodecId id() const override { return CodecId::kNone; }
  const char* name() const override { return "none"; }
  bool lossy() const override { return false; }
  bool Accepts(const TensorRef&) const override { return true; }

 protected:
  absl::Status EncodePayload(const TensorRef&, double, Bytes*, Quality*) const override {
    return absl::OkStatus();  // not reached: Encode copies the bytes
  }
  absl::Status DecodePayload(std::span<const uint8_t>, const TensorRef&,
                             std::span<uint8_t>) const override {
    return absl::OkStatus();
  }
};

const NoneCodec kNoneCodec;

const std::vector<const Codec*>& Registry() {
  static const std::vector<const Codec*> codecs = {&kNoneCodec,
                                                   &internal::LosslessCodec(),
                                                   &internal::Fp16Codec(),
                                                   &internal::Bf16Codec(),
                                                   &internal::Fp8Codec(),
                                                   &internal::Int8Codec(),
                                                   &internal::Int4Codec(),
                                                   &internal::SparseCodec(),
                                                   &internal::LowRankCodec()};
  return codecs;
}

std::string KnownNames() {
  std::vector<std::string> names;
  for (const Codec* c : Registry()) names.push_back(c->name());
  return absl::StrJoin(names, ", ");
}

double Since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// What the choice looks at: the share of all-zero elements, and for float tensors whether all
// values are finite and their spread (max |x| over the RMS).
struct Profile {
  double zero_fraction = 0;
  bool finite = true;
  double rms = 0, amax = 0;
  double spread() const { return rms > 0 ? amax / rms : 1; }
};

bool IsZeroTail(const uint8_t* p, size_t item) {
  for (size_t b = 8; b < item; ++b) {
    if (p[b] != 0) return false;
  }
  return true;
}

// Tiles a large float tensor's profile reads: one in kSampleEvery (evenly spread). The profile
// only orders and prunes candidates (the chosen codec's error is measured on every element), so
// a sample does; reading all of a 16 MiB tensor would cost a third of its encode, and with the
// AVX-512 quantizers reading one tile in four still cost a sixth of an evict's CPU time.
constexpr size_t kSampleEvery = 16;
constexpr size_t kSampleAbove = 4 * internal::kChunkElements;  // elements

// Float tensors are read tile by tile (vector kernels), other dtypes element by element.
Profile Analyze(const TensorRef& t) {
  Profile p;
  const size_t n = internal::Elements(t), item = ItemSize(t.dtype);
  if (n == 0) return p;
  const size_t chunks = (n + internal::kChunkElements - 1) / internal::kChunkElements;
  struct Part {
    size_t zeros = 0, seen = 0;
    bool finite = true;
    double sum2 = 0, amax = 0;
  };
  std::vector<Part> parts(chunks);
  const bool fl = IsFloat(t.dtype);
  const size_t every = fl && n > kSampleAbove ? kSampleEvery : 1;
  ParallelFor(chunks, [&](size_t c) {
    Part& part = parts[c];
    const size_t lo = c * internal::kChunkElements;
    const size_t hi = std::min(n, lo + internal::kChunkElements);
    if (fl) {  // tile by tile, widened to float (a zero's bits stay all zero)
      std::array<float, simd::kTile> x;
      for (size_t at = lo; at < hi; at += every * simd::kTile) {
        const size_t len = std::min(hi - at, simd::kTile);
        simd::Widen(t.dtype, t.bytes.data() + at * item, len, x.data());
        const simd::Stats s = simd::Measure(x.data(), len);
        part.zeros += s.zeros;
        part.seen += len;
        if (!s.finite) {
          part.finite = false;
          continue;
        }
        part.sum2 += s.sum2;
        part.amax = std::max(part.amax, double(s.amax));
      }
      return;
    }
    part.seen = hi - lo;
    for (size_t i = lo; i < hi; ++i) {
      uint64_t bits = 0;  // the element's bytes (item <= 8)
      std::memcpy(&bits, t.bytes.data() + i * item, std::min<size_t>(item, 8));
      if (bits == 0 && (item <= 8 || IsZeroTail(t.bytes.data() + i * item, item))) ++part.zeros;
    }
  });
  double sum2 = 0;
  size_t zeros = 0, seen = 0;
  for (const Part& part : parts) {
    zeros += part.zeros;
    seen += part.seen;
    p.finite = p.finite && part.finite;
    sum2 += part.sum2;
    p.amax = std::max(p.amax, part.amax);
  }
  p.zero_fraction = double(zeros) / double(seen);
  p.rms = std::sqrt(sum2 / double(seen));
  return p;
}

// A lossy candidate: its nominal ratio on this dtype and the error the profile predicts (a
// uniform quantization noise model; only used to skip hopeless candidates and to order equals).
struct Candidate {
  const Codec* codec;
  double ratio;
  double predicted;
  bool costly = false;  // slower than the INT8 that usually follows it: sampled first
};

std::vector<Candidate> LossyCandidates(const Policy& policy, const TensorRef& t, const Profile& p) {
  const double item = double(ItemSize(t.dtype));
  const double spread = p.spread();
  constexpr double kSqrt12 = 3.4641016;
  std::vector<Candidate> c;
  const auto add = [&](const Codec& codec, double ratio, double predicted, bool costly = false) {
    if (policy.Allows(codec.id()) && codec.Accepts(t)) {
      c.push_back({&codec, ratio, predicted, costly});
    }
  };
  // Groups of 64 see about half the whole tensor's range. An encode about 3x an INT8 one on
  // AVX-512 (20x on the tiled kernels), and its error measured by a decode afterwards.
  add(internal::Int4Codec(), item * 8 / 4.5, 0.5 * (2 * spread / 15) / kSqrt12, true);
  add(internal::Fp8Codec(), item / (1 + 4.0 / 256), 0.025);
  add(internal::Int8Codec(), item / (1 + 4.0 / 256), 0.6 * spread / 127 / kSqrt12);
  add(internal::Fp16Codec(), 2, 3e-4);
  add(internal::Bf16Codec(), 2, 2.3e-3);
  // Low-rank only where the policy names it: its SVD costs far more than a quantizer, and KV
  // blocks and activations are rarely of low rank.
  if (policy.allowed != 0 && policy.Allows(CodecId::kLowRank) &&
      internal::LowRankCodec().Accepts(t)) {
    c.insert(c.begin(), {&internal::LowRankCodec(), 1e9, 0});
  }
  std::stable_sort(c.begin(), c.end(), [](const Candidate& a, const Candidate& b) {
    if (a.ratio > 1.2 * b.ratio || b.ratio > 1.2 * a.ratio) return a.ratio > b.ratio;
    return a.predicted < b.predicted;  // about the same ratio: the more precise first
  });
  return c;
}

}  // namespace

uint64_t PayloadHash(std::span<const uint8_t> payload) {
  const size_t segments = (payload.size() + kHashSegment - 1) / kHashSegment;
  if (segments <= 1) return XXH3_64bits(payload.data(), payload.size());
  // Little-endian u64s on every host this daemon builds for (x86-64, aarch64).
  std::vector<uint64_t> hashes(segments);
  ParallelFor(segments, [&](size_t i) {
    const size_t at = i * kHashSegment;
    hashes[i] = XXH3_64bits(payload.data() + at, std::min(kHashSegment, payload.size() - at));
  });
  return XXH3_64bits(hashes.data(), hashes.size() * sizeof(uint64_t));
}

absl::StatusOr<Bytes> Codec::Encode(const TensorRef& t, double budget) const {
  return EncodeMeasured(t, budget, nullptr);
}

absl::StatusOr<Bytes> Codec::EncodeMeasured(const TensorRef& t, double budget,
                                            Quality* quality) const {
  if (id() == CodecId::kNone) return Bytes(t.bytes.begin(), t.bytes.end());
  if (ItemSize(t.dtype) == 0 || t.bytes.size() % ItemSize(t.dtype) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(name(), ": ", t.bytes.size(),
                                                   " bytes are no whole number of ",
                                                   std::string(DTypeName(t.dtype)), " elements"));
  }
  if (!Accepts(t)) {
    return absl::FailedPreconditionError(absl::StrCat(
        name(), " does not encode ", std::string(DTypeName(t.dtype)), " tensors of this shape"));
  }
  Bytes out(sizeof(Envelope));
  const bool inline_quality = quality != nullptr && MeasuresWhileEncoding();
  if (absl::Status st = EncodePayload(t, budget, &out, inline_quality ? quality : nullptr);
      !st.ok()) {
    return st;
  }
  Envelope e;
  e.codec = static_cast<uint8_t>(id());
  e.dtype = static_cast<uint8_t>(t.dtype);
  e.nbytes = t.bytes.size();
  e.hash = PayloadHash({out.data() + sizeof(Envelope), out.size() - sizeof(Envelope)});
  std::memcpy(out.data(), &e, sizeof(e));
  if (quality != nullptr && !inline_quality) {
    *quality = Quality{};
    if (lossy()) {
      std::vector<uint8_t> back(t.bytes.size());
      if (absl::Status st = Decode(out, t, back); !st.ok()) return st;  // a codec bug
      *quality = Measure(t.dtype, t.bytes, back);
    }
  }
  return out;
}

absl::Status Codec::Decode(std::span<const uint8_t> in, const TensorRef& like,
                           std::span<uint8_t> out) const {
  if (id() == CodecId::kNone) {
    if (in.size() != out.size()) {
      return absl::DataLossError(
          absl::StrCat("raw copy is ", in.size(), " bytes, the tensor ", out.size()));
    }
    if (!in.empty() && in.data() != out.data()) std::memmove(out.data(), in.data(), in.size());
    return absl::OkStatus();
  }
  Envelope e;
  if (in.size() < sizeof(e)) return internal::Damaged(name(), "shorter than its envelope");
  std::memcpy(&e, in.data(), sizeof(e));
  if ((e.magic != kMagic && e.magic != kMagicWholeHash) || e.codec != static_cast<uint8_t>(id())) {
    return internal::Damaged(name(), "not an encoding by this codec");
  }
  if (e.dtype != static_cast<uint8_t>(like.dtype) || e.nbytes != out.size()) {
    return absl::DataLossError(absl::StrCat(name(), " copy is of ", e.nbytes, " bytes of dtype ",
                                            int(e.dtype), ", not of this tensor"));
  }
  const std::span<const uint8_t> payload = in.subspan(sizeof(e));
  const uint64_t hash =
      e.magic == kMagic ? PayloadHash(payload) : XXH3_64bits(payload.data(), payload.size());
  if (hash != e.hash) {
    return internal::Damaged(name(), "checksum mismatch");
  }
  TensorRef shape = like;
  shape.bytes = {out.data(), out.size()};
  // A copy that claims a lossy (element) codec for a tensor of integers (a crafted Redis entry)
  // would be decoded at a float's size into a buffer of another element size. Only this is
  // checked here, not Accepts(): its heuristics (lowrank's sizes) may change between versions,
  // and copies written before must still decode.
  if (lossy() && !IsFloat(like.dtype)) {
    return absl::DataLossError(absl::StrCat(name(), " copy of a ",
                                            std::string(DTypeName(like.dtype)),
                                            " tensor: it encodes float tensors only"));
  }
  return DecodePayload(payload, shape, out);
}

absl::StatusOr<const Codec*> CodecFor(CodecId id) {
  for (const Codec* c : Registry()) {
    if (c->id() == id) return c;
  }
  return absl::InvalidArgumentError(absl::StrCat("no codec has id ", static_cast<int>(id)));
}

absl::StatusOr<const Codec*> CodecNamed(absl::string_view name) {
  for (const Codec* c : Registry()) {
    if (name == c->name()) return c;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown codec '", name, "' (", KnownNames(), ")"));
}

const char* CodecName(CodecId id) {
  auto c = CodecFor(id);
  return c.ok() ? (*c)->name() : "unknown";
}

std::vector<const Codec*> AllCodecs() { return Registry(); }

absl::StatusOr<Compression> ParseCompression(absl::string_view name, bool allow_default) {
  if (name == "none") return Compression::kNone;
  if (name == "lossless") return Compression::kLossless;
  if (name == "lossy") return Compression::kLossy;
  if (allow_default && (name == "default" || name.empty())) return Compression::kDefault;
  return absl::InvalidArgumentError(absl::StrCat("compression is 'none', 'lossless' or 'lossy'",
                                                 allow_default ? " (or 'default')" : "", ", not '",
                                                 name, "'"));
}

const char* CompressionName(Compression c) {
  switch (c) {
    case Compression::kNone:
      return "none";
    case Compression::kLossless:
      return "lossless";
    case Compression::kLossy:
      return "lossy";
    case Compression::kDefault:
      return "default";
  }
  return "unknown";
}

absl::Status ValidatePolicy(const Policy& p) {
  if (p.mode != Compression::kNone && p.mode != Compression::kLossless &&
      p.mode != Compression::kLossy && p.mode != Compression::kDefault) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown compression ", int(p.mode), " (NONE, LOSSLESS or LOSSY)"));
  }
  if (p.mode == Compression::kLossy && !(p.budget > 0 && p.budget < 1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a lossy compression needs an error budget (max relative RMSE) in (0, 1), not ", p.budget));
  }
  if (p.mode != Compression::kLossy && p.mode != Compression::kDefault && p.budget != 0) {
    return absl::InvalidArgumentError("an error budget goes with LOSSY compression only");
  }
  if (p.allowed != 0 && p.mode != Compression::kLossy) {
    return absl::InvalidArgumentError("a list of allowed codecs goes with LOSSY compression only");
  }
  if ((p.allowed >> (kMaxCodecId + 1)) != 0) {
    return absl::InvalidArgumentError("the allowed codecs name an unknown codec");
  }
  return absl::OkStatus();
}

absl::StatusOr<uint32_t> CodecMask(std::span<const std::string> names) {
  uint32_t mask = 0;
  for (const std::string& n : names) {
    auto c = CodecNamed(n);
    if (!c.ok()) return c.status();
    mask |= 1u << int((*c)->id());
  }
  return mask;
}

std::vector<std::string> CodecNames(uint32_t mask) {
  std::vector<std::string> out;
  for (const Codec* c : Registry()) {
    if ((mask >> int(c->id())) & 1u) out.push_back(c->name());
  }
  return out;
}

Quality Measure(DType dtype, std::span<const uint8_t> source, std::span<const uint8_t> decoded) {
  Quality q;
  const size_t item = ItemSize(dtype);
  if (item == 0 || source.size() != decoded.size()) return {HUGE_VAL, HUGE_VAL};
  const size_t n = source.size() / item;
  if (!IsFloat(dtype)) {
    if (std::memcmp(source.data(), decoded.data(), source.size()) == 0) return q;
    return {HUGE_VAL, HUGE_VAL};  // lossy codecs take float tensors only
  }
  const size_t chunks = (n + internal::kChunkElements - 1) / internal::kChunkElements;
  struct Part {
    double err2 = 0, ref2 = 0, max = 0;
  };
  std::vector<Part> parts(chunks);
  ParallelFor(chunks, [&](size_t c) {
    Part& part = parts[c];
    const size_t lo = c * internal::kChunkElements;
    const size_t hi = std::min(n, lo + internal::kChunkElements);
    std::array<float, simd::kTile> x, y;
    for (size_t at = lo; at < hi; at += simd::kTile) {
      const size_t len = std::min(hi - at, simd::kTile);
      simd::Widen(dtype, source.data() + item * at, len, x.data());
      simd::Widen(dtype, decoded.data() + item * at, len, y.data());
      // Finite tiles (every lossy codec's case) take the vector kernel; NaN and Inf the scalar
      // rules below.
      if (std::isfinite(simd::AbsMax(x.data(), len)) &&
          std::isfinite(simd::AbsMax(y.data(), len))) {
        simd::Error e;
        simd::AddError(x.data(), y.data(), len, &e);
        part.err2 += e.err2;
        part.ref2 += e.ref2;
        part.max = std::max<double>(part.max, e.max);
        continue;
      }
      for (size_t i = 0; i < len; ++i) {
        const double xi = x[i], yi = y[i];
        if (std::isnan(xi) && std::isnan(yi)) continue;
        const double d = xi == yi ? 0.0 : std::fabs(xi - yi);  // Inf == Inf: no error
        part.err2 += d * d;
        part.ref2 += std::isfinite(xi) ? xi * xi : 0.0;
        part.max = std::max(part.max, std::isnan(d) ? HUGE_VAL : d);
      }
    }
  });
  double err2 = 0, ref2 = 0;
  for (const Part& part : parts) {
    err2 += part.err2;
    ref2 += part.ref2;
    q.max_abs_error = std::max(q.max_abs_error, part.max);
  }
  q.rel_rmse = err2 == 0 ? 0 : ref2 == 0 ? HUGE_VAL : std::sqrt(err2 / ref2);
  return q;
}

absl::StatusOr<Encoded> EncodeFor(const Policy& policy, const TensorRef& t) {
  Encoded raw;
  raw.stored_bytes = t.bytes.size();
  if (policy.mode == Compression::kNone || policy.mode == Compression::kDefault ||
      t.bytes.size() < kMinEncodeBytes || ItemSize(t.dtype) == 0 ||
      t.bytes.size() % ItemSize(t.dtype) != 0) {
    return raw;
  }
  const double pays = (1.0 - kMinSaving) * double(t.bytes.size());
  const Profile profile = Analyze(t);
  Encoded best = raw;
  // Tries `c`; keeps it when it is the smallest so far (and, lossy, within the budget).
  const auto attempt = [&](const Codec& c, double budget) -> bool {
    const auto t0 = std::chrono::steady_clock::now();
    Quality q;
    auto bytes = c.EncodeMeasured(t, budget, &q);
    Encoded::Try tr{c.id()};
    if (!bytes.ok()) {
      tr.seconds = Since(t0);
      best.tried.push_back(tr);
      return false;
    }
    tr.out_bytes = bytes->size();
    tr.rel_rmse = q.rel_rmse;
    tr.seconds = Since(t0);
    tr.over_budget = c.lossy() && !(q.rel_rmse <= budget);
    best.tried.push_back(tr);
    if (tr.over_budget) {
      best.over_budget = true;
      return false;
    }
    if (double(bytes->size()) > pays || bytes->size() >= best.stored_bytes) return false;
    std::vector<Encoded::Try> tried = std::move(best.tried);
    best = Encoded{c.id(), *std::move(bytes), 0, q, best.over_budget, std::move(tried)};
    best.stored_bytes = best.bytes.size();
    return true;
  };
  // A costly candidate is first measured on a slice from the middle of the tensor (an eighth,
  // whole groups of 64, at least kSampleElements); well over the budget there, it is skipped and
  // its try recorded as a sampled overrun. Small tensors are encoded whole.
  const auto sample_fails = [&](const Codec& c, double budget) -> bool {
    constexpr size_t kSampleElements = 16384;
    constexpr double kMargin = 1.5;  // the slice's error may be a little off the whole's
    const size_t n = internal::Elements(t), item = ItemSize(t.dtype);
    const size_t len = std::max(n / 8, kSampleElements) / 64 * 64;
    if (n < 4 * len) return false;
    const size_t at = (n - len) / 2 / 64 * 64;
    const auto t0 = std::chrono::steady_clock::now();
    const TensorRef slice{t.dtype, {}, t.bytes.subspan(at * item, len * item)};
    Quality q;
    auto bytes = c.EncodeMeasured(slice, budget, &q);
    if (!bytes.ok()) return false;
    // The slice's error against the whole tensor's energy (the profile's RMS) as well as its
    // own: a quiet middle must not make the whole look worse than it is.
    const double whole = q.rel_rmse * Analyze(slice).rms / std::max(profile.rms, 1e-300);
    if (!(q.rel_rmse > kMargin * budget && whole > kMargin * budget)) return false;
    Encoded::Try tr{c.id()};
    tr.rel_rmse = std::min(q.rel_rmse, whole);
    tr.seconds = Since(t0);
    tr.over_budget = true;
    tr.sample = true;
    best.tried.push_back(tr);
    best.over_budget = true;
    return true;
  };
  if (policy.mode == Compression::kLossy && IsFloat(t.dtype) && profile.finite) {
    bool hopeless = false;  // a candidate skipped because its predicted error is far too high
    for (const Candidate& c : LossyCandidates(policy, t, profile)) {
      if (c.predicted > 3 * policy.budget) {  // not worth an encode
        hopeless = true;
        continue;
      }
      if (c.costly && sample_fails(*c.codec, policy.budget)) continue;
      if (attempt(*c.codec, policy.budget)) {
        best.over_budget = false;  // a lossy encoding within the budget was found
        // A mostly-zero tensor may still shrink more losslessly (a ReLU activation): the
        // smaller encoding is kept.
        if (profile.zero_fraction >= 0.3) {
          if (internal::SparseCodec().Accepts(t)) attempt(internal::SparseCodec(), 0);
          attempt(internal::LosslessCodec(), 0);
        }
        return best;
      }
    }
    // No lossy codec met the budget: lossless instead. (Codecs that refused the tensor, e.g. a
    // NaN the profile's sample missed, are no budget overrun.)
    best.over_budget = best.over_budget || hopeless;
  }
  // Lossless: sparse for mostly-zero tensors, byte grouping + zstd; the smaller one.
  if (profile.zero_fraction >= 0.3 && internal::SparseCodec().Accepts(t)) {
    attempt(internal::SparseCodec(), 0);
  }
  attempt(internal::LosslessCodec(), 0);
  return best;
}

}  // namespace tensord::codec
