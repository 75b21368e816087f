// End-to-end tests: the real tensord binary on a private socket, driven by real client
// processes (it_client) and by this process through the C++ client and the raw protocol.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <xxhash.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <functional>
#include <thread>

#include "absl/strings/str_cat.h"
#include "grpcpp/grpcpp.h"
#include "tensord/client.h"
#include "tests/integration/harness.h"

namespace tensord::testing {
namespace {

constexpr uint64_t kMiB = 1 << 20;

std::unique_ptr<Client> Connect(const Daemon& d) { return ConnectClient(d, "daemon_test"); }

// Runs it_client and returns {exit code, first stdout line}.
std::pair<int, std::string> RunClient(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {ClientBinary()};
  argv.insert(argv.end(), args.begin(), args.end());
  Process p(argv, /*capture_stdout=*/true);
  std::string line = p.ReadLine();
  return {p.Wait(), line};
}

Stats StatsOf(Client& c) {
  auto s = c.GetStats();
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? *s : Stats{};
}

// Returns the shared-memory names of `d`'s own segments, as its Welcome lists them. Tests run in
// parallel: /dev/shm also holds other daemons' segments, which no test may count as its own.
std::vector<std::string> SegmentNames(Daemon& d) {
  grpc::ClientContext ctx;
  auto stream = d.stub().Attach(&ctx, v1::AttachRequest());
  v1::AttachEvent ev;
  std::vector<std::string> names;
  if (stream->Read(&ev)) {
    for (const v1::Segment& s : ev.welcome().segments()) names.push_back(s.shm_name());
  }
  ctx.TryCancel();
  stream->Finish().IgnoreError();
  std::sort(names.begin(), names.end());
  return names;
}

// Returns the path under /dev/shm of a POSIX shm name ("/tensord.x" or "tensord.x").
std::string ShmPath(const std::string& name) {
  return "/dev/shm/" + (name.starts_with('/') ? name.substr(1) : name);
}

uint64_t HostUsed(const Stats& s) {
  for (const TierStats& t : s.tiers) {
    if (t.tier == Tier::kHost) return t.used_bytes;
  }
  return ~0ull;
}

TEST(Daemon, TwoProcessesShareA64MiBTensorZeroCopy) {
  Daemon d({"--host-capacity", "256MiB"});
  ASSERT_TRUE(d.ok());
  auto [put_rc, hash] =
      RunClient({"put", d.socket(), "big", std::to_string(64 * kMiB), "7", "durable"});
  ASSERT_EQ(put_rc, 0);
  ASSERT_EQ(hash.size(), 16u);
  EXPECT_EQ(RunClient({"verify", d.socket(), "big", hash}).first, 0);
  // A wrong checksum is detected: the verifier really compares the bytes.
  EXPECT_EQ(RunClient({"verify", d.socket(), "big", "0000000000000000"}).first, 1);
  auto c = Connect(d);
  Stats s = StatsOf(*c);
  EXPECT_EQ(s.counters["bytes_created"], 64 * kMiB);
  EXPECT_EQ(s.leases, 0u) << "the verifier's lease ends with its process";
}

TEST(Daemon, SegmentsAreOwnerOnlyAndRemovedOnCleanStop) {
  auto d = std::make_unique<Daemon>(std::vector<std::string>{"--host-capacity", "64MiB"});
  ASSERT_TRUE(d->ok());
  auto c = Connect(*d);
  auto t = c->Create("x", DType::kUInt8, {4096});
  ASSERT_TRUE(t.ok());
  const std::vector<std::string> names = SegmentNames(*d);
  ASSERT_FALSE(names.empty());
  auto [base, size] = c->SegmentMapping(t->info().location.arena);
  ASSERT_NE(base, nullptr);
  for (const std::string& name : names) {
    struct stat st;
    ASSERT_EQ(::stat(ShmPath(name).c_str(), &st), 0) << name;
    EXPECT_EQ(st.st_mode & 0777, 0600u) << name;
  }
  t = absl::CancelledError();  // drops the writable tensor (aborts it)
  c.reset();
  EXPECT_EQ(d->Stop(), 0);
  for (const std::string& name : names) {
    EXPECT_FALSE(std::filesystem::exists(ShmPath(name))) << name << " left behind after clean stop";
  }
  EXPECT_FALSE(std::filesystem::exists(d->socket()));
}

TEST(Daemon, StaleSegmentsOfACrashedInstanceAreRemovedAtStart) {
  const std::string run_dir = MakeTempDir();
  std::vector<std::string> before;
  {
    Daemon d({"--host-capacity", "64MiB", "--set", "daemon.persist=false"}, run_dir);
    ASSERT_TRUE(d.ok());
    d.KeepState();  // what is being cleaned is what it leaves
    before = SegmentNames(d);
    ASSERT_FALSE(before.empty());
    d.KillHard();
  }
  for (const std::string& name : before) {
    ASSERT_TRUE(std::filesystem::exists(ShmPath(name)))
        << name << ": kill -9 leaves its segments (that is what is being cleaned)";
  }
  Daemon again({"--host-capacity", "64MiB", "--set", "daemon.persist=false"}, run_dir);
  ASSERT_TRUE(again.ok());
  for (const std::string& name : before) {
    EXPECT_FALSE(std::filesystem::exists(ShmPath(name))) << name << " was not removed";
  }
  for (const std::string& name : SegmentNames(again)) {
    EXPECT_TRUE(std::find(before.begin(), before.end(), name) == before.end())
        << name << ": the new instance's segments are new";
  }
}

TEST(Daemon, SecondInstanceOnTheSameRunDirIsRefused) {
  Daemon d({"--host-capacity", "64MiB"});
  ASSERT_TRUE(d.ok());
  Process second({DaemonBinary(), "--run-dir", d.run_dir(), "--host-capacity", "64MiB"});
  EXPECT_EQ(second.Wait(), 1);
  EXPECT_TRUE(IsServing(d.socket())) << "the first instance must keep serving";
}

TEST(Daemon, KillNineOfAClientReleasesEverythingWithin100ms) {
  Daemon d({"--host-capacity", "128MiB"});
  ASSERT_TRUE(d.ok());
  ASSERT_EQ(RunClient({"put", d.socket(), "shared", std::to_string(kMiB), "1", "durable"}).first,
            0);
  auto c = Connect(d);
  // The putting client has exited, but the daemon may not have seen its session end yet (slow
  // under TSan): the baseline is this client's session alone.
  Stats base = StatsOf(*c);
  for (int i = 0; i < 2500 && base.sessions != 1; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    base = StatsOf(*c);
  }
  ASSERT_EQ(base.sessions, 1u);
  Process holder({ClientBinary(), "hold", d.socket(), "shared"}, /*capture_stdout=*/true);
  ASSERT_EQ(holder.ReadLine(), "READY");
  Stats held = StatsOf(*c);
  EXPECT_EQ(held.leases, 1u);
  EXPECT_EQ(held.sessions, base.sessions + 1);
  EXPECT_EQ(HostUsed(held), HostUsed(base) + 4 * kMiB);
  for (const TierStats& t : held.tiers) {
    if (t.tier == Tier::kHost) {
      EXPECT_GT(t.pinned_bytes, 0u);
    }
  }

  const auto killed = std::chrono::steady_clock::now();
  holder.Kill(SIGKILL);
  holder.Wait();
  Stats after;
  while (true) {
    after = StatsOf(*c);
    if (after.leases == 0 && after.sessions == base.sessions) break;
    ASSERT_LT(std::chrono::steady_clock::now() - killed, std::chrono::seconds(5))
        << "leases " << after.leases << ", sessions " << after.sessions
        << " (before the client: " << base.sessions << ")";
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  const auto elapsed = std::chrono::steady_clock::now() - killed;
#ifdef TENSORD_SANITIZED
  const auto bound = std::chrono::milliseconds(500);  // sanitizers slow everything ~3-10x
#else
  const auto bound = std::chrono::milliseconds(100);
#endif
  EXPECT_LT(elapsed, bound) << "cleanup took "
                            << std::chrono::duration<double, std::milli>(elapsed).count() << " ms";
  // Memory is back in the pool and zeroed; the unsealed create is gone; the shared tensor stays.
  while (HostUsed(StatsOf(*c)) != HostUsed(base)) {
    ASSERT_LT(std::chrono::steady_clock::now() - killed, std::chrono::seconds(5));
  }
  EXPECT_EQ(c->Stat("hold.unsealed").status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(c->Stat("shared").ok());
  EXPECT_EQ(StatsOf(*c).counters["aborts"], 1u);
}

TEST(Daemon, FillingTheTierEvictsCacheNeverDurable) {
  Daemon d({"--host-capacity", "64MiB"});
  ASSERT_TRUE(d.ok());
  std::vector<std::pair<std::string, std::string>> durable;  // key, hash
  for (int i = 0; i < 6; ++i) {
    const std::string key = absl::StrCat("durable.", i);
    auto [rc, hash] = RunClient(
        {"put", d.socket(), key, std::to_string(4 * kMiB), std::to_string(100 + i), "durable"});
    ASSERT_EQ(rc, 0);
    durable.emplace_back(key, hash);
  }
  // 24 MiB durable; now 20 x 4 MiB of CACHE through a 64 MiB tier: evictions must happen.
  for (int i = 0; i < 20; ++i) {
    auto [rc, hash] = RunClient({"put", d.socket(), absl::StrCat("cache.", i),
                                 std::to_string(4 * kMiB), std::to_string(i), "cache"});
    ASSERT_EQ(rc, 0) << "CACHE create " << i << " should evict older CACHE tensors";
  }
  auto c = Connect(d);
  EXPECT_GT(StatsOf(*c).counters["evictions"], 0u);
  EXPECT_TRUE(c->Stat("cache.19").ok()) << "the newest CACHE tensor must be resident";
  EXPECT_FALSE(c->Stat("cache.0").ok()) << "the oldest CACHE tensor must have been evicted";
  // Fill with DURABLE until the daemon refuses: it must evict all CACHE first, then say
  // RESOURCE_EXHAUSTED (exit code 10 + 8).
  int rc = 0;
  int n = 0;
  for (; n < 32 && rc == 0; ++n) {
    auto r = RunClient({"put", d.socket(), absl::StrCat("durable.more.", n),
                        std::to_string(4 * kMiB), std::to_string(n), "durable"});
    rc = r.first;
    if (rc == 0) durable.emplace_back(absl::StrCat("durable.more.", n), r.second);
  }
  EXPECT_EQ(rc, 10 + static_cast<int>(absl::StatusCode::kResourceExhausted));
  auto list = c->List("cache.");
  ASSERT_TRUE(list.ok());
  EXPECT_TRUE(list->empty()) << list->size() << " CACHE tensors left while DURABLE was refused";
  for (const auto& [key, hash] : durable) {
    EXPECT_EQ(RunClient({"verify", d.socket(), key, hash}).first, 0) << key << " lost or damaged";
  }
}

TEST(Daemon, EightClientProcessesTimes1000MixedOperations) {
  Daemon d({"--host-capacity", "512MiB"});
  ASSERT_TRUE(d.ok());
  auto [rc, shared_hash] =
      RunClient({"put", d.socket(), "shared.0", std::to_string(kMiB), "99", "durable"});
  ASSERT_EQ(rc, 0);
  std::vector<std::unique_ptr<Process>> clients;
  for (int i = 0; i < 8; ++i) {
    clients.push_back(std::make_unique<Process>(
        std::vector<std::string>{ClientBinary(), "mixed", d.socket(), std::to_string(i), "1000"}));
  }
  for (int i = 0; i < 8; ++i) EXPECT_EQ(clients[i]->Wait(), 0) << "client " << i;
  EXPECT_EQ(RunClient({"verify", d.socket(), "shared.0", shared_hash}).first, 0);
  auto c = Connect(d);
  Stats s = StatsOf(*c);
  EXPECT_EQ(s.leases, 0u);
  EXPECT_EQ(s.objects, 1u) << "every client deleted its tensors or had them freed at exit";
  EXPECT_EQ(s.sessions, 1u);
  EXPECT_GT(s.counters["creates"], 8u * 300);
}

}  // namespace
}  // namespace tensord::testing
