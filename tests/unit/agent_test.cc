// The agent's convergence on a FakeHypervisor, a ManualClock and a scripted
// controller link (agent_fixture.h): what is assigned is defined and started,
// what is not is removed, crash restarts within the budget, unmanaged domains
// untouched. The lease, heartbeats, ports, health, migration and addresses
// have files of their own (agent_*_test.cc). Hermetic: no threads, no sleeps.
#include "agent/agent.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "agent_fixture.h"

namespace tw {
namespace {

using namespace testing_agent;  // agent_fixture.h

// Pins: assigned VMs are defined from the assignment (metadata, size) and
// started, with vm.defined/vm.started events quoting the ids, and the next
// heartbeat reports them running and healthy at the applied version.
TEST_F(AgentTest, DefinesAndStartsWhatIsAssigned) {
  assign({assignment("web-1", 3), assignment("web-2", 1)}, 7);
  startAgent();
  settle();

  ASSERT_TRUE(fake_.isRunning("web-1"));
  ASSERT_TRUE(fake_.isRunning("web-2"));
  const DomainSpec* spec = fake_.spec("web-1");
  ASSERT_NE(spec, nullptr);
  EXPECT_EQ(spec->meta.tier, "web");
  EXPECT_EQ(spec->meta.epoch, 3);
  EXPECT_EQ(spec->meta.spec_digest, "d1");
  EXPECT_EQ(spec->vcpus, 2);
  EXPECT_EQ(spec->memory_mib, 256);
  ASSERT_NE(link_.findEvent("vm.started", "web-1"), nullptr);
  EXPECT_EQ(link_.findEvent("vm.started", "web-1")->message, "started vm 'web-1' (epoch 3)");
  EXPECT_EQ(link_.findEvent("vm.started", "web-1")->host, "h1");
  EXPECT_EQ(link_.findEvent("vm.started", "web-1")->epoch, 3);
  EXPECT_EQ(link_.countEvents("vm.defined"), 2);

  EXPECT_EQ(agent_->assignmentsVersion(), 7);
  EXPECT_EQ(link_.heartbeats.back().assignments_version, 7);
  const DomainReport* r = link_.lastReport("web-1");
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->state, DomainState::kRunning);
  EXPECT_EQ(r->health, Health::kHealthy);
  EXPECT_EQ(r->epoch, 3);
  EXPECT_EQ(r->restarts, 0);
}

// Pins: VMs to start in one pass are defined first and then started in one
// batch (Hypervisor::startAll, in parallel on libvirt); a start that fails
// in the batch is reported for that VM alone.
TEST_F(AgentTest, StartsAPassWorthOfVmsInOneBatch) {
  fake_.failStarts("web-2", 1);
  assign({assignment("web-1", 1), assignment("web-2", 1), assignment("web-3", 1)}, 1);
  startAgent();
  settle();

  ASSERT_FALSE(hv_.start_batches.empty());
  EXPECT_EQ(hv_.start_batches.front(), (std::vector<std::string>{"web-1", "web-2", "web-3"}));
  EXPECT_EQ(std::vector<std::string>(hv_.calls.begin(), hv_.calls.begin() + 6),
            (std::vector<std::string>{"define web-1", "define web-2", "define web-3",
                                      "start web-1", "start web-2", "start web-3"}));
  EXPECT_TRUE(fake_.isRunning("web-1"));
  EXPECT_FALSE(fake_.isRunning("web-2"));
  EXPECT_TRUE(fake_.isRunning("web-3"));
  EXPECT_EQ(link_.countEvents("vm.started"), 2);
  EXPECT_EQ(link_.countEvents("vm.start_failed", "web-2"), 1);
  EXPECT_EQ(link_.lastReport("web-2")->reason.rfind("start failed: ", 0), 0u);
  EXPECT_EQ(link_.lastReport("web-1")->state, DomainState::kRunning);

  runUntil(1000);  // the failed one alone is retried after its back-off
  EXPECT_TRUE(fake_.isRunning("web-2"));
  EXPECT_EQ(hv_.start_batches.back(), std::vector<std::string>{"web-2"});
}

// Pins: a tier with a tcp/http check is reported kUnknown while running (no
// prober yet), one without a check kHealthy.
TEST_F(AgentTest, ReportsHealthUnknownForCheckedTiers) {
  Assignment checked = assignment("db-1", 1);
  checked.health.kind = HealthKind::kTcp;
  checked.health.port = 3306;
  startWith({checked, assignment("web-1", 1)});

  ASSERT_NE(link_.lastReport("db-1"), nullptr);
  EXPECT_EQ(link_.lastReport("db-1")->state, DomainState::kRunning);
  EXPECT_EQ(link_.lastReport("db-1")->health, Health::kUnknown);
  EXPECT_EQ(link_.lastReport("web-1")->health, Health::kHealthy);
}

// Pins: managed domains that are not assigned are destroyed and undefined,
// both when found at start and when an assignment is withdrawn.
TEST_F(AgentTest, DestroysAndUndefinesWhatIsNotAssigned) {
  ASSERT_TRUE(fake_.define(specOf(assignment("old-1", 4))).isOk());
  ASSERT_TRUE(fake_.start("old-1").isOk());
  startWith({assignment("web-1", 1), assignment("web-2", 1)});

  EXPECT_EQ(fake_.spec("old-1"), nullptr);
  ASSERT_NE(link_.findEvent("vm.destroyed", "old-1"), nullptr);
  EXPECT_EQ(link_.findEvent("vm.destroyed", "old-1")->message,
            "destroyed vm 'old-1' (epoch 4): not assigned to this host");
  EXPECT_EQ(link_.countEvents("vm.undefined", "old-1"), 1);

  AssignmentSet fewer = link_.set;
  fewer.version = 2;
  fewer.assignments = {assignment("web-1", 1)};
  link_.set = fewer;
  agent_->onAssignments(fewer);
  settle();

  EXPECT_EQ(fake_.spec("web-2"), nullptr);
  EXPECT_TRUE(fake_.isRunning("web-1"));
  EXPECT_EQ(link_.countEvents("vm.destroyed", "web-2"), 1);
  EXPECT_EQ(link_.countEvents("vm.crashed"), 0);  // our own destroy is no crash
  EXPECT_EQ(link_.lastReport("web-2"), nullptr);
  EXPECT_EQ(link_.heartbeats.back().assignments_version, 2);
}

// Pins: a pushed assignment with a higher epoch (or a new spec digest)
// replaces the running domain: destroyed, redefined, started; no crash seen.
TEST_F(AgentTest, EpochBumpOrNewDigestRedefines) {
  startWith({assignment("web-1", 1)});
  ASSERT_EQ(fake_.startCount("web-1"), 1);

  AssignmentSet bumped = link_.set;
  bumped.version = 2;
  bumped.assignments = {assignment("web-1", 2)};
  link_.set = bumped;
  agent_->onAssignments(bumped);
  EXPECT_EQ(agent_->nextWakeMs(), clock_.nowMs());
  settle();

  ASSERT_TRUE(fake_.isRunning("web-1"));
  EXPECT_EQ(fake_.spec("web-1")->meta.epoch, 2);
  EXPECT_EQ(fake_.startCount("web-1"), 2);
  EXPECT_EQ(link_.countEvents("vm.destroyed", "web-1"), 1);
  EXPECT_EQ(link_.countEvents("vm.crashed"), 0);
  EXPECT_EQ(agent_->restarts("web-1"), 0);

  AssignmentSet redigested = bumped;
  redigested.version = 3;
  redigested.assignments = {assignment("web-1", 2, "d2")};
  link_.set = redigested;
  agent_->onAssignments(redigested);
  settle();

  ASSERT_TRUE(fake_.isRunning("web-1"));
  EXPECT_EQ(fake_.spec("web-1")->meta.spec_digest, "d2");
  EXPECT_EQ(fake_.startCount("web-1"), 3);
}

// Pins: a managed domain with an epoch newer than assigned is destroyed and
// undefined, then the assigned epoch is defined and started.
TEST_F(AgentTest, NewerEpochOnHostLosesToTheAssignment) {
  ASSERT_TRUE(fake_.define(specOf(assignment("web-1", 9))).isOk());
  ASSERT_TRUE(fake_.start("web-1").isOk());
  startWith({assignment("web-1", 4)});

  ASSERT_TRUE(fake_.isRunning("web-1"));
  EXPECT_EQ(fake_.spec("web-1")->meta.epoch, 4);
  EXPECT_EQ(link_.countEvents("vm.undefined", "web-1"), 1);
  EXPECT_EQ(link_.countEvents("vm.started", "web-1"), 1);
}

// Pins: a crash event leads to vm.crashed and a restart in place within the
// same instant (nextWakeMs says "now"), and a heartbeat reports it at once.
TEST_F(AgentTest, RestartsAtOnceOnCrashEvent) {
  startWith({assignment("web-1", 3)});
  runUntil(400);
  const size_t heartbeats = link_.heartbeats.size();

  fake_.crash("web-1");
  EXPECT_EQ(agent_->nextWakeMs(), 400);
  settle();

  EXPECT_TRUE(fake_.isRunning("web-1"));
  EXPECT_EQ(fake_.startCount("web-1"), 2);
  ASSERT_NE(link_.findEvent("vm.crashed", "web-1"), nullptr);
  EXPECT_EQ(link_.findEvent("vm.crashed", "web-1")->level, "warn");
  EXPECT_EQ(link_.findEvent("vm.crashed", "web-1")->message,
            "vm 'web-1' (epoch 3) crashed: crashed");
  EXPECT_EQ(link_.countEvents("vm.restarted", "web-1"), 1);
  EXPECT_EQ(agent_->restarts("web-1"), 1);
  ASSERT_GT(link_.heartbeats.size(), heartbeats);
  EXPECT_EQ(link_.heartbeat_times.back(), 400);
  EXPECT_EQ(link_.lastReport("web-1")->restarts, 1);
  EXPECT_EQ(link_.lastReport("web-1")->state, DomainState::kRunning);
}

// Pins: restarts back off (at once, then 1 s, then 2 s) and once the budget
// is spent the VM is left stopped with the exact reason and an error event.
TEST_F(AgentTest, BacksOffThenExhaustsTheBudget) {
  startWith({assignment("web-1", 3)});  // default budget: 3 restarts in 10 min

  fake_.crash("web-1");
  settle();
  ASSERT_TRUE(fake_.isRunning("web-1"));  // first restart: at once

  runUntil(10000);
  fake_.crash("web-1");
  runUntil(10999);
  EXPECT_FALSE(fake_.isRunning("web-1"));
  runUntil(11000);
  ASSERT_TRUE(fake_.isRunning("web-1"));  // second: after 1 s

  runUntil(20000);
  fake_.crash("web-1");
  runUntil(21999);
  EXPECT_FALSE(fake_.isRunning("web-1"));
  runUntil(22000);
  ASSERT_TRUE(fake_.isRunning("web-1"));  // third: after 2 s
  EXPECT_EQ(agent_->restarts("web-1"), 3);

  runUntil(30000);
  fake_.crash("web-1");
  runUntil(200000);
  EXPECT_FALSE(fake_.isRunning("web-1"));
  EXPECT_EQ(fake_.startCount("web-1"), 4);
  EXPECT_TRUE(agent_->budgetExhausted("web-1"));
  const AgentEvent* e = link_.findEvent("vm.budget_exhausted", "web-1");
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->level, "error");
  const DomainReport* r = link_.lastReport("web-1");
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->reason, "restart budget spent (3 restarts in 10m)");
  EXPECT_EQ(r->state, DomainState::kCrashed);
  EXPECT_EQ(r->restarts, 3);
}

