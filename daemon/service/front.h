// The daemon's front door: it listens on the Unix socket itself, reads each connecting peer's
// credentials (service/auth.h) and hands the connection to the gRPC server of that peer's
// identity: one server per tenant, one for the operator and one for strangers, each with a
// TensordService bound to that identity. Identity is thereby fixed per connection by the kernel,
// never by anything the client sends.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "common/unique_fd.h"
#include "daemon/service/tensord_service.h"

namespace grpc {
class Server;
class HealthCheckServiceInterface;
}  // namespace grpc

namespace tensord::service {

class Front {
 public:
  struct Options {
    std::string socket_path;
    mode_t socket_mode = 0600;
    int max_message_bytes = 0;
  };

  // Binds the socket (no window in which it is more open than `socket_mode`), builds the
  // servers and starts accepting. `store` is borrowed and must outlive this. UNAVAILABLE when
  // the socket cannot be bound, INTERNAL when a server does not start.
  static absl::StatusOr<std::unique_ptr<Front>> Start(store::Store* store,
                                                      std::vector<tiers::HostSegment> segments,
                                                      std::vector<tiers::GpuArena> gpu_arenas,
                                                      const Options& options);
  ~Front();  // Shutdown(now)

  // The operator's statistics (every tenant): GetStats of root, and Prometheus.
  v1::Stats Snapshot() const;
  void TickWatchers();
  // Every service refuses new sessions, Creates and Gets from now on.
  void StartDraining();
  // Calls `f` with each server's health service (grpc.health.v1 answers per connection).
  void ForEachHealth(const std::function<void(grpc::HealthCheckServiceInterface*)>& f);
  // Stops accepting, then shuts every server down, waiting until `deadline` for calls in
  // flight. Idempotent.
  void Shutdown(std::chrono::system_clock::time_point deadline);

 private:
  Front() = default;
  void AcceptLoop();
  grpc::Server* ServerFor(const Identity& who) const;

  UniqueFd listen_fd_;
  UniqueFd wake_fd_;  // an eventfd: ends AcceptLoop
  std::thread acceptor_;
  std::atomic<bool> stopping_{false};
  store::Store* store_ = nullptr;
  // [0]: the operator's, [1]: strangers', [1 + t]: tenant t's (by store::TenantId).
  std::vector<std::unique_ptr<TensordService>> services_;
  std::vector<std::unique_ptr<grpc::Server>> servers_;
};

}  // namespace tensord::service
