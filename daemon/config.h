// Loading the daemon's configuration: built-in defaults, then an optional TOML file, then
// presets ("qwen3-vl"). Command-line flags are applied on top by main.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/config.h"

namespace tensord {

// Reads a TOML file over the defaults. INVALID_ARGUMENT names the offending key; unknown keys
// are errors (a typo must not silently fall back to a default). NOT_FOUND if the file is absent.
absl::StatusOr<DaemonConfig> LoadConfigFile(const std::string& path);
// The same over TOML text; `origin` (a path) names it in errors.
absl::StatusOr<DaemonConfig> LoadConfigText(std::string_view text, const std::string& origin);

// Replaces the host pool classes with a named preset. INVALID_ARGUMENT for an unknown name.
absl::Status ApplyPreset(absl::string_view preset, HostTierConfig* host);

// Checks what no single setting can: relations between settings. INVALID_ARGUMENT.
absl::Status Validate(const DaemonConfig& config);

// Parses an octal file mode such as "0600". INVALID_ARGUMENT otherwise.
absl::StatusOr<mode_t> ParseMode(absl::string_view text);

}  // namespace tensord
