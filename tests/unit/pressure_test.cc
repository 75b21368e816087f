// System pressure readings (PSI and MemAvailable): what is read, and what "not available" is.
#include "daemon/tiers/pressure.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

namespace tensord::tiers {
namespace {

std::string Write(const std::string& name, const std::string& text) {
  const std::string path = ::testing::TempDir() + "/" + name + std::to_string(getpid());
  std::ofstream(path) << text;
  return path;
}

TEST(SystemPressure, ReadsPsiAndMemAvailable) {
  const std::string psi = Write("psi",
                                "some avg10=1.50 avg60=0.20 avg300=0.00 total=123\n"
                                "full avg10=0.25 avg60=0.00 avg300=0.00 total=45\n");
  const std::string meminfo = Write("meminfo",
                                    "MemTotal:       24000000 kB\n"
                                    "MemFree:         1000000 kB\n"
                                    "MemAvailable:    2000000 kB\n");
  const SystemPressure p = ReadSystemPressure(psi, meminfo);
  EXPECT_TRUE(p.psi_available);
  EXPECT_DOUBLE_EQ(p.psi_some_avg10, 1.5);
  EXPECT_DOUBLE_EQ(p.psi_full_avg10, 0.25);
  EXPECT_TRUE(p.mem_available_known);
  EXPECT_EQ(p.mem_available_bytes, uint64_t{2000000} * 1024);
  std::filesystem::remove(psi);
  std::filesystem::remove(meminfo);
}

TEST(SystemPressure, MissingFilesAreNotAvailableRatherThanZero) {
  const std::string meminfo = Write("meminfo-old", "MemTotal: 24000000 kB\nMemFree: 1 kB\n");
  const SystemPressure p = ReadSystemPressure("/nonexistent/pressure/memory", meminfo);
  EXPECT_FALSE(p.psi_available);
  EXPECT_FALSE(p.mem_available_known) << "a kernel without MemAvailable";
  std::filesystem::remove(meminfo);
}

TEST(SystemPressure, ThisMachineHasAReading) {
  if (!std::filesystem::exists("/proc/meminfo")) GTEST_SKIP() << "no /proc/meminfo here";
  const SystemPressure p = ReadSystemPressure();
  EXPECT_TRUE(p.mem_available_known);
  EXPECT_GT(p.mem_available_bytes, 0u);
}

}  // namespace
}  // namespace tensord::tiers