// Pins: restart counts expire after window_ms, so a crash after the window is
// restarted at once again instead of exhausting the budget.
TEST_F(AgentTest, RestartCountsExpireAfterTheWindow) {
  Assignment a = assignment("web-1", 1);
  a.restart.restarts = 1;
  a.restart.window_ms = 60000;
  startWith({a});

  fake_.crash("web-1");
  settle();
  ASSERT_TRUE(fake_.isRunning("web-1"));
  EXPECT_EQ(agent_->restarts("web-1"), 1);

  runUntil(60001);
  EXPECT_EQ(agent_->restarts("web-1"), 0);
  fake_.crash("web-1");
  settle();
  EXPECT_TRUE(fake_.isRunning("web-1"));
  EXPECT_FALSE(agent_->budgetExhausted("web-1"));
  EXPECT_EQ(agent_->restarts("web-1"), 1);

  runUntil(90001);  // inside the new window: the budget of 1 is spent
  fake_.crash("web-1");
  settle();
  EXPECT_FALSE(fake_.isRunning("web-1"));
  EXPECT_TRUE(agent_->budgetExhausted("web-1"));
}

// Pins: a failed start counts as a restart attempt (vm.start_failed), the
// retry backs off, and the attempts exhaust the budget like restarts do.
TEST_F(AgentTest, FailedStartCountsAgainstTheBudget) {
  Assignment a = assignment("web-1", 1);
  a.restart.restarts = 2;
  startWith({a});

  fake_.failStarts("web-1", 1);
  fake_.crash("web-1");
  settle();
  EXPECT_FALSE(fake_.isRunning("web-1"));
  ASSERT_NE(link_.findEvent("vm.start_failed", "web-1"), nullptr);
  EXPECT_EQ(agent_->restarts("web-1"), 1);
  EXPECT_EQ(agent_->nextWakeMs(), 1000);

  runUntil(1000);
  ASSERT_TRUE(fake_.isRunning("web-1"));
  EXPECT_EQ(agent_->restarts("web-1"), 2);

  runUntil(5000);
  fake_.crash("web-1");
  settle();
  EXPECT_FALSE(fake_.isRunning("web-1"));
  EXPECT_TRUE(agent_->budgetExhausted("web-1"));
  EXPECT_EQ(link_.lastReport("web-1")->reason, "restart budget spent (2 restarts in 10m)");
}

