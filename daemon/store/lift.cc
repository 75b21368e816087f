// Moves up, without a lease (Prefetch) or leased on arrival (Get's misses): SSD -> host,
// GPU -> host (a copy down that a host Get waits for), host -> GPU (SSD -> GPU through host).
// Runs on the store's executor. Keys that can move at once go in one batch per source tier;
// the rest wait, one by one, for a move in flight or for room. The lock is never held during a
// move: the object is pinned and its destination copy marked in flight instead.
#include <algorithm>

#include "absl/strings/str_cat.h"
#include "daemon/store/store.h"
#include "daemon/store/validation.h"
#include "spdlog/spdlog.h"

namespace tensord::store {
namespace {

// Keys of one Prefetch looked up in the remote tier: a speculative call full of keys that exist
// nowhere must not hold the executor's threads (where Creates and swap-ins run) for long.
constexpr size_t kMaxPrefetchLookups = 64;

}  // namespace

struct Store::Lift {
  std::string session_id;  // empty: a Prefetch (no leases)
  std::string ns;
  std::vector<std::string> keys;
  TierId to = TierId::kHost;
  int device = -1;
  absl::Time deadline;
  std::vector<size_t> which;   // the keys that need a move
  std::vector<size_t> remote;  // the keys not here, to look up in the remote tier
  std::vector<GetOutcome> out;
  std::vector<bool> moved;
  // An inner lift of one key to host for a copy up: it holds the host copy (a reader and a pin
  // on `held`) instead of leasing it, for the outer lift to let go.
  bool hold = false;
  bool for_get = false;  // the outer lift is a Get's (its host stage counts as a Get's hit)
  bool hint = false;     // a Hint's lookups: found keys are adopted, not counted as prefetches
  Object* held = nullptr;
  bool leasing() const { return !session_id.empty(); }
};

absl::StatusOr<std::unique_ptr<Store::Lift>> Store::NewLift(absl::string_view call,
                                                            absl::string_view ns, size_t nkeys,
                                                            WantTier want, absl::Time deadline,
                                                            int device) const {
  if (nkeys == 0 || nkeys > kMaxBatchKeys) {
    return absl::InvalidArgumentError(
        absl::StrCat("a ", call, " names 1 to ", kMaxBatchKeys, " keys, not ", nkeys));
  }
  if (auto st = ValidateNamespace(ns); !st.ok()) return st;
  if (auto st = CheckWant(want, device); !st.ok()) return st;
  auto lift = std::make_unique<Lift>();
  lift->ns = std::string(ns);
  lift->to = want == WantTier::kGpu ? TierId::kGpu : TierId::kHost;
  lift->device = device;
  lift->deadline = Clamp(deadline);
  lift->out.resize(nkeys);
  lift->moved.resize(nkeys);
  return lift;
}

void Store::GetAsync(const std::string& session_id, absl::string_view ns,
                     std::vector<std::string> keys, WantTier want, absl::Time deadline, int device,
                     GetDone done) {
  auto made = NewLift("Get", ns, keys.size(), want, deadline, device);
  if (!made.ok()) return std::move(done)(made.status());
  std::unique_ptr<Lift> lift = *std::move(made);
  lift->session_id = session_id;
  bool session_ok = true;
  bool hinted = false;  // a hint was read: the window moves on
  Frees frees;          // a restored tensor that failed its check
  {
    absl::MutexLock lock(&mu_);
    Session* s = table_.FindSession(session_id);
    session_ok = s != nullptr;
    if (session_ok) {
      ++counters_.gets;
      if (want == WantTier::kGpu) ++counters_.gpu_gets;
    }
    for (size_t i = 0; session_ok && i < keys.size(); ++i) {
      GetOutcome& r = lift->out[i];
      r.status = ValidateKey(keys[i]);
      if (!r.status.ok()) continue;
      Object* o = table_.Find(ns, keys[i]);
      if (o == nullptr) {
        r.status = Missing(ns, keys[i]);
        if (r.status.code() == absl::StatusCode::kNotFound && RemoteLooksUp(ns)) {
          lift->remote.push_back(i);  // counted once the remote tier answers
        } else {
          ++counters_.get_misses;
        }
        continue;
      }
      if (!o->sealed) {
        r.status = absl::FailedPreconditionError(absl::StrCat("'", keys[i], "' is not sealed yet"));
        continue;
      }
      if (!o->verified) {  // restored, its check still to come: check it first
        r.status = VerifyNow(o, &frees);
        if (!r.status.ok()) continue;
      }
      if (absl::Status q = LeaseQuotaAllows(s->tenant); !q.ok()) {
        r.status = std::move(q);
        continue;
      }
      if (s->leases.size() >= options_.max_leases_per_session) {
        r.status = absl::ResourceExhaustedError(
            absl::StrCat("session holds ", s->leases.size(), " leases, the maximum; Release some"));
        continue;
      }
      if (!lookahead_.empty()) hinted |= ConsumeHint(o);
      if (options_.predict) {
        hinted |= Predict(s, ns, keys[i], want, device, i + 1 == keys.size());
      }
      const bool host = o->copy(TierId::kHost).present, gpu = o->copy(TierId::kGpu).present;
      if (want == WantTier::kGpu) {
        ++(gpu ? counters_.gpu_hits : counters_.gpu_misses);
        if (gpu) GrantLease(s, o, TierId::kGpu, &r);
      } else if (host) {
        ++counters_.get_hits;
        GrantLease(s, o, TierId::kHost, &r);
      } else if (want == WantTier::kAny && gpu) {
        ++counters_.gpu_hits;
        GrantLease(s, o, TierId::kGpu, &r);
      }
      if (r.lease_id == 0) lift->which.push_back(i);  // moved after this pass, off this thread
    }
  }
  Reclaim(std::move(frees));
  if (hinted) PumpLookAhead();
  // Callbacks never run under the lock: they may call back into the store.
  if (!session_ok) {
    return std::move(done)(
        absl::FailedPreconditionError("unknown or closed session; Attach first"));
  }
  lift->keys = std::move(keys);
  if (lift->which.empty() && lift->remote.empty()) return std::move(done)(std::move(lift->out));
  mover_.Submit([this, lift = std::move(lift), done = std::move(done)]() mutable {
    if (!lift->remote.empty()) FindRemote(lift.get());
    RunLift(lift.get());
    std::move(done)(std::move(lift->out));
  });
}

void Store::PrefetchAsync(absl::string_view ns, std::vector<std::string> keys, WantTier tier,
                          absl::Time deadline, int device, PrefetchDone done) {
  auto made = NewLift("Prefetch", ns, keys.size(), tier, deadline, device);
  if (!made.ok()) return std::move(done)(made.status());
  std::unique_ptr<Lift> lift = *std::move(made);
  {
    absl::MutexLock lock(&mu_);
    for (size_t i = 0; i < keys.size(); ++i) {
      GetOutcome& r = lift->out[i];
      r.status = ValidateKey(keys[i]);
      if (!r.status.ok()) continue;
      Object* o = table_.Find(ns, keys[i]);
      if (o == nullptr) {
        // As a Get: a key lost at a restart stays DATA_LOSS; another is brought in from Redis,
        // for at most kMaxPrefetchLookups keys (one round trip or two each, on the executor).
        r.status = Missing(ns, keys[i]);
        if (r.status.code() == absl::StatusCode::kNotFound && RemoteLooksUp(ns)) {
          if (lift->remote.size() < kMaxPrefetchLookups) {
            lift->remote.push_back(i);
          } else {
            r.status = absl::NotFoundError(absl::StrCat(
                "no tensor '", keys[i], "' here; not looked up in the remote tier (at most ",
                kMaxPrefetchLookups, " keys a Prefetch)"));
          }
        }
      } else if (!o->sealed) {
        r.status = absl::FailedPreconditionError(absl::StrCat("'", keys[i], "' is not sealed yet"));
      } else if (!o->copy(lift->to).present) {
        ++counters_.prefetches;
        lift->which.push_back(i);
      }
    }
  }
  lift->keys = std::move(keys);
  auto finish = [](Lift* l) {
    std::vector<PrefetchOutcome> out(l->out.size());
    for (size_t i = 0; i < out.size(); ++i) out[i] = {std::move(l->out[i].status), l->moved[i]};
    return out;
  };
  if (lift->which.empty() && lift->remote.empty()) return std::move(done)(finish(lift.get()));
  mover_.Submit([this, lift = std::move(lift), finish, done = std::move(done)]() mutable {
    if (!lift->remote.empty()) FindRemote(lift.get());
    RunLift(lift.get());
    std::move(done)(finish(lift.get()));
  });
}

void Store::HintRemote(absl::string_view ns, std::vector<std::string> keys, TierId to, int device,
                       absl::Time expiry) {
  // Looked up and adopted (a table entry with its remote copy, nothing moved) on the executor;
  // then queued as hinted: the look-ahead brings them up within its share, in its order.
  auto made =
      NewLift("Hint", ns, keys.size(), to == TierId::kGpu ? WantTier::kGpu : WantTier::kHost,
              absl::InfiniteFuture(), device);  // (clamped to pressure_wait)
  if (!made.ok()) {                             // the Hint's own checks passed: not expected
    absl::MutexLock lock(&mu_);
    --hint_lookups_in_flight_;
    return;
  }
  std::unique_ptr<Lift> lift = *std::move(made);
  lift->keys = std::move(keys);
  lift->hint = true;
  for (size_t i = 0; i < lift->keys.size(); ++i) lift->remote.push_back(i);
  mover_.Submit([this, lift = std::move(lift), to, device, expiry]() mutable {
    FindRemote(lift.get());
    {
      absl::MutexLock lock(&mu_);
      --hint_lookups_in_flight_;
      std::vector<bool> found(lift->keys.size());
      for (size_t i : lift->which) found[i] = true;
      HintOutcome queued;
      for (size_t i = 0; i < lift->keys.size(); ++i) {
        Object* o = found[i] ? table_.Find(lift->ns, lift->keys[i]) : nullptr;
        if (o == nullptr || !o->sealed) {
          ++counters_.lookahead_remote_missed;
          continue;
        }
        ++counters_.lookahead_remote_found;
        QueueHint(o, to, device, expiry, &queued);
      }
      CountHints(queued);
    }
    PumpLookAhead();
  });
}

void Store::RunLift(Lift* lift) {
  std::vector<size_t> alone;
  std::vector<Booked> booked;
  {
    absl::MutexLock lock(&mu_);
    booked = BookLifts(lift, &alone);
  }
  if (!booked.empty()) {
    RunBooked(booked, lift->to);
    Frees frees;
    {
      absl::MutexLock lock(&mu_);
      for (Booked& b : booked) FinishLift(lift, b, &frees);
    }
    Reclaim(std::move(frees), /*now=*/true);
  }
  for (size_t i : alone) LiftOne(lift, i, lift->to);
}

std::optional<TierId> Store::SourceFor(const Object& o, TierId to) const {
  if (to == TierId::kGpu) {
    if (o.copy(TierId::kHost).present) return TierId::kHost;
    return std::nullopt;
  }
  if (o.copy(TierId::kGpu).present) return TierId::kGpu;  // faster than the SSD, never stale
  if (o.copy(TierId::kSsd).present) return TierId::kSsd;
  if (o.copy(TierId::kRemote).present) return TierId::kRemote;
  return std::nullopt;
}

absl::StatusOr<Store::Booked> Store::Book(size_t i, Object* o, TierId to, int device) {
  const std::optional<TierId> from = SourceFor(*o, to);
  if (!from) return absl::FailedPreconditionError("no copy to move from");
  if (*from == TierId::kHost && o->awaiting_check) {
    // Restored bytes not yet checked are copied nowhere (a Get checks them first).
    return absl::UnavailableError("restored after a restart and not yet checked; Get it first");
  }
  tiers::Placement where{"", device};
  if (to == TierId::kHost) where = tiers::Placement{o->pool_class, -1, 0, false, o->tenant};
  // Over a quota: reported (and counted) by DecideLift, which makes no room for it.
  if (!QuotaAllows(o->tenant, to, o->nbytes, /*count=*/false).ok()) {
    return absl::FailedPreconditionError("over a quota");
  }
  auto range = TierOf(to)->Reserve(o->nbytes, where);
  if (!range.ok()) return range.status();
  Copy& c = o->copy(to);
  c.in_flight = true;
  c.range = *range;
  AddReader(o, *from);
  ++o->pins;
  MoveItem item = MoveFrom(*o, *from);
  item.dst = *range;
  item.dst_reserved = true;
  return Booked{i, o, *from, item};
}

std::vector<Store::Booked> Store::BookLifts(Lift* lift, std::vector<size_t>* alone) {
  std::vector<Booked> booked;
  const bool session = !lift->leasing() || table_.FindSession(lift->session_id) != nullptr;
  for (size_t i : lift->which) {
    Object* o = session ? table_.Find(lift->ns, lift->keys[i]) : nullptr;
    const Copy* c = o != nullptr ? &o->copy(lift->to) : nullptr;
    if (o == nullptr || !o->sealed || c->present || c->in_flight) {
      alone->push_back(i);  // reported, or waited for, one by one
      continue;
    }
    auto b = Book(i, o, lift->to, lift->device);
    if (!b.ok()) {
      alone->push_back(i);  // waits for room (or reports why not)
      continue;
    }
    booked.push_back(*std::move(b));
  }
  return booked;
}

void Store::RunBooked(std::span<Booked> booked, TierId to) {
  // One mover batch per source tier.
  for (TierId from : tiers::kAllTiers) {
    std::vector<MoveItem> items;
    for (const Booked& b : booked) {
      if (b.from == from) items.push_back(b.item);  // the objects are pinned
    }
    if (items.empty()) continue;
    mover_.Run(from, to, items);
    size_t j = 0;
    for (Booked& b : booked) {
      if (b.from == from) b.item = items[j++];
    }
  }
}

void Store::Arrived(Lift* lift, size_t i, Object* o, TierId t, bool moved) {
  GetOutcome& r = lift->out[i];
  r.status = absl::OkStatus();
  lift->moved[i] = moved;
  if (lift->hold) {
    if (lift->for_get) ++counters_.get_hits;  // the host stage of a Get for the GPU
    AddReader(o, t);
    ++o->pins;
    lift->held = o;
  } else if (lift->leasing()) {
    if (t == TierId::kHost) ++counters_.get_hits;
    Session* s = table_.FindSession(lift->session_id);
    if (absl::Status q = LeaseQuotaAllows(s->tenant); !q.ok()) {  // the batch may have used it
      r.status = std::move(q);
      return;
    }
    GrantLease(s, o, t, &r);
  } else {
    r.info = Info(*o);
    if (moved) counters_.prefetched_bytes += o->nbytes;
  }
}

void Store::FinishLift(Lift* lift, Booked& b, Frees* frees) {
  Object* o = b.o;
  const TierId to = lift->to;
  Copy& c = o->copy(to);
  c.in_flight = false;
  DropReader(o, b.from);
  --o->pins;
  const bool session = !lift->leasing() || table_.FindSession(lift->session_id) != nullptr;
  if (b.item.status.ok() && !o->retired && session) {
    AddCopy(o, to, b.item.dst, codec::CodecId::kNone);
    if (to == TierId::kGpu) {
      ++counters_.gpu_promotions;
      counters_.gpu_promoted_bytes += o->nbytes;
    } else if (b.from == TierId::kGpu) {
      ++counters_.gpu_demotions;  // a copy down from the GPU, as the GPU migrator makes
      counters_.gpu_demoted_bytes += o->nbytes;
    } else {
      // A read of the SSD copy is a use there too: the SSD policy's order is by last read.
      if (b.from == TierId::kSsd && PolicyOf(TierId::kSsd) != nullptr) {
        PolicyOf(TierId::kSsd)->Access(HandleOf(o));
      }
      ++counters_.promotions;
      counters_.promoted_bytes += o->nbytes;
    }
    Arrived(lift, b.i, o, to, /*moved=*/true);
    return;
  }
  c.range = tiers::Range{};
  FreeRange(to, b.item.dst, frees);  // the range we moved into
  LiftFailed(lift, b, frees);
}

void Store::LiftFailed(Lift* lift, Booked& b, Frees* frees) {
  Object* o = b.o;
  const absl::Status& st = b.item.status;
  const std::string& key = lift->keys[b.i];
  GetOutcome& r = lift->out[b.i];
  const bool session = !lift->leasing() || table_.FindSession(lift->session_id) != nullptr;
  if (st.ok()) {
    r.status = !session ? absl::FailedPreconditionError("session closed during Get")
                        : absl::NotFoundError(absl::StrCat(
                              "'", key, "' was deleted while ",
                              lift->to == TierId::kGpu ? "copying to the GPU" : "swapping in"));
  } else if (b.from == TierId::kGpu || lift->to == TierId::kGpu) {
    // The source copy is still there: a failed copy loses nothing.
    const bool down = b.from == TierId::kGpu;
    ++counters_.gpu_copy_failures;
    spdlog::error("copying '{}' {} the GPU failed: {}", key, down ? "down from" : "up to",
                  st.ToString());
    r.status = absl::Status(st.code(), absl::StrCat("copying '", key, down ? "' from" : "' to",
                                                    " the GPU: ", st.message()));
  } else if (o->durability == Durability::kCache ||
             (b.from == TierId::kRemote && st.code() == absl::StatusCode::kNotFound)) {
    // A CACHE tensor may be dropped: count a miss, never serve the bad bytes. (So is a tensor
    // that left the remote store: this daemon only knew it from there.)
    const char* where = b.from == TierId::kRemote ? "the remote tier" : "swap";
    ++counters_.promotion_failures;
    ++(b.from == TierId::kRemote ? counters_.remote_misses : counters_.swap_misses);
    if (lift->leasing()) ++counters_.get_misses;  // a Prefetch is not a Get
    spdlog::warn("dropping tensor '{}': reading it from {} failed: {}", key, where, st.ToString());
    r.status = absl::NotFoundError(
        absl::StrCat("'", key, "' was lost from ", where, " (", st.message(), ")"));
    if (!o->retired) {
      Retire(o, policy::RemovalReason::kEvicted, frees);  // may free o: not used below
      return;
    }
  } else {
    const char* where = b.from == TierId::kRemote ? "the remote tier" : "swap";
    ++counters_.promotion_failures;
    ++counters_.data_loss;
    spdlog::error("DURABLE tensor '{}' cannot be read from {}: {}", key, where, st.ToString());
    r.status = absl::DataLossError(
        absl::StrCat("'", key, "' cannot be read back from ", where, ": ", st.message()));
  }
  MaybeFreeRetired(o, frees);
}

bool Store::AwaitArrival(Object* o, TierId t, absl::Time deadline, Frees* frees) {
  ++o->pins;
  auto arrived = [o, t]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !o->copy(t).in_flight; };
  const bool ok = mu_.AwaitWithTimeout(absl::Condition(&arrived), deadline - absl::Now());
  --o->pins;
  MaybeFreeRetired(o, frees);
  return ok;
}

