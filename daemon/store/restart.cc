// Warm restart: the store's side of the persistent index. Every change to a sealed, global
// tensor's copies is recorded (Persist) before its old range can be reused; at start the table
// is rebuilt from the index (Restore), and the restored tensors' bytes are checked in the
// background or by the first Get that needs them (VerifyRestored, VerifyNow).
#include <xxh_x86dispatch.h>  // XXH3 with the AVX2 / AVX-512 code this CPU has

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "daemon/codec/pages.h"
#include "daemon/store/store.h"
#include "daemon/store/validation.h"
#include "spdlog/spdlog.h"

namespace tensord::store {
namespace {

void ToIndex(const Copy& c, index::Copy* out) {
  out->set_space(c.range.space);
  out->set_offset(c.range.offset);
  out->set_length(c.range.length);
  out->set_reserved(c.range.reserved);
  out->set_checksum(c.range.checksum);
  out->set_codec(static_cast<uint32_t>(c.codec));
  out->set_rel_rmse(c.rel_rmse);
}

tiers::Range FromIndex(const index::Copy& c) {
  return tiers::Range{c.space(), c.offset(), c.length(), c.reserved(), c.checksum()};
}

// The object a record describes, checked as a Create would be. INVALID_ARGUMENT otherwise.
absl::StatusOr<std::unique_ptr<Object>> ObjectFrom(const index::Tensor& t) {
  CreateParams p;
  p.ns = t.ns();
  p.key = t.key();
  p.dtype = static_cast<DType>(t.dtype());
  p.shape.assign(t.shape().begin(), t.shape().end());
  p.nbytes = t.nbytes();
  p.durability = static_cast<Durability>(t.durability());
  p.ttl_ms = t.ttl_ms();
  p.parent = t.parent();
  if (t.compression() > static_cast<int>(codec::Compression::kLossy) || t.compression() < 0) {
    return absl::InvalidArgumentError("unknown compression");
  }
  p.compression.mode = static_cast<codec::Compression>(t.compression());
  p.compression.budget = t.error_budget();
  p.compression.allowed = t.codecs_allowed();
  auto nbytes = ValidateCreate(p);
  if (!nbytes.ok()) return nbytes.status();
  if (t.nbytes() == 0) return absl::InvalidArgumentError("no size");
  std::unique_ptr<Object> o = SealedObject(std::move(p), *nbytes, t.pool_class());
  o->created_unix_ms = t.created_unix_ms();
  if (t.has_checksum()) {
    o->checksum = t.checksum();
    o->has_checksum = true;
  }
  o->verified = false;
  return o;
}

}  // namespace

void Store::Persist(Object* o) {
  if (index_ == nullptr || !o->sealed || o->retired || o->scope != Scope::kGlobal) return;
  const std::string table_key = ObjectTable::TableKey(o->ns, o->key);
  const Copy& host = o->copy(TierId::kHost);
  const Copy& ssd = o->copy(TierId::kSsd);
  // A copy in the SSD tier's RAM front dies with the daemon: not worth recording.
  const bool on_ssd = ssd.present && ssd.range.space != tiers::kRamSpace;
  if (!host.present && !on_ssd) {
    index_->Erase(table_key, o->ns, o->key);
    return;
  }
  if (host.present && !o->has_checksum && o->verified) {
    // Its bytes reached the host from the GPU, never through a Seal here: checksum them now.
    o->checksum = XXH3_64bits(host_->Address(host.range), o->nbytes);
    o->has_checksum = true;
  }
  index::Tensor t;
  t.set_ns(o->ns);
  t.set_key(o->key);
  t.set_dtype(static_cast<int32_t>(o->dtype));
  for (int64_t d : o->shape) t.add_shape(d);
  t.set_nbytes(o->nbytes);
  t.set_pool_class(o->pool_class);
  t.set_durability(static_cast<int32_t>(o->durability));
  t.set_compression(static_cast<int32_t>(o->compression.mode));
  t.set_error_budget(o->compression.budget);
  t.set_codecs_allowed(o->compression.allowed);
  t.set_parent(o->parent);
  t.set_created_unix_ms(o->created_unix_ms);
  t.set_ttl_ms(o->ttl_ms);
  if (o->expiring) t.set_expires_unix_ms(o->expiry_it->first);
  if (o->has_checksum) t.set_checksum(o->checksum);
  if (host.present) ToIndex(host, t.mutable_host());
  if (on_ssd) ToIndex(ssd, t.mutable_ssd());
  index_->Put(table_key, t);
}

RestoreReport Store::Restore(const LoadedIndex& loaded, bool host_reattached) {
  RestoreReport rep;
  absl::MutexLock lock(&mu_);
  for (const auto& entry : loaded.tensors) {
    // (No structured binding: clang 14 cannot capture one in the lambda below.)
    const std::string& table_key = entry.first;
    const index::Tensor& t = entry.second;
    auto made = ObjectFrom(t);
    const bool durable = t.durability() == static_cast<int>(Durability::kDurable);
    auto refuse = [&](absl::string_view why) {
      ++rep.dropped;
      ++counters_.restore_dropped;
      if (durable) {
        ++rep.dropped_durable;
        ++counters_.data_loss;
        MarkLost(t.ns(), t.key());
      }
      spdlog::error("restart: {} tensor '{}' (namespace '{}') is lost: {}",
                    durable ? "DURABLE" : "CACHE", absl::CHexEscape(t.key().substr(0, 200)),
                    absl::CHexEscape(t.ns().substr(0, 128)), std::string(why));
      if (index_ != nullptr) index_->Erase(table_key, t.ns(), t.key());
    };
    if (!made.ok()) {
      refuse(made.status().message());
      continue;
    }
    std::unique_ptr<Object> o = *std::move(made);
    Object* raw = o.get();
    // It must fit the host tier as configured now (a swap-in needs room there); a pool class
    // that no longer exists falls back to the best fit.
    o->tenant = options_.tenants.OwnerOf(o->ns);  // the configuration may have changed
    if (!host_->pools().Candidates(o->nbytes, o->pool_class, o->tenant).ok()) {
      o->pool_class.clear();
    }
    if (!host_->pools().Candidates(o->nbytes, o->pool_class, o->tenant).ok()) {
      refuse("it no longer fits the host tier");
      continue;
    }
    // The host copy: in a segment taken over from the last instance, a range its pool can claim.
    if (t.has_host() && host_reattached && o->has_checksum) {
      const tiers::Range r = FromIndex(t.host());
      memory::PoolSet& pools = host_->pools();
      // Only in its tenant's own memory: a namespace that changed hands is not exposed.
      if (r.space < pools.size() && pools[r.space].tenant == o->tenant && r.length == o->nbytes &&
          r.reserved == pools[r.space].allocator->Reserved(r.length) &&
          pools[r.space].allocator->Claim(r.offset, r.length).ok()) {
        raw->copy(TierId::kHost).present = true;
        raw->copy(TierId::kHost).range = r;
        ++rep.host_copies;
      } else {
        ++rep.copies_dropped;
      }
    } else if (t.has_host()) {
      ++rep.copies_dropped;
    }
    if (t.has_ssd() && ssd_ != nullptr) {
      const tiers::Range r = FromIndex(t.ssd());
      const uint32_t codec = t.ssd().codec();
      // Raw: exactly the tensor; encoded: never much more than it (a codec that does not pay
      // stores the raw bytes), so a bogus length cannot make a check or a swap-in allocate
      // gigabytes.
      const bool size_ok =
          codec == 0 ? r.length == o->nbytes : r.length <= o->nbytes + o->nbytes / 64 + (64 << 10);
      const bool codec_ok =
          codec <= static_cast<uint32_t>(codec::kMaxCodecId) &&
          std::string_view(codec::CodecName(static_cast<codec::CodecId>(codec))) != "unknown";
      if (codec_ok && size_ok && ssd_->Claim(r).ok()) {
        Copy& c = raw->copy(TierId::kSsd);
        c.present = true;
        c.range = r;
        c.codec = static_cast<codec::CodecId>(codec);
        c.rel_rmse = t.ssd().rel_rmse();
        ChargeCopy(*raw, TierId::kSsd, +1);
        ++rep.ssd_copies;
      } else {
        ++rep.copies_dropped;
      }
    } else if (t.has_ssd()) {
      ++rep.copies_dropped;
    }
    const bool on_host = raw->copy(TierId::kHost).present;
    if (!on_host && !raw->copy(TierId::kSsd).present) {
      refuse(t.has_host() && !host_reattached ? "its shared memory did not survive"
                                              : "no copy of it could be found again");
      continue;
    }
    if (!table_.Insert(std::move(o))) {  // the index maps keys to records: cannot happen
      refuse("its key is taken");
      continue;
    }
    if (t.expires_unix_ms() > 0) table_.ArmAt(raw, t.expires_unix_ms());
    if (on_host) {
      TrackCopy(raw, TierId::kHost);
      raw->awaiting_check = true;
      AddReader(raw, TierId::kHost);  // no migration moves it before its check
    }
    // Ranked in the SSD tier too: a full SSD lets restored CACHE copies go like any other.
    if (raw->copy(TierId::kSsd).present) TrackCopy(raw, TierId::kSsd);
    to_verify_.emplace_back(raw->ns, raw->key);
    Persist(raw);  // the record without the copies it lost
    ++rep.tensors;
    rep.bytes += raw->nbytes;
    ++counters_.restored;
    counters_.restored_bytes += raw->nbytes;
  }
  spdlog::info(
      "restart: {} tensors ({} bytes) restored from the index, {} with a host copy and {} with "
      "an SSD copy; {} dropped ({} DURABLE), {} copies refused",
      rep.tensors, rep.bytes, rep.host_copies, rep.ssd_copies, rep.dropped, rep.dropped_durable,
      rep.copies_dropped);
  return rep;
}

absl::Status Store::Checked(Object* o, TierId t, bool good, Frees* frees) {
  if (t == TierId::kHost && o->awaiting_check) {
    o->awaiting_check = false;
    DropReader(o, TierId::kHost);
  }
  if (good) {
    o->verified = true;
    ++counters_.restore_verified;
    return absl::OkStatus();
  }
  ++counters_.restore_verify_failures;
  spdlog::error("restart: the {} copy of '{}' does not match its checksum; dropped",
                tiers::TierName(t), absl::CHexEscape(o->key.substr(0, 200)));
  if (o->copy(t).present && !o->copy(t).held())
    DropCopy(o, t, policy::RemovalReason::kDeleted, frees);
  if (o->copy(TierId::kHost).present || o->copy(TierId::kSsd).present) {
    return absl::OkStatus();  // the other copy serves (an SSD read checks its own checksum)
  }
  const bool durable = o->durability == Durability::kDurable;
  if (durable) {
    ++counters_.data_loss;
    spdlog::error("restart: DURABLE tensor '{}' is lost: no copy of it is intact",
                  absl::CHexEscape(o->key.substr(0, 200)));
  }
  const std::string key = o->key;
  if (durable) MarkLost(o->ns, o->key);
  Retire(o, policy::RemovalReason::kDeleted, frees);
  return durable
             ? absl::DataLossError(absl::StrCat("'", key,
                                                "' was lost: its bytes failed their check after a "
                                                "restart"))
             : absl::NotFoundError(absl::StrCat("no tensor '", key, "'"));
}

absl::Status Store::VerifyNow(Object* o, Frees* frees) {
  if (o->verified) return absl::OkStatus();
  const Copy& host = o->copy(TierId::kHost);
  if (!o->awaiting_check || !host.present) return absl::OkStatus();  // SSD only: read checks it
  const bool good = XXH3_64bits(host_->Address(host.range), o->nbytes) == o->checksum;
  return Checked(o, TierId::kHost, good, frees);
}

uint64_t Store::VerifyRestored(absl::Notification* stop) {
  uint64_t checked = 0;
  codec::Bytes buffer;
  while (!stop->HasBeenNotified()) {
    Object* o = nullptr;
    TierId t = TierId::kHost;
    tiers::Range range;
    {
      absl::MutexLock lock(&mu_);
      while (o == nullptr && !to_verify_.empty()) {
        auto [ns, key] = std::move(to_verify_.front());
        to_verify_.pop_front();
        Object* found = table_.Find(ns, key);
        if (found == nullptr || found->verified) continue;
        if (found->awaiting_check) {
          o = found;
        } else if (found->copy(TierId::kSsd).present && !found->copy(TierId::kSsd).in_flight) {
          o = found;
          t = TierId::kSsd;
          AddReader(o, TierId::kSsd);
        }
      }
      if (o == nullptr) break;
      range = o->copy(t).range;
      ++o->pins;  // the host copy's check reader keeps it in place; the pin keeps the object
    }
    bool good = false;
    if (t == TierId::kHost) {
      good = XXH3_64bits(host_->Address(range), o->nbytes) == o->checksum;
    } else {
      buffer.resize(range.length);
      const absl::Status st = ssd_->Read(range, buffer.data());
      // Only a checksum mismatch condemns the copy; an I/O error leaves it to a later Get (which
      // reports it as any swap-in does) instead of dropping a DURABLE tensor for a hiccup.
      good = st.code() != absl::StatusCode::kDataLoss;
    }
    checked += t == TierId::kHost ? o->nbytes : range.length;
    Frees frees;
    {
      absl::MutexLock lock(&mu_);
      if (t == TierId::kSsd) DropReader(o, TierId::kSsd);
      // A Get may have checked it meanwhile; a Delete may have retired it. The pin keeps o
      // alive through Checked (which may retire it); it goes last.
      if (!o->retired && !o->verified && (t == TierId::kSsd || o->awaiting_check)) {
        Checked(o, t, good, &frees).IgnoreError();
      }
      --o->pins;
      MaybeFreeRetired(o, &frees);
    }
    Reclaim(std::move(frees));
  }
  return checked;
}

absl::Status Store::Missing(absl::string_view ns, absl::string_view key) const {
  if (!lost_.empty() && lost_.contains(ObjectTable::TableKey(ns, key))) {
    return absl::DataLossError(absl::StrCat(
        "'", key, "' was lost: a restart found no intact copy of it (Delete or Create it anew)"));
  }
  return absl::NotFoundError(absl::StrCat("no tensor '", key, "'"));
}

void Store::MarkLost(absl::string_view ns, absl::string_view key) {
  if (lost_.size() < kMaxLost) lost_.insert(ObjectTable::TableKey(ns, key));
}

size_t Store::Unverified() {
  absl::MutexLock lock(&mu_);
  return to_verify_.size();
}

}  // namespace tensord::store
