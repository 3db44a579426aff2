// The controller's live migrations and drains, step by step on a manual
// clock: a migration's success and failure, its end on the destination's
// report, its resumption after a restart; a drain in tier order, its votes,
// a stopped VM evicted before it is placed elsewhere.
#include <gtest/gtest.h>

#include <set>

#include "controller/controller.h"
#include "healing_fixture.h"
#include "tw/store.h"

namespace tw {
namespace {

using namespace testing_healing;  // NOLINT: the fixture and its helpers

// Pins: a live migration is journaled, the source gets migrate_to and the
// destination an incoming assignment; vm.migrated moves the VM with the new
// epoch; a failed one leaves it on its source.
TEST_F(HealingTest, MigrationSuccessAndFailure) {
  std::string src = controller_->vm("web-1")->host;
  ASSERT_TRUE(controller_->migrateVm("web-1", "h3").isOk());
  auto actions = store_->openActions();
  ASSERT_EQ(actions->size(), 1u);
  EXPECT_EQ((*actions)[0].kind, "migrate");
  int64_t mepoch = 0;
  for (const auto& a : controller_->assignmentsFor(src).assignments)
    if (a.vm == "web-1") {
      EXPECT_EQ(a.migrate_to_host, "h3");
      mepoch = a.migrate_epoch;
    }
  ASSERT_GT(mepoch, 0);
  bool incoming = false;
  for (const auto& a : controller_->assignmentsFor("h3").assignments) incoming |= a.vm == "web-1" && a.incoming;
  EXPECT_TRUE(incoming);
  ASSERT_TRUE(controller_->handleAgentEvent(agentEvent(src, "web-1", mepoch, "vm.migrated", "info", "migrated")).isOk());
  EXPECT_EQ(controller_->vm("web-1")->host, "h3");
  EXPECT_EQ(controller_->vm("web-1")->epoch, mepoch);
  EXPECT_TRUE(store_->openActions()->empty());

  tick();
  ASSERT_TRUE(controller_->migrateVm("web-1", src).isOk());
  int64_t e2 = 0;
  for (const auto& a : controller_->assignmentsFor("h3").assignments)
    if (a.vm == "web-1") e2 = a.migrate_epoch;
  ASSERT_TRUE(controller_->handleAgentEvent(agentEvent("h3", "web-1", e2, "vm.migrate_failed", "warn", "boom")).isOk());
  EXPECT_EQ(controller_->vm("web-1")->host, "h3");
  EXPECT_EQ(controller_->vm("web-1")->epoch, mepoch);
  EXPECT_EQ(controller_->vm("web-1")->state, VmState::kRunning);
  EXPECT_EQ(controller_->migrateVm("web-1", "h3").code(), Code::kFailedPrecondition);
  EXPECT_EQ(controller_->migrateVm("nope", "h3").code(), Code::kNotFound);
}

// Pins: the destination's report ends a migration only once the domain runs
// there: libvirt shows the incoming domain paused on the destination from the
// start of the copy, and a VM taken as arrived then moved its endpoints to a
// host that could not serve them yet.
TEST_F(HealingTest, MigrationEndsWhenTheDestinationRunsTheVm) {
  const std::string src = controller_->vm("web-1")->host;
  const int64_t old_epoch = controller_->vm("web-1")->epoch;
  ASSERT_TRUE(controller_->migrateVm("web-1", "h3").isOk());
  int64_t mepoch = 0;
  for (const auto& a : controller_->assignmentsFor(src).assignments)
    if (a.vm == "web-1") mepoch = a.migrate_epoch;
  ASSERT_GT(mepoch, 0);
  auto destReports = [&](DomainState state) {
    Heartbeat hb = agentHeartbeat("h3");
    const AssignmentSet set = controller_->assignmentsFor("h3");
    hb.assignments_version = set.version;
    hb.assignments_controller = set.controller_id;
    for (const auto& a : set.assignments) {
      DomainReport d = runningReport(a);
      if (a.vm == "web-1") {
        d.epoch = mepoch;
        d.state = state;
      }
      hb.domains.push_back(d);
    }
    ASSERT_TRUE(controller_->handleHeartbeat(hb).isOk());
  };
  ASSERT_NO_FATAL_FAILURE(destReports(DomainState::kPaused));  // the copy is under way
  controller_->runOnce();
  EXPECT_EQ(controller_->vm("web-1")->host, src);
  EXPECT_EQ(controller_->vm("web-1")->epoch, old_epoch);
  EXPECT_EQ(controller_->vm("web-1")->state, VmState::kMigrating);
  EXPECT_EQ(store_->openActions()->size(), 1u);
  ASSERT_NO_FATAL_FAILURE(destReports(DomainState::kRunning));  // switched over; vm.migrated lost
  EXPECT_EQ(controller_->vm("web-1")->host, "h3");
  EXPECT_EQ(controller_->vm("web-1")->epoch, mepoch);
  EXPECT_EQ(controller_->vm("web-1")->state, VmState::kRunning);
  EXPECT_TRUE(store_->openActions()->empty());
}

// Pins: drain migrates one VM at a time in tier order (db before web), then
// marks the host maintenance; undrain returns it.
TEST_F(HealingTest, DrainInTierOrderThenMaintenance) {
  auto on = vmsOn("h1");
  ASSERT_GE(on.size(), 2u);
  ASSERT_TRUE(controller_->drainHost("h1").isOk());
  std::vector<std::string> order;
  for (int round = 0; round < 10 && !vmsOn("h1").empty(); ++round) {
    for (const auto& a : controller_->assignmentsFor("h1").assignments) {
      if (a.migrate_to_host.empty()) continue;
      order.push_back(a.vm);
      ASSERT_TRUE(controller_->handleAgentEvent(agentEvent("h1", a.vm, a.migrate_epoch, "vm.migrated", "info", "")).isOk());
    }
    tick();
  }
  EXPECT_TRUE(vmsOn("h1").empty());
  ASSERT_EQ(order.size(), on.size());
  EXPECT_EQ(order.front().rfind("db-", 0), 0u) << "db migrates before web";
  EXPECT_EQ(controller_->host("h1")->state, HostState::kMaintenance);
  ASSERT_TRUE(controller_->undrainHost("h1").isOk());
  EXPECT_EQ(controller_->host("h1")->state, HostState::kOnline);
  EXPECT_TRUE(vmsOn("h1").empty());  // nothing moves back by itself
}

// Pins: a host in maintenance still votes (drained-host-votes): with the
// spare drained, h1 goes dark; h2's and h3's reports plus the controller's
// vote are 3 of 4, and h1 is fenced.
TEST_F(HealingTest, DrainedHostStillVotes) {
  ASSERT_TRUE(controller_->drainHost("h3").isOk());
  tick(2);
  ASSERT_EQ(controller_->host("h3")->state, HostState::kMaintenance);
  up_.erase("h1");
  hosts_.alive.erase("h1");
  tick(40);
  EXPECT_EQ(controller_->host("h1")->state, HostState::kFenced) << allEvents();
  EXPECT_FALSE(hasEvent("host.no_quorum"));
}

// Pins: a drain places a VM that is not running elsewhere only after the
// host's agent reported the set without it and no running copy
// (drain-unreachable-host, drain-crashed-vm-slow-libvirt): its agent could
// restart it until then.
TEST_F(HealingTest, DrainEvictsAStoppedVmBeforePlacingItElsewhere) {
  auto on_h1 = vmsOn("h1");
  ASSERT_FALSE(on_h1.empty());
  for (const auto& n : on_h1) down_vms_.insert(n);
  reason_ = "crashed";
  tick(2);
  up_.erase("h1");  // the agent goes silent; its libvirt answers
  ASSERT_TRUE(controller_->drainHost("h1").isOk());
  tick();
  std::string evicted;
  for (const auto& n : on_h1) {
    bool assigned = false;
    for (const auto& a : controller_->assignmentsFor("h1").assignments) assigned |= a.vm == n;
    if (!assigned) evicted = n;
  }
  ASSERT_FALSE(evicted.empty()) << "a stopped vm leaves h1's set first";
  EXPECT_TRUE(hasEvent("vm.evicting"));
  tick(50);
  EXPECT_EQ(controller_->vm(evicted)->host, "h1") << "moved before h1 confirmed";
  // h1 answers with the new set but still runs a copy: not yet.
  DomainReport copy = report(evicted, controller_->vm(evicted)->tier, controller_->vm(evicted)->epoch);
  stale_["h1"] = {copy};
  up_.insert("h1");
  tick(3);
  EXPECT_EQ(controller_->vm(evicted)->host, "h1");
  stale_["h1"].clear();  // gone
  tick(2);
  EXPECT_NE(controller_->vm(evicted)->host, "h1");
}

// Pins: a controller restarted mid-migration resumes it from the journal.
TEST_F(HealingTest, MigrationResumesAfterControllerRestart) {
  // Same in-memory store object, a new Controller: what a restart keeps is
  // exactly what the store holds.
  ASSERT_TRUE(controller_->migrateVm("web-2", "h3").isOk());
  std::string src = controller_->vm("web-2")->host;
  ASSERT_NO_FATAL_FAILURE(restartController(&hosts_));
  controller_->runOnce();
  bool migrating = false;
  for (const auto& a : controller_->assignmentsFor(src).assignments)
    migrating |= a.vm == "web-2" && a.migrate_to_host == "h3";
  EXPECT_TRUE(migrating);
}

}  // namespace
}  // namespace tw
