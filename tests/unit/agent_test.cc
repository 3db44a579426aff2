// The agent's core on a FakeHypervisor, a ManualClock and a scripted
// controller link: convergence, crash restarts within the budget, the lease
// and self-fencing, heartbeats, health reboots, service ports, live migration
// between two agents. Hermetic: no threads, no sleeps.
#include "agent/agent.h"

#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "agent/health_prober.h"
#include "tw/fake_hypervisor.h"
#include "tw/json.h"
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
    // The controller handles the events a heartbeat carries before its domains.
    events.insert(events.end(), hb.events.begin(), hb.events.end());
    return set;
  }
  Status sendEvent(const AgentEvent& event) override {
    if (!answer_status.isOk()) return answer_status;
    events.push_back(event);
    return Status::ok();
  }
  void refusedAnswer(bool pushed) override { refused.push_back(pushed); }

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
  std::vector<bool> refused;  // refusedAnswer() calls: pushed or not

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
  std::vector<Status> startAll(const std::vector<std::string>& vms) override {
    start_batches.push_back(vms);
    return Hypervisor::startAll(vms);
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
    migrate_options.push_back(options);
    if (during_migrate) during_migrate();
    return fake_.migrate(vm, dest_uri, options);
  }
  // Port forwards are recorded apart from `calls` ("web-1 127.0.0.1:20000->80").
  // With no_monitor, both calls fail as on libvirt's test driver.
  Status addPortForward(const std::string& vm, const PortForward& f) override {
    forwards.push_back(vm + " " + f.address + ":" + std::to_string(f.host_port) + "->" +
                       std::to_string(f.guest_port));
    if (no_monitor) return unimplemented("no QEMU monitor");
    return fake_.addPortForward(vm, f);
  }
  Result<std::vector<PortForward>> portForwards(const std::string& vm) override {
    ++forward_lists;
    if (no_monitor) return unimplemented("no QEMU monitor");
    return fake_.portForwards(vm);
  }

  std::vector<std::string> calls;
  std::vector<std::vector<std::string>> start_batches;  // each startAll's vms
  std::vector<std::string> forwards;
  int forward_lists = 0;
  bool no_monitor = false;
  std::vector<MigrateOptions> migrate_options;
  std::function<void()> during_migrate;  // e.g. to let the migration take time

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
    // Two peers that this agent does not reach (no PeerView): an expired
    // lease means isolation, as before peers were counted.
    link_.set.peers = {{"h2", ""}, {"h3", ""}};
  }

  void startAgent(Millis initial_lease_ms = 5000) {
    AgentOptions options;
    options.host = "h1";
    options.agent_id = "agent-" + std::to_string(++generation_);
    options.initial_lease_ms = initial_lease_ms;
    agent_ = std::make_unique<Agent>(options, hv_, link_, clock_, prober_, &ports_, builder_);
    ASSERT_TRUE(agent_->start().isOk());
  }

  // Runs everything due up to time t (the clock ends at t): the agent's work
  // and, with a ScheduledHealthProber, the probes due.
  void runUntil(Millis t) {
    for (int i = 0; i < 10000; ++i) {
      Millis next = agent_->nextWakeMs();
      if (scheduled_ != nullptr) next = std::min(next, scheduled_->nextDueMs());
      if (next > t) {
        clock_.set(t);
        return;
      }
      clock_.set(std::max(clock_.nowMs(), next));
      if (scheduled_ != nullptr) scheduled_->runDue();
      agent_->runOnce();
      agent_->runMigrations();
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
  PortMap ports_{20000, 100};
  HealthProber* prober_ = nullptr;              // null: the agent's NoopHealthProber
  DomainBuilder* builder_ = nullptr;            // null: the agent's PlainDomainBuilder
  ScheduledHealthProber* scheduled_ = nullptr;  // stepped by runUntil when set
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
                                  "for 5s and it reaches 0 of its 2 peers (isolated: 1 of 4 votes))",
                                  0),
            0u)
      << fenced->message;
  // The heartbeat after the fence said why; the one after the answer does not.
  bool said = false;
  for (const auto& hb : link_.heartbeats) said |= !hb.self_fence_reason.empty();
  EXPECT_TRUE(said);
  EXPECT_TRUE(link_.heartbeats.back().self_fence_reason.empty());
  EXPECT_EQ(link_.countEvents("vm.destroyed"), 2);
  EXPECT_EQ(fake_.runningCount(), 3);
  EXPECT_EQ(link_.countEvents("vm.crashed"), 0);  // our own destroys
  EXPECT_EQ(agent_->restarts("web-1"), 0);
}

// A PeerView whose answer the test sets.
class FixedPeerView final : public PeerView {
 public:
  void setPeers(const std::vector<PeerInfo>& peers, Millis) override { peers_ = peers; }
  std::set<std::string> reachable(Millis) const override { return reach; }
  std::map<std::string, Millis> unreachable(Millis) const override { return lost; }
  std::set<std::string> reach;
  std::map<std::string, Millis> lost;
  std::vector<PeerInfo> peers_;
};

// Pins: a controller outage alone fences nobody. The lease runs out while
// the agent reaches one of its two peers (2 of 4 votes: the rest cannot
// outvote it): it keeps its VMs (kHeld), restarts a crashed one in place,
// starts no newly pushed VM, and is kValid again once the controller answers.
// When it then also loses that peer, it is isolated and self-fences.
TEST_F(AgentTest, ControllerOutageKeepsVmsWhilePeersReachIt) {
  FixedPeerView peers;
  peers.reach = {"h2"};
  assign({assignment("web-1", 1), assignment("web-2", 1)}, 1);
  startAgent();
  agent_->setPeerView(&peers);
  settle();
  ASSERT_EQ(fake_.runningCount(), 2);

  link_.answer_status = unavailable("connection refused");
  runUntil(8000);
  EXPECT_EQ(agent_->leaseState(), LeaseState::kHeld);
  EXPECT_EQ(fake_.runningCount(), 2);
  EXPECT_EQ(link_.countEvents("vm.destroyed"), 0);

  // A crash while the controller is away: restarted in place.
  fake_.crash("web-1");
  runUntil(9000);
  EXPECT_TRUE(fake_.isRunning("web-1"));
  EXPECT_EQ(agent_->restarts("web-1"), 1);

  // The peer's report says it is still reached: nothing new starts.
  AssignmentSet more = link_.set;
  more.version = 2;
  more.assignments.push_back(assignment("web-3", 1));
  agent_->onAssignments(more);
  runUntil(10000);
  EXPECT_EQ(fake_.spec("web-3"), nullptr);

  // Losing the last peer: isolated (1 of 4 votes), it self-fences.
  peers.reach.clear();
  runUntil(10500);
  EXPECT_EQ(agent_->leaseState(), LeaseState::kExpired);
  EXPECT_EQ(fake_.runningCount(), 0);
}

