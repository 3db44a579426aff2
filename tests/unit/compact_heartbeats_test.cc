// Compact heartbeats (issue #16): the agent's side (tw/compact_heartbeats.h)
// and the controller's (HeartbeatFastPath, ControllerService::heartbeatJson).
// Hermetic: a manual clock, no threads (the service's loop is never started).
#include <gtest/gtest.h>

#include "controller/controller.h"
#include "controller/heartbeat_fastpath.h"
#include "controller/service.h"
#include "controller_fixture.h"
#include "tw/compact_heartbeats.h"
#include "tw/hex64.h"
#include "tw/json.h"
#include "tw/store.h"

namespace tw {
namespace {

Heartbeat reportOf(const std::string& host, int64_t version) {
  Heartbeat hb;
  hb.host = host;
  hb.agent_id = "a1";
  hb.seq = 7;
  hb.capacity = {8, 16384};
  hb.assignments_version = version;
  hb.assignments_controller = "ctl";
  hb.peers_digest = "pd1";
  hb.peers_unreachable = {{"h3", 4000}};
  hb.addresses_held = {"web/0"};
  DomainReport d;
  d.vm = "web-1";
  d.tier = "web";
  d.epoch = 3;
  d.state = DomainState::kRunning;
  d.health = Health::kHealthy;
  d.ports = {{80, 20080}};
  hb.domains.push_back(d);
  return hb;
}

AssignmentSet setOf(const std::string& host, int64_t version) {
  AssignmentSet s;
  s.host = host;
  s.version = version;
  s.controller_id = "ctl";
  s.lease_ms = 5000;
  s.peers_digest = "pd1";
  s.peers = {PeerInfo{"h2", "10.0.0.2:7"}};
  Assignment a;
  a.vm = "web-1";
  a.epoch = 3;
  s.assignments.push_back(a);
  return s;
}

// Pins: the agent's digest of a report is the controller's digest of the
// same report as it arrives over HTTP (JSON text, decoded): otherwise no
// compact heartbeat would ever be answered.
TEST(CompactHeartbeatsTest, AgentAndControllerDigestsAgree) {
  Heartbeat hb = reportOf("h1", 4);
  auto decoded = decode<Heartbeat>(*parseJson(Json(hb).dump()));
  ASSERT_TRUE(decoded.isOk());
  EXPECT_EQ(heartbeatDigest(hb), HeartbeatFastPath::digestOf(*decoded));
  Heartbeat later = hb;
  later.seq = 99;  // seq is not part of the report
  EXPECT_EQ(heartbeatDigest(later), heartbeatDigest(hb));
  later.peers_unreachable["h3"] = 5000;  // nor how long a peer has been unreachable
  EXPECT_EQ(heartbeatDigest(later), heartbeatDigest(hb));
  later.peers_unreachable["h4"] = 4000;  // but which peers are
  EXPECT_NE(heartbeatDigest(later), heartbeatDigest(hb));
  later = hb;
  later.domains[0].health = Health::kUnhealthy;
  EXPECT_NE(heartbeatDigest(later), heartbeatDigest(hb));
  // A heartbeat without unreachable peers keeps the digest it had before
  // durations were left out (agents and controllers of either build agree).
  Heartbeat none = hb;
  none.peers_unreachable.clear();
  Json j = none;
  for (const char* k : {"seq", "events", "compact", "report_digest"}) j.erase(k);
  EXPECT_EQ(heartbeatDigest(none), hex64(fnv1a(j.dump())));
}

// A compact heartbeat carries the durations (they are not in its digest).
TEST(CompactHeartbeatsTest, CompactCarriesUnreachableDurations) {
  Heartbeat hb = reportOf("h1", 4);
  Heartbeat c = compactOf(hb, heartbeatDigest(hb));
  EXPECT_TRUE(c.domains.empty());
  EXPECT_EQ(c.peers_unreachable, hb.peers_unreachable);
  auto decoded = decode<Heartbeat>(*parseJson(Json(c).dump()));
  ASSERT_TRUE(decoded.isOk());
  EXPECT_EQ(decoded->peers_unreachable, hb.peers_unreachable);
}

// Pins: an agent sends its report in full until the controller answered
// it; then the same report goes out compact (its digest, no domains); a
// change, an event, a host report or a failed answer sends it in full again.
TEST(CompactHeartbeatsTest, CompactOnlyWhileTheAnsweredReportHolds) {
  CompactHeartbeats c;
  Heartbeat hb = reportOf("h1", 4);
  std::string digest;
  EXPECT_FALSE(c.next(hb, &digest).compact);  // nothing answered yet
  c.answered(digest, true);
  hb.seq = 8;
  Heartbeat sent = c.next(hb, &digest);
  ASSERT_TRUE(sent.compact);
  EXPECT_EQ(sent.report_digest, heartbeatDigest(hb));
  EXPECT_TRUE(sent.domains.empty());
  EXPECT_EQ(sent.seq, 8);
  EXPECT_EQ(sent.assignments_version, 4);
  EXPECT_EQ(sent.peers_digest, "pd1");
  // The compact JSON is small and carries the digest.
  const std::string text = Json(sent).dump();
  EXPECT_NE(text.find("\"report_digest\""), std::string::npos);
  EXPECT_EQ(text.find("web-1"), std::string::npos);

  Heartbeat changed = hb;
  changed.domains[0].state = DomainState::kCrashed;
  EXPECT_FALSE(c.next(changed, &digest).compact);
  Heartbeat with_event = hb;
  with_event.events.push_back(AgentEvent{});
  EXPECT_FALSE(c.next(with_event, &digest).compact);
  Heartbeat with_report = hb;
  with_report.host_report.digest = "r1";
  EXPECT_FALSE(c.next(with_report, &digest).compact);

  EXPECT_TRUE(c.next(hb, &digest).compact);
  c.answered(digest, false);  // e.g. a controller that lost the report
  EXPECT_FALSE(c.next(hb, &digest).compact);
  c.answered(digest, true);
  c.setEnabled(false);
  EXPECT_FALSE(c.next(hb, &digest).compact);
}

// Pins: after a compact heartbeat was refused, the next kFullAfterRefusal
// go out full (a host the fast path never answers pays one request a beat,
// not two), then compact again.
TEST(CompactHeartbeatsTest, FullForAWhileAfterARefusal) {
  CompactHeartbeats c;
  Heartbeat hb = reportOf("h1", 4);
  std::string digest;
  c.next(hb, &digest);
  c.answered(digest, true);
  ASSERT_TRUE(c.next(hb, &digest).compact);
  c.refused();
  c.answered(digest, true);  // the full one that followed was answered
  for (int i = 0; i < CompactHeartbeats::kFullAfterRefusal; ++i) {
    EXPECT_FALSE(c.next(hb, &digest).compact) << i;
    c.answered(digest, true);
  }
  EXPECT_TRUE(c.next(hb, &digest).compact);
}

class CompactFastPathTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fast_.notePeersDigest("pd1");
    fast_.noteTaken(reportOf("h1", 4), setOf("h1", 4), /*online=*/true, /*fresh_ms=*/1500);
  }
  ManualClock clock_{1000};
  HeartbeatFastPath fast_{clock_};
};

