// The GPU tier end to end: the real tensord, real client processes (it_client gpu* modes) and
// CUDA IPC. Without a GPU (or built without CUDA) the tier must be absent and say so, and the
// GPU tests skip with the reason. With one, they share tensors between processes through the
// daemon's arena, round-trip host -> GPU -> host, release a killed client's GPU leases and demote
// to host when the arena is full.
#include <gtest/gtest.h>

#include <thread>

#include "absl/strings/str_cat.h"
#include "common/cuda.h"
#include "tensord/client.h"
#include "tests/integration/harness.h"

namespace tensord::testing {
namespace {

constexpr uint64_t kMiB = 1 << 20;
constexpr int kNoGpu = 77;  // it_client's exit code when it cannot use a GPU

std::unique_ptr<Client> ConnectTo(const Daemon& d) { return ConnectClient(d, "gpu_test"); }

std::pair<int, std::string> RunIt(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {ClientBinary()};
  argv.insert(argv.end(), args.begin(), args.end());
  Process p(argv, /*capture_stdout=*/true);
  std::string line = p.ReadLine();
  return {p.Wait(), line};
}

const TierStats* Tier(const Stats& s, tensord::Tier t) {
  for (const TierStats& x : s.tiers) {
    if (x.tier == t) return &x;
  }
  return nullptr;
}

// Empty when this machine can run the GPU tests, else why not.
std::string NoGpuReason() {
  std::string why;
  if (cuda::DeviceCount(&why) == 0) return why;
  return "";
}

#define SKIP_WITHOUT_GPU()                                              \
  do {                                                                  \
    if (const std::string why = NoGpuReason(); !why.empty()) {          \
      GTEST_SKIP() << "needs an NVIDIA GPU and driver (" << why << ")"; \
    }                                                                   \
  } while (0)

TEST(GpuTier, AbsentWithoutAGpuAndSaysSo) {
  if (NoGpuReason().empty()) GTEST_SKIP() << "this machine has a GPU: the tier is present";
  Daemon d({"--host-capacity", "64MiB"});
  ASSERT_TRUE(d.ok());
  auto c = ConnectTo(d);
  ASSERT_NE(c, nullptr);
  EXPECT_FALSE(c->gpu_usable());
  auto s = c->GetStats();
  ASSERT_TRUE(s.ok());
  ASSERT_NE(Tier(*s, tensord::Tier::kGpu), nullptr);
  EXPECT_FALSE(Tier(*s, tensord::Tier::kGpu)->present);
  EXPECT_TRUE(s->gpus.empty());
  auto health = c->Health();
  ASSERT_TRUE(health.ok());
  for (const auto& [service, state] : *health) {
    if (service == "tensord.gpu") {
      EXPECT_EQ(state, "NOT_SERVING");
    }
  }
  // GPU requests fail clearly; host work is unaffected.
  CreateOptions gpu;
  gpu.tier = tensord::Tier::kGpu;
  auto t = c->Create("g", DType::kUInt8, {4096}, gpu);
  EXPECT_EQ(t.status().code(), absl::StatusCode::kFailedPrecondition) << t.status();
  auto h = c->Create("h", DType::kUInt8, {4096});
  ASSERT_TRUE(h.ok());
  ASSERT_TRUE(h->Seal().ok());
  auto lease = c->Get("h", tensord::Tier::kGpu);
  EXPECT_EQ(lease.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(lease.status().message().find("GPU tier is not present"), std::string::npos)
      << lease.status();
  EXPECT_TRUE(c->Get("h").ok()) << "want=ANY is served from host";
  // it_client's GPU modes notice there is no GPU rather than failing obscurely.
  EXPECT_EQ(RunIt({"gpuput", d.socket(), "x", "4096", "1"}).first, kNoGpu);
}

TEST(GpuTier, ModeOnRefusesToStartWithoutAGpu) {
  if (NoGpuReason().empty()) GTEST_SKIP() << "this machine has a GPU";
  const std::string dir = MakeTempDir();
  Process p({DaemonBinary(), "--run-dir", dir, "--host-capacity", "64MiB", "--set", "gpu.mode=on"});
  EXPECT_EQ(p.WaitFor(std::chrono::seconds(20)), 1) << "gpu.mode=on without a GPU must not start";
}

TEST(GpuTier, TwoProcessesShareAGpuTensorThroughIpc) {
  SKIP_WITHOUT_GPU();
  Daemon d({"--host-capacity", "512MiB", "--set", "gpu.size=1GiB", "--set", "gpu.devices=0"});
  ASSERT_TRUE(d.ok());
  auto [rc, hash] = RunIt({"gpuput", d.socket(), "shared", std::to_string(64 * kMiB + 4096), "7"});
  ASSERT_EQ(rc, 0);
  ASSERT_EQ(hash.size(), 16u);
  // Another process reads it through its own IPC mapping, 20 times: one open of the arena.
  auto [vrc, opens] = RunIt({"gpuverify", d.socket(), "shared", hash, "20"});
  EXPECT_EQ(vrc, 0);
  EXPECT_EQ(opens.substr(0, 7), "opens 1") << opens;
  EXPECT_EQ(RunIt({"gpuverify", d.socket(), "shared", "0000000000000000", "1"}).first, 1)
      << "the verifier really compares the bytes";
  auto c = ConnectTo(d);
  auto info = c->Stat("shared");
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->location.tier, tensord::Tier::kGpu);
  auto s = c->GetStats();
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->counters["gpu_promotions"], 0u) << "shared in place, never copied";
  EXPECT_EQ(s->leases, 0u);
}

TEST(GpuTier, HostToGpuToHostKeepsEveryByte) {
  SKIP_WITHOUT_GPU();
  Daemon d({"--host-capacity", "512MiB", "--set", "gpu.size=512MiB", "--set", "gpu.devices=0"});
  ASSERT_TRUE(d.ok());
  auto [rc, hash] = RunIt({"put", d.socket(), "h", std::to_string(48 * kMiB + 12), "3", "durable"});
  ASSERT_EQ(rc, 0);
  EXPECT_EQ(RunIt({"gpuverify", d.socket(), "h", hash, "1"}).first, 0);  // copied up
  auto c = ConnectTo(d);
  ASSERT_TRUE(c->Evict("h").ok());  // drops the GPU copy: the host one stays
  EXPECT_EQ(RunIt({"verify", d.socket(), "h", hash}).first, 0);
  // Created on the GPU, read back through a host copy.
  auto [grc, ghash] = RunIt({"gpuput", d.socket(), "g", std::to_string(48 * kMiB + 12), "4"});
  ASSERT_EQ(grc, 0);
  EXPECT_EQ(RunIt({"verify", d.socket(), "g", ghash}).first, 0);  // copied down
  auto s = c->GetStats();
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->counters["gpu_promotions"], 1u);
  EXPECT_EQ(s->counters["gpu_demoted_bytes"], 48 * kMiB + 12);
}

