// Policies in isolation: the order in which eviction policies offer victims, and the demand the
// pressure policy makes of a migrator.
#include <gtest/gtest.h>

#include <vector>

#include "absl/strings/str_cat.h"
#include "common/clock.h"
#include "daemon/policy/eviction.h"
#include "daemon/policy/predictor.h"
#include "daemon/policy/pressure.h"

namespace tensord::policy {
namespace {

std::vector<Handle> Order(EvictionPolicy& p, size_t max = 100, Demand demand = {}) {
  std::vector<Handle> out;
  p.Victims(demand, [&](Handle h) {
    out.push_back(h);
    return out.size() < max ? Verdict::kTake : Verdict::kStop;
  });
  return out;
}

TEST(LruPolicy, OffersLeastRecentlyUsedFirst) {
  LruPolicy lru;
  for (Handle h : {1, 2, 3, 4}) lru.Insert(h, {0, 1});
  EXPECT_EQ(Order(lru), (std::vector<Handle>{1, 2, 3, 4}));
  lru.Access(1);
  lru.Access(3);
  EXPECT_EQ(Order(lru), (std::vector<Handle>{2, 4, 1, 3}));
  lru.Insert(2, {0, 1});  // already tracked: no change of rank
  EXPECT_EQ(Order(lru), (std::vector<Handle>{2, 4, 1, 3}));
  EXPECT_EQ(Order(lru, 2), (std::vector<Handle>{2, 4})) << "stops when visit returns false";
}

TEST(LruPolicy, RemoveAndUntrackedHandles) {
  LruPolicy lru;
  lru.Insert(7, {0, 1});
  lru.Insert(8, {0, 1});
  lru.Remove(7, RemovalReason::kDeleted);
  lru.Remove(99, RemovalReason::kEvicted);  // untracked: ignored
  lru.Access(42);                           // untracked: ignored, not inserted
  EXPECT_FALSE(lru.Contains(7));
  EXPECT_FALSE(lru.Contains(42));
  EXPECT_TRUE(lru.Contains(8));
  EXPECT_EQ(lru.size(), 1u);
  EXPECT_EQ(Order(lru), (std::vector<Handle>{8}));
}

TEST(LruPolicy, OffersOnlyEligibleVictimsForADemand) {
  LruPolicy lru;
  lru.Insert(1, {0, 100});
  lru.Insert(2, {1, 100});
  lru.Insert(3, {0, 100});
  lru.Insert(4, {0, 100});
  lru.Pin(1);
  lru.Pin(1);  // pins nest
  EXPECT_EQ(Order(lru), (std::vector<Handle>{2, 3, 4})) << "a pinned handle is never offered";
  lru.Unpin(1);
  EXPECT_EQ(Order(lru), (std::vector<Handle>{2, 3, 4})) << "still pinned once";
  lru.Unpin(1);
  EXPECT_EQ(Order(lru), (std::vector<Handle>{1, 2, 3, 4}));
  const uint32_t pool0[] = {0};
  EXPECT_EQ(Order(lru, 100, Demand{pool0}), (std::vector<Handle>{1, 3, 4}))
      << "only the demand's pools";
  EXPECT_EQ(Order(lru, 100, Demand{pool0, 150}), (std::vector<Handle>{1, 3}))
      << "stops once the demand's bytes are taken";
  // Skipped victims do not count toward the demand.
  std::vector<Handle> seen;
  lru.Victims(Demand{{}, 100}, [&](Handle h) {
    seen.push_back(h);
    return h == 1 ? Verdict::kSkip : Verdict::kTake;
  });
  EXPECT_EQ(seen, (std::vector<Handle>{1, 2}));
}

TEST(EvictionPolicy, ChosenByName) {
  for (absl::string_view name : kPolicyNames) {
    auto p = MakeEvictionPolicy(name);
    ASSERT_TRUE(p.ok()) << name;
    EXPECT_EQ((*p)->name(), name);
  }
  auto bad = MakeEvictionPolicy("mru");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("s3fifo+chain"), std::string::npos)
      << "names the known ones";
  EXPECT_FALSE(MakeEvictionPolicy("+chain").ok());
  EXPECT_FALSE(MakeEvictionPolicy("lru+chain+chain").ok());
}

// A tensor of a chain: handle h, id 100+h, parent 100+p (p = 0: none).
Footprint Block(Handle h, Handle p = 0, uint64_t bytes = 1, uint32_t space = 0) {
  return {space, bytes, 100 + h, p == 0 ? 0 : 100 + p};
}

TEST(S3FifoPolicy, NewCopiesOnProbationUsedOnesMoveToMain) {
  S3FifoPolicy s3(false, PolicyOptions{.s3fifo_small = 0.5});
  for (Handle h : {1, 2, 3, 4}) s3.Insert(h, Block(h));
  for (Handle h : {1, 2, 3, 4}) EXPECT_EQ(s3.QueueOf(h), 0) << "enters the small queue";
  s3.Access(2);
  // All four are on probation (over the small share): the unused go first, oldest first; 2
  // was used there, so it moves to main instead of being offered, and comes last.
  EXPECT_EQ(Order(s3), (std::vector<Handle>{1, 3, 4, 2}));
  EXPECT_EQ(s3.QueueOf(2), 1);
  EXPECT_EQ(s3.QueueOf(1), 0);
}

TEST(S3FifoPolicy, MainRequeuesUsedCopiesAndProbationGoesFirstWhenOverItsShare) {
  S3FifoPolicy s3(false, PolicyOptions{.s3fifo_small = 0.3});
  for (Handle h : {1, 2, 3, 4}) s3.Insert(h, Block(h));
  for (Handle h : {1, 2, 3, 4}) s3.Access(h);
  Order(s3, 1);  // looks: all four were used on probation, so all move to main
  for (Handle h : {1, 2, 3, 4}) EXPECT_EQ(s3.QueueOf(h), 1);
  s3.Access(1);
  s3.Access(1);
  s3.Access(3);
  // Small is empty (under its share): main first; 1 and 3 are re-queued with a use less.
  EXPECT_EQ(Order(s3, 2), (std::vector<Handle>{2, 4}));
  s3.Insert(5, Block(5));
  // 1/5 of the bytes on probation is under 0.3? 0.2 < 0.3: main goes first still: 3 (its one
  // use spent), then 1 after its second requeue, then the probation copy.
  EXPECT_EQ(Order(s3), (std::vector<Handle>{2, 4, 3, 1, 5}));
  s3.Insert(6, Block(6));
  s3.Insert(7, Block(7));  // 3/7 on probation: over the share, the small queue goes first
  EXPECT_EQ(Order(s3, 3), (std::vector<Handle>{5, 6, 7}));
}

TEST(S3FifoPolicy, AUsedCopyAtMainsTailIsStillOfferedOnceItsUsesAreSpent) {
  S3FifoPolicy s3;
  s3.Insert(1, Block(1));
  s3.Insert(2, Block(2));
  s3.Access(1);
  s3.Access(2);
  Order(s3, 1);  // both used on probation: both move to main
  ASSERT_EQ(s3.QueueOf(2), 1);
  s3.Access(2);
  s3.Pin(1);
  EXPECT_EQ(Order(s3), (std::vector<Handle>{2})) << "1 is pinned; 2 at the tail, its use spent";
}

TEST(ChainAware, TakeAndStopEndsTheCallButCountsTheVictim) {
  LruPolicy p(/*chain_aware=*/true);
  p.Insert(1, Block(1));
  for (Handle h : {2, 3, 4}) p.Insert(h, Block(h, h - 1));
  std::vector<Handle> seen;
  p.Victims({}, [&](Handle h) {
    seen.push_back(h);
    return seen.size() == 2 ? Verdict::kLast : Verdict::kTake;
  });
  EXPECT_EQ(seen, (std::vector<Handle>{4, 3}));
  p.Remove(4, RemovalReason::kEvicted);
  p.Remove(3, RemovalReason::kEvicted);
  seen.clear();
  p.Victims({}, [&](Handle h) {
    seen.push_back(h);
    return Verdict::kLast;
  });
  EXPECT_EQ(seen, (std::vector<Handle>{2})) << "the next call goes on with the same chain";
}

TEST(S3FifoPolicy, GhostsSendAQuickReturnToMain) {
  S3FifoPolicy s3;
  s3.Insert(1, Block(1));
  s3.Insert(2, Block(2));
  s3.Insert(3, Block(3));
  s3.Remove(1, RemovalReason::kEvicted);  // left probation unused: remembered
  s3.Remove(2, RemovalReason::kDeleted);  // gone for good: not remembered
  s3.Remove(3, RemovalReason::kDemoted);  // went down a tier unused: remembered
  EXPECT_EQ(s3.ghosts(), 2u);
  s3.Insert(11, Block(1));  // the same tensor (id 101), back from below
  s3.Insert(12, Block(2));
  s3.Insert(13, Block(3));
  EXPECT_EQ(s3.QueueOf(11), 1) << "a ghost hit enters main";
  EXPECT_EQ(s3.QueueOf(12), 0) << "a deleted tensor left no ghost";
  EXPECT_EQ(s3.QueueOf(13), 1);
  EXPECT_EQ(s3.ghosts(), 0u) << "a ghost is used once";
}

TEST(S3FifoPolicy, GhostFifoIsBounded) {
  S3FifoPolicy s3;
  for (Handle h = 1; h <= 5000; ++h) {
    s3.Insert(h, Block(h));
    s3.Remove(h, RemovalReason::kEvicted);
  }
  EXPECT_LE(s3.ghosts(), 1024u) << "at most max(1024, tracked) ids";
  s3.Insert(9001, Block(1));
  EXPECT_EQ(s3.QueueOf(9001), 0) << "the oldest ghosts were forgotten";
  s3.Insert(9002, Block(5000));
  EXPECT_EQ(s3.QueueOf(9002), 1) << "the newest one is remembered";
}

TEST(SlruPolicy, AUseMovesACopyOneLevelUpAndVictimsComeFromTheBottom) {
  SlruPolicy p;
  for (Handle h = 1; h <= 6; ++h) p.Insert(h, Block(h));
  for (Handle h = 1; h <= 6; ++h) EXPECT_EQ(p.LevelOf(h), 0);
  p.Access(2);
  EXPECT_EQ(p.LevelOf(2), 1);
  p.Access(2);
  p.Access(5);
  EXPECT_EQ(p.LevelOf(2), 2);
  EXPECT_EQ(p.LevelOf(5), 1);
  EXPECT_EQ(p.LevelOf(9), -1);
  // Least recent of level 0, then of level 1, then level 2.
  EXPECT_EQ(Order(p), (std::vector<Handle>{1, 3, 4, 6, 5, 2}));
}

TEST(SlruPolicy, AFullLevelPushesItsLeastRecentCopyDown) {
  SlruPolicy p;  // 6 copies of one byte: each level holds at most 2
  for (Handle h = 1; h <= 6; ++h) p.Insert(h, Block(h));
  for (Handle h : {1, 2, 3}) {
    p.Access(h);
    p.Access(h);
  }
  EXPECT_EQ(p.LevelOf(3), 2);
  EXPECT_EQ(p.LevelOf(2), 2);
  EXPECT_EQ(p.LevelOf(1), 1) << "pushed down by 3: a third of the bytes per level";
  EXPECT_EQ(Order(p), (std::vector<Handle>{4, 5, 6, 1, 2, 3}));
}

TEST(SlruPolicy, ACopyComesBackAtTheLevelItsPastUsesEarned) {
  SlruPolicy p;
  for (Handle h = 50; h < 62; ++h) p.Insert(h, Block(h));  // room for 4 in each level
  for (Handle h : {1, 2, 3, 4}) p.Insert(h, Block(h));
  p.Access(1);
  p.Access(1);                           // three uses
  p.Access(2);                           // two
  p.Access(4);                           // two, but deleted
  p.Remove(1, RemovalReason::kEvicted);  // remembered with their uses
  p.Remove(2, RemovalReason::kDemoted);
  p.Remove(3, RemovalReason::kEvicted);
  p.Remove(4, RemovalReason::kDeleted);  // gone for good
  EXPECT_EQ(p.remembered(), 3u);
  p.Insert(11, Block(1));  // the same tensors (ids 101..104), back from below
  p.Insert(12, Block(2));
  p.Insert(13, Block(3));
  p.Insert(14, Block(4));
  EXPECT_EQ(p.LevelOf(11), 2) << "a fourth use";
  EXPECT_EQ(p.LevelOf(12), 2) << "a third use: the top level too";
  EXPECT_EQ(p.LevelOf(13), 1) << "a second use";
  EXPECT_EQ(p.LevelOf(14), 0) << "a deleted tensor's uses are forgotten";
  EXPECT_EQ(p.remembered(), 0u) << "an entry of the history is used once";
}

TEST(SlruPolicy, ACopyThatCameByAMoveBringsItsPastUsesButIsNoUseItself) {
  SlruPolicy p;
  for (Handle h = 50; h < 62; ++h) p.Insert(h, Block(h));  // room for 4 in each level
  p.Insert(1, Block(1));
  p.Access(1);  // written and read: two uses
  p.Insert(2, Block(2));
  p.Remove(1, RemovalReason::kDemoted);
  p.Remove(2, RemovalReason::kDemoted);
  Footprint up1 = Block(1), up2 = Block(2), fresh = Block(3);
  up1.moved = up2.moved = fresh.moved = true;
  p.Insert(11, up1);  // promoted back for a Get, which records its own use next
  p.Insert(12, up2);
  p.Insert(13, fresh);
  EXPECT_EQ(p.LevelOf(11), 1) << "its two past uses";
  EXPECT_EQ(p.LevelOf(12), 0) << "written, never read: one use";
  EXPECT_EQ(p.LevelOf(13), 0) << "no history: the bottom";
  p.Access(12);
  EXPECT_EQ(p.LevelOf(12), 1) << "the Get's read";
}

TEST(SlruPolicy, HistoryIsBounded) {
  SlruPolicy p;
  for (Handle h = 6000; h < 6012; ++h) p.Insert(h, Block(h));  // room in each level
  for (Handle h = 1; h <= 5000; ++h) {
    p.Insert(h, Block(h));
    p.Access(h);
    p.Remove(h, RemovalReason::kEvicted);
  }
  EXPECT_LE(p.remembered(), 1024u) << "at most max(1024, 4 x tracked) ids";
  p.Insert(9001, Block(1));
  EXPECT_EQ(p.LevelOf(9001), 0) << "the oldest were forgotten";
  p.Insert(9002, Block(5000));
  EXPECT_EQ(p.LevelOf(9002), 2) << "the newest is remembered: its third use";
}

TEST(SlruPolicy, AChainThatLostItsTailIsNotTakenWhole) {
  for (absl::string_view name : {"lru+chain", "slru+chain"}) {
    auto p = *MakeEvictionPolicy(name);
    // 1 <- 2 <- 3 with 1 and 2 read twice since; then an unrelated 9, newer than all.
    p->Insert(1, Block(1));
    p->Insert(2, Block(2, 1));
    p->Insert(3, Block(3, 2, /*bytes=*/10));  // large enough for 1 and 2 to stay up in SLRU
    for (Handle h : {1, 2, 1, 2}) p->Access(h);
    p->Insert(9, Block(9, 0, /*bytes=*/10));
    // Take one victim per call, as the store does when one tensor's room is enough.
    auto take_one = [&] {
      Handle got = 0;
      p->Victims({}, [&](Handle h) {
        got = h;
        return Verdict::kLast;
      });
      if (got != 0) p->Remove(got, RemovalReason::kEvicted);
      return got;
    };
    ASSERT_EQ(take_one(), 3u) << name;
    const Handle next = take_one();
    // LRU goes on with the chain; SLRU keeps the blocks that were read twice above 9.
    EXPECT_EQ(next, name == "lru+chain" ? 2u : 9u) << name;
  }
}

TEST(ChainAware, TakesAChainFromItsTail) {
  for (absl::string_view name : {"lru+chain", "s3fifo+chain", "slru+chain"}) {
    auto p = *MakeEvictionPolicy(name);
    // 1 <- 2 <- 3 <- 4, inserted (and so ordered) head first: LRU would take 1 first.
    p->Insert(1, Block(1));
    for (Handle h : {2, 3, 4}) p->Insert(h, Block(h, h - 1));
    EXPECT_EQ(Order(*p), (std::vector<Handle>{4, 3, 2, 1})) << name;
    EXPECT_EQ(Order(*p, 2), (std::vector<Handle>{4, 3})) << name << ": stops when told";
    EXPECT_EQ(Order(*p, 100, Demand{{}, 2}), (std::vector<Handle>{4, 3})) << name;
  }
  auto lru = *MakeEvictionPolicy("lru");
  lru->Insert(1, Block(1));
  for (Handle h : {2, 3, 4}) lru->Insert(h, Block(h, h - 1));
  EXPECT_EQ(Order(*lru), (std::vector<Handle>{1, 2, 3, 4})) << "chain-blind: as ordered";
}

TEST(ChainAware, BranchesGoBranchByBranchBeforeTheirCommonParent) {
  LruPolicy p(/*chain_aware=*/true);
  // 1 <- 2 <- 3 and 1 <- 4 <- 5; an unrelated 6, older than all.
  p.Insert(6, Block(6));
  p.Insert(1, Block(1));
  p.Insert(2, Block(2, 1));
  p.Insert(3, Block(3, 2));
  p.Insert(4, Block(4, 1));
  p.Insert(5, Block(5, 4));
  const std::vector<Handle> order = Order(p);
  ASSERT_EQ(order.size(), 6u);
  EXPECT_EQ(order[0], 6u);
  EXPECT_EQ(order.back(), 1u) << "the shared head goes last";
  auto at = [&](Handle h) { return std::find(order.begin(), order.end(), h) - order.begin(); };
  EXPECT_LT(at(3), at(2));
  EXPECT_LT(at(5), at(4));
  EXPECT_EQ(std::abs(at(3) - at(2)), 1) << "a branch goes whole, tail first";
}

TEST(ChainAware, AHeldChildKeepsItsAncestorsUnlessNothingElseIsLeft) {
  LruPolicy p(/*chain_aware=*/true);
  p.Insert(1, Block(1));
  p.Insert(2, Block(2, 1));
  p.Insert(3, Block(3, 2));
  p.Insert(9, Block(9));
  p.Pin(3);  // leased
  std::vector<Handle> first;
  // The first pass offers 9 only (1 and 2 wait for 3); the chain-blind second pass then
  // offers 1 and 2 as ordered, because room matters more than the chain.
  EXPECT_EQ(Order(p), (std::vector<Handle>{9, 1, 2}));
  // A refused leaf is not offered again, and keeps its parent.
  std::vector<Handle> seen;
  p.Unpin(3);
  p.Victims({}, [&](Handle h) {
    seen.push_back(h);
    return h == 3 ? Verdict::kSkip : Verdict::kTake;
  });
  EXPECT_EQ(seen, (std::vector<Handle>{3, 9, 1, 2})) << "pass 1: 3 refused, 9; pass 2: 1, 2";
}

TEST(ChainAware, ChildrenTrackedBeforeTheirParentStillCount) {
  LruPolicy p(/*chain_aware=*/true);
  p.Insert(2, Block(2, 1));  // the child came back from below first
  p.Insert(1, Block(1));
  p.Access(2);  // and was read since: plain LRU would now offer 1 first
  EXPECT_EQ(Order(p), (std::vector<Handle>{2, 1}));
  p.Remove(2, RemovalReason::kDemoted);
  EXPECT_EQ(Order(p), (std::vector<Handle>{1}));
}

TEST(Lifetime, ReuseAndIdleTimePerClass) {
  FakeClock clock;
  LruPolicy p(false, PolicyOptions{.clock = &clock});
  for (Handle h = 1; h <= 10; ++h) p.Insert(h, Block(h, 0, 1, /*space=*/0));
  p.Insert(20, Block(20, 0, 1, /*space=*/1));
  clock.Advance(absl::Seconds(3));
  for (Handle h = 1; h <= 4; ++h) p.Access(h);  // 4 of 10 used again after 3 s
  clock.Advance(absl::Seconds(1));
  p.Access(1);                           // and one a third time after 1 s
  p.Remove(2, RemovalReason::kEvicted);  // what was seen stays counted
  const std::vector<ClassLifetime> l = p.Lifetimes();
  ASSERT_EQ(l.size(), 2u);
  EXPECT_EQ(l[0].space, 0u);
  EXPECT_EQ(l[0].inserted, 10u);
  EXPECT_EQ(l[0].reused, 4u);
  EXPECT_EQ(l[0].reused_twice, 1u);
  EXPECT_DOUBLE_EQ(l[0].ReuseAfter1(), 0.4);
  EXPECT_DOUBLE_EQ(l[0].ReuseAfter2(), 0.25);
  EXPECT_EQ(l[0].idle_samples, 5u);
  EXPECT_NEAR(l[0].idle_mean_s, (4 * 3.0 + 1.0) / 5, 1e-9);
  EXPECT_GT(l[0].idle_median_s, 1.5);
  EXPECT_LT(l[0].idle_median_s, 6.0) << "within a factor of 2 of 3 s";
  EXPECT_EQ(l[1].inserted, 1u);
  EXPECT_EQ(l[1].reused, 0u);
}

// Teaches `p` two pool classes: class 0 reused half the time, class 1 (say, partial last
// blocks) never; then forgets their copies (deleted), keeping the statistics.
void TeachAReusedAndANeverReusedClass(EvictionPolicy& p) {
  Handle h = 1;
  for (int i = 0; i < 16; ++i, ++h) {
    p.Insert(h, Block(h, 0, 1, 0));
    if (i % 2 == 0) p.Access(h);
    p.Insert(1000 + h, Block(1000 + h, 0, 1, 1));
  }
  for (Handle x = 1; x < h; ++x) p.Remove(x, RemovalReason::kDeleted);
  for (Handle x = 1; x < h; ++x) p.Remove(1000 + x, RemovalReason::kDeleted);
}

TEST(Lifetime, S3FifoOffersANeverReusedClassFirst) {
  S3FifoPolicy p(false, PolicyOptions{.min_class_samples = 8});
  TeachAReusedAndANeverReusedClass(p);
  p.Insert(1, Block(1, 0, 1, 0));
  p.Insert(2, Block(2, 0, 1, 1));
  EXPECT_EQ(p.QueueOf(1), 0);
  EXPECT_EQ(p.QueueOf(2), 2) << "the low-reuse queue";
  EXPECT_EQ(Order(p), (std::vector<Handle>{2, 1})) << "although it is the newer";
}

TEST(Lifetime, SlruOffersANeverReusedClassFirst) {
  SlruPolicy p(false, PolicyOptions{.min_class_samples = 8});
  TeachAReusedAndANeverReusedClass(p);
  p.Insert(2, Block(2, 0, 1, 1));
  p.Insert(1, Block(1, 0, 1, 0));
  p.Insert(3, Block(3, 0, 1, 1));
  // At the victim end of the bottom level: the newest of them first (S3-FIFO: the oldest).
  EXPECT_EQ(Order(p), (std::vector<Handle>{3, 2, 1})) << "the low-reuse class first";
}

TEST(SlruPolicy, ACopyLargerThanALevelsShareStaysAtTheBottom) {
  SlruPolicy p;
  for (Handle h = 1; h <= 6; ++h) p.Insert(h, Block(h, 0, 10));
  for (Handle h : {1, 2}) p.Access(h);
  p.Insert(7, Block(7, 0, 100));  // over a third of the 160 tracked bytes
  p.Access(7);
  p.Access(7);
  EXPECT_EQ(p.LevelOf(7), 0);
  EXPECT_EQ(p.LevelOf(1), 1) << "its uses did not push the level down";
  EXPECT_EQ(p.LevelOf(2), 1);
}

}  // namespace
}  // namespace tensord::policy

