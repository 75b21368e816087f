// Request handlers: decode, call the store, encode. Store calls are short bookkeeping under one
// mutex; what must wait (a swap-in, a copy up, room) the store completes on its own executor
// through a callback, which finishes the reactor. No handler blocks a gRPC thread.
#include "daemon/service/tensord_service.h"

#include <atomic>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "daemon/service/convert.h"
#include "spdlog/spdlog.h"

namespace tensord::service {
namespace {

// The request's deadline, for waits under memory pressure.
absl::Time DeadlineOf(const grpc::CallbackServerContext* ctx) {
  const auto d = ctx->deadline();
  if (d >= std::chrono::system_clock::now() + std::chrono::hours(24 * 365)) {
    return absl::InfiniteFuture();
  }
  return absl::FromChrono(d);
}

// A server stream that only reports an error (Finish is called by its creator).
template <typename T>
class RejectedStream final : public grpc::ServerWriteReactor<T> {
 public:
  void OnDone() override { delete this; }
};

grpc::ServerUnaryReactor* Done(grpc::CallbackServerContext* ctx, const absl::Status& status) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  reactor->Finish(ToGrpc(status));
  return reactor;
}

// One per attached client. The session lives exactly as long as this stream.
class AttachReactor final : public grpc::ServerWriteReactor<v1::AttachEvent> {
 public:
  AttachReactor(TensordService* service, const std::vector<tiers::HostSegment>& segments,
                const std::vector<tiers::GpuArena>& gpu_arenas, const std::string& instance_id,
                const v1::AttachRequest& request, const absl::Status& admit)
      : service_(service) {
    auto session = admit.ok() ? service_->OpenSession(request.client_name())
                              : absl::StatusOr<std::string>(admit);
    if (!session.ok()) {
      closed_ = true;
      finished_ = true;
      Finish(ToGrpc(session.status()));
      return;
    }
    session_id_ = *session;
    v1::Welcome* welcome = event_.mutable_welcome();
    welcome->set_session_id(session_id_);
    welcome->set_daemon_version(TENSORD_VERSION);
    welcome->set_instance_id(instance_id);
    for (const tiers::HostSegment& s : segments) {
      v1::Segment* seg = welcome->add_segments();
      seg->set_id(s.id);
      seg->set_shm_name(s.shm_name);
      seg->set_size(s.size);
      seg->set_pool(s.pool);
    }
    for (const tiers::GpuArena& a : gpu_arenas) {
      v1::GpuArena* g = welcome->add_gpu_arenas();
      g->set_id(a.id);
      g->set_device(a.device);
      g->set_uuid(a.uuid);
      g->set_size(a.size);
      g->set_ipc_handle(a.ipc_handle);
      g->set_name(a.name);
    }
    StartWrite(&event_);
  }

  void OnWriteDone(bool ok) override {
    // After the welcome the stream stays open and idle until the client goes away.
    if (!ok) End(grpc::Status(grpc::StatusCode::UNAVAILABLE, "client stream broke"));
  }
  void OnCancel() override { End(grpc::Status::CANCELLED); }
  void OnDone() override {
    CloseSession();
    delete this;
  }

 private:
  void CloseSession() {
    if (!closed_.exchange(true)) service_->CloseSession(session_id_);
  }
  void End(const grpc::Status& status) {
    CloseSession();
    if (!finished_.exchange(true)) Finish(status);
  }

  TensordService* const service_;
  std::string session_id_;
  v1::AttachEvent event_;
  std::atomic<bool> closed_{false};
  std::atomic<bool> finished_{false};
};

}  // namespace

v1::Stats TensordService::Snapshot() const {
  const auto uptime = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - started_);
  v1::Stats stats;
  ToProto(store_->Stats(), static_cast<uint64_t>(uptime.count()), &stats);
  if (who_.kind != Identity::Kind::kOperator) {  // a tenant sees its own entry and pool only
    auto* tenants = stats.mutable_tenants();
    for (int i = tenants->size() - 1; i >= 0; --i) {
      if (who_.kind == Identity::Kind::kStranger || i != who_.tenant) tenants->DeleteSubrange(i, 1);
    }
    const std::string mine = absl::StrCat("tenant.", store_->tenants().name(who_.tenant));
    auto* pools = stats.mutable_pools();
    for (int i = pools->size() - 1; i >= 0; --i) {
      const std::string& name = pools->Get(i).name();
      if (absl::StartsWith(name, "tenant.") && name != mine) pools->DeleteSubrange(i, 1);
    }
  }
  return stats;
}

