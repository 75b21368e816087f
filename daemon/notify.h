// systemd's notify protocol (sd_notify(3)) for a Type=notify service: READY=1 once the daemon
// serves, STATUS= lines while it starts and drains, STOPPING=1, and WATCHDOG=1 pings. Every
// call is a no-op when the daemon was not started by systemd (no NOTIFY_SOCKET).
#pragma once

#include <cstdint>

#include "absl/strings/string_view.h"

namespace tensord::notify {

void Status(absl::string_view text);
void Ready(absl::string_view status);
void Stopping(absl::string_view status);
void Reloading();
void Watchdog();
// The interval within which systemd expects WATCHDOG=1 (WatchdogSec=), or 0 if it expects none.
uint64_t WatchdogUsec();

}  // namespace tensord::notify
