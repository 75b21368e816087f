// tensorctl against a real daemon: output and exit codes (0 ok, 1 refused by the daemon or not
// serving, 2 usage or local file errors), the socket from --socket and from TENSORD_SOCKET.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include "absl/strings/match.h"
#include "tests/integration/harness.h"

namespace tensord::testing {
namespace {

using CtlRun = CommandResult;

CtlRun Tensorctl(const std::string& args) {
  return RunCommand(std::string(TENSORCTL_BIN) + " " + args);
}

bool Has(const CtlRun& r, const std::string& text) { return r.out.find(text) != std::string::npos; }

TEST(Tensorctl, CommandsOutputsAndExitCodes) {
  const std::string dir = MakeTempDir();
  Daemon d({"--host-capacity", "64MiB", "--swap-file", dir + "/swap", "--swap-size", "64MiB"});
  ASSERT_TRUE(d.ok());
  const std::string s = "--socket " + d.socket() + " ";
  { std::ofstream(dir + "/in.bin") << std::string(4096, 'x'); }
  CtlRun put = Tensorctl(s + "put " + dir + "/in.bin k --dtype float32");
  EXPECT_EQ(put.rc, 0) << put.out;
  EXPECT_TRUE(Has(put, "put k: float32 (1024)")) << put.out;

  CtlRun stat = Tensorctl(s + "stat k");
  EXPECT_EQ(stat.rc, 0) << stat.out;
  EXPECT_TRUE(Has(stat, "dtype      float32")) << stat.out;
  EXPECT_TRUE(Has(stat, "sealed     yes")) << stat.out;

  CtlRun ls = Tensorctl(s + "ls");
  EXPECT_EQ(ls.rc, 0);
  EXPECT_TRUE(Has(ls, "k ")) << ls.out;

  CtlRun get = Tensorctl(s + "get k " + dir + "/out.bin");
  EXPECT_EQ(get.rc, 0) << get.out;
  std::ifstream back(dir + "/out.bin");
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(back), {}), std::string(4096, 'x'));

  CtlRun json = Tensorctl(s + "stats --json");
  EXPECT_EQ(json.rc, 0);
  EXPECT_TRUE(Has(json, "\"objects\": \"1\"")) << json.out;
  EXPECT_TRUE(Has(json, "\"engine\": \"io_uring")) << json.out;

  CtlRun stats = Tensorctl(s + "stats");
  EXPECT_EQ(stats.rc, 0);
  EXPECT_TRUE(Has(stats, "SWAP      engine io_uring")) << stats.out;
  EXPECT_TRUE(Has(stats, "creates")) << stats.out;
  // k was stored and read once: its pool's lifetime row shows 1 copy, all of it reused.
  EXPECT_TRUE(Has(stats, "LIFETIME")) << stats.out;
  const size_t row = stats.out.find("\n", stats.out.find("LIFETIME"));
  ASSERT_NE(row, std::string::npos) << stats.out;
  const std::string line = stats.out.substr(row + 1, stats.out.find('\n', row + 1) - row - 1);
  EXPECT_TRUE(absl::StrContains(line, " host ") && absl::StrContains(line, " 1 ") &&
              absl::StrContains(line, "100.0%"))
      << line;

  CtlRun health = Tensorctl(s + "health");
  EXPECT_EQ(health.rc, 0) << health.out;
  EXPECT_TRUE(Has(health, "tensord.ssd          SERVING")) << health.out;
  EXPECT_TRUE(Has(health, "tensord.gpu          NOT_SERVING")) << health.out;

  CtlRun top = Tensorctl(s + "top --count 3 --interval-ms 100");
  EXPECT_EQ(top.rc, 0) << top.out;
  size_t frames = 0;
  for (size_t at = 0; (at = top.out.find("tensorctl top:", at)) != std::string::npos; ++at) {
    ++frames;
  }
  EXPECT_EQ(frames, 3u) << top.out;
  EXPECT_TRUE(Has(top, "RATES/s")) << "rates from the second frame on";

