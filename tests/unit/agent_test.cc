// The agent's core on a FakeHypervisor, a ManualClock and a scripted
// controller link: convergence, crash restarts within the budget, the lease
// and self-fencing, heartbeats. Hermetic: no threads, no sleeps.
#include "agent/agent.h"

#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>

#include <algorithm>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "tw/fake_hypervisor.h"
#include "tw/log.h"

namespace tw {
namespace {

// The controller's side, scripted: answers every heartbeat with `set` (or
// fails with `answer_status`) and records what the agent sent.
class ScriptedLink final : public ControllerLink {
 public:
  explicit ScriptedLink(const Clock& clock) : clock_(clock) {}

  Result<AssignmentSet> heartbeat(const Heartbeat& hb) override {
    heartbeats.push_back(hb);
    heartbeat_times.push_back(clock_.nowMs());
    if (!answer_status.isOk()) return answer_status;
    return set;
  }
  Status sendEvent(const AgentEvent& event) override {
    if (!answer_status.isOk()) return answer_status;
    events.push_back(event);
    return Status::ok();
  }

  int countEvents(const std::string& kind, const std::string& vm = "") const {
    return static_cast<int>(std::count_if(events.begin(), events.end(), [&](const AgentEvent& e) {
      return e.kind == kind && (vm.empty() || e.vm == vm);
    }));
  }
  const AgentEvent* findEvent(const std::string& kind, const std::string& vm = "") const {
    for (const AgentEvent& e : events) {
      if (e.kind == kind && (vm.empty() || e.vm == vm)) return &e;
    }
    return nullptr;
  }
  const DomainReport* lastReport(const std::string& vm) const {
    if (heartbeats.empty()) return nullptr;
    for (const DomainReport& r : heartbeats.back().domains) {
      if (r.vm == vm) return &r;
    }
    return nullptr;
  }

  AssignmentSet set;
  Status answer_status;
  std::vector<Heartbeat> heartbeats;
  std::vector<Millis> heartbeat_times;
  std::vector<AgentEvent> events;

 private:
  const Clock& clock_;
};

// A FakeHypervisor that records every call that changes something
// ("start web-1"), to prove what the agent did not touch.
class RecordingHypervisor final : public Hypervisor {
 public:
  explicit RecordingHypervisor(FakeHypervisor& fake) : fake_(fake) {}

  Status ping() override { return fake_.ping(); }
  Result<Capacity> capacity() override { return fake_.capacity(); }
  Status define(const DomainSpec& spec) override {
    calls.push_back("define " + spec.meta.vm);
    return fake_.define(spec);
  }
  Status start(const std::string& vm) override {
    calls.push_back("start " + vm);
    return fake_.start(vm);
  }
  Status destroy(const std::string& vm) override {
    calls.push_back("destroy " + vm);
    return fake_.destroy(vm);
  }
  Status undefine(const std::string& vm) override {
    calls.push_back("undefine " + vm);
    return fake_.undefine(vm);
  }
  Result<std::vector<DomainStatus>> listManaged() override { return fake_.listManaged(); }
  Result<DomainStatus> domainState(const std::string& vm) override { return fake_.domainState(vm); }
  Status subscribe(DomainEventHandler handler) override {
    return fake_.subscribe(std::move(handler));
  }
  Status migrate(const std::string& vm, const std::string& dest_uri,
                 const MigrateOptions& options) override {
    calls.push_back("migrate " + vm);
    return fake_.migrate(vm, dest_uri, options);
  }

  std::vector<std::string> calls;

 private:
  FakeHypervisor& fake_;
};

// Routes the default logger into a string for the test's lifetime.
class LogCapture {
 public:
  LogCapture() : previous_(spdlog::default_logger()) {
    auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(out_);
    auto logger = std::make_shared<spdlog::logger>("agent-test", sink);
    logger->set_pattern("%l %v");
    logger->set_level(spdlog::level::info);
    spdlog::set_default_logger(logger);
  }
  ~LogCapture() { spdlog::set_default_logger(previous_); }

  int count(const std::string& needle) const {
    const std::string text = out_.str();
    int n = 0;
    for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) {
      ++n;
    }
    return n;
  }
  std::string text() const { return out_.str(); }

 private:
  std::shared_ptr<spdlog::logger> previous_;
  std::ostringstream out_;
};

Assignment assignment(const std::string& vm, int64_t epoch, const std::string& digest = "d1") {
  Assignment a;
  a.vm = vm;
  a.tier = "web";
  a.epoch = epoch;
  a.policy_version = 1;
  a.spec_digest = digest;
  a.vcpus = 2;
  a.memory_mib = 256;
  return a;
}

DomainSpec specOf(const Assignment& a) {
  DomainSpec spec;
  spec.meta = DomainMeta{a.vm, a.tier, a.epoch, a.policy_version, a.spec_digest};
  return spec;
}

class AgentTest : public ::testing::Test {
 protected:
  AgentTest() : hv_(fake_), link_(clock_) {
    hv_.subscribe([this](const DomainEvent& e) {
      if (agent_) agent_->onDomainEvent(e);
    });
  }

