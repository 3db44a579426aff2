// AssignmentChanges and VmsByHost::set: which hosts' assignment sets a
// publish looks at (issue #16: a set is rebuilt only for a host whose
// assignments changed).
#include "controller/assignment_changes.h"

#include <gtest/gtest.h>

#include <map>

namespace tw {
namespace {

// Where each VM is "now" for sync(): a stand-in for the controller's state.
struct World {
  std::map<std::string, std::vector<std::string>> at;
  AssignmentChanges::HostsNow now() {
    return [this](const std::string& vm) {
      auto it = at.find(vm);
      return it == at.end() ? std::vector<std::string>{} : it->second;
    };
  }
};

VmsByHost indexOf(const World& w) {
  VmsByHost index;
  VmsByHost::Placement p;
  for (const auto& [vm, hosts] : w.at)
    for (const auto& h : hosts) p.emplace_back(vm, h);
  index.rebuild(p);
  return index;
}

// Pins: set() moves one VM and leaves the index equal to a rebuild, with no
// empty host lists left behind; a VM with no hosts leaves the index.
TEST(VmsByHostTest, SetMovesOneVmAsARebuildWould) {
  World w;
  w.at = {{"web-1", {"h1"}}, {"web-2", {"h1"}}, {"db-1", {"h2"}}};
  VmsByHost index = indexOf(w);
  index.set("web-1", {"h3", "h2"});  // a migration: source and destination
  w.at["web-1"] = {"h3", "h2"};
  EXPECT_EQ(index, indexOf(w));
  EXPECT_EQ(index.hostsOf("web-1"), (std::set<std::string>{"h2", "h3"}));
  index.set("web-2", {});
  w.at.erase("web-2");
  EXPECT_EQ(index, indexOf(w));
  EXPECT_TRUE(index.of("h1").empty());
  EXPECT_TRUE(index.hostsOf("web-2").empty());
  index.set("new-1", {"", "h4"});  // empty hosts ignored
  w.at["new-1"] = {"h4"};
  EXPECT_EQ(index, indexOf(w));
}

// Pins: a VM touched as moved marks the host it left and the host it joined,
// and nothing else; the index follows it.
TEST(AssignmentChangesTest, AMovedVmMarksTheHostsBeforeAndAfter) {
  World w;
  w.at = {{"web-1", {"h1"}}, {"web-2", {"h2"}}, {"db-1", {"h3"}}};
  VmsByHost index = indexOf(w);
  AssignmentChanges changes;
  changes.clear();  // the first publish looked at every host
  EXPECT_FALSE(changes.any());
  w.at["web-1"] = {"h4"};
  changes.touchVm("web-1", true);
  EXPECT_TRUE(changes.any());
  std::set<std::string> dropped;
  changes.sync(index, w.now(), [&](const std::string& h) { dropped.insert(h); });
  EXPECT_FALSE(changes.all());
  EXPECT_EQ(changes.hosts(), (std::set<std::string>{"h1", "h4"}));
  EXPECT_EQ(dropped, (std::set<std::string>{"h1", "h4"}));
  EXPECT_EQ(index, indexOf(w));
  changes.clear();
  EXPECT_FALSE(changes.any());
  EXPECT_TRUE(changes.hosts().empty());
}

// Pins: a call site may name the VM before it changes, as long as the change
// is made by the next sync (finishMigration does): the hosts are read at sync.
TEST(AssignmentChangesTest, AVmNamedBeforeItsChangeIsMovedAtSync) {
  World w;
  w.at = {{"web-1", {"h1", "h2"}}};  // migrating h1 -> h2
  VmsByHost index = indexOf(w);
  AssignmentChanges changes;
  changes.clear();
  changes.touchVm("web-1", true);
  w.at["web-1"] = {"h2"};  // the migration ended: on h2 only
  changes.sync(index, w.now(), [](const std::string&) {});
  EXPECT_EQ(changes.hosts(), (std::set<std::string>{"h1", "h2"}));
  EXPECT_EQ(index, indexOf(w));
}

// Pins: a VM touched twice, once as not moved and once as moved, is moved;
// a VM touched as not moved marks its hosts and leaves the index alone; a
// host touched by name is marked; a VM that came and one that went mark
// only their own hosts.
TEST(AssignmentChangesTest, TouchesAccumulateUntilThePublish) {
  World w;
  w.at = {{"web-1", {"h1"}}, {"web-2", {"h2"}}, {"web-3", {"h3"}}};
  VmsByHost index = indexOf(w);
  AssignmentChanges changes;
  changes.clear();
  changes.touchVm("web-1", false);
  w.at["web-1"] = {"h5"};
  changes.touchVm("web-1", true);
  changes.touchVm("web-2", false);
  changes.touchHost("h9");
  w.at.erase("web-3");
  changes.touchVm("web-3", true);
  w.at["web-4"] = {"h6"};
  changes.touchVm("web-4", true);
  changes.sync(index, w.now(), [](const std::string&) {});
  EXPECT_EQ(changes.hosts(), (std::set<std::string>{"h1", "h2", "h3", "h5", "h6", "h9"}));
  EXPECT_EQ(index, indexOf(w));
  // A second sync with nothing touched marks nothing more.
  changes.sync(index, w.now(), [](const std::string&) {});
  EXPECT_EQ(changes.hosts().size(), 6u);
}

// Pins: before the first publish, and after touchAll(), every host is looked
// at; a stale index is left to the caller's rebuild (the VMs touched are
// forgotten, all() covers them).
TEST(AssignmentChangesTest, AllCoversEveryHostAndAStaleIndex) {
  AssignmentChanges changes;
  EXPECT_TRUE(changes.any());
  EXPECT_TRUE(changes.all());
  changes.clear();
  changes.touchAll();
  EXPECT_TRUE(changes.all());
  VmsByHost stale;
  ASSERT_TRUE(stale.stale());
  changes.touchVm("web-1", true);
  bool called = false;
  changes.sync(stale, [](const std::string&) { return std::vector<std::string>{"h1"}; },
               [&](const std::string&) { called = true; });
  EXPECT_FALSE(called);
  EXPECT_TRUE(stale.stale());
  EXPECT_TRUE(changes.all());
}

}  // namespace
}  // namespace tw
