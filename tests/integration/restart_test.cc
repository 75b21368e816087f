// Warm restart end to end: the real daemon is killed (SIGKILL) or stopped (SIGTERM) and started
// again on the same run directory; sealed tensors come back with the same bytes from their
// taken-over segments and from the swap file, unsealed creates are gone, bytes changed behind
// the daemon's back are caught by the check and never served, and segments that are not exactly
// the ones the last instance left are not taken over.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "tensord/client.h"
#include "tests/integration/harness.h"

namespace tensord::testing {
namespace {

constexpr uint64_t kTensorBytes = 256 << 10;

std::unique_ptr<Client> ConnectTo(const Daemon& d) {
  ClientOptions opts;
  opts.socket_path = d.socket();
  opts.client_name = "restart_test";
  opts.reconnect_timeout = std::chrono::milliseconds(0);
  auto c = Client::Connect(opts);
  EXPECT_TRUE(c.ok()) << c.status();
  return c.ok() ? *std::move(c) : nullptr;
}

uint8_t Pattern(int tensor, uint64_t i) {
  return static_cast<uint8_t>(tensor * 131 + i * 7 + (i >> 9));
}

void Put(Client& c, const std::string& key, int tensor, Durability durability) {
  CreateOptions o;
  o.durability = durability;
  auto t = c.Create(key, DType::kUInt8, {static_cast<int64_t>(kTensorBytes)}, o);
  ASSERT_TRUE(t.ok()) << t.status();
  auto* p = static_cast<uint8_t*>(t->data());
  for (uint64_t i = 0; i < kTensorBytes; ++i) p[i] = Pattern(tensor, i);
  ASSERT_TRUE(t->Seal().ok());
}

// Returns the status of a Get of `key`, checking its bytes when it succeeds.
absl::Status GetAndCheck(Client& c, const std::string& key, int tensor) {
  auto l = c.Get(key);
  if (!l.ok()) return l.status();
  const auto* p = static_cast<const uint8_t*>(l->data());
  for (uint64_t i = 0; i < kTensorBytes; ++i) {
    if (p[i] != Pattern(tensor, i)) {
      return absl::InternalError(absl::StrCat(key, ": wrong byte at ", i));
    }
  }
  return absl::OkStatus();
}

std::vector<std::string> SegmentsOf(const Daemon& d) {
  // The manifest the daemon keeps in its run directory names its segments, one per line after
  // the first, up to the checksum line.
  std::ifstream in(d.run_dir() + "/segments");
  std::vector<std::string> names;
  std::string line;
  std::getline(in, line);
  while (std::getline(in, line)) {
    if (line.rfind("sum ", 0) == 0) break;
    names.push_back(line.substr(0, line.find(' ')));
  }
  return names;
}

uint64_t Counter(Client& c, const std::string& name) {
  auto s = c.GetStats();
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? s->counters[name] : 0;
}

class Restart : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = MakeTempDir();
    args_ = {"--host-capacity", "64MiB", "--swap-file", dir_ + "/swap", "--swap-size", "64MiB"};
  }
  // Every instance keeps its state for the next one; the test's end forgets it.
  std::unique_ptr<Daemon> Start() {
    auto d = std::make_unique<Daemon>(args_, dir_);
    d->KeepState();
    return d;
  }
  void TearDown() override {
    RunCommand(DaemonBinary() + " --forget --log-level error --run-dir '" + dir_ + "' >/dev/null");
  }

  // Stores tensors 0..4 DURABLE (1 and 3 then evicted to the swap file), 5 CACHE, and leaves
  // "unsealed" unsealed.
  void Populate(Daemon& d) {
    writer_ = ConnectTo(d);
    ASSERT_NE(writer_, nullptr);
    Client* c = writer_.get();
    for (int i = 0; i < 5; ++i) Put(*c, absl::StrCat("durable.", i), i, Durability::kDurable);
    Put(*c, "cache.5", 5, Durability::kCache);
    for (int i : {1, 3}) {
      auto e = c->Evict(absl::StrCat("durable.", i));
      ASSERT_TRUE(e.ok()) << e.status();
    }
    auto open = c->Create("unsealed", DType::kUInt8, {4096});
    ASSERT_TRUE(open.ok());
    open_.push_back(*std::move(open));  // stays unsealed while the daemon dies
  }

  void ExpectAllBack(Daemon& d) {
    auto c = ConnectTo(d);
    ASSERT_NE(c, nullptr);
    for (int i = 0; i < 5; ++i) {
      EXPECT_TRUE(GetAndCheck(*c, absl::StrCat("durable.", i), i).ok()) << "durable." << i;
    }
    EXPECT_TRUE(GetAndCheck(*c, "cache.5", 5).ok());
    EXPECT_EQ(c->Stat("unsealed").status().code(), absl::StatusCode::kNotFound);
    auto on_ssd = c->Stat("durable.1");
    ASSERT_TRUE(on_ssd.ok());
    EXPECT_GT(on_ssd->ssd_stored_bytes, 0u);
  }

  std::string dir_;
  std::vector<std::string> args_;
  std::unique_ptr<Client> writer_;  // the client that wrote, with its unsealed create
  std::vector<WritableTensor> open_;
};