namespace tensord::policy {
namespace {

TEST(PressurePolicy, DemandsDownToLowOnlyAboveHigh) {
  TierPressure p{/*used_bytes=*/800, /*capacity_bytes=*/1000, 0.90, 0.75, false};
  EXPECT_EQ(DemotionDemand(p), 0u) << "between the watermarks: nothing to do";
  p.used_bytes = 950;
  EXPECT_EQ(DemotionDemand(p), 200u) << "above high: down to low (750)";
  p.used_bytes = 900;
  EXPECT_EQ(DemotionDemand(p), 0u) << "at high exactly: not above it";
  p.capacity_bytes = 0;
  EXPECT_EQ(DemotionDemand(p), 900u) << "no capacity: everything above 0 goes";
}

TEST(PressurePolicy, AShortSystemDemandsDownToLowBelowHighToo) {
  TierPressure p{800, 1000, 0.90, 0.75, /*system_short=*/true};
  EXPECT_EQ(DemotionDemand(p), 50u);
  p.used_bytes = 700;
  EXPECT_EQ(DemotionDemand(p), 0u) << "below low: nothing, even when short";
}

TEST(PressurePolicy, SystemShortNeedsAKnownReadingBelowTheFloor) {
  EXPECT_TRUE(SystemShort(true, 1 << 20, 2 << 20));
  EXPECT_FALSE(SystemShort(true, 3 << 20, 2 << 20));
  EXPECT_FALSE(SystemShort(false, 0, 2 << 20)) << "no reading is not 0 bytes free";
  EXPECT_FALSE(SystemShort(true, 0, 0)) << "floor 0: ignored";
}

}  // namespace
}  // namespace tensord::policy