// Pins: the heartbeat carries the peers the PeerView reports unreachable,
// and the agent's peer address.
TEST_F(AgentTest, HeartbeatsCarryUnreachablePeers) {
  FixedPeerView peers;
  peers.lost = {{"h3", 4000}};
  assign({assignment("web-1", 1)}, 1);
  startAgent();
  agent_->setPeerView(&peers);
  settle();
  runUntil(2000);
  ASSERT_FALSE(link_.heartbeats.empty());
  EXPECT_EQ(link_.heartbeats.back().peers_unreachable.at("h3"), 4000);
}

// Pins: the heartbeat names the peer list the agent holds (peers_digest),
// and an answer that leaves the list out (peers_omitted) keeps it: the
// agent still counts two peers, and still names the list.
TEST_F(AgentTest, AnswerWithoutPeerListKeepsTheHeldOne) {
  FixedPeerView peers;
  link_.set.peers = {{"h2", "10.0.0.2:7810"}, {"h3", "10.0.0.3:7810"}};
  link_.set.peers_digest = "d1";
  assign({assignment("web-1", 1)}, 1);
  startAgent();
  agent_->setPeerView(&peers);
  settle();
  runUntil(2000);
  ASSERT_FALSE(link_.heartbeats.empty());
  EXPECT_EQ(link_.heartbeats.back().peers_digest, "d1");
  ASSERT_EQ(peers.peers_.size(), 2u);

  link_.set.peers.clear();
  link_.set.peers_omitted = true;
  const size_t sent = link_.heartbeats.size();
  runUntil(5000);
  ASSERT_GT(link_.heartbeats.size(), sent + 1);
  EXPECT_EQ(link_.heartbeats.back().peers_digest, "d1");
  EXPECT_EQ(peers.peers_.size(), 2u);

  // Lease out and no peer reached: "0 of its 2 peers", so the omitted list
  // still counted.
  link_.answer_status = unavailable("connection refused");
  runUntil(12000);
  EXPECT_EQ(agent_->leaseState(), LeaseState::kExpired);
  link_.answer_status = Status::ok();  // the fence's event is delivered once the controller answers
  runUntil(14000);
  const AgentEvent* fenced = link_.findEvent("host.self_fenced");
  ASSERT_NE(fenced, nullptr);
  EXPECT_NE(fenced->message.find("reaches 0 of its 2 peers"), std::string::npos) << fenced->message;
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

// ------------------------------------------------------------ service ports ---

// Pins: every assigned VM gets a host port per service port and check port,
// lowest free first; they are reported in heartbeats (DomainReport::ports) and
// released when the VM is no longer assigned, for the next VM to reuse.
TEST_F(AgentTest, GivesReportsAndReleasesHostPorts) {
  Assignment web1 = assignment("web-1", 1);
  web1.ports = {ServicePort{"http", 80, "tcp"}, ServicePort{"https", 443, "tcp"}};
  web1.health.kind = HealthKind::kTcp;
  web1.health.port = 8080;
  Assignment web2 = assignment("web-2", 1);
  web2.ports = {ServicePort{"http", 80, "tcp"}};
  startWith({web1, web2});

  ASSERT_NE(link_.lastReport("web-1"), nullptr);
  EXPECT_EQ(link_.lastReport("web-1")->ports,
            (std::map<int, int>{{80, 20000}, {443, 20001}, {8080, 20002}}));
  EXPECT_EQ(link_.lastReport("web-2")->ports, (std::map<int, int>{{80, 20003}}));

  AssignmentSet next = link_.set;
  next.version = 2;
  Assignment web3 = assignment("web-3", 1);
  web3.ports = {ServicePort{"ssh", 22, "tcp"}};
  next.assignments = {web2, web3};
  link_.set = next;
  agent_->onAssignments(next);
  settle();

  EXPECT_EQ(ports_.ports("web-1"), (std::map<int, int>{}));
  EXPECT_EQ(link_.lastReport("web-2")->ports, (std::map<int, int>{{80, 20003}}));
  EXPECT_EQ(link_.lastReport("web-3")->ports, (std::map<int, int>{{22, 20000}}));
}

// Pins: the forwards are added on the hypervisor right after the start, at
// the service address; a crashed VM reports no ports until its restarted QEMU
// has them again (added anew: forwards die with the QEMU process).
TEST_F(AgentTest, ForwardsPortsAfterEveryStart) {
  Assignment web1 = assignment("web-1", 1);
  web1.ports = {ServicePort{"http", 80, "tcp"}};
  startWith({web1});

  EXPECT_EQ(hv_.forwards, (std::vector<std::string>{"web-1 127.0.0.1:20000->80"}));
  ASSERT_TRUE(fake_.portForwards("web-1").isOk());
  EXPECT_EQ(fake_.portForwards("web-1")->size(), 1u);
  EXPECT_EQ(link_.lastReport("web-1")->ports, (std::map<int, int>{{80, 20000}}));
  EXPECT_EQ(link_.heartbeats.back().service_address, "127.0.0.1");

  fake_.crash("web-1");
  settle();
  ASSERT_TRUE(fake_.isRunning("web-1"));
  EXPECT_EQ(hv_.forwards, (std::vector<std::string>{"web-1 127.0.0.1:20000->80",
                                                    "web-1 127.0.0.1:20000->80"}));
  EXPECT_EQ(fake_.portForwards("web-1")->size(), 1u);
  EXPECT_EQ(link_.lastReport("web-1")->ports, (std::map<int, int>{{80, 20000}}));
}

// Pins: a restarted agent takes over the forwards its running VMs already have
// (no second forward, the same host port reported), and gives new VMs other ports.
TEST_F(AgentTest, RestartedAgentAdoptsExistingForwards) {
  Assignment web1 = assignment("web-1", 1);
  web1.ports = {ServicePort{"http", 80, "tcp"}};
  ASSERT_TRUE(fake_.define(specOf(web1)).isOk());
  ASSERT_TRUE(fake_.start("web-1").isOk());
  ASSERT_TRUE(fake_.addPortForward("web-1", PortForward{"127.0.0.1", 20007, 80}).isOk());
  Assignment web2 = assignment("web-2", 1);
  web2.ports = {ServicePort{"http", 80, "tcp"}};
  startWith({web1, web2});

  EXPECT_EQ(fake_.startCount("web-1"), 1);
  EXPECT_EQ(link_.lastReport("web-1")->ports, (std::map<int, int>{{80, 20007}}));
  EXPECT_EQ(link_.lastReport("web-2")->ports, (std::map<int, int>{{80, 20000}}));
  EXPECT_EQ(hv_.forwards, (std::vector<std::string>{"web-2 127.0.0.1:20000->80"}));
}

// Pins: on a hypervisor without forwards (libvirt's test driver) the VM runs,
// no ports are reported (none reach it), and the agent stops asking after the
// first answer.
TEST_F(AgentTest, NoForwardsOnTheTestDriverReportsNoPorts) {
  hv_.no_monitor = true;
  Assignment web1 = assignment("web-1", 1);
  web1.ports = {ServicePort{"http", 80, "tcp"}};
  Assignment web2 = assignment("web-2", 1);
  web2.ports = {ServicePort{"http", 80, "tcp"}};
  startWith({web1, web2});

  EXPECT_TRUE(fake_.isRunning("web-1"));
  ASSERT_NE(link_.lastReport("web-1"), nullptr);
  EXPECT_TRUE(link_.lastReport("web-1")->ports.empty());
  EXPECT_TRUE(hv_.forwards.empty());
  EXPECT_EQ(hv_.forward_lists, 1);
}

// Pins: the domain comes from the DomainBuilder; a build failure is a failed
// start that counts against the budget, with the builder's message.
class FailingBuilder final : public DomainBuilder {
 public:
  Result<DomainSpec> build(const Assignment& a) override {
    if (a.image == "missing") return notFound("image 'missing' is not in /x (run images/build)");
    DomainSpec spec;
    spec.meta = DomainMeta{a.vm, a.tier, a.epoch, a.policy_version, a.spec_digest};
    spec.kernel = "/x/vmlinux";
    return spec;
  }
  void release(const std::string& vm) override { released.push_back(vm); }
  std::vector<std::string> released;
};

TEST_F(AgentTest, BuildsDomainsWithTheBuilderAndReleasesThem) {
  FailingBuilder builder;
  builder_ = &builder;
  Assignment good = assignment("web-1", 1);
  Assignment bad = assignment("web-2", 1);
  bad.image = "missing";
  assign({good, bad}, 1);
  startAgent();
  for (int i = 0; i < 3; ++i) agent_->runOnce();

  ASSERT_NE(fake_.spec("web-1"), nullptr);
  EXPECT_EQ(fake_.spec("web-1")->kernel, "/x/vmlinux");
  EXPECT_FALSE(fake_.isRunning("web-2"));
  const AgentEvent* failed = link_.findEvent("vm.start_failed", "web-2");
  ASSERT_NE(failed, nullptr);
  EXPECT_NE(failed->message.find("image 'missing' is not in /x"), std::string::npos) << failed->message;
  EXPECT_EQ(agent_->restarts("web-2"), 1);

  assign({bad}, 2);
  agent_->onAssignments(link_.set);
  agent_->runOnce();
  EXPECT_EQ(fake_.spec("web-1"), nullptr);
  EXPECT_EQ(builder.released, (std::vector<std::string>{"web-1"}));
}

// Pins: the kernel command line appends the image's parameters with the VM's
// identity; tw.backend is the first tier of `after`; empty values are left out.
TEST(DomainBuilderTest, KernelCmdlineCarriesIdentity) {
  ImageInfo img;
  img.cmdline = "console=ttyS0 tw.role=balancer";
  img.cmdline_params = {"tw.vm", "tw.tier", "tw.host", "tw.api", "tw.backend"};
  Assignment a = assignment("balancer-1", 1);
  a.tier = "balancer";
  a.after = {"apache", "mysql"};
  EXPECT_EQ(kernelCmdline(img, a, "h2", "127.0.0.1:7800"),
            "console=ttyS0 tw.role=balancer tw.vm=balancer-1 tw.tier=balancer tw.host=h2 "
            "tw.api=127.0.0.1:7800 tw.backend=apache");
  a.after.clear();
  EXPECT_EQ(kernelCmdline(img, a, "h2", ""),
            "console=ttyS0 tw.role=balancer tw.vm=balancer-1 tw.tier=balancer tw.host=h2");
}

// Pins: image metadata loads from DIR/<name>.json with paths made absolute; a
// missing image, a missing file it names and a bad name are clear errors.
TEST(DomainBuilderTest, LoadsImageMetadata) {
  const std::string dir = ::testing::TempDir() + "tw-images-" + std::to_string(::getpid());
  std::filesystem::create_directories(dir + "/tiny");
  std::ofstream(dir + "/tiny/vmlinux") << "k";
  std::ofstream(dir + "/tiny/initrd") << "i";
  std::ofstream(dir + "/tiny-web.json")
      << R"({"name":"tiny-web","kernel":"tiny/vmlinux","initrd":"tiny/initrd","cmdline":"c",)"
      << R"("cmdline_params":"tw.vm tw.tier","memory_mib":128,"min_memory_mib":96,"ports":[80],"disk":""})";
  std::ofstream(dir + "/broken.json") << R"({"kernel":"tiny/nothing"})";
  Result<ImageInfo> img = loadImage(dir, "tiny-web");
  ASSERT_TRUE(img.isOk()) << img.status().toString();
  EXPECT_EQ(img->kernel, dir + "/tiny/vmlinux");
  EXPECT_EQ(img->initrd, dir + "/tiny/initrd");
  EXPECT_EQ(img->cmdline_params, (std::vector<std::string>{"tw.vm", "tw.tier"}));
  EXPECT_EQ(img->ports, (std::vector<int>{80}));
  EXPECT_EQ(img->min_memory_mib, 96);
  EXPECT_EQ(loadImage(dir, "nope").status().code(), Code::kNotFound);
  EXPECT_NE(loadImage(dir, "broken").status().message().find("tiny/nothing is missing"), std::string::npos);
  EXPECT_EQ(loadImage(dir, "../etc/passwd").status().code(), Code::kInvalidArgument);

  ImageBuilderOptions options;
  options.images_dir = dir;
  options.host = "h1";
  ImageDomainBuilder builder(options);
  Assignment a = assignment("web-1", 1);
  a.image = "tiny-web";
  a.memory_mib = 64;
  EXPECT_EQ(builder.build(a).status().code(), Code::kInvalidArgument);  // below min_memory_mib
  a.memory_mib = 128;
  Result<DomainSpec> spec = builder.build(a);
  ASSERT_TRUE(spec.isOk()) << spec.status().toString();
  EXPECT_EQ(spec->kernel, dir + "/tiny/vmlinux");
  EXPECT_EQ(spec->cmdline, "c tw.vm=web-1 tw.tier=web");
  EXPECT_TRUE(spec->user_network);
  EXPECT_TRUE(spec->disk_path.empty());
  std::filesystem::remove_all(dir);
}

// Pins: with api_now set (several controller replicas, docs/ha.md), tw.api= is
// what it returns at each build, not the fixed `api`: a VM started after the
// leader moved polls the replica that answered last.
TEST(DomainBuilderTest, GuestApiFollowsTheReplicaThatAnsweredLast) {
  const std::string dir = ::testing::TempDir() + "tw-api-now-" + std::to_string(::getpid());
  std::filesystem::create_directories(dir + "/tiny");
  std::ofstream(dir + "/tiny/vmlinux") << "k";
  std::ofstream(dir + "/tiny-balancer.json")
      << R"({"name":"tiny-balancer","kernel":"tiny/vmlinux","cmdline":"c",)"
      << R"("cmdline_params":"tw.vm tw.api","memory_mib":128,"ports":[80],"disk":""})";
  ImageBuilderOptions options;
  options.images_dir = dir;
  options.host = "h2";
  options.api = "10.0.0.1:7801";
  std::string answered = "10.0.0.1:7801";
  ImageDomainBuilder fixed(options);
  options.api_now = [&answered] { return answered; };
  ImageDomainBuilder following(options);
  Assignment a = assignment("balancer-1", 1);
  a.image = "tiny-balancer";
  a.memory_mib = 128;
  ASSERT_EQ(following.build(a)->cmdline, "c tw.vm=balancer-1 tw.api=10.0.0.1:7801");
  answered = "10.0.0.3:7801";  // the leader moved to the third replica
  EXPECT_EQ(following.build(a)->cmdline, "c tw.vm=balancer-1 tw.api=10.0.0.3:7801");
  EXPECT_EQ(fixed.build(a)->cmdline, "c tw.vm=balancer-1 tw.api=10.0.0.1:7801");
  std::filesystem::remove_all(dir);
}

// Pins: a shared disk goes into storage.path, or into the directory its
// storage.pool resolves to on this host; a pool this host lacks and a path that
// is no directory here are clear errors naming the VM.
TEST(DomainBuilderTest, SharedDiskInAPathOrAPool) {
  const std::string dir = ::testing::TempDir() + "tw-shared-" + std::to_string(::getpid());
  std::filesystem::create_directories(dir + "/tiny");
  std::filesystem::create_directories(dir + "/pool");
  for (const char* f : {"/tiny/vmlinux", "/tiny/initrd", "/tiny/data.qcow2"}) std::ofstream(dir + f) << "x";
  std::ofstream(dir + "/tiny-db.json")
      << R"({"name":"tiny-db","kernel":"tiny/vmlinux","initrd":"tiny/initrd","cmdline":"c",)"
      << R"("memory_mib":128,"ports":[3306],"disk":"tiny/data.qcow2"})";
  ImageBuilderOptions options;
  options.images_dir = dir;
  options.host = "h2";
  options.qemu_img = "true";  // creates nothing; the path is what is pinned
  std::vector<std::string> asked;
  options.pool_dir = [&](const std::string& pool) -> Result<std::string> {
    asked.push_back(pool);
    if (pool == "nfs-db") return dir + "/pool";
    return notFound("storage pool '" + pool + "' on 'qemu:///system': no such pool");
  };
  ImageDomainBuilder builder(options);
  Assignment a = assignment("db-1", 1);
  a.image = "tiny-db";
  a.memory_mib = 128;
  a.storage.kind = StorageKind::kShared;
  a.storage.path = dir + "/pool";
  Result<DomainSpec> spec = builder.build(a);
  ASSERT_TRUE(spec.isOk()) << spec.status().toString();
  EXPECT_EQ(spec->disk_path, dir + "/pool/db-1.qcow2");
  EXPECT_TRUE(asked.empty());

  a.storage.path = dir + "/not-mounted";
  Status no_dir = builder.build(a).status();
  EXPECT_EQ(no_dir.code(), Code::kFailedPrecondition);
  EXPECT_EQ(no_dir.message(), "the shared storage of vm 'db-1', " + dir +
                                  "/not-mounted, is no directory on host 'h2' (mount it on every host)");

  a.storage.path.clear();
  a.storage.pool = "nfs-db";
  spec = builder.build(a);
  ASSERT_TRUE(spec.isOk()) << spec.status().toString();
  EXPECT_EQ(spec->disk_path, dir + "/pool/db-1.qcow2");
  a.storage.pool = "gone";
  Status no_pool = builder.build(a).status();
  EXPECT_EQ(no_pool.code(), Code::kNotFound);
  EXPECT_NE(no_pool.toString().find("the shared disk of vm 'db-1'"), std::string::npos) << no_pool.toString();
  EXPECT_EQ(asked, (std::vector<std::string>{"nfs-db", "gone"}));
  std::filesystem::remove_all(dir);
}

// Pins: DomainReport::ports crosses the wire as an object keyed by the guest
// port ({"80": 20000}) and comes back the same; a key that is no port is refused.
TEST(AgentProtocolTest, DomainReportCarriesPorts) {
  DomainReport r;
  r.vm = "web-1";
  r.ports = {{80, 20000}, {443, 20001}};
  Json j = r;
  EXPECT_EQ(j["ports"], Json::parse(R"({"80": 20000, "443": 20001})"));
  Result<DomainReport> back = decode<DomainReport>(j);
  ASSERT_TRUE(back.isOk()) << back.status().toString();
  EXPECT_EQ(back->ports, r.ports);

  Json without = Json::parse(R"({"vm": "web-1"})");
  ASSERT_TRUE(decode<DomainReport>(without).isOk());
  EXPECT_TRUE(decode<DomainReport>(without)->ports.empty());
  Json bad = Json::parse(R"({"vm": "web-1", "ports": {"http": 20000}})");
  EXPECT_FALSE(decode<DomainReport>(bad).isOk());
}

// ------------------------------------------------------------------ health ---

// An HTTP check on guest port 80 of a tier that serves port 80.
Assignment checkedAssignment(const std::string& vm, int64_t epoch, int failures, Millis grace_ms) {
  Assignment a = assignment(vm, epoch);
  a.ports = {ServicePort{"http", 80, "tcp"}};
  a.health.kind = HealthKind::kHttp;
  a.health.port = 80;
  a.health.interval_ms = 1000;
  a.health.failures = failures;
  a.health.grace_ms = grace_ms;
  return a;
}

// The agent with a ScheduledHealthProber whose probe answers as `service_up`
// says, stepped on the same ManualClock.
class AgentHealthTest : public AgentTest {
 protected:
  AgentHealthTest()
      : checker_(clock_, ports_, [this](const std::string&, const HealthCheckSpec&, int port) {
          probed_ports.push_back(port);
          if (service_up) return Status::ok();
          return unavailable(fmt::format("connecting to 127.0.0.1:{}: Connection refused", port));
        }) {
    prober_ = &checker_;
    scheduled_ = &checker_;
  }

  size_t indexOf(const std::string& kind, size_t from = 0) const {
    for (size_t i = from; i < link_.events.size(); ++i) {
      if (link_.events[i].kind == kind) return i;
    }
    return link_.events.size();
  }

  bool service_up = true;
  std::vector<int> probed_ports;
  ScheduledHealthProber checker_;
};

// Pins: a checked VM is probed at its host port and reported healthy; after
// `failures` failed checks it is rebooted at once (destroy + start), with
// vm.unhealthy then vm.restarted, counted as a restart, and no vm.crashed.
TEST_F(AgentHealthTest, RebootsAnUnhealthyVmLikeACrash) {
  startWith({checkedAssignment("web-1", 3, /*failures=*/3, /*grace_ms=*/0)});
  runUntil(10000);
  ASSERT_NE(link_.lastReport("web-1"), nullptr);
  EXPECT_EQ(link_.lastReport("web-1")->health, Health::kHealthy);
  ASSERT_FALSE(probed_ports.empty());
  EXPECT_EQ(probed_ports.back(), 20000);

  service_up = false;  // failed checks at 11000, 12000, 13000
  runUntil(12999);
  EXPECT_EQ(fake_.startCount("web-1"), 1);
  EXPECT_EQ(link_.countEvents("vm.unhealthy"), 0);
  hv_.calls.clear();
  runUntil(13000);

  EXPECT_EQ(hv_.calls, (std::vector<std::string>{"destroy web-1", "start web-1"}));
  EXPECT_TRUE(fake_.isRunning("web-1"));
  const size_t unhealthy = indexOf("vm.unhealthy");
  ASSERT_LT(unhealthy, link_.events.size());
  EXPECT_EQ(link_.events[unhealthy].level, "warn");
  EXPECT_EQ(link_.events[unhealthy].epoch, 3);
  EXPECT_EQ(link_.events[unhealthy].message,
            "vm 'web-1' (epoch 3) is unhealthy (3 http checks failed; the last: connecting to "
            "127.0.0.1:20000: Connection refused): rebooting it");
  EXPECT_LT(indexOf("vm.restarted", unhealthy), link_.events.size());
  EXPECT_EQ(link_.countEvents("vm.crashed"), 0);
  EXPECT_EQ(agent_->restarts("web-1"), 1);
  EXPECT_EQ(link_.lastReport("web-1")->restarts, 1);

  service_up = true;  // the new run was probed at 13000 (failed, counts 1); heals at 14000
  runUntil(13999);
  EXPECT_EQ(link_.lastReport("web-1")->health, Health::kUnknown);
  runUntil(14000);
  EXPECT_EQ(link_.lastReport("web-1")->health, Health::kHealthy);
  EXPECT_EQ(link_.lastReport("web-1")->state, DomainState::kRunning);
}

// Pins: failed checks in the grace period after a start do not count: with a
// 5 s grace and 2 failures, a VM whose service never answers is rebooted at
// 6 s, not before.
TEST_F(AgentHealthTest, GracePeriodDelaysTheVerdict) {
  service_up = false;
  startWith({checkedAssignment("web-1", 1, /*failures=*/2, /*grace_ms=*/5000)});
  runUntil(5999);
  EXPECT_EQ(fake_.startCount("web-1"), 1);
  EXPECT_EQ(link_.countEvents("vm.unhealthy"), 0);
  EXPECT_EQ(link_.lastReport("web-1")->health, Health::kUnknown);
  runUntil(6000);
  EXPECT_EQ(fake_.startCount("web-1"), 2);
  EXPECT_EQ(link_.countEvents("vm.unhealthy"), 1);
}

// Pins: health reboots spend the restart budget with the crash back-off (at
// once, then after 1 s); once spent the VM is left down with vm.budget_exhausted
// and the budget reason, as after crashes.
TEST_F(AgentHealthTest, RepeatedHealthFailuresExhaustTheBudget) {
  Assignment a = checkedAssignment("web-1", 1, /*failures=*/2, /*grace_ms=*/0);
  a.restart.restarts = 2;
  service_up = false;
  startWith({a});

  runUntil(1000);  // failed at 0 and 1000: first reboot at once
  EXPECT_EQ(fake_.startCount("web-1"), 2);
  runUntil(2000);  // failed at 1000 and 2000 (new run): second reboot after 1 s
  EXPECT_FALSE(fake_.isRunning("web-1"));
  runUntil(3000);
  EXPECT_EQ(fake_.startCount("web-1"), 3);
  runUntil(60000);  // failed at 3000 and 4000: the budget is spent

  EXPECT_FALSE(fake_.isRunning("web-1"));
  EXPECT_EQ(fake_.startCount("web-1"), 3);
  EXPECT_TRUE(agent_->budgetExhausted("web-1"));
  EXPECT_EQ(link_.countEvents("vm.unhealthy"), 3);
  EXPECT_EQ(link_.countEvents("vm.restarted"), 2);
  EXPECT_EQ(link_.countEvents("vm.crashed"), 0);
  const AgentEvent* e = link_.findEvent("vm.budget_exhausted", "web-1");
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->level, "error");
  EXPECT_EQ(link_.lastReport("web-1")->reason, "restart budget spent (2 restarts in 10m)");
  EXPECT_EQ(link_.lastReport("web-1")->state, DomainState::kShutoff);
}