// Pins: a first start that fails is retried after the back-off and counts.
TEST_F(AgentTest, FailedFirstStartIsRetried) {
  fake_.failStarts("web-1", 1);
  startWith({assignment("web-1", 1)});
  EXPECT_FALSE(fake_.isRunning("web-1"));
  EXPECT_EQ(link_.countEvents("vm.start_failed", "web-1"), 1);
  EXPECT_EQ(link_.lastReport("web-1")->reason.rfind("start failed: ", 0), 0u);

  runUntil(1000);
  EXPECT_TRUE(fake_.isRunning("web-1"));
  EXPECT_EQ(agent_->restarts("web-1"), 2);
}

// Pins: domains without our metadata are never touched nor reported, even
// when the agent cleans up every managed domain around them.
TEST_F(AgentTest, NeverTouchesUnmanagedDomains) {
  fake_.addUnmanaged("legacy");
  ASSERT_TRUE(fake_.define(specOf(assignment("old-1", 1))).isOk());
  startWith({assignment("web-1", 1)});
  AssignmentSet none = link_.set;
  none.version = 2;
  none.assignments.clear();
  link_.set = none;
  agent_->onAssignments(none);
  runUntil(3000);

  EXPECT_EQ(fake_.spec("web-1"), nullptr);  // the cleanup did happen
  for (const std::string& call : hv_.calls) {
    EXPECT_EQ(call.find("legacy"), std::string::npos) << call;
  }
  for (const Heartbeat& hb : link_.heartbeats) {
    for (const DomainReport& r : hb.domains) EXPECT_NE(r.vm, "legacy");
  }
}