absl::Status TensordService::Admit() const {
  return draining_.load() ? absl::UnavailableError("tensord is shutting down (draining)")
                          : absl::OkStatus();
}

absl::Status TensordService::Denied(std::string message) const {
  store_->CountDenied(who_.kind == Identity::Kind::kTenant
                          ? std::optional<store::TenantId>(who_.tenant)
                          : std::nullopt);
  return absl::PermissionDeniedError(std::move(message));
}

absl::Status TensordService::Allow(absl::string_view ns) const {
  switch (who_.kind) {
    case Identity::Kind::kOperator:
      return absl::OkStatus();
    case Identity::Kind::kStranger:
      return Denied(
          "this peer's uid and groups belong to no [[tenant]] of this daemon; ask its operator");
    case Identity::Kind::kTenant:
      break;
  }
  if (store_->tenants().Allows(who_.tenant, ns)) return absl::OkStatus();
  // Bounded and escaped: the namespace is the client's text.
  return Denied(absl::StrCat("tenant '", store_->tenants().name(who_.tenant),
                             "' may not use namespace '", absl::CHexEscape(ns.substr(0, 128)),
                             "'"));
}

absl::Status TensordService::OwnSession(const std::string& session_id) const {
  if (who_.kind == Identity::Kind::kOperator) return absl::OkStatus();
  {
    absl::MutexLock lock(&sessions_mu_);
    if (sessions_.contains(session_id)) return absl::OkStatus();
  }
  // Another tenant's session is, to this peer, no session at all (the store's own answer).
  return absl::FailedPreconditionError("unknown or closed session; Attach first");
}

absl::Status TensordService::AllowSession(const std::string& session_id,
                                          absl::string_view ns) const {
  if (absl::Status st = Allow(ns); !st.ok()) return st;
  return OwnSession(session_id);
}

absl::StatusOr<std::string> TensordService::OpenSession(absl::string_view client_name) {
  if (who_.kind == Identity::Kind::kStranger) return Allow("");
  auto id = store_->OpenSession(client_name, who_.tenant);
  if (id.ok() && who_.kind == Identity::Kind::kTenant) {
    absl::MutexLock lock(&sessions_mu_);
    sessions_.insert(*id);
  }
  return id;
}

void TensordService::CloseSession(const std::string& id) {
  {
    absl::MutexLock lock(&sessions_mu_);
    sessions_.erase(id);
  }
  store_->CloseSession(id);
}

// One WatchStats stream. Alive while gRPC holds it (until OnDone) and while TickWatchers uses
// it; `refs` counts both. Reactor calls are made with no lock held.
class StatsWatcher final : public grpc::ServerWriteReactor<v1::Stats> {
 public:
  StatsWatcher(TensordService* service, absl::Duration interval)
      : service_(service), interval_(interval) {
    service_->AddWatcher(this);
    Send(absl::Now());
  }

  void Ref() { refs_.fetch_add(1); }
  void Unref() {
    if (refs_.fetch_sub(1) == 1) delete this;
  }
  bool Due(absl::Time now) ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    return !writing_ && !finishing_ && !cancelled_ && now >= next_;
  }
  void Send(absl::Time now) ABSL_LOCKS_EXCLUDED(mu_) {
    {
      absl::MutexLock lock(&mu_);
      if (writing_ || finishing_ || cancelled_) return;
      writing_ = true;
      next_ = now + interval_;
    }
    stats_ = service_->Snapshot();  // ours alone while writing_
    StartWrite(&stats_);
  }
  // Finish is decided and claimed in one critical section, so that no Send can start a write
  // between the decision and the call.
  void OnWriteDone(bool ok) override {
    bool finish = false;
    {
      absl::MutexLock lock(&mu_);
      writing_ = false;
      finish = (!ok || cancelled_) && !finishing_;
      if (finish) finishing_ = true;
    }
    if (finish) Finish(grpc::Status(grpc::StatusCode::CANCELLED, "stream ended"));
  }
  void OnCancel() override {
    bool finish = false;
    {
      absl::MutexLock lock(&mu_);
      cancelled_ = true;
      finish = !writing_ && !finishing_;
      if (finish) finishing_ = true;
    }
    if (finish) Finish(grpc::Status::CANCELLED);
  }
  void OnDone() override {
    service_->RemoveWatcher(this);
    Unref();
  }

 private:
  TensordService* const service_;
  const absl::Duration interval_;
  std::atomic<int> refs_{1};  // gRPC's, released in OnDone
  v1::Stats stats_;
  absl::Mutex mu_;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  bool finishing_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time next_ ABSL_GUARDED_BY(mu_);
};

