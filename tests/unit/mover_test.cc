// The mover in isolation (store/mover.h): a batch between each tier pair, with the codec stage
// below host. The lower tier is the real SSD tier on a file, or the in-memory fake, which keeps
// no checksum, so that damaged encoded bytes reach the codec and must come back as DATA_LOSS.
#include "daemon/store/mover.h"

#include <gtest/gtest.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstring>
#include <random>
#include <thread>

#include "absl/synchronization/notification.h"
#include "common/random.h"
#include "daemon/tiers/gpu_tier.h"
#include "daemon/tiers/host_tier.h"
#include "daemon/tiers/ssd_tier.h"
#include "tests/unit/fake_gpu.h"
#include "tests/unit/fake_tier.h"

namespace tensord::store {
namespace {

using tiers::Range;
using tiers::TierId;

constexpr uint64_t kMiB = 1 << 20;

std::vector<uint8_t> Random(uint64_t n, uint64_t seed) {
  std::vector<uint8_t> v(n);
  std::mt19937_64 rng(seed);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

// Floats with few distinct values: what lossless compression is for.
std::vector<uint8_t> Compressible(uint64_t n, uint64_t seed) {
  std::vector<uint8_t> v(n);
  std::mt19937 rng(static_cast<uint32_t>(seed));
  for (uint64_t i = 0; i + 4 <= n; i += 4) {
    const float f = static_cast<float>(rng() % 16) * 0.25f;
    std::memcpy(v.data() + i, &f, 4);
  }
  return v;
}

class MoverTest : public ::testing::TestWithParam<bool> {  // true: the real SSD tier below
 protected:
  void SetUp() override {
    HostTierConfig hc;
    hc.capacity = 64 * kMiB;
    hc.prefault = false;
    auto host = tiers::HostTier::Create(hc, "tensord.movertest." + RandomHex(4) + ".");
    ASSERT_TRUE(host.ok()) << host.status();
    host_ = *std::move(host);
    std::vector<std::unique_ptr<tiers::GpuDevice>> devices;
    auto device = std::make_unique<tiers::FakeGpuDevice>(0, 16 * kMiB);
    gpu_device_ = device.get();
    devices.push_back(std::move(device));
    gpu_ = *tiers::GpuTier::ForDevices(std::move(devices));
    if (GetParam()) {
      path_ = ::testing::TempDir() + "/tensord_mover." + RandomHex(4) + ".swap";
      tiers::SsdTierConfig sc;
      sc.files = {{path_, 32 * kMiB}};
      auto ssd = tiers::SsdTier::Create(sc, io::MakeEngine(sc.engine));
      ASSERT_TRUE(ssd.ok()) << ssd.status();
      ssd_ = *std::move(ssd);
      below_ = ssd_.get();
    } else {
      fake_ = std::make_unique<tiers::FakeTier>(TierId::kSsd, 32 * kMiB);
      below_ = fake_.get();
    }
    mover_ = std::make_unique<Mover>(
        std::array<tiers::Tier*, tiers::kTierCount>{gpu_.get(), host_.get(), below_}, 2);
  }
  void TearDown() override {
    mover_.reset();
    ssd_.reset();
    if (!path_.empty()) unlink(path_.c_str());
  }

  // A host range holding `bytes`.
  Range HostWith(const std::vector<uint8_t>& bytes) {
    auto r = host_->Reserve(bytes.size(), {});
    EXPECT_TRUE(r.ok()) << r.status();
    std::memcpy(host_->Address(*r), bytes.data(), bytes.size());
    return *r;
  }
  Range HostEmpty(uint64_t n) {
    auto r = host_->Reserve(n, {});
    EXPECT_TRUE(r.ok()) << r.status();
    std::memset(host_->Address(*r), 0, n);
    return *r;
  }

  std::unique_ptr<tiers::HostTier> host_;
  std::unique_ptr<tiers::GpuTier> gpu_;
  tiers::FakeGpuDevice* gpu_device_ = nullptr;
  std::unique_ptr<tiers::SsdTier> ssd_;
  std::unique_ptr<tiers::FakeTier> fake_;
  tiers::Tier* below_ = nullptr;
  std::string path_;
  std::unique_ptr<Mover> mover_;
};

TEST_P(MoverTest, DownAndUpInOneBatchEachKeepsEveryByte) {
  const std::vector<uint64_t> sizes = {1, 4097, kMiB, 2 * kMiB + 3};
  std::vector<std::vector<uint8_t>> data;
  std::vector<MoveItem> down(sizes.size());
  for (size_t i = 0; i < sizes.size(); ++i) {
    data.push_back(Random(sizes[i], i));
    down[i].src = HostWith(data[i]);
    down[i].nbytes = sizes[i];
  }
  mover_->Run(TierId::kHost, TierId::kSsd, down);
  std::vector<MoveItem> up(sizes.size());
  for (size_t i = 0; i < sizes.size(); ++i) {
    ASSERT_TRUE(down[i].status.ok()) << down[i].status;
    EXPECT_TRUE(down[i].dst_reserved) << "the mover reserved the swap range";
    EXPECT_EQ(down[i].dst.length, sizes[i]);
    EXPECT_EQ(down[i].dst_codec, codec::CodecId::kNone);
    up[i].src = down[i].dst;
    up[i].src_codec = down[i].dst_codec;
    up[i].nbytes = sizes[i];
    up[i].dst = HostEmpty(sizes[i]);
    up[i].dst_reserved = true;
  }
  mover_->Run(TierId::kSsd, TierId::kHost, up);
  for (size_t i = 0; i < sizes.size(); ++i) {
    ASSERT_TRUE(up[i].status.ok()) << up[i].status;
    EXPECT_EQ(std::memcmp(host_->Address(up[i].dst), data[i].data(), sizes[i]), 0) << sizes[i];
  }
  EXPECT_EQ(below_->counters().writes, sizes.size()) << "one batch: every item";
  EXPECT_EQ(mover_->codec_counters().encodes, 0u) << "compression none: no codec work";
}

TEST_P(MoverTest, LosslessCopiesAreSmallerAndDecodeToTheSameBytes) {
  const auto floats = Compressible(4 * kMiB, 1);
  const auto noise = Random(kMiB, 2);
  MoveItem down[2];
  down[0].src = HostWith(floats);
  down[0].nbytes = floats.size();
  down[0].compression = {codec::Compression::kLossless};
  down[0].dtype = DType::kFloat32;
  down[1].src = HostWith(noise);
  down[1].nbytes = noise.size();
  down[1].compression = {codec::Compression::kLossless};
  mover_->Run(TierId::kHost, TierId::kSsd, down);
  ASSERT_TRUE(down[0].status.ok() && down[1].status.ok());
  EXPECT_EQ(down[0].dst_codec, codec::CodecId::kLossless);
  EXPECT_LT(down[0].dst.length, floats.size() / 2) << "few distinct floats compress well";
  EXPECT_LE(down[0].dst.reserved, (down[0].dst.length + 4095) / 4096 * 4096)
      << "the swap range is sized for the encoded bytes";
  EXPECT_EQ(down[1].dst_codec, codec::CodecId::kNone) << "random bytes are stored raw";
  EXPECT_EQ(down[1].dst.length, noise.size());
  const CodecCounters c = mover_->codec_counters();
  EXPECT_EQ(c.encodes, 2u);
  EXPECT_EQ(c.stored_raw, 1u);
  EXPECT_EQ(c.encode_in_bytes, floats.size() + noise.size());
  EXPECT_EQ(c.encode_out_bytes, down[0].dst.length + noise.size());

  MoveItem up[2];
  for (int i = 0; i < 2; ++i) {
    up[i].src = down[i].dst;
    up[i].src_codec = down[i].dst_codec;
    up[i].nbytes = down[i].nbytes;
    up[i].dtype = down[i].dtype;
    up[i].dst = HostEmpty(down[i].nbytes);
    up[i].dst_reserved = true;
  }
  mover_->Run(TierId::kSsd, TierId::kHost, up);
  ASSERT_TRUE(up[0].status.ok()) << up[0].status;
  ASSERT_TRUE(up[1].status.ok()) << up[1].status;
  EXPECT_EQ(std::memcmp(host_->Address(up[0].dst), floats.data(), floats.size()), 0);
  EXPECT_EQ(std::memcmp(host_->Address(up[1].dst), noise.data(), noise.size()), 0);
  EXPECT_EQ(mover_->codec_counters().decodes, 1u) << "the raw copy needs no decoding";
  EXPECT_EQ(mover_->codec_counters().decode_out_bytes, floats.size());
}

TEST_P(MoverTest, ADamagedCompressedCopyIsDataLossNeverWrongBytes) {
  const auto floats = Compressible(kMiB, 3);
  MoveItem down;
  down.src = HostWith(floats);
  down.nbytes = floats.size();
  down.compression = {codec::Compression::kLossless};
  down.dtype = DType::kFloat32;
  mover_->Run(TierId::kHost, TierId::kSsd, {&down, 1});
  ASSERT_TRUE(down.status.ok());
  ASSERT_EQ(down.dst_codec, codec::CodecId::kLossless);
  // Damage one byte in the middle of the stored frame.
  if (ssd_ != nullptr) {
    const int fd = ::open(path_.c_str(), O_WRONLY);
    ASSERT_GE(fd, 0);
    const uint8_t junk = 0x5A;
    ASSERT_EQ(::pwrite(fd, &junk, 1, static_cast<off_t>(down.dst.offset + down.dst.length / 2)), 1);
    ::close(fd);
  } else {
    below_->Address(down.dst)[down.dst.length / 2] ^= 0x5A;
  }
  MoveItem up;
  up.src = down.dst;
  up.src_codec = down.dst_codec;
  up.nbytes = down.nbytes;
  up.dtype = down.dtype;
  up.dst = HostEmpty(down.nbytes);
  up.dst_reserved = true;
  mover_->Run(TierId::kSsd, TierId::kHost, {&up, 1});
  EXPECT_EQ(up.status.code(), absl::StatusCode::kDataLoss) << up.status;
  if (ssd_ == nullptr) {
    EXPECT_EQ(mover_->codec_counters().decode_failures, 1u) << "the codec caught it";
  } else {
    EXPECT_EQ(ssd_->Stats().checksum_failures, 1u) << "the swap checksum caught it first";
  }
}

TEST_P(MoverTest, HostAndGpuCopiesGoBothWays) {
  const auto data = Random(3 * kMiB + 1, 9);
  MoveItem up;
  up.src = HostWith(data);
  up.nbytes = data.size();
  auto gpu_range = gpu_->Reserve(data.size(), {});
  ASSERT_TRUE(gpu_range.ok());
  up.dst = *gpu_range;
  up.dst_reserved = true;
  mover_->Run(TierId::kHost, TierId::kGpu, {&up, 1});
  ASSERT_TRUE(up.status.ok()) << up.status;
  EXPECT_EQ(std::memcmp(gpu_->Address(up.dst), data.data(), data.size()), 0);
  MoveItem down;
  down.src = up.dst;
  down.nbytes = data.size();
  down.dst = HostEmpty(data.size());
  down.dst_reserved = true;
  mover_->Run(TierId::kGpu, TierId::kHost, {&down, 1});
  ASSERT_TRUE(down.status.ok()) << down.status;
  EXPECT_EQ(std::memcmp(host_->Address(down.dst), data.data(), data.size()), 0);
  EXPECT_EQ(gpu_device_->up_copies.load(), 1u);
  EXPECT_EQ(gpu_device_->down_copies.load(), 1u);
  gpu_device_->fail_copies = true;
  mover_->Run(TierId::kGpu, TierId::kHost, {&down, 1});
  EXPECT_EQ(down.status.code(), absl::StatusCode::kInternal) << "the device's error, per item";
}

TEST_P(MoverTest, AFullLowerTierFailsItsItemsAndLeaksNothing) {
  std::vector<MoveItem> items(3);
  std::vector<std::vector<uint8_t>> data;
  for (int i = 0; i < 3; ++i) {
    data.push_back(Random(16 * kMiB, i));  // 48 MiB into 32
    items[i].src = HostWith(data.back());
    items[i].nbytes = data.back().size();
  }
  mover_->Run(TierId::kHost, TierId::kSsd, items);
  EXPECT_TRUE(items[0].status.ok());
  EXPECT_TRUE(items[1].status.ok());
  EXPECT_EQ(items[2].status.code(), absl::StatusCode::kResourceExhausted) << items[2].status;
  EXPECT_FALSE(items[2].dst_reserved);
  below_->Free(items[0].dst);
  below_->Free(items[1].dst);
  EXPECT_EQ(below_->Usage().used_bytes, 0u);
}

TEST_P(MoverTest, SubmittedWorkRunsOnTheExecutorNotTheCaller) {
  std::thread::id ran_on;
  absl::Notification done;
  mover_->Submit([&] {
    ran_on = std::this_thread::get_id();
    done.Notify();
  });
  done.WaitForNotification();
  EXPECT_NE(ran_on, std::this_thread::get_id());
  mover_->WaitIdle();
}

INSTANTIATE_TEST_SUITE_P(Below, MoverTest, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "ssd" : "fake"; });

}  // namespace
}  // namespace tensord::store
