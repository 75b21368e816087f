// The mover: batched transfers through each tier's interface, with the codec stage below host.
#include "daemon/store/mover.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
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
    if (!t.sample) c.encode_seconds += t.seconds;  // a slice's encode would skew encode_gbps
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
  if (from == TierId::kSsd && to == TierId::kRemote) {
    SsdToRemote(items);
  } else if (to == TierId::kSsd || to == TierId::kRemote) {
    Down(to, items);
  } else if (from == TierId::kSsd || from == TierId::kRemote) {
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

// SSD -> remote: each copy is read (its extent checksum verified) into staging memory and
// written to the remote tier unchanged: encoded as it was on SSD (the remote header names the
// codec), no decode and encode again. The caller sets dst_rel_rmse (the SSD copy's).
void Mover::SsdToRemote(std::span<MoveItem> items) {
  tiers::Tier* ssd = tier(TierId::kSsd);
  tiers::Tier* remote = tier(TierId::kRemote);
  std::vector<Staging> staging(items.size());
  std::vector<tiers::Transfer> reads;
  std::vector<size_t> index;
  for (size_t i = 0; i < items.size(); ++i) {
    MoveItem& m = items[i];
    staging[i] = Allocate(m.src.length);
    if (staging[i] == nullptr) {
      m.status = absl::ResourceExhaustedError("no memory to stage a copy for the remote tier");
      continue;
    }
    index.push_back(i);
    reads.push_back({&m.src, staging[i].get()});
  }
  std::vector<absl::Status> st = ssd->ReadAll(reads);
  std::vector<tiers::Transfer> writes;
  std::vector<size_t> written;
  for (size_t j = 0; j < index.size(); ++j) {
    MoveItem& m = items[index[j]];
    m.status = std::move(st[j]);
    if (!m.status.ok()) continue;
    tiers::Placement where;
    if (m.remote) {
      m.remote->codec = static_cast<uint8_t>(m.src_codec);
      where.remote = &*m.remote;
    }
    if (m.src_codec != codec::CodecId::kNone) where.decoded_bytes = m.nbytes;
    auto r = remote->Reserve(m.src.length, where);
    if (!r.ok()) {
      m.status = r.status();
      continue;
    }
    m.dst = *r;
    m.dst.length = m.src.length;
    m.dst_codec = m.src_codec;
    written.push_back(index[j]);
    writes.push_back({&m.dst, staging[index[j]].get()});
  }
  st = remote->WriteAll(writes);
  for (size_t j = 0; j < written.size(); ++j) {
    MoveItem& m = items[written[j]];
    m.status = std::move(st[j]);
    if (!m.status.ok()) remote->Free(m.dst);
  }
}

// Splits items into waves of consecutive items holding at least kWaveBytes (or one item), so
// that a wave's codec work overlaps the I/O of the wave before it, while the items of one wave
// still share the codec pool (many small tensors) and one I/O batch.
std::vector<std::pair<size_t, size_t>> Mover::Waves(std::span<const MoveItem> items) {
  std::vector<std::pair<size_t, size_t>> waves;
  uint64_t bytes = 0;
  for (size_t i = 0; i < items.size(); ++i) {
    if (waves.empty() || bytes >= kWaveBytes) {
      waves.push_back({i, i});
      bytes = 0;
    }
    waves.back().second = i + 1;
    bytes += items[i].nbytes;
  }
  return waves;
}

// Runs io(transfers) on the I/O queue; Wait() returns its statuses.
class Mover::Batch {
 public:
  void Start(WorkQueue* queue, absl::AnyInvocable<std::vector<absl::Status>() &&> io) {
    queue->Schedule([this, io = std::move(io)]() mutable {
      status_ = std::move(io)();
      done_.Notify();
    });
  }
  std::vector<absl::Status> Wait() {
    done_.WaitForNotification();
    return std::move(status_);
  }
  std::vector<tiers::Transfer> transfers;
  std::vector<size_t> index;  // the item of each transfer

 private:
  absl::Notification done_;
  std::vector<absl::Status> status_;
};

// Host -> a tier below: per wave, encode, reserve the encoded sizes, and hand the write to the
// I/O queue; the next wave encodes while it runs.
void Mover::Down(TierId to, std::span<MoveItem> items) {
  tiers::Tier* host = tier(TierId::kHost);
  tiers::Tier* dst = tier(to);
  std::vector<codec::Encoded> encoded(items.size());
  std::vector<bool> reserved_here(items.size(), false);
  const auto waves = Waves(items);
  std::vector<std::unique_ptr<Batch>> batches;
  for (const auto& wave : waves) {
    const size_t first = wave.first, last = wave.second;  // (lambdas below use them)
    // The codec stage, on the codec pool (one tensor per task; a large one's chunks spread too).
    codec::ParallelFor(last - first, [&](size_t k) {
      const size_t i = first + k;
      MoveItem& m = items[i];
      encoded[i].stored_bytes = m.nbytes;  // raw unless a codec pays
      if (m.compression.mode == codec::Compression::kNone) return;
      const codec::TensorRef t{m.dtype, m.shape, {host->Address(m.src), m.nbytes}};
      auto e = codec::EncodeFor(m.compression, t);
      // A codec that fails stores the raw bytes: still lossless, only larger.
      if (e.ok()) encoded[i] = *std::move(e);
      CountEncode(encoded[i], m.nbytes);
    });
    auto batch = std::make_unique<Batch>();
    for (size_t i = first; i < last; ++i) {
      MoveItem& m = items[i];
      uint8_t* src = host->Address(m.src);
      if (!m.dst_reserved) {
        tiers::Placement where;  // an encoded copy may stay in the SSD tier's RAM front
        if (encoded[i].codec != codec::CodecId::kNone) where.decoded_bytes = m.nbytes;
        where.persistent = m.persistent;
        if (m.remote) {
          m.remote->codec = static_cast<uint8_t>(encoded[i].codec);
          where.remote = &*m.remote;
        }
        auto r = dst->Reserve(encoded[i].stored_bytes, where);
        if (!r.ok()) {
          m.status = r.status();
          continue;
        }
        m.dst = *r;
        m.dst_reserved = true;
        reserved_here[i] = true;
      }
      batch->index.push_back(i);
      m.dst.length = encoded[i].stored_bytes;
      m.dst_codec = encoded[i].codec;
      m.dst_rel_rmse = static_cast<float>(encoded[i].quality.rel_rmse);
      uint8_t* bytes = encoded[i].codec == codec::CodecId::kNone ? src : encoded[i].bytes.data();
      batch->transfers.push_back({&m.dst, bytes});
    }
    Batch* b = batch.get();
    b->Start(&io_, [dst, b] { return dst->WriteAll(b->transfers); });
    batches.push_back(std::move(batch));
  }
  for (const auto& batch : batches) {  // every write done before the encodings are freed
    const std::vector<absl::Status> st = batch->Wait();
    for (size_t j = 0; j < batch->index.size(); ++j) {
      MoveItem& m = items[batch->index[j]];
      m.status = st[j];
      if (!m.status.ok() && reserved_here[batch->index[j]]) {
        dst->Free(m.dst);
        m.dst_reserved = false;
      }
    }
  }
}

// A tier below -> host: every wave's read goes to the I/O queue at once (into the host range
// itself when the copy is raw, else into staging memory); each wave is decoded and verified as
// soon as its read is done, while the later ones are still being read.
void Mover::Up(TierId from, std::span<MoveItem> items) {
  tiers::Tier* host = tier(TierId::kHost);
  tiers::Tier* src = tier(from);
  std::vector<Staging> staging(items.size());
  const auto waves = Waves(items);
  std::vector<std::unique_ptr<Batch>> batches;
  for (const auto& wave : waves) {
    const size_t first = wave.first, last = wave.second;
    auto batch = std::make_unique<Batch>();
    for (size_t i = first; i < last; ++i) {
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
      batch->index.push_back(i);
      batch->transfers.push_back({&m.src, into});
    }
    Batch* b = batch.get();
    b->Start(&io_, [src, b] { return src->ReadAll(b->transfers); });
    batches.push_back(std::move(batch));
  }
  for (const auto& batch : batches) {
    std::vector<absl::Status> st = batch->Wait();
    std::vector<size_t> to_decode;
    for (size_t j = 0; j < batch->index.size(); ++j) {
      MoveItem& m = items[batch->index[j]];
      m.status = std::move(st[j]);
      m.dst.length = m.nbytes;
      m.dst_codec = codec::CodecId::kNone;
      if (m.status.ok() && m.src_codec != codec::CodecId::kNone)
        to_decode.push_back(batch->index[j]);
    }
    // The codec stage, on the codec pool.
    codec::ParallelFor(to_decode.size(), [&](size_t k) {
      MoveItem& m = items[to_decode[k]];
      const auto t0 = std::chrono::steady_clock::now();
      auto c = codec::CodecFor(m.src_codec);
      const codec::TensorRef like{m.dtype, m.shape, {}};
      absl::Status decoded = c.ok() ? (*c)->Decode({staging[to_decode[k]].get(), m.src.length},
                                                   like, {host->Address(m.dst), m.nbytes})
                                    : c.status();
      CountDecode(m.src_codec, m.src.length, m.nbytes,
                  std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(),
                  decoded.ok());
      if (!decoded.ok()) {
        m.status = absl::DataLossError(
            absl::StrCat("a compressed copy does not decode: ", decoded.message()));
      }
      staging[to_decode[k]].reset();  // back to the page cache at once
    });
  }
}

}  // namespace tensord::store
