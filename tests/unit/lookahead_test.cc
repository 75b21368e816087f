// Look-ahead: the hint queue in isolation (ranks, the bounded window, expiry on a fake clock),
// and hints in the store over a real shared-memory host tier and an SSD tier on a real file:
// hinted SSD tensors come up before their Get (a host hit, no SSD read at Get time), the window
// stays inside its share, guarded copies are not evicted, stale hints expire, a hint storm
// changes nothing it must not.
#include "daemon/policy/lookahead.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/clock.h"
#include "common/random.h"
#include "daemon/store/store.h"

namespace tensord {
namespace {

using policy::Hinted;
using policy::LookAhead;

constexpr uint64_t kMiB = 1 << 20;
const absl::Time kT0 = absl::FromUnixSeconds(1'800'000'000);

std::vector<policy::Handle> Window(LookAhead& la, std::array<uint64_t, 3> budget) {
  std::vector<policy::Handle> in;
  la.Extend(budget, [&](Hinted& e) { in.push_back(e.h); });
  return in;
}

TEST(LookAhead, TheWindowTakesRanksInOrderWhileTheyFitTheBudget) {
  LookAhead la(100);
  for (policy::Handle h : {1, 2, 3, 4}) {
    EXPECT_EQ(la.Add(h, 10, 1, -1, kT0 + absl::Seconds(5)), LookAhead::Added::kAdded);
  }
  EXPECT_EQ(la.Add(2, 10, 1, -1, kT0 + absl::Seconds(9)), LookAhead::Added::kRefreshed);
  EXPECT_EQ(Window(la, {0, 25, 0}), (std::vector<policy::Handle>{1, 2})) << "20 of 25 bytes";
  EXPECT_EQ(la.window_bytes(1), 20u);
  EXPECT_TRUE(Window(la, {0, 25, 0}).empty()) << "3 does not fit; 4 is not taken past it";
  ASSERT_TRUE(la.Take(1).has_value());  // read: the window moves on
  EXPECT_EQ(Window(la, {0, 25, 0}), (std::vector<policy::Handle>{3}));
  EXPECT_FALSE(la.Take(1).has_value());
  EXPECT_EQ(la.size(), 3u);
}

TEST(LookAhead, IsBoundedAndExpires) {
  LookAhead la(3);
  EXPECT_EQ(la.Add(1, 1, 1, -1, kT0 + absl::Seconds(1)), LookAhead::Added::kAdded);
  EXPECT_EQ(la.Add(2, 1, 1, -1, kT0 + absl::Seconds(3)), LookAhead::Added::kAdded);
  EXPECT_EQ(la.Add(3, 1, 1, -1, kT0 + absl::Seconds(1)), LookAhead::Added::kAdded);
  EXPECT_EQ(la.Add(4, 1, 1, -1, kT0 + absl::Seconds(1)), LookAhead::Added::kFull);
  EXPECT_EQ(la.Add(1, 1, 1, -1, kT0 + absl::Seconds(5)), LookAhead::Added::kRefreshed)
      << "a refresh extends the expiry";
  Window(la, {0, 100, 0});
  std::vector<policy::Handle> gone;
  la.Expire(kT0 + absl::Seconds(2), [&](const Hinted& e) { gone.push_back(e.h); });
  EXPECT_EQ(gone, (std::vector<policy::Handle>{3}));
  EXPECT_EQ(la.window_bytes(1), 2u) << "an expired entry leaves the window";
  la.Expire(kT0 + absl::Seconds(10), [&](const Hinted& e) { gone.push_back(e.h); });
  EXPECT_EQ(gone, (std::vector<policy::Handle>{3, 2, 1})) << "soonest expiry first";
  EXPECT_TRUE(la.empty());
  EXPECT_EQ(la.window_bytes(1), 0u);
}

TEST(LookAhead, MovesComeInRankOrderAndInBatchesThatGoTogether) {
  LookAhead la(100);
  for (policy::Handle h : {1, 2, 3, 4, 5}) la.Add(h, 1, h == 3 ? 0 : 1, -1, kT0 + absl::Seconds(9));
  la.Extend({100, 100, 0}, [&](Hinted& e) { la.NeedsMove(e.h); });
  auto same_tier = [](const Hinted& a, const Hinted& b) { return a.tier == b.tier; };
  auto first = la.NextMoves(8, same_tier);
  ASSERT_EQ(first.size(), 2u) << "1 and 2; 3 wants another tier";
  first[0]->issued = first[1]->issued = true;
  la.Take(4);  // read before its move: never issued
  auto second = la.NextMoves(8, same_tier);
  ASSERT_EQ(second.size(), 1u);
  EXPECT_EQ(second[0]->h, 3u);
  auto third = la.NextMoves(1, same_tier);
  ASSERT_EQ(third.size(), 1u);
  EXPECT_EQ(third[0]->h, 5u);
  EXPECT_TRUE(la.NextMoves(8, same_tier).empty());
}

class StoreHintTest : public ::testing::Test {
 protected:
  void Open(bool with_ssd, store::StoreOptions options = {}) {
    HostTierConfig host;
    host.capacity = 16 * kMiB;
    host.prefault = false;
    auto tier = tiers::HostTier::Create(host, "tensord.hinttest." + RandomHex(4) + ".");
    ASSERT_TRUE(tier.ok()) << tier.status();
    host_ = *std::move(tier);
    if (with_ssd) {
      path_ = ::testing::TempDir() + "/tensord_hint." + RandomHex(4) + ".swap";
      tiers::SsdTierConfig sc;
      sc.files = {{path_, 128 * kMiB}};
      sc.engine.fixed_regions = {{host_->Address(0, 0), host_->segments()[0].size}};
      auto ssd = tiers::SsdTier::Create(sc, io::MakeEngine(sc.engine));
      ASSERT_TRUE(ssd.ok()) << ssd.status();
      ssd_ = *std::move(ssd);
    }
    options.clock = &clock_;
    store_ = std::make_unique<store::Store>(host_.get(), options, ssd_.get());
    session_ = *store_->OpenSession("hint-test");
  }
  void StartMigrator() {
    migrator_ = std::thread([this] { store_->RunMigrator(&stop_); });
  }
  void TearDown() override {
    if (migrator_.joinable()) {
      stop_.Notify();
      migrator_.join();
    }
    store_.reset();
    ssd_.reset();
    if (!path_.empty()) unlink(path_.c_str());
  }
  void Put(const std::string& key, uint64_t n, store::Durability d, uint8_t fill) {
    store::CreateParams p;
    p.key = key;
    p.dtype = DType::kUInt8;
    p.shape = {int64_t(n)};
    p.durability = d;
    auto info = store_->Create(session_, p, absl::Now() + absl::Seconds(5));
    ASSERT_TRUE(info.ok()) << info.status();
    std::memset(store_->Address(info->location), fill, n);
    ASSERT_TRUE(store_->Seal(session_, "", key).ok());
  }
  bool OnHost(const std::string& key) {
    auto s = store_->Stat("", key);
    return s.ok() && s->on_host;
  }
  // Waits (real time, bounded) until `pred` holds.
  template <typename Pred>
  bool Eventually(Pred pred) {
    for (int i = 0; i < 500; ++i) {
      if (pred()) return true;
      absl::SleepFor(absl::Milliseconds(10));
    }
    return pred();
  }
  store::Counters counters() { return store_->Stats().counters; }

  FakeClock clock_;
  absl::Notification stop_;
  std::thread migrator_;
  std::string path_;
  std::unique_ptr<tiers::HostTier> host_;
  std::unique_ptr<tiers::SsdTier> ssd_;
  std::unique_ptr<store::Store> store_;
  std::string session_;
};

TEST_F(StoreHintTest, HintedSsdTensorsComeUpBeforeTheirGet) {
  Open(/*with_ssd=*/true);
  for (int i = 0; i < 6; ++i) {
    Put(absl::StrCat("k", i), kMiB, store::Durability::kDurable, uint8_t(i + 1));
    ASSERT_TRUE(store_->Evict("", absl::StrCat("k", i)).ok());
    ASSERT_FALSE(OnHost(absl::StrCat("k", i)));
  }
  // The window is 25% of 16 MiB = 4 MiB: k0..k3 are promoted, k4 and k5 wait.
  const std::vector<std::string> keys = {"k0", "k1", "k2", "k3", "k4", "k5", "nope"};
  auto h = store_->Hint("", keys);
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_EQ(h->accepted, 6u);
  EXPECT_EQ(h->unknown, 1u);
  ASSERT_TRUE(Eventually([&] { return OnHost("k0") && OnHost("k3"); }));
  store_->Quiesce();
  EXPECT_FALSE(OnHost("k4")) << "beyond the window";
  EXPECT_EQ(counters().lookahead_issued, 4u);
  EXPECT_EQ(counters().lookahead_bytes, 4 * kMiB);
  // The Gets are host hits: nothing is read from the SSD for them.
  const uint64_t read_before = store_->Stats().ssd.bytes_read;
  const uint64_t ahead_before = counters().lookahead_bytes;
  const uint64_t hits_before = counters().get_hits;
  std::vector<std::string> first = {"k0", "k1"};
  auto got = store_->Get(session_, "", first, store::WantTier::kHost);
  ASSERT_TRUE(got.ok());
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE((*got)[i].status.ok());
    EXPECT_EQ(store_->Address((*got)[i].info.location)[kMiB - 1], uint8_t(i + 1)) << "its bytes";
    ASSERT_TRUE(store_->Release(session_, {&(*got)[i].lease_id, 1}).ok());
  }
  EXPECT_EQ(counters().get_hits, hits_before + 2);
  // The Gets move the window on at once (k4, k5 may already be on their way up): once those
  // moves are done, every byte read from the SSD since is the look-ahead's, none the Gets'.
  store_->Quiesce();
  EXPECT_EQ(store_->Stats().ssd.bytes_read - read_before, counters().lookahead_bytes - ahead_before)
      << "no SSD read at Get time";
  EXPECT_EQ(counters().lookahead_used, 2u);
  // Two hints read: the window moves on to k4 and k5.
  ASSERT_TRUE(Eventually([&] { return OnHost("k4") && OnHost("k5"); }));
  store_->Quiesce();
  EXPECT_EQ(counters().lookahead_issued, 6u);
  std::vector<std::string> rest = {"k4", "k5"};
  got = store_->Get(session_, "", rest, store::WantTier::kHost);
  ASSERT_TRUE(got.ok());
  for (auto& g : *got) ASSERT_TRUE(store_->Release(session_, {&g.lease_id, 1}).ok());
  EXPECT_EQ(counters().lookahead_used, 4u) << "k4 and k5 had arrived before their Get";
}

TEST_F(StoreHintTest, WithoutHintsAStrideOfLayersIsPredictedAndPromotedAhead) {
  Open(/*with_ssd=*/true);
  constexpr int kLayers = 10;
  for (int i = 0; i < kLayers; ++i) {
    Put(absl::StrCat("req.layer.", i), kMiB, store::Durability::kDurable, uint8_t(i + 1));
    ASSERT_TRUE(store_->Evict("", absl::StrCat("req.layer.", i)).ok());
  }
  // A model reads its layers one by one: after layer.0..2 the stride is known, and each Get
  // predicts the next layer, which comes up from SSD while this one is used.
  int from_ssd = 0;  // Gets that had to read the SSD
  for (int i = 0; i < kLayers; ++i) {
    const std::string key = absl::StrCat("req.layer.", i);
    if (i >= 3) {
      ASSERT_TRUE(Eventually([&] { return OnHost(key); })) << key << " was never promoted";
      store_->Quiesce();  // its promotion has reported back
    }
    const uint64_t read = store_->Stats().ssd.bytes_read;
    const uint64_t ahead = counters().lookahead_bytes;
    std::vector<std::string> k = {key};
    auto got = store_->Get(session_, "", k, store::WantTier::kHost);
    ASSERT_TRUE(got.ok());
    ASSERT_TRUE((*got)[0].status.ok()) << (*got)[0].status;
    EXPECT_EQ(store_->Address((*got)[0].info.location)[0], uint8_t(i + 1)) << key;
    ASSERT_TRUE(store_->Release(session_, {&(*got)[0].lease_id, 1}).ok());
    // The Get predicts the next layer at once, whose promotion may read the SSD meanwhile:
    // once it is done, what was read beyond the look-ahead's bytes is the Get's own.
    store_->Quiesce();
    from_ssd += store_->Stats().ssd.bytes_read - read != counters().lookahead_bytes - ahead;
  }
  const store::Counters c = counters();
  EXPECT_EQ(c.lookahead_predicted, uint64_t(kLayers - 3)) << "layer.3 .. layer.9";
  EXPECT_EQ(c.lookahead_used, uint64_t(kLayers - 3));
  EXPECT_EQ(c.lookahead_late, 0u);
  EXPECT_EQ(from_ssd, 3) << "only layer.0 .. layer.2 were read from SSD at Get time";
}

TEST_F(StoreHintTest, PredictionCanBeTurnedOff) {
  store::StoreOptions options;
  options.predict = false;
  Open(/*with_ssd=*/true, options);
  for (int i = 0; i < 5; ++i) {
    Put(absl::StrCat("layer.", i), kMiB, store::Durability::kDurable, 1);
    ASSERT_TRUE(store_->Evict("", absl::StrCat("layer.", i)).ok());
  }
  for (int i = 0; i < 5; ++i) {  // a stride that would predict layer.3 and layer.4
    std::vector<std::string> k = {absl::StrCat("layer.", i)};
    auto got = store_->Get(session_, "", k, store::WantTier::kHost);
    ASSERT_TRUE(got.ok() && (*got)[0].status.ok());
    ASSERT_TRUE(store_->Release(session_, {&(*got)[0].lease_id, 1}).ok());
  }
  store_->Quiesce();
  EXPECT_EQ(counters().lookahead_predicted, 0u);
  EXPECT_EQ(counters().lookahead_issued, 0u);
}

TEST_F(StoreHintTest, GuardedCopiesAreNotEvictedAndStaleHintsExpire) {
  Open(/*with_ssd=*/false);
  // 16 MiB of host: fourteen 1 MiB CACHE tensors; two of them hinted (on host: guarded only).
  for (int i = 0; i < 14; ++i) Put(absl::StrCat("c", i), kMiB, store::Durability::kCache, 1);
  const std::vector<std::string> hinted = {"c0", "c1"};
  ASSERT_TRUE(store_->Hint("", hinted, store::WantTier::kHost, absl::Seconds(10)).ok());
  EXPECT_EQ(counters().lookahead_issued, 0u) << "already on host: no move";
  // Room for 6 MiB more: LRU would take c0..c5; the guarded c0 and c1 stay.
  Put("big", 6 * kMiB, store::Durability::kCache, 2);
  EXPECT_TRUE(OnHost("c0"));
  EXPECT_TRUE(OnHost("c1"));
  EXPECT_FALSE(store_->Stat("", "c2").ok()) << "unguarded, least recently used: evicted";
  // The hints expire: guards go, and they are evictable again.
  clock_.Advance(absl::Seconds(11));
  store_->PumpLookAhead();
  EXPECT_EQ(counters().lookahead_expired, 2u);
  EXPECT_EQ(counters().lookahead_wasted, 0u) << "never moved: not a wasted prefetch";
  Put("big2", 8 * kMiB, store::Durability::kCache, 3);
  EXPECT_FALSE(store_->Stat("", "c0").ok()) << "no longer guarded";
}

TEST_F(StoreHintTest, BadHintsGetClearErrors) {
  Open(/*with_ssd=*/false);
  const std::vector<std::string> one = {"x"};
  EXPECT_EQ(store_->Hint("", one, store::WantTier::kSsd).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->Hint("", one, store::WantTier::kGpu).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(store_->Hint("", one, store::WantTier::kHost, absl::Hours(2)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->Hint("", one, store::WantTier::kHost, -absl::Seconds(1)).status().code(),
            absl::StatusCode::kInvalidArgument);
  const std::vector<std::string> bad = {"ok", std::string("a\0b", 3)};
  EXPECT_EQ(store_->Hint("", bad).status().code(), absl::StatusCode::kInvalidArgument);
  std::vector<std::string> many(store::Store::kMaxHintKeys + 1, "k");
  EXPECT_EQ(store_->Hint("", many).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(counters().lookahead_hints, 0u) << "a refused call queues nothing";
}

TEST_F(StoreHintTest, AHintStormCannotWedgeTheStoreOrLoseDurableTensors) {
  store::StoreOptions options;
  options.max_hints = 2'000;
  Open(/*with_ssd=*/true, options);
  for (int i = 0; i < 24; ++i) {
    Put(absl::StrCat("d", i), kMiB, store::Durability::kDurable, uint8_t(i + 1));
    ASSERT_TRUE(store_->Evict("", absl::StrCat("d", i)).ok());
  }
  for (int i = 0; i < 1'500; ++i) {
    Put(absl::StrCat("s", i), 64, store::Durability::kCache, 1);  // many small known keys
  }
  StartMigrator();  // as in the daemon: what the Gets bring up goes back down under pressure
  // 10^6 keys in calls of the maximum size: known ones, duplicates, unknown ones.
  std::vector<std::string> keys(store::Store::kMaxHintKeys);
  uint64_t accepted = 0, dropped = 0, sent = 0;
  for (int call = 0; sent < 1'000'000; ++call) {
    for (size_t i = 0; i < keys.size(); ++i) {
      const uint64_t n = sent + i;
      keys[i] = n % 3 == 0   ? absl::StrCat("d", n / 3 % 24)
                : n % 3 == 1 ? absl::StrCat("s", n / 3 % 1'500)
                             : absl::StrCat("unknown", n);
    }
    auto h = store_->Hint("", keys);
    ASSERT_TRUE(h.ok()) << h.status();
    accepted += h->accepted;
    dropped += h->dropped;
    sent += keys.size();
  }
  EXPECT_EQ(accepted, 24u + 1'500u) << "each known key once";
  EXPECT_EQ(dropped, 0u);
  // The store still serves at once, and every DURABLE tensor is intact.
  for (int i = 0; i < 24; ++i) {
    std::vector<std::string> k = {absl::StrCat("d", i)};
    auto got =
        store_->Get(session_, "", k, store::WantTier::kHost, absl::Now() + absl::Seconds(10));
    ASSERT_TRUE(got.ok());
    ASSERT_TRUE((*got)[0].status.ok()) << "d" << i << ": " << (*got)[0].status;
    EXPECT_EQ(store_->Address((*got)[0].info.location)[kMiB - 1], uint8_t(i + 1));
    ASSERT_TRUE(store_->Release(session_, {&(*got)[0].lease_id, 1}).ok());
  }
  store_->Quiesce();
  const store::StoreStats st = store_->Stats();
  EXPECT_EQ(st.counters.data_loss, 0u);
  EXPECT_EQ(st.counters.evictions, 0u) << "nothing lost: the host demotes to SSD";
  // A bounded queue: beyond max_hints new keys are dropped and counted.
  std::vector<std::string> more;
  for (int i = 0; i < 1'000; ++i) {
    Put(absl::StrCat("t", i), 64, store::Durability::kCache, 1);
    more.push_back(absl::StrCat("t", i));
  }
  auto h = store_->Hint("", more);
  ASSERT_TRUE(h.ok());
  EXPECT_GT(h->dropped, 0u);
  EXPECT_EQ(h->accepted, options.max_hints - 1'500u) << "the d keys were read: 1,500 queued";
  EXPECT_EQ(h->accepted + h->dropped, 1'000u);
}

}  // namespace
}  // namespace tensord
