// The remote tier against a real redis-server started by the test: the header format, chunked
// round trips seen by a second daemon's tier, checksums on damaged values, expiry, a wrong
// password, and Redis killed and restarted under the tier.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <random>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "daemon/tiers/remote_tier.h"
#include "tests/unit/redis_server.h"

namespace tensord::tiers {
namespace {

using testing::HaveRedisServer;
using testing::RedisServer;

std::vector<uint8_t> Bytes(size_t n, uint32_t seed) {
  std::vector<uint8_t> v(n);
  std::mt19937 rng(seed);
  for (uint8_t& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

RemoteTierConfig Config(const RedisServer& r, const std::string& instance) {
  RemoteTierConfig c;
  c.redis.seeds = {*redis::ParseEndpoint(r.address())};
  c.redis.io_timeout = std::chrono::milliseconds(500);
  c.instance = instance;
  c.shared_namespaces = {"kv*", "weights"};
  c.chunk_bytes = 64 << 10;  // small chunks: many per tensor, several pipeline waves
  c.probe_interval = std::chrono::milliseconds(50);
  return c;
}

RemoteTensor Tensor(const std::string& ns, const std::string& key, uint64_t nbytes) {
  RemoteTensor t;
  t.ns = ns;
  t.key = key;
  t.dtype = DType::kUInt8;
  t.shape = {static_cast<int64_t>(nbytes)};
  t.nbytes = nbytes;
  t.durability = 2;
  return t;
}

// Stores `bytes` as (ns, key) through `tier`; returns the range.
Range Put(RemoteTier& tier, const RemoteTensor& t, std::vector<uint8_t>& bytes) {
  Placement where;
  where.remote = &t;
  absl::StatusOr<Range> r = tier.Reserve(bytes.size(), where);
  EXPECT_TRUE(r.ok()) << r.status();
  if (!r.ok()) return {};
  Range range = *r;
  Transfer x{&range, bytes.data()};
  std::vector<absl::Status> st = tier.WriteAll(std::span<const Transfer>(&x, 1));
  EXPECT_TRUE(st[0].ok()) << st[0];
  return range;
}

absl::Status ReadInto(RemoteTier& tier, Range range, std::vector<uint8_t>& out) {
  out.assign(range.length, 0);
  Transfer x{&range, out.data()};
  return tier.ReadAll(std::span<const Transfer>(&x, 1))[0];
}

// A raw command on the test's own connection.
redis::Reply Raw(const RedisServer& r, std::vector<absl::string_view> args) {
  redis::Options o;
  o.seeds = {*redis::ParseEndpoint(r.address())};
  auto c = redis::Client::Connect(o);
  EXPECT_TRUE(c.ok()) << c.status();
  auto reply = (*c)->Run1(redis::Command{std::move(args)});
  EXPECT_TRUE(reply.ok()) << reply.status();
  return reply.ok() ? std::move(*reply) : nullptr;
}

bool WaitFor(const std::function<bool()>& cond) {
  for (int i = 0; i < 400; ++i) {
    if (cond()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return cond();
}

TEST(Redis, KeySlotsAreRedisClusters) {
  // The specification's check value (CRC16/XMODEM of "123456789" is 0x31C3) and hash tags.
  EXPECT_EQ(redis::KeySlot("123456789"), 0x31C3 % redis::kSlots);
  EXPECT_EQ(redis::KeySlot("foo"), 12182);
  EXPECT_EQ(redis::KeySlot("{user1000}.following"), redis::KeySlot("{user1000}.followers"));
  EXPECT_EQ(redis::KeySlot("foo{}{bar}"), redis::KeySlot("foo{}{bar}"));
  EXPECT_NE(redis::KeySlot("foo{}{bar}"), redis::KeySlot("bar"));  // "{}" is no tag
  EXPECT_EQ(redis::KeySlot("foo{bar}{zap}"), redis::KeySlot("bar"));
}

// A scripted server that speaks just enough RESP to stand in for a confused or hostile Redis
// (beside the real one the other tests use): it answers CLUSTER SLOTS as a standalone Redis
// does, then, round by round, waits for the round's GETs and writes its reply bytes, the first
// in small pieces so that replies arrive split across reads.
class ScriptedServer {
 public:
  explicit ScriptedServer(std::vector<std::pair<int, std::string>> rounds) {
    listen_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    EXPECT_EQ(bind(listen_, reinterpret_cast<sockaddr*>(&a), len), 0);
    EXPECT_EQ(listen(listen_, 4), 0);
    getsockname(listen_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this, rounds = std::move(rounds)] { Serve(rounds); });
  }
  ~ScriptedServer() {
    shutdown(listen_, SHUT_RDWR);
    close(listen_);
    thread_.join();
  }
  redis::Options Options() const {
    redis::Options o;
    o.seeds = {redis::Endpoint{"127.0.0.1", port_}};
    o.io_timeout = std::chrono::milliseconds(2000);
    o.connections_per_node = 1;  // one connection: every round's replies on it
    return o;
  }

 private:
  void Serve(const std::vector<std::pair<int, std::string>>& rounds) {
    const int fd = accept(listen_, nullptr, nullptr);
    if (fd < 0) return;
    std::string in;
    // Reads until `what` was seen `count` times since the last round.
    auto wait_for = [&](const std::string& what, int count) {
      for (;;) {
        int seen = 0;
        for (size_t pos = in.find(what); pos != std::string::npos; pos = in.find(what, pos + 1)) {
          ++seen;
        }
        if (seen >= count) {
          in.clear();
          return true;
        }
        char buf[4096];
        const ssize_t got = read(fd, buf, sizeof buf);
        if (got <= 0) return false;
        in.append(buf, size_t(got));
      }
    };
    auto send = [&](const std::string& bytes) {
      for (size_t off = 0, piece = 0; off < bytes.size(); ++piece) {
        const size_t n =
            piece < 10 ? std::min<size_t>(7000, bytes.size() - off) : bytes.size() - off;
        if (write(fd, bytes.data() + off, n) != ssize_t(n)) return;
        off += n;
        if (piece < 10) std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
    };
    if (wait_for("SLOTS", 1)) {
      send("-ERR This instance has cluster support disabled\r\n");
      for (const auto& [gets, reply] : rounds) {
        if (!wait_for("$3\r\nGET\r\n", gets)) break;
        send(reply);
      }
      char b;
      while (read(fd, &b, 1) > 0) {
      }
    }
    close(fd);
  }

  int listen_ = -1;
  int port_ = 0;
  std::thread thread_;
};

std::string Bulk(const std::string& s) {
  return "$" + std::to_string(s.size()) + "\r\n" + s + "\r\n";
}

TEST(RedisDirectReads, RepliesLandInPlaceAndBadOnesAreErrorsNotCrashes) {
  const std::string big(300000, 'x'), huge(3 << 20, 'y');
  ScriptedServer server({
      {5, Bulk("0123456789") + Bulk("abc") + "$-1\r\n" + Bulk(big) + Bulk("HEADdata1234")},
      {3, Bulk(huge) + "-ERR wrong type\r\n" + Bulk("after")},
      {1, "$12x\r\n"},
  });
  auto c = redis::Client::Connect(server.Options());
  ASSERT_TRUE(c.ok()) << c.status();
  std::string b0(10, '-'), b1(5, '-'), b2(4, '-'), b3(big.size(), '-'), b4(8, '-'), head;
  std::vector<redis::Command> cmds(5);
  std::string* bufs[] = {&b0, &b1, &b2, &b3, &b4};
  for (size_t i = 0; i < cmds.size(); ++i) {
    cmds[i].args = {"GET", "k"};
    cmds[i].into = bufs[i]->data();
    cmds[i].into_len = bufs[i]->size();
  }
  cmds[4].head = &head;
  cmds[4].head_len = 4;
  std::vector<absl::StatusOr<redis::Reply>> r = (*c)->Run(cmds);
  ASSERT_EQ(r.size(), 5u);
  for (const auto& x : r) ASSERT_TRUE(x.ok()) << x.status();
  // The expected length: straight into place.
  EXPECT_TRUE(redis::ReplyWentInto(**r[0]));
  EXPECT_EQ(b0, "0123456789");
  // Another length: a reply of its own, the destination untouched.
  EXPECT_FALSE(redis::ReplyWentInto(**r[1]));
  EXPECT_EQ(redis::ReplyString(**r[1]), "abc");
  EXPECT_EQ(b1, "-----");
  EXPECT_TRUE(redis::ReplyIsNil(**r[2]));
  EXPECT_TRUE(redis::ReplyWentInto(**r[3]));
  EXPECT_EQ(b3, big) << "a reply split over many reads";
  // A head apart: the reply's string is the head.
  EXPECT_TRUE(redis::ReplyWentInto(**r[4]));
  EXPECT_EQ(redis::ReplyString(**r[4]), "HEAD");
  EXPECT_EQ(b4, "data1234");

  // Far longer than the destination: read past, answered as an error; the connection goes on
  // (its next replies are right).
  std::vector<redis::Command> more(3);
  std::string d0(10, '-'), d1(10, '-'), d2(5, '-');
  std::string* dbufs[] = {&d0, &d1, &d2};
  for (size_t i = 0; i < more.size(); ++i) {
    more[i].args = {"GET", "k"};
    more[i].into = dbufs[i]->data();
    more[i].into_len = dbufs[i]->size();
  }
  r = (*c)->Run(more);
  ASSERT_EQ(r.size(), 3u);
  for (const auto& x : r) ASSERT_TRUE(x.ok()) << x.status();
  EXPECT_FALSE(redis::ReplyStatus(**r[0]).ok());
  EXPECT_EQ(d0, "----------");
  EXPECT_EQ(redis::ReplyStatus(**r[1]).code(), absl::StatusCode::kInternal);
  EXPECT_NE(redis::ReplyString(**r[1]).find("wrong type"), absl::string_view::npos);
  EXPECT_EQ(d2, "after");

  // A malformed length: a protocol error (the connection is dropped), not a crash.
  std::vector<redis::Command> bad(1);
  std::string e0(12, '-');
  bad[0].args = {"GET", "k"};
  bad[0].into = e0.data();
  bad[0].into_len = e0.size();
  r = (*c)->Run(bad);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].status().code(), absl::StatusCode::kUnavailable) << r[0].status();
}

TEST(RemoteHeader, RoundTripsAndEveryDamagedByteIsDataLoss) {
  RemoteHeader h;
  h.tensor = Tensor("kv", "block.7", 3 << 20);
  h.tensor.shape = {3, 1024, 1024};
  h.tensor.parent = "block.6";
  h.tensor.codec = 2;
  h.stored_bytes = 1 << 20;
  h.chunk_bytes = 256 << 10;
  h.chunk_sums = {1, 2, 3, 4};
  h.content = RemoteContentHash(h.chunk_sums, h.stored_bytes);
  const std::string bytes = SerializeRemoteHeader(h);
  absl::StatusOr<RemoteHeader> back = ParseRemoteHeader(bytes + "chunk bytes follow");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->header_bytes, bytes.size());
  EXPECT_EQ(back->tensor.shape, h.tensor.shape);
  EXPECT_EQ(back->tensor.parent, "block.6");
  EXPECT_EQ(back->tensor.codec, 2);
  EXPECT_EQ(back->chunk_sums, h.chunk_sums);
  for (size_t i = 0; i < bytes.size(); ++i) {
    std::string bad = bytes;
    bad[i] ^= 0x20;
    EXPECT_EQ(ParseRemoteHeader(bad).status().code(), absl::StatusCode::kDataLoss) << "byte " << i;
    EXPECT_EQ(ParseRemoteHeader(absl::string_view(bytes).substr(0, i)).status().code(),
              absl::StatusCode::kDataLoss)
        << "cut at " << i;
  }
  h.content ^= 1;  // a header whose checksums do not add up
  EXPECT_EQ(ParseRemoteHeader(SerializeRemoteHeader(h)).status().code(),
            absl::StatusCode::kDataLoss);
  // Well-formed but hostile sizes (anyone who can write to Redis can write a header): a stored
  // size near 2^64 whose chunk count would wrap to one, and more stored bytes than the tensor
  // has, would have a reader stage that much memory. Both are damage.
  for (uint64_t stored : {~uint64_t{0}, uint64_t{(3 << 20) + 1}}) {
    RemoteHeader hostile = h;
    hostile.stored_bytes = stored;
    if (stored == ~uint64_t{0}) {
      hostile.chunk_bytes = 4096;
      hostile.chunk_sums = {1};              // what the count wrapped to
      hostile.tensor.nbytes = ~uint64_t{0};  // (so that only the wrap can refuse it)
    } else {
      hostile.chunk_sums.assign((stored - 1) / hostile.chunk_bytes + 1, 1);  // a right layout
    }
    hostile.content = RemoteContentHash(hostile.chunk_sums, hostile.stored_bytes);
    EXPECT_EQ(ParseRemoteHeader(SerializeRemoteHeader(hostile)).status().code(),
              absl::StatusCode::kDataLoss)
        << stored;
  }
}

class RemoteTierTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!HaveRedisServer())
      GTEST_SKIP() << "redis-server is not installed (apt install redis-server)";
    redis_ = std::make_unique<RedisServer>();
    ASSERT_TRUE(redis_->ready()) << "redis-server did not start on " << redis_->address();
  }
  std::unique_ptr<RedisServer> redis_;
};

