// The agent's lease: self-fencing when it expires, and the peers that keep
// VMs running through a controller outage (agent_fixture.h).
#include "agent/agent.h"

#include <gtest/gtest.h>

#include <map>
#include <set>
#include <string>
#include <vector>

#include "agent_fixture.h"

namespace tw {
namespace {

using namespace testing_agent;  // agent_fixture.h

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

}  // namespace
}  // namespace tw
