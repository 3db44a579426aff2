// ControllerService's published sets (controller/service.h): kept without
// their peer list (one shared copy, issue #16's memory), and handed out
// exactly as Controller::assignmentsFor(host) made them, with the newest
// peer list, or without the one the agent holds.
// Hermetic: a manual clock, in-memory SQLite; the controller is stepped on
// this thread, the service's loop started only where a test says so.
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "controller/controller.h"
#include "controller/service.h"
#include "controller_fixture.h"
#include "tw/json.h"
#include "tw/store.h"

namespace tw {
namespace {

const char* kPolicy = R"(hosts:
  - { name: h1, uri: "test:///default" }
  - { name: h2, uri: "test:///default" }
  - { name: h3, uri: "test:///default" }
tiers:
  - { name: web, image: tiny, replicas: 4, memory: 256MiB }
)";

Heartbeat beatOf(const Controller& c, const std::string& host) {
  Heartbeat hb = testing_controller::runningHeartbeat(c, host);
  hb.peer_address = host + ".example:7803";
  return hb;
}

// The policy applied in memory on a manual clock; settle() runs its hosts
// until every VM runs (six rounds of heartbeats, each with a controller pass).
class ServicePublishedTest : public testing::Test {
 protected:
  void SetUp() override {
    auto opened = testing_controller::openWithPolicy(clock_, {PolicyFile{"p.yaml", kPolicy}});
    ASSERT_TRUE(opened.isOk()) << opened.status().toString();
    opened_ = std::move(*opened);
  }
  Controller& controller() { return *opened_.controller; }
  void settle() {
    Controller& c = controller();
    for (int round = 0; round < 6; ++round) {
      clock_.advance(100);
      for (const char* h : {"h1", "h2", "h3"}) ASSERT_TRUE(c.handleHeartbeat(beatOf(c, h)).isOk());
      c.runOnce();
    }
  }

  ManualClock clock_{1000};
  testing_controller::StoredController opened_;
};

// Pins: the set a long poll (and a heartbeat the loop is too slow for) gets
// from the published snapshot is, to the byte, the set the controller makes
// for the host: the peer list (every other host with its address) is put
// back, peers_omitted is false.
TEST_F(ServicePublishedTest, PublishedSetIsTheControllersSetWithItsPeers) {
  Controller& c = controller();
  ControllerService service(c, 100, clock_);  // its loop is not started
  ASSERT_NO_FATAL_FAILURE(settle());
  size_t assigned = 0;
  for (const char* h : {"h1", "h2", "h3"}) {
    const AssignmentSet published = service.waitAssignments(h, 0, 0);
    const AssignmentSet made = c.assignmentsFor(h);
    EXPECT_EQ(jsonText(Json(published)), jsonText(Json(made))) << h;
    ASSERT_EQ(published.peers.size(), 2u) << h;
    EXPECT_FALSE(published.peers_omitted);
    for (const PeerInfo& p : published.peers) {
      EXPECT_NE(p.host, h);
      EXPECT_EQ(p.address, p.host + ".example:7803");
    }
    assigned += published.assignments.size();
  }
  EXPECT_EQ(assigned, 4u);  // the sets are not trivially empty
}

// Pins: a long poll that names the peer list the agent holds (its digest)
// gets the set without the list, as a heartbeat does; one that names
// another list, or none, gets it whole.
TEST_F(ServicePublishedTest, LongPollLeavesOutThePeerListTheAgentHolds) {
  Controller& c = controller();
  ControllerService service(c, 100, clock_);  // its loop is not started
  ASSERT_NO_FATAL_FAILURE(settle());
  const AssignmentSet whole = service.waitAssignments("h1", 0, 0);
  ASSERT_EQ(whole.peers.size(), 2u);
  ASSERT_FALSE(whole.peers_digest.empty());

  const AssignmentSet held = service.waitAssignments("h1", 0, 0, whole.peers_digest);
  EXPECT_TRUE(held.peers_omitted);
  EXPECT_TRUE(held.peers.empty());
  EXPECT_EQ(held.peers_digest, whole.peers_digest);
  EXPECT_EQ(held.version, whole.version);
  EXPECT_EQ(jsonText(Json(held.assignments)), jsonText(Json(whole.assignments)));

  const AssignmentSet other = service.waitAssignments("h1", 0, 0, "0123456789abcdef");
  EXPECT_FALSE(other.peers_omitted);
  EXPECT_EQ(other.peers.size(), 2u);
}

// Pins: a long poll of a host whose set did not change gets the newest peer
// list, not the one that was current when its set was published: h2's agent
// moved its peer address, h1's set stayed as it was, and h1's answer names
// h2's new address (it named the old one, and a long poll could so hand an
// agent an older list than its last heartbeat answer had).
TEST_F(ServicePublishedTest, LongPollCarriesTheNewestPeerList) {
  Controller& c = controller();
  ControllerService service(c, 10, clock_);
  ASSERT_NO_FATAL_FAILURE(settle());
  const AssignmentSet before = service.waitAssignments("h1", 0, 0);
  service.start();
  Heartbeat moved = service.call([](Controller& ctl) { return beatOf(ctl, "h2"); });
  moved.peer_address = "h2.example:9999";
  ASSERT_TRUE(service.heartbeat(moved, 5000).isOk());
  // The loop takes the new list at its next pass (10 ms); at most 5 s.
  AssignmentSet after;
  for (int i = 0; i < 500; ++i) {
    after = service.waitAssignments("h1", 0, 0);
    if (after.peers_digest != before.peers_digest) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  service.stop();
  EXPECT_EQ(after.version, before.version);  // h1's set itself was not published again
  ASSERT_NE(after.peers_digest, before.peers_digest);
  EXPECT_EQ(after.peers_digest, c.peersDigest());
  bool named = false;
  for (const PeerInfo& p : after.peers) named = named || (p.host == "h2" && p.address == "h2.example:9999");
  EXPECT_TRUE(named) << jsonText(Json(after));
}

// Pins: the loop's queue drops each item (and what it holds: a heartbeat's
// answer that nobody waits for any more) before it runs the next one, not
// at the end of the batch.
TEST(ServiceQueueTest, EachItemIsFreedBeforeTheNextRuns) {
  auto answer = std::make_shared<int>(1);
  std::deque<std::function<void()>> work;
  long seen = 0;
  work.emplace_back([held = answer] { (void)held; });
  work.emplace_back([&] { seen = answer.use_count(); });
  ControllerService::runEach(&work);
  EXPECT_EQ(seen, 1);  // only this test still holds it
  EXPECT_TRUE(work.empty());
}

}  // namespace
}  // namespace tw
