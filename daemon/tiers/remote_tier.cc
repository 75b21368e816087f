// The remote tier over Redis: the header format, chunked pipelined transfers with checksums, and
// degradation with a probe that brings the tier back (see remote_tier.h for the layout).
#include "daemon/tiers/remote_tier.h"

#include <xxh_x86dispatch.h>  // XXH3 with the AVX2 / AVX-512 code this CPU has

#include <chrono>
#include <cstring>
#include <deque>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "spdlog/spdlog.h"

namespace tensord::tiers {

struct RemoteTier::Entry {
  std::string base;    // the header's key
  bool owned = false;  // written by this daemon (else found)
  bool shared = false;
  bool written = false;
  RemoteTensor tensor;  // owned: what Write puts in the header
  uint64_t content = 0;
  uint32_t chunks = 0;
  uint32_t chunk_bytes = 0;
  uint64_t stored = 0;
  uint32_t header_bytes = 0;  // of the header as last written or read (0: not known)
};

namespace {

constexpr uint32_t kMagic = 0x54524454;  // "TDRT"
constexpr uint16_t kVersion = 1;
// A first look at a header: enough for a key of a few hundred bytes and ~400 chunk checksums
// (1.6 GiB in 4 MiB chunks); a longer header takes a second look.
constexpr uint64_t kProbeBytes = 4 << 10;
constexpr size_t kMaxRank = 32;
constexpr uint64_t kMaxChunks = 1u << 20;
constexpr uint64_t kMaxChunkBytes = 512ull << 20;  // as RemoteTierConfig allows
constexpr uint32_t kWaveChunks = 16;  // chunks per pipeline: bounds the memory one transfer holds
// How long a chunk written for a tensor without expiry lives until its header is in.
constexpr std::chrono::milliseconds kProvisionalExpiry{10 * 60 * 1000};
constexpr size_t kMaxPendingDeletes = 1 << 16;
constexpr int kDeleteAttempts = 5;  // replays of a delete Redis refuses before it is dropped

class Writer {
 public:
  template <typename T>
  void Put(T v) {
    out_.append(reinterpret_cast<const char*>(&v), sizeof(v));
  }
  void Str(absl::string_view s) {
    Put<uint32_t>(static_cast<uint32_t>(s.size()));
    out_.append(s.data(), s.size());
  }
  std::string& out() { return out_; }