Store::LiftStep Store::DecideLift(Lift* lift, size_t i, TierId to, bool host_held, Booked* b,
                                  Object** room_for, Frees* frees) {
  const std::string& key = lift->keys[i];
  GetOutcome& r = lift->out[i];
  if (lift->leasing() && table_.FindSession(lift->session_id) == nullptr) {
    r.status = absl::FailedPreconditionError("session closed during Get");
    return LiftStep::kDone;
  }
  Object* o = table_.Find(lift->ns, key);
  if (o == nullptr) {
    if (to == TierId::kHost && lift->leasing()) ++counters_.get_misses;
    r.status = absl::NotFoundError(absl::StrCat("no tensor '", key, "'"));
    return LiftStep::kDone;
  }
  if (!o->sealed) {  // deleted and created again while the lock was dropped
    r.status = absl::FailedPreconditionError(absl::StrCat("'", key, "' is not sealed yet"));
    return LiftStep::kDone;
  }
  if (o->copy(to).present) {  // moved meanwhile (a concurrent request), or there already
    Arrived(lift, i, o, to, /*moved=*/false);
    return LiftStep::kDone;
  }
  if (o->copy(to).in_flight) {  // share the move in flight
    if (AwaitArrival(o, to, lift->deadline, frees)) return LiftStep::kRetry;
    r.status = absl::DeadlineExceededError(absl::StrCat(
        "'", key, "' still ", to == TierId::kGpu ? "copying to the GPU" : "swapping in"));
    return LiftStep::kDone;
  }
  if (!SourceFor(*o, to)) {
    if (to == TierId::kGpu && !host_held) return LiftStep::kUpToHost;  // SSD only: via host
    r.status = absl::UnavailableError(absl::StrCat("'", key, "' left the host tier"));
    return LiftStep::kDone;
  }
  if (absl::Status q = QuotaAllows(o->tenant, to, o->nbytes); !q.ok()) {
    r.status = std::move(q);
    return LiftStep::kDone;
  }
  auto booked = Book(i, o, to, lift->device);
  if (booked.ok()) {
    *b = *std::move(booked);
    return LiftStep::kMove;
  }
  if (booked.status().code() != absl::StatusCode::kResourceExhausted) {
    r.status = booked.status();
    return LiftStep::kDone;
  }
  if (to == TierId::kGpu) {
    AddReader(o, TierId::kHost);  // keep it on the host while GPU room is made
    ++o->pins;
    *room_for = o;
    return LiftStep::kGpuRoom;
  }
  const uint64_t nbytes = o->nbytes;
  auto pools = host_->pools().Candidates(nbytes, o->pool_class, o->tenant);
  ++o->pins;  // MakeRoom may wait: keep o alive
  const bool retry = pools.ok() && MakeRoom(*pools, nbytes, lift->deadline, frees);
  --o->pins;
  MaybeFreeRetired(o, frees);
  if (retry) return LiftStep::kRetry;
  r.status = absl::ResourceExhaustedError(
      absl::StrCat("no host room to swap in '", key, "' (", nbytes, " bytes)"));
  return LiftStep::kDone;
}

