// Logging setup: one spdlog logger for the process, level from configuration.
#pragma once

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace tensord {

// Sets the default spdlog level ("trace".."off") and pattern. INVALID_ARGUMENT for a bad level.
absl::Status SetupLogging(absl::string_view level);

}  // namespace tensord
