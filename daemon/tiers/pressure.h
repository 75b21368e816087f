// System memory pressure as Linux reports it: PSI (/proc/pressure/memory) and MemAvailable.
// The host tier demotes to SSD when MemAvailable falls under the configured floor, whatever
// its own watermarks say.
#pragma once

#include <cstdint>
#include <string>

namespace tensord::tiers {

struct SystemPressure {
  double psi_some_avg10 = 0;  // % of time some task stalled on memory, last 10 s
  double psi_full_avg10 = 0;
  uint64_t mem_available_bytes = 0;
  bool psi_available = false;        // the PSI file was read (kernels without PSI: false)
  bool mem_available_known = false;  // /proc/meminfo had MemAvailable
};

// Reads both files (paths overridable for tests). A missing file or line leaves its fields at 0
// and its *_available/_known flag false: "not available" is not "0 bytes free".
SystemPressure ReadSystemPressure(const std::string& psi_path = "/proc/pressure/memory",
                                  const std::string& meminfo_path = "/proc/meminfo");

}  // namespace tensord::tiers
