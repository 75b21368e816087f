// Policies in isolation: the order in which eviction policies offer victims, and the demand the
// pressure policy makes of a migrator.
#include <gtest/gtest.h>

#include <vector>

#include "daemon/policy/eviction.h"
#include "daemon/policy/pressure.h"

namespace tensord::policy {
namespace {

std::vector<Handle> Order(const EvictionPolicy& p, size_t max = 100, Demand demand = {}) {
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
  lru.Access(42);  // untracked: ignored, not inserted
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
  auto lru = MakeEvictionPolicy("lru");
  ASSERT_TRUE(lru.ok());
  EXPECT_STREQ((*lru)->name(), "lru");
  auto bad = MakeEvictionPolicy("mru");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("lru"), std::string::npos) << "names the known ones";
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
