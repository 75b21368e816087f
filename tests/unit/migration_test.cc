// Tier migration in the store over a real shared-memory host tier and an SSD tier on a real
// file (io_uring, the forced pread fallback) or the memory-backed engine fake: demotion above
// the high watermark, promotion on Get with every byte intact, shared reads, Create waiting for
// demotion, and faults at the engine boundary (EIO, ENOSPC, short; transient and persistent).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/random.h"
#include "daemon/codec/float.h"
#include "daemon/store/store.h"
#include "tests/unit/fake_engine.h"
#include "tests/unit/recording_policy.h"

namespace tensord::store {
namespace {

using io::FaultPlan;
using io::Op;

constexpr uint64_t kMiB = 1 << 20;

enum class Engine { kUring, kPread, kFake };

class MigrationTest : public ::testing::TestWithParam<Engine> {
 protected:
  void SetUp() override {
    HostTierConfig host;
    host.capacity = 16 * kMiB;
    host.prefault = false;
    auto tier = tiers::HostTier::Create(host, "tensord.migtest." + RandomHex(4) + ".");
    ASSERT_TRUE(tier.ok()) << tier.status();
    host_ = *std::move(tier);

    path_ = ::testing::TempDir() + "/tensord_migration." + RandomHex(4) + ".swap";
    tiers::SsdTierConfig sc;
    sc.files = {{path_, 64 * kMiB}};
    sc.engine.queue_depth = 8;
    sc.engine.chunk_bytes = 256 << 10;
    sc.engine.force_sync = GetParam() == Engine::kPread;
    sc.engine.fixed_regions = {{host_->Address(0, 0), host_->segments()[0].size}};
    std::unique_ptr<io::IoEngine> engine;
    if (GetParam() == Engine::kFake) {
      engine = std::make_unique<io::FakeEngine>(64 * kMiB);
    } else {
      engine = io::MakeEngine(sc.engine);
    }
    auto ssd = tiers::SsdTier::Create(sc, std::move(engine));
    ASSERT_TRUE(ssd.ok()) << ssd.status();
    ssd_ = *std::move(ssd);

    StoreOptions options;
    options.high_watermark = 0.5;
    options.low_watermark = 0.25;
    options.pressure_wait = absl::Seconds(5);
    store_ = std::make_unique<Store>(host_.get(), options, ssd_.get());
    session_ = *store_->OpenSession("migration-test");
  }

  void TearDown() override {
    StopMigrator();
    store_.reset();
    ssd_.reset();
    unlink(path_.c_str());
  }

  void StartMigrator() {
    migrator_ = std::thread([this] { store_->RunMigrator(&stop_); });
  }
  void StopMigrator() {
    if (!migrator_.joinable()) return;
    stop_.Notify();
    migrator_.join();
  }

  // The bytes of tensor `key`: a pseudo-random pattern seeded by the key.
  static std::vector<uint8_t> Pattern(const std::string& key, uint64_t n) {
    std::vector<uint8_t> v(n);
    std::mt19937_64 rng(std::hash<std::string>{}(key));
    for (uint64_t i = 0; i < n; i += 8) {
      const uint64_t r = rng();
      std::memcpy(v.data() + i, &r, std::min<uint64_t>(8, n - i));
    }
    return v;
  }

  absl::Status Put(const std::string& key, uint64_t n, Durability d = Durability::kDurable) {
    CreateParams p;
    p.key = key;
    p.dtype = DType::kUInt8;
    p.shape = {static_cast<int64_t>(n)};
    p.durability = d;
    auto info = store_->Create(session_, p, absl::Now() + absl::Seconds(5));
    if (!info.ok()) return info.status();
    const auto bytes = Pattern(key, n);
    std::memcpy(store_->Address(info->location), bytes.data(), n);
    return store_->Seal(session_, "", key);
  }

  // Gets `key`, checks every byte against its pattern and releases the lease.
  absl::Status GetAndVerify(const std::string& key) {
    std::vector<std::string> keys{key};
    auto out = store_->Get(session_, "", keys, WantTier::kAny);
    if (!out.ok()) return out.status();
    GetOutcome& r = (*out)[0];
    if (!r.status.ok()) return r.status;
    EXPECT_TRUE(r.info.on_host);
    const auto want = Pattern(key, r.info.nbytes);
    const bool same = std::memcmp(store_->Address(r.info.location), want.data(), want.size()) == 0;
    EXPECT_TRUE(store_->Release(session_, {&r.lease_id, 1}).ok());
    return same ? absl::OkStatus() : absl::InternalError("WRONG BYTES served for " + key);
  }

  bool OnHost(const std::string& key) { return store_->Stat("", key)->on_host; }
  uint64_t HostUsed() { return store_->Stats().used_bytes; }
  Counters counters() { return store_->Stats().counters; }