void TensordService::AddWatcher(StatsWatcher* w) {
  absl::MutexLock lock(&watchers_mu_);
  watchers_.insert(w);
}

void TensordService::RemoveWatcher(StatsWatcher* w) {
  absl::MutexLock lock(&watchers_mu_);
  watchers_.erase(w);
}

void TensordService::TickWatchers() {
  const absl::Time now = absl::Now();
  std::vector<StatsWatcher*> due;
  {
    absl::MutexLock lock(&watchers_mu_);
    for (StatsWatcher* w : watchers_) {
      if (w->Due(now)) {
        w->Ref();
        due.push_back(w);
      }
    }
  }
  for (StatsWatcher* w : due) {
    w->Send(now);
    w->Unref();
  }
}

grpc::ServerWriteReactor<v1::Stats>* TensordService::WatchStats(
    grpc::CallbackServerContext*, const v1::WatchStatsRequest* request) {
  if (who_.kind == Identity::Kind::kStranger) {
    auto* reject = new RejectedStream<v1::Stats>();
    reject->Finish(ToGrpc(Allow("")));
    return reject;
  }
  const uint32_t ms = request->interval_ms() == 0 ? 1000 : request->interval_ms();
  if (ms < 100 || ms > 60000) {
    auto* reject = new RejectedStream<v1::Stats>();
    reject->Finish(ToGrpc(absl::InvalidArgumentError(
        absl::StrCat("interval_ms must be 100 to 60000, not ", request->interval_ms()))));
    return reject;
  }
  return new StatsWatcher(this, absl::Milliseconds(ms));
}

namespace {

// What a peer of `who` is offered in its Welcome: its own segments (a tenant's segments are
// also closed to other tenants by their group and mode), and the GPU arenas if it has GPU bytes.
std::vector<tiers::HostSegment> SegmentsFor(const Identity& who,
                                            std::vector<tiers::HostSegment> all) {
  if (who.kind == Identity::Kind::kOperator) return all;
  std::vector<tiers::HostSegment> mine;
  for (tiers::HostSegment& s : all) {
    if (who.kind == Identity::Kind::kTenant && s.tenant == who.tenant) mine.push_back(std::move(s));
  }
  return mine;
}

// One IPC handle maps a whole arena, every tenant's GPU copies in it: the operator's only.
std::vector<tiers::GpuArena> ArenasFor(const Identity& who, std::vector<tiers::GpuArena> all) {
  if (who.kind == Identity::Kind::kOperator) return all;
  return {};
}

}  // namespace

TensordService::TensordService(store::Store* store, std::vector<tiers::HostSegment> segments,
                               std::vector<tiers::GpuArena> gpu_arenas, Identity who)
    : store_(store),
      segments_(SegmentsFor(who, std::move(segments))),
      gpu_arenas_(ArenasFor(who, std::move(gpu_arenas))),
      who_(who) {}

grpc::ServerWriteReactor<v1::AttachEvent>* TensordService::Attach(
    grpc::CallbackServerContext*, const v1::AttachRequest* request) {
  return new AttachReactor(this, segments_, gpu_arenas_, instance_id_, *request, Admit());
}

// Runs `work` (which returns the call's status) inline, or on `pool` when `may_block`, and
// finishes the call with its status.
template <typename Work>
grpc::ServerUnaryReactor* RunMaybeBlocking(grpc::CallbackServerContext* ctx, WorkQueue* pool,
                                           bool may_block, Work work) {
  if (!may_block) return Done(ctx, work());
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  pool->Schedule([reactor, work = std::move(work)]() mutable { reactor->Finish(ToGrpc(work())); });
  return reactor;
}

