// PSI and meminfo parsing.
#include "daemon/tiers/pressure.h"

#include <cstdio>
#include <fstream>
#include <sstream>

namespace tensord::tiers {

SystemPressure ReadSystemPressure(const std::string& psi_path, const std::string& meminfo_path) {
  SystemPressure p;
  std::ifstream psi(psi_path);
  std::string line;
  while (std::getline(psi, line)) {
    double avg10 = 0;
    if (std::sscanf(line.c_str(), "some avg10=%lf", &avg10) == 1) {
      p.psi_some_avg10 = avg10;
      p.psi_available = true;
    } else if (std::sscanf(line.c_str(), "full avg10=%lf", &avg10) == 1) {
      p.psi_full_avg10 = avg10;
    }
  }
  std::ifstream meminfo(meminfo_path);
  while (std::getline(meminfo, line)) {
    unsigned long long kb = 0;
    if (std::sscanf(line.c_str(), "MemAvailable: %llu kB", &kb) == 1) {
      p.mem_available_bytes = kb * 1024;
      p.mem_available_known = true;
      break;
    }
  }
  return p;
}

}  // namespace tensord::tiers