// Pins: a compact heartbeat naming the report the loop took is answered off
// the loop, with the set's JSON written once (the same text each time, what
// jsonText of the set gives) and the renewal handed to the loop.
TEST_F(CompactFastPathTest, UnchangedCompactIsAnsweredFromTheCachedJson) {
  const Heartbeat full = reportOf("h1", 4);
  Heartbeat hb = compactOf(full, heartbeatDigest(full));
  hb.seq = 8;
  auto first = fast_.tryAnswerShared(hb);
  ASSERT_NE(first, nullptr);
  hb.seq = 9;
  auto second = fast_.tryAnswerShared(hb);
  ASSERT_NE(second, nullptr);
  EXPECT_EQ(&first->json(), &second->json());  // written once
  AssignmentSet expected = setOf("h1", 4);
  expected.peers.clear();
  expected.peers_omitted = true;
  EXPECT_EQ(first->json(), jsonText(Json(expected)));
  auto renewed = fast_.takeRenewals();
  ASSERT_EQ(renewed.size(), 2u);
  EXPECT_EQ(renewed[0].host, "h1");
  EXPECT_EQ(renewed[1].host, "h1");
  EXPECT_EQ(renewed[1].peers_unreachable, full.peers_unreachable);  // the durations ride along
}

// Pins: a compact heartbeat whose digest is not the one the loop took (a
// change the agent has not sent, another agent process) is not answered;
// nor after the fast path forgot everything (a controller restart, a new
// leader: ControllerService::swapController resets it).
TEST_F(CompactFastPathTest, UnknownDigestIsNotAnswered) {
  const Heartbeat full = reportOf("h1", 4);
  EXPECT_EQ(fast_.tryAnswerShared(compactOf(full, "0000000000000000")), nullptr);
  Heartbeat no_digest = compactOf(full, "");
  EXPECT_EQ(fast_.tryAnswerShared(no_digest), nullptr);
  fast_.reset();
  fast_.notePeersDigest("pd1");
  EXPECT_EQ(fast_.tryAnswerShared(compactOf(full, heartbeatDigest(full))), nullptr);
  EXPECT_TRUE(fast_.takeRenewals().empty());
}

const char* kHostsPolicy = R"(hosts:
  - { name: h1, uri: "test:///default" }
  - { name: h2, uri: "test:///default" }
)";

// Pins: a controller that does not hold the report a compact heartbeat names
// (here: just started, nothing taken from the host) answers "report wanted"
// (kFailedPrecondition, counted as report_wanted) at once: a compact
// heartbeat never reaches the loop, which would read it as a host without
// VMs. The full heartbeat then goes to the loop as before.
TEST(CompactServiceTest, ControllerWithoutTheDigestWantsTheReport) {
  ManualClock clock{1000};
  auto opened = testing_controller::openWithPolicy(clock, {PolicyFile{"p.yaml", kHostsPolicy}});
  ASSERT_TRUE(opened.isOk()) << opened.status().toString();
  Controller& c = *opened->controller;
  ControllerService service(c, 100, clock);  // its loop is not started
  const Heartbeat full = reportOf("h1", 4);
  HeartbeatPath how = HeartbeatPath::kFast;
  Result<std::string> answer = service.heartbeatJson(compactOf(full, heartbeatDigest(full)), 0, &how);
  ASSERT_FALSE(answer.isOk());
  EXPECT_EQ(answer.status().code(), Code::kFailedPrecondition);
  EXPECT_NE(answer.status().message().find("report wanted"), std::string::npos);
  EXPECT_EQ(how, HeartbeatPath::kReportWanted);
  Result<AssignmentSet> set = service.heartbeat(compactOf(full, heartbeatDigest(full)), 0, &how);
  EXPECT_EQ(set.status().code(), Code::kFailedPrecondition);
  // A host no policy declares is still 404, compact or not.
  Heartbeat stranger = compactOf(reportOf("h9", 1), "0123456789abcdef");
  EXPECT_EQ(service.heartbeatJson(stranger, 0, &how).status().code(), Code::kNotFound);
}

}  // namespace
}  // namespace tw