Object* Store::LiftToHostAndHold(Lift* lift, size_t i) {
  Lift inner;
  inner.ns = lift->ns;
  inner.keys = {lift->keys[i]};
  inner.to = TierId::kHost;
  inner.deadline = lift->deadline;
  inner.out.resize(1);
  inner.moved.resize(1);
  inner.hold = true;
  inner.for_get = lift->leasing();
  LiftOne(&inner, 0, TierId::kHost);
  if (!inner.out[0].status.ok()) lift->out[i].status = inner.out[0].status;
  return inner.out[0].status.ok() ? inner.held : nullptr;
}

bool Store::MakeGpuRoom(Lift* lift, size_t i, Object* o, Frees* frees) {
  const uint64_t nbytes = o->nbytes;  // o is pinned
  const uint64_t freed = DemoteGpu(lift->device, nbytes);
  {
    absl::MutexLock lock(&mu_);
    DropReader(o, TierId::kHost);
    --o->pins;
    MaybeFreeRetired(o, frees);
  }
  if (freed > 0 && absl::Now() < lift->deadline) return true;
  lift->out[i].status =
      absl::ResourceExhaustedError(absl::StrCat("no GPU room for '", lift->keys[i], "' (", nbytes,
                                                " bytes): the rest is leased or unsealed"));
  return false;
}

