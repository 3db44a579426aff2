// The agent's heartbeats and the sets it is answered or pushed: the interval,
// what is logged about controller trouble, stale, foreign or older-term sets
// refused, events queued while the controller is away (agent_fixture.h).
#include "agent/agent.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "agent_fixture.h"

namespace tw {
namespace {

using namespace testing_agent;  // agent_fixture.h

// Pins: heartbeats go every interval under the manual clock (not more often
// while nothing changes), carry seq, capacity and the agent id, and follow the
// interval the controller sets.
TEST_F(AgentTest, HeartbeatsFollowTheInterval) {
  startWith({assignment("web-1", 1)});
  const size_t first = link_.heartbeats.size();
  const Millis from = link_.heartbeat_times.back();

  runUntil(10000);
  ASSERT_EQ(link_.heartbeats.size(), first + 10);
  for (size_t i = first; i < link_.heartbeats.size(); ++i) {
    EXPECT_EQ(link_.heartbeat_times[i], from + static_cast<Millis>(i - first + 1) * 1000);
    EXPECT_EQ(link_.heartbeats[i].seq, link_.heartbeats[i - 1].seq + 1);
  }
  const Heartbeat& hb = link_.heartbeats.back();
  EXPECT_EQ(hb.host, "h1");
  EXPECT_EQ(hb.agent_id, "agent-1");
  EXPECT_EQ(hb.capacity.cpus, 8);
  EXPECT_EQ(hb.capacity.memory_mib, 16384);

  link_.set.heartbeat_interval_ms = 250;
  runUntil(11000);  // the 11000 answer brings the new interval
  const size_t before = link_.heartbeats.size();
  runUntil(12000);
  EXPECT_EQ(link_.heartbeats.size(), before + 4);
  EXPECT_EQ(agent_->heartbeatIntervalMs(), 250);
}

// Pins: an unreachable (or refusing) controller is logged once per change of
// condition, not at every retry; the recovery is logged once too.
TEST_F(AgentTest, ControllerTroubleIsLoggedOncePerCondition) {
  LogCapture logs;
  assign({assignment("web-1", 1)}, 1);
  link_.answer_status = unavailable("cannot reach controller at http://c:7800: refused");
  startAgent(/*initial_lease_ms=*/600000);  // keep self-fencing out of this test
  runUntil(10000);
  ASSERT_GE(link_.heartbeats.size(), 10u);
  EXPECT_EQ(logs.count("cannot reach the controller"), 1) << logs.text();

  link_.answer_status = notFound("host 'h1' is not declared");
  runUntil(20000);
  EXPECT_EQ(logs.count("does not know host 'h1'"), 1) << logs.text();
  EXPECT_EQ(logs.count("cannot reach the controller"), 1);

  link_.answer_status = Status::ok();
  runUntil(30000);
  EXPECT_EQ(logs.count("controller answers again"), 1) << logs.text();
  EXPECT_TRUE(fake_.isRunning("web-1"));
}

// Pins: a renewal gap longer than two heartbeat intervals is logged once, at
// the answer that closes it, with its length and the follower that renewed
// (tests/integration/ha_real_agents_test.cc counts these lines); a gap of
// one interval is not.
TEST_F(AgentTest, RenewalGapLongerThanTwoIntervalsIsLogged) {
  LogCapture logs;
  assign({assignment("web-1", 1)}, 1);
  startAgent(/*initial_lease_ms=*/600000);
  runUntil(5000);
  EXPECT_EQ(logs.count("renewal gap"), 0) << logs.text();
  link_.answer_status = unavailable("cannot reach controller at http://c:7800: refused");
  runUntil(8500);
  EXPECT_EQ(logs.count("renewal gap"), 0) << logs.text();
  link_.answer_status = Status::ok();
  link_.set.renewed_by = "c2";
  runUntil(12000);
  EXPECT_EQ(logs.count("renewal gap of host 'h1': 4000 ms from the last answered heartbeat (renewed by replica 'c2')"), 1)
      << logs.text();
  EXPECT_EQ(logs.count("renewal gap"), 1) << logs.text();
}

// Pins: a heartbeat sent more than half an interval after it was due, or
// answered more than half an interval after it went out, is logged with both
// figures (which side was slow when a host flaps to suspect under load); at
// most one line every 10 s, which counts the ones it left out. On time and
// answered at once: no line.
TEST_F(AgentTest, LateOrSlowlyAnsweredHeartbeatsAreLoggedAtMostEveryTenSeconds) {
  LogCapture logs;
  assign({assignment("web-1", 1)}, 1);
  startAgent(/*initial_lease_ms=*/600000);
  runUntil(5000);
  ASSERT_EQ(link_.heartbeat_times.back(), 5000);
  EXPECT_EQ(logs.count("heartbeat of host"), 0) << logs.text();

  clock_.set(6700);  // the agent got no CPU from 6000 (due) to 6700
  agent_->runOnce();
  EXPECT_EQ(logs.count("heartbeat of host 'h1' sent 700 ms after it was due, answered 0 ms after it went out"), 1)
      << logs.text();
  link_.during_heartbeat = [this] { clock_.set(clock_.nowMs() + 600); };  // a slow controller
  runUntil(16000);
  EXPECT_EQ(logs.count("heartbeat of host"), 1) << logs.text();
  runUntil(20000);
  EXPECT_EQ(logs.count("heartbeat of host"), 2) << logs.text();
  EXPECT_EQ(logs.count("answered 600 ms after it went out"), 1) << logs.text();
  EXPECT_EQ(logs.count("more since the last such line"), 1) << logs.text();

  link_.during_heartbeat = nullptr;
  const size_t lines = static_cast<size_t>(logs.count("heartbeat of host"));
  runUntil(40000);
  EXPECT_EQ(static_cast<size_t>(logs.count("heartbeat of host")), lines) << logs.text();

  // A heartbeat that fails after a while is the link's condition, logged as
  // such: not a slow answer.
  link_.answer_status = unavailable("cannot reach controller at http://c:7800: timed out");
  link_.during_heartbeat = [this] { clock_.set(clock_.nowMs() + 600); };
  runUntil(60000);
  EXPECT_EQ(static_cast<size_t>(logs.count("heartbeat of host")), lines) << logs.text();
  EXPECT_EQ(logs.count("cannot reach the controller"), 1) << logs.text();
}

// Pins: a pushed set older than the one in force is ignored, and a pushed set
// for another host too.
TEST_F(AgentTest, IgnoresStaleOrForeignPushedSets) {
  assign({assignment("web-1", 1)}, 5);
  startAgent();
  settle();
  AssignmentSet stale = link_.set;
  stale.version = 4;
  stale.assignments.clear();
  agent_->onAssignments(stale);
  AssignmentSet foreign = link_.set;
  foreign.host = "h2";
  foreign.version = 9;
  foreign.assignments.clear();
  agent_->onAssignments(foreign);
  settle();

  EXPECT_EQ(agent_->assignmentsVersion(), 5);
  EXPECT_TRUE(fake_.isRunning("web-1"));
}

// Pins: an answer that waited for the loop never overrides a newer set that
// the same controller process pushed meanwhile (drain-crashed-vm-slow-libvirt:
// the old set restarted a VM already placed elsewhere). An answer of another
// controller process is applied even when its version is lower (a controller
// that lost its state); pushes of the previous process are then ignored.
TEST_F(AgentTest, OlderAnswerNeverOvertakesANewerPushOfTheSameController) {
  assign({assignment("web-1", 1)}, 4);
  link_.set.controller_id = "c1";
  AgentOptions options;
  options.host = "h1";
  options.agent_id = "agent-1";
  agent_ = std::make_unique<Agent>(options, hv_, link_, clock_, prober_, &ports_, builder_);
  agent_->setExternalHeartbeats(true);
  ASSERT_TRUE(agent_->start().isOk());
  agent_->heartbeatTick();
  agent_->runOnce();
  ASSERT_TRUE(fake_.isRunning("web-1"));

  clock_.advance(1000);
  agent_->heartbeatTick();  // answered with version 4; the loop has not taken it yet
  AssignmentSet pushed = link_.set;
  pushed.version = 6;
  pushed.assignments.clear();
  agent_->onAssignments(pushed);
  agent_->runOnce();
  EXPECT_EQ(agent_->assignmentsVersion(), 6);
  EXPECT_FALSE(fake_.isRunning("web-1"));
  EXPECT_EQ(agent_->domains().size(), 0u);

  // A restarted controller (another process) answers with a lower version.
  link_.set.controller_id = "c2";
  link_.set.version = 2;
  link_.set.assignments = {assignment("web-1", 2)};
  clock_.advance(1000);
  agent_->heartbeatTick();
  agent_->runOnce();
  EXPECT_EQ(agent_->assignmentsVersion(), 2);
  EXPECT_TRUE(fake_.isRunning("web-1"));
  pushed.version = 7;  // a late push of the old process
  agent_->onAssignments(pushed);
  agent_->runOnce();
  EXPECT_EQ(agent_->assignmentsVersion(), 2);
  EXPECT_TRUE(fake_.isRunning("web-1"));
  ASSERT_FALSE(link_.heartbeats.empty());
  clock_.advance(1000);
  agent_->heartbeatTick();
  EXPECT_EQ(link_.heartbeats.back().assignments_controller, "c2");
}

// Pins: runningAssignments() names the assigned VMs that run here at their
// epoch (what the backup runner may back up), not a stopped one, and
// report() delivers an event (with its backup record) like the agent's own.
TEST_F(AgentTest, RunningAssignmentsAndReport) {
  startWith({assignment("web-1", 1), assignment("web-2", 1)});
  std::vector<std::string> names;
  for (const Assignment& a : agent_->runningAssignments()) names.push_back(a.vm);
  EXPECT_EQ(names, (std::vector<std::string>{"web-1", "web-2"}));
  fake_.failStarts("web-2", 100);
  fake_.crash("web-2");
  settle();
  names.clear();
  for (const Assignment& a : agent_->runningAssignments()) names.push_back(a.vm);
  EXPECT_EQ(names, std::vector<std::string>{"web-1"});
  AgentEvent e;
  e.vm = "web-1";
  e.epoch = 1;
  e.kind = "backup.done";
  e.backup.id = "20261206T180000Z-0000beef";
  e.backup.vm = "web-1";
  agent_->report(e);
  runUntil(clock_.nowMs() + 2000);
  const AgentEvent* got = link_.findEvent("backup.done", "web-1");
  ASSERT_NE(got, nullptr);
  EXPECT_EQ(got->host, "h1");
  EXPECT_EQ(got->backup.id, "20261206T180000Z-0000beef");
}

// Pins: events that cannot be delivered are kept and sent, in order, once the
// controller answers again.
TEST_F(AgentTest, QueuesEventsWhileTheControllerIsAway) {
  startWith({assignment("web-1", 1)});
  link_.answer_status = unavailable("down");
  runUntil(1500);
  fake_.crash("web-1");
  settle();
  EXPECT_TRUE(fake_.isRunning("web-1"));  // still restarted: the lease holds
  EXPECT_EQ(agent_->pendingEvents(), 2u);
  EXPECT_EQ(link_.countEvents("vm.crashed"), 0);

  link_.answer_status = Status::ok();
  runUntil(3000);
  EXPECT_EQ(agent_->pendingEvents(), 0u);
  ASSERT_EQ(link_.countEvents("vm.crashed"), 1);
  ASSERT_EQ(link_.countEvents("vm.restarted"), 1);
  EXPECT_EQ(link_.events[link_.events.size() - 2].kind, "vm.crashed");
  EXPECT_EQ(link_.events.back().kind, "vm.restarted");
}

// Pins: a heartbeat whose report shows the new run of a crashed VM carries the
// undelivered events of the crash and restart, oldest first, so that the
// controller never sees the "crashed" after the report of the run after it.
TEST_F(AgentTest, HeartbeatCarriesTheEventsItsReportReflects) {
  startWith({assignment("web-1", 1)});
  runUntil(1500);
  const size_t before = link_.events.size();
  link_.answer_status = unavailable("down");  // no event gets out on its own
  fake_.crash("web-1");
  settle();
  ASSERT_TRUE(fake_.isRunning("web-1"));
  EXPECT_EQ(agent_->pendingEvents(), 2u);
  link_.answer_status = Status::ok();
  const size_t beats = link_.heartbeats.size();
  runUntil(3000);
  ASSERT_GT(link_.heartbeats.size(), beats);
  const Heartbeat& first = link_.heartbeats[beats];  // the first answered one
  ASSERT_EQ(first.events.size(), 2u);
  EXPECT_EQ(first.events[0].kind, "vm.crashed");
  EXPECT_EQ(first.events[1].kind, "vm.restarted");
  EXPECT_EQ(agent_->pendingEvents(), 0u);
  EXPECT_EQ(link_.events.size(), before + 2);  // delivered once, not again by a flush
  for (size_t i = beats + 1; i < link_.heartbeats.size(); ++i) {
    EXPECT_TRUE(link_.heartbeats[i].events.empty());
  }
}

// Pins: the budget reason's window reads as an operator writes it.
TEST(AgentFormatTest, FormatsDurations) {
  EXPECT_EQ(formatDuration(600000), "10m");
  EXPECT_EQ(formatDuration(90000), "90s");
  EXPECT_EQ(formatDuration(7200000), "2h");
  EXPECT_EQ(formatDuration(1500), "1500ms");
}

// Pins: a set of an older leader term (a deposed leader's heartbeat answer
// or push, agent/term_watch.h) is refused: the agent keeps the set in force,
// renews no lease from it and says so once (agent.stale_term); a set of a
// newer term is obeyed again.
TEST_F(AgentTest, RefusesSetsOfAnOlderLeaderTerm) {
  LogCapture log;
  link_.set.term = 40;
  startWith({assignment("web-1", 1)});
  ASSERT_TRUE(fake_.isRunning("web-1"));
  const Millis lease_before = agent_->leaseUntilMs();
  // A deposed leader of term 12 answers the heartbeats: web-2 instead of web-1.
  assign({assignment("web-2", 1)}, 2);
  link_.set.term = 12;
  runUntil(clock_.nowMs() + 3500);
  EXPECT_TRUE(fake_.isRunning("web-1"));
  EXPECT_FALSE(fake_.isRunning("web-2"));
  EXPECT_EQ(agent_->leaseUntilMs(), lease_before);  // no renewal from term 12
  EXPECT_EQ(log.count("refusing assignments of term 12"), 1);
  EXPECT_GE(link_.countEvents("agent.stale_term"), 1);
  // Each refused answer sends the next heartbeat to another replica.
  ASSERT_FALSE(link_.refused.empty());
  EXPECT_EQ(std::count(link_.refused.begin(), link_.refused.end(), false),
            static_cast<long>(link_.refused.size()));
  // Its push is refused too, and the next long poll goes elsewhere.
  AssignmentSet pushed = link_.set;
  pushed.version = 3;
  agent_->onAssignments(pushed);
  settle();
  EXPECT_FALSE(fake_.isRunning("web-2"));
  ASSERT_FALSE(link_.refused.empty());
  EXPECT_TRUE(link_.refused.back());
  // The leader of term 41 is obeyed.
  link_.set.term = 41;
  link_.set.version = 4;
  runUntil(clock_.nowMs() + 1500);
  EXPECT_TRUE(fake_.isRunning("web-2"));
  EXPECT_FALSE(fake_.isRunning("web-1"));
  EXPECT_GT(agent_->leaseUntilMs(), lease_before);
}


}  // namespace
}  // namespace tw