 private:
  std::string out_;
};

class Reader {
 public:
  explicit Reader(absl::string_view in) : in_(in) {}
  template <typename T>
  bool Get(T& v) {
    if (in_.size() - pos_ < sizeof(T)) return false;
    std::memcpy(&v, in_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return true;
  }
  bool Str(std::string& s, uint32_t max) {
    uint32_t n = 0;
    if (!Get(n) || n > max || in_.size() - pos_ < n) return false;
    s.assign(in_.data() + pos_, n);
    pos_ += n;
    return true;
  }
  size_t pos() const { return pos_; }

 private:
  absl::string_view in_;
  size_t pos_ = 0;
};

std::string ChunkKey(const std::string& base, uint64_t content, uint32_t i) {
  return absl::StrCat(base, ":", absl::Hex(content, absl::kZeroPad16), ":", i);
}

// (Division first: a hostile header's size near 2^64 must not wrap to a small count.)
uint64_t ChunkCount(uint64_t stored, uint64_t chunk_bytes) {
  return stored == 0 ? 1 : (stored - 1) / chunk_bytes + 1;
}

uint64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

int64_t NowUnixMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// A command's outcome: its transport failure, or Redis's error reply, or OK.
absl::Status Outcome(const absl::StatusOr<redis::Reply>& r) {
  return r.ok() ? redis::ReplyStatus(**r) : r.status();
}

bool Transport(const absl::Status& s) {
  return s.code() == absl::StatusCode::kUnavailable ||
         s.code() == absl::StatusCode::kDeadlineExceeded ||
         s.code() == absl::StatusCode::kPermissionDenied;
}

}  // namespace

uint64_t RemoteContentHash(const std::vector<uint64_t>& sums, uint64_t stored) {
  return XXH3_64bits_withSeed(sums.data(), sums.size() * sizeof(uint64_t), stored);
}

std::string SerializeRemoteHeader(const RemoteHeader& h) {
  Writer w;
  w.Put(kMagic);
  w.Put(kVersion);
  w.Put<uint32_t>(0);  // header_bytes, patched below
  w.Put(h.stored_bytes);
  w.Put(h.chunk_bytes);
  w.Put(h.content);
  w.Put(static_cast<int32_t>(h.tensor.dtype));
  w.Put(h.tensor.codec);
  w.Put(h.tensor.durability);
  w.Put(h.tensor.compression);
  w.Put(h.tensor.nbytes);
  w.Put(h.tensor.created_unix_ms);
  w.Put(h.tensor.expires_unix_ms);
  w.Put<uint32_t>(static_cast<uint32_t>(h.tensor.shape.size()));
  for (int64_t d : h.tensor.shape) w.Put(d);
  w.Str(h.tensor.ns);
  w.Str(h.tensor.key);
  w.Str(h.tensor.pool);
  w.Str(h.tensor.parent);
  w.Put<uint32_t>(static_cast<uint32_t>(h.chunk_sums.size()));
  for (uint64_t s : h.chunk_sums) w.Put(s);
  std::string& out = w.out();
  const uint32_t total = static_cast<uint32_t>(out.size() + sizeof(uint64_t));
  std::memcpy(out.data() + 6, &total, sizeof(total));
  w.Put<uint64_t>(XXH3_64bits(out.data(), out.size()));
  return std::move(out);
}

absl::StatusOr<RemoteHeader> ParseRemoteHeader(absl::string_view bytes) {
  auto bad = [](absl::string_view why) {
    return absl::DataLossError(absl::StrCat("remote header damaged: ", why));
  };
  Reader r(bytes);
  uint32_t magic = 0, total = 0, rank = 0, nsums = 0;
  uint16_t version = 0;
  if (!r.Get(magic) || magic != kMagic) return bad("not a tensord value");
  if (!r.Get(version) || version != kVersion) return bad("unknown version");
  if (!r.Get(total) || total < 16 || total > bytes.size()) return bad("truncated");
  const uint64_t want = XXH3_64bits(bytes.data(), total - sizeof(uint64_t));
  uint64_t got = 0;
  std::memcpy(&got, bytes.data() + total - sizeof(uint64_t), sizeof(got));
  if (want != got) return bad("checksum mismatch");
  RemoteHeader h;
  h.header_bytes = total;
  RemoteTensor& t = h.tensor;
  int32_t dtype = 0;
  Reader in(bytes.substr(0, total - sizeof(uint64_t)));
  in.Get(magic);
  in.Get(version);
  in.Get(total);
  if (!in.Get(h.stored_bytes) || !in.Get(h.chunk_bytes) || !in.Get(h.content) || !in.Get(dtype) ||
      !in.Get(t.codec) || !in.Get(t.durability) || !in.Get(t.compression) || !in.Get(t.nbytes) ||
      !in.Get(t.created_unix_ms) || !in.Get(t.expires_unix_ms) || !in.Get(rank) ||
      rank > kMaxRank) {
    return bad("fields");
  }
  t.dtype = static_cast<DType>(dtype);
  t.shape.resize(rank);
  for (int64_t& d : t.shape) {
    if (!in.Get(d)) return bad("shape");
  }
  if (!in.Str(t.ns, 1 << 10) || !in.Str(t.key, 4 << 10) || !in.Str(t.pool, 1 << 10) ||
      !in.Str(t.parent, 4 << 10) || !in.Get(nsums) || nsums > kMaxChunks) {
    return bad("names");
  }
  if (h.chunk_bytes < 4096 || h.chunk_bytes > kMaxChunkBytes ||
      nsums != ChunkCount(h.stored_bytes, h.chunk_bytes)) {
    return bad("chunk layout");
  }
  // The codec stage keeps an encoding only when it is smaller than the tensor: stored bytes
  // beyond its size are damage (or a hostile writer asking for a huge staging buffer).
  if (h.stored_bytes > t.nbytes) return bad("more stored bytes than the tensor has");
  h.chunk_sums.resize(nsums);
  for (uint64_t& s : h.chunk_sums) {
    if (!in.Get(s)) return bad("chunk checksums");
  }
  if (in.pos() != total - sizeof(uint64_t)) return bad("length");
  if (RemoteContentHash(h.chunk_sums, h.stored_bytes) != h.content) return bad("content hash");
  return h;
}

RemoteTier::RemoteTier(RemoteTierConfig config)
    : config_(std::move(config)), io_(std::max(1, config_.threads)) {}

absl::StatusOr<std::unique_ptr<RemoteTier>> RemoteTier::Create(RemoteTierConfig config) {
  if (config.redis.seeds.empty()) return absl::InvalidArgumentError("remote: no Redis address");
  if (config.chunk_bytes < (64 << 10) || config.chunk_bytes > kMaxChunkBytes) {
    return absl::InvalidArgumentError("remote: chunk_bytes must be 64 KiB .. 512 MiB");
  }
  if (config.instance.empty() || config.instance == "shared" ||
      absl::StrContains(config.instance, ':')) {
    return absl::InvalidArgumentError(
        "remote: the instance name must be non-empty, not 'shared', without ':'");
  }
  std::unique_ptr<RemoteTier> tier(new RemoteTier(std::move(config)));
  tier->Probe();
  tier->prober_ = std::thread([t = tier.get()] { t->ProbeLoop(); });
  return tier;
}

RemoteTier::~RemoteTier() {
  stop_.Notify();
  if (prober_.joinable()) prober_.join();
  absl::MutexLock lock(&mu_);
  if (!pending_deletes_.empty()) {
    spdlog::warn(
        "remote tier: {} deletes never reached Redis; those keys stay until their expiry "
        "or Redis's eviction",
        pending_deletes_.size());
  }
}

std::shared_ptr<redis::Client> RemoteTier::client() const {
  absl::MutexLock lock(&mu_);
  return client_;
}

absl::Status RemoteTier::Failed(absl::Status s) {
  absl::MutexLock lock(&mu_);
  ++stats_.errors;
  if (s.code() == absl::StatusCode::kDataLoss) ++stats_.checksum_failures;
  stats_.last_error = std::string(s.message());
  if (Transport(s) && !degraded_.exchange(true)) {
    ++stats_.degradations;
    spdlog::warn("remote tier degraded: {}", std::string(s.message()));
  }
  return s;
}

void RemoteTier::Probe() {
  std::shared_ptr<redis::Client> c = client();
  const bool fresh = c == nullptr;  // Connect loads the slot map
  if (c == nullptr) {
    absl::StatusOr<std::unique_ptr<redis::Client>> made = redis::Client::Connect(config_.redis);
    if (!made.ok()) {
      Failed(made.status()).IgnoreError();
      return;
    }
    c = std::move(*made);
    absl::MutexLock lock(&mu_);
    client_ = c;
    stats_.cluster = c->cluster();
  }
  // The memory figures tell that Redis answers: every master's, summed (a cluster's memory is
  // theirs together), from the slot map as it is now (topology changes are found here: a
  // failed-over master's replica has its slots). The tier serves only when every master
  // answers (one busy with this daemon's own transfers counts as answering): a silent one's
  // keys would fail their reads and degrade it again at once.
  if (c->cluster() && !fresh) c->RefreshSlots().IgnoreError();
  uint64_t used = 0, max = 0;
  bool unlimited = false;  // a master without maxmemory: so is the whole
  absl::Status s;
  for (absl::StatusOr<redis::Reply>& info :
       c->RunOnMasters(redis::Command{{"INFO", "memory"}, -1})) {
    if (absl::Status one = Outcome(info); !one.ok()) {
      if (one.code() != absl::StatusCode::kResourceExhausted && s.ok()) s = one;
      continue;
    }
    uint64_t node_used = 0, node_max = 0;
    for (absl::string_view line : absl::StrSplit(redis::ReplyString(**info), "\r\n")) {
      if (absl::ConsumePrefix(&line, "used_memory:") && !absl::SimpleAtoi(line, &node_used)) {
        node_used = 0;
      }
      if (absl::ConsumePrefix(&line, "maxmemory:") && !absl::SimpleAtoi(line, &node_max)) {
        node_max = 0;
      }
    }
    used += node_used;
    max += node_max;
    unlimited |= node_max == 0;
  }
  if (unlimited) max = 0;
  if (!s.ok()) {
    Failed(s).IgnoreError();
    // The next probe connects afresh, from every seed (the first node may be the one gone, a
    // cluster's slots may have moved to a promoted replica).
    absl::MutexLock lock(&mu_);
    if (client_ == c) client_ = nullptr;
    return;
  }
  // Deletes made while Redis was away go first, and the tier serves only once none waits
  // (checked and flipped under one lock, which DeleteKeys also queues under): no Get finds what
  // was deleted. A delete that keeps failing for another reason than transport (an ACL without
  // +@scripting) is dropped after a few probes, so it cannot hold the tier down for good.
  for (;;) {
    {
      absl::MutexLock lock(&mu_);
      if (pending_deletes_.empty()) {
        stats_.redis_used_bytes = used;
        stats_.redis_max_bytes = max;
        stats_.redirections = c->redirections();
        if (degraded_.exchange(false)) {
          spdlog::info("remote tier serving: Redis {} answers", config_.redis.seeds[0].ToString());
        }
        return;
      }
    }
    if (!FlushDeletes(*c)) return;  // Redis failed again: still degraded
  }
}

void RemoteTier::ProbeLoop() {
  while (!stop_.WaitForNotificationWithTimeout(absl::FromChrono(config_.probe_interval))) {
    Probe();
  }
}

bool RemoteTier::Shared(absl::string_view ns) const {
  for (const std::string& pattern : config_.shared_namespaces) {
    if (!pattern.empty() && pattern.back() == '*') {
      if (absl::StartsWith(ns, absl::string_view(pattern).substr(0, pattern.size() - 1))) {
        return true;
      }
    } else if (ns == pattern) {
      return true;
    }
  }
  return false;
}

std::string RemoteTier::BaseKey(absl::string_view ns, absl::string_view key) const {
  return absl::StrCat(config_.prefix, ":", Shared(ns) ? "shared" : config_.instance, ":", ns.size(),
                      ":", ns, ":", key);
}

TierUsage RemoteTier::Usage() const {
  absl::MutexLock lock(&mu_);
  TierUsage u;
  u.capacity_bytes = config_.capacity_bytes > 0 ? config_.capacity_bytes : stats_.redis_max_bytes;
  u.used_bytes = stats_.stored_bytes;
  u.largest_free_bytes = u.capacity_bytes > u.used_bytes ? u.capacity_bytes - u.used_bytes : 0;
  if (u.capacity_bytes == 0) u.largest_free_bytes = UINT64_MAX;  // Redis without maxmemory
  return u;
}

RemoteStats RemoteTier::stats() const {
  absl::MutexLock lock(&mu_);
  RemoteStats s = stats_;
  s.degraded = degraded_.load();
  s.entries = entries_.size();
  s.pending_deletes = pending_deletes_.size();
  s.nodes = client_ != nullptr ? client_->Nodes().size() : 0;
  for (const redis::Endpoint& e : config_.redis.seeds) {
    absl::StrAppend(&s.addresses, s.addresses.empty() ? "" : ",", e.ToString());
  }
  return s;
}

absl::StatusOr<Range> RemoteTier::ReserveImpl(uint64_t nbytes, const Placement& where) {
  if (where.remote == nullptr) {
    return absl::InvalidArgumentError("remote tier: a range needs the tensor it holds");
  }
  if (degraded_.load()) return absl::UnavailableError("remote tier degraded");
  auto e = std::make_shared<Entry>();
  e->base = BaseKey(where.remote->ns, where.remote->key);
  e->owned = true;
  e->shared = Shared(where.remote->ns);
  e->tensor = *where.remote;
  e->stored = nbytes;
  e->chunk_bytes = static_cast<uint32_t>(config_.chunk_bytes);
  e->chunks = static_cast<uint32_t>(ChunkCount(nbytes, config_.chunk_bytes));
  absl::MutexLock lock(&mu_);
  if (config_.capacity_bytes > 0 && stats_.stored_bytes + nbytes > config_.capacity_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat("remote tier: no room for ", nbytes,
                                                     " bytes within its ", config_.capacity_bytes));
  }
  stats_.stored_bytes += nbytes;
  const uint64_t handle = next_handle_++;
  entries_[handle] = std::move(e);
  return Range{0, handle, nbytes, nbytes, 0};
}

absl::Status RemoteTier::DeleteKeys(const std::string& base, uint64_t content, uint32_t chunks) {
  // Invariant: while a delete waits, the tier is degraded (Probe replays the queue and flips the
  // tier back only with it empty, under mu_): no lookup, here or through Find, serves a tensor
  // whose delete has not reached Redis.
  std::shared_ptr<redis::Client> c;
  {
    absl::MutexLock lock(&mu_);
    if (degraded_.load() || client_ == nullptr) {
      QueueDelete({base, content, chunks});
      return absl::UnavailableError(
          "remote tier degraded; the delete is queued until Redis answers again");
    }
    c = client_;
  }
  absl::Status s = DeleteKeysOn(*c, {base, content, chunks});
  if (s.ok()) return s;
  absl::MutexLock lock(&mu_);
  QueueDelete({base, content, chunks});
  ++stats_.errors;
  stats_.last_error = std::string(s.message());
  if (!degraded_.exchange(true)) {
    ++stats_.degradations;
    spdlog::warn("remote tier degraded: a delete failed: {}", std::string(s.message()));
  }
  return absl::Status(s.code(),
                      absl::StrCat(s.message(), "; the delete is queued until Redis takes it"));
}

void RemoteTier::QueueDelete(PendingDelete d) {
  if (pending_deletes_.size() >= kMaxPendingDeletes) {
    pending_deletes_.pop_front();
    ++stats_.deletes_dropped;
  }
  pending_deletes_.push_back(std::move(d));
}

absl::Status RemoteTier::DeleteKeysOn(redis::Client& c, const PendingDelete& d) {
  // The header goes only if it still names this content: another writer may have published a
  // new version under the name since (its chunks have other names, so ours may go regardless).
  static constexpr char kDeleteIfSame[] =
      "if redis.call('GETRANGE', KEYS[1], 22, 29) == ARGV[1] then "
      "return redis.call('DEL', KEYS[1]) end return 0";
  const std::string same(reinterpret_cast<const char*>(&d.content), sizeof(d.content));
  std::vector<redis::Command> cmds{redis::Command{{"EVAL", kDeleteIfSame, "1", d.base, same}, 3}};
  std::vector<std::string> keys;
  for (uint32_t i = 1; i < d.chunks; ++i) keys.push_back(ChunkKey(d.base, d.content, i));
  for (const std::string& k : keys) cmds.push_back(redis::Command{{"DEL", k}});
  for (absl::StatusOr<redis::Reply>& r : c.Run(cmds)) {
    absl::Status s = Outcome(r);
    if (!s.ok()) return s;  // the raw failure: the caller books it
  }
  return absl::OkStatus();
}

bool RemoteTier::FlushDeletes(redis::Client& c) {
  std::deque<PendingDelete> todo, kept;
  {
    absl::MutexLock lock(&mu_);
    todo.swap(pending_deletes_);
  }
  absl::Status failed = absl::OkStatus();
  uint64_t replayed = 0, dropped = 0;
  while (!todo.empty()) {
    PendingDelete d = std::move(todo.front());
    todo.pop_front();
    absl::Status s = DeleteKeysOn(c, d);
    if (s.ok()) {
      ++replayed;
      continue;
    }
    failed = s;
    if (Transport(s) && s.code() != absl::StatusCode::kPermissionDenied) {
      kept.push_back(std::move(d));  // Redis went away again: this and the rest wait
      break;
    }
    // Refused (busy, read-only after a failover, an ACL): tried again next probe, and the
    // others go on now, so the whole queue is settled within kDeleteAttempts probes.
    if (++d.attempts < kDeleteAttempts) {
      kept.push_back(std::move(d));
    } else {
      ++dropped;
      spdlog::warn("remote tier: giving up deleting {} after {} tries: {}", d.base, d.attempts,
                   s.ToString());
    }
  }
  absl::MutexLock lock(&mu_);
  stats_.deletes_replayed += replayed;
  stats_.deletes_dropped += dropped;
  // What stays goes back in front of what was queued meanwhile, in order.
  while (!todo.empty()) {
    kept.push_back(std::move(todo.front()));
    todo.pop_front();
  }
  for (auto it = kept.rbegin(); it != kept.rend(); ++it) pending_deletes_.push_front(*it);
  while (pending_deletes_.size() > kMaxPendingDeletes) {
    pending_deletes_.pop_front();
    ++stats_.deletes_dropped;
  }
  if (kept.empty()) return true;
  ++stats_.errors;
  stats_.last_error = std::string(failed.message());
  if (!degraded_.exchange(true)) {  // deletes wait: the tier does not serve
    ++stats_.degradations;
    spdlog::warn("remote tier degraded: deletes wait for Redis: {}", std::string(failed.message()));
  }
  return false;
}

absl::StatusOr<bool> RemoteTier::EraseNamed(absl::string_view ns, absl::string_view key,
                                            uint64_t* content) {
  absl::StatusOr<RemoteFound> found = Find(ns, key, /*counted=*/false);  // a Delete's, not a Get's
  if (content != nullptr) *content = found.ok() ? found->range.checksum : 0;
  if (found.ok()) {
    absl::Status s = Erase(found->range);
    if (!s.ok()) return s;
    return true;
  }
  if (found.status().code() == absl::StatusCode::kNotFound) return false;
  if (found.status().code() != absl::StatusCode::kDataLoss) return found.status();
  // A damaged header: it goes, so that it stops answering (its chunks are unreachable and go
  // with their expiry, or stay until Redis evicts them).
  std::shared_ptr<redis::Client> c = client();
  if (c == nullptr) return absl::UnavailableError("remote tier degraded");
  absl::Status s = Outcome(c->Run1(redis::Command{{"DEL", BaseKey(ns, key)}}));
  if (!s.ok()) return Failed(s);
  return true;
}

void RemoteTier::FreeImpl(const Range& range) {
  std::shared_ptr<Entry> e;
  {
    absl::MutexLock lock(&mu_);
    auto it = entries_.find(range.offset);
    if (it == entries_.end()) return;
    e = std::move(it->second);
    entries_.erase(it);
    if (e->owned) stats_.stored_bytes -= e->stored;
  }
  // Private data nobody else can reach goes with the range; shared tensors stay for the other
  // daemons (Redis's own eviction and the expiry bound them).
  if (e->owned && e->written && !e->shared) {
    if (absl::Status s = DeleteKeys(e->base, e->content, e->chunks); !s.ok()) {
      spdlog::debug("remote tier: {} stays in Redis: {}", e->base, s.ToString());
    }
  }
}

absl::Status RemoteTier::Erase(const Range& range) {
  std::shared_ptr<Entry> e;
  {
    absl::MutexLock lock(&mu_);
    auto it = entries_.find(range.offset);
    if (it == entries_.end()) return absl::NotFoundError("remote tier: unknown range");
    e = it->second;
  }
  bool written = false;
  {
    absl::MutexLock lock(&mu_);
    written = e->written || !e->owned;
    e->written = false;  // nothing left for Free to delete
  }
  absl::Status s = written ? DeleteKeys(e->base, e->content, e->chunks) : absl::OkStatus();
  Free(range);
  return s;
}

void RemoteTier::WriteImpl(std::span<const Transfer> items, TransferDone done) {
  io_.Schedule([this, items = std::vector<Transfer>(items.begin(), items.end()),
                done = std::move(done)]() mutable {
    std::vector<absl::Status> out;
    for (const Transfer& t : items) out.push_back(WriteOne(t));
    std::move(done)(std::move(out));
  });
}

void RemoteTier::ReadImpl(std::span<const Transfer> items, TransferDone done) {
  io_.Schedule([this, items = std::vector<Transfer>(items.begin(), items.end()),
                done = std::move(done)]() mutable {
    std::vector<absl::Status> out;
    for (const Transfer& t : items) out.push_back(ReadOne(t));
    std::move(done)(std::move(out));
  });
}

absl::Status RemoteTier::WriteOne(const Transfer& t) {
  const uint64_t start = NowNs();
  std::shared_ptr<Entry> e;
  {
    absl::MutexLock lock(&mu_);
    auto it = entries_.find(t.range->offset);
    if (it != entries_.end()) e = it->second;
  }
  if (e == nullptr || !e->owned)
    return absl::InternalError("remote tier: write to an unknown range");
  std::shared_ptr<redis::Client> c = client();
  if (c == nullptr || degraded_.load()) return absl::UnavailableError("remote tier degraded");
  const uint64_t len = t.range->length;
  const uint64_t cb = e->chunk_bytes;
  RemoteHeader h;
  h.tensor = e->tensor;
  h.stored_bytes = len;
  h.chunk_bytes = e->chunk_bytes;
  h.chunk_sums.resize(ChunkCount(len, cb));
  for (size_t i = 0; i < h.chunk_sums.size(); ++i) {
    const uint64_t off = i * cb;
    h.chunk_sums[i] = XXH3_64bits(t.host + off, std::min(cb, len - off));
  }
  h.content = RemoteContentHash(h.chunk_sums, len);
  std::string head = SerializeRemoteHeader(h);
  const auto header_bytes = static_cast<uint32_t>(head.size());
  head.append(reinterpret_cast<const char*>(t.host), std::min(cb, len));
  std::string expiry;
  if (h.tensor.expires_unix_ms > 0) {
    if (h.tensor.expires_unix_ms <= NowUnixMs()) return absl::NotFoundError("expired");
    expiry = std::to_string(h.tensor.expires_unix_ms);
  }
  // Chunks first, then the header that makes them reachable. Chunks of a tensor without an
  // expiry are written with a provisional one and made persistent once the header is in: a write
  // cut short (Redis gone, this daemon killed) leaves no chunk behind for good.
  std::vector<std::string> keys;
  keys.reserve(h.chunk_sums.size());
  for (uint32_t i = 1; i < h.chunk_sums.size(); ++i)
    keys.push_back(ChunkKey(e->base, h.content, i));
  std::vector<redis::Command> cmds;
  const std::string provisional = std::to_string(kProvisionalExpiry.count());
  auto set = [&](absl::string_view key, absl::string_view value, bool chunk) {
    redis::Command cmd{{"SET", key, value}};
    if (!expiry.empty()) {
      cmd.args.push_back("PXAT");
      cmd.args.push_back(expiry);
    } else {
      cmd.args.push_back("PX");
      cmd.args.push_back(provisional);
      // NX for chunks: one of the same content already there (another writer of the same
      // bytes, in a shared namespace) keeps its state; the PERSIST below settles it either way.
      if (chunk) cmd.args.push_back("NX");
    }
    cmds.push_back(std::move(cmd));
  };
  for (uint32_t i = 1; i < h.chunk_sums.size(); ++i) {
    const uint64_t off = i * cb;
    set(keys[i - 1],
        absl::string_view(reinterpret_cast<const char*>(t.host) + off, std::min(cb, len - off)),
        true);
    if (cmds.size() == kWaveChunks || i + 1 == h.chunk_sums.size()) {
      for (absl::StatusOr<redis::Reply>& r : c->Run(cmds)) {
        absl::Status s = Outcome(r);
        if (!s.ok()) return Failed(s);
      }
      cmds.clear();
    }
  }
  cmds.clear();
  set(e->base, head, false);
  absl::StatusOr<redis::Reply> r = c->Run1(cmds[0]);
  absl::Status s = Outcome(r);
  if (!s.ok()) return Failed(s);
  if (expiry.empty()) {
    // Chunks, then the header last, made persistent. PERSIST answers 0 both for a key already
    // persistent and for a key gone, so EXISTS follows each: a chunk gone (evicted, or its
    // provisional expiry passed) fails the write. (Plain commands: publishing needs no
    // scripting permission.)
    std::vector<std::string> all = keys;
    all.push_back(e->base);
    size_t persisted = 0;
    absl::Status ps = absl::OkStatus();
    for (size_t first = 0; first < all.size() && ps.ok(); first += kWaveChunks) {
      cmds.clear();
      for (size_t i = first; i < std::min(all.size(), first + kWaveChunks); ++i) {
        cmds.push_back(redis::Command{{"PERSIST", all[i]}});
        cmds.push_back(redis::Command{{"EXISTS", all[i]}});
      }
      std::vector<absl::StatusOr<redis::Reply>> replies = c->Run(cmds);
      for (size_t j = 0; j + 1 < replies.size() && ps.ok(); j += 2) {
        ps = Outcome(replies[j]);
        if (ps.ok()) ps = Outcome(replies[j + 1]);
        if (ps.ok() && redis::ReplyInteger(**replies[j + 1]) == 0) {
          ps = absl::ResourceExhaustedError(
              "remote tier: Redis evicted a chunk before the write was complete");
        }
        if (ps.ok()) ++persisted;
      }
    }
    if (!ps.ok()) {
      // Best effort: what was made persistent gets its provisional expiry back, so that nothing
      // of a failed write stays for good (a daemon killed right here can still leave it).
      cmds.clear();
      for (size_t i = 0; i < persisted; ++i) {
        cmds.push_back(redis::Command{{"PEXPIRE", all[i], provisional}});
      }
      if (!cmds.empty()) (void)c->Run(cmds);
      return Failed(ps);
    }
  }
  t.range->checksum = h.content;
  absl::MutexLock lock(&mu_);
  e->content = h.content;
  e->header_bytes = header_bytes;
  e->written = true;
  ++stats_.puts;
  stats_.put_bytes += len;
  stats_.put_ns += NowNs() - start;
  return absl::OkStatus();
}

absl::Status RemoteTier::ReadOne(const Transfer& t) {
  const uint64_t start = NowNs();
  std::shared_ptr<Entry> e;
  {
    absl::MutexLock lock(&mu_);
    auto it = entries_.find(t.range->offset);
    if (it != entries_.end()) e = it->second;
  }
  if (e == nullptr) return absl::InternalError("remote tier: read of an unknown range");
  std::shared_ptr<redis::Client> c = client();
  if (c == nullptr) return absl::UnavailableError("remote tier degraded");
  std::vector<std::string> keys{e->base};
  for (uint32_t i = 1; i < e->chunks; ++i) keys.push_back(ChunkKey(e->base, e->content, i));
  absl::StatusOr<RemoteHeader> h = absl::InternalError("no header");
  std::string header;  // the first chunk's header, when its bytes are read straight into place
  for (uint32_t first = 0; first < e->chunks; first += kWaveChunks) {
    const uint32_t last = std::min(e->chunks, first + kWaveChunks);
    std::vector<redis::Command> cmds;
    for (uint32_t i = first; i < last; ++i) {
      redis::Command cmd{{"GET", keys[i]}};
      // Read straight into place; the first chunk's header (of the length last seen) apart.
      const uint64_t off = uint64_t{i} * e->chunk_bytes;
      if (e->chunk_bytes > 0 && off < t.range->length && (i > 0 || e->header_bytes > 0)) {
        cmd.into = reinterpret_cast<char*>(t.host + off);
        cmd.into_len = std::min<uint64_t>(e->chunk_bytes, t.range->length - off);
        if (i == 0) {
          cmd.head = &header;
          cmd.head_len = e->header_bytes;
        }
      }
      cmds.push_back(std::move(cmd));
    }
    std::vector<absl::StatusOr<redis::Reply>> replies = c->Run(cmds);
    for (absl::StatusOr<redis::Reply>& r : replies) {
      absl::Status s = Outcome(r);
      if (!s.ok()) return Failed(s);
      if (redis::ReplyIsNil(**r)) {
        return absl::NotFoundError(
            "remote tier: the tensor is gone from Redis (expired or evicted)");
      }
    }
    if (first == 0) {
      h = ParseRemoteHeader(redis::ReplyString(**replies[0]));
      if (!h.ok()) return Failed(h.status());
      if (h->content != e->content) {
        return absl::NotFoundError("remote tier: the tensor was replaced in Redis");
      }
      if (h->stored_bytes != t.range->length || h->chunk_sums.size() != e->chunks) {
        return Failed(absl::DataLossError("remote tier: header does not match the range"));
      }
    }
    const uint64_t cb = h->chunk_bytes;
    for (uint32_t i = first; i < last; ++i) {
      const redisReply& reply = **replies[i - first];
      absl::string_view bytes = redis::ReplyString(reply);
      const uint64_t off = uint64_t{i} * cb;
      const uint64_t want = std::min(cb, h->stored_bytes - off);
      if (i == 0) bytes.remove_prefix(std::min<size_t>(bytes.size(), h->header_bytes));
      if (redis::ReplyWentInto(reply)) {  // read into place: into_len bytes there
        if ((i == 0 && !bytes.empty()) || cmds[i - first].into_len != want) {
          return Failed(absl::DataLossError("remote tier: header does not match the range"));
        }
        bytes = absl::string_view(reinterpret_cast<const char*>(t.host + off), want);
      }
      if (bytes.size() != want || XXH3_64bits(bytes.data(), bytes.size()) != h->chunk_sums[i]) {
        return Failed(absl::DataLossError(
            absl::StrCat("remote tier: chunk ", i, " of ", e->base, " fails its checksum")));
      }
      // (A chunk read straight into place is there already.)
      if (bytes.data() != reinterpret_cast<const char*>(t.host + off)) {
        std::memcpy(t.host + off, bytes.data(), bytes.size());
      }
    }
  }
  absl::MutexLock lock(&mu_);
  ++stats_.gets;
  stats_.get_bytes += h->stored_bytes;
  stats_.get_ns += NowNs() - start;
  return absl::OkStatus();
}

absl::StatusOr<RemoteFound> RemoteTier::Find(absl::string_view ns, absl::string_view key,
                                             bool counted) {
  auto count = [this, counted](bool hit) {
    if (!counted) return;
    absl::MutexLock lock(&mu_);
    ++stats_.lookups;
    ++(hit ? stats_.hits : stats_.misses);
  };
  std::shared_ptr<redis::Client> c = client();
  if (c == nullptr || degraded_.load()) return absl::UnavailableError("remote tier degraded");
  const std::string base = BaseKey(ns, key);
  std::string probe_end = std::to_string(kProbeBytes - 1);
  absl::StatusOr<redis::Reply> r = c->Run1(redis::Command{{"GETRANGE", base, "0", probe_end}});
  absl::Status s = Outcome(r);
  if (!s.ok()) return Failed(s);
  std::string head(redis::ReplyString(**r));
  if (head.empty()) {
    count(false);
    return absl::NotFoundError(absl::StrCat("remote tier: no ", base));
  }
  if (head.size() >= 10) {  // a header longer than the first look: read the rest
    uint32_t total = 0;
    std::memcpy(&total, head.data() + 6, sizeof(total));
    if (total > head.size() && total <= (64u << 20)) {
      r = c->Run1(redis::Command{{"GETRANGE", base, "0", std::to_string(total - 1)}});
      s = Outcome(r);
      if (!s.ok()) return Failed(s);
      head = std::string(redis::ReplyString(**r));
    }
  }
  absl::StatusOr<RemoteHeader> h = ParseRemoteHeader(head);
  if (!h.ok()) return Failed(h.status());
  if (h->tensor.ns != ns || h->tensor.key != key) {
    return Failed(
        absl::DataLossError(absl::StrCat("remote tier: ", base, " holds another tensor")));
  }
  if (h->tensor.expires_unix_ms > 0 && h->tensor.expires_unix_ms <= NowUnixMs()) {
    count(false);
    return absl::NotFoundError("remote tier: expired");
  }
  auto e = std::make_shared<Entry>();
  e->base = base;
  e->shared = Shared(ns);
  e->written = true;
  e->tensor = h->tensor;
  e->content = h->content;
  e->chunks = static_cast<uint32_t>(h->chunk_sums.size());
  e->chunk_bytes = h->chunk_bytes;
  e->header_bytes = h->header_bytes;
  e->stored = h->stored_bytes;
  count(true);
  absl::MutexLock lock(&mu_);
  const uint64_t handle = next_handle_++;
  entries_[handle] = e;
  return RemoteFound{Range{0, handle, h->stored_bytes, h->stored_bytes, h->content}, h->tensor};
}

}  // namespace tensord::tiers
