// Client, Lease and WritableTensor: thin wrappers over internal::Session's RPCs. The Client
// swaps in a new Session when the daemon restarts (Live / Reconnect / Retrying); leases keep
// the Session that granted them and learn from it that they are stale.
#include "tensord/client.h"

#include <algorithm>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "client/session.h"
#include "google/protobuf/util/json_util.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace tensord {
namespace {

using internal::FromGrpc;
using SessionPtr = std::shared_ptr<internal::Session>;

// Reconnect backoff: the first retry after this, doubling up to kMaxBackoff.
constexpr std::chrono::milliseconds kFirstBackoff{50};
constexpr std::chrono::milliseconds kMaxBackoff{1000};
// How long a call that failed with UNAVAILABLE waits for its session's stream to end before it
// concludes that the daemon is still there (draining, say) and reports the error. A daemon that
// died breaks both at the same moment; the watcher thread needs only to be scheduled.
constexpr std::chrono::milliseconds kStreamEndGrace{250};

// The daemon's answer for a session id it does not know (daemon/store): after a restart.
constexpr absl::string_view kUnknownSession = "unknown or closed session";

absl::Status StaleError(std::string_view what) {
  return absl::FailedPreconditionError(
      absl::StrCat(absl::string_view(what.data(), what.size()),
                   " from before the daemon restarted (its session has ended): it is no "
                   "longer valid"));
}

// Returns `st`, or StaleError if it says that the daemon no longer knows `session` (the daemon
// restarted before the watcher noticed; the session is marked dead so that valid() agrees).
absl::Status StaleIfLost(internal::Session& session, absl::Status st, std::string_view what) {
  if (st.code() == absl::StatusCode::kFailedPrecondition &&
      absl::StrContains(st.message(), kUnknownSession)) {
    session.MarkDead();
    return StaleError(what);
  }
  return st;
}

// Whether a call on `session` that returned `st` failed because the daemon lost the session:
// it no longer knows it, or the daemon went away (UNAVAILABLE, and the stream ended too).
bool DaemonLost(internal::Session& session, const absl::Status& st) {
  if (st.code() == absl::StatusCode::kFailedPrecondition) {
    return absl::StrContains(st.message(), kUnknownSession);
  }
  if (st.code() == absl::StatusCode::kUnavailable) return session.WaitDead(kStreamEndGrace);
  return false;
}

const absl::Status& StatusOf(const absl::Status& st) { return st; }
template <typename T>
const absl::Status& StatusOf(const absl::StatusOr<T>& v) {
  return v.status();
}

TensorInfo FromProto(const v1::TensorMeta& m) {
  TensorInfo info;
  info.key = m.key();
  info.dtype = static_cast<DType>(m.dtype());
  info.shape.assign(m.shape().begin(), m.shape().end());
  info.nbytes = m.nbytes();
  info.pool = m.pool();
  info.durability = static_cast<Durability>(m.durability());
  info.scope = static_cast<Scope>(m.scope());
  info.sealed = m.sealed();
  info.location = Location{static_cast<Tier>(m.location().tier()), m.location().arena(),
                           m.location().offset(), m.location().length()};
  info.leases = m.leases();
  info.created_unix_ms = m.created_unix_ms();
  info.ttl_ms = m.ttl_ms();
  info.on_gpu = m.has_gpu_location();
  info.compression = static_cast<Compression>(m.compression());
  info.error_budget = m.error_budget();
  info.codecs.assign(m.codecs().begin(), m.codecs().end());
  info.ssd_stored_bytes = m.ssd_stored_bytes();
  info.remote_stored_bytes = m.remote_stored_bytes();
  if (m.has_ssd_encoding()) {
    info.ssd_codec = m.ssd_encoding().codec();
    info.ssd_rel_rmse = m.ssd_encoding().rel_rmse();
  }
  info.parent = m.parent();
  return info;
}

}  // namespace

const char* CompressionName(Compression c) {
  switch (c) {
    case Compression::kNone:
      return "none";
    case Compression::kLossless:
      return "lossless";
    case Compression::kLossy:
      return "lossy";
    case Compression::kDefault:
      break;
  }
  return "default";
}

// ---- WritableTensor ----

