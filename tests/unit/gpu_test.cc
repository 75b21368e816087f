// The GPU tier's logic in the store, over a real shared-memory host tier and fake GPU devices
// (host memory behind the GpuDevice interface): copy-up on Get(want=GPU) with every byte intact,
// GPU Create sealed on a client event, copy-down on Get(want=HOST), demotion when the GPU arena
// is full (DURABLE never lost, CACHE may be dropped), watermarks, leases released by session
// end, and the absent tier. The CUDA device itself is covered by the GPU integration tests.
#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "absl/strings/str_cat.h"
#include "common/random.h"
#include "daemon/store/store.h"
#include "tests/unit/fake_gpu.h"

namespace tensord::store {
namespace {

constexpr uint64_t kMiB = 1 << 20;
const std::string kDone(64, 'd');   // an event the fake device reports complete
const std::string kNever(64, 'n');  // one that never completes

class GpuStoreTest : public ::testing::Test {
 protected:
  void SetUp() override { Make(16 * kMiB, 4 * kMiB); }

  void Make(uint64_t host_bytes, uint64_t gpu_bytes, StoreOptions options = {}) {
    store_.reset();
    options.predict = false;  // these tests place every copy themselves
    HostTierConfig host;
    host.capacity = host_bytes;
    host.prefault = false;
    auto tier = tiers::HostTier::Create(host, "tensord.gputest." + RandomHex(4) + ".");
    ASSERT_TRUE(tier.ok()) << tier.status();
    host_ = *std::move(tier);
    std::vector<std::unique_ptr<tiers::GpuDevice>> devices;
    auto d0 = std::make_unique<tiers::FakeGpuDevice>(0, gpu_bytes);
    auto d1 = std::make_unique<tiers::FakeGpuDevice>(1, gpu_bytes);
    dev0_ = d0.get();
    dev1_ = d1.get();
    devices.push_back(std::move(d0));
    devices.push_back(std::move(d1));
    auto gpu = tiers::GpuTier::ForDevices(std::move(devices), classes_);
    ASSERT_TRUE(gpu.ok()) << gpu.status();
    gpu_ = *std::move(gpu);
    options.pressure_wait = absl::Seconds(2);
    store_ = std::make_unique<Store>(host_.get(), options, nullptr, gpu_.get());
    session_ = *store_->OpenSession("gpu-test");
  }

  static std::vector<uint8_t> Pattern(uint64_t n, uint32_t seed) {
    std::vector<uint8_t> v(n);
    std::mt19937 rng(seed);
    for (auto& b : v) b = static_cast<uint8_t>(rng());
    return v;
  }

  CreateParams Params(const std::string& key, uint64_t n, WantTier tier = WantTier::kHost) {
    CreateParams p;
    p.key = key;
    p.dtype = DType::kUInt8;
    p.shape = {static_cast<int64_t>(n)};
    p.tier = tier;
    return p;
  }

  // Creates, fills with Pattern(n, seed) and seals a tensor on `tier`.
  void Put(const std::string& key, uint64_t n, uint32_t seed, WantTier tier = WantTier::kHost,
           Durability durability = Durability::kDurable) {
    CreateParams p = Params(key, n, tier);
    p.durability = durability;
    auto info = store_->Create(session_, p);
    ASSERT_TRUE(info.ok()) << info.status();
    ASSERT_EQ(info->location.tier, tier);
    const auto bytes = Pattern(n, seed);
    std::memcpy(store_->Address(info->location), bytes.data(), n);
    ASSERT_TRUE(store_->Seal(session_, "", key, tier == WantTier::kGpu ? kDone : "").ok());
  }

