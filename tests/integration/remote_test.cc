// The remote tier end to end: two real daemons (separate run directories, standing in for two
// machines) and one real redis-server started by the test. Daemon A's client stores, daemon B's
// client gets the same bytes; Redis killed and restarted under them; a wrong password; a value
// damaged in Redis is a miss (CACHE) or DATA_LOSS (DURABLE), never wrong bytes.
#include <gtest/gtest.h>
#include <hiredis/hiredis.h>

#include <chrono>
#include <cstring>
#include <map>
#include <thread>

#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "tensord/client.h"
#include "tests/integration/harness.h"
#include "tests/unit/redis_server.h"

namespace tensord::testing {
namespace {

constexpr uint64_t kMiB = 1 << 20;

// Runs it_client; returns {exit code, first stdout line}.
std::pair<int, std::string> It(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {ClientBinary()};
  argv.insert(argv.end(), args.begin(), args.end());
  Process p(argv, /*capture_stdout=*/true);
  std::string line = p.ReadLine();
  return {p.Wait(), line};
}

// grpc.health.v1's answer for one of the daemon's services.
bool Serving(const Daemon& d, const std::string& service) {
  auto channel = grpc::CreateChannel("unix:" + d.socket(), grpc::InsecureChannelCredentials());
  auto health = grpc::health::v1::Health::NewStub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(service);
  grpc::health::v1::HealthCheckResponse response;
  return health->Check(&ctx, request, &response).ok() &&
         response.status() == grpc::health::v1::HealthCheckResponse::SERVING;
}

bool Eventually(const std::function<bool()>& cond,
                std::chrono::seconds limit = std::chrono::seconds(10)) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < end) {
    if (cond()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return cond();
}

std::vector<std::string> RemoteArgs(const RedisServer& r, const std::string& instance,
                                    std::vector<std::string> more = {}) {
  std::vector<std::string> args = {
      "--host-capacity",     "256MiB", "--remote-addresses",         r.address(),
      "--remote-instance",   instance, "--remote-shared-namespaces", "*",
      "--remote-timeout-ms", "500"};
  args.insert(args.end(), more.begin(), more.end());
  return args;
}

RemoteStats RemoteOf(const Daemon& d) {
  ClientOptions opts;
  opts.socket_path = d.socket();
  opts.client_name = "remote_test";
  auto c = Client::Connect(opts);
  EXPECT_TRUE(c.ok()) << c.status();
  if (!c.ok()) return {};
  auto s = (*c)->GetStats();
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? s->remote : RemoteStats{};
}

// A raw Redis command from the test itself.
long long RedisInt(const RedisServer& r, const char* fmt, const char* arg = nullptr) {
  redisContext* c = redisConnect("127.0.0.1", r.port());
  auto* reply = static_cast<redisReply*>(redisCommand(c, fmt, arg));
  long long v = reply != nullptr && reply->type == REDIS_REPLY_INTEGER ? reply->integer : -1;
  if (reply != nullptr) freeReplyObject(reply);
  redisFree(c);
  return v;
}

class RemoteTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!HaveRedisServer())
      GTEST_SKIP() << "redis-server is not installed (apt install redis-server)";
    redis_ = std::make_unique<RedisServer>();
    ASSERT_TRUE(redis_->ready());
  }
  std::unique_ptr<RedisServer> redis_;
};

// Puts n CACHE tensors of 20 MiB, "block.0" .. (key, hash) through daemon `a`; with
// `published`, each is in Redis before the next needs its room.
void PutBlocks(const Daemon& a, int n, bool published,
               std::vector<std::pair<std::string, std::string>>* put) {
  for (int i = 0; i < n; ++i) {
    const std::string key = "block." + std::to_string(i);
    auto [rc, hash] =
        It({"put", a.socket(), key, std::to_string(20 * kMiB), std::to_string(i), "cache"});
    ASSERT_EQ(rc, 0) << key;
    put->emplace_back(key, hash);
    if (published) {
      EXPECT_TRUE(Eventually([&] { return RemoteOf(a).puts == static_cast<uint64_t>(i + 1); }));
    }
  }
}

