// The agent with floating addresses on a fake host network: held while the
// VM that is to hold it runs, removed at start, kept until a migration is
// over, removed by a self-fence (agent_fixture.h).
#include "agent/agent.h"

#include <gtest/gtest.h>

#include <string>

#include "agent_fixture.h"

namespace tw {
namespace {

using namespace testing_agent;  // agent_fixture.h

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

}  // namespace
}  // namespace tw
