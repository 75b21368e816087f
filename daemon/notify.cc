#include "daemon/notify.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>

#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/unique_fd.h"

namespace tensord::notify {
namespace {

// sd_notify(3)'s protocol, but never blocking: a datagram socket's queue holds only a few
// messages (net.unix.max_dgram_qlen), and a manager that reads slowly must not stall the daemon
// (a drain sending its progress once blocked there). A state change (`important`) is retried for
// up to a second; progress and watchdog pings are dropped when the queue is full.
void Send(const std::string& state, bool important = false) {
  const char* path = std::getenv("NOTIFY_SOCKET");
  if (path == nullptr || path[0] == '\0') return;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  const size_t len = std::strlen(path);
  if (len >= sizeof(addr.sun_path)) return;
  std::memcpy(addr.sun_path, path, len);
  if (addr.sun_path[0] == '@') addr.sun_path[0] = '\0';  // the abstract namespace
  UniqueFd fd(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd.valid()) return;
  for (int attempt = 0; attempt < (important ? 100 : 1); ++attempt) {
    const ssize_t n = ::sendto(fd.get(), state.data(), state.size(), MSG_NOSIGNAL,
                               reinterpret_cast<const sockaddr*>(&addr),
                               static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + len));
    if (n >= 0 || errno != EAGAIN) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

}  // namespace

void Status(absl::string_view text) { Send(absl::StrCat("STATUS=", text)); }

void Ready(absl::string_view status) { Send(absl::StrCat("READY=1\nSTATUS=", status), true); }

void Stopping(absl::string_view status) { Send(absl::StrCat("STOPPING=1\nSTATUS=", status), true); }

void Reloading() { Send("RELOADING=1\nSTATUS=reloading the configuration", true); }

void Watchdog() { Send("WATCHDOG=1"); }

uint64_t WatchdogUsec() {
  uint64_t usec = 0;
  return sd_watchdog_enabled(0, &usec) > 0 ? usec : 0;
}

}  // namespace tensord::notify