TEST_F(RemoteTest, ATensorStoredThroughOneDaemonIsServedByAnother) {
  Daemon a(RemoteArgs(*redis_, "machine-a"));
  Daemon b(RemoteArgs(*redis_, "machine-b"));
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_TRUE(Eventually([&] { return Serving(a, "tensord.remote"); }));
  for (uint64_t n : {uint64_t{1000}, kMiB, 16 * kMiB + 3}) {
    const std::string key = "kv.block." + std::to_string(n);
    auto [rc, hash] = It({"put", a.socket(), key, std::to_string(n), std::to_string(n), "cache"});
    ASSERT_EQ(rc, 0);
    // Published after the Seal, off the client's path: B finds it once A wrote it.
    EXPECT_TRUE(Eventually([&, hash = hash] {
      return It({"verify", b.socket(), key, hash}).first == 0;
    })) << key;
    EXPECT_EQ(It({"verify", b.socket(), key, hash}).first, 0) << "now from B's own host copy";
  }
  // DURABLE tensors stay local unless remote.publish_durable says otherwise.
  auto [rc, hash] = It({"put", a.socket(), "weights", "4096", "1", "durable"});
  ASSERT_EQ(rc, 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_NE(It({"verify", b.socket(), "weights", hash}).first, 0);
  EXPECT_EQ(It({"verify", a.socket(), "weights", hash}).first, 0);

  const RemoteStats sa = RemoteOf(a), sb = RemoteOf(b);
  EXPECT_TRUE(sa.present && sb.present);
  EXPECT_EQ(sa.puts, 3u);
  EXPECT_EQ(sa.put_bytes, 1000 + kMiB + 16 * kMiB + 3);
  EXPECT_EQ(sb.hits, 3u);
  EXPECT_GE(sb.misses, 1u);  // "weights"
  EXPECT_EQ(sb.get_bytes, sa.put_bytes);
  EXPECT_FALSE(sb.degraded);
  EXPECT_EQ(sb.addresses, redis_->address());
  const CommandResult ctl =
      RunCommand(std::string(TENSORCTL_BIN) + " --socket " + b.socket() + " stats");
  EXPECT_NE(ctl.out.find("REMOTE    redis " + redis_->address()), std::string::npos) << ctl.out;
}

TEST_F(RemoteTest, EvictedCacheTensorsComeBackFromRedis) {
  // No SSD tier, a host tier too small for what is put, namespaces private to the daemon: host
  // eviction leaves CACHE tensors to their Redis copies instead of dropping them.
  Daemon a({"--host-capacity", "64MiB", "--remote-addresses", redis_->address(),
            "--remote-instance", "machine-a", "--remote-timeout-ms", "500"});
  ASSERT_TRUE(a.ok());
  std::vector<std::pair<std::string, std::string>> put;
  ASSERT_NO_FATAL_FAILURE(PutBlocks(a, 5, /*published=*/true, &put));
  for (const auto& [key, hash] : put)
    EXPECT_EQ(It({"verify", a.socket(), key, hash}).first, 0) << key;
  ClientOptions opts;
  opts.socket_path = a.socket();
  auto c = Client::Connect(opts);
  ASSERT_TRUE(c.ok());
  auto st = (*c)->GetStats();
  ASSERT_TRUE(st.ok());
  EXPECT_GE(st->counters["remote_demotions"], 2u);
  EXPECT_EQ(st->counters["evictions"], 0u) << "nothing dropped while Redis holds it";
  EXPECT_GE(RemoteOf(a).gets, 2u);
}

TEST_F(RemoteTest, AFullSsdLeavesItsOldestCacheTensorsToRedis) {
  // Host and SSD tiers both too small for what is put: the SSD tier makes room for newer
  // demotions by letting its oldest CACHE copies go, and those live on in Redis.
  const std::string dir = MakeTempDir();
  Daemon a({"--host-capacity", "64MiB", "--swap-file", dir + "/swap", "--swap-size", "64MiB",
            "--remote-addresses", redis_->address(), "--remote-instance", "machine-a",
            "--remote-timeout-ms", "500"});
  ASSERT_TRUE(a.ok());
  std::vector<std::pair<std::string, std::string>> put;
  ASSERT_NO_FATAL_FAILURE(PutBlocks(a, 10, /*published=*/true, &put));
  std::unique_ptr<Client> c = ConnectClient(a, "remote_test");
  ASSERT_NE(c, nullptr);
  // The first block went to the SSD first, and left it for a newer one.
  auto info = c->Stat("block.0");
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->location.tier, Tier::kRemote);
  auto st = c->GetStats();
  ASSERT_TRUE(st.ok());
  EXPECT_GT(st->counters["demotions"], 0u) << "the SSD tier was used";
  EXPECT_GE(st->counters["remote_demotions"], 1u);
  EXPECT_EQ(st->counters["evictions"], 0u) << "nothing dropped while Redis holds it";
  EXPECT_EQ(st->counters["ssd_evictions"], 0u);
  for (const auto& [key, hash] : put) {
    EXPECT_EQ(It({"verify", a.socket(), key, hash}).first, 0) << key;
  }
}

