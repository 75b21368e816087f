// Tenants: configuration, namespace ownership, peer identification, and a store whose host tier
// is partitioned per tenant (real shared memory, a real swap file) — placement, eviction that
// stays inside a tenant, per-tenant watermarks and quotas.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "common/random.h"
#include "common/shm_guard.h"
#include "common/shm_segment.h"
#include "daemon/config.h"
#include "daemon/io/io_engine.h"
#include "daemon/service/auth.h"
#include "daemon/store/store.h"
#include "daemon/store/tenants.h"
#include "daemon/tiers/host_tier.h"
#include "daemon/tiers/ssd_tier.h"

namespace tensord::store {
namespace {

constexpr uint64_t kMiB = 1 << 20;

TenantConfig Tenant(std::string name, uid_t uid, gid_t gid, std::vector<std::string> ns,
                    uint64_t host_bytes) {
  TenantConfig t;
  t.name = std::move(name);
  t.uids = {uid};
  t.gids = {gid};
  t.namespaces = std::move(ns);
  t.host_bytes = host_bytes;
  t.segment_group = getegid();  // a group this test may give segments to
  return t;
}

TEST(Tenants, NamespacesAreExactOrPrefixes) {
  EXPECT_TRUE(NamespaceMatches("kv", "kv"));
  EXPECT_FALSE(NamespaceMatches("kv", "kv2"));
  EXPECT_TRUE(NamespaceMatches("kv/*", "kv/a"));
  EXPECT_FALSE(NamespaceMatches("kv/*", "kv"));
  EXPECT_TRUE(NamespaceMatches("*", "anything"));
  Tenants t({Tenant("a", 1001, 2001, {"a", "a/*"}, kMiB), Tenant("b", 1002, 2002, {"b"}, kMiB)});
  EXPECT_EQ(t.OwnerOf("a/x"), 1);
  EXPECT_EQ(t.OwnerOf("b"), 2);
  EXPECT_EQ(t.OwnerOf("c"), kNoTenant);
  EXPECT_TRUE(t.Allows(1, "a"));
  EXPECT_FALSE(t.Allows(1, "b"));
  EXPECT_FALSE(t.Allows(2, "c"));         // nobody's namespace: not a tenant's either
  EXPECT_TRUE(t.Allows(kNoTenant, "b"));  // the operator
}

TEST(Tenants, PeersAreKnownByUidThenGroups) {
  Tenants t({Tenant("a", 1001, 2001, {"a"}, kMiB), Tenant("b", 1002, 2002, {"b"}, kMiB)});
  EXPECT_EQ(t.Identify(1001, 5, {}), 1);
  const gid_t groups[] = {7, 2002};
  EXPECT_EQ(t.Identify(4242, 5, groups), 2);  // a supplementary group
  EXPECT_EQ(t.Identify(1001, 2002, {}), 1);   // a listed uid wins over a group
  EXPECT_EQ(t.Identify(4242, 5, {}), std::nullopt);
  using service::Identity;
  service::PeerCredentials root{1, 0, 0, {}};
  EXPECT_EQ(service::IdentityOf(t, root).kind, Identity::Kind::kOperator);
  // The daemon's user is in every tenant's segment group; it stays the operator.
  const gid_t all_groups[] = {2001, 2002};
  service::PeerCredentials daemon_user{1, geteuid(), 2001, {all_groups[0], all_groups[1]}};
  if (geteuid() != 1001 && geteuid() != 1002) {
    EXPECT_EQ(service::IdentityOf(t, daemon_user).kind, Identity::Kind::kOperator);
  }
  service::PeerCredentials stranger{1, 4242, 4242, {}};
  EXPECT_EQ(service::IdentityOf(t, stranger).kind, Identity::Kind::kStranger);
  EXPECT_EQ(service::IdentityOf(Tenants(), stranger).kind, Identity::Kind::kOperator)
      << "without tenants every peer is the operator (the socket's mode is the gate)";
}

TEST(TenantConfig, ParsesAndValidates) {
  const std::string good = R"(
[host]
capacity = "64MiB"
[[tenant]]
name = "a"
uids = [1001, 0]
gids = [2001]
namespaces = ["a", "a.*"]
host_bytes = "16MiB"
ssd_bytes = "1GiB"
max_leases = 10
max_sessions = 2
segment_mode = "0640"
[[tenant]]
name = "b"
gids = [2002]
namespaces = ["b"]
host_bytes = "16MiB"
)";
  auto c = LoadConfigText(good, "t.toml");
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_EQ(c->tenants.size(), 2u);
  EXPECT_EQ(c->tenants[0].uids, (std::vector<uid_t>{1001, 0}));
  EXPECT_EQ(c->tenants[0].ssd_bytes, uint64_t{1} << 30);
  EXPECT_EQ(c->tenants[0].segment_group, 2001u);
  EXPECT_EQ(c->tenants[0].segment_mode, 0640u);
  EXPECT_EQ(c->tenants[1].segment_mode, 0660u);

