// Eviction policies in isolation: the order in which they offer victims.
#include <gtest/gtest.h>

#include <vector>

#include "daemon/policy/eviction.h"

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