TEST_F(RemoteTest, WithoutWriteThroughAFullSsdMovesItsOldestCacheTensorsToRedis) {
  // Nothing is published when sealed: Redis is only the tier below the SSD. What the full SSD
  // lets go moves there (as it is encoded on the SSD) instead of being dropped.
  const std::string dir = MakeTempDir();
  Daemon a({"--host-capacity", "64MiB", "--swap-file", dir + "/swap", "--swap-size", "64MiB",
            "--remote-addresses", redis_->address(), "--remote-instance", "machine-a",
            "--remote-timeout-ms", "500", "--set", "remote.publish_cache=false"});
  ASSERT_TRUE(a.ok());
  std::vector<std::pair<std::string, std::string>> put;
  ASSERT_NO_FATAL_FAILURE(PutBlocks(a, 10, /*published=*/false, &put));
  std::unique_ptr<Client> c = ConnectClient(a, "remote_test");
  ASSERT_NE(c, nullptr);
  EXPECT_TRUE(Eventually([&] {
    auto info = c->Stat("block.0");
    return info.ok() && info->location.tier == Tier::kRemote;
  })) << "the oldest block left the SSD for Redis";
  auto st = c->GetStats();
  ASSERT_TRUE(st.ok());
  EXPECT_GE(st->counters["remote_demotions"], 1u);
  EXPECT_GE(st->counters["remote_publishes"], 1u);
  EXPECT_EQ(st->counters["ssd_evictions"], 0u) << "Redis took what the SSD let go";
  EXPECT_EQ(st->counters["evictions"], 0u);
  EXPECT_LT(st->remote.puts, 10u) << "only what left the SSD went to Redis";
  for (const auto& [key, hash] : put) {
    EXPECT_EQ(It({"verify", a.socket(), key, hash}).first, 0) << key;
  }
  // A second daemon finds what the first moved there only if it is shared: machine-a's
  // namespace is private, so the bytes stay this daemon's.
  Daemon b(RemoteArgs(*redis_, "machine-b"));
  ASSERT_TRUE(b.ok());
  EXPECT_NE(It({"verify", b.socket(), "block.0", put[0].second}).first, 0);
}

