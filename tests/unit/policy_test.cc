// Policies in isolation: the order in which eviction policies offer victims, and the demand the
// pressure policy makes of a migrator.
#include <gtest/gtest.h>

#include <vector>

#include "daemon/policy/eviction.h"
#include "daemon/policy/pressure.h"

namespace tensord::policy {
namespace {

std::vector<Handle> Order(const EvictionPolicy& p, size_t max = 100) {
  std::vector<Handle> out;
  p.Victims([&](Handle h) {
    out.push_back(h);
    return out.size() < max;
  });
  return out;
}

TEST(LruPolicy, OffersLeastRecentlyUsedFirst) {
  LruPolicy lru;
  for (Handle h : {1, 2, 3, 4}) lru.Insert(h);
  EXPECT_EQ(Order(lru), (std::vector<Handle>{1, 2, 3, 4}));
  lru.Access(1);
  lru.Access(3);
  EXPECT_EQ(Order(lru), (std::vector<Handle>{2, 4, 1, 3}));
  lru.Insert(2);  // already tracked: no change of rank
  EXPECT_EQ(Order(lru), (std::vector<Handle>{2, 4, 1, 3}));
  EXPECT_EQ(Order(lru, 2), (std::vector<Handle>{2, 4})) << "stops when visit returns false";
}

TEST(LruPolicy, RemoveAndUntrackedHandles) {
  LruPolicy lru;
  lru.Insert(7);
  lru.Insert(8);
  lru.Remove(7);
  lru.Remove(99);  // untracked: ignored
  lru.Access(42);  // untracked: ignored, not inserted
  EXPECT_FALSE(lru.Contains(7));
  EXPECT_FALSE(lru.Contains(42));
  EXPECT_TRUE(lru.Contains(8));
  EXPECT_EQ(lru.size(), 1u);
  EXPECT_EQ(Order(lru), (std::vector<Handle>{8}));
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