grpc::ServerUnaryReactor* TensordService::Create(grpc::CallbackServerContext* ctx,
                                                 const v1::CreateRequest* request,
                                                 v1::CreateResponse* response) {
  if (absl::Status st = Admit(); !st.ok()) return Done(ctx, st);
  if (absl::Status st = AllowSession(request->session_id(), request->ns()); !st.ok()) {
    return Done(ctx, st);
  }
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  store_->CreateAsync(request->session_id(), FromProto(*request), DeadlineOf(ctx),
                      [reactor, response](absl::StatusOr<store::TensorInfo> info) {
                        if (info.ok()) {
                          v1::TensorMeta meta;
                          ToProto(*info, &meta);
                          *response->mutable_location() = meta.location();
                          response->set_pool(info->pool);
                        }
                        reactor->Finish(ToGrpc(info.status()));
                      });
  return reactor;
}

grpc::ServerUnaryReactor* TensordService::Evict(grpc::CallbackServerContext* ctx,
                                                const v1::EvictRequest* request,
                                                v1::EvictResponse* response) {
  if (absl::Status st = Allow(request->ns()); !st.ok()) return Done(ctx, st);
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  store_->EvictAsync(request->ns(), request->key(),
                     [reactor, response](absl::StatusOr<std::string> outcome) {
                       if (outcome.ok()) response->set_outcome(*outcome);
                       reactor->Finish(ToGrpc(outcome.status()));
                     });
  return reactor;
}

grpc::ServerUnaryReactor* TensordService::Seal(grpc::CallbackServerContext* ctx,
                                               const v1::SealRequest* request, v1::SealResponse*) {
  if (absl::Status st = AllowSession(request->session_id(), request->ns()); !st.ok()) {
    return Done(ctx, st);
  }
  // Waiting on a client's CUDA event happens off gRPC's threads, in a pool of its own: slow or
  // never-completing events cannot starve Creates and Gets.
  return RunMaybeBlocking(ctx, &seal_waits_, !request->cuda_event().empty(), [=, this] {
    return store_->Seal(request->session_id(), request->ns(), request->key(), request->cuda_event(),
                        DeadlineOf(ctx));
  });
}

grpc::ServerUnaryReactor* TensordService::Abort(grpc::CallbackServerContext* ctx,
                                                const v1::AbortRequest* request,
                                                v1::AbortResponse*) {
  if (absl::Status st = AllowSession(request->session_id(), request->ns()); !st.ok()) {
    return Done(ctx, st);
  }
  return Done(ctx, store_->Abort(request->session_id(), request->ns(), request->key()));
}

grpc::ServerUnaryReactor* TensordService::Get(grpc::CallbackServerContext* ctx,
                                              const v1::GetRequest* request,
                                              v1::GetResponse* response) {
  if (absl::Status st = Admit(); !st.ok()) return Done(ctx, st);
  if (absl::Status st = AllowSession(request->session_id(), request->ns()); !st.ok()) {
    return Done(ctx, st);
  }
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  store_->GetAsync(request->session_id(), request->ns(),
                   std::vector<std::string>(request->keys().begin(), request->keys().end()),
                   static_cast<store::WantTier>(request->want()), DeadlineOf(ctx),
                   request->has_device() ? request->device() : -1,
                   [reactor, response](absl::StatusOr<std::vector<store::GetOutcome>> outcomes) {
                     if (outcomes.ok()) {
                       response->mutable_results()->Reserve(static_cast<int>(outcomes->size()));
                       for (const store::GetOutcome& o : *outcomes) {
                         v1::GetResult* r = response->add_results();
                         r->set_code(static_cast<int32_t>(o.status.code()));
                         if (!o.status.ok()) {
                           r->set_message(std::string(o.status.message()));
                           continue;
                         }
                         ToProto(o.info, r->mutable_meta());
                         r->set_lease_id(o.lease_id);
                       }
                     }
                     reactor->Finish(ToGrpc(outcomes.status()));
                   });
  return reactor;
}

grpc::ServerUnaryReactor* TensordService::Prefetch(grpc::CallbackServerContext* ctx,
                                                   const v1::PrefetchRequest* request,
                                                   v1::PrefetchResponse* response) {
  if (absl::Status st = Admit(); !st.ok()) return Done(ctx, st);
  if (absl::Status st = Allow(request->ns()); !st.ok()) return Done(ctx, st);
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  store_->PrefetchAsync(
      request->ns(), std::vector<std::string>(request->keys().begin(), request->keys().end()),
      static_cast<store::WantTier>(request->tier()), DeadlineOf(ctx),
      request->has_device() ? request->device() : -1,
      [reactor, response](absl::StatusOr<std::vector<store::PrefetchOutcome>> outcomes) {
        if (outcomes.ok()) {
          for (const store::PrefetchOutcome& o : *outcomes) {
            v1::PrefetchResult* r = response->add_results();
            r->set_code(static_cast<int32_t>(o.status.code()));
            r->set_message(std::string(o.status.message()));
            r->set_moved(o.moved);
          }
        }
        reactor->Finish(ToGrpc(outcomes.status()));
      });
  return reactor;
}