  // Fills the host tier to 75% with 1 MiB tensors and demotes to below the low watermark.
  void FillAndDemote(Durability d = Durability::kDurable) {
    for (int i = 0; i < 12; ++i) ASSERT_TRUE(Put(absl::StrCat("t", i), kMiB, d).ok()) << i;
    ASSERT_GT(store_->DemoteOnce(), 0u);
    ASSERT_LE(HostUsed(), 4 * kMiB);
    ASSERT_FALSE(OnHost("t0")) << "the least recently used tensor goes first";
  }

  std::unique_ptr<tiers::HostTier> host_;
  std::unique_ptr<tiers::SsdTier> ssd_;
  std::unique_ptr<Store> store_;
  std::string path_, session_;
  std::thread migrator_;
  absl::Notification stop_;
};

TEST_P(MigrationTest, DemotesOldestAboveHighWatermarkDownToLow) {
  for (int i = 0; i < 7; ++i) ASSERT_TRUE(Put(absl::StrCat("t", i), kMiB).ok());
  EXPECT_EQ(store_->DemoteOnce(), 0u) << "7 MiB of 16 is below the 50% high watermark";
  for (int i = 7; i < 12; ++i) ASSERT_TRUE(Put(absl::StrCat("t", i), kMiB).ok());
  std::vector<std::string> keys{"t11"};
  auto leased = store_->Get(session_, "", keys, WantTier::kAny);  // t11 is leased: stays
  ASSERT_TRUE(leased.ok() && (*leased)[0].status.ok());
  EXPECT_EQ(store_->DemoteOnce(), 8 * kMiB) << "12 MiB down to the 4 MiB low watermark";
  EXPECT_EQ(HostUsed(), 4 * kMiB);
  for (int i = 0; i < 8; ++i) EXPECT_FALSE(OnHost(absl::StrCat("t", i))) << i;
  for (int i = 8; i < 12; ++i) EXPECT_TRUE(OnHost(absl::StrCat("t", i))) << i;
  EXPECT_TRUE(store_->Stat("", "t0")->on_ssd);
  const StoreStats st = store_->Stats();
  EXPECT_EQ(st.counters.demotions, 8u);
  EXPECT_EQ(st.counters.demoted_bytes, 8 * kMiB);
  EXPECT_EQ(st.ssd.used_bytes, 8 * kMiB);
  EXPECT_EQ(st.objects, 12u) << "demotion loses nothing";
}

TEST_P(MigrationTest, PromotionServesEveryByteAndRedemotionWritesNothing) {
  FillAndDemote();
  for (int i = 0; i < 12; ++i) EXPECT_TRUE(GetAndVerify(absl::StrCat("t", i)).ok()) << i;
  Counters c = counters();
  EXPECT_EQ(c.promotions, 8u);
  EXPECT_EQ(c.promoted_bytes, 8 * kMiB);
  const uint64_t written = store_->Stats().ssd.bytes_written;
  ASSERT_GT(store_->DemoteOnce(), 0u);
  EXPECT_EQ(store_->Stats().ssd.bytes_written, written)
      << "a promoted tensor keeps its SSD copy: demoting it again costs no write";
  for (int cycle = 0; cycle < 3; ++cycle) {
    for (int i = 0; i < 12; ++i) EXPECT_TRUE(GetAndVerify(absl::StrCat("t", i)).ok()) << i;
    store_->DemoteOnce();
  }
  const uint64_t swap_used = store_->Stats().ssd.used_bytes;
  ASSERT_TRUE(store_->Stat("", "t0")->on_ssd);
  ASSERT_TRUE(store_->Delete(session_, "", "t0").ok());
  EXPECT_EQ(store_->Stats().ssd.used_bytes, swap_used - kMiB) << "Delete frees the SSD extent";
}

TEST_P(MigrationTest, ConcurrentGetsOfASwappedTensorShareOneRead) {
  ASSERT_TRUE(Put("big", 8 * kMiB).ok());
  ASSERT_TRUE(Put("filler", 1 * kMiB).ok());
  ASSERT_GT(store_->DemoteOnce(), 0u);
  ASSERT_FALSE(OnHost("big"));
  const uint64_t reads = store_->Stats().ssd.reads;
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int i = 0; i < 6; ++i) {
    threads.emplace_back([&] { ok += GetAndVerify("big").ok() ? 1 : 0; });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), 6);
  EXPECT_EQ(store_->Stats().ssd.reads, reads + 1);
  EXPECT_EQ(counters().promotions, 1u);
}