  auto bad = [&](std::string from, std::string to, absl::string_view says) {
    std::string text = good;
    const size_t at = text.find(from);
    ASSERT_NE(at, std::string::npos) << from;
    text.replace(at, from.size(), to);
    auto r = LoadConfigText(text, "t.toml");
    ASSERT_FALSE(r.ok()) << "accepted: " << to;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_TRUE(absl::StrContains(r.status().message(), says)) << r.status();
  };
  bad(R"(namespaces = ["b"])", R"(namespaces = ["a.x"])", "overlap");
  bad(R"(gids = [2002])", R"(gids = [2001])", "gid 2001 is in tenants");
  bad(R"(host_bytes = "16MiB"
)",
      R"(host_bytes = "60MiB"
)",
      "more than host.capacity");
  bad(R"(name = "b")", R"(name = "a")", "two tenants are named");
  bad(R"(segment_mode = "0640")", R"(segment_mode = "0666")", "others no access");
  bad(R"(uids = [1001, 0])", R"(uids = ["no-such-user-here"])", "no user named");
  bad(R"(max_leases = 10)", R"(max_lease = 10)", "unknown or ill-typed key tenant.max_lease");
  bad(R"(namespaces = ["b"])", R"(namespaces = ["b/c"])", "namespace 'b/c'");
  bad(R"(segment_mode = "0640")", R"(segment_group = 2002)", "share segment group 2002");
  bad(R"(ssd_bytes = "1GiB")", R"(gpu_bytes = "1GiB")", "gpu_bytes must be 0");
}

// A store over a 24 MiB host tier: tenants a and b own 8 MiB each, the rest is shared; a swap
// file below.
class TenantStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::vector<TenantConfig> tenants = {Tenant("a", 1001, getegid(), {"a"}, 8 * kMiB),
                                         Tenant("b", 1002, 99999, {"b"}, 8 * kMiB)};
    tenants[0].ssd_bytes = 2 * kMiB;
    tenants[0].max_leases = 3;
    tenants[1].max_sessions = 1;
    HostTierConfig host;
    host.capacity = 24 * kMiB;
    host.prefault = false;
    for (const TenantConfig& t : tenants) {
      host.partitions.push_back({t.name, t.host_bytes, t.segment_group, 0660});
    }
    auto tier = tiers::HostTier::Create(host, "tensord.tenanttest." + RandomHex(4) + ".");
    ASSERT_TRUE(tier.ok()) << tier.status();
    host_ = *std::move(tier);
    path_ = ::testing::TempDir() + "/tensord_tenant." + RandomHex(4) + ".swap";
    tiers::SsdTierConfig sc;
    sc.files = {{path_, 64 * kMiB}};
    sc.engine.force_sync = true;
    auto ssd = tiers::SsdTier::Create(sc, io::MakeEngine(sc.engine));
    ASSERT_TRUE(ssd.ok()) << ssd.status();
    ssd_ = *std::move(ssd);
    StoreOptions options;
    options.high_watermark = 0.5;
    options.low_watermark = 0.25;
    options.pressure_wait = absl::Milliseconds(300);
    options.tenants = Tenants(std::move(tenants));
    store_ = std::make_unique<Store>(host_.get(), options, ssd_.get());
    a_ = *store_->OpenSession("a", 1);
    b_ = *store_->OpenSession("b", 2);
  }
  void TearDown() override {
    store_.reset();
    ssd_.reset();
    unlink(path_.c_str());
  }

  absl::StatusOr<TensorInfo> Put(const std::string& session, const std::string& ns,
                                 const std::string& key, uint64_t n, Durability d, uint8_t fill) {
    CreateParams p;
    p.ns = ns;
    p.key = key;
    p.dtype = DType::kUInt8;
    p.shape = {static_cast<int64_t>(n)};
    p.durability = d;
    auto info = store_->Create(session, p, absl::Now() + absl::Milliseconds(300));
    if (!info.ok()) return info.status();
    std::memset(store_->Address(info->location), fill, n);
    if (absl::Status st = store_->Seal(session, ns, key); !st.ok()) return st;
    return info;
  }
  const TenantStats& Of(const StoreStats& st, TenantId t) { return st.tenants[t]; }

  std::unique_ptr<tiers::HostTier> host_;
  std::unique_ptr<tiers::SsdTier> ssd_;
  std::unique_ptr<Store> store_;
  std::string path_, a_, b_;
};