void Store::LiftOne(Lift* lift, size_t i, TierId to) {
  Frees frees;
  Object* host_held = nullptr;  // a copy up through host: the host copy brought up for it
  for (bool again = true; again;) {
    Booked b{};
    Object* room_for = nullptr;
    LiftStep step;
    {
      absl::MutexLock lock(&mu_);
      step = DecideLift(lift, i, to, host_held != nullptr, &b, &room_for, &frees);
    }
    switch (step) {
      case LiftStep::kDone:
        again = false;
        break;
      case LiftStep::kRetry:
        Reclaim(std::move(frees), /*now=*/true);
        frees.clear();
        break;
      case LiftStep::kMove: {
        RunBooked({&b, 1}, to);
        absl::MutexLock lock(&mu_);
        FinishLift(lift, b, &frees);
        again = false;
        break;
      }
      case LiftStep::kUpToHost:
        host_held = LiftToHostAndHold(lift, i);
        again = host_held != nullptr;
        break;
      case LiftStep::kGpuRoom:
        again = MakeGpuRoom(lift, i, room_for, &frees);
        break;
    }
  }
  if (host_held != nullptr) {
    absl::MutexLock lock(&mu_);
    DropReader(host_held, TierId::kHost);
    --host_held->pins;
    MaybeFreeRetired(host_held, &frees);
  }
  Reclaim(std::move(frees), /*now=*/true);
}

