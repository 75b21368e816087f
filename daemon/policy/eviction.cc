// The eviction policies, their shared base (tracking, chains, lifetimes) and their registry.
#include "daemon/policy/eviction.h"

#include <algorithm>
#include <bit>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"

namespace tensord::policy {
namespace {

// FindLeaf looks at no more than this many nodes under one candidate: a wider subtree waits
// for the second, chain-blind pass.
constexpr int kLeafSearchBudget = 256;
constexpr size_t kMinGhosts = 1024;

}  // namespace

const char* RemovalReasonName(RemovalReason r) {
  switch (r) {
    case RemovalReason::kDeleted:
      return "deleted";
    case RemovalReason::kDemoted:
      return "demoted";
    case RemovalReason::kEvicted:
      return "evicted";
  }
  return "?";
}

absl::StatusOr<std::unique_ptr<EvictionPolicy>> MakeEvictionPolicy(absl::string_view name,
                                                                   PolicyOptions options) {
  absl::string_view base = name;
  const bool chain = absl::ConsumeSuffix(&base, "+chain");
  if (base == "lru") return std::make_unique<LruPolicy>(chain, options);
  if (base == "s3fifo") return std::make_unique<S3FifoPolicy>(chain, options);
  if (base == "slru") return std::make_unique<SlruPolicy>(chain, options);
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown eviction policy '", name, "' (known: ", absl::StrJoin(kPolicyNames, ", "), ")"));
}

// --- TrackedPolicy

TrackedPolicy::TrackedPolicy(bool chain_aware, PolicyOptions options)
    : chain_aware_(chain_aware),
      options_(options),
      clock_(options.clock != nullptr ? options.clock : Clock::Real()) {}

void TrackedPolicy::Insert(Handle h, Footprint f) {
  auto [it, fresh] = entries_.try_emplace(h);
  if (!fresh) return;
  Entry& e = it->second;
  e.f = f;
  e.last_use = clock_->Now();
  tracked_bytes_ += f.bytes;
  ++classes_[f.space].inserted;
  if (f.id != 0) by_id_[f.id] = h;
  if (f.parent != 0) children_[f.parent].push_back(h);
  OnInsert(h, e);
}

void TrackedPolicy::Access(Handle h) {
  auto it = entries_.find(h);
  if (it == entries_.end()) return;
  Entry& e = it->second;
  const absl::Time now = clock_->Now();
  const double idle_s = std::max(0.0, absl::ToDoubleSeconds(now - e.last_use));
  e.last_use = now;
  ClassStats& c = classes_[e.f.space];
  ++c.idle_samples;
  c.idle_sum_s += idle_s;
  const uint64_t ms = static_cast<uint64_t>(idle_s * 1000);
  c.idle_log2_ms[std::min<size_t>(std::bit_width(ms), c.idle_log2_ms.size() - 1)]++;
  if (++e.uses == 2) ++c.reused;
  if (e.uses == 3) ++c.reused_twice;
  OnAccess(h, e);
}

void TrackedPolicy::Pin(Handle h) {
  if (auto it = entries_.find(h); it != entries_.end()) ++it->second.pins;
}

void TrackedPolicy::Unpin(Handle h) {
  if (auto it = entries_.find(h); it != entries_.end() && it->second.pins > 0) --it->second.pins;
}

void TrackedPolicy::Remove(Handle h, RemovalReason why) {
  auto it = entries_.find(h);
  if (it == entries_.end()) return;
  Entry& e = it->second;
  OnRemove(h, e, why);
  if (resume_ == h) resume_ = 0;
  tracked_bytes_ -= e.f.bytes;
  if (e.f.id != 0) {
    if (auto b = by_id_.find(e.f.id); b != by_id_.end() && b->second == h) by_id_.erase(b);
  }
  if (e.f.parent != 0) {
    if (auto c = children_.find(e.f.parent); c != children_.end()) {
      auto& kids = c->second;
      kids.erase(std::remove(kids.begin(), kids.end(), h), kids.end());
      if (kids.empty()) children_.erase(c);
    }
  }
  entries_.erase(it);
}

bool TrackedPolicy::Eligible(Handle, const Entry& e, const Demand& demand) const {
  if (e.pins > 0) return false;
  return demand.spaces.empty() ||
         std::find(demand.spaces.begin(), demand.spaces.end(), e.f.space) != demand.spaces.end();
}

bool TrackedPolicy::HasLiveChildren(Handle h, const absl::flat_hash_set<Handle>& taken) const {
  const uint64_t id = entries_.find(h)->second.f.id;
  if (id == 0) return false;
  auto it = children_.find(id);
  if (it == children_.end()) return false;
  for (Handle c : it->second) {
    if (!taken.contains(c)) return true;
  }
  return false;
}

Handle TrackedPolicy::FindLeaf(Handle top, const absl::flat_hash_set<Handle>& taken,
                               const absl::flat_hash_set<Handle>& refused,
                               const Demand& demand) const {
  // Depth first, so that one branch goes entirely before the next. A leaf that is pinned,
  // outside the demand or already refused blocks its ancestors but not its siblings.
  absl::InlinedVector<Handle, 16> stack = {top};
  for (int budget = kLeafSearchBudget; !stack.empty() && budget > 0; --budget) {
    const Handle n = stack.back();
    stack.pop_back();
    const Entry& e = entries_.find(n)->second;
    if (n != top && !HasLiveChildren(n, taken)) {
      if (Eligible(n, e, demand) && !refused.contains(n)) return n;
      continue;
    }
    if (auto it = children_.find(e.f.id); e.f.id != 0 && it != children_.end()) {
      for (Handle c : it->second) {
        if (!taken.contains(c)) stack.push_back(c);
      }
    }
  }
  return 0;
}

void TrackedPolicy::Victims(const Demand& demand, absl::FunctionRef<Verdict(Handle)> visit) {
  absl::flat_hash_set<Handle> taken, refused;
  uint64_t bytes = 0;
  // Offers h; false when the call is over (stopped, or the demand is met).
  bool over = false;
  auto give = [&](Handle h) {
    switch (visit(h)) {
      case Verdict::kTake:
        taken.insert(h);
        bytes += entries_.find(h)->second.f.bytes;
        over = bytes >= demand.bytes;
        break;
      case Verdict::kSkip:
        refused.insert(h);
        break;
      case Verdict::kStop:
        over = true;
        break;
      case Verdict::kLast:
        taken.insert(h);
        over = true;
        break;
    }
    return !over;
  };
  auto fresh = [&](Handle h) { return !taken.contains(h) && !refused.contains(h); };
  auto parent_of = [&](Handle h) -> Handle {
    const uint64_t p = entries_.find(h)->second.f.parent;
    if (p == 0) return 0;
    auto it = by_id_.find(p);
    return it == by_id_.end() ? 0 : it->second;
  };

  // Pass 1, chain-aware: a candidate with cached children goes after them, tail first.
  auto chained = [&](Handle c) {
    if (!fresh(c) || !Eligible(c, entries_.find(c)->second, demand)) return true;
    while (HasLiveChildren(c, taken)) {
      Handle v = FindLeaf(c, taken, refused, demand);
      while (v != 0 && fresh(v)) {
        const bool more = give(v);
        if (taken.contains(v)) resume_ = parent_of(v);
        if (!more) return false;
        if (!taken.contains(v)) break;  // refused: it stays, and so do its ancestors
        const Handle p = parent_of(v);
        if (p == 0 || p == c || !fresh(p) || HasLiveChildren(p, taken) ||
            !Eligible(p, entries_.find(p)->second, demand)) {
          break;
        }
        v = p;
      }
      if (v == 0 || !taken.contains(v)) return true;  // a child stays: so does c
    }
    const bool more = give(c);
    if (taken.contains(c)) {
      resume_ = ContinuesChain(entries_.find(c)->second) ? parent_of(c) : 0;
    }
    return more;
  };
  // Pass 2 (or the only pass): the policy's order as it is.
  auto plain = [&](Handle c) {
    if (!fresh(c) || !Eligible(c, entries_.find(c)->second, demand)) return true;
    return give(c);
  };
  if (chain_aware_) {
    // Go on with the chain the last call was taking, from its new tail up.
    while (resume_ != 0 && fresh(resume_) && !HasLiveChildren(resume_, taken) &&
           Eligible(resume_, entries_.find(resume_)->second, demand)) {
      const Handle v = resume_;
      resume_ = 0;
      const bool more = give(v);
      if (taken.contains(v)) resume_ = parent_of(v);
      if (!more) return;
    }
    Scan(chained);
    if (over) return;
  }
  Scan(plain);
}

bool TrackedPolicy::LowReuse(uint32_t space) const {
  auto it = classes_.find(space);
  if (it == classes_.end() || it->second.inserted < options_.min_class_samples) return false;
  uint64_t inserted = 0, reused = 0;
  for (const auto& [s, c] : classes_) {
    inserted += c.inserted;
    reused += c.reused;
  }
  const double all = double(reused) / double(inserted);
  const double mine = double(it->second.reused) / double(it->second.inserted);
  return mine < options_.low_reuse_ratio * all;
}

std::vector<ClassLifetime> TrackedPolicy::Lifetimes() const {
  std::vector<ClassLifetime> out;
  for (const auto& [space, c] : classes_) {
    ClassLifetime l{space, c.inserted, c.reused, c.reused_twice, c.idle_samples};
    if (c.idle_samples > 0) {
      l.idle_mean_s = c.idle_sum_s / double(c.idle_samples);
      uint64_t seen = 0;
      for (size_t b = 0; b < c.idle_log2_ms.size(); ++b) {
        seen += c.idle_log2_ms[b];
        if (2 * seen >= c.idle_samples) {  // the bucket's geometric middle
          l.idle_median_s = b == 0 ? 0 : std::exp2(double(b) - 0.5) / 1000.0;
          break;
        }
      }
    }
    out.push_back(l);
  }
  std::sort(out.begin(), out.end(),
            [](const ClassLifetime& a, const ClassLifetime& b) { return a.space < b.space; });
  return out;
}

// --- LruPolicy

void LruPolicy::OnInsert(Handle h, Entry& e) {
  order_.push_front(h);
  e.pos = order_.begin();
}

void LruPolicy::OnAccess(Handle, Entry& e) { order_.splice(order_.begin(), order_, e.pos); }

void LruPolicy::OnRemove(Handle, Entry& e, RemovalReason) { order_.erase(e.pos); }

void LruPolicy::Scan(absl::FunctionRef<bool(Handle)> offer) {
  for (auto it = order_.rbegin(); it != order_.rend(); ++it) {
    if (!offer(*it)) return;
  }
}

// --- S3FifoPolicy

int S3FifoPolicy::QueueOf(Handle h) const { return Contains(h) ? EntryOf(h).queue : -1; }

void S3FifoPolicy::Enqueue(Handle h, Entry& e, Queue q) {
  queues_[q].push_back(h);
  e.pos = std::prev(queues_[q].end());
  e.queue = q;
  queue_bytes_[q] += e.f.bytes;
}

void S3FifoPolicy::OnInsert(Handle h, Entry& e) {
  e.freq = 0;
  if (ghost_.Take(e.f.id)) {  // seen again soon after it left probation: it earned main
    Enqueue(h, e, kMain);
    return;
  }
  Enqueue(h, e, LowReuse(e.f.space) ? kLow : kSmall);
}

void S3FifoPolicy::OnAccess(Handle, Entry& e) { e.freq = std::min<uint8_t>(3, e.freq + 1); }

void S3FifoPolicy::OnRemove(Handle, Entry& e, RemovalReason why) {
  queues_[e.queue].erase(e.pos);
  queue_bytes_[e.queue] -= e.f.bytes;
  if (why != RemovalReason::kDeleted && e.queue != kMain && e.freq == 0 && e.f.id != 0) {
    Remember(e.f.id);
  }
}

void S3FifoPolicy::Remember(uint64_t id) {
  ghost_.Remember(
      id, 0, std::max(kMinGhosts, static_cast<size_t>(options().ghost_factor * double(size()))));
}

bool S3FifoPolicy::ScanProbation(Queue q, absl::FunctionRef<bool(Handle)> offer) {
  auto& fifo = queues_[q];
  for (auto it = fifo.begin(); it != fifo.end();) {
    const Handle h = *it;
    auto next = std::next(it);
    Entry& e = EntryOf(h);
    if (e.freq > 0) {  // used while on probation: to main, its uses forgotten
      queues_[kMain].splice(queues_[kMain].end(), fifo, it);
      queue_bytes_[q] -= e.f.bytes;
      queue_bytes_[kMain] += e.f.bytes;
      e.queue = kMain;
      e.freq = 0;
    } else if (!offer(h)) {
      return false;
    }
    it = next;
  }
  return true;
}

bool S3FifoPolicy::ScanMain(absl::FunctionRef<bool(Handle)> offer) {
  auto& fifo = queues_[kMain];
  // A used copy is re-queued with one use less, so each is looked at most 4 times.
  size_t steps = 4 * fifo.size() + 1;
  for (auto it = fifo.begin(); it != fifo.end() && steps > 0; --steps) {
    const Handle h = *it;
    auto next = std::next(it);
    Entry& e = EntryOf(h);
    if (e.freq > 0) {
      --e.freq;
      if (next == fifo.end()) continue;  // the last one: look at it again, one use less
      fifo.splice(fifo.end(), fifo, it);
    } else if (!offer(h)) {
      return false;
    }
    it = next;
  }
  return true;
}

void S3FifoPolicy::Scan(absl::FunctionRef<bool(Handle)> offer) {
  if (!ScanProbation(kLow, offer)) return;
  const bool small_first =
      queues_[kMain].empty() ||
      double(queue_bytes_[kSmall]) >= options().s3fifo_small * double(tracked_bytes());
  if (small_first) {
    if (ScanProbation(kSmall, offer)) ScanMain(offer);
  } else {
    if (ScanMain(offer)) ScanProbation(kSmall, offer);
  }
}

}  // namespace tensord::policy
