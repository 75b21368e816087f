// Copies, leases and retirement: the bookkeeping every operation shares, and the policy notices
// that go with it (insert, access, pin/unpin, removal with its reason). Freed ranges are
// scrubbed without the lock, on the mover's scrubber thread.
#include <cstring>

#include "absl/strings/str_cat.h"
#include "daemon/store/store.h"
#include "spdlog/spdlog.h"

namespace tensord::store {

Location Store::LocationOf(const Object& o, TierId t) const {
  const Copy& c = o.copy(t);
  switch (t) {
    case TierId::kHost:
      return Location{WantTier::kHost, host_->pools()[c.range.space].arena, c.range.offset,
                      o.nbytes};
    case TierId::kGpu:
      return Location{WantTier::kGpu, gpu_->pools()[c.range.space].arena, c.range.offset, o.nbytes};
    case TierId::kSsd:
      break;
    case TierId::kRemote:
      return Location{WantTier::kRemote, 0, 0, o.nbytes};
  }
  return Location{WantTier::kSsd, 0, 0, o.nbytes};
}

TensorInfo Store::Info(const Object& o) const {
  const Copy& host = o.copy(TierId::kHost);
  const Copy& gpu = o.copy(TierId::kGpu);
  const Copy& ssd = o.copy(TierId::kSsd);
  TensorInfo info;
  info.ns = o.ns;
  info.key = o.key;
  info.dtype = o.dtype;
  info.shape = o.shape;
  info.nbytes = o.nbytes;
  if (host.present) {
    info.pool = host_->pools()[host.range.space].name;
  } else if (gpu.present) {
    info.pool = gpu_->pools()[gpu.range.space].name;
  } else if (auto home = host_->pools().Candidates(o.nbytes, o.pool_class, o.tenant); home.ok()) {
    info.pool = host_->pools()[(*home)[0]].name;  // where a swap-in goes
  }
  info.durability = o.durability;
  info.scope = o.scope;
  info.sealed = o.sealed;
  info.location = LocationOf(o, host.present                                      ? TierId::kHost
                                : gpu.present                                     ? TierId::kGpu
                                : o.copy(TierId::kRemote).present && !ssd.present ? TierId::kRemote
                                                                                  : TierId::kSsd);
  info.on_gpu = gpu.present;
  if (gpu.present) info.gpu_location = LocationOf(o, TierId::kGpu);
  info.leases = o.leases();
  info.created_unix_ms = o.created_unix_ms;
  info.ttl_ms = o.ttl_ms;
  info.on_host = host.present;
  info.on_ssd = ssd.present;
  info.compression = o.compression;
  info.parent = o.parent;
  info.ssd_stored_bytes = ssd.present ? ssd.range.length : 0;
  info.ssd_codec = ssd.present ? ssd.codec : codec::CodecId::kNone;
  info.ssd_rel_rmse = ssd.present ? ssd.rel_rmse : 0;
  const Copy& remote = o.copy(TierId::kRemote);
  info.remote_stored_bytes = remote.present ? remote.range.length : 0;
  return info;
}

void Store::SyncPin(Object* o, TierId t, bool was_held) {
  policy::EvictionPolicy* p = PolicyOf(t);
  const bool held = o->copy(t).held();
  if (p == nullptr || held == was_held) return;
  if (held) {
    p->Pin(HandleOf(o));
  } else {
    p->Unpin(HandleOf(o));
  }
}

void Store::AddReader(Object* o, TierId t) {
  Copy& c = o->copy(t);
  const bool was = c.held();
  ++c.readers;
  SyncPin(o, t, was);
}

void Store::DropReader(Object* o, TierId t) {
  Copy& c = o->copy(t);
  const bool was = c.held();
  --c.readers;
  SyncPin(o, t, was);
}

void Store::GrantLease(Session* s, Object* o, TierId t, GetOutcome* r) {
  Copy& c = o->copy(t);
  ++counters_.leases_granted;
  const bool was = c.held();
  if (c.leases++ == 0) pinned_bytes_[tiers::Index(t)] += c.range.reserved;
  ++tenant_use_[s->tenant].leases;
  SyncPin(o, t, was);
  if (PolicyOf(t) != nullptr) PolicyOf(t)->Access(HandleOf(o));
  r->lease_id = table_.AddLease(s, o, t);
  r->info = Info(*o);
  r->info.location = LocationOf(*o, t);
  r->info.pool = (t == TierId::kGpu ? gpu_->pools() : host_->pools())[c.range.space].name;
}

void Store::DropLease(uint64_t lease_id, Frees* frees) {
  std::optional<LeaseEntry> e = table_.TakeLease(lease_id);
  if (!e) return;
  ++counters_.leases_released;
  --tenant_use_[e->session->tenant].leases;
  Object* o = e->object;
  Copy& c = o->copy(e->tier);
  const bool was = c.held();
  if (--c.leases == 0) pinned_bytes_[tiers::Index(e->tier)] -= c.range.reserved;
  SyncPin(o, e->tier, was);
  MaybeFreeRetired(o, frees);
}

codec::Policy Store::ResolveCompression(const CreateParams& params, const std::string& pool) const {
  if (params.compression.mode != codec::Compression::kDefault) return params.compression;
  const auto it = options_.class_compression.find(pool);
  codec::Policy p =
      it != options_.class_compression.end() ? it->second : options_.default_compression;
  if (p.mode == codec::Compression::kDefault) p = codec::Policy{};
  if (p.mode == codec::Compression::kLossy && params.durability == Durability::kDurable) {
    p = codec::Policy{codec::Compression::kLossless};  // DURABLE: lossy only when asked for
  }
  return p;
}

void Store::AddCopy(Object* o, TierId t, const tiers::Range& range, codec::CodecId codec,
                    float rel_rmse) {
  Copy& c = o->copy(t);
  c.present = true;
  c.in_flight = false;
  c.range = range;
  c.codec = codec;
  c.rel_rmse = rel_rmse;
  ChargeCopy(*o, t, +1);
  // A restored tensor read from SSD into host memory passed the extent's checksum.
  if (t == TierId::kHost && !o->verified && !o->awaiting_check) o->verified = true;
  // Decoded from a lossy swap (or Redis) copy, the host bytes are no longer those the Seal
  // checksummed:
  // Persist takes the checksum of these.
  if (t == TierId::kHost && index_ != nullptr &&
      ((o->copy(TierId::kSsd).present && o->copy(TierId::kSsd).rel_rmse > 0) ||
       (o->copy(TierId::kRemote).present && o->copy(TierId::kRemote).rel_rmse > 0))) {
    o->has_checksum = false;
  }
  if (o->sealed && !o->retired) {
    TrackCopy(o, t, /*moved=*/true);
    if (t == TierId::kHost || t == TierId::kSsd) Persist(o);
  }
}

void Store::TrackCopy(Object* o, TierId t, bool moved) {
  policy::EvictionPolicy* p = PolicyOf(t);
  if (p == nullptr) return;
  const Copy& c = o->copy(t);
  p->Insert(HandleOf(o), FootprintOf(*o, c.range, moved));
  if (c.held()) p->Pin(HandleOf(o));        // a lease or a reader
  if (Guarded(*o, t)) p->Pin(HandleOf(o));  // a hint's guard: a pin of its own
}

void Store::FreeRange(TierId t, const tiers::Range& range, Frees* frees) {
  if (t == TierId::kSsd) {
    ssd_->Free(range);  // nothing to scrub: clients never map swap
    return;
  }
  if (t == TierId::kHost) reclaiming_bytes_ += range.reserved;
  frees->push_back(PendingFree{t, range});
}

void Store::DropCopy(Object* o, TierId t, policy::RemovalReason why, Frees* frees) {
  Copy& c = o->copy(t);
  if (PolicyOf(t) != nullptr) PolicyOf(t)->Remove(HandleOf(o), why);
  if (Guarded(*o, t) && !o->retired) GuardedCopyLeft(o, t);
  if (c.leases > 0 || c.readers > 0) {
    spdlog::critical("store invariant broken: dropping a held {} copy of '{}'", tiers::TierName(t),
                     o->key);
    std::abort();
  }
  const tiers::Range range = c.range;
  ChargeCopy(*o, t, -1);
  c = Copy{};
  // The index stops pointing at the range before anyone else can have it.
  if ((t == TierId::kHost || t == TierId::kSsd) && o->sealed && !o->retired) Persist(o);
  if (t == TierId::kRemote) {  // let go (or deleted) off the lock: it talks to Redis
    frees->push_back(RemoteFree(*o, range));
    return;
  }
  FreeRange(t, range, frees);
}

void Store::Retire(Object* o, policy::RemovalReason why, Frees* frees) {
  if (!lookahead_.empty()) ForgetHint(o);
  if (index_ != nullptr && o->sealed)
    index_->Erase(ObjectTable::TableKey(o->ns, o->key), o->ns, o->key);
  if (o->awaiting_check) {  // deleted before its check: the check's reader goes
    o->awaiting_check = false;
    DropReader(o, TierId::kHost);
  }
  for (TierId t : tiers::kAllTiers) {
    if (PolicyOf(t) != nullptr) PolicyOf(t)->Remove(HandleOf(o), why);
  }
  if (o->owner != nullptr) {
    o->owner->creating.erase(o);
    o->owner->scoped.erase(o);
    o->owner = nullptr;
  }
  table_.Unlink(o);
  MaybeFreeRetired(o, frees);
}

void Store::MaybeFreeRetired(Object* o, Frees* frees) {
  if (!o->retired || o->Held()) return;
  for (TierId t : tiers::kAllTiers) {
    if (o->copy(t).present) DropCopy(o, t, policy::RemovalReason::kDeleted, frees);
  }
  table_.Destroy(o);  // deletes o
}

void Store::Reclaim(Frees frees, bool now) {
  if (frees.empty()) return;
  auto scrub_and_return = [this](Frees f) {
    uint64_t scrubbed = 0;
    if (host_->zero_on_free()) {
      for (const PendingFree& p : f) {
        if (p.tier == TierId::kRemote) continue;
        // No lock: the range belongs to no object and to no free list until returned below.
        if (absl::Status st = TierOf(p.tier)->Scrub(p.range); !st.ok()) {
          spdlog::error("zeroing a freed {} range failed: {}", tiers::TierName(p.tier),
                        st.ToString());
        }
        scrubbed += p.range.reserved;
      }
    }
    ReturnRanges(f, scrubbed);
    // Then the remote tier's (Redis traffic): host memory never waits for it.
    for (const PendingFree& p : f) {
      if (p.tier != TierId::kRemote) continue;
      if (p.erase) {
        // (A failure is queued by the tier, which then serves only once Redis took it; the
        // tombstone stays until its time regardless.)
        absl::Status st = remote_->Erase(p.range);
        if (!st.ok()) {
          spdlog::warn("deleting a tensor from the remote tier failed: {}", st.ToString());
        } else if (!p.erasing.empty()) {
          absl::MutexLock lock(&mu_);
          auto it = remote_erasing_.find(p.erasing);
          if (it != remote_erasing_.end() && it->second == p.erasing_until) {
            remote_erasing_.erase(it);
          }
        }
      } else {
        remote_->Free(p.range);
      }
    }
  };
  if (now) {
    scrub_and_return(std::move(frees));
  } else {
    mover_.Scrub(
        [scrub_and_return, f = std::move(frees)]() mutable { scrub_and_return(std::move(f)); });
  }
}

void Store::ReturnRanges(const Frees& frees, uint64_t scrubbed) {
  absl::MutexLock lock(&mu_);
  for (const PendingFree& f : frees) {
    if (f.tier == TierId::kRemote) continue;  // freed before, without the lock
    TierOf(f.tier)->Free(f.range);
    if (f.tier == TierId::kHost) reclaiming_bytes_ -= f.range.reserved;
  }
  ++host_frees_;
  counters_.bytes_zeroed += scrubbed;
}

}  // namespace tensord::store
