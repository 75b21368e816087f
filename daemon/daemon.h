// The running daemon: instance lock, stale-segment cleanup, host tier, store and gRPC server
// on a Unix socket, in the order they must start and stop. main() owns one of these.
#pragma once

#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/synchronization/notification.h"
#include "common/config.h"

namespace grpc {
class Server;
}

namespace tensord {
namespace store {
class Store;
}
namespace tiers {
class HostTier;
class SsdTier;
}  // namespace tiers
namespace service {
class TensordService;
}

class Daemon {
 public:
  // Starts everything. FAILED_PRECONDITION if another instance holds the run directory,
  // INVALID_ARGUMENT for a bad configuration, UNAVAILABLE if the socket cannot be bound.
  static absl::StatusOr<std::unique_ptr<Daemon>> Start(const DaemonConfig& config);
  ~Daemon();  // stops the server (clients see UNAVAILABLE), then frees the segments

  // Stops accepting requests, cancels attached sessions and waits up to `grace_ms` for
  // in-flight calls. Idempotent.
  void Shutdown(int grace_ms = 2000);
  const std::string& socket_path() const { return socket_path_; }

 private:
  Daemon() = default;

  void ReapExpired();

  int lock_fd_ = -1;
  std::unique_ptr<tiers::SsdTier> ssd_;
  std::thread reaper_;    // deletes expired tensors every 100 ms until stop_ is notified
  std::thread migrator_;  // moves tensors between tiers (Store::RunMigrator)
  absl::Notification stop_;
  std::string socket_path_;
  std::unique_ptr<tiers::HostTier> host_;
  std::unique_ptr<store::Store> store_;
  std::unique_ptr<service::TensordService> service_;
  std::unique_ptr<grpc::Server> server_;
};

}  // namespace tensord