// --------------------------------------------------------------- migration ---

// One simulated host: a FakeHypervisor (recorded), a scripted link, an agent.
struct TestHost {
  TestHost(std::string host_name, ManualClock& clock)
      : name(std::move(host_name)), hv(fake), link(clock), clock_(clock) {
    hv.subscribe([this](const DomainEvent& e) {
      if (agent) agent->onDomainEvent(e);
    });
  }
  void startAgent() {
    AgentOptions options;
    options.host = name;
    options.agent_id = name + "-agent";
    agent = std::make_unique<Agent>(options, hv, link, clock_);
    ASSERT_TRUE(agent->start().isOk());
  }
  // The controller's set for this host, answered from now on and pushed.
  void assign(std::vector<Assignment> assignments, int64_t version) {
    link.set.host = name;
    link.set.version = version;
    link.set.lease_ms = 5000;
    link.set.heartbeat_interval_ms = 1000;
    link.set.assignments = std::move(assignments);
    if (agent) agent->onAssignments(link.set);
  }
  std::string name;
  FakeHypervisor fake;
  RecordingHypervisor hv;
  ScriptedLink link;
  std::unique_ptr<Agent> agent;

 private:
  ManualClock& clock_;
};

constexpr char kH2Uri[] = "qemu+unix:///h2";