TEST_F(RemoteTest, WithoutAnSsdHostRoomMovesUnpublishedCacheTensorsToRedis) {
  // No SSD tier and nothing published when sealed: Redis is the tier below host memory. The
  // tensors host room is made from move there, and come back from there, instead of being
  // dropped: ahead of need (the watermarks), or when a Create needs the room (the high
  // watermark at 100%: only then). With remote.demote_cache = false they are dropped as before.
  const std::vector<std::string> args = {"--host-capacity",
                                         "64MiB",
                                         "--remote-addresses",
                                         redis_->address(),
                                         "--remote-instance",
                                         "machine-a",
                                         "--remote-timeout-ms",
                                         "500",
                                         "--set",
                                         "remote.publish_cache=false"};
  for (const char* high : {"0.9", "1"}) {
    SCOPED_TRACE(std::string("ssd.high_watermark=") + high);
    std::vector<std::string> with = args;
    with.insert(with.end(), {"--set", std::string("ssd.high_watermark=") + high});
    with[5] = std::string(high) == "1" ? "machine-a-demand" : "machine-a-ahead";  // own keys
    Daemon a(with);
    ASSERT_TRUE(a.ok());
    std::vector<std::pair<std::string, std::string>> put;
    ASSERT_NO_FATAL_FAILURE(PutBlocks(a, 6, /*published=*/false, &put));
    std::unique_ptr<Client> c = ConnectClient(a, "remote_test");
    ASSERT_NE(c, nullptr);
    auto info = c->Stat("block.0");
    ASSERT_TRUE(info.ok()) << info.status();
    EXPECT_EQ(info->location.tier, Tier::kRemote);
    auto st = c->GetStats();
    ASSERT_TRUE(st.ok());
    EXPECT_GE(st->counters["remote_demotions"], 3u);
    EXPECT_EQ(st->counters["evictions"], 0u) << "nothing dropped while Redis takes it";
    EXPECT_GE(st->remote.puts, 3u);
    EXPECT_LT(st->remote.puts, 6u) << "only what host room was made from went to Redis";
    if (std::string(high) == "1") {
      EXPECT_GE(st->counters["pressure_waits"], 1u) << "a Create waited for its room's move";
    }
    for (const auto& [key, hash] : put) {
      EXPECT_EQ(It({"verify", a.socket(), key, hash}).first, 0) << key;
    }
  }
  // Another instance name: the first daemons' private keys are still in Redis.
  std::vector<std::string> dropping = args;
  dropping[5] = "machine-c";
  dropping.insert(dropping.end(), {"--set", "remote.demote_cache=false"});
  Daemon a(dropping);
  ASSERT_TRUE(a.ok());
  std::vector<std::pair<std::string, std::string>> put;
  ASSERT_NO_FATAL_FAILURE(PutBlocks(a, 6, /*published=*/false, &put));
  auto st = ConnectClient(a, "remote_test")->GetStats();
  ASSERT_TRUE(st.ok());
  EXPECT_GE(st->counters["evictions"], 3u);
  EXPECT_EQ(st->counters["remote_demotions"], 0u);
  EXPECT_EQ(st->remote.puts, 0u);
  EXPECT_NE(It({"verify", a.socket(), "block.0", put[0].second}).first, 0) << "dropped";
}

TEST_F(RemoteTest, APrefetchBringsAnotherDaemonsTensorInBeforeItsGet) {
  Daemon a(RemoteArgs(*redis_, "machine-a"));
  Daemon b(RemoteArgs(*redis_, "machine-b"));
  ASSERT_TRUE(a.ok() && b.ok());
  auto [rc, hash] = It({"put", a.socket(), "next.block", std::to_string(4 * kMiB), "8", "cache"});
  ASSERT_EQ(rc, 0);
  ASSERT_TRUE(Eventually([&] { return RemoteOf(a).puts == 1; }));
  std::unique_ptr<Client> cb = ConnectClient(b, "remote_test");
  ASSERT_NE(cb, nullptr);
  const std::vector<std::string> keys = {"next.block", "nowhere"};
  auto pre = cb->Prefetch(keys);
  ASSERT_TRUE(pre.ok()) << pre.status();
  EXPECT_TRUE((*pre)[0].status.ok()) << (*pre)[0].status;
  EXPECT_TRUE((*pre)[0].moved);
  EXPECT_EQ((*pre)[1].status.code(), absl::StatusCode::kNotFound) << (*pre)[1].status;
  const RemoteStats before = RemoteOf(b);
  EXPECT_EQ(before.gets, 1u);
  EXPECT_EQ(before.lookups, 0u) << "lookups count Gets' lookups, not Prefetches'";
  // The Get finds it on B's host tier: no Redis traffic at Get time.
  EXPECT_EQ(It({"verify", b.socket(), "next.block", hash}).first, 0);
  const RemoteStats after = RemoteOf(b);
  EXPECT_EQ(after.gets, before.gets);
  EXPECT_EQ(after.lookups, before.lookups);
  auto st = cb->GetStats();
  ASSERT_TRUE(st.ok());
  EXPECT_GE(st->counters["prefetches"], 1u);
}