// Pins: a restarted agent leaves running VMs alone while no heartbeat is
// answered (a pushed set alone grants no lease), and keeps them (same epoch) once it does; a
// same-epoch domain found shut off is restarted then, counting against its budget.
TEST_F(AgentTest, RestartedAgentKeepsRunningVmsUntouched) {
  startWith({assignment("web-1", 3), assignment("web-2", 3)});
  ASSERT_EQ(fake_.runningCount(), 2);
  agent_.reset();                              // the agent process dies; its VMs keep running
  ASSERT_TRUE(fake_.destroy("web-2").isOk());  // meanwhile web-2 went down
  hv_.calls.clear();

  link_.answer_status = unavailable("connection refused");
  startAgent();
  runUntil(2000);
  agent_->onAssignments(link_.set);  // a pushed set renews no lease: still hands off
  runUntil(3000);
  EXPECT_TRUE(hv_.calls.empty()) << hv_.calls.front();
  EXPECT_TRUE(fake_.isRunning("web-1"));
  EXPECT_EQ(agent_->leaseState(), LeaseState::kNone);

  link_.answer_status = Status::ok();
  runUntil(4000);
  EXPECT_EQ(agent_->leaseState(), LeaseState::kValid);
  EXPECT_TRUE(fake_.isRunning("web-1"));
  EXPECT_EQ(fake_.startCount("web-1"), 1);
  EXPECT_EQ(std::count(hv_.calls.begin(), hv_.calls.end(), "start web-1"), 0);
  EXPECT_EQ(std::count(hv_.calls.begin(), hv_.calls.end(), "destroy web-1"), 0);
  EXPECT_EQ(std::count(hv_.calls.begin(), hv_.calls.end(), "define web-1"), 0);
  EXPECT_TRUE(fake_.isRunning("web-2"));
  EXPECT_EQ(agent_->restarts("web-2"), 1);
}

}  // namespace
}  // namespace tw