// The source's view of a VM under migration to h2 (epoch `epoch` here,
// `migrate_epoch` there).
Assignment migrating(Assignment a, int64_t migrate_epoch) {
  a.migrate_to_host = "h2";
  a.migrate_to_uri = kH2Uri;
  a.migrate_epoch = migrate_epoch;
  return a;
}
Assignment incoming(Assignment a) {
  a.incoming = true;
  return a;
}

class AgentMigrationTest : public ::testing::Test {
 protected:
  AgentMigrationTest() { h1_.fake.connectPeer(kH2Uri, &h2_.fake); }

  // Runs both agents (those started) up to t, migrations at once.
  void runUntil(Millis t) {
    for (int i = 0; i < 10000; ++i) {
      Millis next = t + 1;
      for (TestHost* h : {&h1_, &h2_}) {
        if (h->agent) next = std::min(next, h->agent->nextWakeMs());
      }
      if (next > t) {
        clock_.set(t);
        return;
      }
      clock_.set(std::max(clock_.nowMs(), next));
      for (TestHost* h : {&h1_, &h2_}) {
        if (!h->agent || h->agent->nextWakeMs() > clock_.nowMs()) continue;
        h->agent->runOnce();
        h->agent->runMigrations();
      }
    }
    FAIL() << "agents never idle";
  }

