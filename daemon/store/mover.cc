// The mover: batched transfers through each tier's interface, with the codec stage below host.
#include "daemon/store/mover.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "daemon/codec/parallel.h"

namespace tensord::store {
namespace {

using tiers::TierId;

// Page-aligned staging memory from the codec's page cache, so that O_DIRECT transfers need no
// bounce buffer and repeated swap-ins fault no fresh pages in.
struct PagesDeleter {
  size_t bytes = 0;
  void operator()(uint8_t* p) const { codec::GivePages(p, bytes); }
};
using Staging = std::unique_ptr<uint8_t, PagesDeleter>;
Staging Allocate(uint64_t bytes) {
  return Staging(static_cast<uint8_t*>(codec::TakePages(bytes)), PagesDeleter{bytes});
}

}  // namespace

Mover::Mover(std::array<tiers::Tier*, tiers::kTierCount> tiers, int threads)
    : tiers_(tiers), executor_(threads) {}

Mover::~Mover() = default;  // the queues run what is left, then join

void Mover::WaitIdle() {
  executor_.WaitIdle();
  scrubber_.WaitIdle();
}

CodecCounters Mover::codec_counters() const {
  absl::MutexLock lock(&stats_mu_);
  CodecCounters out = stats_;
  for (const CodecStat& c : per_codec_) {
    if (c.encodes + c.decodes + c.tried > 0) out.codecs.push_back(c);
  }
  return out;
}

void Mover::CountEncode(const codec::Encoded& e, uint64_t nbytes) {
  absl::MutexLock lock(&stats_mu_);
  ++stats_.encodes;
  stats_.encode_in_bytes += nbytes;
  stats_.encode_out_bytes += e.stored_bytes;
  if (e.codec == codec::CodecId::kNone) ++stats_.stored_raw;
  if (e.over_budget) ++stats_.over_budget;
  for (const codec::Encoded::Try& t : e.tried) {
    CodecStat& c = per_codec_[int(t.codec)];
    c.codec = t.codec;
    ++c.tried;
    c.encode_seconds += t.seconds;
    if (t.over_budget) ++c.over_budget;
  }
  if (e.codec == codec::CodecId::kNone) return;
  CodecStat& c = per_codec_[int(e.codec)];
  c.codec = e.codec;
  ++c.encodes;
  c.encode_in_bytes += nbytes;
  c.encode_out_bytes += e.stored_bytes;
  c.max_rel_rmse = std::max(c.max_rel_rmse, e.quality.rel_rmse);
}

void Mover::CountDecode(codec::CodecId id, uint64_t in, uint64_t out, double seconds, bool ok) {
  absl::MutexLock lock(&stats_mu_);
  ++stats_.decodes;
  stats_.decode_in_bytes += in;
  CodecStat& c = per_codec_[int(id) <= codec::kMaxCodecId ? int(id) : 0];
  c.codec = id;
  ++c.decodes;
  c.decode_in_bytes += in;
  c.decode_seconds += seconds;
  if (ok) {
    stats_.decode_out_bytes += out;
    c.decode_out_bytes += out;
  } else {
    ++stats_.decode_failures;
    ++c.decode_failures;
  }
}

void Mover::Run(TierId from, TierId to, std::span<MoveItem> items) {
  if (items.empty()) return;
  if (to == TierId::kSsd) {
    Down(to, items);
  } else if (from == TierId::kSsd) {
    Up(from, items);
  } else {
    Between(from, to, items);
  }
}

// Host <-> GPU: no codec; the copy reads or writes the host range in place.
void Mover::Between(TierId from, TierId to, std::span<MoveItem> items) {
  tiers::Tier* host = tier(TierId::kHost);
  std::vector<tiers::Transfer> transfers;
  std::vector<tiers::Range> ranges;
  ranges.reserve(items.size());
  // The host side is the source (a copy up) or the destination (a copy down).
  const bool up = from == TierId::kHost;
  for (MoveItem& m : items) {
    ranges.push_back(up ? m.dst : m.src);
    ranges.back().length = m.nbytes;
    transfers.push_back({&ranges.back(), host->Address(up ? m.src : m.dst)});
  }
  tiers::Tier* other = tier(up ? to : from);
  const std::vector<absl::Status> st = up ? other->WriteAll(transfers) : other->ReadAll(transfers);
  for (size_t i = 0; i < items.size(); ++i) {
    items[i].status = st[i];
    items[i].dst.length = items[i].nbytes;
    items[i].dst_codec = codec::CodecId::kNone;
  }
}

// Host -> a tier below: encode, reserve the encoded size, write.
void Mover::Down(TierId to, std::span<MoveItem> items) {
  tiers::Tier* host = tier(TierId::kHost);
  tiers::Tier* dst = tier(to);
  std::vector<codec::Encoded> encoded(items.size());
  std::vector<tiers::Transfer> transfers;
  std::vector<size_t> index;
  std::vector<bool> reserved_here(items.size(), false);
  // The codec stage, on the codec pool (one tensor per task; a large one's chunks spread too).
  codec::ParallelFor(items.size(), [&](size_t i) {
    MoveItem& m = items[i];
    encoded[i].stored_bytes = m.nbytes;  // raw unless a codec pays
    if (m.compression.mode == codec::Compression::kNone) return;
    const codec::TensorRef t{m.dtype, m.shape, {host->Address(m.src), m.nbytes}};
    auto e = codec::EncodeFor(m.compression, t);
    // A codec that fails stores the raw bytes: still lossless, only larger.
    if (e.ok()) encoded[i] = *std::move(e);
    CountEncode(encoded[i], m.nbytes);
  });
  for (size_t i = 0; i < items.size(); ++i) {
    MoveItem& m = items[i];
    uint8_t* src = host->Address(m.src);
    if (!m.dst_reserved) {
      tiers::Placement where;  // an encoded copy may stay in the SSD tier's RAM front
      if (encoded[i].codec != codec::CodecId::kNone) where.decoded_bytes = m.nbytes;
      auto r = dst->Reserve(encoded[i].stored_bytes, where);
      if (!r.ok()) {
        m.status = r.status();
        continue;
      }
      m.dst = *r;
      m.dst_reserved = true;
      reserved_here[i] = true;
    }
    index.push_back(i);
    m.dst.length = encoded[i].stored_bytes;
    m.dst_codec = encoded[i].codec;
    m.dst_rel_rmse = static_cast<float>(encoded[i].quality.rel_rmse);
    uint8_t* bytes = encoded[i].codec == codec::CodecId::kNone ? src : encoded[i].bytes.data();
    transfers.push_back({&m.dst, bytes});
  }
  const std::vector<absl::Status> st = dst->WriteAll(transfers);
  for (size_t j = 0; j < index.size(); ++j) {
    MoveItem& m = items[index[j]];
    m.status = st[j];
    if (!m.status.ok() && reserved_here[index[j]]) {
      dst->Free(m.dst);
      m.dst_reserved = false;
    }
  }
}

// A tier below -> host: read (into the host range itself when the copy is raw, else into
// staging memory), then decode and verify.
void Mover::Up(TierId from, std::span<MoveItem> items) {
  tiers::Tier* host = tier(TierId::kHost);
  tiers::Tier* src = tier(from);
  std::vector<Staging> staging(items.size());
  std::vector<tiers::Transfer> transfers;
  for (size_t i = 0; i < items.size(); ++i) {
    MoveItem& m = items[i];
    uint8_t* into = host->Address(m.dst);
    if (m.src_codec != codec::CodecId::kNone) {
      staging[i] = Allocate(m.src.length);
      if (staging[i] == nullptr) {
        m.status = absl::ResourceExhaustedError("no memory to stage a compressed copy");
        continue;
      }
      into = staging[i].get();
    }
    transfers.push_back({&m.src, into});
  }
  std::vector<absl::Status> st = src->ReadAll(transfers);
  size_t j = 0;
  std::vector<size_t> to_decode;
  for (size_t i = 0; i < items.size(); ++i) {
    MoveItem& m = items[i];
    if (m.src_codec != codec::CodecId::kNone && staging[i] == nullptr) continue;
    m.status = std::move(st[j++]);
    m.dst.length = m.nbytes;
    m.dst_codec = codec::CodecId::kNone;
    if (m.status.ok() && m.src_codec != codec::CodecId::kNone) to_decode.push_back(i);
  }
  // The codec stage, on the codec pool.
  codec::ParallelFor(to_decode.size(), [&](size_t k) {
    MoveItem& m = items[to_decode[k]];
    const auto t0 = std::chrono::steady_clock::now();
    auto c = codec::CodecFor(m.src_codec);
    const codec::TensorRef like{m.dtype, m.shape, {}};
    absl::Status decoded =
        c.ok() ? (*c)->Decode({staging[to_decode[k]].get(), m.src.length}, like,
                              {host->Address(m.dst), m.nbytes})
               : c.status();
    CountDecode(m.src_codec, m.src.length, m.nbytes,
                std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(),
                decoded.ok());
    if (!decoded.ok()) {
      m.status = absl::DataLossError(
          absl::StrCat("a compressed copy does not decode: ", decoded.message()));
    }
  });
}

}  // namespace tensord::store
