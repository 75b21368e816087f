// The swap engines and the SSD tier on a real file: round trips, short transfers, injected
// errors (transient and persistent), checksum failures, and the forced pread fallback.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <random>
#include <thread>
#include <atomic>

#include "daemon/tiers/ssd_tier.h"

namespace tensord::tiers {
namespace {

using io::FaultPlan;
using io::Op;

constexpr uint64_t kMiB = 1 << 20;

class SsdTest : public ::testing::TestWithParam<bool> {  // param: force the pread fallback
 protected:
  void SetUp() override {
    path_ = ::testing::TempDir() + "/tensord_ssd_test." + std::to_string(getpid()) + ".swap";
    SsdTierConfig config;
    config.files = {{path_, 64 * kMiB}};
    config.engine.force_sync = GetParam();
    config.engine.queue_depth = 8;
    config.engine.chunk_bytes = 256 << 10;
    auto tier = SsdTier::Create(config, io::MakeEngine(config.engine));
    ASSERT_TRUE(tier.ok()) << tier.status();
    tier_ = *std::move(tier);
    ASSERT_STREQ(tier_->Stats().engine, GetParam() ? "pread" : "io_uring");
  }
  void TearDown() override {
    tier_.reset();
    unlink(path_.c_str());
  }
  static std::vector<uint8_t> Random(size_t n, uint64_t seed) {
    std::vector<uint8_t> v(n);
    std::mt19937_64 rng(seed);
    for (auto& b : v) b = static_cast<uint8_t>(rng());
    return v;
  }
  // An aligned buffer, like a host arena's.
  static uint8_t* Aligned(size_t n) {
    return static_cast<uint8_t*>(std::aligned_alloc(4096, (n + 4095) / 4096 * 4096));
  }