  // web-1 running on h1 at epoch 4 (clock at 1000); h2's agent idle.
  void runningOnH1(Assignment a) {
    h1_.assign({a}, 1);
    h2_.assign({}, 1);
    h1_.startAgent();
    h2_.startAgent();
    runUntil(1000);
    ASSERT_TRUE(h1_.fake.isRunning(a.vm));
    h1_.hv.calls.clear();
    h2_.hv.calls.clear();
  }

  // A domain defined and running on a host's hypervisor behind the agent's back.
  static void runDomain(FakeHypervisor& fake, const Assignment& a) {
    ASSERT_TRUE(fake.define(specOf(a)).isOk());
    ASSERT_TRUE(fake.start(a.vm).isOk());
  }

  ManualClock clock_{0};
  TestHost h1_{"h1", clock_};
  TestHost h2_{"h2", clock_};
};

// Pins: a live migration moves the VM to h2 with its new epoch (dest_meta):
// the source reports vm.migrated (epoch 5, with the time it took) and forgets
// it without a crash, destroy or restart; the destination adopts it without
// defining, starting or destroying anything, before and after the controller
// clears the migration. Shared storage migrates with `unsafe`.
TEST_F(AgentMigrationTest, MovesTheVmWithItsNewEpoch) {
  Assignment a = assignment("web-1", 4);
  a.storage.kind = StorageKind::kShared;
  a.storage.path = "/shared/web-1.qcow2";
  runningOnH1(a);
  h1_.hv.during_migrate = [this] { clock_.advance(840); };

  h1_.assign({migrating(a, 5)}, 2);
  h2_.assign({incoming(assignment("web-1", 5))}, 2);
  runUntil(10000);

  EXPECT_EQ(h1_.hv.calls, (std::vector<std::string>{"migrate web-1"}));
  ASSERT_EQ(h1_.hv.migrate_options.size(), 1u);
  const MigrateOptions& options = h1_.hv.migrate_options[0];
  EXPECT_TRUE(options.live);
  EXPECT_TRUE(options.unsafe);
  EXPECT_EQ(options.dest_meta.vm, "web-1");
  EXPECT_EQ(options.dest_meta.tier, "web");
  EXPECT_EQ(options.dest_meta.epoch, 5);
  EXPECT_EQ(options.dest_meta.spec_digest, "d1");
  EXPECT_EQ(h1_.fake.spec("web-1"), nullptr);
  const AgentEvent* migrated = h1_.link.findEvent("vm.migrated", "web-1");
  ASSERT_NE(migrated, nullptr);
  EXPECT_EQ(migrated->epoch, 5);
  EXPECT_EQ(migrated->level, "info");
  EXPECT_EQ(migrated->message, "migrated vm 'web-1' to host 'h2' in 0.84s");
  EXPECT_EQ(h1_.link.countEvents("vm.crashed"), 0);
  EXPECT_EQ(h1_.link.countEvents("vm.migrate_failed"), 0);
  EXPECT_EQ(h1_.link.lastReport("web-1"), nullptr);
  EXPECT_FALSE(h1_.agent->migrating("web-1"));

  EXPECT_TRUE(h2_.hv.calls.empty()) << h2_.hv.calls.front();
  ASSERT_TRUE(h2_.fake.isRunning("web-1"));
  EXPECT_EQ(h2_.fake.spec("web-1")->meta.epoch, 5);
  const DomainReport* there = h2_.link.lastReport("web-1");
  ASSERT_NE(there, nullptr);
  EXPECT_EQ(there->epoch, 5);
  EXPECT_EQ(there->state, DomainState::kRunning);
  EXPECT_EQ(there->health, Health::kHealthy);

  // The controller completes the move.
  h1_.assign({}, 3);
  h2_.assign({assignment("web-1", 5)}, 3);
  runUntil(20000);
  EXPECT_TRUE(h1_.hv.calls == std::vector<std::string>{"migrate web-1"});
  EXPECT_TRUE(h2_.hv.calls.empty()) << h2_.hv.calls.front();
  EXPECT_TRUE(h2_.fake.isRunning("web-1"));
  EXPECT_EQ(h2_.fake.startCount("web-1"), 0);
  EXPECT_EQ(h2_.agent->restarts("web-1"), 0);
}

