// assignKeyed / sameKeys (tw/keyed_assign.h) and MemoryAgentStateStore's
// lease-only save: the in-place refreshes behind the 1,000-host simulated
// hour (issue #16).
#include "tw/keyed_assign.h"

#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

#include "agent/agent_state.h"

namespace tw {
namespace {

struct Item {
  std::string key;
  std::string value;
};

const std::string& keyOf(const Item& i) { return i.key; }

std::map<std::string, Item> rebuilt(const std::vector<Item>& items) {
  std::map<std::string, Item> m;
  for (const Item& i : items) m[i.key] = i;
  return m;
}

bool sameContent(const std::map<std::string, Item>& a, const std::map<std::string, Item>& b) {
  if (!sameKeys(a, b)) return false;
  auto j = b.begin();
  for (const auto& [k, v] : a) {
    if (v.key != j->second.key || v.value != j->second.value) return false;
    ++j;
  }
  return true;
}

// Pins: the same keys in the map's order are assigned in place: the result
// is what a rebuild gives, and the map's nodes are the same nodes.
TEST(KeyedAssignTest, SameKeysAssignInPlace) {
  std::map<std::string, Item> m = rebuilt({{"a", "1"}, {"b", "2"}});
  const Item* node_b = &m.at("b");
  const std::vector<Item> next{{"a", "one"}, {"b", "two"}};
  EXPECT_TRUE(assignKeyed(m, next, keyOf));
  EXPECT_TRUE(sameContent(m, rebuilt(next)));
  EXPECT_EQ(&m.at("b"), node_b);
}

// Pins: other keys, another order or a duplicate key rebuild the map, with
// the rebuild's result (the last of duplicates wins).
TEST(KeyedAssignTest, OtherKeysRebuild) {
  const std::vector<std::vector<Item>> cases{
      {{"a", "1"}, {"c", "3"}},              // another key
      {{"b", "2"}, {"a", "1"}},              // another order
      {{"a", "1"}, {"a", "x"}},              // a duplicate
      {{"a", "1"}},                          // fewer
      {{"a", "1"}, {"b", "2"}, {"c", "3"}},  // more
      {}};
  for (const auto& next : cases) {
    std::map<std::string, Item> m = rebuilt({{"a", "0"}, {"b", "0"}});
    EXPECT_FALSE(assignKeyed(m, next, keyOf));
    EXPECT_TRUE(sameContent(m, rebuilt(next)));
  }
}

// Pins: the moving overload gives the same results as the copying one.
TEST(KeyedAssignTest, MovingGivesTheSameResult) {
  std::map<std::string, Item> m = rebuilt({{"a", "1"}, {"b", "2"}});
  const Item* node_a = &m.at("a");
  std::vector<Item> same{{"a", "one"}, {"b", "two"}};
  EXPECT_TRUE(assignKeyed(m, std::move(same), keyOf));
  EXPECT_TRUE(sameContent(m, rebuilt({{"a", "one"}, {"b", "two"}})));
  EXPECT_EQ(&m.at("a"), node_a);
  std::vector<Item> other{{"c", "3"}, {"c", "y"}};
  EXPECT_FALSE(assignKeyed(m, std::move(other), keyOf));
  EXPECT_TRUE(sameContent(m, rebuilt({{"c", "y"}})));
}

// Pins: sameKeys compares keys only, not values, across value types.
TEST(KeyedAssignTest, SameKeysComparesKeysOnly) {
  std::map<std::string, int> a{{"x", 1}, {"y", 2}};
  std::map<std::string, std::string> b{{"x", "p"}, {"y", "q"}};
  EXPECT_TRUE(sameKeys(a, b));
  b.erase("y");
  EXPECT_FALSE(sameKeys(a, b));
  b["z"] = "r";
  EXPECT_FALSE(sameKeys(a, b));
}

// Pins: MemoryAgentStateStore::saveLeaseEnd moves the lease end of what it
// holds and counts a save; with nothing held it saves the whole state.
TEST(KeyedAssignTest, MemoryStoreSavesTheLeaseEndAlone) {
  MemoryAgentStateStore store;
  PersistedAgentState s;
  s.boot_id = "b1";
  s.lease_until_ms = 1000;
  s.has_peers = true;
  s.peers = {PeerInfo{"h2", "10.0.0.2:7001"}};
  ASSERT_TRUE(store.saveLeaseEnd(s).isOk());  // nothing held: the whole state
  s.lease_until_ms = 2000;
  ASSERT_TRUE(store.saveLeaseEnd(s).isOk());
  EXPECT_EQ(store.saves(), 2);
  Result<std::optional<PersistedAgentState>> loaded = store.load();
  ASSERT_TRUE(loaded.isOk());
  ASSERT_TRUE(loaded->has_value());
  EXPECT_TRUE(**loaded == s);
}

}  // namespace
}  // namespace tw
