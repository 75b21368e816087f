// The running daemon: instance lock, stale-segment cleanup, host tier, store and gRPC server
// on a Unix socket, in the order they must start and stop. main() owns one of these.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "common/config.h"

namespace grpc {
class Server;
}

namespace tensord {
namespace store {
class Index;
class Store;
}  // namespace store
namespace tiers {
class GpuTier;
class HostTier;
class RemoteTier;
class SsdTier;
}  // namespace tiers
namespace service {
class Front;
class MetricsEndpoint;
}  // namespace service

class Daemon {
 public:
  // Starts everything. FAILED_PRECONDITION if another instance holds the run directory,
  // INVALID_ARGUMENT for a bad configuration, UNAVAILABLE if the socket cannot be bound.
  static absl::StatusOr<std::unique_ptr<Daemon>> Start(const DaemonConfig& config);
  // Removes what a stopped instance kept for the next one (its shared-memory segments, the
  // object index and the segment manifest): `tensord --forget`. FAILED_PRECONDITION while an
  // instance runs on the run directory. Returns the segments removed.
  static absl::StatusOr<int> Forget(const DaemonConfig& config);
  ~Daemon();  // stops the server (clients see UNAVAILABLE), then frees the segments

  // Stops accepting requests, cancels attached sessions and waits up to `grace_ms` for
  // in-flight calls. Idempotent.
  void Shutdown(int grace_ms = 2000);
  // Refuses new sessions, Creates and Gets (UNAVAILABLE), reports NOT_SERVING, and waits until
  // no lease is held or `timeout` passes; tells systemd how far it is. Returns the leases left.
  // `abort` (polled) ends the wait early, e.g. on a second signal.
  uint64_t Drain(
      absl::Duration timeout, const std::function<bool()>& abort = [] { return false; });
  const std::string& socket_path() const { return socket_path_; }
  // The Prometheus endpoint's port, or 0 when it is off.
  int metrics_port() const;

 private:
  Daemon() = default;

  void ReapExpired();
  // Publishes per-tier health (grpc.health.v1 names "tensord.host", "tensord.ssd", "tensord.gpu").
  void UpdateHealth();
  // Pings systemd's watchdog at half its interval while the store answers.
  void FeedWatchdog(uint64_t interval_usec);

  int lock_fd_ = -1;
  uint64_t truncations_seen_ = 0;  // shm_guard repairs already logged (the reaper's)
  std::unique_ptr<tiers::SsdTier> ssd_;
  std::unique_ptr<tiers::RemoteTier> remote_;  // before store_: the store uses it
  std::thread reaper_;        // deletes expired tensors every 100 ms until stop_ is notified
  std::thread migrator_;      // moves tensors between tiers (Store::RunMigrator)
  std::thread gpu_migrator_;  // keeps the GPU arenas under their watermark (RunGpuMigrator)
  std::unique_ptr<tiers::GpuTier> gpu_;
  std::thread watchdog_;   // feeds systemd's watchdog (WatchdogSec=)
  absl::Mutex health_mu_;  // serializes health updates with draining and the server's shutdown
  bool draining_ ABSL_GUARDED_BY(health_mu_) = false;
  absl::Notification stop_;           // reaper and watchdog
  absl::Notification migrator_stop_;  // after the server: in-flight requests may wait on it
  std::string socket_path_;
  std::unique_ptr<tiers::HostTier> host_;
  std::unique_ptr<store::Index> index_;  // warm restart (daemon.persist); outlives the store
  bool persist_ = false;
  bool started_ = false;  // Start completed
  std::string state_dir_;
  int state_lock_fd_ = -1;  // the state directory's lock, when it is not the run directory
  std::thread verifier_;    // checks restored tensors' bytes (Store::VerifyRestored)
  std::unique_ptr<store::Store> store_;
  std::unique_ptr<service::Front> front_;  // the socket and the servers behind it
  std::unique_ptr<service::MetricsEndpoint> metrics_;
};

}  // namespace tensord
