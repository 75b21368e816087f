// Peer credentials of a Unix socket, and the identity they give.
#include "daemon/service/auth.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace tensord::service {

absl::StatusOr<PeerCredentials> PeerOf(int fd) {
  ucred cred{};
  socklen_t len = sizeof(cred);
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    return absl::InternalError(absl::StrCat("SO_PEERCRED: ", strerror(errno)));
  }
  PeerCredentials peer{cred.pid, cred.uid, cred.gid, {}};
  std::vector<gid_t> groups(64);
  for (int tries = 0; tries < 4; ++tries) {
    socklen_t bytes = static_cast<socklen_t>(groups.size() * sizeof(gid_t));
    if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &bytes) == 0) {
      groups.resize(bytes / sizeof(gid_t));
      peer.groups = std::move(groups);
      break;
    }
    if (errno != ERANGE) break;  // an old kernel: the primary gid still counts
    groups.resize(bytes / sizeof(gid_t) + 1);
  }
  return peer;
}

Identity IdentityOf(const store::Tenants& tenants, const PeerCredentials& peer) {
  if (!tenants.enabled()) return Identity{};
  // Root and the daemon's user are the operator unless a tenant names them: the daemon's user is
  // in every tenant's segment group, which must not make it a tenant.
  if ((peer.uid == 0 || peer.uid == geteuid()) && !tenants.ByUid(peer.uid)) return Identity{};
  if (auto t = tenants.Identify(peer.uid, peer.gid, peer.groups)) {
    return Identity{Identity::Kind::kTenant, *t};
  }
  return Identity{Identity::Kind::kStranger, store::kNoTenant};
}

}  // namespace tensord::service