  void assign(std::vector<Assignment> assignments, int64_t version) {
    link_.set.host = "h1";
    link_.set.version = version;
    link_.set.lease_ms = 5000;
    link_.set.heartbeat_interval_ms = 1000;
    link_.set.assignments = std::move(assignments);
  }

  void startAgent(Millis initial_lease_ms = 5000) {
    AgentOptions options;
    options.host = "h1";
    options.agent_id = "agent-" + std::to_string(++generation_);
    options.initial_lease_ms = initial_lease_ms;
    agent_ = std::make_unique<Agent>(options, hv_, link_, clock_);
    ASSERT_TRUE(agent_->start().isOk());
  }

  // Runs everything due up to time t (the clock ends at t).
  void runUntil(Millis t) {
    for (int i = 0; i < 10000; ++i) {
      const Millis next = agent_->nextWakeMs();
      if (next > t) {
        clock_.set(t);
        return;
      }
      clock_.set(std::max(clock_.nowMs(), next));
      agent_->runOnce();
    }
    FAIL() << "agent never idles (nextWakeMs stays at " << agent_->nextWakeMs() << ")";
  }
  void settle() { runUntil(clock_.nowMs()); }

  // A running VM under the first assignment set; clock at 0.
  void startWith(std::vector<Assignment> assignments) {
    assign(std::move(assignments), 1);
    startAgent();
    settle();
  }

  ManualClock clock_{0};
  FakeHypervisor fake_;
  RecordingHypervisor hv_;
  ScriptedLink link_;
  std::unique_ptr<Agent> agent_;
  int generation_ = 0;
};

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

// Pins: when the lease expires the agent destroys every managed domain (their
// definitions kept), starts nothing while expired, and reports
// host.self_fenced once it reaches the controller again, then converges.
TEST_F(AgentTest, SelfFencesWhenTheLeaseExpires) {
  startWith({assignment("web-1", 1), assignment("web-2", 1)});
  ASSERT_EQ(agent_->leaseState(), LeaseState::kValid);
  ASSERT_EQ(agent_->leaseUntilMs(), 5000);

  link_.answer_status = unavailable("connection refused");
  runUntil(4999);
  EXPECT_EQ(fake_.runningCount(), 2);
  runUntil(5000);
  EXPECT_EQ(agent_->leaseState(), LeaseState::kExpired);
  EXPECT_EQ(fake_.runningCount(), 0);
  EXPECT_NE(fake_.spec("web-1"), nullptr);
  EXPECT_NE(fake_.spec("web-2"), nullptr);

  // While expired: a pushed set with a new VM starts nothing.
  AssignmentSet more = link_.set;
  more.version = 2;
  more.assignments.push_back(assignment("web-3", 1));
  agent_->onAssignments(more);
  runUntil(9000);
  EXPECT_EQ(fake_.runningCount(), 0);
  EXPECT_EQ(fake_.spec("web-3"), nullptr);
  EXPECT_EQ(link_.countEvents("host.self_fenced"), 0);  // not delivered yet

  link_.set = more;
  link_.answer_status = Status::ok();
  runUntil(10000);
  EXPECT_EQ(agent_->leaseState(), LeaseState::kValid);
  const AgentEvent* fenced = link_.findEvent("host.self_fenced");
  ASSERT_NE(fenced, nullptr);
  EXPECT_EQ(fenced->level, "error");
  EXPECT_EQ(fenced->message.rfind("host 'h1' self-fenced: lease expired (no heartbeat answered "
                                  "for 5s)",
                                  0),
            0u)
      << fenced->message;
  EXPECT_EQ(link_.countEvents("vm.destroyed"), 2);
  EXPECT_EQ(fake_.runningCount(), 3);
  EXPECT_EQ(link_.countEvents("vm.crashed"), 0);  // our own destroys
  EXPECT_EQ(agent_->restarts("web-1"), 0);
}

// Pins: a freshly started agent that never hears from the controller
// self-fences once its assumed start-up lease is over.
TEST_F(AgentTest, SelfFencesWhenTheControllerNeverAnswersAfterStart) {
  startWith({assignment("web-1", 1)});
  agent_.reset();
  link_.answer_status = unavailable("connection refused");
  clock_.set(20000);
  startAgent(/*initial_lease_ms=*/5000);

  runUntil(24999);
  EXPECT_TRUE(fake_.isRunning("web-1"));
  runUntil(25000);
  EXPECT_EQ(agent_->leaseState(), LeaseState::kExpired);
  EXPECT_FALSE(fake_.isRunning("web-1"));
}

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

// Pins: the budget reason's window reads as an operator writes it.
TEST(AgentFormatTest, FormatsDurations) {
  EXPECT_EQ(formatDuration(600000), "10m");
  EXPECT_EQ(formatDuration(90000), "90s");
  EXPECT_EQ(formatDuration(7200000), "2h");
  EXPECT_EQ(formatDuration(1500), "1500ms");
}

}  // namespace
}  // namespace tw
