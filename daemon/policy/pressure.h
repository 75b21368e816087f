// The pressure policy: turns a tier's use, its watermarks and the system's memory readings into
// a demand — how many bytes its migrator should move off the tier now. Decisions only (no I/O,
// no locks); every migrator (host -> SSD, GPU -> host) asks it the same way.
#pragma once

#include <cstdint>

namespace tensord::policy {

struct TierPressure {
  uint64_t used_bytes = 0;
  uint64_t capacity_bytes = 0;
  double high_watermark = 0.90;  // fractions of capacity: demotion starts above high ...
  double low_watermark = 0.75;   // ... and goes down to low
  bool system_short = false;     // the machine is short of memory (see SystemShort)
};

// Returns the bytes to move off the tier: (used - low) above the high watermark, or while the
// system is short of memory and use is above the low watermark; else 0.
uint64_t DemotionDemand(const TierPressure& p);

// Whether the system is short of memory: MemAvailable is known and below `min_mem_available`
// (0: never). A missing reading is not a shortage.
bool SystemShort(bool mem_available_known, uint64_t mem_available_bytes,
                 uint64_t min_mem_available);

}  // namespace tensord::policy
