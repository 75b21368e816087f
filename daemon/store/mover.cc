// The mover: batched transfers through each tier's interface, with the codec stage below host.
#include "daemon/store/mover.h"

#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"

namespace tensord::store {
namespace {

using tiers::TierId;

struct FreeDeleter {
  void operator()(uint8_t* p) const { std::free(p); }
};
// Page-aligned staging memory, so that O_DIRECT transfers need no bounce buffer.
using Staging = std::unique_ptr<uint8_t, FreeDeleter>;
Staging Allocate(uint64_t bytes) {
  const uint64_t rounded = (bytes + 4095) / 4096 * 4096;
  return Staging(static_cast<uint8_t*>(std::aligned_alloc(4096, rounded == 0 ? 4096 : rounded)));
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
  return CodecCounters{encodes_.load(),    encode_in_.load(),      encode_out_.load(),
                       stored_raw_.load(), decodes_.load(),        decode_in_.load(),
                       decode_out_.load(), decode_failures_.load()};
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
  for (size_t i = 0; i < items.size(); ++i) {
    MoveItem& m = items[i];
    uint8_t* src = host->Address(m.src);
    if (m.compression != codec::Compression::kNone) {
      auto e = codec::EncodeFor(m.compression, {src, m.nbytes});
      // A codec that fails stores the raw bytes: still lossless, only larger.
      encoded[i] = e.ok() ? *std::move(e) : codec::Encoded{codec::CodecId::kNone, {}, m.nbytes};
      ++encodes_;
      encode_in_ += m.nbytes;
      encode_out_ += encoded[i].stored_bytes;
      if (encoded[i].codec == codec::CodecId::kNone) ++stored_raw_;
    } else {
      encoded[i] = codec::Encoded{codec::CodecId::kNone, {}, m.nbytes};
    }
    if (!m.dst_reserved) {
      auto r = dst->Reserve(encoded[i].stored_bytes, {});
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
  for (size_t i = 0; i < items.size(); ++i) {
    MoveItem& m = items[i];
    if (m.src_codec != codec::CodecId::kNone && staging[i] == nullptr) continue;
    m.status = std::move(st[j++]);
    m.dst.length = m.nbytes;
    m.dst_codec = codec::CodecId::kNone;
    if (!m.status.ok() || m.src_codec == codec::CodecId::kNone) continue;
    auto c = codec::CodecFor(m.src_codec);
    absl::Status decoded =
        c.ok() ? (*c)->Decode({staging[i].get(), m.src.length}, {host->Address(m.dst), m.nbytes})
               : c.status();
    ++decodes_;
    decode_in_ += m.src.length;
    if (decoded.ok()) {
      decode_out_ += m.nbytes;
    } else {
      ++decode_failures_;
      m.status = absl::DataLossError(
          absl::StrCat("a compressed copy does not decode: ", decoded.message()));
    }
  }
}

}  // namespace tensord::store