// Pins: a failed migration is reported once (vm.migrate_failed, warn, epoch =
// migrate_epoch, the hypervisor's message) and not retried for that epoch; the
// VM keeps running on the source untouched; ephemeral storage is not unsafe.
TEST_F(AgentMigrationTest, FailedMigrationKeepsTheVmRunning) {
  runningOnH1(assignment("web-1", 4));
  h1_.fake.failMigrations(1);

  h1_.assign({migrating(assignment("web-1", 4), 5)}, 2);
  h2_.assign({incoming(assignment("web-1", 5))}, 2);
  runUntil(10000);

  EXPECT_EQ(h1_.hv.calls, (std::vector<std::string>{"migrate web-1"}));
  EXPECT_FALSE(h1_.hv.migrate_options.at(0).unsafe);
  EXPECT_TRUE(h1_.fake.isRunning("web-1"));
  EXPECT_EQ(h1_.fake.startCount("web-1"), 1);
  const AgentEvent* failed = h1_.link.findEvent("vm.migrate_failed", "web-1");
  ASSERT_NE(failed, nullptr);
  EXPECT_EQ(failed->level, "warn");
  EXPECT_EQ(failed->epoch, 5);
  EXPECT_EQ(failed->message,
            "migrating vm 'web-1' (epoch 4) to host 'h2' failed after 0.00s: migrating vm "
            "'web-1' to 'qemu+unix:///h2': injected migration failure; it keeps running here");
  EXPECT_EQ(h1_.link.countEvents("vm.migrate_failed"), 1);
  EXPECT_EQ(h1_.link.countEvents("vm.crashed"), 0);
  ASSERT_NE(h1_.link.lastReport("web-1"), nullptr);
  EXPECT_EQ(h1_.link.lastReport("web-1")->state, DomainState::kRunning);
  EXPECT_EQ(h2_.fake.spec("web-1"), nullptr);
  EXPECT_TRUE(h2_.hv.calls.empty()) << h2_.hv.calls.front();

  // A new migrate_epoch is a new attempt.
  h1_.assign({migrating(assignment("web-1", 4), 6)}, 3);
  h2_.assign({incoming(assignment("web-1", 6))}, 3);
  runUntil(12000);
  EXPECT_EQ(h2_.fake.spec("web-1")->meta.epoch, 6);
  EXPECT_NE(h1_.link.findEvent("vm.migrated", "web-1"), nullptr);
}

