// The store's use of the remote tier (DESIGN.md "Tiers: Remote"): tensors are published there
// when sealed (write-through, as the options say), and a Get that finds nothing here looks there;
// what it finds joins the table with its remote copy and is lifted to host like a swapped-out
// tensor (the mover decodes and verifies it; lift.cc FindRemote). Another daemon's tensors come
// in this way.
#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "daemon/store/store.h"
#include "daemon/store/validation.h"
#include "spdlog/spdlog.h"

namespace tensord::store {

bool Store::RemoteLooksUp(absl::string_view ns) const {
  return remote_ != nullptr && options_.remote_lookup && remote_->Healthy() &&
         options_.tenants.OwnerOf(ns) == kNoTenant;
}

bool Store::RemoteServes(const Object& o) const {
  if (remote_ == nullptr || !remote_->Healthy() || o.scope != Scope::kGlobal ||
      o.tenant != kNoTenant) {
    return false;
  }
  if (const Copy& host = o.copy(TierId::kHost);
      host.present && !options_.remote_publish_pools.empty()) {
    auto it = options_.remote_publish_pools.find(host_->pools()[host.range.space].name);
    if (it != options_.remote_publish_pools.end()) return it->second;  // the class says so
  }
  return o.durability == Durability::kCache ? options_.remote_publish_cache
                                            : options_.remote_publish_durable;
}

uint64_t Store::RemoteBacklog() const {
  return std::max<uint64_t>(64 << 20, host_->capacity() / 8);
}

void Store::MaybePublish(Object* o) {
  const Copy& host = o->copy(TierId::kHost);
  const Copy& c = o->copy(TierId::kRemote);
  if (!RemoteServes(*o) || !host.present || c.present || c.in_flight) return;
  // A slow Redis must not pin the host tier: past this backlog, tensors stay local.
  if (publishing_bytes_ + o->nbytes > RemoteBacklog()) {
    ++counters_.remote_publish_skipped;
    return;
  }
  StartPublish(o, /*demote=*/false);
}

void Store::StartPublish(Object* o, bool demote) {
  const Copy& host = o->copy(TierId::kHost);
  publishing_bytes_ += o->nbytes;
  if (demote) host_to_remote_by_pool_[host.range.space] += host.range.reserved;
  MoveItem item;
  item.src = host.range;
  item.nbytes = o->nbytes;
  item.compression = o->compression;
  item.dtype = o->dtype;
  item.shape = o->shape;
  item.remote = RemoteTensorOf(*o);
  o->copy(TierId::kRemote).in_flight = true;
  AddReader(o, TierId::kHost);  // the bytes stay where they are while they are written
  ++o->pins;
  auto write = [this, o, demote, item = std::move(item)]() mutable {
    Publish(o, std::move(item), demote);
  };
  if (demote) {
    room_writes_.Schedule(std::move(write));
  } else {
    mover_.Submit(std::move(write));
  }
}

tiers::RemoteTensor Store::RemoteTensorOf(const Object& o) const {
  tiers::RemoteTensor t;
  t.ns = o.ns;
  t.key = o.key;
  t.dtype = o.dtype;
  t.shape = o.shape;
  t.nbytes = o.nbytes;
  t.durability = static_cast<uint8_t>(o.durability);
  t.compression = static_cast<uint8_t>(o.compression.mode);
  t.pool = o.pool_class;
  t.parent = o.parent;
  t.created_unix_ms = o.created_unix_ms;
  if (o.ttl_ms > 0) {
    // What is left of its TTL (it counts from the Seal, which only the expiry map knows).
    t.expires_unix_ms = o.expiring ? o.expiry_it->first : table_.NowUnixMs() + o.ttl_ms;
  }
  return t;
}

Store::RemoteTake Store::RemoteTakes(const Object& o, uint64_t backlog) const {
  if (!options_.remote_demote_cache || remote_ == nullptr || !remote_->Healthy() ||
      o.durability != Durability::kCache || o.scope != Scope::kGlobal || o.tenant != kNoTenant ||
      o.remote_refused) {
    return RemoteTake::kNo;
  }
  const Copy& c = o.copy(TierId::kRemote);
  if (c.present) return RemoteTake::kNo;
  if (c.in_flight) return RemoteTake::kLater;
  // Its pool class says so: the one it was created in (a best-fit Create names none), else the
  // one it asked for.
  const Copy& host = o.copy(TierId::kHost);
  const std::string& pool = host.present ? host_->pools()[host.range.space].name : o.pool_class;
  if (!pool.empty()) {
    auto it = options_.remote_publish_pools.find(pool);
    if (it != options_.remote_publish_pools.end() && !it->second) return RemoteTake::kNo;
  }
  // As for publishing: a bounded backlog; past it, the rest waits for Redis to catch up.
  return backlog + o.nbytes <= RemoteBacklog() ? RemoteTake::kYes : RemoteTake::kLater;
}

void Store::StartSsdToRemote(Object* o) {
  const Copy& ssd = o->copy(TierId::kSsd);
  MoveItem item = MoveFrom(*o, TierId::kSsd);
  item.dst_rel_rmse = ssd.rel_rmse;
  item.remote = RemoteTensorOf(*o);
  o->copy(TierId::kRemote).in_flight = true;
  AddReader(o, TierId::kSsd);  // stays where it is while it is copied
  ++o->pins;
  ssd_to_remote_bytes_ += ssd.range.reserved;
  mover_.Submit(
      [this, o, item = std::move(item)]() mutable { FinishSsdToRemote(o, std::move(item)); });
}

void Store::FinishSsdToRemote(Object* o, MoveItem item) {
  mover_.Run(TierId::kSsd, TierId::kRemote, std::span<MoveItem>(&item, 1));
  Frees frees;
  {
    absl::MutexLock lock(&mu_);
    o->copy(TierId::kRemote).in_flight = false;
    ssd_to_remote_bytes_ -= item.src.reserved;
    DropReader(o, TierId::kSsd);
    --o->pins;
    if (!item.status.ok()) {
      ++counters_.remote_publish_failures;
      o->remote_refused = true;
      spdlog::debug("moving '{}' from SSD to the remote tier failed: {}", o->key,
                    item.status.ToString());
    } else if (o->retired) {
      frees.push_back(RemoteFree(*o, item.dst));
    } else {
      AddCopy(o, TierId::kRemote, item.dst, item.dst_codec, item.dst_rel_rmse);
      ++counters_.remote_publishes;
      counters_.remote_published_bytes += item.dst.length;
      const Copy& ssd = o->copy(TierId::kSsd);
      if (ssd.present && !ssd.held()) {
        ++counters_.remote_demotions;
        DropCopy(o, TierId::kSsd, policy::RemovalReason::kDemoted, &frees);
        migrate_now_ = true;  // the room demotions waited for
      }
    }
    MaybeFreeRetired(o, &frees);
  }
  Reclaim(std::move(frees), /*now=*/true);
}

void Store::Publish(Object* o, MoveItem item, bool demote) {
  mover_.Run(TierId::kHost, TierId::kRemote, std::span<MoveItem>(&item, 1));
  Frees frees;
  {
    absl::MutexLock lock(&mu_);
    o->copy(TierId::kRemote).in_flight = false;
    publishing_bytes_ -= o->nbytes;
    if (demote && (host_to_remote_by_pool_[item.src.space] -= item.src.reserved) == 0) {
      host_to_remote_by_pool_.erase(item.src.space);
    }
    DropReader(o, TierId::kHost);
    --o->pins;
    if (!item.status.ok()) {
      ++counters_.remote_publish_failures;
      if (demote) o->remote_refused = true;  // the next room it is asked for drops it
      spdlog::debug("publishing '{}' to the remote tier failed: {}", o->key,
                    item.status.ToString());
    } else if (o->retired) {  // deleted meanwhile
      frees.push_back(RemoteFree(*o, item.dst));
    } else {
      AddCopy(o, TierId::kRemote, item.dst, item.dst_codec, item.dst_rel_rmse);
      ++counters_.remote_publishes;
      counters_.remote_published_bytes += item.dst.length;
      // Moved down to make host room: the host copy goes unless a Get leased it meanwhile or
      // a hint now says it is about to be read.
      if (const Copy& host = o->copy(TierId::kHost); demote && host.present && !host.held() &&
                                                     o->guarded == 0 &&
                                                     lookahead_.Find(HandleOf(o)) == nullptr) {
        ++counters_.remote_demotions;
        DropCopy(o, TierId::kHost, policy::RemovalReason::kDemoted, &frees);
        demote = false;  // its memory's return wakes the waiters
      }
    }
    // A room-maker waits for this move: when it freed nothing, it looks again now.
    if (demote && !o->retired) ++host_frees_;
    MaybeFreeRetired(o, &frees);
  }
  Reclaim(std::move(frees), /*now=*/true);
}

Store::PendingFree Store::RemoteFree(const Object& o, const tiers::Range& range) const {
  PendingFree f{TierId::kRemote, range, o.erase_remote};
  if (o.erase_remote) {
    f.erasing = ObjectTable::TableKey(o.ns, o.key);
    auto it = remote_erasing_.find(f.erasing);
    if (it != remote_erasing_.end()) f.erasing_until = it->second;
  }
  return f;
}

bool Store::RemoteErasing(absl::string_view ns, absl::string_view key) {
  if (remote_erasing_.empty()) return false;
  auto it = remote_erasing_.find(ObjectTable::TableKey(ns, key));
  if (it == remote_erasing_.end()) return false;
  if (it->second > absl::Now()) return true;
  remote_erasing_.erase(it);
  return false;
}

absl::Time Store::MarkRemoteErasing(absl::string_view ns, absl::string_view key) {
  if (remote_erasing_.size() >= 65536) {  // bounded: the expired ones go first
    const absl::Time now = absl::Now();
    absl::erase_if(remote_erasing_, [now](const auto& e) { return e.second <= now; });
  }
  const absl::Time until = absl::Now() + absl::Seconds(60);
  remote_erasing_[ObjectTable::TableKey(ns, key)] = until;
  return until;
}

absl::Status Store::DeleteRemote(absl::string_view ns, absl::string_view key) {
  absl::Time until;
  {
    absl::MutexLock lock(&mu_);
    if (RemoteErasing(ns, key)) {
      return absl::NotFoundError(absl::StrCat("no tensor '", key, "' (being deleted)"));
    }
    if (!remote_->Healthy()) {
      return absl::UnavailableError(
          absl::StrCat("no tensor '", key,
                       "' here, and the remote tier is degraded: whether Redis holds it is not "
                       "known; retry"));
    }
    // While Redis erases it, this daemon's Gets do not adopt it (one that adopted it before is
    // matched by content below).
    until = MarkRemoteErasing(ns, key);
  }
  uint64_t content = 0;
  absl::StatusOr<bool> erased = remote_->EraseNamed(ns, key, &content);  // no lock: I/O
  {
    // Once erased, the mark stays a few seconds more: a Get whose lookup read the header
    // before the erase must not adopt it after the check below.
    absl::MutexLock lock(&mu_);
    auto it = remote_erasing_.find(ObjectTable::TableKey(ns, key));
    if (it != remote_erasing_.end() && it->second == until) {
      if (erased.ok() && *erased) {
        it->second = std::min(until, absl::Now() + absl::Seconds(5));
      } else {
        remote_erasing_.erase(it);
      }
    }
  }
  if (!erased.ok()) {
    return absl::Status(erased.status().code(),
                        absl::StrCat("no tensor '", key,
                                     "' here, and the remote tier: ", erased.status().message()));
  }
  if (!*erased) return absl::NotFoundError(absl::StrCat("no tensor '", key, "' here or in Redis"));
  Frees frees;
  {
    absl::MutexLock lock(&mu_);
    ++counters_.deletes;
    ++counters_.remote_deletes;
    // A Get here may have adopted the very tensor meanwhile (looked up before the erase): it
    // goes too, or this Delete would not have deleted it.
    Object* o = table_.Find(ns, key);
    if (o != nullptr && o->sealed && content != 0 && o->copy(TierId::kRemote).present &&
        o->copy(TierId::kRemote).range.checksum == content) {
      Retire(o, policy::RemovalReason::kDeleted, &frees);
    }
  }
  Reclaim(std::move(frees));
  return absl::OkStatus();
}

absl::StatusOr<TensorInfo> Store::StatRemote(absl::string_view ns, absl::string_view key) {
  {
    absl::MutexLock lock(&mu_);
    if (RemoteErasing(ns, key)) {
      return absl::NotFoundError(absl::StrCat("no tensor '", key, "' (being deleted)"));
    }
  }
  if (!remote_->Healthy()) {
    return absl::NotFoundError(
        absl::StrCat("no tensor '", key, "' here (the remote tier is degraded: not asked)"));
  }
  // No lock: I/O. Not a Get's lookup: the hit/miss counts stay the Gets'.
  absl::StatusOr<tiers::RemoteFound> found = remote_->Find(ns, key, /*counted=*/false);
  if (!found.ok()) {  // as a Get: whatever the remote tier says, the tensor is not to be had
    return absl::NotFoundError(
        absl::StrCat("no tensor '", key, "' here",
                     found.status().code() == absl::StatusCode::kNotFound
                         ? " or in Redis"
                         : absl::StrCat(", and the remote tier: ", found.status().message())));
  }
  const tiers::RemoteTensor& t = found->tensor;
  TensorInfo info;
  info.ns = std::string(ns);
  info.key = std::string(key);
  info.dtype = t.dtype;
  info.shape = t.shape;
  info.nbytes = t.nbytes;
  info.pool = t.pool;
  info.durability = t.durability == static_cast<uint8_t>(Durability::kDurable)
                        ? Durability::kDurable
                        : Durability::kCache;
  info.scope = Scope::kGlobal;
  info.sealed = true;
  info.location = Location{WantTier::kRemote, 0, 0, t.nbytes};
  info.created_unix_ms = t.created_unix_ms;
  if (t.expires_unix_ms > 0)
    info.ttl_ms = std::max<int64_t>(1, t.expires_unix_ms - t.created_unix_ms);
  info.on_host = false;
  if (auto mode = static_cast<codec::Compression>(t.compression);
      mode == codec::Compression::kNone || mode == codec::Compression::kLossless ||
      mode == codec::Compression::kLossy) {
    info.compression.mode = mode;
  }
  info.parent = t.parent;
  info.remote_stored_bytes = found->range.length;
  remote_->Free(found->range);
  return info;
}

Object* Store::AdoptRemote(absl::string_view ns, absl::string_view key, const tiers::RemoteFound& f,
                           absl::Status* why) {
  const tiers::RemoteTensor& t = f.tensor;
  CreateParams p;
  p.ns = std::string(ns);
  p.key = std::string(key);
  p.dtype = t.dtype;
  p.shape = t.shape;
  p.nbytes = t.nbytes;
  p.parent = t.parent;
  p.durability = t.durability == static_cast<uint8_t>(Durability::kDurable) ? Durability::kDurable
                                                                            : Durability::kCache;
  absl::StatusOr<uint64_t> nbytes = ValidateCreate(p);
  if (nbytes.ok() && (t.nbytes == 0 || t.codec > codec::kMaxCodecId ||
                      (t.codec == 0 && f.range.length != *nbytes))) {
    nbytes = absl::InvalidArgumentError("sizes or codec do not add up");
  }
  if (!nbytes.ok()) {
    *why = absl::DataLossError(absl::StrCat(
        "the remote tier's '", key, "' is not a valid tensor: ", nbytes.status().message()));
    return nullptr;
  }
  // Its bytes were decoded once already: stored again below the host tier, losslessly at most.
  p.compression.mode =
      t.compression == 0 ? codec::Compression::kNone : codec::Compression::kLossless;
  // Another daemon's pool class may not exist here: then the best fit.
  const bool known_pool =
      !t.pool.empty() && host_->pools().Candidates(*nbytes, t.pool, kNoTenant).ok();
  std::unique_ptr<Object> o = SealedObject(std::move(p), *nbytes, known_pool ? t.pool : "");
  o->created_unix_ms = t.created_unix_ms;
  Copy& c = o->copy(TierId::kRemote);
  c.present = true;
  c.range = f.range;
  c.codec = static_cast<codec::CodecId>(t.codec);
  Object* raw = o.get();
  if (!table_.Insert(std::move(o))) {
    *why = absl::InternalError("the key appeared meanwhile");
    return nullptr;
  }
  if (t.expires_unix_ms > 0) {
    raw->ttl_ms = std::max<int64_t>(1, t.expires_unix_ms - t.created_unix_ms);
    table_.ArmAt(raw, t.expires_unix_ms);
  }
  return raw;
}

}  // namespace tensord::store
