// The object store over a real (small) shared-memory host tier: life cycle, leases, sessions,
// eviction and zeroing.
#include "daemon/store/store.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/random.h"
#include "tests/unit/recording_policy.h"

namespace tensord::store {
namespace {

constexpr uint64_t kMiB = 1 << 20;

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    HostTierConfig config;
    config.capacity = 8 * kMiB;
    config.prefault = false;
    config.pools.push_back(PoolClassConfig{"block", kMiB, 2, 0});  // 2 MiB fixed, 6 MiB general
    auto tier = tiers::HostTier::Create(config, "tensord.unittest." + RandomHex(4) + ".");
    ASSERT_TRUE(tier.ok()) << tier.status();
    host_ = *std::move(tier);
    StoreOptions options;
    options.max_leases_per_session = 8;
    options.max_sessions = 3;
    options.clock = &clock_;  // TTLs move only when a test advances it
    store_ = std::make_unique<Store>(host_.get(), options);
    session_ = *store_->OpenSession("test");
  }

  CreateParams Params(const std::string& key, uint64_t bytes,
                      Durability durability = Durability::kDurable) {
    CreateParams p;
    p.key = key;
    p.dtype = DType::kUInt8;
    p.shape = {static_cast<int64_t>(bytes)};
    p.durability = durability;
    return p;
  }

  // Creates, fills with `fill` and seals a tensor; returns its info.
  TensorInfo Put(const std::string& key, uint64_t bytes, uint8_t fill,
                 Durability durability = Durability::kDurable) {
    auto info = store_->Create(session_, Params(key, bytes, durability));
    EXPECT_TRUE(info.ok()) << info.status();
    if (!info.ok()) return {};
    std::memset(store_->Address(info->location), fill, bytes);
    EXPECT_TRUE(store_->Seal(session_, "", key).ok());
    return *info;
  }

  uint64_t Lease(const std::string& key) {
    std::vector<std::string> keys{key};
    auto out = store_->Get(session_, "", keys, WantTier::kAny);
    EXPECT_TRUE(out.ok()) << out.status();
    EXPECT_TRUE((*out)[0].status.ok()) << (*out)[0].status;
    return (*out)[0].lease_id;
  }

  FakeClock clock_;
  std::unique_ptr<tiers::HostTier> host_;
  std::unique_ptr<Store> store_;
  std::string session_;
};