grpc::ServerUnaryReactor* TensordService::Hint(grpc::CallbackServerContext* ctx,
                                               const v1::HintRequest* request,
                                               v1::HintResponse* response) {
  if (absl::Status st = Admit(); !st.ok()) return Done(ctx, st);
  if (absl::Status st = Allow(request->ns()); !st.ok()) return Done(ctx, st);
  const std::vector<std::string> keys(request->keys().begin(), request->keys().end());
  auto out = store_->Hint(request->ns(), keys, static_cast<store::WantTier>(request->tier()),
                          absl::Milliseconds(request->ttl_ms()),
                          request->has_device() ? request->device() : -1);
  if (out.ok()) {
    response->set_accepted(out->accepted);
    response->set_refreshed(out->refreshed);
    response->set_unknown(out->unknown);
    response->set_dropped(out->dropped);
    response->set_remote(out->remote);
  }
  return Done(ctx, out.status());
}

grpc::ServerUnaryReactor* TensordService::Release(grpc::CallbackServerContext* ctx,
                                                  const v1::ReleaseRequest* request,
                                                  v1::ReleaseResponse*) {
  if (absl::Status st = OwnSession(request->session_id()); !st.ok()) return Done(ctx, st);
  std::span<const uint64_t> ids(request->lease_ids().data(), request->lease_ids().size());
  return Done(ctx, store_->Release(request->session_id(), ids));
}

grpc::ServerUnaryReactor* TensordService::Delete(grpc::CallbackServerContext* ctx,
                                                 const v1::DeleteRequest* request,
                                                 v1::DeleteResponse*) {
  if (absl::Status st = AllowSession(request->session_id(), request->ns()); !st.ok()) {
    return Done(ctx, st);
  }
  // A key not held here may be another daemon's in Redis: asked off gRPC's threads. (Held
  // here, its Redis copy is erased in the background.)
  return RunMaybeBlocking(ctx, &remote_calls_, AsksRemote(request->ns(), request->key()),
                          [this, session = request->session_id(), ns = request->ns(),
                           key = request->key()] { return store_->Delete(session, ns, key); });
}

grpc::ServerUnaryReactor* TensordService::Stat(grpc::CallbackServerContext* ctx,
                                               const v1::StatRequest* request,
                                               v1::TensorMeta* response) {
  if (absl::Status st = Allow(request->ns()); !st.ok()) return Done(ctx, st);
  return RunMaybeBlocking(ctx, &remote_calls_, AsksRemote(request->ns(), request->key()),
                          [this, request, response] {
                            auto info = store_->Stat(request->ns(), request->key());
                            if (info.ok()) ToProto(*info, response);
                            return info.status();
                          });
}

grpc::ServerUnaryReactor* TensordService::List(grpc::CallbackServerContext* ctx,
                                               const v1::ListRequest* request,
                                               v1::ListResponse* response) {
  if (absl::Status st = Allow(request->ns()); !st.ok()) return Done(ctx, st);
  auto list = store_->List(request->ns(), request->prefix(), request->limit());
  if (list.ok()) {
    for (const store::TensorInfo& info : list->tensors) ToProto(info, response->add_tensors());
    response->set_truncated(list->truncated);
  }
  return Done(ctx, list.status());
}

grpc::ServerUnaryReactor* TensordService::GetStats(grpc::CallbackServerContext* ctx,
                                                   const v1::GetStatsRequest*,
                                                   v1::Stats* response) {
  if (who_.kind == Identity::Kind::kStranger) return Done(ctx, Allow(""));
  *response = Snapshot();
  return Done(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* TensordService::Ping(grpc::CallbackServerContext* ctx,
                                               const v1::PingRequest*, v1::PingResponse*) {
  return Done(ctx, absl::OkStatus());
}

}  // namespace tensord::service