  std::string path_;
  std::unique_ptr<SsdTier> tier_;
};

TEST_P(SsdTest, RoundTripsEverySizeAlignedOrNot) {
  for (uint64_t n : {uint64_t{1}, uint64_t{4096}, kMiB + 3, 16 * kMiB}) {
    auto data = Random(n, n);
    uint8_t* src = Aligned(n);
    std::memcpy(src, data.data(), n);
    for (uint8_t* from : {src, data.data()}) {
      auto ext = tier_->Write(from, n);
      ASSERT_TRUE(ext.ok()) << ext.status();
      EXPECT_EQ(ext->offset % 4096, 0u);
      std::vector<uint8_t> back(n + 1, 0xEE);  // unaligned destination
      ASSERT_TRUE(tier_->Read(*ext, back.data() + 1).ok());
      EXPECT_EQ(std::memcmp(back.data() + 1, data.data(), n), 0) << n;
      tier_->Free(*ext);
    }
    std::free(src);
  }
  EXPECT_EQ(tier_->Stats().used_bytes, 0u);
  EXPECT_EQ(tier_->Stats().io_errors, 0u);
}

TEST_P(SsdTest, ShortTransfersAreCompleted) {
  auto data = Random(4 * kMiB, 7);
  tier_->faults().Set({FaultPlan::Kind::kShort, Op::kWrite, 0, 5});
  auto ext = tier_->Write(data.data(), data.size());
  ASSERT_TRUE(ext.ok()) << ext.status();
  tier_->faults().Set({FaultPlan::Kind::kShort, Op::kRead, 0, 5});
  std::vector<uint8_t> back(data.size());
  ASSERT_TRUE(tier_->Read(*ext, back.data()).ok());
  EXPECT_EQ(back, data);
}

TEST_P(SsdTest, TransientErrorsFailOneCallThenRecover) {
  auto data = Random(kMiB, 3);
  tier_->faults().Set({FaultPlan::Kind::kError, Op::kWrite, EIO, 1});
  auto bad = tier_->Write(data.data(), data.size());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(tier_->Stats().used_bytes, 0u) << "a failed write frees its extent";
  tier_->faults().Set({FaultPlan::Kind::kError, Op::kWrite, ENOSPC, 1});
  EXPECT_EQ(tier_->Write(data.data(), data.size()).status().code(),
            absl::StatusCode::kResourceExhausted);
  auto ext = tier_->Write(data.data(), data.size());
  ASSERT_TRUE(ext.ok());
  tier_->faults().Set({FaultPlan::Kind::kError, Op::kRead, EIO, 1});
  std::vector<uint8_t> back(data.size());
  EXPECT_EQ(tier_->Read(*ext, back.data()).code(), absl::StatusCode::kUnavailable);
  ASSERT_TRUE(tier_->Read(*ext, back.data()).ok());
  EXPECT_EQ(back, data);
  EXPECT_FALSE(tier_->degraded());
  EXPECT_EQ(tier_->Stats().io_errors, 3u);
}

TEST_P(SsdTest, PersistentErrorsDegradeTheTier) {
  auto data = Random(kMiB, 4);
  auto good = tier_->Write(data.data(), data.size());
  ASSERT_TRUE(good.ok());
  tier_->faults().Set({FaultPlan::Kind::kError, Op::kWrite, EIO, -1});
  for (int i = 0; i < 3; ++i) EXPECT_FALSE(tier_->Write(data.data(), data.size()).ok());
  EXPECT_TRUE(tier_->degraded());
  tier_->faults().Clear();
  EXPECT_EQ(tier_->Write(data.data(), data.size()).status().code(), absl::StatusCode::kUnavailable)
      << "a degraded tier takes no new writes";
  std::vector<uint8_t> back(data.size());
  ASSERT_TRUE(tier_->Read(*good, back.data()).ok()) << "reads are still attempted";
  EXPECT_EQ(back, data);
}

TEST_P(SsdTest, CorruptedExtentIsDataLossNeverWrongBytes) {
  auto data = Random(64 << 10, 5);
  auto ext = tier_->Write(data.data(), data.size());
  ASSERT_TRUE(ext.ok());
  int fd = open(path_.c_str(), O_WRONLY);
  ASSERT_GE(fd, 0);
  const uint8_t junk = data[100] ^ 0xFF;
  ASSERT_EQ(pwrite(fd, &junk, 1, static_cast<off_t>(ext->offset + 100)), 1);
  fsync(fd);
  close(fd);
  std::vector<uint8_t> back(data.size());
  EXPECT_EQ(tier_->Read(*ext, back.data()).code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(tier_->Stats().checksum_failures, 1u);
}

TEST_P(SsdTest, FullSwapIsResourceExhaustedAndFreeingRestoresRoom) {
  auto data = Random(16 * kMiB, 6);
  std::vector<SsdExtent> extents;
  for (int i = 0; i < 4; ++i) {
    auto e = tier_->Write(data.data(), data.size());
    ASSERT_TRUE(e.ok());
    extents.push_back(*e);
  }
  EXPECT_EQ(tier_->Write(data.data(), 4096).status().code(), absl::StatusCode::kResourceExhausted);
  tier_->Free(extents[1]);
  EXPECT_TRUE(tier_->Write(data.data(), data.size()).ok());
}

// Transfers from and to registered (fixed) buffers, and the fallback when the kernel refuses
// to register a region.
TEST(UringFixedBuffers, RegisteredRegionsRoundTripAndRefusalFallsBack) {
  const std::string path = ::testing::TempDir() + "/tensord_fixed." + std::to_string(getpid());
  const uint64_t size = 8 * kMiB;
  auto* arena = static_cast<uint8_t*>(std::aligned_alloc(4096, size));
  void* no_access = mmap(nullptr, kMiB, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(no_access, MAP_FAILED);
  for (bool refuse : {false, true}) {
    SsdTierConfig config;
    config.files = {{path, 32 * kMiB}};
    config.engine.fixed_regions = {{arena, size}};
    if (refuse) config.engine.fixed_regions.push_back({static_cast<uint8_t*>(no_access), kMiB});
    auto tier = SsdTier::Create(config, io::MakeEngine(config.engine));
    ASSERT_TRUE(tier.ok()) << tier.status();
    EXPECT_STREQ((*tier)->Stats().engine, refuse ? "io_uring" : "io_uring+fixed");
    std::mt19937_64 rng(refuse);
    for (uint64_t i = 0; i < size; ++i) arena[i] = static_cast<uint8_t>(rng());
    const uint64_t n = 3 * kMiB + 100;  // an unaligned tail goes through a bounce buffer
    for (uint64_t at : {uint64_t{0}, size - n}) {
      const std::vector<uint8_t> src(arena + at, arena + at + n);
      auto ext = (*tier)->Write(arena + at, n);
      ASSERT_TRUE(ext.ok()) << ext.status();
      std::memset(arena + at, 0, n);
      ASSERT_TRUE((*tier)->Read(*ext, arena + at).ok());
      EXPECT_EQ(std::memcmp(arena + at, src.data(), n), 0) << at;
      (*tier)->Free(*ext);
    }
  }
  munmap(no_access, kMiB);
  std::free(arena);
  unlink(path.c_str());
}

TEST(SsdTierFiles, ExtentsRotateOverSwapFilesAndFillThemAll) {
  const std::string base = ::testing::TempDir() + "/tensord_files." + std::to_string(getpid());
  SsdTierConfig config;
  config.files = {{base + ".a", 8 * kMiB}, {base + ".b", 4 * kMiB}};
  auto tier = SsdTier::Create(config, io::MakeEngine(config.engine));
  ASSERT_TRUE(tier.ok()) << tier.status();
  EXPECT_EQ((*tier)->Stats().capacity_bytes, 12 * kMiB);
  std::vector<SsdExtent> extents;
  std::vector<std::vector<uint8_t>> data;
  for (int i = 0; i < 12; ++i) {  // 12 MiB: both files full
    data.push_back(std::vector<uint8_t>(kMiB, static_cast<uint8_t>(i)));
    auto ext = (*tier)->Write(data.back().data(), kMiB);
    ASSERT_TRUE(ext.ok()) << i << ": " << ext.status();
    extents.push_back(*ext);
  }
  EXPECT_NE(extents[0].space, extents[1].space) << "consecutive extents go to different files";
  EXPECT_EQ(std::count_if(extents.begin(), extents.end(), [](auto& e) { return e.space == 1; }), 4);
  EXPECT_EQ((*tier)->Write(data[0].data(), 4096).status().code(),
            absl::StatusCode::kResourceExhausted);
  for (int i = 0; i < 12; ++i) {
    std::vector<uint8_t> back(kMiB);
    ASSERT_TRUE((*tier)->Read(extents[i], back.data()).ok());
    EXPECT_EQ(back, data[i]) << i;
  }
  tier->reset();
  unlink((base + ".a").c_str());
  unlink((base + ".b").c_str());
  SsdTierConfig bad;
  bad.files = {{base + ".c", 4 * kMiB + 1}};
  EXPECT_EQ(SsdTier::Create(bad, io::MakeEngine(bad.engine)).status().code(),
            absl::StatusCode::kInvalidArgument);
  bad.files.clear();
  EXPECT_EQ(SsdTier::Create(bad, io::MakeEngine(bad.engine)).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// The compressed RAM front: encodings that saved enough stay in RAM (no file I/O), others go to
// the files; when the front is full its oldest entries are written back and still read back
// intact; frees work wherever an entry is, also during a write-back's aftermath; a damaged
// entry is DATA_LOSS.
TEST(SsdRamFront, KeepsWellCompressedCopiesInRamAndWritesTheOldestBack) {
  const std::string path = ::testing::TempDir() + "/tensord_ram." + std::to_string(getpid());
  SsdTierConfig config;
  config.files = {{path, 16 * kMiB}};
  config.ram_capacity = 3 * kMiB;
  config.ram_min_saving = 0.25;
  auto made = SsdTier::Create(config, io::MakeEngine(config.engine));
  ASSERT_TRUE(made.ok()) << made.status();
  SsdTier& tier = **made;
  // Writes `data` as an encoding of a `decoded`-byte tensor; returns its range.
  const auto put = [&](const std::vector<uint8_t>& data, uint64_t decoded) {
    Placement where;
    where.decoded_bytes = decoded;
    auto r = tier.Reserve(data.size(), where);
    EXPECT_TRUE(r.ok()) << r.status();
    const Transfer t{&*r, const_cast<uint8_t*>(data.data())};
    EXPECT_TRUE(tier.WriteAll({&t, 1})[0].ok());
    return *r;
  };
  const auto get = [&](Range r) {
    std::vector<uint8_t> back(r.length);
    const Transfer t{&r, back.data()};
    absl::Status st = tier.ReadAll({&t, 1})[0];
    EXPECT_TRUE(st.ok()) << st;
    return back;
  };
  std::vector<std::vector<uint8_t>> data;
  for (int i = 0; i < 4; ++i) data.push_back(std::vector<uint8_t>(kMiB, uint8_t(i + 1)));
  // A 2x encoding stays in RAM; no byte reaches the file.
  const Range a = put(data[0], 2 * kMiB);
  EXPECT_EQ(a.space, kRamSpace);
  EXPECT_EQ(tier.Stats().bytes_written, 0u);
  EXPECT_EQ(get(a), data[0]);
  SsdStats st = tier.Stats();
  EXPECT_EQ(st.ram_used_bytes, kMiB);
  EXPECT_EQ(st.ram_logical_bytes, 2 * kMiB);
  EXPECT_EQ(st.ram_entries, 1u);
  EXPECT_EQ(st.ram_reads, 1u);
  EXPECT_EQ(st.bytes_read, 0u);
  // Saving 10% is not enough: to the file.
  const Range raw = put(data[1], kMiB + kMiB / 10);
  EXPECT_NE(raw.space, kRamSpace);
  EXPECT_EQ(tier.Stats().bytes_written, kMiB);
  // Three more fill the front (3 MiB): the oldest (a) is written back to make room.
  const Range b = put(data[1], 2 * kMiB), c = put(data[2], 2 * kMiB);
  EXPECT_EQ(tier.Stats().ram_writebacks, 0u);
  const Range d = put(data[3], 2 * kMiB);
  EXPECT_EQ(d.space, kRamSpace);
  st = tier.Stats();
  EXPECT_EQ(st.ram_writebacks, 1u);
  EXPECT_EQ(st.ram_used_bytes, 3 * kMiB);
  EXPECT_EQ(st.ram_entries, 3u);
  const uint64_t read_before = st.bytes_read;
  EXPECT_EQ(get(a), data[0]) << "written back: read from the file";
  EXPECT_GT(tier.Stats().bytes_read, read_before);
  EXPECT_EQ(get(b), data[1]);
  EXPECT_EQ(get(c), data[2]);
  EXPECT_EQ(get(d), data[3]);
  // A damaged entry (its range's checksum no longer matches) is DATA_LOSS.
  Range damaged = c;
  damaged.checksum ^= 1;
  std::vector<uint8_t> back(kMiB);
  const Transfer t{&damaged, back.data()};
  EXPECT_EQ(tier.ReadAll({&t, 1})[0].code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(tier.Stats().checksum_failures, 1u);
  // Frees: in RAM, written back, and on file.
  for (const Range& r : {a, b, c, d, raw}) tier.Free(r);
  st = tier.Stats();
  EXPECT_EQ(st.ram_used_bytes, 0u);
  EXPECT_EQ(st.ram_entries, 0u);
  EXPECT_EQ(st.ram_logical_bytes, 0u);
  EXPECT_EQ(st.used_bytes, 0u) << "the written-back extent was freed too";
  made->reset();
  unlink(path.c_str());
}

// Four threads store, read and free entries through a front small enough that write-backs run
// all the time, so reads and frees meet entries while they are being written back: every read
// returns its bytes, and everything is accounted for at the end.
TEST(SsdRamFront, ConcurrentWritesReadsAndFreesDuringWriteBacks) {
  const std::string path = ::testing::TempDir() + "/tensord_ram_mt." + std::to_string(getpid());
  SsdTierConfig config;
  config.files = {{path, 64 * kMiB}};
  config.ram_capacity = kMiB;
  auto made = SsdTier::Create(config, io::MakeEngine(config.engine));
  ASSERT_TRUE(made.ok()) << made.status();
  SsdTier& tier = **made;
  std::atomic<int> wrong{0}, failed{0};
  std::vector<std::thread> threads;
  for (int w = 0; w < 4; ++w) {
    threads.emplace_back([&, w] {
      std::mt19937 rng(w);
      std::vector<std::pair<Range, std::vector<uint8_t>>> held;
      for (int i = 0; i < 200; ++i) {
        std::vector<uint8_t> data(4096 + rng() % (96 << 10), uint8_t(rng()));
        Placement where;
        where.decoded_bytes = 2 * data.size();
        auto r = tier.Reserve(data.size(), where);
        if (!r.ok()) {
          ++failed;
          continue;
        }
        const Transfer t{&*r, data.data()};
        if (!tier.WriteAll({&t, 1})[0].ok()) {
          ++failed;
          tier.Free(*r);
          continue;
        }
        held.emplace_back(*r, std::move(data));
        if (held.size() > 6 || rng() % 3 == 0) {  // read one back and free it
          const size_t k = rng() % held.size();
          Range range = held[k].first;
          std::vector<uint8_t> back(range.length);
          const Transfer rt{&range, back.data()};
          if (!tier.ReadAll({&rt, 1})[0].ok() || back != held[k].second) ++wrong;
          tier.Free(held[k].first);
          held.erase(held.begin() + static_cast<ptrdiff_t>(k));
        }
      }
      for (auto& [range, bytes] : held) {
        std::vector<uint8_t> back(range.length);
        Range copy = range;
        const Transfer rt{&copy, back.data()};
        if (!tier.ReadAll({&rt, 1})[0].ok() || back != bytes) ++wrong;
        tier.Free(range);
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_EQ(failed.load(), 0);
  const SsdStats st = tier.Stats();
  EXPECT_GT(st.ram_writebacks, 0u) << "the front was never full";
  EXPECT_GT(st.ram_reads, 0u);
  EXPECT_EQ(st.ram_used_bytes, 0u);
  EXPECT_EQ(st.ram_entries, 0u);
  EXPECT_EQ(st.used_bytes, 0u);
  made->reset();
  unlink(path.c_str());
}

INSTANTIATE_TEST_SUITE_P(Engines, SsdTest, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "pread" : "io_uring"; });

}  // namespace
}  // namespace tensord::tiers