WritableTensor::WritableTensor(std::shared_ptr<internal::Session> session, TensorInfo info,
                               void* data, int device)
    : session_(std::move(session)),
      info_(std::move(info)),
      data_(data),
      open_(true),
      device_(device) {}

WritableTensor::WritableTensor(WritableTensor&& o) noexcept
    : session_(std::move(o.session_)),
      info_(std::move(o.info_)),
      data_(o.data_),
      open_(std::exchange(o.open_, false)),
      device_(o.device_) {}

WritableTensor& WritableTensor::operator=(WritableTensor&& o) noexcept {
  if (this != &o) {
    if (open_) (void)Abort();
    session_ = std::move(o.session_);
    info_ = std::move(o.info_);
    data_ = o.data_;
    open_ = std::exchange(o.open_, false);
    device_ = o.device_;
  }
  return *this;
}

WritableTensor::~WritableTensor() {
  if (open_) (void)Abort();
}

bool WritableTensor::valid() const { return session_ != nullptr && session_->alive(); }

absl::Status WritableTensor::Seal(void* cuda_stream) {
  if (!open_) return absl::FailedPreconditionError("tensor is already sealed or aborted");
  if (!valid()) return StaleError("unsealed tensor");
  // A GPU tensor: record an interprocess event after the writes on `cuda_stream` and wait for
  // it here, then send it; the daemon checks it has completed before publishing the tensor.
  // One event per Seal, alive until the daemon has answered.
  std::optional<cuda::IpcEvent> event;
  std::string handle;
  if (on_gpu()) {
    auto e = cuda::IpcEvent::Create(device_);
    if (!e.ok()) return e.status();
    event.emplace(*std::move(e));
    auto h = event->RecordAndExport(cuda_stream);
    if (!h.ok()) return h.status();
    handle = *std::move(h);
    if (absl::Status st = event->Synchronize(); !st.ok()) return st;
  }
  absl::Status st = StaleIfLost(*session_, session_->Seal(info_.key, handle), "unsealed tensor");
  if (st.ok()) {
    open_ = false;
    info_.sealed = true;
  }
  return st;
}

absl::Status WritableTensor::Abort() {
  if (!open_) return absl::FailedPreconditionError("tensor is already sealed or aborted");
  open_ = false;
  if (!valid()) return StaleError("unsealed tensor");
  return StaleIfLost(*session_, session_->Abort(info_.key), "unsealed tensor");
}

// ---- Lease ----

Lease::Lease(std::shared_ptr<internal::Session> session, TensorInfo info, const void* data,
             uint64_t lease_id)
    : session_(std::move(session)), info_(std::move(info)), data_(data), lease_id_(lease_id) {}

Lease::Lease(Lease&& o) noexcept
    : session_(std::move(o.session_)),
      info_(std::move(o.info_)),
      data_(std::exchange(o.data_, nullptr)),
      lease_id_(std::exchange(o.lease_id_, 0)),
      device_(o.device_) {}

Lease& Lease::operator=(Lease&& o) noexcept {
  if (this != &o) {
    (void)Release();
    session_ = std::move(o.session_);
    info_ = std::move(o.info_);
    data_ = std::exchange(o.data_, nullptr);
    lease_id_ = std::exchange(o.lease_id_, 0);
    device_ = o.device_;
  }
  return *this;
}

Lease::~Lease() { (void)Release(); }

bool Lease::valid() const { return session_ != nullptr && session_->alive(); }

absl::Status Lease::Release() {
  if (lease_id_ == 0) return absl::OkStatus();
  const uint64_t id = std::exchange(lease_id_, 0);
  data_ = nullptr;
  // The daemon that granted it is gone, and lease ids are per instance: send nothing.
  if (!valid()) return StaleError("lease");
  return StaleIfLost(*session_, session_->Release({id}), "lease");
}

// ---- Client ----

Client::Client(const ClientOptions& options, SessionPtr session)
    : options_(options), session_(std::move(session)) {}

Client::~Client() = default;

absl::StatusOr<std::unique_ptr<Client>> Client::Connect(const ClientOptions& options) {
  auto session = internal::Session::Open(options);
  if (!session.ok()) return session.status();
  return std::unique_ptr<Client>(new Client(options, *std::move(session)));
}

SessionPtr Client::Current() const {
  std::lock_guard<std::mutex> lock(mu_);
  return session_;
}

