// What the agent's unit tests share (agent_test.cc, agent_lease_test.cc,
// agent_heartbeat_test.cc, agent_domain_test.cc, agent_health_test.cc,
// agent_migration_test.cc, agent_address_test.cc, agent_start_test.cc): the controller's side
// scripted (ScriptedLink), a FakeHypervisor that records what changed
// (RecordingHypervisor), the log captured (LogCapture), and AgentTest: one
// agent on a FakeHypervisor and a ManualClock. Hermetic: no threads, no sleeps.
#pragma once

#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>

#include <algorithm>
#include <functional>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "agent/agent.h"
#include "agent/health_prober.h"
#include "tw/fake_hypervisor.h"
#include "tw/log.h"

namespace tw::testing_agent {


// The controller's side, scripted: answers every heartbeat with `set` (or
// fails with `answer_status`) and records what the agent sent.
class ScriptedLink final : public ControllerLink {
 public:
  explicit ScriptedLink(const Clock& clock) : clock_(clock) {}

  Result<AssignmentSet> heartbeat(const Heartbeat& hb) override {
    heartbeats.push_back(hb);
    heartbeat_times.push_back(clock_.nowMs());
    if (during_heartbeat) during_heartbeat();  // e.g. a slow controller: the clock moves on
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
  std::function<void()> during_heartbeat;  // runs inside each heartbeat, before its answer
  std::vector<Heartbeat> heartbeats;
  std::vector<Millis> heartbeat_times;
  std::vector<AgentEvent> events;
  std::vector<bool> refused;  // refusedAnswer() calls: pushed or not

 private:
  const Clock& clock_;
};

// Starts that have not returned (RecordingHypervisor::hold_starts): each
// returns when the test says, as a libvirt start stuck in libvirtd would.
class HeldStarts final : public Hypervisor::StartCalls {
 public:
  HeldStarts(FakeHypervisor& fake, std::vector<std::string> vms)
      : fake_(fake), vms_(std::move(vms)), results_(vms_.size()), cancelled_(vms_.size()) {}
  std::optional<Status> result(size_t i) override { return results_.at(i); }
  void cancel(size_t i) override { cancelled_.at(i) = true; }

  // The start of `vm` returns now: `outcome`, and when it is ok the domain
  // runs from now on (FakeHypervisor::start). Returns whether it was held.
  bool release(const std::string& vm, const Status& outcome) {
    for (size_t i = 0; i < vms_.size(); ++i) {
      if (vms_[i] != vm || results_[i]) continue;
      results_[i] = outcome.isOk() ? fake_.start(vm) : outcome;
      return true;
    }
    return false;
  }
  bool cancelled(const std::string& vm) const {
    for (size_t i = 0; i < vms_.size(); ++i) {
      if (vms_[i] == vm && cancelled_[i]) return true;
    }
    return false;
  }

 private:
  FakeHypervisor& fake_;
  const std::vector<std::string> vms_;
  std::vector<std::optional<Status>> results_;
  std::vector<bool> cancelled_;
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
  // With hold_starts, a batch's starts return only when the test releases
  // them (held.back()->release()); otherwise at once.
  std::shared_ptr<StartCalls> beginStarts(const std::vector<std::string>& vms) override {
    if (!hold_starts) return Hypervisor::beginStarts(vms);
    start_batches.push_back(vms);
    for (const std::string& vm : vms) calls.push_back("begin start " + vm);
    held.push_back(std::make_shared<HeldStarts>(fake_, vms));
    return held.back();
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
  bool hold_starts = false;
  std::vector<std::shared_ptr<HeldStarts>> held;  // each held batch, in order

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

inline Assignment assignment(const std::string& vm, int64_t epoch, const std::string& digest = "d1") {
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

inline DomainSpec specOf(const Assignment& a) {
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
    options.start_timeout_ms = start_timeout_ms_;
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
  Millis start_timeout_ms_ = 60000;  // AgentOptions::start_timeout_ms
};

}  // namespace tw::testing_agent