TEST_F(TenantStoreTest, TensorsLiveInTheirTenantsSegment) {
  auto a = Put(a_, "a", "x", kMiB, Durability::kDurable, 1);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->pool, "tenant.a");
  EXPECT_EQ(host_->segments()[a->location.arena].tenant, 1);
  auto shared = Put(a_, "nobody", "y", kMiB, Durability::kDurable, 2);  // the store itself does
  ASSERT_TRUE(shared.ok());                                             // not check access
  EXPECT_EQ(host_->segments()[shared->location.arena].tenant, 0);
  const StoreStats st = store_->Stats();
  ASSERT_EQ(st.tenants.size(), 3u);
  EXPECT_EQ(Of(st, 1).name, "a");
  EXPECT_EQ(Of(st, 1).host_capacity_bytes, 8 * kMiB);
  EXPECT_EQ(Of(st, 1).host_used_bytes, kMiB);
  EXPECT_EQ(Of(st, 2).host_used_bytes, 0u);
  EXPECT_EQ(Of(st, 1).sessions, 1u);
}

TEST_F(TenantStoreTest, OneTenantsFloodEvictsOnlyItsOwnCacheTensors) {
  absl::Notification stop;
  std::thread migrator([&] { store_->RunMigrator(&stop); });  // as in the daemon
  for (int i = 0; i < 3; ++i) {  // below b's own high watermark: nothing of b has to move
    ASSERT_TRUE(Put(b_, "b", absl::StrCat("b", i), kMiB, Durability::kCache, 10 + i).ok());
  }
  for (int i = 0; i < 40; ++i) {  // 40 MiB of CACHE into a's 8 MiB
    ASSERT_TRUE(Put(a_, "a", absl::StrCat("a", i), kMiB, Durability::kCache, 1).ok()) << i;
  }
  for (int i = 0; i < 3; ++i) {
    auto s = store_->Stat("b", absl::StrCat("b", i));
    ASSERT_TRUE(s.ok()) << "b's tensor " << i << " is gone: " << s.status();
    EXPECT_TRUE(s->on_host);
    EXPECT_EQ(*static_cast<uint8_t*>(store_->Address(s->location)), 10 + i);
  }
  const StoreStats st = store_->Stats();
  EXPECT_GT(st.counters.evictions, 0u);
  EXPECT_LE(Of(st, 1).ssd_bytes, 2 * kMiB) << "a's swap quota";
  stop.Notify();
  migrator.join();
}

// A full SSD makes room for a tenant's demotions from that tenant's own CACHE copies only:
// b fills the swap file with its CACHE tensors and keeps demoting (its oldest go); the shared
// pool's DURABLE tensors then find no SSD room and their Create fails, b losing nothing to them.
TEST_F(TenantStoreTest, AFullSsdEvictsOnlyTheDemotingTenantsCacheCopies) {
  auto stop = std::make_unique<absl::Notification>();
  std::thread migrator([&, s = stop.get()] { store_->RunMigrator(s); });
  for (int i = 0; i < 80; ++i) {  // 80 MiB of CACHE through b's 8 MiB over a 64 MiB SSD
    auto st = Put(b_, "b", absl::StrCat("b", i), kMiB, Durability::kCache, uint8_t(i));
    ASSERT_TRUE(st.ok()) << i << " " << st.status();
  }
  // b's own demotions run to their end (below its low watermark) before anything is counted.
  stop->Notify();
  migrator.join();
  while (store_->DemoteOnce() > 0) {
  }
  stop = std::make_unique<absl::Notification>();
  migrator = std::thread([&, s = stop.get()] { store_->RunMigrator(s); });
  const auto present = [&] {
    int n = 0;
    for (int i = 0; i < 80; ++i) n += store_->Stat("b", absl::StrCat("b", i)).ok();
    return n;
  };
  const int b_before = present();
  EXPECT_GE(b_before, 60) << "b's own demotions evicted only what they needed";
  EXPECT_GT(store_->Stats().counters.ssd_evictions, 0u);
  const std::string shared = *store_->OpenSession("shared");
  absl::Status failed;
  for (int i = 0; i < 24 && failed.ok(); ++i) {
    failed = Put(shared, "nobody", absl::StrCat("s", i), kMiB, Durability::kDurable, 7).status();
  }
  EXPECT_EQ(failed.code(), absl::StatusCode::kResourceExhausted) << failed;
  EXPECT_EQ(present(), b_before) << "b's SSD copies do not make room for others";
  stop->Notify();
  migrator.join();
}