TEST_P(MigrationTest, CreateUnderPressureWaitsForTheMigrator) {
  StartMigrator();
  // 20 MiB of DURABLE tensors into a 16 MiB host tier: later creates wait for demotions.
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(Put(absl::StrCat("t", i), kMiB).ok()) << i;
  const absl::Status big = Put("big", 10 * kMiB);
  ASSERT_TRUE(big.ok()) << "waits until 10 MiB are demoted: " << big;
  // Promotions need room too: the migrator demotes others while they wait.
  for (int i = 0; i < 20; ++i) {
    const absl::Status st = GetAndVerify(absl::StrCat("t", i));
    EXPECT_TRUE(st.ok()) << i << " " << st;
  }
  EXPECT_TRUE(GetAndVerify("big").ok());
  StopMigrator();
  EXPECT_GT(counters().demotions, 0u);
}

TEST_P(MigrationTest, EvictDemotesOneTensorNow) {
  ASSERT_TRUE(Put("a", kMiB).ok());
  ASSERT_TRUE(Put("b", kMiB).ok());
  EXPECT_EQ(*store_->Evict("", "a"), "demoted to SSD");
  EXPECT_FALSE(OnHost("a"));
  EXPECT_TRUE(OnHost("b")) << "only the named tensor moves";
  EXPECT_EQ(*store_->Evict("", "a"), "already on SSD only");
  EXPECT_TRUE(GetAndVerify("a").ok());
  const uint64_t written = store_->Stats().ssd.bytes_written;
  EXPECT_EQ(*store_->Evict("", "a"), "demoted to SSD (its SSD copy was current)");
  EXPECT_EQ(store_->Stats().ssd.bytes_written, written);
  std::vector<std::string> keys{"b"};
  auto leased = store_->Get(session_, "", keys, WantTier::kAny);
  ASSERT_TRUE(leased.ok() && (*leased)[0].status.ok());
  EXPECT_EQ(store_->Evict("", "b").status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(OnHost("b"));
  EXPECT_EQ(store_->Evict("", "nope").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->Evict("", "").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_P(MigrationTest, WithoutRoomAnywhereCreateFailsAfterItsDeadline) {
  for (int i = 0; i < 15; ++i) ASSERT_TRUE(Put(absl::StrCat("t", i), kMiB).ok());
  std::vector<std::string> keys;
  for (int i = 0; i < 15; ++i) keys.push_back(absl::StrCat("t", i));
  auto leased = store_->Get(session_, "", keys, WantTier::kAny);  // nothing demotable
  ASSERT_TRUE(leased.ok());
  CreateParams p;
  p.key = "x";
  p.dtype = DType::kUInt8;
  p.shape = {static_cast<int64_t>(2 * kMiB)};
  const absl::Time t0 = absl::Now();
  auto r = store_->Create(session_, p, absl::Now() + absl::Milliseconds(300));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted) << r.status();
  EXPECT_LT(absl::Now() - t0, absl::Seconds(2)) << "fails at once when nothing is demotable";
}

// A full SSD tier lets its oldest CACHE tensors go for newer demotions instead of refusing
// them: DURABLE tensors keep coming in (before, a host full of DURABLE tensors over an SSD full
// of CACHE ones could not demote and Create failed), every DURABLE tensor stays, the newest
// CACHE ones stay, the oldest are the ones evicted, and no Get serves wrong bytes.
TEST_P(MigrationTest, AFullSsdLetsItsOldestCacheTensorsGoAndKeepsDurableOnes) {
  StartMigrator();
  constexpr uint64_t kSize = 4 * kMiB;
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(Put(absl::StrCat("d", i), kSize).ok()) << i;
  }
  // 96 MiB of CACHE tensors into 16 MiB of host memory over a 64 MiB SSD.
  for (int i = 0; i < 24; ++i) {
    const absl::Status st = Put(absl::StrCat("c", i), kSize, Durability::kCache);
    ASSERT_TRUE(st.ok()) << i << " " << st;
  }
  // 24 MiB of DURABLE tensors more than the host holds: they need the SSD.
  for (int i = 0; i < 6; ++i) {
    const absl::Status st = Put(absl::StrCat("e", i), kSize);
    ASSERT_TRUE(st.ok()) << "a DURABLE tensor waits for SSD room the CACHE ones give: " << i << " "
                         << st;
  }
  const Counters c = counters();
  EXPECT_GT(c.ssd_evictions, 0u);
  EXPECT_EQ(c.ssd_evicted_bytes, c.ssd_evictions * kSize);
  for (const char* prefix : {"d", "e"}) {
    for (int i = 0; i < (prefix[0] == 'd' ? 4 : 6); ++i) {
      const absl::Status st = GetAndVerify(absl::StrCat(prefix, i));
      EXPECT_TRUE(st.ok()) << prefix << i << ": " << st;
    }
  }
  int kept = 0, first_kept = -1;
  for (int i = 0; i < 24; ++i) {
    const absl::Status st = GetAndVerify(absl::StrCat("c", i));
    ASSERT_TRUE(st.ok() || st.code() == absl::StatusCode::kNotFound) << i << ": " << st;
    if (st.ok()) {
      ++kept;
      if (first_kept < 0) first_kept = i;
    }
  }
  EXPECT_FALSE(GetAndVerify("c0").ok()) << "the oldest CACHE tensor is the one evicted";
  EXPECT_GT(kept, 0);
  EXPECT_GE(first_kept, 1);
  StopMigrator();
}

// The SSD tier's order is by last read: a tensor swapped in a moment ago outlives older,
// unread ones when the full SSD makes room; a hinted tensor is never the one let go.
TEST_P(MigrationTest, AFullSsdLetsItsLeastRecentlyReadGoAndKeepsHintedOnes) {
  StartMigrator();
  constexpr uint64_t kSize = 4 * kMiB;
  for (int i = 0; i < 14; ++i) {  // 56 MiB: most of it on the SSD (64 MiB), not full yet
    ASSERT_TRUE(Put(absl::StrCat("c", i), kSize, Durability::kCache).ok()) << i;
  }
  ASSERT_TRUE(store_->Stat("", "c0")->on_ssd);
  ASSERT_TRUE(store_->Stat("", "c2")->on_ssd);
  ASSERT_TRUE(GetAndVerify("c0").ok()) << "swapped in: a read of its SSD copy";
  const std::vector<std::string> hinted{"c2"};
  ASSERT_TRUE(store_->Hint("", hinted, WantTier::kHost, absl::Seconds(30)).ok());
  ASSERT_EQ(counters().ssd_evictions, 0u) << "the SSD was not full before";
  for (int i = 14; i < 24; ++i) {
    ASSERT_TRUE(Put(absl::StrCat("c", i), kSize, Durability::kCache).ok()) << i;
  }
  EXPECT_GT(counters().ssd_evictions, 0u);
  EXPECT_FALSE(store_->Stat("", "c1").ok()) << "the oldest unread one went";
  EXPECT_TRUE(store_->Stat("", "c0").ok()) << "read since: it stays";
  EXPECT_TRUE(store_->Stat("", "c2").ok()) << "hinted: it stays";
  StopMigrator();
}

struct FaultCase {
  const char* name;
  FaultPlan::Kind kind;
  int error;
  bool persistent;
};

const FaultCase kFaults[] = {
    {"EIO_transient", FaultPlan::Kind::kError, EIO, false},
    {"EIO_persistent", FaultPlan::Kind::kError, EIO, true},
    {"ENOSPC_transient", FaultPlan::Kind::kError, ENOSPC, false},
    {"ENOSPC_persistent", FaultPlan::Kind::kError, ENOSPC, true},
    {"short_transient", FaultPlan::Kind::kShort, 0, false},
    {"short_persistent", FaultPlan::Kind::kShort, 0, true},
};

TEST_P(MigrationTest, WriteFaultsKeepTensorsOnHostAndIntact) {
  for (const FaultCase& f : kFaults) {
    SCOPED_TRACE(f.name);
    TearDown();  // a fresh store and swap file per case
    SetUp();
    for (int i = 0; i < 12; ++i) ASSERT_TRUE(Put(absl::StrCat("t", i), kMiB).ok());
    ssd_->faults().Set({f.kind, Op::kWrite, f.error, f.persistent ? -1 : 1});
    for (int round = 0; round < 5; ++round) store_->DemoteOnce();
    ssd_->faults().Clear();
    const bool errors = f.kind == FaultPlan::Kind::kError;
    if (errors) {
      EXPECT_GT(store_->Stats().ssd.io_errors, 0u);
    }
    // A transient fault fails one batch, whose writes are then retried one by one.
    EXPECT_EQ(counters().demotion_failures > 0, errors && f.persistent);
    EXPECT_EQ(ssd_->degraded(), errors && f.persistent);
    for (int i = 0; i < 12; ++i) EXPECT_TRUE(GetAndVerify(absl::StrCat("t", i)).ok()) << i;
    EXPECT_EQ(store_->Stats().objects, 12u) << "no tensor lost";
    if (errors && f.persistent) {
      // A degraded SSD tier takes no writes; the host tier keeps serving new tensors.
      EXPECT_EQ(store_->DemoteOnce(), 0u);
      EXPECT_TRUE(Put("after", kMiB).ok());
      EXPECT_TRUE(GetAndVerify("after").ok());
      // The migrator's probe finds out when the device works again.
      ssd_->faults().Set({f.kind, Op::kWrite, f.error, -1});
      EXPECT_FALSE(ssd_->Probe());
      EXPECT_TRUE(ssd_->degraded());
      ssd_->faults().Clear();
      EXPECT_TRUE(ssd_->Probe());
      EXPECT_FALSE(ssd_->degraded());
      EXPECT_GT(store_->DemoteOnce(), 0u) << "demotion resumes after recovery";
      EXPECT_EQ(store_->Stats().ssd.used_bytes % 4096, 0u);
    } else {
      EXPECT_GT(store_->DemoteOnce(), 0u) << "recovered from a transient fault";
    }
  }
}

TEST_P(MigrationTest, ReadFaultsNeverServeWrongBytes) {
  for (const FaultCase& f : kFaults) {
    for (Durability d : {Durability::kDurable, Durability::kCache}) {
      const bool cache = d == Durability::kCache;
      SCOPED_TRACE(absl::StrCat(f.name, cache ? " CACHE" : " DURABLE"));
      TearDown();
      SetUp();
      FillAndDemote(d);
      ssd_->faults().Set({f.kind, Op::kRead, f.error, f.persistent ? -1 : 1});
      const absl::Status first = GetAndVerify("t0");
      if (f.kind == FaultPlan::Kind::kShort) {
        EXPECT_TRUE(first.ok()) << "short reads are completed: " << first;
        continue;
      }
      EXPECT_EQ(first.code(), cache ? absl::StatusCode::kNotFound : absl::StatusCode::kDataLoss)
          << first;
      const Counters c = counters();
      EXPECT_EQ(c.swap_misses, cache ? 1u : 0u);
      EXPECT_EQ(c.data_loss, cache ? 0u : 1u);
      if (cache) {
        EXPECT_FALSE(store_->Stat("", "t0").ok()) << "a CACHE tensor that failed is dropped";
      } else {
        EXPECT_TRUE(store_->Stat("", "t0").ok()) << "a DURABLE tensor is never dropped";
        const absl::Status again = GetAndVerify("t0");
        if (f.persistent) {
          EXPECT_EQ(again.code(), absl::StatusCode::kDataLoss) << again;
        } else {
          EXPECT_TRUE(again.ok()) << "after a transient fault the tensor reads back: " << again;
        }
      }
      ssd_->faults().Clear();
      for (int i = 8; i < 12; ++i) {
        EXPECT_TRUE(GetAndVerify(absl::StrCat("t", i)).ok()) << "host-resident " << i;
      }
    }
  }
}

TEST_P(MigrationTest, CorruptSwapIsDataLossForDurableAndAMissForCache) {
  if (GetParam() == Engine::kFake) GTEST_SKIP() << "corrupts the real swap file";
  for (Durability d : {Durability::kDurable, Durability::kCache}) {
    TearDown();
    SetUp();
    FillAndDemote(d);
    const auto info = *store_->Stat("", "t0");
    ASSERT_TRUE(info.on_ssd);
    // Flip every byte of the first 64 KiB of the swap file: t0's extent begins there.
    int fd = open(path_.c_str(), O_RDWR);
    ASSERT_GE(fd, 0);
    std::vector<uint8_t> junk(64 << 10);
    ASSERT_EQ(pread(fd, junk.data(), junk.size(), 0), static_cast<ssize_t>(junk.size()));
    for (uint8_t& b : junk) b ^= 0x5A;
    ASSERT_EQ(pwrite(fd, junk.data(), junk.size(), 0), static_cast<ssize_t>(junk.size()));
    fsync(fd);
    close(fd);
    const absl::Status st = GetAndVerify("t0");
    EXPECT_EQ(st.code(),
              d == Durability::kCache ? absl::StatusCode::kNotFound : absl::StatusCode::kDataLoss)
        << st;
    EXPECT_EQ(store_->Stats().ssd.checksum_failures, 1u);
  }
}

TEST_P(MigrationTest, ALosslessSwapCopyIsSmallerAndDecodesOnSwapIn) {
  CreateParams p;
  p.key = "floats";
  p.dtype = DType::kFloat32;
  p.shape = {1 << 20};  // 4 MiB of few distinct values
  p.compression = {codec::Compression::kLossless};
  auto info = store_->Create(session_, p);
  ASSERT_TRUE(info.ok()) << info.status();
  auto* f = reinterpret_cast<float*>(store_->Address(info->location));
  for (int i = 0; i < (1 << 20); ++i) f[i] = static_cast<float>(i % 7) * 0.5f;
  ASSERT_TRUE(store_->Seal(session_, "", "floats").ok());
  auto outcome = store_->Evict("", "floats");
  ASSERT_TRUE(outcome.ok()) << outcome.status();
  const TensorInfo on_ssd = *store_->Stat("", "floats");
  EXPECT_FALSE(on_ssd.on_host);
  EXPECT_EQ(on_ssd.compression.mode, codec::Compression::kLossless);
  EXPECT_EQ(on_ssd.ssd_codec, codec::CodecId::kLossless);
  EXPECT_GT(on_ssd.ssd_stored_bytes, 0u);
  EXPECT_LT(on_ssd.ssd_stored_bytes, on_ssd.nbytes / 4) << "the swap copy is compressed";
  EXPECT_LT(store_->Stats().ssd.used_bytes, on_ssd.nbytes / 4) << "and takes that much swap";
  std::vector<std::string> keys{"floats"};
  auto got = store_->Get(session_, "", keys, WantTier::kHost);
  ASSERT_TRUE(got.ok() && (*got)[0].status.ok()) << (*got)[0].status;
  const auto* back = reinterpret_cast<const float*>(store_->Address((*got)[0].info.location));
  int wrong = 0;
  for (int i = 0; i < (1 << 20); ++i) wrong += back[i] != static_cast<float>(i % 7) * 0.5f;
  EXPECT_EQ(wrong, 0) << "decoded and verified on the way up";
  const Counters c = counters();
  EXPECT_EQ(c.codec_encodes, 1u);
  EXPECT_EQ(c.codec_encode_in_bytes, on_ssd.nbytes);
  EXPECT_EQ(c.codec_encode_out_bytes, on_ssd.ssd_stored_bytes);
  EXPECT_EQ(c.codec_decodes, 1u);
  EXPECT_EQ(c.codec_decode_out_bytes, on_ssd.nbytes);
  // A tensor created without compression is stored raw.
  ASSERT_TRUE(Put("raw", kMiB).ok());
  ASSERT_TRUE(store_->Evict("", "raw").ok());
  EXPECT_EQ(store_->Stat("", "raw")->ssd_stored_bytes, kMiB);
  EXPECT_EQ(counters().codec_encodes, 1u) << "no codec work for compression none";
  p.compression = {static_cast<codec::Compression>(9)};
  p.key = "bad";
  EXPECT_EQ(store_->Create(session_, p).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_P(MigrationTest, LossyCopiesStayWithinTheirBudgetAndDurableOnesStayExact) {
  StoreOptions options;
  options.pressure_wait = absl::Seconds(5);
  options.default_compression = {codec::Compression::kLossy, 0.01};  // the pools' default
  store_ = std::make_unique<Store>(host_.get(), options, ssd_.get());
  session_ = *store_->OpenSession("lossy-test");
  // A KV-like float16 block: 64 tokens x 8 heads x 128, smooth per channel plus noise.
  const std::vector<int64_t> shape = {64, 8, 128};
  const size_t n = 64 * 8 * 128;
  std::vector<uint16_t> values(n);
  std::mt19937 rng(5);
  std::normal_distribution<float> noise(0, 1);
  for (size_t i = 0; i < n; ++i) {
    values[i] = codec::FloatToHalf(std::sin(0.05f * float(i % 128)) * 2 + noise(rng));
  }
  const auto put = [&](const std::string& key, Durability d, codec::Policy policy) {
    CreateParams p;
    p.key = key;
    p.dtype = DType::kFloat16;
    p.shape = shape;
    p.durability = d;
    p.compression = policy;
    auto info = store_->Create(session_, p);
    ASSERT_TRUE(info.ok()) << info.status();
    std::memcpy(store_->Address(info->location), values.data(), 2 * n);
    ASSERT_TRUE(store_->Seal(session_, "", key).ok());
    ASSERT_TRUE(store_->Evict("", key).ok());
  };
  // Reads `key` back from SSD; returns its relative RMSE against the original values.
  const auto error_of = [&](const std::string& key) {
    std::vector<std::string> keys{key};
    auto got = store_->Get(session_, "", keys, WantTier::kHost);
    EXPECT_TRUE(got.ok() && (*got)[0].status.ok());
    if (!got.ok() || !(*got)[0].status.ok()) return 1.0;
    const uint8_t* back = store_->Address((*got)[0].info.location);
    const codec::Quality q = codec::Measure(
        DType::kFloat16, {reinterpret_cast<const uint8_t*>(values.data()), 2 * n}, {back, 2 * n});
    EXPECT_TRUE(store_->Release(session_, {&(*got)[0].lease_id, 1}).ok());
    return q.rel_rmse;
  };
  const codec::Policy by_default{codec::Compression::kDefault};

  put("kv", Durability::kCache, by_default);  // CACHE: the pool's lossy default applies
  TensorInfo kv = *store_->Stat("", "kv");
  EXPECT_EQ(kv.compression.mode, codec::Compression::kLossy);
  EXPECT_TRUE((*codec::CodecFor(kv.ssd_codec))->lossy()) << codec::CodecName(kv.ssd_codec);
  EXPECT_GT(kv.ssd_rel_rmse, 0);
  EXPECT_LE(kv.ssd_rel_rmse, 0.01);
  EXPECT_LT(kv.ssd_stored_bytes, kv.nbytes * 6 / 10) << "about half of float16's bytes";
  const double kv_error = error_of("kv");
  EXPECT_GT(kv_error, 0);
  EXPECT_LE(kv_error, 0.01) << "what the client reads back is within the budget";
  EXPECT_NEAR(kv_error, kv.ssd_rel_rmse, 1e-4) << "and is the error the daemon reported";

  put("weights", Durability::kDurable, by_default);  // DURABLE: lossy only when asked for
  TensorInfo w = *store_->Stat("", "weights");
  EXPECT_EQ(w.compression.mode, codec::Compression::kLossless);
  EXPECT_FALSE((*codec::CodecFor(w.ssd_codec))->lossy());
  EXPECT_EQ(error_of("weights"), 0.0) << "bit-exact";

  codec::Policy int8_only{codec::Compression::kLossy, 0.01};
  ASSERT_TRUE(codec::CodecMask(std::vector<std::string>{"int8"}).ok());
  int8_only.allowed = *codec::CodecMask(std::vector<std::string>{"int8"});
  put("asked", Durability::kDurable, int8_only);  // DURABLE, lossy by its own policy
  EXPECT_EQ(store_->Stat("", "asked")->ssd_codec, codec::CodecId::kInt8);
  EXPECT_LE(error_of("asked"), 0.01);

  const uint64_t over = counters().codec_over_budget;
  put("strict", Durability::kCache, {codec::Compression::kLossy, 1e-7});  // no codec meets it
  EXPECT_EQ(counters().codec_over_budget, over + 1);
  EXPECT_FALSE((*codec::CodecFor(store_->Stat("", "strict")->ssd_codec))->lossy());
  EXPECT_EQ(error_of("strict"), 0.0) << "stored losslessly instead";
  bool int8_counted = false;
  for (const CodecStat& c : store_->Stats().codecs) {
    if (c.codec == codec::CodecId::kInt8) int8_counted = c.encodes >= 1 && c.decodes >= 1;
  }
  EXPECT_TRUE(int8_counted) << "per-codec statistics";
  // Bad policies are refused at Create.
  CreateParams bad;
  bad.key = "bad";
  bad.dtype = DType::kFloat16;
  bad.shape = shape;
  bad.compression = {codec::Compression::kLossy, 0};
  EXPECT_EQ(store_->Create(session_, bad).status().code(), absl::StatusCode::kInvalidArgument);
  bad.compression = {codec::Compression::kLossless, 0.01};
  EXPECT_EQ(store_->Create(session_, bad).status().code(), absl::StatusCode::kInvalidArgument);
  bad.compression = {codec::Compression::kLossless, 0, 1u << 6};
  EXPECT_EQ(store_->Create(session_, bad).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_P(MigrationTest, PrefetchPromotesWithoutALeaseAndReportsEachKey) {
  FillAndDemote();
  ASSERT_TRUE(OnHost("t11"));
  CreateParams unsealed;
  unsealed.key = "unsealed";
  unsealed.dtype = DType::kUInt8;
  unsealed.shape = {4096};
  ASSERT_TRUE(store_->Create(session_, unsealed).ok());
  const std::vector<std::string> keys{"t11", "t0", "nope", "unsealed", "bad\x01key"};
  auto out = store_->Prefetch("", keys);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_TRUE((*out)[0].status.ok());
  EXPECT_FALSE((*out)[0].moved) << "on host already";
  EXPECT_TRUE((*out)[1].status.ok()) << (*out)[1].status;
  EXPECT_TRUE((*out)[1].moved) << "swapped in";
  EXPECT_EQ((*out)[2].status.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ((*out)[3].status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ((*out)[4].status.code(), absl::StatusCode::kInvalidArgument);
  const TensorInfo t0 = *store_->Stat("", "t0");
  EXPECT_TRUE(t0.on_host);
  EXPECT_EQ(t0.leases, 0u) << "a prefetch holds no lease";
  Counters c = counters();
  EXPECT_EQ(c.prefetches, 1u);
  EXPECT_EQ(c.prefetched_bytes, kMiB);
  const uint64_t promotions = c.promotions, hits = c.get_hits;
  EXPECT_TRUE(GetAndVerify("t0").ok());
  EXPECT_EQ(counters().promotions, promotions) << "the Get found it on host";
  EXPECT_EQ(counters().get_hits, hits + 1);
  // Whole-call errors.
  EXPECT_EQ(store_->Prefetch("", keys, WantTier::kGpu).status().code(),
            absl::StatusCode::kFailedPrecondition)
      << "no GPU tier";
  EXPECT_EQ(store_->Prefetch("", keys, WantTier::kSsd).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->Prefetch("", {}).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_P(MigrationTest, ASwapInCompletesOnTheStoresThreadsAHitOnTheCallers) {
  FillAndDemote();
  auto get_on = [&](const std::string& key) {
    std::thread::id ran_on;
    absl::Notification done;
    uint64_t lease = 0;
    store_->GetAsync(session_, "", {key}, WantTier::kAny, absl::InfiniteFuture(), -1,
                     [&](absl::StatusOr<std::vector<GetOutcome>> r) {
                       EXPECT_TRUE(r.ok() && (*r)[0].status.ok());
                       lease = (*r)[0].lease_id;
                       ran_on = std::this_thread::get_id();
                       done.Notify();
                     });
    done.WaitForNotification();
    EXPECT_TRUE(store_->Release(session_, {&lease, 1}).ok());
    return ran_on;
  };
  EXPECT_NE(get_on("t0"), std::this_thread::get_id())
      << "the caller (a gRPC thread in the daemon) never waits for the read";
  EXPECT_EQ(get_on("t11"), std::this_thread::get_id()) << "a hit completes at once";
}

TEST_P(MigrationTest, GetsRacingDemotionsAndPrefetchesServeRightBytesAndLoseNothing) {
  constexpr int kKeys = 10;
  for (int i = 0; i < kKeys; ++i) ASSERT_TRUE(Put(absl::StrCat("r", i), kMiB).ok());
  std::atomic<bool> stop{false};
  std::atomic<int> wrong{0}, gets{0};
  auto key = [](std::mt19937& rng) { return absl::StrCat("r", rng() % kKeys); };
  std::vector<std::thread> threads;
  threads.emplace_back([&] {  // the operator evicting, and the migrator
    std::mt19937 rng(1);
    while (!stop) {
      store_->Evict("", key(rng)).IgnoreError();
      store_->DemoteOnce();
    }
  });
  threads.emplace_back([&] {  // look-ahead promoting
    std::mt19937 rng(2);
    while (!stop) {
      std::vector<std::string> ks{key(rng), key(rng)};
      auto out = store_->Prefetch("", ks);
      if (!out.ok()) wrong++;
    }
  });
  for (int t = 0; t < 2; ++t) {
    threads.emplace_back([&, t] {  // clients
      std::mt19937 rng(3 + t);
      for (int n = 0; n < 150; ++n) {
        absl::Status st = GetAndVerify(key(rng));
        if (!st.ok()) {
          ADD_FAILURE() << st;
          wrong++;
        }
        gets++;
      }
    });
  }
  threads[2].join();
  threads[3].join();
  stop = true;
  threads[0].join();
  threads[1].join();
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_EQ(gets.load(), 300);
  for (int i = 0; i < kKeys; ++i) {
    EXPECT_TRUE(GetAndVerify(absl::StrCat("r", i)).ok()) << "DURABLE r" << i << " is intact";
  }
  EXPECT_EQ(counters().data_loss, 0u);
  store_->Quiesce();
  EXPECT_EQ(store_->Stats().pinned_bytes, 0u) << "every lease and reader let go";
}

TEST_P(MigrationTest, ADemotionIsHeardByTheHostPolicyAsDemoted) {
  auto log = std::make_shared<policy::PolicyLog>(), ssd_log = std::make_shared<policy::PolicyLog>();
  StoreOptions options;
  options.make_policy = [log, ssd_log](TierId t) {
    return std::make_unique<policy::RecordingPolicy>(t == TierId::kSsd ? ssd_log : log);
  };
  store_ = std::make_unique<Store>(host_.get(), options, ssd_.get());
  session_ = *store_->OpenSession("reasons");
  ASSERT_TRUE(Put("a", kMiB).ok());
  ASSERT_TRUE(store_->Evict("", "a").ok());
  EXPECT_EQ(log->Count(policy::RemovalReason::kDemoted), 1);
  EXPECT_EQ(log->Count(policy::RemovalReason::kDeleted), 0);
  EXPECT_EQ(ssd_log->inserts, 1) << "the SSD tier's policy ranks its copy";
  EXPECT_TRUE(GetAndVerify("a").ok());
  EXPECT_EQ(log->inserts, 2) << "tracked again once swapped in";
  EXPECT_EQ(ssd_log->inserts, 1) << "the SSD copy stays (current), tracked once";
  ASSERT_TRUE(store_->Delete(session_, "", "a").ok());
  EXPECT_EQ(log->Count(policy::RemovalReason::kDeleted), 1);
  EXPECT_EQ(ssd_log->Count(policy::RemovalReason::kDeleted), 1);
}

INSTANTIATE_TEST_SUITE_P(Engines, MigrationTest,
                         ::testing::Values(Engine::kUring, Engine::kPread, Engine::kFake),
                         [](const auto& info) {
                           switch (info.param) {
                             case Engine::kUring:
                               return "io_uring";
                             case Engine::kPread:
                               return "pread";
                             default:
                               return "fake";
                           }
                         });

}  // namespace
}  // namespace tensord::store