  CtlRun evict = Tensorctl(s + "evict k");
  EXPECT_EQ(evict.rc, 0) << evict.out;
  EXPECT_TRUE(Has(evict, "k: demoted to SSD")) << evict.out;
  EXPECT_TRUE(Has(Tensorctl(s + "ls --tier ssd"), "k ")) << "evicted: on SSD only";
  EXPECT_FALSE(Has(Tensorctl(s + "ls --tier host"), "k "));
  EXPECT_TRUE(Has(Tensorctl(s + "stat k"), "location   ssd"));
  EXPECT_FALSE(Has(Tensorctl(s + "ls --min-size 1MiB"), "k ")) << "k is 4 KiB";
  EXPECT_TRUE(Has(Tensorctl(s + "ls --durability durable --min-size 4KiB"), "k "));
  // prefetch swaps it back in without a lease; a second prefetch finds it there.
  CtlRun pre = Tensorctl(s + "prefetch k nope");
  EXPECT_EQ(pre.rc, 1) << "one key failed: " << pre.out;
  EXPECT_TRUE(Has(pre, "k: promoted to host")) << pre.out;
  EXPECT_TRUE(Has(pre, "nope: NOT_FOUND")) << pre.out;
  EXPECT_TRUE(Has(Tensorctl(s + "ls --tier host"), "k ")) << "prefetched: on host";
  CtlRun again = Tensorctl(s + "prefetch k");
  EXPECT_EQ(again.rc, 0) << again.out;
  EXPECT_TRUE(Has(again, "k: already on host")) << again.out;
  EXPECT_EQ(Tensorctl(s + "prefetch k --tier ssd").rc, 2) << "host or gpu only";
  EXPECT_EQ(Tensorctl(s + "prefetch k --tier gpu").rc, 1) << "no GPU tier here";
  EXPECT_EQ(Tensorctl(s + "get k " + dir + "/again.bin").rc, 0);
  // hint: k (on host now) is queued, a duplicate is a refresh, nope is unknown.
  CtlRun hinted = Tensorctl(s + "hint k k nope --ttl-ms 5000");
  EXPECT_EQ(hinted.rc, 0) << hinted.out;
  EXPECT_TRUE(Has(hinted, "hinted 3 keys: 1 queued, 1 already queued, 1 unknown, 0 dropped"))
      << hinted.out;
  EXPECT_EQ(Tensorctl(s + "hint k --tier ssd").rc, 2) << "host or gpu only";
  EXPECT_EQ(Tensorctl(s + "hint k --tier gpu").rc, 1) << "no GPU tier here";
  EXPECT_EQ(Tensorctl(s + "hint k --ttl-ms 3600001").rc, 2) << "at most an hour";
  // A losslessly stored swap copy: compressible bytes take less swap and read back the same.
  { std::ofstream(dir + "/zeros.bin") << std::string(1 << 20, '\0'); }
  EXPECT_EQ(Tensorctl(s + "put " + dir + "/zeros.bin z --compression lossless").rc, 0);
  EXPECT_EQ(Tensorctl(s + "evict z").rc, 0);
  CtlRun zstat = Tensorctl(s + "stat z");
  EXPECT_TRUE(Has(zstat, "compress   lossless\n")) << zstat.out;
  EXPECT_TRUE(Has(zstat, "swap copy  lossless, ")) << zstat.out;
  EXPECT_FALSE(Has(zstat, "swap copy  lossless, 1.0 MiB")) << zstat.out;
  EXPECT_EQ(Tensorctl(s + "get z " + dir + "/zeros.out").rc, 0);
  std::ifstream zback(dir + "/zeros.out");
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(zback), {}), std::string(1 << 20, '\0'));
  EXPECT_EQ(Tensorctl(s + "put " + dir + "/zeros.bin z2 --compression maybe").rc, 2);
  // A lossy swap copy of float activations: within its budget, and said so.
  {
    std::ofstream f(dir + "/act.bin", std::ios::binary);
    for (int i = 0; i < 256 * 128; ++i) {
      const float v = std::sin(0.37f * float(i)) * float(1 + i % 5);
      f.write(reinterpret_cast<const char*>(&v), 4);
    }
  }
  CtlRun lossy = Tensorctl(s + "put " + dir +
                           "/act.bin act --dtype float32 --shape 256,128 --cache "
                           "--compression lossy --error-budget 0.01 --codecs int8,fp8_e4m3");
  EXPECT_EQ(lossy.rc, 0) << lossy.out;
  EXPECT_EQ(Tensorctl(s + "evict act").rc, 0);
  CtlRun astat = Tensorctl(s + "stat act");
  EXPECT_TRUE(Has(astat, "compress   lossy (budget 1%, fp8_e4m3, int8)")) << astat.out;
  EXPECT_TRUE(Has(astat, "swap copy  int8, ") || Has(astat, "swap copy  fp8_e4m3, ")) << astat.out;
  EXPECT_TRUE(Has(astat, ", error ")) << astat.out;
  EXPECT_TRUE(Has(Tensorctl(s + "stats"), "CODEC")) << "the codec table";
  EXPECT_EQ(Tensorctl(s + "put " + dir + "/act.bin a2 --dtype float32 --compression lossy").rc, 1)
      << "lossy needs a budget: the daemon says INVALID_ARGUMENT";
  EXPECT_EQ(Tensorctl(s + "put " + dir +
                      "/act.bin a3 --dtype float32 --compression lossy --error-budget 0.01 "
                      "--codecs gzip")
                .rc,
            1);
  // A chain block names its parent; stat shows it (a tensor without one shows no line).
  EXPECT_EQ(Tensorctl(s + "put " + dir + "/zeros.bin blk.1 --parent blk.0").rc, 0);
  EXPECT_TRUE(Has(Tensorctl(s + "stat blk.1"), "parent     blk.0")) << "the parent hint kept";
  EXPECT_FALSE(Has(Tensorctl(s + "stat z"), "parent")) << "no parent given";
  EXPECT_EQ(Tensorctl(s + "ls --tier floppy").rc, 2);
  EXPECT_EQ(Tensorctl(s + "evict nope").rc, 1);

  setenv("TENSORD_SOCKET", d.socket().c_str(), 1);
  CtlRun env = Tensorctl("rm k");
  unsetenv("TENSORD_SOCKET");
  EXPECT_EQ(env.rc, 0) << env.out;

  CtlRun missing = Tensorctl(s + "stat k");
  EXPECT_EQ(missing.rc, 1);
  EXPECT_TRUE(Has(missing, "NOT_FOUND")) << missing.out;
  EXPECT_EQ(Tensorctl(s + "top --interval-ms 5 --count 1").rc, 1) << "interval out of range";
  EXPECT_EQ(Tensorctl(s + "frobnicate").rc, 2);
  EXPECT_EQ(Tensorctl(s + "put /nonexistent/file k").rc, 2);
  EXPECT_EQ(Tensorctl("--socket " + dir + "/nobody.sock stats").rc, 1);
}

}  // namespace
}  // namespace tensord::testing
