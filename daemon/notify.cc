#include "daemon/notify.h"

#include <systemd/sd-daemon.h>

#include <string>

#include "absl/strings/str_cat.h"

namespace tensord::notify {
namespace {

void Send(const std::string& state) { sd_notify(0, state.c_str()); }

}  // namespace

void Status(absl::string_view text) { Send(absl::StrCat("STATUS=", text)); }

void Ready(absl::string_view status) { Send(absl::StrCat("READY=1\nSTATUS=", status)); }

void Stopping(absl::string_view status) { Send(absl::StrCat("STOPPING=1\nSTATUS=", status)); }

void Reloading() { Send("RELOADING=1\nSTATUS=reloading the configuration"); }

void Watchdog() { Send("WATCHDOG=1"); }

uint64_t WatchdogUsec() {
  uint64_t usec = 0;
  return sd_watchdog_enabled(0, &usec) > 0 ? usec : 0;
}

}  // namespace tensord::notify
