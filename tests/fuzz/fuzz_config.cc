// libFuzzer harness: the TOML configuration loader. Any text is either a configuration that
// passes Validate (and prints back) or INVALID_ARGUMENT; it never crashes the daemon's start.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "daemon/config.h"
#include "daemon/settings.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);  // std: toml++'s
  auto config = tensord::LoadConfigText(text, "fuzz.toml");
  if (config.ok()) {
    if (!tensord::Validate(*config).ok()) std::abort();  // loaded but invalid
    (void)tensord::PrintConfig(*config);
  } else if (config.status().code() != absl::StatusCode::kInvalidArgument) {
    std::abort();  // the documented code for a bad file
  }
  return 0;
}