// Pins: the daemon's order of things — the migration is handed out, the domain
// vanishes from the source (its events arrive) and heartbeats go on before the
// outcome is posted back: no crash, no restart meanwhile; then vm.migrated.
TEST_F(AgentMigrationTest, VanishingDuringTheMigrationIsNoCrash) {
  runningOnH1(assignment("web-1", 4));
  h1_.assign({migrating(assignment("web-1", 4), 5)}, 2);
  h1_.agent->runOnce();
  std::vector<MigrationRequest> requests = h1_.agent->takeMigrations();
  ASSERT_EQ(requests.size(), 1u);
  EXPECT_TRUE(h1_.agent->takeMigrations().empty());  // handed out once
  const MigrationRequest& r = requests[0];
  EXPECT_EQ(r.vm, "web-1");
  EXPECT_EQ(r.epoch, 4);
  EXPECT_EQ(r.migrate_epoch, 5);
  EXPECT_EQ(r.dest_host, "h2");
  EXPECT_EQ(r.dest_uri, kH2Uri);
  EXPECT_EQ(r.options.dest_meta.epoch, 5);
  EXPECT_TRUE(h1_.agent->migrating("web-1"));

  ASSERT_TRUE(h1_.fake.migrate(r.vm, r.dest_uri, r.options).isOk());  // the worker thread
  const size_t heartbeats = h1_.link.heartbeats.size();
  runUntil(4000);
  EXPECT_GE(h1_.link.heartbeats.size(), heartbeats + 3);
  EXPECT_EQ(h1_.link.countEvents("vm.crashed"), 0);
  EXPECT_TRUE(h1_.hv.calls.empty()) << h1_.hv.calls.front();
  EXPECT_EQ(h1_.link.lastReport("web-1"), nullptr);

  clock_.advance(500);
  h1_.agent->onMigrationDone("web-1", 5, Status::ok());
  EXPECT_LE(h1_.agent->nextWakeMs(), clock_.nowMs());
  runUntil(10000);
  ASSERT_NE(h1_.link.findEvent("vm.migrated", "web-1"), nullptr);
  EXPECT_EQ(h1_.link.findEvent("vm.migrated", "web-1")->message,
            "migrated vm 'web-1' to host 'h2' in 3.50s");
  EXPECT_TRUE(h1_.hv.calls.empty()) << h1_.hv.calls.front();
  EXPECT_EQ(h1_.fake.spec("web-1"), nullptr);
}

// Pins: the destination neither defines nor starts an incoming VM while it has
// not arrived, adopts it when it arrives with the assigned epoch, and never
// destroys (or restarts) it while the assignment says incoming, even when it
// stops.
TEST_F(AgentMigrationTest, IncomingVmIsNeverStartedNorDestroyed) {
  runDomain(h1_.fake, assignment("web-1", 4));  // a source without an agent
  h2_.assign({incoming(assignment("web-1", 5))}, 1);
  h2_.startAgent();
  runUntil(5000);
  EXPECT_TRUE(h2_.hv.calls.empty()) << h2_.hv.calls.front();
  EXPECT_EQ(h2_.fake.spec("web-1"), nullptr);
  EXPECT_EQ(h2_.link.lastReport("web-1"), nullptr);

  MigrateOptions options;
  options.dest_meta = DomainMeta{"web-1", "web", 5, 1, "d1"};
  ASSERT_TRUE(h1_.fake.migrate("web-1", kH2Uri, options).isOk());
  runUntil(6000);
  ASSERT_NE(h2_.link.lastReport("web-1"), nullptr);
  EXPECT_EQ(h2_.link.lastReport("web-1")->state, DomainState::kRunning);
  EXPECT_EQ(h2_.link.lastReport("web-1")->epoch, 5);

  h2_.fake.crash("web-1");
  runUntil(30000);
  EXPECT_TRUE(h2_.hv.calls.empty()) << h2_.hv.calls.front();
  EXPECT_NE(h2_.fake.spec("web-1"), nullptr);
  EXPECT_EQ(h2_.link.lastReport("web-1")->state, DomainState::kCrashed);
}

// Pins: on the destination, a domain of that name with an older epoch is
// stale: destroyed and undefined (events name its epoch), nothing is started;
// the migrated domain is then adopted untouched.
TEST_F(AgentMigrationTest, StaleEpochOnTheDestinationIsRemoved) {
  runDomain(h2_.fake, assignment("web-1", 2));
  runDomain(h1_.fake, assignment("web-1", 4));
  h2_.assign({incoming(assignment("web-1", 5))}, 1);
  h2_.startAgent();
  runUntil(1000);

  EXPECT_EQ(h2_.hv.calls, (std::vector<std::string>{"destroy web-1", "undefine web-1"}));
  EXPECT_EQ(h2_.fake.spec("web-1"), nullptr);
  const AgentEvent* destroyed = h2_.link.findEvent("vm.destroyed", "web-1");
  ASSERT_NE(destroyed, nullptr);
  EXPECT_EQ(destroyed->epoch, 2);
  EXPECT_EQ(destroyed->message,
            "destroyed vm 'web-1' (epoch 2): stale, epoch 5 arrives by migration");
  EXPECT_EQ(h2_.link.countEvents("vm.undefined", "web-1"), 1);

  h2_.hv.calls.clear();
  MigrateOptions options;
  options.dest_meta = DomainMeta{"web-1", "web", 5, 1, "d1"};
  ASSERT_TRUE(h1_.fake.migrate("web-1", kH2Uri, options).isOk());
  runUntil(5000);
  EXPECT_TRUE(h2_.hv.calls.empty()) << h2_.hv.calls.front();
  EXPECT_TRUE(h2_.fake.isRunning("web-1"));
}