absl::StatusOr<SessionPtr> Client::Live() {
  SessionPtr session = Current();
  if (session->alive() || options_.reconnect_timeout.count() <= 0) return session;
  return Reconnect(session);
}

absl::StatusOr<SessionPtr> Client::Reconnect(const SessionPtr& dead) {
  dead->MarkDead();  // its leases and creates are gone with the old instance
  const uint64_t attempts_seen = reconnect_attempts_.load();
  std::lock_guard<std::mutex> one_at_a_time(reconnect_mu_);
  if (SessionPtr current = Current(); current != dead) return current;  // done by another call
  // Another call has just spent the whole reconnect_timeout on this: do not wait it again.
  if (reconnect_attempts_.load() != attempts_seen) return last_reconnect_error_;
  using Clock = std::chrono::steady_clock;
  const Clock::time_point give_up = Clock::now() + options_.reconnect_timeout;
  std::chrono::milliseconds backoff = kFirstBackoff;
  absl::Status last = absl::UnavailableError("no attempt made");
  while (true) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(give_up - Clock::now());
    if (left.count() <= 0) break;
    auto fresh = internal::Session::Open(options_, std::min(left, options_.deadline));
    if (fresh.ok()) {
      {
        // The caller's `dead` still holds the old session: it is not destroyed under mu_.
        std::lock_guard<std::mutex> lock(mu_);
        session_ = *fresh;
      }
      reconnects_.fetch_add(1);
      reconnect_attempts_.fetch_add(1);
      return *std::move(fresh);
    }
    last = fresh.status();
    // UNAVAILABLE: not up yet, or draining before it stops; anything else will not heal.
    if (last.code() != absl::StatusCode::kUnavailable) break;
    const Clock::duration until_give_up = give_up - Clock::now();
    if (until_give_up <= Clock::duration::zero()) break;
    std::this_thread::sleep_for(std::min<Clock::duration>(backoff, until_give_up));
    backoff = std::min(backoff * 2, kMaxBackoff);
  }
  last_reconnect_error_ =
      last.code() == absl::StatusCode::kUnavailable
          ? absl::UnavailableError(absl::StrCat("tensord did not take a new session within ",
                                                options_.reconnect_timeout.count(),
                                                " ms of losing the old one: ", last.message()))
          : last;
  reconnect_attempts_.fetch_add(1);
  return last_reconnect_error_;
}

template <typename Call>
auto Client::Retrying(Call call) {
  using Result = decltype(call(SessionPtr()));
  auto session = Live();
  if (!session.ok()) return Result(session.status());
  Result result = call(*session);
  if (StatusOf(result).ok() || options_.reconnect_timeout.count() <= 0 ||
      !DaemonLost(**session, StatusOf(result))) {
    return result;
  }
  auto fresh = Reconnect(*session);
  if (!fresh.ok()) return Result(fresh.status());
  return Result(call(*fresh));
}

std::string Client::session_id() const { return Current()->id(); }

std::pair<const uint8_t*, uint64_t> Client::SegmentMapping(uint32_t arena) const {
  return Current()->Mapping(arena);
}

bool Client::gpu_usable() const { return Current()->gpu_usable(); }

std::vector<uint64_t> Client::GpuIpcOpens() const { return Current()->GpuIpcOpens(); }

