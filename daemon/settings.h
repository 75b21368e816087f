// Every scalar setting of the daemon in one declarative table: key, type, default (read from a
// default DaemonConfig), validator, help, whether SIGHUP reloads it, and the value the shipped
// example file uses. The TOML loader, the command-line flags and their --help text,
// --print-config and the example file deploy/tensord.toml are all generated from it.
// Structured settings (host.preset, [[host.pool]], ssd.path/size, [[ssd.file]]) are documented
// here too but parsed by config.cc.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "common/config.h"

namespace tensord {

struct Setting {
  std::string key;   // "section.name", e.g. "host.capacity"
  std::string type;  // "string", "bytes", "int", "bool", "mode", "fraction", "level"
  std::string help;
  bool reloadable = false;
  std::string example;  // the value deploy/tensord.toml sets; empty: default, commented out
  // Parses `text` (a flag's value, or a TOML scalar's text) into `config`. INVALID_ARGUMENT
  // says what a valid value looks like.
  std::function<absl::Status(DaemonConfig&, absl::string_view text)> set;
  // The value in `config`, as a TOML literal.
  std::function<std::string(const DaemonConfig&)> get;

  // The command-line flag: "--run-dir" for [daemon] keys, "--host-capacity" for the others.
  std::string flag() const;
  std::string default_value() const { return get(DaemonConfig{}); }
};

const std::vector<Setting>& Settings();
// nullptr for an unknown key.
const Setting* FindSetting(absl::string_view key);

// The effective configuration as a TOML file that tensord would read back unchanged.
std::string PrintConfig(const DaemonConfig& config);
// The commented example configuration (the contents of deploy/tensord.toml).
std::string ExampleConfig();

}  // namespace tensord