// Pins: a VM that arrives by migration before the destination's set in force
// names it is not destroyed on that old set: the agent asks the controller
// first (a heartbeat at once) and adopts it when the answer assigns it; when
// the answer does not, it is removed then.
TEST_F(AgentMigrationTest, ArrivalBeforeItsAssignmentWaitsForTheController) {
  runDomain(h1_.fake, assignment("web-1", 4));
  runDomain(h1_.fake, assignment("web-2", 4));
  h2_.assign({}, 1);
  h2_.startAgent();
  runUntil(1000);
  // The controller's set now names web-1 incoming; the agent has not got it.
  h2_.link.set.version = 2;
  h2_.link.set.assignments = {incoming(assignment("web-1", 5))};

  MigrateOptions to5;
  to5.dest_meta = DomainMeta{"web-1", "web", 5, 1, "d1"};
  ASSERT_TRUE(h1_.fake.migrate("web-1", kH2Uri, to5).isOk());
  const size_t heartbeats = h2_.link.heartbeats.size();
  runUntil(1000);
  EXPECT_GT(h2_.link.heartbeats.size(), heartbeats);
  EXPECT_TRUE(h2_.fake.isRunning("web-1"));
  EXPECT_TRUE(h2_.hv.calls.empty()) << h2_.hv.calls.front();
  EXPECT_EQ(h2_.agent->assignmentsVersion(), 2);

  // web-2 arrives, and the controller's answer does not name it: removed.
  MigrateOptions other;
  other.dest_meta = DomainMeta{"web-2", "web", 9, 1, "d1"};
  ASSERT_TRUE(h1_.fake.migrate("web-2", kH2Uri, other).isOk());
  runUntil(2000);
  EXPECT_EQ(h2_.hv.calls, (std::vector<std::string>{"destroy web-2", "undefine web-2"}));
  EXPECT_TRUE(h2_.fake.isRunning("web-1"));
}

// Pins: a source asked to migrate a VM that does not run here (a restarted
// agent after the domain left, say) never defines or starts it; it says so
// once with vm.migrate_failed.
TEST_F(AgentMigrationTest, SourceNeverStartsAVmItShouldMigrate) {
  h1_.assign({migrating(assignment("web-1", 4), 5)}, 1);
  h1_.startAgent();
  runUntil(10000);

  EXPECT_TRUE(h1_.hv.calls.empty()) << h1_.hv.calls.front();
  EXPECT_EQ(h1_.link.countEvents("vm.migrate_failed", "web-1"), 1);
  EXPECT_EQ(h1_.link.findEvent("vm.migrate_failed", "web-1")->message,
            "cannot migrate vm 'web-1' (epoch 4) to host 'h2': it does not run here");
}

}  // namespace
}  // namespace tw

namespace tw {
namespace {

// The agent with floating addresses on a fake host network.
class AgentAddressTest : public AgentTest {
 protected:
  AgentAddressTest() { net_.addInterface("eth0", "10.213.0.11/24"); }
  void startWithAddress(bool hold) {
    Assignment lb = assignment("lb-1", 1);
    lb.tier = "lb";
    lb.ports = {{"http", 80, "tcp"}};
    lb.restart.backoff_initial_ms = 2000;  // a crash leaves it down for a while
    if (hold) lb.address.cidr = "10.213.0.100/24";
    assign({lb}, 1);
    link_.set.addresses = {{"10.213.0.100/24", ""}};
    startAgent();
    agent_->setFloatingAddresses(&addresses_);
    settle();
  }
  FakeHostNetwork net_;
  FloatingAddresses addresses_{net_, hv_};
};

// Pins: the VM that is to hold the address runs: the agent adds it, forwards
// the tier's port on it, reports it in its heartbeat; a set without it (the
// controller moves it) removes it and the heartbeat says so.
TEST_F(AgentAddressTest, HoldsWhileAssignedAndReports) {
  startWithAddress(true);
  ASSERT_TRUE(fake_.isRunning("lb-1"));
  EXPECT_TRUE(net_.has("10.213.0.100/24"));
  EXPECT_NE(std::find(hv_.forwards.begin(), hv_.forwards.end(), "lb-1 10.213.0.100:80->80"),
            hv_.forwards.end());
  ASSERT_FALSE(link_.heartbeats.empty());
  EXPECT_EQ(link_.heartbeats.back().addresses_held, std::vector<std::string>{"10.213.0.100/24"});
  EXPECT_EQ(link_.countEvents("address.added", "lb-1"), 1);

  AssignmentSet moved = link_.set;
  moved.version = 2;
  moved.assignments[0].address = {};
  link_.set = moved;
  agent_->onAssignments(moved);
  settle();
  EXPECT_FALSE(net_.has("10.213.0.100/24"));
  EXPECT_TRUE(fake_.isRunning("lb-1"));  // the VM stays
  EXPECT_TRUE(link_.heartbeats.back().addresses_held.empty());
  EXPECT_EQ(link_.countEvents("address.removed"), 1);
}

// Pins: at start, an address of the policy left on the host that this host
// does not hold is removed once the first set arrives.
TEST_F(AgentAddressTest, RemovesALeftoverAtStart) {
  net_.addInterface("eth0", "10.213.0.100/24");
  startWithAddress(false);
  EXPECT_FALSE(net_.has("10.213.0.100/24"));
  EXPECT_TRUE(net_.has("10.213.0.11/24"));
}

// Pins: the VM stops (crash, restart pending): the address goes with it and
// comes back with the restarted VM.
TEST_F(AgentAddressTest, FollowsTheVmsRun) {
  startWithAddress(true);
  ASSERT_TRUE(net_.has("10.213.0.100/24"));
  fake_.crash("lb-1");
  agent_->runOnce();
  EXPECT_FALSE(net_.has("10.213.0.100/24"));
  runUntil(clock_.nowMs() + 5000);
  ASSERT_TRUE(fake_.isRunning("lb-1"));
  EXPECT_TRUE(net_.has("10.213.0.100/24"));
}

// Pins: a VM live-migrating away keeps its address here until its migration
// is over, even when the controller's set no longer carries it (the
// destination reported it first); then the address goes.
TEST_F(AgentAddressTest, KeptUntilTheMigrationIsOver) {
  startWithAddress(true);
  ASSERT_TRUE(net_.has("10.213.0.100/24"));
  AssignmentSet next = link_.set;
  next.version = 2;
  next.assignments[0].migrate_to_host = "h2";
  next.assignments[0].migrate_to_uri = "qemu+unix:///h2";
  next.assignments[0].migrate_epoch = 2;
  link_.set = next;
  agent_->onAssignments(next);
  agent_->runOnce();
  ASSERT_TRUE(agent_->migrating("lb-1"));
  next.version = 3;
  next.assignments.clear();  // the controller counts it moved
  link_.set = next;
  agent_->onAssignments(next);
  agent_->runOnce();
  EXPECT_TRUE(net_.has("10.213.0.100/24")) << "dropped while the VM still serves here";
  agent_->onMigrationDone("lb-1", 2, Status::ok());
  agent_->runOnce();
  EXPECT_FALSE(net_.has("10.213.0.100/24"));
}

// Pins: a self-fence removes the address together with the VMs.
TEST_F(AgentAddressTest, SelfFenceRemovesIt) {
  startWithAddress(true);
  ASSERT_TRUE(net_.has("10.213.0.100/24"));
  link_.answer_status = unavailable("connection refused");
  runUntil(5000);
  ASSERT_EQ(agent_->leaseState(), LeaseState::kExpired);
  EXPECT_EQ(fake_.runningCount(), 0);
  EXPECT_FALSE(net_.has("10.213.0.100/24"));
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