absl::StatusOr<WritableTensor> Client::Create(std::string_view key, DType dtype,
                                              std::vector<int64_t> shape,
                                              const CreateOptions& options) {
  // Retried whole on a new session: an unsealed create of a dead instance is gone with it.
  return Retrying([&](const SessionPtr& s) -> absl::StatusOr<WritableTensor> {
    v1::CreateRequest request;
    request.set_session_id(s->id());
    request.set_ns(s->ns());
    request.set_key(std::string(key));
    request.set_dtype(static_cast<v1::DType>(dtype));
    for (int64_t d : shape) request.add_shape(d);
    request.set_pool(options.pool);
    request.set_durability(static_cast<v1::Durability>(options.durability));
    request.set_scope(static_cast<v1::Scope>(options.scope));
    request.set_ttl_ms(options.ttl_ms);
    request.set_compression(static_cast<v1::Compression>(options.compression));
    request.set_error_budget(options.error_budget);
    for (const std::string& c : options.codecs) request.add_codecs(c);
    request.set_parent(options.parent);
    request.set_tier(static_cast<v1::Tier>(options.tier));
    if (options.tier == Tier::kGpu && options.device >= 0) {
      auto daemon_device = s->DaemonDevice(options.device);
      if (!daemon_device.ok()) return daemon_device.status();
      request.set_device(*daemon_device);
    }
    v1::CreateResponse response;
    auto ctx = s->Context();
    if (auto st = FromGrpc(s->stub().Create(ctx.get(), request, &response)); !st.ok()) {
      return st;
    }
    TensorInfo info;
    info.key = std::string(key);
    info.dtype = dtype;
    info.shape = shape;  // a copy: this may run twice
    info.nbytes = response.location().length();
    info.pool = response.pool();
    info.durability = options.durability;
    info.scope = options.scope;
    info.ttl_ms = options.ttl_ms;
    info.location =
        Location{static_cast<Tier>(response.location().tier()), response.location().arena(),
                 response.location().offset(), response.location().length()};
    int device = -1;
    auto address = s->Address(response.location(), &device);
    if (!address.ok()) {
      (void)s->Abort(info.key);
      return address.status();
    }
    return WritableTensor(s, std::move(info), *address, device);
  });
}

absl::StatusOr<std::vector<absl::StatusOr<Lease>>> Client::GetBatch(
    std::span<const std::string> keys, Tier want, int device) {
  using Batch = std::vector<absl::StatusOr<Lease>>;
  return Retrying([&](const SessionPtr& s) -> absl::StatusOr<Batch> {
    v1::GetRequest request;
    request.set_session_id(s->id());
    request.set_ns(s->ns());
    for (const std::string& k : keys) request.add_keys(k);
    // A process that cannot open GPU memory asks for host copies only.
    const Tier tier = want == Tier::kAny && !s->gpu_usable() ? Tier::kHost : want;
    request.set_want(static_cast<v1::Tier>(tier));
    if (tier == Tier::kGpu && device >= 0) {
      auto d = s->DaemonDevice(device);
      if (!d.ok()) return d.status();
      request.set_device(*d);
    }
    v1::GetResponse response;
    auto ctx = s->Context();
    if (auto st = FromGrpc(s->stub().Get(ctx.get(), request, &response)); !st.ok()) {
      return st;
    }
    if (static_cast<size_t>(response.results_size()) != keys.size()) {
      return absl::InternalError("daemon answered a different number of keys");
    }
    Batch out;
    out.reserve(keys.size());
    for (const v1::GetResult& r : response.results()) {
      if (r.code() != 0) {
        out.push_back(absl::Status(static_cast<absl::StatusCode>(r.code()), r.message()));
        continue;
      }
      // Build the lease first so that it is released even if mapping fails.
      Lease lease(s, FromProto(r.meta()), nullptr, r.lease_id());
      auto address = s->Address(r.meta().location(), &lease.device_);
      if (!address.ok()) {
        out.push_back(address.status());
        continue;
      }
      lease.data_ = *address;
      out.push_back(std::move(lease));
    }
    return out;
  });
}

absl::StatusOr<Lease> Client::Get(std::string_view key, Tier want, int device) {
  const std::string k(key);
  auto batch = GetBatch(std::span<const std::string>(&k, 1), want, device);
  if (!batch.ok()) return batch.status();
  return std::move((*batch)[0]);
}

absl::Status Client::ReleaseAll(std::span<Lease> leases) {
  std::vector<uint64_t> ids;
  SessionPtr session;  // the leases' own: lease ids are per session and per instance
  for (Lease& l : leases) {
    if (l.lease_id_ == 0) continue;
    if (!l.valid()) return StaleError("lease");  // all or nothing: none is released
    if (session == nullptr) session = l.session_;
    if (l.session_ != session) {
      return absl::InvalidArgumentError("ReleaseAll: the leases come from different sessions");
    }
    ids.push_back(l.lease_id_);
  }
  if (ids.empty()) return absl::OkStatus();
  // Not retried: a new session holds none of these leases.
  absl::Status st = StaleIfLost(*session, session->Release(ids), "lease");
  if (st.ok()) {
    for (Lease& l : leases) {
      l.lease_id_ = 0;
      l.data_ = nullptr;
    }
  }
  return st;
}