TEST_F(Restart, KillNineKeepsEverySealedTensorAndTakesOverTheSegments) {
  std::vector<std::string> before;
  {
    auto d = Start();
    ASSERT_TRUE(d->ok());
    Populate(*d);
    before = SegmentsOf(*d);
    d->KillHard();
  }
  ASSERT_FALSE(before.empty());
  auto again = Start();
  ASSERT_TRUE(again->ok());
  EXPECT_EQ(SegmentsOf(*again), before) << "the same segments, taken over";
  ExpectAllBack(*again);
  auto c = ConnectTo(*again);
  EXPECT_EQ(Counter(*c, "restored"), 6u);
  EXPECT_EQ(Counter(*c, "restore_dropped"), 0u);
  EXPECT_EQ(Counter(*c, "restore_verify_failures"), 0u);
  // The space of the unsealed create is free again: 64 MiB minus six tensors' worth fits.
  auto big = c->Create("big", DType::kUInt8, {40 << 20});
  EXPECT_TRUE(big.ok()) << big.status();
}

TEST_F(Restart, CleanStopKeepsThemToo) {
  {
    auto d = Start();
    ASSERT_TRUE(d->ok());
    Populate(*d);
    EXPECT_EQ(d->Stop(), 0);
  }
  auto again = Start();
  ASSERT_TRUE(again->ok());
  ExpectAllBack(*again);
  // Twice in a row: the restored state is recorded again.
  EXPECT_EQ(again->Stop(), 0);
  auto third = Start();
  ASSERT_TRUE(third->ok());
  ExpectAllBack(*third);
}

TEST_F(Restart, BytesChangedWhileTheDaemonWasDownAreDataLossNeverServed) {
  std::vector<std::string> segments;
  uint64_t arena = 0, offset = 0;
  {
    auto d = Start();
    ASSERT_TRUE(d->ok());
    Populate(*d);
    auto c = ConnectTo(*d);
    auto info = c->Stat("durable.2");
    ASSERT_TRUE(info.ok());
    arena = info->location.arena;
    offset = info->location.offset;
    segments = SegmentsOf(*d);
    d->KillHard();
  }
  ASSERT_LT(arena, segments.size());
  {
    const std::string path = "/dev/shm/" + segments[arena];
    const int fd = ::open(path.c_str(), O_RDWR);
    ASSERT_GE(fd, 0) << path;
    const uint8_t junk = 0xee ^ Pattern(2, 100);
    ASSERT_EQ(::pwrite(fd, &junk, 1, static_cast<off_t>(offset + 100)), 1);
    ::close(fd);
  }
  auto again = Start();
  ASSERT_TRUE(again->ok());
  auto c = ConnectTo(*again);
  // Checked in the background or by this Get, whichever came first: lost either way, and said so.
  EXPECT_EQ(GetAndCheck(*c, "durable.2", 2).code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(c->Stat("durable.2").status().code(), absl::StatusCode::kDataLoss);
  EXPECT_GE(Counter(*c, "restore_verify_failures"), 1u);
  EXPECT_GE(Counter(*c, "data_loss"), 1u);
  for (int i : {0, 1, 3, 4}) {
    EXPECT_TRUE(GetAndCheck(*c, absl::StrCat("durable.", i), i).ok()) << "durable." << i;
  }
}

TEST_F(Restart, ASegmentWithAnotherModeIsNotTakenOverButSwappedTensorsSurvive) {
  std::vector<std::string> segments;
  {
    auto d = Start();
    ASSERT_TRUE(d->ok());
    Populate(*d);
    segments = SegmentsOf(*d);
    d->KillHard();
  }
  ASSERT_FALSE(segments.empty());
  // Someone widened a segment's mode while the daemon was down: it is not trusted any more.
  ASSERT_EQ(::chmod(("/dev/shm/" + segments[0]).c_str(), 0666), 0);
  auto again = Start();
  ASSERT_TRUE(again->ok());
  EXPECT_NE(SegmentsOf(*again), segments) << "new segments";
  for (const std::string& name : segments) {
    EXPECT_FALSE(std::filesystem::exists("/dev/shm/" + name)) << name << " left behind";
  }
  auto c = ConnectTo(*again);
  // The evicted tensors had their bytes in the swap file only: they are back.
  for (int i : {1, 3}) {
    EXPECT_TRUE(GetAndCheck(*c, absl::StrCat("durable.", i), i).ok()) << "durable." << i;
  }
  // The others lived in the shared memory that was refused: gone, and counted.
  EXPECT_EQ(c->Stat("durable.0").status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(c->Stat("cache.5").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(Counter(*c, "restore_dropped"), 4u);  // durable 0, 2, 4 and cache.5
  // Deleting a lost tensor forgets it; creating it again works.
  EXPECT_TRUE(c->Delete("durable.0").ok());
  EXPECT_EQ(c->Stat("durable.0").status().code(), absl::StatusCode::kNotFound);
  Put(*c, "durable.2", 2, Durability::kDurable);
  EXPECT_TRUE(GetAndCheck(*c, "durable.2", 2).ok());
}

TEST_F(Restart, ACorruptIndexTailLosesOnlyTheTornRecord) {
  {
    auto d = Start();
    ASSERT_TRUE(d->ok());
    Populate(*d);
    d->KillHard();
  }
  // A torn write: the last bytes of the index are garbage.
  {
    std::ofstream out(dir_ + "/index", std::ios::app | std::ios::binary);
    out << std::string(37, '\x5a');
  }
  auto again = Start();
  ASSERT_TRUE(again->ok());
  ExpectAllBack(*again);
}

TEST_F(Restart, PersistOffStartsEmpty) {
  args_.insert(args_.end(), {"--set", "daemon.persist=false"});
  {
    auto d = Start();
    ASSERT_TRUE(d->ok());
    Populate(*d);
    d->KillHard();
  }
  auto again = Start();
  ASSERT_TRUE(again->ok());
  auto c = ConnectTo(*again);
  EXPECT_EQ(c->Stat("durable.0").status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace tensord::testing