TEST(GpuTier, KillNineOfAClientReleasesItsGpuLeases) {
  SKIP_WITHOUT_GPU();
  Daemon d({"--host-capacity", "256MiB", "--set", "gpu.size=256MiB", "--set", "gpu.devices=0"});
  ASSERT_TRUE(d.ok());
  ASSERT_EQ(RunIt({"gpuput", d.socket(), "k", std::to_string(8 * kMiB), "5"}).first, 0);
  auto c = ConnectTo(d);
  Process holder({ClientBinary(), "gpuhold", d.socket(), "k"}, /*capture_stdout=*/true);
  ASSERT_EQ(holder.ReadLine(), "READY");
  auto held = c->GetStats();
  ASSERT_TRUE(held.ok());
  EXPECT_EQ(held->leases, 1u);
  EXPECT_GT(Tier(*held, tensord::Tier::kGpu)->pinned_bytes, 0u);
  EXPECT_EQ(c->Evict("k").status().code(), absl::StatusCode::kFailedPrecondition);
  holder.Kill(SIGKILL);
  holder.Wait();
  const auto killed = std::chrono::steady_clock::now();
  while (true) {
    auto s = c->GetStats();
    ASSERT_TRUE(s.ok());
    if (s->leases == 0 && Tier(*s, tensord::Tier::kGpu)->pinned_bytes == 0) break;
    ASSERT_LT(std::chrono::steady_clock::now() - killed, std::chrono::seconds(5));
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  auto evicted = c->Evict("k");  // unleased now: demoted to host
  ASSERT_TRUE(evicted.ok()) << evicted.status();
  EXPECT_EQ(*evicted, "demoted to host");
}

TEST(GpuTier, FullGpuDemotesToHostAndLosesNothing) {
  SKIP_WITHOUT_GPU();
  // A 64 MiB arena and ten 16 MiB DURABLE tensors created on it.
  Daemon d({"--host-capacity", "512MiB", "--set", "gpu.size=64MiB", "--set", "gpu.devices=0"});
  ASSERT_TRUE(d.ok());
  std::vector<std::string> hashes;
  for (int i = 0; i < 10; ++i) {
    auto [rc, hash] = RunIt({"gpuput", d.socket(), absl::StrCat("t", i), std::to_string(16 * kMiB),
                             std::to_string(100 + i)});
    ASSERT_EQ(rc, 0) << "tensor " << i;
    hashes.push_back(hash);
  }
  auto c = ConnectTo(d);
  auto s = c->GetStats();
  ASSERT_TRUE(s.ok());
  EXPECT_GE(s->counters["gpu_demotions"], 6u);
  EXPECT_LE(Tier(*s, tensord::Tier::kGpu)->used_bytes, 64 * kMiB);
  for (int i = 0; i < 10; ++i) {
    EXPECT_EQ(RunIt({"verify", d.socket(), absl::StrCat("t", i), hashes[i]}).first, 0) << i;
    EXPECT_EQ(RunIt({"gpuverify", d.socket(), absl::StrCat("t", i), hashes[i], "1"}).first, 0) << i;
  }
}

}  // namespace
}  // namespace tensord::testing