TEST_F(TenantStoreTest, WatermarksAndSwapQuotaHoldPerTenant) {
  // b fills 7 of its 8 MiB (above its high watermark); a holds 1 MiB. Only b demotes.
  for (int i = 0; i < 7; ++i) {
    ASSERT_TRUE(Put(b_, "b", absl::StrCat("b", i), kMiB, Durability::kDurable, 1).ok());
  }
  ASSERT_TRUE(Put(a_, "a", "a0", kMiB, Durability::kDurable, 2).ok());
  while (store_->DemoteOnce() > 0) {
  }
  StoreStats st = store_->Stats();
  EXPECT_LE(Of(st, 2).host_used_bytes, 2 * kMiB);
  EXPECT_GE(Of(st, 2).ssd_bytes, 5 * kMiB);
  EXPECT_TRUE(store_->Stat("a", "a0")->on_host) << "a is below its watermark: nothing of a moves";
  // a fills its memory: it may demote only 2 MiB (its swap quota); the rest stays.
  for (int i = 1; i < 8; ++i) {
    ASSERT_TRUE(Put(a_, "a", absl::StrCat("a", i), kMiB, Durability::kDurable, 2).ok()) << i;
  }
  while (store_->DemoteOnce() > 0) {
  }
  st = store_->Stats();
  EXPECT_EQ(Of(st, 1).ssd_bytes, 2 * kMiB);
  EXPECT_EQ(Of(st, 1).host_used_bytes, 6 * kMiB);
  // Full, with its swap quota spent: a DURABLE Create of a fails, not evicting anyone else.
  auto more = Put(a_, "a", "a8", 3 * kMiB, Durability::kDurable, 2);
  EXPECT_EQ(more.status().code(), absl::StatusCode::kResourceExhausted) << more.status();
  EXPECT_TRUE(Put(b_, "b", "b-more", 3 * kMiB, Durability::kDurable, 3).ok());
}

TEST_F(TenantStoreTest, LeaseAndSessionQuotas) {
  ASSERT_TRUE(Put(a_, "a", "x", 4096, Durability::kDurable, 1).ok());
  std::vector<std::string> keys{"x"};
  std::vector<uint64_t> leases;
  for (int i = 0; i < 3; ++i) {
    auto r = store_->Get(a_, "a", keys, WantTier::kAny);
    ASSERT_TRUE(r.ok() && (*r)[0].status.ok());
    leases.push_back((*r)[0].lease_id);
  }
  auto r = store_->Get(a_, "a", keys, WantTier::kAny);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ((*r)[0].status.code(), absl::StatusCode::kResourceExhausted);
  ASSERT_TRUE(store_->Release(a_, {leases.data(), 1}).ok());
  r = store_->Get(a_, "a", keys, WantTier::kAny);
  EXPECT_TRUE((*r)[0].status.ok()) << "a released lease no longer counts";
  EXPECT_EQ(store_->OpenSession("b2", 2).status().code(), absl::StatusCode::kResourceExhausted);
  store_->CloseSession(b_);
  EXPECT_TRUE(store_->OpenSession("b2", 2).ok()) << "a closed session no longer counts";
  EXPECT_GE(store_->Stats().tenants[1].quota_rejections, 1u);
}

}  // namespace
}  // namespace tensord::store

namespace tensord {
namespace {

// A client that may write a segment may also truncate it; the daemon's next touch must neither
// crash it nor see a short file.
TEST(ShmGuard, ATruncatedSegmentIsRestoredNotFatal) {
  shm_guard::Install();
  const std::string name = "tensord.guardtest." + RandomHex(8);
  auto seg = ShmSegment::Create(name, 4 << 20, 0600, /*prefault=*/true);
  ASSERT_TRUE(seg.ok()) << seg.status();
  std::memset(seg->data(), 0xab, seg->size());
  const uint64_t before = shm_guard::Repairs();
  {
    const int fd = ::open(("/dev/shm/" + name).c_str(), O_RDWR);  // the hostile client
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::ftruncate(fd, 4096), 0);
    ::close(fd);
  }
  volatile uint8_t* p = seg->data();
  p[3 << 20] = 7;  // past the new end: SIGBUS without the guard
  EXPECT_EQ(p[3 << 20], 7);
  EXPECT_EQ(p[0], 0xab) << "bytes before the cut are kept";
  EXPECT_EQ(p[2 << 20], 0) << "bytes after it are lost, as zeros";
  EXPECT_GT(shm_guard::Repairs(), before);
  struct stat st;
  ASSERT_EQ(::stat(("/dev/shm/" + name).c_str(), &st), 0);
  EXPECT_EQ(static_cast<uint64_t>(st.st_size), seg->size());
}

}  // namespace
}  // namespace tensord
