// VmsByHost: the candidate index behind assignment sets (issue #16).
#include "controller/vms_by_host.h"

#include <gtest/gtest.h>

namespace tw {
namespace {

// Pins: a VM is listed under every host it is placed with (its host and its
// migration's destination), by name; empty hosts are ignored; an unknown host
// lists nothing.
TEST(VmsByHostTest, ListsEachVmUnderItsHosts) {
  VmsByHost index;
  EXPECT_TRUE(index.stale());
  index.rebuild({{"web-2", "h1"}, {"web-1", "h1"}, {"db-1", "h2"}, {"web-2", "h3"}, {"new-1", ""}});
  EXPECT_FALSE(index.stale());
  EXPECT_EQ(index.of("h1"), (std::set<std::string>{"web-1", "web-2"}));
  EXPECT_EQ(index.of("h2"), (std::set<std::string>{"db-1"}));
  EXPECT_EQ(index.of("h3"), (std::set<std::string>{"web-2"}));
  EXPECT_TRUE(index.of("h4").empty());
  EXPECT_TRUE(index.of("").empty());
}

// Pins: invalidate() marks the index stale until the next rebuild, which
// replaces it whole (nothing of the old one is left).
TEST(VmsByHostTest, RebuildReplacesTheIndex) {
  VmsByHost index;
  index.rebuild({{"web-1", "h1"}});
  index.invalidate();
  EXPECT_TRUE(index.stale());
  index.rebuild({{"web-1", "h2"}});
  EXPECT_TRUE(index.of("h1").empty());
  EXPECT_EQ(index.of("h2"), (std::set<std::string>{"web-1"}));
}

}  // namespace
}  // namespace tw
