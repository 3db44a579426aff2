// Starts that take long or never return (agent/start_runner.h): the agent's
// loop goes on while a start runs, gives a start up at its deadline (reported
// as vm.start_failed, what it began destroyed, restarted within the budget),
// and never looks at a result that comes after that. The starts are held by
// the test hypervisor (RecordingHypervisor::hold_starts) and released by the
// test; the deadline is judged on the ManualClock. Hermetic: no threads.
#include "agent/agent.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "agent_fixture.h"

namespace tw {
namespace {

using namespace testing_agent;  // agent_fixture.h

class AgentStartTest : public AgentTest {
 protected:
  AgentStartTest() { hv_.hold_starts = true; }

  int calls(const std::string& call) const {
    return static_cast<int>(std::count(hv_.calls.begin(), hv_.calls.end(), call));
  }
};

// Pins: a start that does not return holds up nothing: another VM's start in
// the same batch is reported when it returns, and a VM assigned meanwhile is
// defined and begun; heartbeats go on. The stuck start is given up at its
// deadline and not a millisecond before: vm.start_failed with the reason,
// its domain destroyed, its call cancelled.
TEST_F(AgentStartTest, StuckStartHoldsUpNothingAndIsGivenUpAtItsDeadline) {
  assign({assignment("web-1", 1), assignment("web-2", 1)}, 1);
  startAgent();
  settle();
  ASSERT_EQ(hv_.held.size(), 1u);
  EXPECT_EQ(hv_.start_batches.back(), (std::vector<std::string>{"web-1", "web-2"}));

  runUntil(1500);
  ASSERT_TRUE(hv_.held[0]->release("web-2", Status::ok()));
  runUntil(2000);
  EXPECT_EQ(link_.countEvents("vm.started", "web-2"), 1);
  EXPECT_EQ(link_.countEvents("vm.started", "web-1"), 0);
  EXPECT_EQ(link_.lastReport("web-2")->state, DomainState::kRunning);

  // An assignment change while web-1's start is stuck is acted on.
  assign({assignment("web-1", 1), assignment("web-2", 1), assignment("web-3", 1)}, 2);
  const size_t sent = link_.heartbeats.size();
  runUntil(10000);
  EXPECT_GT(link_.heartbeats.size(), sent);
  EXPECT_EQ(calls("define web-3"), 1);
  ASSERT_EQ(hv_.held.size(), 2u);
  EXPECT_EQ(hv_.start_batches.back(), std::vector<std::string>{"web-3"});
  ASSERT_TRUE(hv_.held[1]->release("web-3", Status::ok()));
  runUntil(11000);
  EXPECT_EQ(link_.countEvents("vm.started", "web-3"), 1);

  runUntil(59999);
  EXPECT_EQ(link_.countEvents("vm.start_failed", "web-1"), 0);
  EXPECT_EQ(calls("destroy web-1"), 0);
  EXPECT_FALSE(hv_.held[0]->cancelled("web-1"));
  EXPECT_EQ(calls("begin start web-1"), 1);  // never begun twice while it runs

  runUntil(60000);
  const AgentEvent* failed = link_.findEvent("vm.start_failed", "web-1");
  ASSERT_NE(failed, nullptr);
  EXPECT_EQ(failed->message,
            "starting vm 'web-1' (epoch 1) failed: the start did not return within 60 s");
  EXPECT_EQ(calls("destroy web-1"), 1);
  EXPECT_TRUE(hv_.held[0]->cancelled("web-1"));
  EXPECT_EQ(agent_->restarts("web-1"), 1);  // counted against its budget
  EXPECT_TRUE(fake_.isRunning("web-2"));    // nothing else touched
  EXPECT_TRUE(fake_.isRunning("web-3"));
  EXPECT_EQ(calls("destroy web-2") + calls("destroy web-3"), 0);
}

// Pins: a start that returns just before its deadline is a start like any
// other: vm.started, nothing destroyed, no failure counted.
TEST_F(AgentStartTest, StartReturningJustBeforeTheDeadlineIsANormalStart) {
  assign({assignment("web-1", 1)}, 1);
  startAgent();
  settle();
  runUntil(59999);
  ASSERT_TRUE(hv_.held[0]->release("web-1", Status::ok()));
  agent_->runOnce();

  EXPECT_EQ(link_.countEvents("vm.started", "web-1"), 1);
  EXPECT_EQ(link_.countEvents("vm.start_failed"), 0);
  EXPECT_EQ(calls("destroy web-1"), 0);
  EXPECT_EQ(agent_->restarts("web-1"), 0);
  runUntil(70000);
  EXPECT_EQ(link_.countEvents("vm.start_failed"), 0);
  EXPECT_EQ(link_.lastReport("web-1")->state, DomainState::kRunning);
}

// Pins: what the given-up call returns later (QEMU killed by the destroy:
// an error; or, had it started after all, ok) is never looked at: no event,
// no change of the budget, no second start while the restart runs.
TEST_F(AgentStartTest, LateReturnAfterTheDeadlineChangesNothing) {
  assign({assignment("web-1", 1)}, 1);
  startAgent();
  settle();
  runUntil(60000);
  ASSERT_EQ(link_.countEvents("vm.start_failed", "web-1"), 1);
  runUntil(62000);  // the restart after its back-off is under way
  ASSERT_EQ(hv_.held.size(), 2u);
  const size_t events = link_.events.size();
  const std::vector<std::string> calls_before = hv_.calls;
  const int restarts = agent_->restarts("web-1");

  ASSERT_TRUE(hv_.held[0]->release("web-1", unavailable("domain destroyed during its start")));
  runUntil(63000);
  EXPECT_EQ(link_.events.size(), events);
  EXPECT_EQ(hv_.calls, calls_before);
  EXPECT_EQ(agent_->restarts("web-1"), restarts);

  // The restart returns: one vm.restarted, one domain.
  ASSERT_TRUE(hv_.held[1]->release("web-1", Status::ok()));
  runUntil(64000);
  EXPECT_EQ(link_.countEvents("vm.restarted", "web-1"), 1);
  EXPECT_EQ(link_.countEvents("vm.start_failed", "web-1"), 1);
  EXPECT_TRUE(fake_.isRunning("web-1"));
}

// Pins the safety net's own cost (docs/policy.md, "A start that never
// returns"): a healthy start that is only slow — a loaded host — and runs
// past the deadline costs one destroy and one restart of that VM; when every
// start is that slow, the restart budget bounds it (vm.budget_exhausted, left
// stopped for the controller to relocate), and no other VM is touched.
TEST_F(AgentStartTest, SlowHealthyStartsCostARestartEachBoundedByTheBudget) {
  start_timeout_ms_ = 10000;
  Assignment slow = assignment("web-1", 1);
  slow.restart.restarts = 2;
  assign({slow, assignment("web-2", 1)}, 1);
  startAgent();
  settle();
  ASSERT_TRUE(hv_.held[0]->release("web-2", Status::ok()));

  // The first start of web-1 would have taken 12 s: given up at 10 s.
  runUntil(10000);
  EXPECT_EQ(link_.countEvents("vm.start_failed", "web-1"), 1);
  EXPECT_EQ(calls("destroy web-1"), 1);
  // Its restarts are as slow: each given up, until the budget is spent.
  for (int i = 0; i < 10 && !agent_->budgetExhausted("web-1"); ++i) {
    runUntil(clock_.nowMs() + 5000);
  }
  EXPECT_TRUE(agent_->budgetExhausted("web-1"));
  EXPECT_EQ(link_.countEvents("vm.budget_exhausted", "web-1"), 1);
  // The budget counts the failed start and the restart: two attempts.
  EXPECT_EQ(link_.countEvents("vm.start_failed", "web-1"), 2);
  EXPECT_EQ(calls("destroy web-1"), 2);
  EXPECT_EQ(calls("begin start web-1"), 2);
  EXPECT_EQ(calls("destroy web-2"), 0);
  EXPECT_TRUE(fake_.isRunning("web-2"));
  // Spent: nothing more is tried.
  const size_t batches = hv_.start_batches.size();
  runUntil(clock_.nowMs() + 600000);
  EXPECT_EQ(hv_.start_batches.size(), batches);
}

// Pins: when the first attempt is given up and the restart is quick, the cost
// is that one restart: the VM runs; vm.restarted counts the given-up start
// (any failed start counts against the budget) and the restart.
TEST_F(AgentStartTest, GivenUpStartThenQuickRestartRuns) {
  start_timeout_ms_ = 10000;
  assign({assignment("web-1", 1)}, 1);
  startAgent();
  settle();
  runUntil(10000);
  ASSERT_EQ(link_.countEvents("vm.start_failed", "web-1"), 1);
  runUntil(12000);
  ASSERT_EQ(hv_.held.size(), 2u);
  ASSERT_TRUE(hv_.held[1]->release("web-1", Status::ok()));
  runUntil(13000);
  ASSERT_NE(link_.findEvent("vm.restarted", "web-1"), nullptr);
  EXPECT_EQ(link_.findEvent("vm.restarted", "web-1")->message,
            "restarted vm 'web-1' (epoch 1): restart 2 of 3 in 10m");
  EXPECT_TRUE(fake_.isRunning("web-1"));
  EXPECT_EQ(link_.lastReport("web-1")->state, DomainState::kRunning);
}

// Pins: a self-fence gives up the starts under way (destroying what they
// began) and a start that returns ok after that is destroyed by the fence's
// next pass: nothing runs on a self-fenced host.
TEST_F(AgentStartTest, SelfFenceGivesUpStartsAndALateStartIsDestroyed) {
  assign({assignment("web-1", 1)}, 1);
  startAgent();
  settle();
  link_.answer_status = unavailable("controller unreachable");
  runUntil(7000);  // the lease (5 s) expired: isolated, self-fenced
  ASSERT_EQ(agent_->leaseState(), LeaseState::kExpired);
  EXPECT_TRUE(hv_.held[0]->cancelled("web-1"));
  EXPECT_GE(calls("destroy web-1"), 1);

  ASSERT_TRUE(hv_.held[0]->release("web-1", Status::ok()));  // it came up after all
  ASSERT_TRUE(fake_.isRunning("web-1"));
  runUntil(9000);
  EXPECT_FALSE(fake_.isRunning("web-1"));
  EXPECT_EQ(link_.countEvents("vm.started", "web-1"), 0);
}

// Pins: a VM unassigned while its start is under way is not reported gone at
// the new set's version until that start returned and what it brought up was
// removed. The controller confirms an eviction from a heartbeat at the
// evicting version that shows the VM not active, then starts it elsewhere;
// libvirt shows a starting domain inactive until QEMU is launched, so a
// start that came up after such a heartbeat would run beside the new copy.
TEST_F(AgentStartTest, UnassignedWhileStartingIsNotReportedGoneUntilTheStartEnds) {
  assign({assignment("web-1", 1), assignment("web-2", 1)}, 1);
  startAgent();
  settle();
  ASSERT_TRUE(hv_.held[0]->release("web-2", Status::ok()));
  runUntil(1500);
  ASSERT_TRUE(fake_.isRunning("web-2"));

  assign({assignment("web-2", 1)}, 2);  // web-1 evicted while its start runs
  const size_t before = link_.heartbeats.size();
  runUntil(8000);
  ASSERT_GT(link_.heartbeats.size(), before);
  for (size_t i = before; i < link_.heartbeats.size(); ++i)
    EXPECT_EQ(link_.heartbeats[i].assignments_version, 1) << "heartbeat " << i;

  // The start comes up after all: removed as not assigned, then version 2.
  ASSERT_TRUE(hv_.held[0]->release("web-1", Status::ok()));
  const size_t released = link_.heartbeats.size();
  runUntil(12000);
  EXPECT_FALSE(fake_.isRunning("web-1"));
  EXPECT_TRUE(fake_.isRunning("web-2"));
  EXPECT_EQ(link_.heartbeats.back().assignments_version, 2);
  for (size_t i = released; i < link_.heartbeats.size(); ++i) {
    const Heartbeat& hb = link_.heartbeats[i];
    if (hb.assignments_version < 2) continue;
    for (const DomainReport& d : hb.domains)
      EXPECT_FALSE(d.vm == "web-1" && isActive(d.state)) << "heartbeat " << i;
  }
  EXPECT_EQ(link_.countEvents("vm.started", "web-1"), 0);
}

}  // namespace
}  // namespace tw
