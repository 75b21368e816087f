// The persistent object index (store/index.h): records survive a reopen, a torn or corrupt tail
// loses only what follows it, compaction keeps exactly the live records, and the allocators'
// Claim re-creates the allocations a restart finds.
#include "daemon/store/index.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "daemon/memory/fixed_pool.h"
#include "daemon/memory/general_allocator.h"
#include "daemon/store/object_table.h"

namespace tensord::store {
namespace {

std::string TempPath() {
  char tmpl[] = "/tmp/tensord-index-XXXXXX";
  const int fd = mkstemp(tmpl);
  close(fd);
  unlink(tmpl);
  return tmpl;
}

index::Tensor Record(const std::string& key, uint64_t offset) {
  index::Tensor t;
  t.set_key(key);
  t.set_nbytes(4096);
  t.mutable_host()->set_offset(offset);
  t.set_checksum(offset * 31 + 7);
  return t;
}

void Put(Index& index, const std::string& key, uint64_t offset) {
  index.Put(ObjectTable::TableKey("", key), Record(key, offset));
}

TEST(Index, RecordsAndErasuresSurviveAReopen) {
  const std::string path = TempPath();
  {
    LoadedIndex loaded;
    auto index = Index::Open(path, &loaded);
    ASSERT_TRUE(index.ok()) << index.status();
    EXPECT_TRUE(loaded.tensors.empty());
    Put(**index, "a", 0);
    Put(**index, "b", 4096);
    Put(**index, "a", 8192);  // replaces a's record
    (*index)->Erase(ObjectTable::TableKey("", "b"), "", "b");
    Put(**index, "c", 12288);
  }  // no clean close matters: every record is in the file when Put returns
  LoadedIndex loaded;
  auto index = Index::Open(path, &loaded);
  ASSERT_TRUE(index.ok());
  ASSERT_EQ(loaded.tensors.size(), 2u);
  EXPECT_EQ(loaded.tensors.at(ObjectTable::TableKey("", "a")).host().offset(), 8192u);
  EXPECT_EQ(loaded.tensors.at(ObjectTable::TableKey("", "c")).checksum(), 12288u * 31 + 7);
  EXPECT_EQ(loaded.dropped_bytes, 0u);
  std::filesystem::remove(path);
}

std::string Bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

TEST(Index, ATornTailLosesOnlyTheLastRecord) {
  const std::string path = TempPath();
  {
    LoadedIndex loaded;
    auto index = Index::Open(path, &loaded);
    ASSERT_TRUE(index.ok());
    for (int i = 0; i < 10; ++i) Put(**index, "k" + std::to_string(i), 4096 * i);
  }
  const std::string whole = Bytes(path);
  // Every cut loses at most the record it cuts through, never one before it.
  for (size_t cut = whole.size() - 40; cut < whole.size(); cut += 3) {  // a frame is > 40 bytes
    LoadedIndex loaded = Index::Parse(absl::string_view(whole).substr(0, cut));
    EXPECT_EQ(loaded.tensors.size(), 9u) << cut;
    EXPECT_GT(loaded.dropped_bytes, 0u);
  }
  EXPECT_EQ(Index::Parse(whole).tensors.size(), 10u);
  std::filesystem::remove(path);
}

TEST(Index, AFlippedBitStopsTheReadAtThatRecord) {
  const std::string path = TempPath();
  {
    LoadedIndex loaded;
    auto index = Index::Open(path, &loaded);
    ASSERT_TRUE(index.ok());
    for (int i = 0; i < 10; ++i) Put(**index, "k" + std::to_string(i), 4096 * i);
  }
  std::string bytes = Bytes(path);
  bytes[bytes.size() / 2] ^= 0x10;
  LoadedIndex loaded = Index::Parse(bytes);
  EXPECT_LT(loaded.tensors.size(), 10u);
  EXPECT_GT(loaded.tensors.size(), 2u);
  EXPECT_GT(loaded.dropped_bytes, 0u);
  for (const auto& [key, t] : loaded.tensors) {
    EXPECT_EQ(t.checksum(), t.host().offset() * 31 + 7) << "a record read is a record written";
  }
  std::filesystem::remove(path);
}

TEST(Index, CompactionKeepsExactlyTheLiveRecords) {
  const std::string path = TempPath();
  LoadedIndex loaded;
  auto index = Index::Open(path, &loaded);
  ASSERT_TRUE(index.ok());
  // 30,000 updates of 100 keys: the log grows past 1 MiB, far past twice its live records.
  for (int round = 0; round < 300; ++round) {
    for (int k = 0; k < 100; ++k) Put(**index, "k" + std::to_string(k), 4096 * (round * 100 + k));
  }
  const uint64_t before = (*index)->Stats().file_bytes;
  (*index)->Maintain();
  const IndexStats after = (*index)->Stats();
  EXPECT_EQ(after.compactions, 2u);  // the one at Open, and this one
  EXPECT_LT(after.file_bytes, before / 50);
  EXPECT_EQ(std::filesystem::file_size(path), after.file_bytes);
  Put(**index, "k0", 1);  // appends go to the new file
  LoadedIndex again = Index::Parse(Bytes(path));
  ASSERT_EQ(again.tensors.size(), 100u);
  EXPECT_EQ(again.tensors.at(ObjectTable::TableKey("", "k0")).host().offset(), 1u);
  EXPECT_EQ(again.tensors.at(ObjectTable::TableKey("", "k7")).host().offset(), 4096u * 29907);
  std::filesystem::remove(path);
}

TEST(Claim, GeneralAllocatorReservesExactlyTheRangeAndRefusesOverlaps) {
  memory::GeneralAllocator a(0, 1 << 20);
  ASSERT_TRUE(a.Claim(8192, 5000).ok());  // 8 KiB reserved at 8192
  EXPECT_FALSE(a.Claim(12288, 100).ok()) << "overlaps the first claim";
  EXPECT_FALSE(a.Claim(100, 10).ok()) << "not aligned";
  EXPECT_FALSE(a.Claim(1 << 20, 4096).ok()) << "outside";
  ASSERT_TRUE(a.Claim(0, 4096).ok());
  EXPECT_EQ(a.Stats().used_bytes, 4096u + 8192u);
  // What is left is allocatable, and frees coalesce as usual.
  auto next = a.Allocate(4096);
  ASSERT_TRUE(next.ok());
  EXPECT_EQ(*next, 4096u);
  EXPECT_TRUE(a.Free(8192).ok());
  EXPECT_TRUE(a.Free(0).ok());
  EXPECT_TRUE(a.Free(4096).ok());
  EXPECT_EQ(a.Stats().largest_free_bytes, 1u << 20);
}

TEST(Claim, FixedPoolClaimsOneBlockOnce) {
  memory::FixedPool p(0, 4096, 4);
  EXPECT_TRUE(p.Claim(8192, 4096).ok());
  EXPECT_FALSE(p.Claim(8192, 10).ok());
  EXPECT_FALSE(p.Claim(100, 10).ok());
  EXPECT_FALSE(p.Claim(0, 5000).ok()) << "larger than a block";
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(p.Allocate(4096).ok());
  EXPECT_FALSE(p.Allocate(4096).ok()) << "the claimed block is not handed out again";
}

}  // namespace
}  // namespace tensord::store
