// The SSD tier end to end: the real daemon with a 256 MiB host tier and a swap file on disk,
// 1 GiB of DURABLE tensors written by several client processes, then read back by several
// client processes in different orders, cycle after cycle, so that every tensor is demoted and
// promoted again and again. Every byte must come back; nothing may be lost. Run with io_uring
// (one swap file) and with the forced pread fallback (two swap files).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "tensord/client.h"
#include "tests/integration/harness.h"

namespace tensord::testing {
namespace {

constexpr uint64_t kMiB = 1 << 20;
constexpr int kWriters = 4;
constexpr int kPerWriter = 16;
constexpr uint64_t kTensorBytes = 16 * kMiB;  // 4 x 16 x 16 MiB = 1 GiB

class SwapTest : public ::testing::TestWithParam<bool> {};  // param: force pread fallback

TEST_P(SwapTest, OneGiBThroughA256MiBHostTierKeepsEveryByte) {
  const std::string dir = MakeTempDir();
  std::vector<std::string> args = {"--host-capacity", "256MiB",      "--swap-file",
                                   dir + "/swap",     "--swap-size", "2GiB"};
  if (GetParam()) {  // the fallback engine, over two swap files
    args.insert(args.end(), {"--swap-fallback", "--swap-file", dir + "/swap2"});
  }
  Daemon d(args, dir);
  ASSERT_TRUE(d.ok());

  auto run_all = [&](const std::vector<std::vector<std::string>>& commands) {
    std::vector<std::unique_ptr<Process>> procs;
    for (const auto& args : commands) {
      std::vector<std::string> argv = {ClientBinary()};
      argv.insert(argv.end(), args.begin(), args.end());
      procs.push_back(std::make_unique<Process>(argv));
    }
    for (size_t i = 0; i < procs.size(); ++i) EXPECT_EQ(procs[i]->Wait(), 0) << "client " << i;
  };
  const auto bytes = std::to_string(kTensorBytes);
  const auto count = std::to_string(kPerWriter);
  std::vector<std::vector<std::string>> writers;
  for (int w = 0; w < kWriters; ++w) {
    writers.push_back(
        {"putmany", d.socket(), absl::StrCat("w", w), count, bytes, std::to_string(1000 * w)});
  }
  run_all(writers);
  if (::testing::Test::HasFailure()) return;

  for (int cycle = 0; cycle < 2; ++cycle) {
    // Each reader checks every writer's tensors, starting at a different place.
    std::vector<std::vector<std::string>> readers;
    for (int r = 0; r < kWriters; ++r) {
      for (int w = 0; w < kWriters; ++w) {
        if ((r + w + cycle) % 2 != 0) continue;  // 8 readers per cycle, half the keys each
        readers.push_back({"verifymany", d.socket(), absl::StrCat("w", w), count, bytes,
                           std::to_string(1000 * w), std::to_string(r * 5 + cycle)});
      }
    }
    run_all(readers);
  }

  ClientOptions opts;
  opts.socket_path = d.socket();
  auto c = Client::Connect(opts);
  ASSERT_TRUE(c.ok()) << c.status();
  auto stats = (*c)->GetStats();
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->objects, uint64_t{kWriters * kPerWriter}) << "nothing lost";
  EXPECT_TRUE(stats->swap.present);
  if (GetParam()) {
    EXPECT_EQ(stats->swap.engine, "pread");
  } else {  // "io_uring+fixed" where the arenas could be registered (RLIMIT_MEMLOCK)
    EXPECT_TRUE(stats->swap.engine.starts_with("io_uring")) << stats->swap.engine;
  }
  EXPECT_FALSE(stats->swap.degraded);
  EXPECT_EQ(stats->swap.io_errors, 0u);
  EXPECT_EQ(stats->swap.checksum_failures, 0u);
  EXPECT_GE(stats->swap.bytes_written, 768 * kMiB) << "at least 3/4 of the data went to swap";
  EXPECT_GT(stats->counters["promotions"], uint64_t{kWriters * kPerWriter});
  EXPECT_GT(stats->counters["demotions"], uint64_t{kWriters * kPerWriter});
  EXPECT_EQ(stats->counters["data_loss"], 0u);
  EXPECT_EQ(stats->counters["swap_misses"], 0u);
  for (const TierStats& t : stats->tiers) {
    if (t.tier == Tier::kHost) {
      EXPECT_LE(t.used_bytes, t.capacity_bytes);
      EXPECT_GT(t.misses, 0u) << "promotions count as host misses";
    }
    if (t.tier == Tier::kSsd) {
      EXPECT_TRUE(t.present);
      EXPECT_EQ(t.used_bytes % 4096, 0u);
      EXPECT_GT(t.hits, 0u);
    }
  }
  EXPECT_EQ(d.Stop(), 0);
}

INSTANTIATE_TEST_SUITE_P(Engines, SwapTest, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "pread" : "io_uring"; });

}  // namespace
}  // namespace tensord::testing
