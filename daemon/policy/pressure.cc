// Watermark and MemAvailable arithmetic, in one place for every migrator.
#include "daemon/policy/pressure.h"

namespace tensord::policy {

uint64_t DemotionDemand(const TierPressure& p) {
  const auto cap = static_cast<double>(p.capacity_bytes);
  const auto high = static_cast<uint64_t>(p.high_watermark * cap);
  const auto low = static_cast<uint64_t>(p.low_watermark * cap);
  const uint64_t above_low = p.used_bytes > low ? p.used_bytes - low : 0;
  if (p.used_bytes > high) return above_low;
  return p.system_short ? above_low : 0;
}

bool SystemShort(bool mem_available_known, uint64_t mem_available_bytes,
                 uint64_t min_mem_available) {
  return min_mem_available > 0 && mem_available_known && mem_available_bytes < min_mem_available;
}

}  // namespace tensord::policy
