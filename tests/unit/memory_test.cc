// Fixed pools, the general allocator and pool selection.
#include <gtest/gtest.h>

#include <memory>
#include <random>
#include <set>

#include "daemon/memory/fixed_pool.h"
#include "daemon/memory/general_allocator.h"
#include "daemon/memory/pool_set.h"

namespace tensord::memory {
namespace {

TEST(FixedPool, HandsOutEveryBlockOnceThenExhausts) {
  FixedPool pool(/*base=*/4096, /*block_size=*/1024, /*block_count=*/8);
  std::set<uint64_t> seen;
  for (int i = 0; i < 8; ++i) {
    auto off = pool.Allocate(1000);
    ASSERT_TRUE(off.ok()) << off.status();
    EXPECT_EQ((*off - 4096) % 1024, 0u);
    EXPECT_LT(*off, 4096u + 8 * 1024);
    EXPECT_TRUE(seen.insert(*off).second) << "block handed out twice";
  }
  EXPECT_EQ(pool.Allocate(1).status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(pool.Stats().blocks_used, 8u);
  EXPECT_EQ(pool.Stats().allocation_failures, 1u);
}

TEST(FixedPool, ReusesFreedBlockAndRejectsDoubleFree) {
  FixedPool pool(0, 256, 2);
  auto a = pool.Allocate(256);
  auto b = pool.Allocate(10);
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_TRUE(pool.Free(*a).ok());
  EXPECT_EQ(pool.Free(*a).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(pool.Free(*a + 1).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(pool.Free(10 * 256).code(), absl::StatusCode::kInvalidArgument);
  auto c = pool.Allocate(100);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(*c, *a);
}

TEST(FixedPool, RejectsSizesThatDoNotFitABlock) {
  FixedPool pool(0, 256, 2);
  EXPECT_EQ(pool.Allocate(0).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(pool.Allocate(257).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(pool.Fits(257));
  EXPECT_DOUBLE_EQ(pool.Stats().Fragmentation(), 0.0);
}

TEST(GeneralAllocator, AlignsAndRoundsUp) {
  GeneralAllocator a(0, 1 << 20, 4096);
  auto x = a.Allocate(1);
  auto y = a.Allocate(5000);
  ASSERT_TRUE(x.ok() && y.ok());
  EXPECT_EQ(*x % 4096, 0u);
  EXPECT_EQ(*y % 4096, 0u);
  EXPECT_EQ(a.Stats().used_bytes, 4096u + 8192u);
}

TEST(GeneralAllocator, CoalescesNeighboursBackToOneRange) {
  GeneralAllocator a(0, 64 * 4096, 4096);
  std::vector<uint64_t> offs;
  for (int i = 0; i < 64; ++i) offs.push_back(*a.Allocate(4096));
  EXPECT_EQ(a.Allocate(4096).status().code(), absl::StatusCode::kResourceExhausted);
  // Free every other block: 32 free blocks, none adjacent -> heavily fragmented.
  for (int i = 0; i < 64; i += 2) ASSERT_TRUE(a.Free(offs[i]).ok());
  EXPECT_EQ(a.Stats().largest_free_bytes, 4096u);
  EXPECT_NEAR(a.Stats().Fragmentation(), 1.0 - 1.0 / 32, 1e-9);
  EXPECT_EQ(a.Allocate(8192).status().code(), absl::StatusCode::kResourceExhausted);
  for (int i = 1; i < 64; i += 2) ASSERT_TRUE(a.Free(offs[i]).ok());
  EXPECT_EQ(a.Stats().largest_free_bytes, 64u * 4096);
  EXPECT_DOUBLE_EQ(a.Stats().Fragmentation(), 0.0);
  EXPECT_TRUE(a.Allocate(64 * 4096).ok());
}

TEST(GeneralAllocator, BestFitPrefersTheSmallestHole) {
  GeneralAllocator a(0, 16 * 4096, 4096);
  auto h1 = *a.Allocate(4 * 4096);  // [0,4)
  auto s1 = *a.Allocate(4096);      // [4,5)
  auto h2 = *a.Allocate(2 * 4096);  // [5,7)
  auto s2 = *a.Allocate(4096);      // [7,8)
  ASSERT_TRUE(a.Free(h1).ok());
  ASSERT_TRUE(a.Free(h2).ok());
  EXPECT_EQ(*a.Allocate(2 * 4096), h2) << "a 2-block request must take the 2-block hole";
  (void)s1;
  (void)s2;
}

TEST(GeneralAllocator, RandomWorkloadKeepsRangesDisjointAndAccountsExactly) {
  GeneralAllocator a(0, 1 << 24, 4096);
  std::mt19937_64 rng(42);
  std::map<uint64_t, uint64_t> live;  // offset -> reserved
  for (int i = 0; i < 20000; ++i) {
    if (live.empty() || rng() % 3 != 0) {
      const uint64_t size = 1 + rng() % (256 << 10);
      auto off = a.Allocate(size);
      if (!off.ok()) continue;
      auto next = live.lower_bound(*off);
      if (next != live.end()) {
        ASSERT_LE(*off + a.Reserved(size), next->first);
      }
      if (next != live.begin()) {
        auto prev = std::prev(next);
        ASSERT_LE(prev->first + prev->second, *off);
      }
      live[*off] = a.Reserved(size);
    } else {
      auto it = std::next(live.begin(), static_cast<long>(rng() % live.size()));
      ASSERT_TRUE(a.Free(it->first).ok());
      live.erase(it);
    }
  }
  uint64_t used = 0;
  for (auto& [off, size] : live) used += size;
  EXPECT_EQ(a.Stats().used_bytes, used);
  for (auto& [off, size] : live) ASSERT_TRUE(a.Free(off).ok());
  EXPECT_EQ(a.Stats().largest_free_bytes, uint64_t{1} << 24);
}

TEST(PoolSet, PicksTheSmallestFittingClassThenGeneral) {
  PoolSet set;
  set.Add("big", 0, true, std::make_unique<FixedPool>(0, 16384, 4));
  set.Add("small", 1, true, std::make_unique<FixedPool>(0, 4096, 4));
  set.Add("general", 2, false, std::make_unique<GeneralAllocator>(0, 1 << 20));
  EXPECT_EQ(*set.Candidates(4000, ""), (std::vector<uint32_t>{1, 2}));
  EXPECT_EQ(*set.Candidates(10000, ""), (std::vector<uint32_t>{0, 2}));
  // Under half a block wastes too much: general only.
  EXPECT_EQ(*set.Candidates(1000, ""), (std::vector<uint32_t>{2}));
  EXPECT_EQ(*set.Candidates(1000, "big"), (std::vector<uint32_t>{0}));
  EXPECT_EQ(set.Candidates(1000, "nope").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(set.Candidates(20000, "small").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(set.Candidates(2 << 20, "").status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace tensord::memory