  // Leases `key` on `want`, checks every byte against Pattern(n, seed), returns the lease.
  GetOutcome GetAndCheck(const std::string& key, uint64_t n, uint32_t seed, WantTier want,
                         const std::string& session = "") {
    const std::string keys[] = {key};
    auto out = store_->Get(session.empty() ? session_ : session, "", keys, want);
    EXPECT_TRUE(out.ok()) << out.status();
    if (!out.ok()) return {};
    GetOutcome r = (*out)[0];
    EXPECT_TRUE(r.status.ok()) << key << ": " << r.status;
    if (!r.status.ok()) return r;
    EXPECT_EQ(r.info.location.tier, want == WantTier::kAny ? r.info.location.tier : want);
    const auto bytes = Pattern(n, seed);
    EXPECT_EQ(std::memcmp(store_->Address(r.info.location), bytes.data(), n), 0)
        << key << " differs on tier " << static_cast<int>(r.info.location.tier);
    return r;
  }

  void Release(uint64_t lease) {
    const uint64_t ids[] = {lease};
    ASSERT_TRUE(store_->Release(session_, ids).ok());
  }

  std::unique_ptr<tiers::HostTier> host_;
  std::vector<PoolClassConfig> classes_;  // GPU pool classes for the next Make
  std::unique_ptr<tiers::GpuTier> gpu_;
  tiers::FakeGpuDevice* dev0_ = nullptr;
  tiers::FakeGpuDevice* dev1_ = nullptr;
  std::unique_ptr<Store> store_;
  std::string session_;
};

TEST_F(GpuStoreTest, ALostDeviceMakesTheTierUnhealthy) {
  EXPECT_TRUE(gpu_->Healthy());
  dev1_->lost = true;
  EXPECT_FALSE(gpu_->Healthy());
}

TEST_F(GpuStoreTest, ForDevicesGivesOneGeneralPoolPerDevice) {
  ASSERT_EQ(gpu_->arenas().size(), 2u);
  EXPECT_EQ(gpu_->arenas()[1].name, "gpu1");
  EXPECT_EQ(gpu_->arenas()[1].ipc_handle.size(), 64u);
  EXPECT_EQ(gpu_->PoolsOn(1), std::vector<uint32_t>{1});
  EXPECT_EQ(gpu_->PoolsOn(-1).size(), 2u);
  EXPECT_TRUE(gpu_->PoolsOn(7).empty());
  EXPECT_EQ(gpu_->pools()[0].allocator->Stats().capacity_bytes, 4 * kMiB);
}

TEST_F(GpuStoreTest, FixedClassesAreCarvedPerDeviceAndChosenBySize) {
  classes_ = {{"kv", kMiB, 2, 0.0}};
  Make(16 * kMiB, 4 * kMiB);
  ASSERT_EQ(gpu_->pools().size(), 4u);
  EXPECT_EQ(gpu_->pools()[0].name, "gpu0.kv");
  EXPECT_TRUE(gpu_->pools()[0].fixed);
  EXPECT_EQ(gpu_->pools()[1].name, "gpu0");
  EXPECT_EQ(gpu_->pools()[1].allocator->Stats().capacity_bytes, 2 * kMiB);
  // A KV-sized tensor lands in the class; a small one in the general pool.
  Put("kv0", kMiB, 80, WantTier::kGpu);
  EXPECT_EQ(store_->Stat("", "kv0")->pool, "gpu0.kv");
  Put("small", 4096, 81, WantTier::kGpu);
  EXPECT_EQ(store_->Stat("", "small")->pool, "gpu0");
  // Named: the class on the chosen device; copy-up picks the class too.
  CreateParams p = Params("kv1", kMiB, WantTier::kGpu);
  p.pool = "kv";
  p.device = 1;
  auto info = store_->Create(session_, p);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->pool, "gpu1.kv");
  p.key = "nope";
  p.pool = "missing";
  EXPECT_EQ(store_->Create(session_, p).status().code(), absl::StatusCode::kInvalidArgument);
  p.pool = "kv";
  p.shape = {static_cast<int64_t>(2 * kMiB)};
  EXPECT_EQ(store_->Create(session_, p).status().code(), absl::StatusCode::kInvalidArgument);
  Put("host_kv", kMiB, 82);
  GetOutcome g = GetAndCheck("host_kv", kMiB, 82, WantTier::kGpu);
  EXPECT_EQ(g.info.pool, "gpu0.kv");
  Release(g.lease_id);
  // Classes that do not fit the arena stop the tier from being built.
  std::vector<std::unique_ptr<tiers::GpuDevice>> one;
  one.push_back(std::make_unique<tiers::FakeGpuDevice>(0, 4 * kMiB));
  EXPECT_EQ(tiers::GpuTier::ForDevices(std::move(one), {{"big", kMiB, 5, 0.0}}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(GpuStoreTest, GetOnGpuCopiesUpOnceAndKeepsEveryByte) {
  Put("k", 1 * kMiB + 123, 1);
  GetOutcome a = GetAndCheck("k", 1 * kMiB + 123, 1, WantTier::kGpu);
  EXPECT_EQ(dev0_->up_copies + dev1_->up_copies, 1u);
  GetOutcome b = GetAndCheck("k", 1 * kMiB + 123, 1, WantTier::kGpu);
  EXPECT_EQ(dev0_->up_copies + dev1_->up_copies, 1u) << "a resident GPU copy is not copied again";
  EXPECT_EQ(a.info.location.offset, b.info.location.offset);
  // The host copy stays: a host Get is still served without a copy down.
  GetOutcome h = GetAndCheck("k", 1 * kMiB + 123, 1, WantTier::kHost);
  EXPECT_EQ(dev0_->down_copies + dev1_->down_copies, 0u);
  const StoreStats st = store_->Stats();
  EXPECT_EQ(st.counters.gpu_promotions, 1u);
  EXPECT_EQ(st.counters.gpu_hits, 1u);
  EXPECT_EQ(st.counters.gpu_misses, 1u);
  EXPECT_GT(st.gpu_pinned_bytes, 0u);
  Release(a.lease_id);
  Release(b.lease_id);
  Release(h.lease_id);
  EXPECT_EQ(store_->Stats().gpu_pinned_bytes, 0u);
}

TEST_F(GpuStoreTest, HintedHostTensorsAreCopiedUpBeforeTheirGpuGet) {
  // 4 MiB per device; the hint window is 25% of the GPU tier: 2 MiB, two of the 1 MiB tensors.
  for (int i = 0; i < 3; ++i) Put(absl::StrCat("h", i), kMiB, 10 + i);
  const std::vector<std::string> keys = {"h0", "h1", "h2"};
  auto hint = store_->Hint("", keys, WantTier::kGpu, absl::ZeroDuration(), /*device=*/1);
  ASSERT_TRUE(hint.ok()) << hint.status();
  EXPECT_EQ(hint->accepted, 3u);
  const auto on_gpu = [&](const char* key) {
    auto s = store_->Stat("", key);
    return s.ok() && s->on_gpu;
  };
  for (int i = 0; i < 500 && !(on_gpu("h0") && on_gpu("h1")); ++i) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  store_->Quiesce();
  ASSERT_TRUE(on_gpu("h0") && on_gpu("h1")) << "the window's tensors were copied up";
  EXPECT_FALSE(on_gpu("h2")) << "beyond the window";
  EXPECT_EQ(dev1_->up_copies, 2u) << "to the device the hint named";
  EXPECT_EQ(dev0_->up_copies, 0u);
  // The GPU Gets find them there: hits, no copy at Get time, every byte intact.
  const uint64_t hits = store_->Stats().counters.gpu_hits;
  GetOutcome a = GetAndCheck("h0", kMiB, 10, WantTier::kGpu);
  GetOutcome b = GetAndCheck("h1", kMiB, 11, WantTier::kGpu);
  EXPECT_EQ(store_->Stats().counters.gpu_hits, hits + 2);
  EXPECT_EQ(store_->Stats().counters.lookahead_used, 2u);
  // The window moves on to h2; three copies up in all: none at Get time.
  for (int i = 0; i < 500 && !on_gpu("h2"); ++i) absl::SleepFor(absl::Milliseconds(10));
  store_->Quiesce();
  EXPECT_TRUE(on_gpu("h2"));
  EXPECT_EQ(dev1_->up_copies, 3u);
  EXPECT_EQ(dev0_->up_copies, 0u);
  Release(a.lease_id);
  Release(b.lease_id);
}

TEST_F(GpuStoreTest, BatchedGpuGetCopiesUpInOneBatchPerDevice) {
  std::vector<std::string> keys;
  for (int i = 0; i < 5; ++i) {
    keys.push_back(absl::StrCat("b", i));
    Put(keys.back(), 256 * 1024 + i, 70 + i);
  }
  keys.push_back("b2");  // twice in one batch: the second shares the first's copy
  auto out = store_->Get(session_, "", keys, WantTier::kGpu, absl::InfiniteFuture(), 1);
  ASSERT_TRUE(out.ok());
  for (size_t i = 0; i < keys.size(); ++i) {
    const GetOutcome& r = (*out)[i];
    ASSERT_TRUE(r.status.ok()) << keys[i] << ": " << r.status;
    EXPECT_EQ(r.info.location.tier, WantTier::kGpu);
    EXPECT_EQ(r.info.location.arena, 1u);
    const int seed = 70 + (i < 5 ? static_cast<int>(i) : 2);
    const auto bytes = Pattern(256 * 1024 + (i < 5 ? i : 2), seed);
    EXPECT_EQ(std::memcmp(store_->Address(r.info.location), bytes.data(), bytes.size()), 0);
  }
  EXPECT_EQ(dev1_->up_copies, 5u);
  EXPECT_EQ(dev1_->up_batches, 1u) << "five copies, one wait";
  EXPECT_EQ((*out)[2].info.location.offset, (*out)[5].info.location.offset);
}

TEST_F(GpuStoreTest, DeviceChoosesWhereACopyUpGoes) {
  Put("k", 4096, 2);
  const std::string keys[] = {"k"};
  auto out = store_->Get(session_, "", keys, WantTier::kGpu, absl::InfiniteFuture(), 1);
  ASSERT_TRUE(out.ok());
  ASSERT_TRUE((*out)[0].status.ok()) << (*out)[0].status;
  EXPECT_EQ((*out)[0].info.location.arena, 1u);
  EXPECT_EQ(dev1_->up_copies, 1u);
  auto bad = store_->Get(session_, "", keys, WantTier::kGpu, absl::InfiniteFuture(), 5);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(GpuStoreTest, GpuCreateIsPublishedOnlyAfterTheClientsEvent) {
  auto info = store_->Create(session_, Params("g", 8192, WantTier::kGpu));
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->location.tier, WantTier::kGpu);
  EXPECT_FALSE(info->on_host);
  // An event that never completes: the Seal times out and the tensor stays unsealed.
  absl::Status st = store_->Seal(session_, "", "g", kNever, absl::Now() + absl::Milliseconds(50));
  EXPECT_EQ(st.code(), absl::StatusCode::kDeadlineExceeded) << st;
  const std::string keys[] = {"g"};
  EXPECT_EQ((*store_->Get(session_, "", keys, WantTier::kGpu))[0].status.code(),
            absl::StatusCode::kFailedPrecondition);
  // A malformed handle is the client's error.
  EXPECT_EQ(store_->Seal(session_, "", "g", "short").code(), absl::StatusCode::kInvalidArgument);
  const auto bytes = Pattern(8192, 3);
  std::memcpy(store_->Address(info->location), bytes.data(), bytes.size());
  ASSERT_TRUE(store_->Seal(session_, "", "g", kDone).ok());
  GetOutcome r = GetAndCheck("g", 8192, 3, WantTier::kGpu);
  Release(r.lease_id);
  // An event on a host tensor is refused.
  auto h = store_->Create(session_, Params("h", 4096));
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(store_->Seal(session_, "", "h", kDone).code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(GpuStoreTest, HostToGpuToHostRoundTripKeepsEveryByte) {
  Put("g", 3 * kMiB / 2, 4, WantTier::kGpu);
  EXPECT_FALSE(store_->Stat("", "g")->on_host);
  // Copied down on a host Get: both copies now exist and match.
  GetOutcome h = GetAndCheck("g", 3 * kMiB / 2, 4, WantTier::kHost);
  EXPECT_EQ(dev0_->down_copies + dev1_->down_copies, 1u);
  Release(h.lease_id);
  // Evict drops the GPU copy (the host one exists); a GPU Get copies it up again, intact.
  EXPECT_EQ(*store_->Evict("", "g"), "GPU copy dropped (another tier holds it)");
  EXPECT_FALSE(store_->Stat("", "g")->on_gpu);
  GetOutcome g = GetAndCheck("g", 3 * kMiB / 2, 4, WantTier::kGpu);
  Release(g.lease_id);
  // want=ANY prefers the host copy; with only a GPU copy it leases that one.
  GetOutcome any = GetAndCheck("g", 3 * kMiB / 2, 4, WantTier::kAny);
  EXPECT_EQ(any.info.location.tier, WantTier::kHost);
  Release(any.lease_id);
  Put("only_gpu", 4096, 5, WantTier::kGpu);
  GetOutcome any_gpu = GetAndCheck("only_gpu", 4096, 5, WantTier::kAny);
  EXPECT_EQ(any_gpu.info.location.tier, WantTier::kGpu);
}

TEST_F(GpuStoreTest, FullGpuDemotesUnleasedTensorsToHostAndLosesNoDurableOne) {
  // 4 MiB arenas; six 1 MiB DURABLE tensors created on GPU 0, one of them leased.
  for (int i = 0; i < 3; ++i) {
    CreateParams p = Params(absl::StrCat("t", i), kMiB, WantTier::kGpu);
    p.device = 0;
    auto info = store_->Create(session_, p);
    ASSERT_TRUE(info.ok()) << info.status();
    std::memcpy(store_->Address(info->location), Pattern(kMiB, 10 + i).data(), kMiB);
    ASSERT_TRUE(store_->Seal(session_, "", p.key, kDone).ok());
  }
  GetOutcome held = GetAndCheck("t0", kMiB, 10, WantTier::kGpu);
  for (int i = 3; i < 6; ++i) {
    CreateParams p = Params(absl::StrCat("t", i), kMiB, WantTier::kGpu);
    p.device = 0;
    auto info = store_->Create(session_, p);  // room is made by demoting unleased ones
    ASSERT_TRUE(info.ok()) << i << ": " << info.status();
    std::memcpy(store_->Address(info->location), Pattern(kMiB, 10 + i).data(), kMiB);
    ASSERT_TRUE(store_->Seal(session_, "", p.key, kDone).ok());
  }
  EXPECT_TRUE(store_->Stat("", "t0")->on_gpu) << "a leased GPU copy never moves";
  const StoreStats st = store_->Stats();
  EXPECT_GE(st.counters.gpu_demotions, 2u);
  EXPECT_GT(dev0_->down_copies, 0u);
  EXPECT_EQ(st.counters.evictions, 0u);
  for (int i = 0; i < 6; ++i) {
    GetOutcome r = GetAndCheck(absl::StrCat("t", i), kMiB, 10 + i, WantTier::kHost);
    Release(r.lease_id);
  }
  Release(held.lease_id);
  // Everything leased on the GPU at once cannot fit: a clear RESOURCE_EXHAUSTED, nothing lost.
  std::vector<uint64_t> leases;
  absl::Status last;
  for (int i = 0; i < 6; ++i) {
    const std::string keys[] = {absl::StrCat("t", i)};
    auto out = store_->Get(session_, "", keys, WantTier::kGpu, absl::InfiniteFuture(), 0);
    ASSERT_TRUE(out.ok());
    if ((*out)[0].status.ok()) {
      leases.push_back((*out)[0].lease_id);
    } else {
      last = (*out)[0].status;
    }
  }
  EXPECT_EQ(leases.size(), 4u);
  EXPECT_EQ(last.code(), absl::StatusCode::kResourceExhausted) << last;
  for (uint64_t l : leases) Release(l);
  for (int i = 0; i < 6; ++i) {
    GetOutcome r = GetAndCheck(absl::StrCat("t", i), kMiB, 10 + i, WantTier::kAny);
    Release(r.lease_id);
  }
}

TEST_F(GpuStoreTest, CacheTensorsWithoutHostRoomAreDroppedDurableOnesStay) {
  Make(4 * kMiB, 2 * kMiB);
  Put("hostfill", 4 * kMiB - 64 * 1024, 20);  // the host tier is full
  Put("cache", kMiB, 21, WantTier::kGpu, Durability::kCache);
  Put("durable", kMiB, 22, WantTier::kGpu);
  EXPECT_EQ(*store_->Evict("", "cache"), "dropped (CACHE, no host room)");
  EXPECT_EQ(store_->Stat("", "cache").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->Evict("", "durable").status().code(), absl::StatusCode::kResourceExhausted);
  GetOutcome r = GetAndCheck("durable", kMiB, 22, WantTier::kGpu);
  EXPECT_EQ(store_->Stats().counters.gpu_evictions, 1u);
  EXPECT_EQ(store_->Evict("", "durable").status().code(), absl::StatusCode::kFailedPrecondition)
      << "a leased GPU copy is not evicted";
  Release(r.lease_id);
}

TEST_F(GpuStoreTest, DemotionSkipsTensorsThatCannotMove) {
  Make(4 * kMiB, 2 * kMiB);
  Put("hostfill", 4 * kMiB - 64 * 1024, 23);  // no host room for anything
  CreateParams d = Params("durable", kMiB, WantTier::kGpu);
  d.device = 0;
  auto di = store_->Create(session_, d);
  ASSERT_TRUE(di.ok());
  ASSERT_TRUE(store_->Seal(session_, "", "durable", kDone).ok());
  CreateParams c = Params("cache", kMiB, WantTier::kGpu);
  c.device = 0;
  c.durability = Durability::kCache;
  ASSERT_TRUE(store_->Create(session_, c).ok());
  ASSERT_TRUE(store_->Seal(session_, "", "cache", kDone).ok());
  // The least recently used is the DURABLE tensor, which cannot leave; the CACHE one behind it
  // makes the room.
  CreateParams n = Params("new", kMiB, WantTier::kGpu);
  n.device = 0;
  auto ni = store_->Create(session_, n);
  ASSERT_TRUE(ni.ok()) << ni.status();
  EXPECT_TRUE(store_->Stat("", "durable")->on_gpu);
  EXPECT_EQ(store_->Stat("", "cache").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(GpuStoreTest, HostRoomComesFromCopiesTheGpuAlsoHolds) {
  Make(4 * kMiB, 4 * kMiB);  // no SSD tier: nothing DURABLE could otherwise leave the host
  Put("a", 2 * kMiB, 24);
  GetOutcome g = GetAndCheck("a", 2 * kMiB, 24, WantTier::kGpu);
  Release(g.lease_id);
  // A 3 MiB host Create needs a's host range: a keeps its GPU copy, so that range may go.
  auto info = store_->Create(session_, Params("b", 3 * kMiB));
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_FALSE(store_->Stat("", "a")->on_host);
  GetOutcome again = GetAndCheck("a", 2 * kMiB, 24, WantTier::kGpu);
  Release(again.lease_id);
}

TEST_F(GpuStoreTest, WatermarkMigratorDemotesBelowLow) {
  StoreOptions options;
  options.gpu_high_watermark = 0.5;
  options.gpu_low_watermark = 0.25;
  Make(16 * kMiB, 4 * kMiB, options);
  for (int i = 0; i < 3; ++i) {
    CreateParams p = Params(absl::StrCat("w", i), kMiB, WantTier::kGpu);
    p.device = 0;
    auto info = store_->Create(session_, p);
    ASSERT_TRUE(info.ok());
    std::memcpy(store_->Address(info->location), Pattern(kMiB, 30 + i).data(), kMiB);
    ASSERT_TRUE(store_->Seal(session_, "", p.key, kDone).ok());
  }
  EXPECT_GT(store_->DemoteGpuOnce(), 0u);
  const memory::AllocatorStats st = gpu_->pools()[0].allocator->Stats();
  EXPECT_LE(st.used_bytes, st.capacity_bytes / 4);
  for (int i = 0; i < 3; ++i) {
    GetOutcome r = GetAndCheck(absl::StrCat("w", i), kMiB, 30 + i, WantTier::kAny);
    Release(r.lease_id);
  }
  EXPECT_EQ(store_->DemoteGpuOnce(), 0u) << "below the watermark nothing moves";
}

TEST_F(GpuStoreTest, SessionEndReleasesGpuLeasesAndFreesSessionTensors) {
  const std::string other = *store_->OpenSession("dies");
  Put("k", kMiB, 50);
  GetOutcome r = GetAndCheck("k", kMiB, 50, WantTier::kGpu, other);
  CreateParams p = Params("scoped", kMiB, WantTier::kGpu);
  p.scope = Scope::kSession;
  ASSERT_TRUE(store_->Create(other, p).ok());
  ASSERT_TRUE(store_->Seal(other, "", "scoped", kDone).ok());
  EXPECT_GT(store_->Stats().gpu_pinned_bytes, 0u);
  store_->CloseSession(other);  // what the daemon does when a client is killed
  const StoreStats st = store_->Stats();
  EXPECT_EQ(st.gpu_pinned_bytes, 0u);
  EXPECT_EQ(st.leases, 0u);
  EXPECT_EQ(store_->Stat("", "scoped").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(*store_->Evict("", "k"), "GPU copy dropped (another tier holds it)")
      << "the released GPU copy is demotable again";
  // Freed GPU ranges are zeroed before reuse.
  const std::vector<uint8_t> zeros(kMiB, 0);
  EXPECT_EQ(std::memcmp(store_->Address(r.info.location), zeros.data(), kMiB), 0);
}

TEST_F(GpuStoreTest, FailedCopiesLoseNothing) {
  Put("k", kMiB, 60);
  dev0_->fail_copies = true;
  dev1_->fail_copies = true;
  const std::string keys[] = {"k"};
  auto out = store_->Get(session_, "", keys, WantTier::kGpu);
  ASSERT_TRUE(out.ok());
  EXPECT_EQ((*out)[0].status.code(), absl::StatusCode::kInternal) << (*out)[0].status;
  EXPECT_EQ(store_->Stats().counters.gpu_copy_failures, 1u);
  dev0_->fail_copies = false;
  dev1_->fail_copies = false;
  GetOutcome r = GetAndCheck("k", kMiB, 60, WantTier::kGpu);
  Release(r.lease_id);
  EXPECT_EQ(store_->Stats().gpu_used_bytes, kMiB) << "the failed copy's range was returned";
}

TEST(GpuAbsent, GpuRequestsFailCleanlyWithoutTheTier) {
  HostTierConfig host;
  host.capacity = 4 * kMiB;
  host.prefault = false;
  auto tier = tiers::HostTier::Create(host, "tensord.gputest." + RandomHex(4) + ".");
  ASSERT_TRUE(tier.ok());
  Store store(tier->get(), StoreOptions{});
  const std::string session = *store.OpenSession("no-gpu");
  CreateParams p;
  p.key = "k";
  p.dtype = DType::kUInt8;
  p.shape = {4096};
  p.tier = WantTier::kGpu;
  EXPECT_EQ(store.Create(session, p).status().code(), absl::StatusCode::kFailedPrecondition);
  p.tier = WantTier::kHost;
  ASSERT_TRUE(store.Create(session, p).ok());
  ASSERT_TRUE(store.Seal(session, "", "k").ok());
  const std::string keys[] = {"k"};
  auto out = store.Get(session, "", keys, WantTier::kGpu);
  EXPECT_EQ(out.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(out.status().message().find("GPU tier is not present"), std::string::npos);
  EXPECT_FALSE(store.Stats().gpu_present);
  // The CUDA wrappers say why there is no device rather than failing later.
  std::string why;
  if (cuda::DeviceCount(&why) == 0) {
    EXPECT_FALSE(why.empty());
  }
}

}  // namespace
}  // namespace tensord::store