absl::Status Client::Delete(std::string_view key) {
  // Retried: a retry after a restart may answer NOT_FOUND (the first one landed, or the tensor
  // did not survive), which is reported as is.
  return Retrying([&](const SessionPtr& s) {
    v1::DeleteRequest request;
    request.set_session_id(s->id());
    request.set_ns(s->ns());
    request.set_key(std::string(key));
    v1::DeleteResponse response;
    return FromGrpc(s->stub().Delete(s->Context().get(), request, &response));
  });
}

absl::StatusOr<TensorInfo> Client::Stat(std::string_view key) {
  return Retrying([&](const SessionPtr& s) -> absl::StatusOr<TensorInfo> {
    v1::StatRequest request;
    request.set_ns(s->ns());
    request.set_key(std::string(key));
    v1::TensorMeta response;
    auto st = FromGrpc(s->stub().Stat(s->Context().get(), request, &response));
    if (!st.ok()) return st;
    return FromProto(response);
  });
}

absl::StatusOr<std::vector<TensorInfo>> Client::List(std::string_view prefix, uint32_t limit) {
  return Retrying([&](const SessionPtr& s) -> absl::StatusOr<std::vector<TensorInfo>> {
    v1::ListRequest request;
    request.set_ns(s->ns());
    request.set_prefix(std::string(prefix));
    request.set_limit(limit);
    v1::ListResponse response;
    auto st = FromGrpc(s->stub().List(s->Context().get(), request, &response));
    if (!st.ok()) return st;
    std::vector<TensorInfo> out;
    for (const v1::TensorMeta& m : response.tensors()) out.push_back(FromProto(m));
    return out;
  });
}

namespace {

Stats FromProto(const v1::Stats& response) {
  Stats out;
  for (const v1::TierStats& t : response.tiers()) {
    out.tiers.push_back(TierStats{static_cast<Tier>(t.tier()), t.present(), t.capacity_bytes(),
                                  t.used_bytes(), t.pinned_bytes(), t.hits(), t.misses(),
                                  t.evictions(), t.hit_ratio()});
  }
  for (const v1::PoolStats& p : response.pools()) {
    out.pools.push_back(PoolStats{
        p.name(), static_cast<Tier>(p.tier()), p.kind(), p.capacity_bytes(), p.used_bytes(),
        p.block_size(), p.blocks_total(), p.blocks_used(), p.largest_free_bytes(), p.allocations(),
        p.allocation_failures(), p.fragmentation(), p.lifetime_copies(), p.idle_samples(),
        p.reuse_after_1(), p.reuse_after_2(), p.idle_mean_s(), p.idle_median_s()});
  }
  out.counters.insert(response.counters().begin(), response.counters().end());
  out.sessions = response.sessions();
  out.leases = response.leases();
  out.objects = response.objects();
  out.uptime_ms = response.uptime_ms();
  if (response.has_swap()) {
    const v1::SwapStats& w = response.swap();
    out.swap = SwapStats{true,
                         w.engine(),
                         w.degraded(),
                         w.reads(),
                         w.writes(),
                         w.bytes_read(),
                         w.bytes_written(),
                         w.read_mbps(),
                         w.write_mbps(),
                         w.io_errors(),
                         w.checksum_failures(),
                         w.largest_free_bytes(),
                         w.fragmentation(),
                         w.ram_capacity_bytes(),
                         w.ram_used_bytes(),
                         w.ram_entries(),
                         w.ram_logical_bytes(),
                         w.ram_reads(),
                         w.ram_writebacks(),
                         w.ram_writeback_bytes()};
  }
  if (response.has_remote()) {
    const v1::RemoteStats& r = response.remote();
    out.remote = RemoteStats{true,
                             r.addresses(),
                             r.cluster(),
                             r.degraded(),
                             r.nodes(),
                             r.lookups(),
                             r.hits(),
                             r.misses(),
                             r.puts(),
                             r.gets(),
                             r.put_bytes(),
                             r.get_bytes(),
                             r.put_mbps(),
                             r.get_mbps(),
                             r.put_latency_ms(),
                             r.get_latency_ms(),
                             r.errors(),
                             r.checksum_failures(),
                             r.degradations(),
                             r.redirections(),
                             r.stored_bytes(),
                             r.entries(),
                             r.redis_used_bytes(),
                             r.redis_max_bytes(),
                             r.last_error(),
                             r.pending_deletes(),
                             r.deletes_replayed(),
                             r.deletes_dropped()};
  }
  const v1::PressureStats& p = response.pressure();
  out.pressure.host_used_ratio = p.host_used_ratio();
  out.pressure.high_watermark = p.high_watermark();
  out.pressure.low_watermark = p.low_watermark();
  if (p.has_mem_available_bytes()) out.pressure.mem_available_bytes = p.mem_available_bytes();
  if (p.has_psi_some_avg10()) out.pressure.psi_some_avg10 = p.psi_some_avg10();
  if (p.has_psi_full_avg10()) out.pressure.psi_full_avg10 = p.psi_full_avg10();
  out.pressure.gpu_used_ratio = p.gpu_used_ratio();
  out.pressure.gpu_high_watermark = p.gpu_high_watermark();
  out.pressure.gpu_low_watermark = p.gpu_low_watermark();
  for (const v1::GpuStats& g : response.gpus()) {
    out.gpus.push_back(GpuStats{g.gpu(), g.model(), g.arena_bytes(), g.used_bytes(),
                                g.device_free_bytes(), g.device_total_bytes(), g.host_pinned()});
  }
  for (const v1::CodecStats& k : response.codecs()) {
    out.codecs.push_back(
        CodecStats{k.codec(), k.encodes(), k.encode_in_bytes(), k.encode_out_bytes(), k.decodes(),
                   k.decode_in_bytes(), k.decode_out_bytes(), k.decode_failures(), k.tried(),
                   k.over_budget(), k.ratio(), k.encode_gbps(), k.decode_gbps(), k.max_rel_rmse()});
  }
  for (const v1::TenantStats& t : response.tenants()) {
    out.tenants.push_back(TenantStats{t.tenant(), t.sessions(), t.leases(), t.host_capacity_bytes(),
                                      t.host_used_bytes(), t.ssd_bytes(), t.gpu_bytes(),
                                      t.quota_rejections(), t.denied_requests()});
  }
  return out;
}

}  // namespace