TEST_F(RemoteTierTest, AnotherDaemonReadsTheSameBytesOfASharedNamespace) {
  auto a = RemoteTier::Create(Config(*redis_, "machine-a"));
  auto b = RemoteTier::Create(Config(*redis_, "machine-b"));
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_TRUE((*a)->Healthy());
  for (size_t n :
       {size_t{1}, size_t{4096}, size_t{64 << 10}, size_t{(64 << 10) + 1}, size_t{3 << 20} + 17}) {
    std::vector<uint8_t> bytes = Bytes(n, static_cast<uint32_t>(n));
    RemoteTensor t = Tensor("kv", "block." + std::to_string(n), n);
    t.shape = {1, static_cast<int64_t>(n)};
    t.parent = "block.0";
    Range put = Put(**a, t, bytes);
    EXPECT_NE(put.checksum, 0u);

    absl::StatusOr<RemoteFound> found = (*b)->Find("kv", t.key);
    ASSERT_TRUE(found.ok()) << found.status();
    EXPECT_EQ(found->tensor.shape, t.shape);
    EXPECT_EQ(found->tensor.parent, "block.0");
    EXPECT_EQ(found->tensor.nbytes, n);
    EXPECT_EQ(found->range.length, n);
    std::vector<uint8_t> got;
    ASSERT_TRUE(ReadInto(**b, found->range, got).ok());
    EXPECT_EQ(got, bytes) << n << " bytes";
    (*b)->Free(found->range);
    (*a)->Free(put);
  }
  // Shared tensors outlive a daemon's Free: the other daemons may still use them.
  EXPECT_TRUE((*b)->Find("kv", "block.1").ok());
  RemoteStats s = (*b)->stats();
  EXPECT_GE(s.hits, 5u);
  EXPECT_GE(s.gets, 5u);
}