namespace tensord::policy {
namespace {

TEST(Predictor, SplitsAroundTheLastNumber) {
  const Predictor::Numbered a = Predictor::Split("req.layer.17.w");
  ASSERT_TRUE(a.ok);
  EXPECT_EQ(a.head, "req.layer.");
  EXPECT_EQ(a.n, 17u);
  EXPECT_EQ(a.tail, ".w");
  EXPECT_FALSE(a.padded);
  EXPECT_TRUE(Predictor::Split("blk007").padded);
  EXPECT_FALSE(Predictor::Split("no-digits").ok);
  EXPECT_FALSE(Predictor::Split("x1234567890123456789").ok) << "too long for a stride";
}

TEST(Predictor, DetectsAStrideOnceSeenTwice) {
  Predictor p(100, 10);
  EXPECT_TRUE(p.Observe(1, "", "req.layer.0").empty());
  EXPECT_TRUE(p.Observe(1, "", "req.layer.1").empty()) << "one step is not a stride yet";
  EXPECT_EQ(p.Observe(1, "", "req.layer.2"), (std::vector<std::string>{"req.layer.3"}));
  EXPECT_EQ(p.Observe(1, "", "req.layer.3"), (std::vector<std::string>{"req.layer.4"}));
  // Crossing a power of ten keeps the stride; padded numbers keep their width.
  for (const char* k : {"req.layer.7", "req.layer.8"}) p.Observe(1, "", k);
  EXPECT_EQ(p.Observe(1, "", "req.layer.9"), (std::vector<std::string>{"req.layer.10"}));
  for (const char* k : {"b006", "b008"}) p.Observe(2, "", k);
  EXPECT_EQ(p.Observe(2, "", "b010"), (std::vector<std::string>{"b012"})) << "stride 2, width 3";
  // Another stream, or another namespace, does not continue this one's stride.
  EXPECT_TRUE(p.Observe(3, "", "req.layer.10").empty());
  EXPECT_TRUE(p.Observe(1, "other", "req.layer.11").empty());
}

TEST(Predictor, LearnsACycleOfSuccessors) {
  Predictor p(100, 10);
  const std::vector<std::string> cycle = {"embed", "attn", "mlp", "head"};
  for (const std::string& k : cycle) EXPECT_TRUE(p.Observe(1, "m", k).empty()) << "first pass";
  for (const std::string& k : cycle) p.Observe(1, "m", k);  // second pass confirms
  for (size_t i = 0; i < cycle.size(); ++i) {
    EXPECT_EQ(p.Observe(1, "m", cycle[i]),
              (std::vector<std::string>{cycle[(i + 1) % cycle.size()]}))
        << cycle[i];
  }
  // A changed successor must be confirmed again before it is predicted.
  p.Observe(1, "m", "embed");
  p.Observe(1, "m", "other");
  EXPECT_TRUE(p.Observe(1, "m", "embed").empty());
}

TEST(Predictor, MemoryIsBounded) {
  Predictor p(/*max_keys=*/64, /*max_streams=*/4);
  for (uint64_t s = 0; s < 10; ++s) {
    for (int i = 0; i < 100; ++i) p.Observe(s, "", absl::StrCat("k", s, "_", i * 7 % 13, "x"));
  }
  EXPECT_LE(p.learned(), 64u);
  EXPECT_EQ(p.streams(), 4u) << "streams beyond the cap are not tracked";
  p.EndStream(0);
  EXPECT_EQ(p.streams(), 3u);
  p.Observe(42, "", "new");
  EXPECT_EQ(p.streams(), 4u) << "an ended stream makes room";
}

}  // namespace
}  // namespace tensord::policy