TEST_F(RemoteTest, AHintBringsAnotherDaemonsTensorInAndQueuesIt) {
  Daemon a(RemoteArgs(*redis_, "machine-a"));
  Daemon b(RemoteArgs(*redis_, "machine-b"));
  ASSERT_TRUE(a.ok() && b.ok());
  auto [rc, hash] = It({"put", a.socket(), "next.block", std::to_string(4 * kMiB), "9", "cache"});
  ASSERT_EQ(rc, 0);
  ASSERT_TRUE(Eventually([&] { return RemoteOf(a).puts == 1; }));
  std::unique_ptr<Client> cb = ConnectClient(b, "remote_test");
  ASSERT_NE(cb, nullptr);
  const std::vector<std::string> keys = {"next.block", "nowhere"};
  auto h = cb->Hint(keys);
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_EQ(h->remote, 2u) << "both are looked up in Redis";
  EXPECT_EQ(h->unknown, 0u);
  std::map<std::string, uint64_t> counters;
  EXPECT_TRUE(Eventually([&] {
    auto st = cb->GetStats();
    if (st.ok()) counters = st->counters;
    return counters["lookahead_remote_found"] + counters["lookahead_remote_missed"] == 2;
  }));
  EXPECT_EQ(counters["lookahead_remote_found"], 1u);
  EXPECT_EQ(counters["lookahead_remote_missed"], 1u);
  EXPECT_EQ(counters["lookahead_hints"], 1u) << "what was found is queued as hinted";
  // The look-ahead brings it up (within its share of the host tier) ...
  EXPECT_TRUE(Eventually([&] {
    auto info = cb->Stat("next.block");
    return info.ok() && info->location.tier == Tier::kHost;
  }));
  // ... and the Get finds it there: no Redis traffic at Get time, and the hint is used.
  const RemoteStats before = RemoteOf(b);
  EXPECT_EQ(It({"verify", b.socket(), "next.block", hash}).first, 0);
  EXPECT_EQ(RemoteOf(b).gets, before.gets);
  auto st = cb->GetStats();
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->counters["lookahead_used"], 1u);
  EXPECT_EQ(st->counters["lookahead_wasted"], 0u);
}

