// Every tier against the one Tier interface (tiers/tier.h): the host tier (shared memory), the
// GPU tier over a fake device, the SSD tier on a real file (io_uring and the pread fallback),
// and the in-memory fake. The same checks run on each: batched round trips of odd sizes,
// capacity and freeing, refused oversize transfers, scrubbing, and one completion per batch.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <vector>

#include "common/random.h"
#include "daemon/tiers/gpu_tier.h"
#include "daemon/tiers/host_tier.h"
#include "daemon/tiers/ssd_tier.h"
#include "tests/unit/fake_gpu.h"
#include "tests/unit/fake_tier.h"

namespace tensord::tiers {
namespace {

constexpr uint64_t kMiB = 1 << 20;
constexpr uint64_t kCapacity = 8 * kMiB;

enum class Kind { kHost, kGpu, kSsdUring, kSsdPread, kFake };

std::string Name(const ::testing::TestParamInfo<Kind>& info) {
  switch (info.param) {
    case Kind::kHost:
      return "host";
    case Kind::kGpu:
      return "gpu_fake_device";
    case Kind::kSsdUring:
      return "ssd_io_uring";
    case Kind::kSsdPread:
      return "ssd_pread";
    case Kind::kFake:
      return "fake";
  }
  return "?";
}

std::vector<uint8_t> Pattern(uint64_t n, uint64_t seed) {
  std::vector<uint8_t> v(n);
  std::mt19937_64 rng(seed);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

class TierTest : public ::testing::TestWithParam<Kind> {
 protected:
  void SetUp() override {
    switch (GetParam()) {
      case Kind::kHost: {
        HostTierConfig c;
        c.capacity = kCapacity;
        c.prefault = false;
        auto t = HostTier::Create(c, "tensord.tiertest." + RandomHex(4) + ".");
        ASSERT_TRUE(t.ok()) << t.status();
        host_ = *std::move(t);
        tier_ = host_.get();
        break;
      }
      case Kind::kGpu: {
        std::vector<std::unique_ptr<GpuDevice>> devices;
        devices.push_back(std::make_unique<FakeGpuDevice>(0, kCapacity));
        auto t = GpuTier::ForDevices(std::move(devices));
        ASSERT_TRUE(t.ok()) << t.status();
        gpu_ = *std::move(t);
        tier_ = gpu_.get();
        break;
      }
      case Kind::kSsdUring:
      case Kind::kSsdPread: {
        path_ = ::testing::TempDir() + "/tensord_tier." + RandomHex(4) + ".swap";
        SsdTierConfig c;
        c.files = {{path_, kCapacity}};
        c.engine.force_sync = GetParam() == Kind::kSsdPread;
        auto t = SsdTier::Create(c, io::MakeEngine(c.engine));
        ASSERT_TRUE(t.ok()) << t.status();
        ssd_ = *std::move(t);
        tier_ = ssd_.get();
        break;
      }
      case Kind::kFake:
        fake_ = std::make_unique<FakeTier>(TierId::kSsd, kCapacity);
        tier_ = fake_.get();
        break;
    }
  }
  void TearDown() override {
    ssd_.reset();
    if (!path_.empty()) unlink(path_.c_str());
  }

  std::unique_ptr<HostTier> host_;
  std::unique_ptr<GpuTier> gpu_;
  std::unique_ptr<SsdTier> ssd_;
  std::unique_ptr<FakeTier> fake_;
  std::string path_;
  Tier* tier_ = nullptr;
};

TEST_P(TierTest, RoundTripsABatchOfOddSizes) {
  const std::vector<uint64_t> sizes = {1, 4095, 4096, 65537, kMiB, 3 * kMiB + 5};
  std::vector<Range> ranges;
  std::vector<std::vector<uint8_t>> data, back;
  std::vector<Transfer> writes, reads;
  for (size_t i = 0; i < sizes.size(); ++i) {
    auto r = tier_->Reserve(sizes[i], {});
    ASSERT_TRUE(r.ok()) << sizes[i] << ": " << r.status();
    EXPECT_EQ(r->length, sizes[i]);
    EXPECT_GE(r->reserved, sizes[i]);
    ranges.push_back(*r);
    data.push_back(Pattern(sizes[i], i));
    back.emplace_back(sizes[i] + 1, 0);  // +1: an unaligned destination below
  }
  for (size_t i = 0; i < sizes.size(); ++i) {
    writes.push_back({&ranges[i], data[i].data()});
    reads.push_back({&ranges[i], back[i].data() + 1});
  }
  for (const absl::Status& st : tier_->WriteAll(writes)) ASSERT_TRUE(st.ok()) << st;
  for (const absl::Status& st : tier_->ReadAll(reads)) ASSERT_TRUE(st.ok()) << st;
  for (size_t i = 0; i < sizes.size(); ++i) {
    EXPECT_EQ(std::memcmp(back[i].data() + 1, data[i].data(), sizes[i]), 0) << sizes[i];
  }
  const TransferCounters c = tier_->counters();
  EXPECT_EQ(c.writes, sizes.size());
  EXPECT_EQ(c.reads, sizes.size());
  EXPECT_EQ(c.failures, 0u);
  for (const Range& r : ranges) tier_->Free(r);
  EXPECT_EQ(tier_->Usage().used_bytes, 0u);
}

TEST_P(TierTest, FullIsResourceExhaustedAndFreeingRestoresRoom) {
  EXPECT_EQ(tier_->Reserve(0, {}).status().code(), absl::StatusCode::kInvalidArgument);
  std::vector<Range> ranges;
  while (true) {
    auto r = tier_->Reserve(kMiB, {});
    if (!r.ok()) {
      EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted) << r.status();
      break;
    }
    ranges.push_back(*r);
    ASSERT_LE(ranges.size(), kCapacity / kMiB) << "more reserved than the tier holds";
  }
  EXPECT_EQ(ranges.size(), kCapacity / kMiB);
  const TierUsage full = tier_->Usage();
  EXPECT_EQ(full.capacity_bytes, kCapacity);
  EXPECT_EQ(full.used_bytes, kCapacity);
  tier_->Free(ranges.back());
  ranges.pop_back();
  EXPECT_EQ(tier_->Usage().used_bytes, kCapacity - kMiB);
  auto again = tier_->Reserve(kMiB, {});
  ASSERT_TRUE(again.ok()) << again.status();
  ranges.push_back(*again);
  for (const Range& r : ranges) tier_->Free(r);
}

TEST_P(TierTest, ATransferLargerThanItsRangeIsRefusedAloneInItsBatch) {
  auto a = tier_->Reserve(4096, {});
  auto b = tier_->Reserve(4096, {});
  ASSERT_TRUE(a.ok() && b.ok());
  Range bad = *a;
  bad.length = bad.reserved + 1;
  std::vector<uint8_t> data = Pattern(bad.length, 7);
  const Transfer items[] = {{&bad, data.data()}, {&*b, data.data()}};
  std::vector<absl::Status> st = tier_->WriteAll(items);
  EXPECT_EQ(st[0].code(), absl::StatusCode::kInternal);
  EXPECT_TRUE(st[1].ok()) << st[1];
  std::vector<uint8_t> back(4096);
  const Transfer read{&*b, back.data()};
  ASSERT_TRUE(tier_->ReadAll({&read, 1})[0].ok());
  EXPECT_EQ(std::memcmp(back.data(), data.data(), 4096), 0);
  EXPECT_EQ(tier_->counters().failures, 1u);
  tier_->Free(*a);
  tier_->Free(*b);
}

TEST_P(TierTest, ScrubZeroesWhatClientsCanMap) {
  auto r = tier_->Reserve(8192, {});
  ASSERT_TRUE(r.ok());
  std::vector<uint8_t> data = Pattern(8192, 3);
  const Transfer t{&*r, data.data()};
  ASSERT_TRUE(tier_->WriteAll({&t, 1})[0].ok());
  ASSERT_TRUE(tier_->Scrub(*r).ok());
  if (uint8_t* p = tier_->Address(*r); p != nullptr) {
    const std::vector<uint8_t> zeros(8192, 0);
    EXPECT_EQ(std::memcmp(p, zeros.data(), 8192), 0) << "scrubbed bytes are zero";
  } else {
    EXPECT_EQ(tier_->id(), TierId::kSsd) << "only swap is not addressable";
  }
  tier_->Free(*r);
}

TEST_P(TierTest, EachBatchCompletesOnce) {
  auto r = tier_->Reserve(4096, {});
  ASSERT_TRUE(r.ok());
  std::vector<uint8_t> data = Pattern(4096, 5);
  const Transfer t{&*r, data.data()};
  int calls = 0;
  tier_->Write({&t, 1}, [&](std::vector<absl::Status> st) {
    ++calls;
    ASSERT_EQ(st.size(), 1u);
    EXPECT_TRUE(st[0].ok());
  });
  tier_->Write({}, [&](std::vector<absl::Status> st) {
    ++calls;
    EXPECT_TRUE(st.empty());
  });
  EXPECT_EQ(calls, 2) << "these tiers complete before returning";
  EXPECT_TRUE(tier_->Healthy());
  tier_->Free(*r);
}

INSTANTIATE_TEST_SUITE_P(Tiers, TierTest,
                         ::testing::Values(Kind::kHost, Kind::kGpu, Kind::kSsdUring,
                                           Kind::kSsdPread, Kind::kFake),
                         Name);

}  // namespace
}  // namespace tensord::tiers