absl::StatusOr<Stats> Client::GetStats() {
  return Retrying([&](const SessionPtr& s) -> absl::StatusOr<Stats> {
    v1::GetStatsRequest request;
    v1::Stats response;
    auto st = FromGrpc(s->stub().GetStats(s->Context().get(), request, &response));
    if (!st.ok()) return st;
    return FromProto(response);
  });
}

absl::StatusOr<std::vector<PrefetchResult>> Client::Prefetch(std::span<const std::string> keys,
                                                             Tier tier, int device) {
  // Retried: moving a tensor up twice is a no-op the second time.
  return Retrying([&](const SessionPtr& s) -> absl::StatusOr<std::vector<PrefetchResult>> {
    v1::PrefetchRequest request;
    request.set_ns(s->ns());
    for (const std::string& k : keys) request.add_keys(k);
    request.set_tier(static_cast<v1::Tier>(tier));
    if (tier == Tier::kGpu && device >= 0) {
      auto d = s->DaemonDevice(device);
      if (!d.ok()) return d.status();
      request.set_device(*d);
    }
    v1::PrefetchResponse response;
    auto st = FromGrpc(s->stub().Prefetch(s->Context().get(), request, &response));
    if (!st.ok()) return st;
    if (response.results_size() != static_cast<int>(keys.size())) {
      return absl::InternalError("the daemon answered a Prefetch with the wrong number of results");
    }
    std::vector<PrefetchResult> out;
    for (const v1::PrefetchResult& r : response.results()) {
      out.push_back(PrefetchResult{
          absl::Status(static_cast<absl::StatusCode>(r.code()), r.message()), r.moved()});
    }
    return out;
  });
}

