// Who a client is: the Unix socket's peer credentials (SO_PEERCRED: pid, uid, gid; and
// SO_PEERGROUPS: its supplementary groups), read by the kernel at connect time, so a client
// cannot claim to be anyone else. Maps them to an Identity through the configured tenants.
#pragma once

#include <sys/types.h>

#include <vector>

#include "absl/status/statusor.h"
#include "daemon/service/tensord_service.h"
#include "daemon/store/tenants.h"

namespace tensord::service {

struct PeerCredentials {
  pid_t pid = 0;
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups;  // supplementary groups (empty where the kernel cannot say)
};

// Reads the credentials of the peer of connected Unix socket `fd`. INTERNAL on failure.
absl::StatusOr<PeerCredentials> PeerOf(int fd);

// Returns who `peer` is: without tenants, the operator; else the tenant that lists its uid;
// else the operator when it is root or the daemon's own user; else the tenant that lists one of
// its groups; else a stranger.
Identity IdentityOf(const store::Tenants& tenants, const PeerCredentials& peer);

}  // namespace tensord::service