TEST_F(RemoteTierTest, PrivateNamespacesDoNotCollideAndAreDeletedWithTheirRange) {
  auto a = RemoteTier::Create(Config(*redis_, "machine-a"));
  auto b = RemoteTier::Create(Config(*redis_, "machine-b"));
  ASSERT_TRUE(a.ok() && b.ok());
  std::vector<uint8_t> x = Bytes(200 << 10, 1), y = Bytes(100 << 10, 2);
  Range ra = Put(**a, Tensor("scratch", "t", x.size()), x);
  Range rb = Put(**b, Tensor("scratch", "t", y.size()), y);
  std::vector<uint8_t> got;
  auto fa = (*a)->Find("scratch", "t");
  ASSERT_TRUE(fa.ok());
  ASSERT_TRUE(ReadInto(**a, fa->range, got).ok());
  EXPECT_EQ(got, x);
  auto fb = (*b)->Find("scratch", "t");
  ASSERT_TRUE(fb.ok());
  ASSERT_TRUE(ReadInto(**b, fb->range, got).ok());
  EXPECT_EQ(got, y);
  (*a)->Free(fa->range);
  (*b)->Free(fb->range);
  (*a)->Free(ra);
  (*b)->Free(rb);
  EXPECT_EQ(redis::ReplyInteger(*Raw(*redis_, {"DBSIZE"})), 0) << "private chunks leaked";
  EXPECT_EQ((*a)->Find("scratch", "t").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(RemoteTierTest, DamagedOrMissingChunksAreNeverServed) {
  auto a = RemoteTier::Create(Config(*redis_, "machine-a"));
  ASSERT_TRUE(a.ok());
  std::vector<uint8_t> bytes = Bytes(300 << 10, 3);  // 5 chunks
  RemoteTensor t = Tensor("kv", "hurt", bytes.size());
  Range put = Put(**a, t, bytes);
  const std::string base = (*a)->BaseKey("kv", "hurt");
  redis::Reply keys = Raw(*redis_, {"KEYS", base + ":*"});
  ASSERT_EQ(keys->elements, 4u);
  const std::string chunk(keys->element[0]->str, keys->element[0]->len);

  // One flipped byte in a chunk: DATA_LOSS, counted.
  Raw(*redis_, {"SETRANGE", chunk, "100", "X"});
  auto found = (*a)->Find("kv", "hurt");
  ASSERT_TRUE(found.ok());
  std::vector<uint8_t> got;
  EXPECT_EQ(ReadInto(**a, found->range, got).code(), absl::StatusCode::kDataLoss);
  EXPECT_GE((*a)->stats().checksum_failures, 1u);
  // A chunk gone (evicted by Redis): NOT_FOUND, a miss.
  Raw(*redis_, {"DEL", chunk});
  EXPECT_EQ(ReadInto(**a, found->range, got).code(), absl::StatusCode::kNotFound);
  // A damaged header: the lookup itself is DATA_LOSS.
  Raw(*redis_, {"SETRANGE", base, "40", "Z"});
  EXPECT_EQ((*a)->Find("kv", "hurt").status().code(), absl::StatusCode::kDataLoss);
  // Something else under the name: DATA_LOSS, never its bytes.
  Raw(*redis_, {"SET", base, "not a tensor at all"});
  EXPECT_EQ((*a)->Find("kv", "hurt").status().code(), absl::StatusCode::kDataLoss);
  (*a)->Free(found->range);
  (*a)->Free(put);
}

TEST_F(RemoteTierTest, ADeleteByNameReachesAnotherDaemonsTensor) {
  auto a = RemoteTier::Create(Config(*redis_, "machine-a"));
  auto b = RemoteTier::Create(Config(*redis_, "machine-b"));
  ASSERT_TRUE(a.ok() && b.ok());
  std::vector<uint8_t> bytes = Bytes(200 << 10, 4);  // 4 chunks
  Range put = Put(**a, Tensor("kv", "theirs", bytes.size()), bytes);
  absl::StatusOr<bool> erased = (*b)->EraseNamed("kv", "theirs");
  ASSERT_TRUE(erased.ok()) << erased.status();
  EXPECT_TRUE(*erased);
  EXPECT_EQ((*a)->Find("kv", "theirs").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(redis::ReplyInteger(*Raw(*redis_, {"DBSIZE"})), 0) << "its chunks too";
  erased = (*b)->EraseNamed("kv", "theirs");
  ASSERT_TRUE(erased.ok());
  EXPECT_FALSE(*erased) << "nothing left to delete";
  // A damaged header under the name goes as well (it would answer every lookup with DATA_LOSS).
  Raw(*redis_, {"SET", (*a)->BaseKey("kv", "junk"), "not a tensor at all"});
  erased = (*b)->EraseNamed("kv", "junk");
  ASSERT_TRUE(erased.ok());
  EXPECT_TRUE(*erased);
  EXPECT_EQ(redis::ReplyInteger(*Raw(*redis_, {"EXISTS", (*a)->BaseKey("kv", "junk")})), 0);
  (*a)->Free(put);
}

TEST_F(RemoteTierTest, DeletesMadeWhileRedisHangsAreDoneBeforeItServesAgain) {
  auto a = RemoteTier::Create(Config(*redis_, "machine-a"));
  auto b = RemoteTier::Create(Config(*redis_, "machine-b"));
  ASSERT_TRUE(a.ok() && b.ok());
  std::vector<uint8_t> bytes = Bytes(130 << 10, 5);
  Range put = Put(**a, Tensor("kv", "gone", bytes.size()), bytes);
  ASSERT_TRUE((*b)->Find("kv", "gone").ok());
  Range other = Put(**a, Tensor("kv", "other", bytes.size()), bytes);
  redis_->Pause();  // hung, its data intact
  // A delete sent to the hung Redis: it must not hang (the kernel may still take the bytes,
  // and Redis run them when it wakes).
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_FALSE((*a)->Erase(other).ok());
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(3)) << "must not hang";
  ASSERT_TRUE(WaitFor([&] { return !(*a)->Healthy(); }));
  // A delete made while the tier is degraded is never sent: only the replay can do it.
  EXPECT_EQ((*a)->Erase(put).code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ((*a)->stats().pending_deletes, 2u);
  redis_->Resume();
  const std::string base = (*a)->BaseKey("kv", "gone");
  bool gone_when_serving = false;
  ASSERT_TRUE(WaitFor([&] {
    if (!(*a)->Healthy()) return false;
    // The first moment it serves again, the delete is already done.
    gone_when_serving = redis::ReplyInteger(*Raw(*redis_, {"EXISTS", base})) == 0;
    return true;
  }));
  EXPECT_TRUE(gone_when_serving) << "the tier served before its waiting deletes were done";
  const RemoteStats s = (*a)->stats();
  EXPECT_EQ(s.pending_deletes, 0u);
  EXPECT_EQ(s.deletes_replayed, 2u);
  EXPECT_TRUE(WaitFor([&] { return (*b)->Healthy(); }));
  EXPECT_EQ((*b)->Find("kv", "gone").status().code(), absl::StatusCode::kNotFound)
      << "a tensor deleted while Redis hung must not come back";
  EXPECT_EQ(redis::ReplyInteger(*Raw(*redis_, {"DBSIZE"})), 0);
}

TEST(RemoteTierChunks, AnInterruptedWriteLeavesChunksThatExpireACompleteOneNone) {
  if (!HaveRedisServer())
    GTEST_SKIP() << "redis-server is not installed (apt install redis-server)";
  // User "chunks" may write chunk keys (a 16-digit content hash, then the chunk number) but not
  // headers: every write is cut after its chunks, at the header, as by a crash or a lost Redis.
  RedisServer r({"--user", "chunks", "on", ">pw", "~tensord:*:????????????????:*", "+@all"});
  ASSERT_TRUE(r.ready());
  RemoteTierConfig c = Config(r, "machine-a");
  c.redis.user = "chunks";
  c.redis.password = "pw";
  auto cut = RemoteTier::Create(c);
  ASSERT_TRUE(cut.ok());
  ASSERT_TRUE((*cut)->Healthy()) << (*cut)->stats().last_error;
  std::vector<uint8_t> bytes = Bytes(200 << 10, 6);  // 4 chunks: 3 under their own keys
  RemoteTensor t = Tensor("kv", "cut", bytes.size());
  Placement where;
  where.remote = &t;
  absl::StatusOr<Range> range = (*cut)->Reserve(bytes.size(), where);
  ASSERT_TRUE(range.ok()) << range.status();
  Transfer x{&*range, bytes.data()};
  EXPECT_FALSE((*cut)->WriteAll(std::span<const Transfer>(&x, 1))[0].ok());
  redis::Reply keys = Raw(r, {"KEYS", "tensord:*"});
  ASSERT_EQ(keys->elements, 3u) << "the chunks were written, the header refused";
  for (size_t i = 0; i < keys->elements; ++i) {
    const std::string k(keys->element[i]->str, keys->element[i]->len);
    const long long ttl = redis::ReplyInteger(*Raw(r, {"PTTL", k}));
    EXPECT_GT(ttl, 0) << k << ": a chunk without a header must not stay for good";
    EXPECT_LE(ttl, 10 * 60 * 1000) << k;
  }
  (*cut)->Free(*range);

  // A complete write (the default user may write headers): its chunks are persistent.
  auto whole = RemoteTier::Create(Config(r, "machine-b"));
  ASSERT_TRUE(whole.ok());
  Range put = Put(**whole, Tensor("kv", "whole", bytes.size()), bytes);
  keys = Raw(r, {"KEYS", (*whole)->BaseKey("kv", "whole") + "*"});
  ASSERT_EQ(keys->elements, 4u);
  for (size_t i = 0; i < keys->elements; ++i) {
    const std::string k(keys->element[i]->str, keys->element[i]->len);
    EXPECT_EQ(redis::ReplyInteger(*Raw(r, {"PTTL", k})), -1) << k;
  }
  (*whole)->Free(put);
}

TEST(RemoteTierAcl, WithoutScriptingPublishingWorksAndARefusedDeleteCannotHoldTheTierDown) {
  if (!HaveRedisServer())
    GTEST_SKIP() << "redis-server is not installed (apt install redis-server)";
  RedisServer r({"--user", "plain", "on", ">pw", "~*", "+@all", "-@scripting"});
  ASSERT_TRUE(r.ready());
  RemoteTierConfig c = Config(r, "machine-a");
  c.redis.user = "plain";
  c.redis.password = "pw";
  auto a = RemoteTier::Create(c);
  ASSERT_TRUE(a.ok());
  ASSERT_TRUE((*a)->Healthy()) << (*a)->stats().last_error;
  // Publishing and reading need plain commands only.
  std::vector<uint8_t> bytes = Bytes(200 << 10, 10);
  Range put = Put(**a, Tensor("kv", "plain", bytes.size()), bytes);
  auto found = (*a)->Find("kv", "plain");
  ASSERT_TRUE(found.ok()) << found.status();
  std::vector<uint8_t> got;
  ASSERT_TRUE(ReadInto(**a, found->range, got).ok());
  EXPECT_EQ(got, bytes);
  (*a)->Free(found->range);
  // A delete needs EVAL, which this user may not run: refused, queued, and the tier degraded
  // while it waits; dropped after its five probes, when the tier serves again.
  EXPECT_FALSE((*a)->Erase(put).ok());
  EXPECT_FALSE((*a)->Healthy());
  EXPECT_TRUE(WaitFor([&] { return (*a)->Healthy(); }));
  const RemoteStats s = (*a)->stats();
  EXPECT_EQ(s.pending_deletes, 0u);
  EXPECT_EQ(s.deletes_dropped, 1u);
  EXPECT_EQ(s.deletes_replayed, 0u);
}

TEST_F(RemoteTierTest, ReplacedByAnotherWriterIsAMissNeverAMix) {
  auto a = RemoteTier::Create(Config(*redis_, "machine-a"));
  auto b = RemoteTier::Create(Config(*redis_, "machine-b"));
  ASSERT_TRUE(a.ok() && b.ok());
  std::vector<uint8_t> one = Bytes(256 << 10, 4), two = Bytes(256 << 10, 5);
  Range p1 = Put(**a, Tensor("kv", "k", one.size()), one);
  auto found = (*b)->Find("kv", "k");
  ASSERT_TRUE(found.ok());
  Range p2 = Put(**a, Tensor("kv", "k", two.size()), two);  // a new version under the same name
  std::vector<uint8_t> got;
  EXPECT_EQ(ReadInto(**b, found->range, got).code(), absl::StatusCode::kNotFound);
  auto again = (*b)->Find("kv", "k");
  ASSERT_TRUE(again.ok());
  ASSERT_TRUE(ReadInto(**b, again->range, got).ok());
  EXPECT_EQ(got, two);
  for (Range r : {found->range, again->range}) (*b)->Free(r);
  (*a)->Free(p1);
  (*a)->Free(p2);
}

TEST_F(RemoteTierTest, DeletingAnOldVersionLeavesTheNewOne) {
  auto a = RemoteTier::Create(Config(*redis_, "machine-a"));
  auto b = RemoteTier::Create(Config(*redis_, "machine-b"));
  ASSERT_TRUE(a.ok() && b.ok());
  std::vector<uint8_t> one = Bytes(200 << 10, 10), two = Bytes(200 << 10, 11);
  Range p1 = Put(**a, Tensor("kv", "v", one.size()), one);
  Range p2 = Put(**b, Tensor("kv", "v", two.size()), two);  // another daemon republishes it
  EXPECT_TRUE((*a)->Erase(p1).ok());  // a client deletes the old one through daemon A
  auto found = (*b)->Find("kv", "v");
  ASSERT_TRUE(found.ok()) << found.status();
  std::vector<uint8_t> got;
  ASSERT_TRUE(ReadInto(**b, found->range, got).ok());
  EXPECT_EQ(got, two);
  EXPECT_TRUE((*b)->Erase(found->range).ok());  // deleting the current one deletes it
  EXPECT_EQ((*a)->Find("kv", "v").status().code(), absl::StatusCode::kNotFound);
  (*b)->Free(p2);
}

TEST_F(RemoteTierTest, ExpiryBecomesRedisExpiry) {
  auto a = RemoteTier::Create(Config(*redis_, "machine-a"));
  ASSERT_TRUE(a.ok());
  std::vector<uint8_t> bytes = Bytes(150 << 10, 6);
  RemoteTensor t = Tensor("kv", "ttl", bytes.size());
  t.expires_unix_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count() +
                      400;
  Range put = Put(**a, t, bytes);
  const std::string base = (*a)->BaseKey("kv", "ttl");
  const long long pttl = redis::ReplyInteger(*Raw(*redis_, {"PTTL", base}));
  EXPECT_GT(pttl, 0);
  EXPECT_LE(pttl, 400);
  redis::Reply keys = Raw(*redis_, {"KEYS", base + ":*"});
  ASSERT_EQ(keys->elements, 2u);
  EXPECT_GT(redis::ReplyInteger(*Raw(*redis_, {"PTTL", redis::ReplyString(*keys->element[0])})), 0);
  EXPECT_TRUE(WaitFor([&] { return !(*a)->Find("kv", "ttl").ok(); }));
  EXPECT_EQ((*a)->Find("kv", "ttl").status().code(), absl::StatusCode::kNotFound);
  (*a)->Free(put);
}

TEST_F(RemoteTierTest, RedisKilledDegradesAndItsReturnResumes) {
  auto a = RemoteTier::Create(Config(*redis_, "machine-a"));
  ASSERT_TRUE(a.ok());
  std::vector<uint8_t> bytes = Bytes(128 << 10, 7);
  Range put = Put(**a, Tensor("kv", "before", bytes.size()), bytes);
  redis_->Stop();
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_FALSE((*a)->Find("kv", "before").ok());
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(3)) << "must not hang";
  EXPECT_TRUE(WaitFor([&] { return !(*a)->Healthy(); }));
  RemoteTensor t = Tensor("kv", "during", 10);
  Placement where;
  where.remote = &t;
  EXPECT_EQ((*a)->Reserve(10, where).status().code(), absl::StatusCode::kUnavailable);
  EXPECT_GE((*a)->stats().degradations, 1u);

  redis_->Start();  // the same port, empty (no persistence): as a Redis that lost its data
  ASSERT_TRUE(redis_->ready());
  EXPECT_TRUE(WaitFor([&] { return (*a)->Healthy(); }));
  EXPECT_EQ((*a)->Find("kv", "before").status().code(), absl::StatusCode::kNotFound);
  std::vector<uint8_t> again = Bytes(128 << 10, 8);
  Range p2 = Put(**a, Tensor("kv", "after", again.size()), again);
  auto found = (*a)->Find("kv", "after");
  ASSERT_TRUE(found.ok()) << found.status();
  std::vector<uint8_t> got;
  ASSERT_TRUE(ReadInto(**a, found->range, got).ok());
  EXPECT_EQ(got, again);
  for (Range r : {put, p2, found->range}) (*a)->Free(r);
}

TEST_F(RemoteTierTest, AWrongPasswordDegradesAndSaysSoTheRightOneWorks) {
  redis_.reset();
  RedisServer secured(
      {"--user", "tensord", "on", ">s3cret", "~tensord:*", "+@all", "--user", "default", "off"});
  ASSERT_TRUE(secured.ready());
  RemoteTierConfig c = Config(secured, "machine-a");
  c.redis.user = "tensord";
  c.redis.password = "wrong";
  auto bad = RemoteTier::Create(c);
  ASSERT_TRUE(bad.ok());
  EXPECT_FALSE((*bad)->Healthy());
  EXPECT_NE((*bad)->stats().last_error.find("authentication failed"), std::string::npos)
      << (*bad)->stats().last_error;
  c.redis.password = "s3cret";
  auto good = RemoteTier::Create(c);
  ASSERT_TRUE(good.ok());
  EXPECT_TRUE((*good)->Healthy()) << (*good)->stats().last_error;
  std::vector<uint8_t> bytes = Bytes(70 << 10, 9);
  Range put = Put(**good, Tensor("kv", "auth", bytes.size()), bytes);
  auto found = (*good)->Find("kv", "auth");
  ASSERT_TRUE(found.ok());
  std::vector<uint8_t> got;
  ASSERT_TRUE(ReadInto(**good, found->range, got).ok());
  EXPECT_EQ(got, bytes);
  (*good)->Free(found->range);
  (*good)->Free(put);
}

TEST(RemoteCluster, ReadsStayRightWhileSlotsMigrate) {
  if (!HaveRedisServer())
    GTEST_SKIP() << "redis-server is not installed (apt install redis-server)";
  testing::RedisCluster cluster(3);
  ASSERT_TRUE(cluster.ready()) << "the 3-master cluster did not form";
  RemoteTierConfig ca = Config(cluster.node(0), "machine-a");
  RemoteTierConfig cb = Config(cluster.node(1), "machine-b");  // another seed: found the rest
  // The subject is redirection, not latency: a MIGRATE of many keys can hold a node for a
  // while on a loaded 2-core machine, and a timeout there would be a (correct) failed read.
  ca.redis.io_timeout = cb.redis.io_timeout = std::chrono::seconds(5);
  auto a = RemoteTier::Create(ca);
  auto b = RemoteTier::Create(cb);
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_TRUE((*a)->Healthy() && (*b)->Healthy()) << (*a)->stats().last_error;
  EXPECT_TRUE((*a)->stats().cluster);
  EXPECT_EQ((*b)->stats().nodes, 3u);
  // Redis's memory is the three masters' together, not the seed's alone.
  uint64_t seed_used = 0;
  const redis::Reply info = Raw(cluster.node(0), {"INFO", "memory"});
  for (absl::string_view line : absl::StrSplit(redis::ReplyString(*info), "\r\n")) {
    if (absl::ConsumePrefix(&line, "used_memory:")) {
      ASSERT_TRUE(absl::SimpleAtoi(line, &seed_used));
    }
  }
  EXPECT_GT(seed_used, 0u);
  EXPECT_GT((*a)->stats().redis_used_bytes, 2 * seed_used);
  constexpr int kTensors = 40;
  std::vector<std::vector<uint8_t>> bytes;
  std::vector<Range> puts;
  for (int i = 0; i < kTensors; ++i) {
    bytes.push_back(Bytes((300 << 10) + i, 100 + i));  // 5 chunks each, on many slots
    puts.push_back(Put(**a, Tensor("kv", "block." + std::to_string(i), bytes[i].size()), bytes[i]));
  }
  // Keys spread over every master.
  for (size_t n = 0; n < cluster.size(); ++n) {
    EXPECT_GT(redis::ReplyInteger(*Raw(cluster.node(n), {"DBSIZE"})), 0) << "node " << n;
  }
  std::atomic<bool> stop{false};
  std::atomic<int> reads{0}, wrong{0}, failed{0};
  std::string first_failure;
  std::thread reader([&] {
    while (!stop.load()) {
      for (int i = 0; i < kTensors && !stop.load(); ++i) {
        auto found = (*b)->Find("kv", "block." + std::to_string(i));
        std::vector<uint8_t> got;
        absl::Status st = found.ok() ? ReadInto(**b, found->range, got) : found.status();
        if (found.ok()) (*b)->Free(found->range);
        if (!st.ok()) {
          if (failed++ == 0) first_failure = st.ToString();
          continue;
        }
        ++reads;
        if (got != bytes[i]) ++wrong;
      }
    }
  });
  // Half of node 0's slots move to node 1 while the reader runs.
  auto [rc, out] = cluster.Reshard(0, 1, 2730);
  stop = true;
  reader.join();
  EXPECT_EQ(rc, 0) << out;
  std::printf("%d tensors read during the resharding, %d redirections followed\n", reads.load(),
              static_cast<int>((*b)->stats().redirections));
  EXPECT_GT(reads.load(), kTensors);
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_EQ(failed.load(), 0) << first_failure;
  // Every tensor still reads right afterwards, through either tier's (refreshed) slot map.
  for (int i = 0; i < kTensors; ++i) {
    auto found = (*b)->Find("kv", "block." + std::to_string(i));
    ASSERT_TRUE(found.ok()) << found.status();
    std::vector<uint8_t> got;
    ASSERT_TRUE(ReadInto(**b, found->range, got).ok());
    EXPECT_EQ(got, bytes[i]);
    (*b)->Free(found->range);
  }
  EXPECT_GT((*b)->stats().redirections + (*a)->stats().redirections, 0u);
  for (Range r : puts) (*a)->Free(r);
}

}  // namespace
}  // namespace tensord::tiers
