// The mover (DESIGN.md "Store: one table, copies per tier, one mover"): the one place that copies
// a tensor's bytes between tiers. A move is one item of a batch between two tiers, one of them
// the host tier (GPU <-> SSD goes through host as two moves), except SSD -> remote: a copy
// leaving the SSD tier for the tier below goes as it is encoded, through staging memory. Below the
// host tier every move passes the codec stage: encoded on the way down as the tensor's compression
// policy allows, decoded and verified on the way up. It knows nothing of objects, leases or locks:
// the store decides and books, the mover carries bytes. Runs on the calling thread, which is always
// one of the store's own (its executor, the migrators), never one of gRPC's, with transfers below
// the host tier on its I/O queue so that they overlap the codec work; Submit hands work to the
// executor. Thread-safe.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <optional>
#include <span>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "common/work_queue.h"
#include "daemon/codec/codec.h"
#include "daemon/tiers/remote_tier.h"
#include "daemon/tiers/tier.h"

namespace tensord::store {

struct MoveItem {
  tiers::Range src;  // in the source tier: the tensor's bytes, encoded by src_codec
  codec::CodecId src_codec = codec::CodecId::kNone;
  uint64_t nbytes = 0;  // the tensor's size, decoded
  // The destination. Moves into the host or GPU tier: reserved by the caller (its rooms are the
  // store's business). Moves below the host tier: reserved by the mover once it knows the
  // encoded size (then dst_reserved is false on entry), with `placement`.
  tiers::Range dst;
  bool dst_reserved = false;
  // The tensor, for the codecs: how it may be encoded, its dtype and shape.
  codec::Policy compression;
  DType dtype = DType::kUInt8;
  std::vector<int64_t> shape;
  // The copy must outlive the daemon (a DURABLE tensor under warm restart): never in RAM only.
  bool persistent = false;
  // Moves into the remote tier: the tensor, for its name and header there (the mover sets its
  // codec).
  std::optional<tiers::RemoteTensor> remote;
  // Results. On failure a range the mover reserved is freed again; the caller's stays its own.
  codec::CodecId dst_codec = codec::CodecId::kNone;
  float dst_rel_rmse = 0;  // a lossy encoding's measured error
  absl::Status status;
};

// One codec's counters (bytes in: what it read; out: what it wrote; seconds: time spent).
struct CodecStat {
  codec::CodecId codec = codec::CodecId::kNone;
  uint64_t encodes = 0, encode_in_bytes = 0, encode_out_bytes = 0;
  double encode_seconds = 0;
  uint64_t decodes = 0, decode_in_bytes = 0, decode_out_bytes = 0, decode_failures = 0;
  double decode_seconds = 0;
  uint64_t tried = 0, over_budget = 0;
  double max_rel_rmse = 0;
};

// The codec stage's counters: totals, and per codec.
struct CodecCounters {
  uint64_t encodes = 0, encode_in_bytes = 0, encode_out_bytes = 0, stored_raw = 0;
  uint64_t decodes = 0, decode_in_bytes = 0, decode_out_bytes = 0, decode_failures = 0;
  uint64_t over_budget = 0;       // tensors stored losslessly because no lossy codec met the budget
  std::vector<CodecStat> codecs;  // those that have run
};

class Mover {
 public:
  // `tiers` is indexed by TierId (nullptr: absent); borrowed, they must outlive the mover.
  // `threads`: the executor's size.
  Mover(std::array<tiers::Tier*, tiers::kTierCount> tiers, int threads);
  ~Mover();

  // Moves every item from `from` to `to` (one of them kHost) as one batch per tier, filling each
  // item's status: the destination tier's or the source's error, DATA_LOSS when a copy fails
  // its checksum or does not decode.
  void Run(tiers::TierId from, tiers::TierId to, std::span<MoveItem> items);
  // Runs `work` on the store's executor.
  void Submit(absl::AnyInvocable<void() &&> work) { executor_.Schedule(std::move(work)); }
  // Scrubs and frees ranges on the scrubber thread, then calls `done` there (with the ranges).
  void Scrub(absl::AnyInvocable<void() &&> work) { scrubber_.Schedule(std::move(work)); }
  // Waits until the executor and the scrubber are idle (tests, shutdown).
  void WaitIdle();
  bool Idle() { return executor_.Idle() && scrubber_.Idle(); }
  tiers::Tier* tier(tiers::TierId t) const { return tiers_[tiers::Index(t)]; }
  CodecCounters codec_counters() const;

 private:
  // Bytes of tensors per wave: a wave's codec work overlaps the previous wave's I/O.
  static constexpr uint64_t kWaveBytes = 4 << 20;
  class Batch;
  static std::vector<std::pair<size_t, size_t>> Waves(std::span<const MoveItem> items);
  void Down(tiers::TierId to, std::span<MoveItem> items);
  void Up(tiers::TierId from, std::span<MoveItem> items);
  void Between(tiers::TierId from, tiers::TierId to, std::span<MoveItem> items);
  void SsdToRemote(std::span<MoveItem> items);

  // Books one encode (the outcome of EncodeFor) or one decode.
  void CountEncode(const codec::Encoded& e, uint64_t nbytes);
  void CountDecode(codec::CodecId id, uint64_t in, uint64_t out, double seconds, bool ok);

  const std::array<tiers::Tier*, tiers::kTierCount> tiers_;
  mutable absl::Mutex stats_mu_;
  CodecCounters stats_ ABSL_GUARDED_BY(stats_mu_);
  std::array<CodecStat, codec::kMaxCodecId + 1> per_codec_ ABSL_GUARDED_BY(stats_mu_);
  WorkQueue scrubber_{1};  // declared before executor_: executor work may scrub
  // Transfers below the host tier, so that codec work and I/O overlap (moves run on the
  // executor and the migrators, which wait here; nothing here waits on them).
  WorkQueue io_{2};
  WorkQueue executor_;
};

}  // namespace tensord::store
