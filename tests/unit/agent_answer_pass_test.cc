// The agent's loop after a heartbeat answer (issue #16): the pass that takes
// the answer acts on it, and no second pass follows for it. Hermetic: manual
// clock, fake hypervisor, a scripted controller link; no threads, no sleeps.
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "agent/agent.h"
#include "tw/fake_hypervisor.h"

namespace tw {
namespace {

class Link final : public ControllerLink {
 public:
  Result<AssignmentSet> heartbeat(const Heartbeat& hb) override {
    heartbeats.push_back(hb);
    return set;
  }
  Status sendEvent(const AgentEvent&) override { return Status::ok(); }
  AssignmentSet set;
  std::vector<Heartbeat> heartbeats;
};

// Counts the listings of managed domains: one per pass of the agent's loop.
class ListCountingHypervisor final : public Hypervisor {
 public:
  explicit ListCountingHypervisor(FakeHypervisor& fake) : fake_(fake) {}
  Status ping() override { return fake_.ping(); }
  Result<Capacity> capacity() override { return fake_.capacity(); }
  Status define(const DomainSpec& spec) override { return fake_.define(spec); }
  Status start(const std::string& vm) override { return fake_.start(vm); }
  Status destroy(const std::string& vm) override { return fake_.destroy(vm); }
  Status undefine(const std::string& vm) override { return fake_.undefine(vm); }
  Result<std::vector<DomainStatus>> listManaged() override {
    ++listings;
    return fake_.listManaged();
  }
  Result<DomainStatus> domainState(const std::string& vm) override { return fake_.domainState(vm); }
  Status subscribe(DomainEventHandler handler) override {
    return fake_.subscribe(std::move(handler));
  }
  Status migrate(const std::string& vm, const std::string& dest_uri,
                 const MigrateOptions& options) override {
    return fake_.migrate(vm, dest_uri, options);
  }
  Status addPortForward(const std::string& vm, const PortForward& forward) override {
    return fake_.addPortForward(vm, forward);
  }
  Result<std::vector<PortForward>> portForwards(const std::string& vm) override {
    return fake_.portForwards(vm);
  }
  int listings = 0;

 private:
  FakeHypervisor& fake_;
};

Assignment web(const std::string& vm) {
  Assignment a;
  a.vm = vm;
  a.tier = "web";
  a.epoch = 1;
  a.policy_version = 1;
  a.spec_digest = "d1";
  a.vcpus = 1;
  a.memory_mib = 256;
  return a;
}

class AgentAnswerPassTest : public ::testing::Test {
 protected:
  AgentAnswerPassTest() : hv_(fake_) {
    link_.set.host = "h1";
    link_.set.version = 1;
    link_.set.controller_id = "c1";
    link_.set.lease_ms = 5000;
    link_.set.heartbeat_interval_ms = 1000;
    link_.set.assignments = {web("web-1")};
    AgentOptions o;
    o.host = "h1";
    o.agent_id = "a1";
    o.initial_lease_ms = 5000;
    agent_ = std::make_unique<Agent>(o, hv_, link_, clock_);
    agent_->setExternalHeartbeats(true);  // as the daemon and the simulator run it
    hv_.subscribe([this](const DomainEvent& e) { agent_->onDomainEvent(e); });
  }

  // The loop as the daemon runs it: a pass whenever nextWakeMs() has come.
  // Returns the passes run.
  int settle() {
    int passes = 0;
    while (agent_->nextWakeMs() <= clock_.nowMs() && passes < 100) {
      agent_->runOnce();
      ++passes;
    }
    return passes;
  }

  ManualClock clock_{0};
  FakeHypervisor fake_;
  ListCountingHypervisor hv_;
  Link link_;
  std::unique_ptr<Agent> agent_;
};

// Pins: a heartbeat answer that changes nothing costs one pass of the loop
// (one listing of the domains), not two: the pass that takes the answer asks
// for no pass after it (it used to mark the agent dirty, so that nextWakeMs()
// said "now" once more after every answer).
TEST_F(AgentAnswerPassTest, AnUnchangedAnswerCostsOnePass) {
  ASSERT_TRUE(agent_->start().isOk());
  agent_->heartbeatTick();  // the heartbeat thread: the answer waits for the loop
  settle();
  ASSERT_TRUE(fake_.isRunning("web-1"));
  agent_->heartbeatTick();  // the changed report goes out at once
  settle();

  clock_.set(1000);
  agent_->heartbeatTick();                // due: answered with the same set
  EXPECT_EQ(agent_->nextWakeMs(), 1000);  // the answer wakes the loop
  const int listings = hv_.listings;
  EXPECT_EQ(settle(), 1);
  EXPECT_EQ(hv_.listings - listings, 1);
  EXPECT_GT(agent_->nextWakeMs(), 1000);
  EXPECT_TRUE(fake_.isRunning("web-1"));
}

// Pins: the pass that takes an answer acts on it: a new set is applied and
// converged in that one pass (web-2 defined and started), and a domain event
// that came before the pass is handled in it too (web-1's crash: restarted).
TEST_F(AgentAnswerPassTest, ThePassThatTakesAnAnswerActsOnIt) {
  ASSERT_TRUE(agent_->start().isOk());
  agent_->heartbeatTick();
  settle();
  agent_->heartbeatTick();
  settle();
  ASSERT_TRUE(fake_.isRunning("web-1"));

  clock_.set(1000);
  link_.set.version = 2;
  link_.set.assignments = {web("web-1"), web("web-2")};
  fake_.crash("web-1");
  agent_->heartbeatTick();
  agent_->runOnce();
  EXPECT_EQ(agent_->assignmentsVersion(), 2);
  EXPECT_TRUE(fake_.isRunning("web-2"));
  EXPECT_TRUE(fake_.isRunning("web-1"));
  EXPECT_EQ(fake_.startCount("web-1"), 2);
}

}  // namespace
}  // namespace tw