TEST_F(StoreTest, LifeCycleCreateSealGetReleaseDelete) {
  TensorInfo info = Put("t", 1000, 0xAB);
  EXPECT_EQ(info.pool, "general");
  std::vector<std::string> keys{"t"};
  auto got = store_->Get(session_, "", keys, WantTier::kHost);
  ASSERT_TRUE(got.ok());
  ASSERT_TRUE((*got)[0].status.ok());
  EXPECT_EQ((*got)[0].info.location.offset, info.location.offset);
  EXPECT_EQ(store_->Address((*got)[0].info.location)[999], 0xAB);
  EXPECT_EQ(store_->Stats().leases, 1u);
  uint64_t lease = (*got)[0].lease_id;
  EXPECT_TRUE(store_->Release(session_, {&lease, 1}).ok());
  EXPECT_EQ(store_->Release(session_, {&lease, 1}).code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(store_->Delete(session_, "", "t").ok());
  EXPECT_EQ(store_->Stat("", "t").status().code(), absl::StatusCode::kNotFound);
  store_->Quiesce();  // freed ranges are scrubbed off the caller's thread
  EXPECT_EQ(store_->Stats().used_bytes, 0u);
}

TEST_F(StoreTest, StateErrorsHaveTheDesignedCodes) {
  ASSERT_TRUE(store_->Create(session_, Params("u", 10)).ok());
  EXPECT_EQ(store_->Create(session_, Params("u", 10)).status().code(),
            absl::StatusCode::kAlreadyExists);
  std::vector<std::string> keys{"u", "missing"};
  auto got = store_->Get(session_, "", keys, WantTier::kAny);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ((*got)[0].status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ((*got)[1].status.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->Delete(session_, "", "u").code(), absl::StatusCode::kFailedPrecondition);
  std::string other = *store_->OpenSession("other");
  EXPECT_EQ(store_->Seal(other, "", "u").code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(store_->Abort(other, "", "u").code(), absl::StatusCode::kPermissionDenied);
  // A CUDA event changes none of these codes (the event only matters for a GPU tensor).
  const std::string event(64, 'e');
  EXPECT_EQ(store_->Seal(other, "", "u", event).code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(store_->Seal(session_, "", "u", event).code(), absl::StatusCode::kInvalidArgument)
      << "an event on a host tensor";
  ASSERT_TRUE(store_->Seal(session_, "", "u").ok());
  EXPECT_EQ(store_->Seal(session_, "", "u").code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(store_->Seal(session_, "", "u", event).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(store_->Delete("no-such-session", "", "u").code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(store_->Stat("", "u").ok()) << "a Delete without a session deletes nothing";
  EXPECT_EQ(store_->Abort(session_, "", "u").code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(store_->Create("no-such-session", Params("v", 10)).status().code(),
            absl::StatusCode::kFailedPrecondition);
  std::vector<std::string> one{"u"};
  EXPECT_EQ(store_->Get(session_, "", one, WantTier::kGpu).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(store_->Get(session_, "", {}, WantTier::kAny).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(StoreTest, ReleaseOfAnotherSessionsLeaseFailsAndReleasesNothing) {
  Put("t", 100, 1);
  uint64_t mine = Lease("t");
  std::string other = *store_->OpenSession("other");
  EXPECT_EQ(store_->Release(other, {&mine, 1}).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->Stats().leases, 1u);
  uint64_t twice[] = {mine, mine};
  EXPECT_EQ(store_->Release(session_, twice).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->Stats().leases, 1u);
}

TEST_F(StoreTest, DeleteWhileLeasedKeepsBytesUntilRelease) {
  TensorInfo info = Put("t", 4096, 0x5A);
  uint64_t lease = Lease("t");
  ASSERT_TRUE(store_->Delete(session_, "", "t").ok());
  EXPECT_EQ(store_->Stat("", "t").status().code(), absl::StatusCode::kNotFound);
  // The key is free again, but the leased bytes must not be reused or zeroed.
  Put("t", 4096, 0x11);
  EXPECT_EQ(store_->Address(info.location)[4095], 0x5A);
  ASSERT_TRUE(store_->Release(session_, {&lease, 1}).ok());
  store_->Quiesce();  // freed ranges are scrubbed off the caller's thread
  EXPECT_EQ(store_->Address(info.location)[4095], 0x00) << "freed memory must be zeroed";
}

TEST_F(StoreTest, FreedMemoryIsZeroedBeforeReuse) {
  TensorInfo a = Put("a", kMiB, 0xFF);  // fixed pool block
  EXPECT_EQ(a.pool, "block");
  ASSERT_TRUE(store_->Delete(session_, "", "a").ok());
  auto b = store_->Create(session_, Params("b", kMiB));
  ASSERT_TRUE(b.ok());
  const uint8_t* p = store_->Address(b->location);
  for (uint64_t i = 0; i < kMiB; i += 4093) ASSERT_EQ(p[i], 0) << "byte " << i;
}

TEST_F(StoreTest, FullTierEvictsCacheInLruOrderButNeverDurable) {
  // General pool: 6 MiB. Three DURABLE and two CACHE tensors of 1 MiB + 4 KiB nearly fill it.
  for (int i = 0; i < 3; ++i) Put(absl::StrCat("d", i), kMiB + 1, 1);  // MiB + 4 KiB reserved
  EXPECT_EQ(store_->Stats().pools[1].stats.used_bytes, 3 * (kMiB + 4096));
  for (int i = 0; i < 2; ++i) Put(absl::StrCat("c", i), kMiB + 1, 2, Durability::kCache);
  Lease("c0");  // touch c0: c1 is now least recently used... and c0 is leased
  auto big = store_->Create(session_, Params("new", kMiB + 4096));
  ASSERT_TRUE(big.ok()) << big.status();
  EXPECT_EQ(store_->Stat("", "c1").status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(store_->Stat("", "c0").ok()) << "a leased CACHE tensor must not be evicted";
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(store_->Stat("", absl::StrCat("d", i)).ok());
  EXPECT_EQ(store_->Stats().counters.evictions, 1u);
  // Only DURABLE and leased tensors remain: the next create cannot be satisfied.
  auto fail = store_->Create(session_, Params("more", 2 * kMiB));
  EXPECT_EQ(fail.status().code(), absl::StatusCode::kResourceExhausted);
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(store_->Stat("", absl::StrCat("d", i)).ok());
}

TEST_F(StoreTest, ClosingASessionReleasesAbortsAndFreesScopedTensors) {
  Put("global", 100, 1);
  std::string s2 = *store_->OpenSession("dying");
  std::vector<std::string> keys{"global"};
  ASSERT_TRUE(store_->Get(s2, "", keys, WantTier::kAny).ok());
  ASSERT_TRUE(store_->Create(s2, Params("unsealed", 5000)).ok());
  CreateParams scoped = Params("scoped", 5000);
  scoped.scope = Scope::kSession;
  ASSERT_TRUE(store_->Create(s2, scoped).ok());
  ASSERT_TRUE(store_->Seal(s2, "", "scoped").ok());
  const uint64_t before = store_->Stats().used_bytes;
  store_->CloseSession(s2);
  store_->Quiesce();  // freed ranges are scrubbed off the caller's thread
  StoreStats st = store_->Stats();
  EXPECT_EQ(st.leases, 0u);
  EXPECT_EQ(st.sessions, 1u);
  EXPECT_EQ(st.pinned_bytes, 0u);
  EXPECT_EQ(st.used_bytes, before - 2 * 8192);
  EXPECT_TRUE(store_->Stat("", "global").ok());
  EXPECT_FALSE(store_->Stat("", "unsealed").ok());
  EXPECT_FALSE(store_->Stat("", "scoped").ok());
  EXPECT_EQ(store_->Create(s2, Params("x", 1)).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_F(StoreTest, LeaseQuotaPerSession) {
  Put("t", 10, 1);
  for (int i = 0; i < 8; ++i) Lease("t");
  std::vector<std::string> keys{"t"};
  auto out = store_->Get(session_, "", keys, WantTier::kAny);
  ASSERT_TRUE(out.ok());
  EXPECT_EQ((*out)[0].status.code(), absl::StatusCode::kResourceExhausted);
}

TEST_F(StoreTest, WithoutAnSsdTierTheMigratorStillReadsPressureAndStops) {
  std::atomic<int> reads{0};
  absl::Notification third_read;
  StoreOptions options;
  options.read_pressure = [&reads, &third_read] {
    tiers::SystemPressure p;
    p.mem_available_known = true;
    const int n = ++reads;
    p.mem_available_bytes = uint64_t{1000} * static_cast<uint64_t>(n);
    if (n == 3) third_read.Notify();
    return p;
  };
  Store store(host_.get(), options);  // no SSD tier
  const uint64_t first = store.Stats().system.mem_available_bytes;
  EXPECT_EQ(first, 1000u) << "read once at construction";
  absl::Notification stop;
  std::thread migrator([&] { store.RunMigrator(&stop); });
  third_read.WaitForNotificationWithTimeout(absl::Seconds(5));  // woken by the third read
  EXPECT_GE(reads.load(), 3) << "the migrator reads pressure every 100 ms without an SSD tier";
  EXPECT_GT(store.Stats().system.mem_available_bytes, first) << "and the stats follow";
  stop.Notify();
  migrator.join();  // returns once stopped (a hang here is the failure)
}

TEST_F(StoreTest, TtlExpiresAfterSealButLeasedBytesSurvive) {
  CreateParams p = Params("ttl", 4096);
  p.ttl_ms = 50;
  auto info = store_->Create(session_, p);
  ASSERT_TRUE(info.ok());
  std::memset(store_->Address(info->location), 0x42, 4096);
  ASSERT_TRUE(store_->Seal(session_, "", "ttl").ok());
  EXPECT_EQ(store_->Stat("", "ttl")->ttl_ms, 50);
  uint64_t lease = Lease("ttl");
  clock_.Advance(absl::Milliseconds(49));
  EXPECT_TRUE(store_->Stat("", "ttl").ok()) << "not expired 1 ms before its TTL";
  clock_.Advance(absl::Milliseconds(1));
  EXPECT_EQ(store_->Stat("", "ttl").status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(store_->List("", "", 0)->tensors.empty());
  EXPECT_TRUE(store_->Create(session_, Params("ttl", 10)).ok()) << "an expired key is free";
  EXPECT_EQ(store_->Stats().counters.expirations, 1u);
  EXPECT_EQ(store_->Address(info->location)[4095], 0x42) << "a lease outlives expiry";
  ASSERT_TRUE(store_->Release(session_, {&lease, 1}).ok());
  store_->Quiesce();  // freed ranges are scrubbed off the caller's thread
  EXPECT_EQ(store_->Address(info->location)[4095], 0x00);
  p.ttl_ms = -1;
  EXPECT_EQ(store_->Create(session_, p).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(StoreTest, ExpireDueReclaimsWithoutOtherTraffic) {
  CreateParams p = Params("short", kMiB + 1);
  p.ttl_ms = 1;
  ASSERT_TRUE(store_->Create(session_, p).ok());
  ASSERT_TRUE(store_->Seal(session_, "", "short").ok());
  EXPECT_EQ(store_->ExpireDue(), 0u) << "not due yet";
  clock_.Advance(absl::Milliseconds(1));
  EXPECT_EQ(store_->ExpireDue(), 1u);
  EXPECT_EQ(store_->Stats().used_bytes, 0u);
}

TEST_F(StoreTest, SessionQuota) {
  ASSERT_TRUE(store_->OpenSession("2").ok());
  auto third = store_->OpenSession("3");
  ASSERT_TRUE(third.ok());
  EXPECT_EQ(store_->OpenSession("4").status().code(), absl::StatusCode::kResourceExhausted);
  store_->CloseSession(*third);
  EXPECT_TRUE(store_->OpenSession("4").ok()) << "a closed session frees its slot";
}

TEST_F(StoreTest, ListIsSortedFilteredAndLimited) {
  for (const char* k : {"b.2", "a.1", "b.1", "c"}) Put(k, 10, 0);
  auto all = store_->List("", "b.", 0);
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->tensors.size(), 2u);
  EXPECT_EQ(all->tensors[0].key, "b.1");
  EXPECT_EQ(all->tensors[1].key, "b.2");
  auto one = store_->List("", "", 1);
  EXPECT_TRUE(one->truncated);
  EXPECT_EQ(one->tensors[0].key, "a.1");
  EXPECT_EQ(store_->List("", "", 20000).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(StoreTest, EvictWithoutAnSsdTierDropsCacheAndRefusesDurable) {
  Put("c", 4096, 1, Durability::kCache);
  Put("d", 4096, 2, Durability::kDurable);
  EXPECT_EQ(*store_->Evict("", "c"), "dropped (CACHE)");
  EXPECT_EQ(store_->Stat("", "c").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->Evict("", "d").status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(store_->Stat("", "d").ok()) << "a DURABLE tensor is never dropped";
  EXPECT_EQ(store_->Stats().counters.evictions, 1u);
}

TEST_F(StoreTest, ThePolicyHearsPinsAndWhyEachCopyLeft) {
  auto log = std::make_shared<policy::PolicyLog>();
  StoreOptions options;
  options.clock = &clock_;
  options.make_policy = [log](TierId) { return std::make_unique<policy::RecordingPolicy>(log); };
  store_ = std::make_unique<Store>(host_.get(), options);
  session_ = *store_->OpenSession("test");
  Put("deleted", 4096, 1);
  EXPECT_EQ(log->inserts, 1) << "a sealed copy is tracked";
  const uint64_t lease = Lease("deleted");
  EXPECT_EQ(log->pins, 1) << "a leased copy is pinned: never offered as a victim";
  ASSERT_TRUE(store_->Release(session_, {&lease, 1}).ok());
  EXPECT_EQ(log->unpins, 1);
  ASSERT_TRUE(store_->Delete(session_, "", "deleted").ok());
  EXPECT_EQ(log->Count(policy::RemovalReason::kDeleted), 1);
  // Fill the general pool (6 MiB) with CACHE tensors: the next Create evicts some.
  for (int i = 0; i < 4; ++i) Put(absl::StrCat("c", i), 3 * kMiB / 2, 2, Durability::kCache);
  store_->Quiesce();
  auto more = store_->Create(session_, Params("more", 2 * kMiB));
  ASSERT_TRUE(more.ok()) << more.status();
  EXPECT_GE(log->Count(policy::RemovalReason::kEvicted), 1) << "dropped for room: evicted";
  EXPECT_EQ(log->Count(policy::RemovalReason::kDemoted), 0) << "no other tier: none demoted";
  EXPECT_EQ(store_->Stats().counters.evictions,
            static_cast<uint64_t>(log->Count(policy::RemovalReason::kEvicted)));
}

TEST_F(StoreTest, AChainAwarePolicyEvictsAKvChainFromItsTail) {
  for (const char* name : {"lru+chain", "s3fifo+chain", "slru+chain"}) {
    StoreOptions options;
    options.clock = &clock_;
    options.eviction = name;
    store_ = std::make_unique<Store>(host_.get(), options);
    session_ = *store_->OpenSession("test");
    // A chain of five 1 MiB CACHE blocks in the 6 MiB general pool, stored head first (so
    // the head is the least recently used), each naming its predecessor as parent.
    for (int i = 0; i < 5; ++i) {
      CreateParams p = Params(absl::StrCat("blk", i), kMiB + 1, Durability::kCache);
      if (i > 0) p.parent = absl::StrCat("blk", i - 1);
      auto info = store_->Create(session_, p);
      ASSERT_TRUE(info.ok()) << info.status();
      ASSERT_TRUE(store_->Seal(session_, "", p.key).ok());
    }
    store_->Quiesce();
    // Room for 2 MiB more: two blocks must go, and they are the tail (blk4, blk3), so that a
    // prefix lookup still finds blk0..blk2. LRU alone would have dropped blk0 and blk1.
    auto more = store_->Create(session_, Params("other", 2 * kMiB + 8192));
    ASSERT_TRUE(more.ok()) << name << ": " << more.status();
    for (int i = 0; i < 3; ++i) {
      EXPECT_TRUE(store_->Stat("", absl::StrCat("blk", i)).ok()) << name << ": blk" << i;
    }
    EXPECT_EQ(store_->Stat("", "blk4").status().code(), absl::StatusCode::kNotFound) << name;
    EXPECT_EQ(store_->Stat("", "blk3").status().code(), absl::StatusCode::kNotFound) << name;
    ASSERT_TRUE(store_->Abort(session_, "", "other").ok());
    for (int i = 0; i < 3; ++i) {
      ASSERT_TRUE(store_->Delete(session_, "", absl::StrCat("blk", i)).ok());
    }
    store_->Quiesce();
  }
}

TEST_F(StoreTest, StatsCarryEachPoolsLifetimeStatistics) {
  // Four tensors in the general pool: "a" read twice, "b" once, the others never.
  for (const char* key : {"a", "b", "c", "d"}) Put(key, 4096, 1, Durability::kCache);
  for (const char* key : {"a", "b", "a"}) {
    clock_.Advance(absl::Seconds(2));
    uint64_t lease = Lease(key);
    ASSERT_TRUE(store_->Release(session_, {&lease, 1}).ok());
  }
  const StoreStats st = store_->Stats();
  ASSERT_EQ(st.pools.size(), 2u);
  const policy::ClassLifetime& general = st.pools[1].lifetime;
  EXPECT_EQ(st.pools[1].name, "general");
  EXPECT_EQ(general.inserted, 4u);
  EXPECT_EQ(general.reused, 2u);
  EXPECT_EQ(general.reused_twice, 1u);
  EXPECT_DOUBLE_EQ(general.ReuseAfter1(), 0.5);
  EXPECT_DOUBLE_EQ(general.ReuseAfter2(), 0.5);
  EXPECT_EQ(general.idle_samples, 3u);
  // Idle gaps 2 s (a), 4 s (b), 4 s (a again): mean 10/3 s, median within a factor of 2 of 4 s.
  EXPECT_NEAR(general.idle_mean_s, 10.0 / 3.0, 1e-6);
  EXPECT_GE(general.idle_median_s, 2.0);
  EXPECT_LE(general.idle_median_s, 8.0);
  EXPECT_EQ(st.pools[0].lifetime.inserted, 0u) << "nothing was stored in the block pool";
}

TEST_F(StoreTest, AnUnknownEvictionPolicyIsRefusedByName) {
  auto p = policy::MakeEvictionPolicy("fifo-please");
  EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace tensord::store