absl::StatusOr<HintResult> Client::Hint(std::span<const std::string> keys, Tier tier,
                                        std::chrono::milliseconds ttl, int device) {
  if (ttl.count() < 0 || ttl > std::chrono::hours(1)) {
    return absl::InvalidArgumentError("hint ttl must be between 0 (the default) and 1 hour");
  }
  // Retried: a hint that reached the dead instance is gone with it.
  return Retrying([&](const SessionPtr& s) -> absl::StatusOr<HintResult> {
    v1::HintRequest request;
    request.set_ns(s->ns());
    for (const std::string& k : keys) request.add_keys(k);
    request.set_tier(static_cast<v1::Tier>(tier));
    request.set_ttl_ms(static_cast<uint32_t>(ttl.count()));
    if (tier == Tier::kGpu && device >= 0) {
      auto d = s->DaemonDevice(device);
      if (!d.ok()) return d.status();
      request.set_device(*d);
    }
    v1::HintResponse response;
    auto st = FromGrpc(s->stub().Hint(s->Context().get(), request, &response));
    if (!st.ok()) return st;
    return HintResult{response.accepted(), response.refreshed(), response.unknown(),
                      response.dropped(), response.remote()};
  });
}

absl::StatusOr<std::string> Client::Evict(std::string_view key) {
  return Retrying([&](const SessionPtr& s) -> absl::StatusOr<std::string> {
    v1::EvictRequest request;
    request.set_ns(s->ns());
    request.set_key(std::string(key));
    v1::EvictResponse response;
    auto st = FromGrpc(s->stub().Evict(s->Context().get(), request, &response));
    if (!st.ok()) return st;
    return response.outcome();
  });
}

absl::StatusOr<std::string> Client::GetStatsJson() {
  v1::Stats response;
  absl::Status st = Retrying([&](const SessionPtr& s) {
    v1::GetStatsRequest request;
    response.Clear();
    return FromGrpc(s->stub().GetStats(s->Context().get(), request, &response));
  });
  if (!st.ok()) return st;
  std::string json;
  google::protobuf::util::JsonPrintOptions opts;
  opts.add_whitespace = true;
  opts.preserve_proto_field_names = true;
  opts.always_print_primitive_fields = true;
  if (auto js = google::protobuf::util::MessageToJsonString(response, &json, opts); !js.ok()) {
    return absl::InternalError(std::string(js.message()));
  }
  return json;
}

absl::StatusOr<std::vector<std::pair<std::string, std::string>>> Client::Health() {
  using States = std::vector<std::pair<std::string, std::string>>;
  return Retrying([&](const SessionPtr& s) -> absl::StatusOr<States> {
    auto health = grpc::health::v1::Health::NewStub(s->channel());
    States out;
    for (const char* service :
         {"", "tensord.v1.Tensord", "tensord.host", "tensord.ssd", "tensord.gpu"}) {
      grpc::health::v1::HealthCheckRequest request;
      request.set_service(service);
      grpc::health::v1::HealthCheckResponse response;
      grpc::Status st = health->Check(s->Context().get(), request, &response);
      if (!st.ok() && st.error_code() != grpc::StatusCode::NOT_FOUND) return FromGrpc(st);
      const char* state = !st.ok() ? "UNKNOWN"
                          : response.status() == grpc::health::v1::HealthCheckResponse::SERVING
                              ? "SERVING"
                              : "NOT_SERVING";
      out.emplace_back(service, state);
    }
    return out;
  });
}

absl::Status Client::WatchStats(std::chrono::milliseconds interval,
                                const std::function<bool(const Stats&)>& on_stats) {
  // Reconnects before it starts, but a stream broken by a restart is reported, not resumed:
  // the caller has seen part of it.
  auto session = Live();
  if (!session.ok()) return session.status();
  v1::WatchStatsRequest request;
  request.set_interval_ms(static_cast<uint32_t>(interval.count()));
  grpc::ClientContext ctx;
  auto reader = (*session)->stub().WatchStats(&ctx, request);
  v1::Stats response;
  while (reader->Read(&response)) {
    if (!on_stats(FromProto(response))) {
      ctx.TryCancel();
      while (reader->Read(&response)) {
      }
      reader->Finish().IgnoreError();
      return absl::OkStatus();
    }
  }
  return FromGrpc(reader->Finish());
}

absl::Status Client::Ping() {
  return Retrying([&](const SessionPtr& s) {
    v1::PingRequest request;
    v1::PingResponse response;
    return FromGrpc(s->stub().Ping(s->Context().get(), request, &response));
  });
}

}  // namespace tensord
