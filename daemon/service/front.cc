// Accepting connections ourselves lets the daemon read SO_PEERCRED, which gRPC's own Unix
// listener never exposes; grpc::AddInsecureChannelFromFd then serves the connection exactly as
// if gRPC had accepted it (the socket must be non-blocking for gRPC's poller).
#include "daemon/service/front.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "daemon/service/auth.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/server_posix.h"
#include "spdlog/spdlog.h"

namespace tensord::service {
namespace {

absl::StatusOr<UniqueFd> Listen(const std::string& path, mode_t mode) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd.valid()) return absl::UnavailableError(absl::StrCat("socket: ", strerror(errno)));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) {
    return absl::InvalidArgumentError(absl::StrCat("socket path too long: ", path));
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  ::unlink(path.c_str());  // a socket file left by a dead instance would make bind fail
  const mode_t old_umask = ::umask(0077);  // no window in which the socket is more open
  const int rc = ::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  const int err = errno;
  ::umask(old_umask);
  if (rc != 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on unix:", path, ": ", strerror(err)));
  }
  if (::chmod(path.c_str(), mode) != 0) spdlog::warn("chmod {}: {}", path, strerror(errno));
  if (::listen(fd.get(), SOMAXCONN) != 0) {
    return absl::UnavailableError(absl::StrCat("listen on unix:", path, ": ", strerror(errno)));
  }
  return fd;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Front>> Front::Start(store::Store* store,
                                                    std::vector<tiers::HostSegment> segments,
                                                    std::vector<tiers::GpuArena> gpu_arenas,
                                                    const Options& options) {
  std::unique_ptr<Front> f(new Front());
  f->store_ = store;
  std::vector<Identity> identities = {Identity{},
                                      Identity{Identity::Kind::kStranger, store::kNoTenant}};
  for (store::TenantId t = 1; t < store->tenants().size(); ++t) {
    identities.push_back(Identity{Identity::Kind::kTenant, t});
  }
  for (const Identity& who : identities) {
    f->services_.push_back(std::make_unique<TensordService>(store, segments, gpu_arenas, who));
    grpc::ServerBuilder builder;
    builder.RegisterService(f->services_.back().get());
    // No valid request is larger; a larger one is refused before it is parsed.
    builder.SetMaxReceiveMessageSize(options.max_message_bytes);
    std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
    if (server == nullptr) return absl::InternalError("a gRPC server did not start");
    f->servers_.push_back(std::move(server));
  }
  auto listen = Listen(options.socket_path, options.socket_mode);
  if (!listen.ok()) return listen.status();
  f->listen_fd_ = *std::move(listen);
  f->wake_fd_ = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!f->wake_fd_.valid()) return absl::InternalError(absl::StrCat("eventfd: ", strerror(errno)));
  f->acceptor_ = std::thread([raw = f.get()] { raw->AcceptLoop(); });
  return f;
}

grpc::Server* Front::ServerFor(const Identity& who) const {
  switch (who.kind) {
    case Identity::Kind::kOperator:
      return servers_[0].get();
    case Identity::Kind::kStranger:
      return servers_[1].get();
    case Identity::Kind::kTenant:
      break;
  }
  return servers_[1 + who.tenant].get();
}

void Front::AcceptLoop() {
  pollfd fds[2] = {{listen_fd_.get(), POLLIN, 0}, {wake_fd_.get(), POLLIN, 0}};
  for (;;) {
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      spdlog::error("poll on the socket failed: {}; retrying", strerror(errno));
      ::poll(nullptr, 0, 100);
      continue;
    }
    if (fds[1].revents != 0 || stopping_.load()) return;
    if ((fds[0].revents & (POLLHUP | POLLERR | POLLNVAL)) != 0) {
      spdlog::error("the listening socket failed (poll events {:#x}); no new connections",
                    fds[0].revents);
      return;
    }
    if (fds[0].revents == 0) continue;
    for (;;) {  // every pending connection
      UniqueFd conn(::accept4(listen_fd_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
      if (!conn.valid()) {
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
          spdlog::warn("cannot accept a connection: {}", strerror(errno));
          ::poll(nullptr, 0, 100);  // out of descriptors: no busy loop while it lasts
        }
        break;  // EAGAIN: none left; others (ECONNABORTED...): that one is gone
      }
      auto peer = PeerOf(conn.get());
      if (!peer.ok()) {
        spdlog::warn("refusing a connection: {}", peer.status().ToString());
        continue;
      }
      const Identity who = IdentityOf(store_->tenants(), *peer);
      spdlog::debug("connection from pid {} uid {} gid {}: {}", peer->pid, peer->uid, peer->gid,
                    who.kind == Identity::Kind::kTenant     ? store_->tenants().name(who.tenant)
                    : who.kind == Identity::Kind::kOperator ? std::string("operator")
                                                            : std::string("no tenant"));
      grpc::AddInsecureChannelFromFd(ServerFor(who), conn.Release());  // gRPC owns it now
    }
  }
}

v1::Stats Front::Snapshot() const { return services_[0]->Snapshot(); }

void Front::TickWatchers() {
  for (auto& s : services_) s->TickWatchers();
}

void Front::StartDraining() {
  for (auto& s : services_) s->StartDraining();
}

void Front::ForEachHealth(const std::function<void(grpc::HealthCheckServiceInterface*)>& f) {
  for (auto& server : servers_) {
    if (server != nullptr) f(server->GetHealthCheckService());
  }
}

void Front::Shutdown(std::chrono::system_clock::time_point deadline) {
  if (acceptor_.joinable()) {
    stopping_.store(true);
    const uint64_t one = 1;
    if (::write(wake_fd_.get(), &one, sizeof(one)) < 0) {
      spdlog::error("eventfd write failed: {}", strerror(errno));  // ends poll another way
      ::shutdown(listen_fd_.get(), SHUT_RDWR);
    }
    acceptor_.join();
  }
  listen_fd_.Reset();
  for (auto& server : servers_) {
    if (server != nullptr) server->Shutdown(deadline);
  }
  for (auto& server : servers_) {
    if (server != nullptr) server->Wait();
  }
  servers_.clear();
}

Front::~Front() { Shutdown(std::chrono::system_clock::now()); }

}  // namespace tensord::service