void Store::FindRemote(Lift* lift) {
  Frees frees;
  // A Get's lookups count as its hits and misses (and in the remote tier's lookups); a
  // Prefetch's found keys as prefetches.
  const bool get = lift->leasing();
  const auto missed = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (get) ++counters_.get_misses;
  };
  for (size_t i : lift->remote) {
    const std::string& key = lift->keys[i];
    {
      absl::MutexLock lock(&mu_);
      if (RemoteErasing(lift->ns, key)) {  // deleted here; its Redis copy is going
        missed();
        continue;
      }
      if (absl::Now() >= lift->deadline) {  // the call's deadline: no more Redis round trips
        missed();
        lift->out[i].status = absl::DeadlineExceededError(absl::StrCat(
            "no tensor '", key, "' here, and the deadline passed before Redis was asked"));
        continue;
      }
    }
    // No lock: I/O.
    absl::StatusOr<tiers::RemoteFound> found = remote_->Find(lift->ns, key, /*counted=*/get);
    absl::MutexLock lock(&mu_);
    GetOutcome& r = lift->out[i];
    ++counters_.remote_lookups;
    if (!found.ok()) {
      missed();
      ++counters_.remote_misses;
      if (found.status().code() != absl::StatusCode::kNotFound) {
        r.status = absl::NotFoundError(absl::StrCat(
            "no tensor '", key, "' here, and the remote tier: ", found.status().message()));
      }
      continue;
    }
    Object* o = table_.Find(lift->ns, key);
    if (Object* stale = o == nullptr ? table_.FindAny(lift->ns, key) : nullptr;
        stale != nullptr && table_.Expired(*stale)) {
      // This daemon's copy expired (not yet retired): it goes, and the tensor Redis still
      // holds under the name (another daemon's) takes the key.
      ++counters_.expirations;
      Retire(stale, policy::RemovalReason::kDeleted, &frees);
    }
    if (o == nullptr && RemoteErasing(lift->ns, key)) {  // deleted here while it was looked up
      missed();
      ++counters_.remote_misses;
      frees.push_back(PendingFree{TierId::kRemote, found->range});
      continue;
    }
    if (o != nullptr) {  // created here meanwhile: that one wins
      frees.push_back(PendingFree{TierId::kRemote, found->range});
    } else if (o = AdoptRemote(lift->ns, key, *found, &r.status); o == nullptr) {
      missed();
      ++counters_.remote_misses;
      frees.push_back(PendingFree{TierId::kRemote, found->range});
      spdlog::warn("{}", r.status.ToString());
      continue;
    }
    ++counters_.remote_hits;
    if (!get && !lift->hint) ++counters_.prefetches;
    r.status = absl::OkStatus();
    lift->which.push_back(i);
  }
  std::sort(lift->which.begin(), lift->which.end());
  Reclaim(std::move(frees), /*now=*/true);
}

}  // namespace tensord::store