TEST_F(RemoteTest, AKeyThatExpiredHereServesTheVersionRedisStillHolds) {
  // A's version of "k" has a TTL; B then publishes its own "k", without one, over it in Redis.
  // Across A's expiry (before and after its reaper retires it), A's Gets answer A's bytes,
  // B's bytes or NOT_FOUND, never an internal error, and then B's.
  Daemon a(RemoteArgs(*redis_, "machine-a"));
  Daemon b(RemoteArgs(*redis_, "machine-b"));
  ASSERT_TRUE(a.ok() && b.ok());
  std::unique_ptr<Client> ca = ConnectClient(a, "remote_test");
  std::unique_ptr<Client> cb = ConnectClient(b, "remote_test");
  ASSERT_TRUE(ca != nullptr && cb != nullptr);
  const auto put = [](Client& c, uint8_t fill, int64_t ttl_ms) {
    CreateOptions opts;
    opts.durability = Durability::kCache;
    opts.ttl_ms = ttl_ms;
    auto t = c.Create("k", DType::kUInt8, {4096}, opts);
    ASSERT_TRUE(t.ok()) << t.status();
    std::memset(t->data(), fill, 4096);
    ASSERT_TRUE(t->Seal().ok());
  };
  ASSERT_NO_FATAL_FAILURE(put(*ca, 1, 1000));
  ASSERT_TRUE(Eventually([&] { return RemoteOf(a).puts == 1; }));
  ASSERT_NO_FATAL_FAILURE(put(*cb, 2, 0));
  ASSERT_TRUE(Eventually([&] { return RemoteOf(b).puts == 1; }));
  // Gets every 2 ms until B's version is served (the reaper retires expired tensors every
  // 100 ms: the Gets in between find A's expired one still in the table).
  bool seen_b = false;
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (!seen_b && std::chrono::steady_clock::now() < end) {
    auto lease = ca->Get("k", Tier::kHost);
    if (lease.ok()) {
      const uint8_t v = lease->data_as<uint8_t>()[0];
      EXPECT_TRUE(v == 1 || v == 2) << int(v);
      seen_b = v == 2;
    } else {
      EXPECT_EQ(lease.status().code(), absl::StatusCode::kNotFound) << lease.status();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  EXPECT_TRUE(seen_b) << "after A's version expired, B's is served";
}

TEST_F(RemoteTest, RedisKilledLeavesTheLocalTiersServingAndItsReturnResumes) {
  Daemon a(RemoteArgs(*redis_, "machine-a"));
  Daemon b(RemoteArgs(*redis_, "machine-b"));
  ASSERT_TRUE(a.ok() && b.ok());
  auto [rc, hash] = It({"put", a.socket(), "before", std::to_string(kMiB), "3", "cache"});
  ASSERT_EQ(rc, 0);
  redis_->Stop();
  EXPECT_TRUE(Eventually([&] { return !Serving(a, "tensord.remote"); }));
  EXPECT_TRUE(Serving(a, "tensord.v1.Tensord"));
  // The local tiers keep serving, at local speed: no call waits for the dead Redis.
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(It({"verify", a.socket(), "before", hash}).first, 0);
  auto [rc2, hash2] = It({"put", a.socket(), "during", std::to_string(kMiB), "4", "cache"});
  EXPECT_EQ(rc2, 0);
  EXPECT_EQ(It({"verify", a.socket(), "during", hash2}).first, 0);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
  // B misses (Redis is away), cleanly.
  EXPECT_NE(It({"verify", b.socket(), "during", hash2}).first, 0);
  const RemoteStats down = RemoteOf(a);
  EXPECT_TRUE(down.degraded);
  EXPECT_GE(down.degradations, 1u);
  EXPECT_FALSE(down.last_error.empty());

  redis_->Start();  // empty: a Redis that lost its data
  ASSERT_TRUE(redis_->ready());
  EXPECT_TRUE(
      Eventually([&] { return Serving(a, "tensord.remote") && Serving(b, "tensord.remote"); }));
  auto [rc3, hash3] = It({"put", a.socket(), "after", std::to_string(kMiB), "5", "cache"});
  ASSERT_EQ(rc3, 0);
  EXPECT_TRUE(Eventually([&, h = hash3] {
    return It({"verify", b.socket(), "after", h}).first == 0;
  }));
}

std::unique_ptr<Client> Connect(const Daemon& d) { return ConnectClient(d, "remote_test"); }

TEST_F(RemoteTest, StatAndDeleteThroughADaemonThatNeverSawTheTensorReachRedis) {
  Daemon a(RemoteArgs(*redis_, "machine-a"));
  Daemon b(RemoteArgs(*redis_, "machine-b"));
  ASSERT_TRUE(a.ok() && b.ok());
  auto [rc, hash] = It({"put", a.socket(), "theirs", std::to_string(kMiB), "6", "cache"});
  ASSERT_EQ(rc, 0);
  ASSERT_TRUE(Eventually([&] { return RemoteOf(a).puts == 1; }));
  std::unique_ptr<Client> cb = Connect(b);
  ASSERT_NE(cb, nullptr);
  // B has never seen it: Stat says where it is, and leaves it there.
  auto info = cb->Stat("theirs");
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->location.tier, Tier::kRemote);
  EXPECT_EQ(info->nbytes, kMiB);
  EXPECT_EQ(info->remote_stored_bytes, kMiB);
  EXPECT_EQ(info->durability, Durability::kCache);
  EXPECT_EQ(RemoteOf(b).gets, 0u) << "a Stat reads the header only";
  EXPECT_EQ(RemoteOf(b).lookups, 0u) << "lookups and hits count Gets' lookups, not Stats'";
  const CommandResult ctl =
      RunCommand(std::string(TENSORCTL_BIN) + " --socket " + b.socket() + " stat theirs");
  EXPECT_NE(ctl.out.find("location   remote"), std::string::npos) << ctl.out;
  // B deletes it: gone from Redis for everyone (A keeps its own host copy until it lets go).
  EXPECT_TRUE(cb->Delete("theirs").ok());
  EXPECT_EQ(cb->Stat("theirs").status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(It({"verify", b.socket(), "theirs", hash}).first, 0);
  EXPECT_EQ(cb->Delete("theirs").code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(RedisInt(*redis_, "DBSIZE"), 0);
  auto st = cb->GetStats();
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->counters["remote_deletes"], 1u);
  // Redis hung: a key not held here can be neither found nor deleted; Delete says so.
  redis_->Pause();
  EXPECT_TRUE(Eventually([&] { return !Serving(b, "tensord.remote"); }));
  EXPECT_EQ(cb->Delete("never.seen").code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(cb->Stat("never.seen").status().code(), absl::StatusCode::kNotFound);
  redis_->Resume();
}

TEST_F(RemoteTest, ATensorDeletedWhileRedisHangsDoesNotComeBack) {
  Daemon a(RemoteArgs(*redis_, "machine-a"));
  Daemon b(RemoteArgs(*redis_, "machine-b"));
  ASSERT_TRUE(a.ok() && b.ok());
  auto [rc, hash] = It({"put", a.socket(), "gone", std::to_string(kMiB), "7", "cache"});
  ASSERT_EQ(rc, 0);
  ASSERT_TRUE(Eventually([&] { return RemoteOf(a).puts == 1; }));
  std::unique_ptr<Client> ca = Connect(a);
  ASSERT_NE(ca, nullptr);
  redis_->Pause();  // hung, its data intact
  // Degraded first, so that the delete is only queued (a command sent to the hung Redis might
  // still run when it wakes): only the replay can delete it.
  ASSERT_TRUE(Eventually([&] { return !Serving(a, "tensord.remote"); }));
  EXPECT_TRUE(ca->Delete("gone").ok()) << "the local delete does not wait for Redis";
  EXPECT_TRUE(Eventually([&] { return RemoteOf(a).pending_deletes == 1; }));
  redis_->Resume();
  EXPECT_TRUE(Eventually([&] {
    const RemoteStats s = RemoteOf(a);
    return !s.degraded && s.pending_deletes == 0 && s.deletes_replayed == 1;
  }));
  EXPECT_TRUE(Eventually([&] { return Serving(b, "tensord.remote"); }));
  EXPECT_NE(It({"verify", b.socket(), "gone", hash}).first, 0)
      << "deleted while Redis hung, and back from Redis after all";
  EXPECT_EQ(RedisInt(*redis_, "DBSIZE"), 0);
}

TEST_F(RemoteTest, APoolClassSaysWhetherItsTensorsArePublished) {
  // Blocks of 1 MiB stay on this machine whatever their durability; blocks of 2 MiB are
  // published, DURABLE ones included (the [remote] defaults publish CACHE tensors only).
  const std::string dir = MakeTempDir();
  ASSERT_EQ(RunCommand("printf '[[host.pool]]\\nname = \"local\"\\nblock_size = \"1MiB\"\\n"
                       "count = 8\\nremote = \"never\"\\n[[host.pool]]\\nname = \"shared\"\\n"
                       "block_size = \"2MiB\"\\ncount = 8\\nremote = \"publish\"\\n' > " +
                       dir + "/tensord.toml")
                .rc,
            0);
  Daemon a(RemoteArgs(*redis_, "machine-a", {"--config", dir + "/tensord.toml"}));
  Daemon b(RemoteArgs(*redis_, "machine-b"));
  ASSERT_TRUE(a.ok() && b.ok());
  auto [rc1, h1] = It({"put", a.socket(), "stays", std::to_string(kMiB), "8", "cache"});
  auto [rc2, h2] = It({"put", a.socket(), "goes", std::to_string(2 * kMiB), "9", "durable"});
  ASSERT_EQ(rc1, 0);
  ASSERT_EQ(rc2, 0);
  EXPECT_TRUE(Eventually([&, h = h2] { return It({"verify", b.socket(), "goes", h}).first == 0; }));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_NE(It({"verify", b.socket(), "stays", h1}).first, 0);
  EXPECT_EQ(RemoteOf(a).puts, 1u);
}

TEST_F(RemoteTest, AWrongPasswordLeavesTheRemoteTierDownAndTheDaemonUp) {
  redis_.reset();
  RedisServer secured({"--requirepass", "right-one"});
  ASSERT_TRUE(secured.ready());
  const std::string dir = MakeTempDir();
  const std::string file = dir + "/redis.pass";
  ASSERT_EQ(RunCommand("umask 077 && echo wrong-one > " + file).rc, 0);
  Daemon a(RemoteArgs(secured, "machine-a", {"--remote-password-file", file}));
  ASSERT_TRUE(a.ok());
  EXPECT_FALSE(Serving(a, "tensord.remote"));
  auto [rc, hash] = It({"put", a.socket(), "local", "4096", "6", "cache"});
  ASSERT_EQ(rc, 0);
  EXPECT_EQ(It({"verify", a.socket(), "local", hash}).first, 0);
  EXPECT_EQ(RedisInt(secured, "DBSIZE"), -1) << "(the test's own connection has no password)";

  // A password file others can read is refused at start.
  ASSERT_EQ(RunCommand("echo right-one > " + file + " && chmod 644 " + file).rc, 0);
  Process bad({DaemonBinary(), "--run-dir", MakeTempDir(), "--host-capacity", "64MiB",
               "--remote-addresses", secured.address(), "--remote-password-file", file});
  EXPECT_NE(bad.Wait(), 0);
  ASSERT_EQ(RunCommand("chmod 600 " + file).rc, 0);
  Daemon good(RemoteArgs(secured, "machine-b", {"--remote-password-file", file}));
  ASSERT_TRUE(good.ok());
  EXPECT_TRUE(Eventually([&] { return Serving(good, "tensord.remote"); }));
}

TEST_F(RemoteTest, AValueDamagedInRedisIsAMissOrDataLossNeverWrongBytes) {
  Daemon a(RemoteArgs(*redis_, "machine-a", {"--remote-publish-durable", "true"}));
  Daemon b(RemoteArgs(*redis_, "machine-b"));
  ASSERT_TRUE(a.ok() && b.ok());
  auto [rc1, h1] = It({"put", a.socket(), "cached", std::to_string(6 * kMiB), "7", "cache"});
  auto [rc2, h2] = It({"put", a.socket(), "durable", std::to_string(6 * kMiB), "8", "durable"});
  ASSERT_EQ(rc1 + rc2, 0);
  ASSERT_TRUE(Eventually([&] {
    return RedisInt(*redis_, "EXISTS %s", "tensord:shared:0::cached") == 1 &&
           RedisInt(*redis_, "EXISTS %s", "tensord:shared:0::durable") == 1;
  }));
  // Flip a byte of each tensor's second chunk (named by content: find it by pattern).
  for (const char* key : {"cached", "durable"}) {
    redisContext* c = redisConnect("127.0.0.1", redis_->port());
    auto* keys = static_cast<redisReply*>(redisCommand(c, "KEYS tensord:shared:0::%s:*", key));
    ASSERT_EQ(keys->elements, 1u);
    auto* r = static_cast<redisReply*>(
        redisCommand(c, "SETRANGE %s 1000 %s", keys->element[0]->str, "\x01\x02\x03"));
    freeReplyObject(r);
    freeReplyObject(keys);
    redisFree(c);
  }
  auto cached = It({"verify", b.socket(), "cached", h1});
  EXPECT_EQ(cached.first, 15) << "NOT_FOUND (a miss), not wrong bytes";  // it_client: 10 + code
  auto durable = It({"verify", b.socket(), "durable", h2});
  EXPECT_EQ(durable.first, 25) << "DATA_LOSS";
  // A's own copies are intact.
  EXPECT_EQ(It({"verify", a.socket(), "cached", h1}).first, 0);
  EXPECT_EQ(It({"verify", a.socket(), "durable", h2}).first, 0);
}

TEST(RemoteClusterTest, TwoDaemonsShareThroughARedisCluster) {
  if (!HaveRedisServer())
    GTEST_SKIP() << "redis-server is not installed (apt install redis-server)";
  RedisCluster cluster(3);
  ASSERT_TRUE(cluster.ready()) << "the 3-master cluster did not form";
  Daemon a(RemoteArgs(cluster.node(0), "machine-a"));
  Daemon b(RemoteArgs(cluster.node(2), "machine-b"));
  ASSERT_TRUE(a.ok() && b.ok());
  std::vector<std::pair<std::string, std::string>> put;
  for (int i = 0; i < 12; ++i) {
    const std::string key = "kv.prefix." + std::to_string(i);
    auto [rc, hash] =
        It({"put", a.socket(), key, std::to_string(5 * kMiB + i), std::to_string(i), "cache"});
    ASSERT_EQ(rc, 0);
    put.emplace_back(key, hash);
  }
  for (const auto& [key, hash] : put) {
    EXPECT_TRUE(Eventually([&, k = key, h = hash] {
      return It({"verify", b.socket(), k, h}).first == 0;
    })) << key;
  }
  const RemoteStats sb = RemoteOf(b);
  EXPECT_TRUE(sb.cluster);
  EXPECT_EQ(sb.nodes, 3u);
  EXPECT_EQ(sb.hits, 12u);
}

}  // namespace
}  // namespace tensord::testing
