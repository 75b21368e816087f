// The gRPC service: the only code that knows gRPC. Uses the callback API, so an attached
// client costs no thread, and the end of a client's Attach stream (cancel, crash, kill -9)
// reaches the store as CloseSession within milliseconds.
#pragma once

#include <atomic>
#include <chrono>
#include <span>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "common/random.h"
#include "common/work_queue.h"
#include "daemon/store/store.h"
#include "daemon/tiers/host_tier.h"
#include "tensord/v1/tensord.grpc.pb.h"

namespace tensord::service {

class StatsWatcher;

// Who the peers of one service instance are (service/auth.h finds it from their credentials).
struct Identity {
  enum class Kind {
    kOperator,  // every namespace: no tenants configured, or root / the daemon's user
    kTenant,    // its own namespaces, sessions and segments only
    kStranger,  // a peer no tenant names: PERMISSION_DENIED for all but Ping
  };
  Kind kind = Kind::kOperator;
  store::TenantId tenant = store::kNoTenant;
};

class TensordService final : public v1::Tensord::CallbackService {
 public:
  // `store` is borrowed and must outlive the server this service is registered with. The
  // service answers peers who are `who`: it offers them only their segments and GPU arenas.
  TensordService(store::Store* store, std::vector<tiers::HostSegment> segments,
                 std::vector<tiers::GpuArena> gpu_arenas = {}, Identity who = {});

  grpc::ServerWriteReactor<v1::AttachEvent>* Attach(grpc::CallbackServerContext* ctx,
                                                    const v1::AttachRequest* request) override;
  grpc::ServerUnaryReactor* Create(grpc::CallbackServerContext* ctx,
                                   const v1::CreateRequest* request,
                                   v1::CreateResponse* response) override;
  grpc::ServerUnaryReactor* Seal(grpc::CallbackServerContext* ctx, const v1::SealRequest* request,
                                 v1::SealResponse* response) override;
  grpc::ServerUnaryReactor* Abort(grpc::CallbackServerContext* ctx, const v1::AbortRequest* request,
                                  v1::AbortResponse* response) override;
  grpc::ServerUnaryReactor* Get(grpc::CallbackServerContext* ctx, const v1::GetRequest* request,
                                v1::GetResponse* response) override;
  grpc::ServerUnaryReactor* Prefetch(grpc::CallbackServerContext* ctx,
                                     const v1::PrefetchRequest* request,
                                     v1::PrefetchResponse* response) override;
  grpc::ServerUnaryReactor* Hint(grpc::CallbackServerContext* ctx, const v1::HintRequest* request,
                                 v1::HintResponse* response) override;
  grpc::ServerUnaryReactor* Release(grpc::CallbackServerContext* ctx,
                                    const v1::ReleaseRequest* request,
                                    v1::ReleaseResponse* response) override;
  grpc::ServerUnaryReactor* Delete(grpc::CallbackServerContext* ctx,
                                   const v1::DeleteRequest* request,
                                   v1::DeleteResponse* response) override;
  grpc::ServerUnaryReactor* Stat(grpc::CallbackServerContext* ctx, const v1::StatRequest* request,
                                 v1::TensorMeta* response) override;
  grpc::ServerUnaryReactor* List(grpc::CallbackServerContext* ctx, const v1::ListRequest* request,
                                 v1::ListResponse* response) override;
  grpc::ServerUnaryReactor* GetStats(grpc::CallbackServerContext* ctx,
                                     const v1::GetStatsRequest* request,
                                     v1::Stats* response) override;
  grpc::ServerUnaryReactor* Evict(grpc::CallbackServerContext* ctx, const v1::EvictRequest* request,
                                  v1::EvictResponse* response) override;
  grpc::ServerWriteReactor<v1::Stats>* WatchStats(grpc::CallbackServerContext* ctx,
                                                  const v1::WatchStatsRequest* request) override;
  grpc::ServerUnaryReactor* Ping(grpc::CallbackServerContext* ctx, const v1::PingRequest* request,
                                 v1::PingResponse* response) override;

  const Identity& identity() const { return who_; }
  // Opens a session for a peer of this service (Attach), and ends it.
  absl::StatusOr<std::string> OpenSession(absl::string_view client_name)
      ABSL_LOCKS_EXCLUDED(sessions_mu_);
  void CloseSession(const std::string& id) ABSL_LOCKS_EXCLUDED(sessions_mu_);

  // From now on new sessions, Creates and Gets are refused with UNAVAILABLE; Release, Delete,
  // Stat and the rest still work, so that clients can finish and let go. Idempotent.
  void StartDraining() { draining_.store(true); }
  // The statistics GetStats returns (also the source of the Prometheus metrics).
  v1::Stats Snapshot() const;
  // Sends each WatchStats stream whose interval has passed its next Stats. The daemon calls it
  // every 100 ms.
  void TickWatchers() ABSL_LOCKS_EXCLUDED(watchers_mu_);

 private:
  // UNAVAILABLE while draining, else OK.
  absl::Status Admit() const;
  // OK when this service's peers may touch namespace `ns`; PERMISSION_DENIED (counted) if not.
  absl::Status Allow(absl::string_view ns) const;
  // OK when `session_id` was opened through this service (or the peers are the operator): a
  // session id is no key to another tenant's leases. FAILED_PRECONDITION, as for an unknown
  // session, otherwise.
  absl::Status OwnSession(const std::string& session_id) const ABSL_LOCKS_EXCLUDED(sessions_mu_);
  // Allow(ns), then OwnSession(session_id).
  absl::Status AllowSession(const std::string& session_id, absl::string_view ns) const
      ABSL_LOCKS_EXCLUDED(sessions_mu_);
  absl::Status Denied(std::string message) const;

  friend class StatsWatcher;
  void AddWatcher(StatsWatcher* w) ABSL_LOCKS_EXCLUDED(watchers_mu_);
  void RemoveWatcher(StatsWatcher* w) ABSL_LOCKS_EXCLUDED(watchers_mu_);

  absl::Mutex watchers_mu_;
  absl::flat_hash_set<StatsWatcher*> watchers_ ABSL_GUARDED_BY(watchers_mu_);
  store::Store* const store_;
  std::atomic<bool> draining_{false};
  WorkQueue seal_waits_{2};    // Seals that wait on a client's CUDA event
  WorkQueue remote_calls_{2};  // Deletes and Stats that may ask the remote tier (Redis I/O)
  // Whether a Delete or Stat of (ns, key) may ask Redis: a key not held here, in a namespace
  // the remote tier serves. (A key deleted meanwhile still gets its answer, only inline.)
  bool AsksRemote(const std::string& ns, const std::string& key) const {
    return store_->ConsultsRemote(ns) && !store_->Holds(ns, key);
  }
  const std::vector<tiers::HostSegment> segments_;
  const std::vector<tiers::GpuArena> gpu_arenas_;
  const Identity who_;
  mutable absl::Mutex sessions_mu_;
  absl::flat_hash_set<std::string> sessions_ ABSL_GUARDED_BY(sessions_mu_);  // tenants' only
  // Sent in every Welcome: new each time the daemon starts, so clients can tell a restart.
  const std::string instance_id_ = RandomHex(16);
  const std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();
};

}  // namespace tensord::service
