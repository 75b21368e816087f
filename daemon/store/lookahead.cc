// Look-ahead: hints from schedulers (Hint), the protected window and the promotions it starts.
// The queue and the window are policy decisions (policy/lookahead.h); here they meet the table:
// a hinted copy in the window is guarded (an eviction-policy pin of its own, separate from
// leases and readers), and what the window holds off its tier is promoted through PrefetchAsync,
// a few batches in flight, lowest rank first. Counters: issued (moves started), used (read after
// its move finished), late (read while the move was in flight), wasted (expired or deleted after
// a move, unread), failed (the move failed), bytes moved.
#include <algorithm>

#include "absl/strings/str_cat.h"
#include "daemon/store/store.h"
#include "daemon/store/validation.h"

namespace tensord::store {
namespace {

constexpr size_t kHintBatch = 32;  // keys per promotion batch
// Promotion batches in flight: up to 3, and one executor thread fewer than there are (at least
// one), so that promotions alone never take every thread from a Get's lift; other queued work
// (creates waiting for room, evictions, publishes) shares the same FIFO executor. trace_bench
// at 5%: one batch at a time left 6-10% of prefetches late, three (with "late" counted per key,
// not per batch) 2-5%, and the store's Get latency p50 / p99 stayed 0.5 / 21-23 ms.
constexpr int kMaxHintBatchesInFlight = 3;
constexpr size_t kHintKeysPerLock = 1024;  // keys a Hint queues per hold of the lock
constexpr absl::Duration kMaxHintTtl = absl::Hours(1);
constexpr absl::Duration kPromotionDeadline = absl::Seconds(30);
// Keys of one Hint not here that are looked up in the remote tier (as a Prefetch's), and Hints
// whose lookups may run at once (on the executor): past that, such keys are unknown.
constexpr size_t kMaxHintLookups = 64;
constexpr int kMaxHintLookupsInFlight = 2;

TierId TierOfIndex(uint8_t i) {
  for (TierId t : tiers::kAllTiers) {
    if (tiers::Index(t) == i) return t;
  }
  return TierId::kHost;
}

}  // namespace

void Store::Guard(Object* o, TierId t) {
  if (Guarded(*o, t)) return;
  o->guarded |= TierBit(t);
  if (PolicyOf(t) != nullptr) PolicyOf(t)->Pin(HandleOf(o));  // ignored while untracked
}

void Store::Unguard(Object* o, TierId t) {
  if (!Guarded(*o, t)) return;
  o->guarded &= uint8_t(~TierBit(t));
  if (PolicyOf(t) != nullptr) PolicyOf(t)->Unpin(HandleOf(o));
}

void Store::GuardedCopyLeft(Object* o, TierId t) {
  policy::Hinted* e = lookahead_.Find(HandleOf(o));
  if (e == nullptr || !e->in_window || TierOfIndex(e->tier) != t) return;
  // Demoted while its hint was queued (a write already under way, an operator's Evict): it
  // needs its move up again.
  e->issued = e->arrived = false;
  lookahead_.NeedsMove(e->h);
}

bool Store::Predict(Session* s, absl::string_view ns, absl::string_view key, WantTier want,
                    int device, bool queue) {
  const std::vector<std::string> next = predictor_.Observe(reinterpret_cast<uintptr_t>(s), ns, key);
  if (!queue) return false;
  const TierId to = want == WantTier::kGpu ? TierId::kGpu : TierId::kHost;
  bool queued = false;
  for (const std::string& k : next) {
    Object* o = table_.Find(ns, k);
    if (o == nullptr || !o->sealed || o->copy(to).present) continue;        // nothing to bring up
    if (want == WantTier::kAny && o->copy(TierId::kGpu).present) continue;  // served from there
    if (lookahead_.Find(HandleOf(o)) != nullptr) continue;                  // hinted already
    if (lookahead_.Add(HandleOf(o), o->nbytes, uint8_t(tiers::Index(to)), device,
                       Now() + options_.predict_ttl) == policy::LookAhead::Added::kAdded) {
      ++counters_.lookahead_predicted;
      queued = true;
    }
  }
  return queued;
}

bool Store::ConsumeHint(Object* o) {
  std::optional<policy::Hinted> e = lookahead_.Take(HandleOf(o));
  if (!e) return false;
  // Late only if this tensor's own move is still under way: a batch reports when its last key
  // arrived, but a key whose copy is already in place is read without waiting for the rest.
  if (e->issued) {
    const bool there = e->arrived || o->copy(TierOfIndex(e->tier)).present;
    ++(there ? counters_.lookahead_used : counters_.lookahead_late);
  }
  Unguard(o, TierOfIndex(e->tier));
  return true;
}

void Store::ForgetHint(Object* o) {
  std::optional<policy::Hinted> e = lookahead_.Take(HandleOf(o));
  if (!e) return;
  if (e->issued) ++counters_.lookahead_wasted;
  Unguard(o, TierOfIndex(e->tier));
}

absl::StatusOr<HintOutcome> Store::Hint(absl::string_view ns, std::span<const std::string> keys,
                                        WantTier tier, absl::Duration ttl, int device) {
  if (absl::Status st = ValidateNamespace(ns); !st.ok()) return st;
  if (keys.size() > kMaxHintKeys) {
    return absl::InvalidArgumentError(
        absl::StrCat("a Hint carries at most ", kMaxHintKeys, " keys, not ", keys.size()));
  }
  if (tier == WantTier::kSsd) {
    return absl::InvalidArgumentError("hints promote to HOST or GPU, not SSD");
  }
  if (absl::Status st = CheckWant(tier, device); !st.ok()) return st;  // GPU present, device
  if (ttl < absl::ZeroDuration() || ttl > kMaxHintTtl) {
    return absl::InvalidArgumentError(absl::StrCat("hint ttl must be between 0 (the default, ",
                                                   absl::FormatDuration(options_.hint_ttl),
                                                   ") and 1 hour"));
  }
  for (const std::string& key : keys) {
    if (absl::Status st = ValidateKey(key); !st.ok()) return st;
  }
  const TierId to = tier == WantTier::kGpu ? TierId::kGpu : TierId::kHost;
  const absl::Time expiry = Now() + (ttl == absl::ZeroDuration() ? options_.hint_ttl : ttl);
  HintOutcome out;
  // Keys not here that the remote tier may hold (another daemon's): brought in, then queued.
  std::vector<std::string> remote;
  bool looks_up = RemoteLooksUp(ns);
  if (looks_up) {  // takes a lookup slot (HintRemote gives it back)
    absl::MutexLock lock(&mu_);
    looks_up = hint_lookups_in_flight_ < kMaxHintLookupsInFlight;
    if (looks_up) ++hint_lookups_in_flight_;
  }
  // In slices, so that a large hint never holds the lock long enough to slow other requests.
  for (size_t first = 0; first < keys.size(); first += kHintKeysPerLock) {
    absl::MutexLock lock(&mu_);
    HintOutcome slice;
    for (size_t i = first; i < std::min(keys.size(), first + kHintKeysPerLock); ++i) {
      Object* o = table_.Find(ns, keys[i]);
      if (o == nullptr && looks_up && remote.size() < kMaxHintLookups &&
          Missing(ns, keys[i]).code() == absl::StatusCode::kNotFound &&
          !RemoteErasing(ns, keys[i])) {
        ++slice.remote;
        remote.push_back(keys[i]);
        continue;
      }
      if (o == nullptr || !o->sealed) {
        ++slice.unknown;
        continue;
      }
      QueueHint(o, to, device, expiry, &slice);
    }
    CountHints(slice);
    out.accepted += slice.accepted;
    out.refreshed += slice.refreshed;
    out.unknown += slice.unknown;
    out.dropped += slice.dropped;
    out.remote += slice.remote;
  }
  if (!remote.empty()) {
    HintRemote(ns, std::move(remote), to, device, expiry);
  } else if (looks_up) {
    absl::MutexLock lock(&mu_);
    --hint_lookups_in_flight_;
  }
  PumpLookAhead();
  return out;
}

void Store::QueueHint(Object* o, TierId to, int device, absl::Time expiry, HintOutcome* out) {
  switch (lookahead_.Add(HandleOf(o), o->nbytes, uint8_t(tiers::Index(to)), device, expiry)) {
    case policy::LookAhead::Added::kAdded:
      ++out->accepted;
      break;
    case policy::LookAhead::Added::kRefreshed:
      ++out->refreshed;
      break;
    case policy::LookAhead::Added::kFull:
      ++out->dropped;
      break;
  }
}

void Store::CountHints(const HintOutcome& h) {
  counters_.lookahead_hints += h.accepted;
  counters_.lookahead_refreshed += h.refreshed;
  counters_.lookahead_unknown += h.unknown;
  counters_.lookahead_dropped += h.dropped;
}

void Store::PumpLookAhead() {
  {
    absl::MutexLock lock(&mu_);
    if (lookahead_.empty()) return;
    if (lookahead_pumping_) {  // another thread (or this one, further up) is at it
      lookahead_again_ = true;
      return;
    }
    lookahead_pumping_ = true;
  }
  while (true) {
    std::string ns;
    std::vector<std::string> keys;
    std::vector<uint64_t> issues;  // each key's move number
    WantTier want = WantTier::kHost;
    int device = -1;
    {
      absl::MutexLock lock(&mu_);
      lookahead_again_ = false;
      lookahead_.Expire(Now(), [&](const policy::Hinted& e) {
        ++counters_.lookahead_expired;
        if (e.issued) ++counters_.lookahead_wasted;
        Unguard(ObjectOf(e.h), TierOfIndex(e.tier));
      });
      std::array<uint64_t, policy::kHintTiers> budget = {};
      budget[tiers::Index(TierId::kHost)] =
          uint64_t(options_.hint_share * double(host_->Usage().capacity_bytes));
      if (gpu_ != nullptr) {
        budget[tiers::Index(TierId::kGpu)] =
            uint64_t(options_.hint_share * double(gpu_->Usage().capacity_bytes));
      }
      lookahead_.Extend(budget, [&](policy::Hinted& e) {
        Object* o = ObjectOf(e.h);
        const TierId t = TierOfIndex(e.tier);
        Guard(o, t);
        if (!o->copy(t).present) lookahead_.NeedsMove(e.h);
      });
      const int in_flight = std::clamp(options_.executor_threads - 1, 1, kMaxHintBatchesInFlight);
      if (lookahead_moving_ < in_flight) {
        auto together = [](const policy::Hinted& a, const policy::Hinted& b) {
          return a.tier == b.tier && a.device == b.device && ObjectOf(a.h)->ns == ObjectOf(b.h)->ns;
        };
        // Until a batch has keys or nothing waits: what arrived some other way meanwhile
        // needs no move.
        for (bool more = true; keys.empty() && more;) {
          const std::vector<policy::Hinted*> moves = lookahead_.NextMoves(kHintBatch, together);
          more = !moves.empty();
          for (policy::Hinted* e : moves) {
            Object* o = ObjectOf(e->h);
            const TierId t = TierOfIndex(e->tier);
            // Here already, or on its way (a late read's move, still running): nothing to start.
            if (o->copy(t).present || o->copy(t).in_flight) continue;
            e->issued = true;
            e->arrived = false;
            e->issue = ++lookahead_issues_;
            issues.push_back(e->issue);
            ns = o->ns;
            want = t == TierId::kGpu ? WantTier::kGpu : WantTier::kHost;
            device = e->device;
            keys.push_back(o->key);
          }
        }
        if (!keys.empty()) {
          ++lookahead_moving_;
          counters_.lookahead_issued += keys.size();
        }
      }
      if (keys.empty() && !lookahead_again_) {
        lookahead_pumping_ = false;
        return;
      }
    }
    if (keys.empty()) continue;
    std::vector<std::string> sent = keys;
    PrefetchAsync(ns, std::move(keys), want, absl::Now() + kPromotionDeadline, device,
                  [this, ns, sent = std::move(sent),
                   issues = std::move(issues)](absl::StatusOr<std::vector<PrefetchOutcome>> r) {
                    {
                      absl::MutexLock lock(&mu_);
                      --lookahead_moving_;
                      for (size_t i = 0; i < sent.size(); ++i) {
                        const bool ok = r.ok() && (*r)[i].status.ok();
                        Object* o = table_.Find(ns, sent[i]);
                        if (o == nullptr) continue;
                        if (ok && (*r)[i].moved) counters_.lookahead_bytes += o->nbytes;
                        policy::Hinted* e = lookahead_.Find(HandleOf(o));
                        // Read already (late), gone, or moved again since (a later batch reports
                        // that).
                        if (e == nullptr || !e->issued || e->issue != issues[i]) continue;
                        if (ok) {
                          e->arrived = true;
                        } else {
                          ++counters_.lookahead_failed;  // not used, not wasted: failed
                          const TierId t = TierOfIndex(e->tier);
                          lookahead_.Take(HandleOf(o));
                          Unguard(o, t);
                        }
                      }
                    }
                    PumpLookAhead();  // the next batch
                  });
  }
}

}  // namespace tensord::store
