// Heartbeats answered off the loop (controller/heartbeat_fastpath.h, issue
// #16): which ones are, and what the loop then does with their renewals
// (Controller::renewOffLoop). Hermetic: a manual clock, no threads.
#include <gtest/gtest.h>

#include "controller/controller.h"
#include "controller/heartbeat_fastpath.h"
#include "controller_fixture.h"
#include "tw/store.h"

namespace tw {
namespace {

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

Heartbeat hbOf(const std::string& host, int64_t version) {
  Heartbeat hb;
  hb.host = host;
  hb.agent_id = "a1";
  hb.seq = 7;
  hb.assignments_version = version;
  hb.assignments_controller = "ctl";
  hb.peers_digest = "pd1";
  DomainReport d;
  d.vm = "web-1";
  d.epoch = 3;
  d.state = DomainState::kRunning;
  hb.domains.push_back(d);
  return hb;
}

class HeartbeatFastPathTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fast_.notePeersDigest("pd1");
    fast_.noteTaken(hbOf("h1", 4), setOf("h1", 4), /*online=*/true, /*fresh_ms=*/1500);
  }
  ManualClock clock_{1000};
  HeartbeatFastPath fast_{clock_};
};

// The same report again (only seq differs): answered here with the set,
// without the peer list, and its renewal is handed to the loop.
TEST_F(HeartbeatFastPathTest, UnchangedHeartbeatIsAnsweredAndRenewed) {
  Heartbeat hb = hbOf("h1", 4);
  hb.seq = 8;
  auto set = fast_.tryAnswer(hb);
  ASSERT_TRUE(set.has_value());
  EXPECT_EQ(set->version, 4);
  EXPECT_EQ(set->assignments.size(), 1u);
  EXPECT_TRUE(set->peers.empty());
  EXPECT_TRUE(set->peers_omitted);
  auto renewed = fast_.takeRenewals();
  ASSERT_EQ(renewed.size(), 1u);
  EXPECT_EQ(renewed[0].host, "h1");
  EXPECT_TRUE(fast_.takeRenewals().empty());
  EXPECT_EQ(fast_.answered(), 1);
}

// While a peer stays unreachable, only how long it has been so changes from
// one heartbeat to the next: answered here, the durations handed to the
// loop with the renewal (issue #16: at 1,000 hosts one dead host sent every
// survivor's heartbeat to the loop each second, and the loop fell behind).
// Another peer named, or one no longer named, is a change: the loop's.
TEST_F(HeartbeatFastPathTest, OnlyLongerUnreachableDurationsAreAnsweredHere) {
  Heartbeat first = hbOf("h1", 4);
  first.peers_unreachable["h2"] = 3000;
  fast_.noteTaken(first, setOf("h1", 4), /*online=*/true, /*fresh_ms=*/1500);
  Heartbeat later = first;
  later.seq = 8;
  later.peers_unreachable["h2"] = 4000;
  ASSERT_TRUE(fast_.tryAnswer(later).has_value());
  auto renewed = fast_.takeRenewals();
  ASSERT_EQ(renewed.size(), 1u);
  EXPECT_EQ(renewed[0].peers_unreachable, (std::map<std::string, Millis>{{"h2", 4000}}));
  Heartbeat another = later;
  another.peers_unreachable["h3"] = 3000;
  EXPECT_FALSE(fast_.tryAnswer(another).has_value());
  EXPECT_FALSE(fast_.tryAnswer(hbOf("h1", 4)).has_value());  // h2 reached again
  EXPECT_TRUE(fast_.takeRenewals().empty());
}

// Anything new goes to the loop: a changed domain, events, a host report,
// another set version, another peer list, an unknown host.
TEST_F(HeartbeatFastPathTest, AnyChangeGoesToTheLoop) {
  Heartbeat crashed = hbOf("h1", 4);
  crashed.domains[0].state = DomainState::kCrashed;
  EXPECT_FALSE(fast_.tryAnswer(crashed).has_value());
  Heartbeat with_event = hbOf("h1", 4);
  with_event.events.push_back(AgentEvent{});
  EXPECT_FALSE(fast_.tryAnswer(with_event).has_value());
  Heartbeat with_report = hbOf("h1", 4);
  with_report.host_report.digest = "r1";
  EXPECT_FALSE(fast_.tryAnswer(with_report).has_value());
  EXPECT_FALSE(fast_.tryAnswer(hbOf("h1", 3)).has_value());
  Heartbeat unreachable = hbOf("h1", 4);
  unreachable.peers_unreachable["h2"] = 3000;
  EXPECT_FALSE(fast_.tryAnswer(unreachable).has_value());
  EXPECT_FALSE(fast_.tryAnswer(hbOf("h9", 4)).has_value());
  fast_.notePeersDigest("pd2");  // a peer's address changed: the agent needs the list
  EXPECT_FALSE(fast_.tryAnswer(hbOf("h1", 4)).has_value());
  EXPECT_TRUE(fast_.takeRenewals().empty());
}

// A newer published set: the agent still on the old one goes to the loop,
// and so does its first report on the new one (a change); after the loop
// took that, it is answered here again.
TEST_F(HeartbeatFastPathTest, NewSetPublishedNeedsTheAgentToCatchUp) {
  fast_.notePublished(setOf("h1", 5));
  EXPECT_FALSE(fast_.tryAnswer(hbOf("h1", 4)).has_value());
  EXPECT_FALSE(fast_.tryAnswer(hbOf("h1", 5)).has_value());
  fast_.noteTaken(hbOf("h1", 5), setOf("h1", 5), true, 1500);
  auto set = fast_.tryAnswer(hbOf("h1", 5));
  ASSERT_TRUE(set.has_value());
  EXPECT_EQ(set->version, 5);
}

// A published set without its peer list is shared, not copied (the
// service keeps the same one; issue #16's memory); one that still carries
// the list is copied without it. Either is answered once the agent is on it.
TEST_F(HeartbeatFastPathTest, PublishedSetWithoutPeersIsShared) {
  AssignmentSet bare = setOf("h1", 5);
  bare.peers.clear();
  bare.peers_omitted = true;
  auto shared = std::make_shared<const AssignmentSet>(bare);
  fast_.notePublished(shared);
  fast_.noteTaken(hbOf("h1", 5), setOf("h1", 4), true, 1500);  // an older answer: the published set stays
  auto answer = fast_.tryAnswerShared(hbOf("h1", 5));
  ASSERT_NE(answer, nullptr);
  EXPECT_EQ(&answer->set(), shared.get());
  auto with_peers = std::make_shared<const AssignmentSet>(setOf("h1", 6));
  fast_.notePublished(with_peers);
  fast_.noteTaken(hbOf("h1", 6), setOf("h1", 5), true, 1500);
  answer = fast_.tryAnswerShared(hbOf("h1", 6));
  ASSERT_NE(answer, nullptr);
  EXPECT_NE(&answer->set(), with_peers.get());
  EXPECT_TRUE(answer->set().peers.empty());
  EXPECT_TRUE(answer->set().peers_omitted);
  EXPECT_EQ(answer->set().version, 6);
}

// Only while the loop's view is fresh and the host online: a host the loop
// has not heard (through the loop or a renewal) within the window, or that
// is not online, goes to the loop.
TEST_F(HeartbeatFastPathTest, StaleOrNotOnlineGoesToTheLoop) {
  clock_.advance(1400);
  EXPECT_TRUE(fast_.tryAnswer(hbOf("h1", 4)).has_value());
  fast_.noteRenewed("h1", true, 1500);  // the loop applied it
  clock_.advance(1400);
  EXPECT_TRUE(fast_.tryAnswer(hbOf("h1", 4)).has_value());
  clock_.advance(200);  // not applied by the loop: 1.6 s since it last heard h1
  EXPECT_FALSE(fast_.tryAnswer(hbOf("h1", 4)).has_value());
  fast_.noteRenewed("h1", false, 1500);  // the loop found it not online
  EXPECT_FALSE(fast_.tryAnswer(hbOf("h1", 4)).has_value());
}

// The loop closes the path for a host it is about to declare dead: close()
// says whether an answer given here still waits for the loop (then the host
// was heard and is not dead), and nothing is answered for the host after
// it until the loop hears it again.
TEST_F(HeartbeatFastPathTest, ClosedHostIsNotAnsweredAndPendingAnswersAreReported) {
  EXPECT_FALSE(fast_.close("h1"));  // nothing answered here yet
  EXPECT_FALSE(fast_.tryAnswer(hbOf("h1", 4)).has_value());  // closed
  EXPECT_EQ(fast_.misses(HeartbeatFastPath::Miss::kNotOnline), 1);
  fast_.noteTaken(hbOf("h1", 4), setOf("h1", 4), /*online=*/true, /*fresh_ms=*/1500);  // the loop heard it
  ASSERT_TRUE(fast_.tryAnswer(hbOf("h1", 4)).has_value());
  EXPECT_TRUE(fast_.close("h1"));  // that answer waits for the loop
  EXPECT_FALSE(fast_.tryAnswer(hbOf("h1", 4)).has_value());
  EXPECT_EQ(fast_.takeRenewals().size(), 1u);
  EXPECT_FALSE(fast_.close("h1"));
  fast_.noteRenewed("h1", true, 1500);  // applied: online again
  EXPECT_TRUE(fast_.tryAnswer(hbOf("h1", 4)).has_value());
  EXPECT_FALSE(fast_.close("h9"));  // never seen
}

// Why each heartbeat missed, for /metrics (issue #16: which rule sends
// heartbeats to the loop at 1,000 hosts).
TEST_F(HeartbeatFastPathTest, MissesAreCountedByRule) {
  EXPECT_FALSE(fast_.tryAnswer(hbOf("h2", 4)).has_value());
  EXPECT_FALSE(fast_.tryAnswer(hbOf("h1", 5)).has_value());
  Heartbeat changed = hbOf("h1", 4);
  changed.domains[0].state = DomainState::kShutoff;
  EXPECT_FALSE(fast_.tryAnswer(changed).has_value());
  clock_.advance(1501);
  EXPECT_FALSE(fast_.tryAnswer(hbOf("h1", 4)).has_value());
  using Miss = HeartbeatFastPath::Miss;
  EXPECT_EQ(fast_.misses(Miss::kUnknown), 1);
  EXPECT_EQ(fast_.misses(Miss::kSetChanged), 1);
  EXPECT_EQ(fast_.misses(Miss::kDigest), 1);
  EXPECT_EQ(fast_.misses(Miss::kStale), 1);
  EXPECT_EQ(fast_.misses(Miss::kRaced), 0);
  const std::string text = fast_.metricsText();
  EXPECT_NE(text.find("tierwarden_heartbeat_fastpath_misses_total{reason=\"stale\"} 1\n"), std::string::npos);
  EXPECT_NE(text.find("tierwarden_heartbeat_fastpath_misses_total{reason=\"report\"} 0\n"), std::string::npos);
}

}  // namespace
}  // namespace tw

namespace tw {
namespace {

const char* kRenewPolicy = R"(
cluster:
  heartbeat_interval: 500ms
  dead_after: 1500ms
  lease: 2s
hosts:
  - name: h1
  - name: h2
  - name: h3
tiers:
  - name: web
    image: tiny-web
    replicas: 3
    memory: 128MiB
)";

// The loop's side: a renewal answered off the loop counts as a heartbeat
// (never suspect, never fenced); a host the loop found suspect meanwhile
// comes back online.
TEST(RenewOffLoopTest, RenewalsKeepTheHostOnline) {
  ManualClock clock{1000};
  auto opened = testing_controller::openWithPolicy(clock, {PolicyFile{"p.yaml", kRenewPolicy}});
  ASSERT_TRUE(opened.isOk()) << opened.status().toString();
  Controller& c = *opened->controller;
  auto beat = [&](const std::string& host) {
    Heartbeat hb;
    hb.host = host;
    hb.agent_id = "a-" + host;
    hb.capacity = {4, 4096};
    ASSERT_TRUE(c.handleHeartbeat(hb).isOk());
  };
  for (const char* h : {"h1", "h2", "h3"}) beat(h);
  for (int i = 0; i < 100; ++i) {  // 10 s: h1 only through renewOffLoop
    clock.advance(100);
    if (i % 5 == 0) {
      beat("h2");
      beat("h3");
      EXPECT_TRUE(c.renewOffLoop("h1"));
    }
    c.runOnce();
  }
  EXPECT_EQ(c.host("h1")->state, HostState::kOnline);
  for (int i = 0; i < 10 && c.host("h1")->state == HostState::kOnline; ++i) {
    clock.advance(100);
    c.runOnce();
  }
  ASSERT_EQ(c.host("h1")->state, HostState::kSuspect);
  EXPECT_TRUE(c.renewOffLoop("h1"));
  EXPECT_EQ(c.host("h1")->state, HostState::kOnline);
  EXPECT_FALSE(c.renewOffLoop("h9"));
  EXPECT_FALSE(c.peersDigest().empty());
}

const char* kQuorumPolicy = R"(
cluster:
  heartbeat_interval: 500ms
  dead_after: 1500ms
  lease: 2s
hosts:
  - name: h1
  - name: h2
  - name: h3
  - name: h4
  - name: h5
tiers:
  - name: web
    image: tiny-web
    replicas: 5
    memory: 128MiB
)";

// h5 dies; h1-h4 tell the loop once that h5 is unreachable, then their
// heartbeats are answered off the loop (only the durations grow). Returns
// when h5 was fenced after its death (-1: not in 30 s). `carry`: the
// renewals carry the durations, as the fast path hands them over.
Millis fenceAfterDeath(bool carry) {
  ManualClock clock{1000};
  auto opened = testing_controller::openWithPolicy(clock, {PolicyFile{"p.yaml", kQuorumPolicy}});
  if (!opened.isOk()) return -2;
  Controller& c = *opened->controller;
  const std::vector<std::string> survivors = {"h1", "h2", "h3", "h4"};
  auto beat = [&](const std::string& host, Millis unreachable_ms) {
    Heartbeat hb;
    hb.host = host;
    hb.agent_id = "a-" + host;
    hb.capacity = {4, 4096};
    if (unreachable_ms > 0) hb.peers_unreachable["h5"] = unreachable_ms;
    return c.handleHeartbeat(hb).isOk();
  };
  for (int i = 0; i < 30; ++i) {  // 3 s: everyone online
    clock.advance(100);
    if (i % 5 == 0) {
      for (const auto& h : survivors) beat(h, 0);
      beat("h5", 0);
    }
    c.runOnce();
  }
  const Millis died = clock.nowMs();
  bool told = false;
  for (int i = 0; i < 300; ++i) {
    clock.advance(100);
    const Millis gone = clock.nowMs() - died;
    if (i % 5 == 0) {
      for (const auto& h : survivors) {
        if (gone < 1000) {
          beat(h, 0);  // not unreachable for a peer timeout yet
        } else if (!told) {
          beat(h, gone);
        } else {
          std::map<std::string, Millis> durations{{"h5", gone}};
          c.renewOffLoop(h, carry ? &durations : nullptr);
        }
      }
      told = gone >= 1000;
    }
    c.runOnce();
    if (c.host("h5")->state == HostState::kFenced) return clock.nowMs() - died;
  }
  return -1;
}

// The race the fast path's safety rests on (heartbeat_fastpath.h): a
// heartbeat answered off the loop after the step took the renewals, just
// as the loop finds the host silent for dead_after. The loop asks the fast
// path before it declares the host dead: an answer not applied yet keeps it
// from being declared (it is applied at the next step: online), and once a
// host is declared dead nothing more is answered for it off the loop.
TEST(RenewOffLoopTest, AnAnswerNotYetAppliedKeepsTheHostFromBeingDeclaredDead) {
  ManualClock clock{1000};
  auto opened = testing_controller::openWithPolicy(clock, {PolicyFile{"p.yaml", kQuorumPolicy}});
  ASSERT_TRUE(opened.isOk()) << opened.status().toString();
  Controller& c = *opened->controller;
  HeartbeatFastPath fast(clock);
  std::vector<std::string> asked;
  c.setOffLoopCloser([&](const std::string& host) {
    asked.push_back(host);
    return fast.close(host);
  });
  fast.notePeersDigest(c.peersDigest());
  std::map<std::string, AssignmentSet> runs;  // what each agent runs: its last answer
  auto beat = [&](const std::string& host, Millis unreachable_ms) {
    Heartbeat hb;
    hb.host = host;
    hb.agent_id = "a-" + host;
    hb.capacity = {4, 4096};
    hb.peers_digest = c.peersDigest();
    hb.assignments_version = runs[host].version;
    hb.assignments_controller = runs[host].controller_id;
    if (unreachable_ms > 0) hb.peers_unreachable["h5"] = unreachable_ms;
    auto set = c.handleHeartbeat(hb);
    if (set.isOk()) {
      fast.noteTaken(hb, *set, c.host(host)->state == HostState::kOnline, 10000);
      runs[host] = *set;
    }
    return hb;
  };
  Heartbeat h5;
  for (int i = 0; i < 30; ++i) {  // 3 s: everyone online
    clock.advance(100);
    if (i % 5 == 0) {
      for (const char* h : {"h1", "h2", "h3", "h4"}) beat(h, 0);
      h5 = beat("h5", 0);
    }
    c.runOnce();
  }
  h5 = beat("h5", 0);  // the version it runs now
  // h5's agent goes on sending the same heartbeat, answered off the loop,
  // while the step never takes the renewals (each lands after it took them);
  // its peers cannot reach it (they report through the loop).
  const Millis died = clock.nowMs();
  for (int i = 0; i < 60 && asked.empty(); ++i) {
    clock.advance(100);
    const Millis gone = clock.nowMs() - died;
    if (i % 5 == 0) {
      for (const char* h : {"h1", "h2", "h3", "h4"}) beat(h, gone >= 1000 ? gone : 0);
      ASSERT_TRUE(fast.tryAnswer(h5).has_value()) << "at " << gone << " ms";
    }
    c.runOnce();
  }
  ASSERT_EQ(asked, std::vector<std::string>{"h5"});  // silent for dead_after, with a quorum
  EXPECT_NE(c.host("h5")->state, HostState::kOffline);  // an answer waited: heard
  EXPECT_FALSE(fast.tryAnswer(h5).has_value());  // closed until the loop applies it
  for (const auto& r : fast.takeRenewals()) {
    fast.noteRenewed(r.host, c.renewOffLoop(r.host, &r.peers_unreachable), 10000);
  }
  EXPECT_EQ(c.host("h5")->state, HostState::kOnline);
  EXPECT_TRUE(fast.tryAnswer(h5).has_value());
  (void)fast.takeRenewals();  // this one never reaches the loop: as if lost with the step
  // Now h5 is silent for good (the answer above was its last): declared
  // dead once silent for dead_after, and nothing is answered off the loop
  // for it after that.
  for (int i = 0; i < 60 && c.host("h5")->state != HostState::kOffline; ++i) {
    clock.advance(100);
    const Millis gone = clock.nowMs() - died;
    if (i % 5 == 0) {
      for (const char* h : {"h1", "h2", "h3", "h4"}) beat(h, gone);
    }
    c.runOnce();
  }
  EXPECT_EQ(c.host("h5")->state, HostState::kOffline);
  EXPECT_FALSE(fast.tryAnswer(h5).has_value());
  EXPECT_TRUE(fast.takeRenewals().empty());
}

// The quorum's evidence (controller_quorum.cc: votes and the windows in which
// the lease ran out) reads how long each voter has not reached the silent
// host; renewals off the loop keep it current, or the fence never comes.
TEST(RenewOffLoopTest, RenewalsCarryUnreachableDurationsToTheQuorum) {
  const Millis with = fenceAfterDeath(true);
  EXPECT_GT(with, 0);
  EXPECT_LT(with, 15000);
  EXPECT_EQ(fenceAfterDeath(false), -1);  // frozen at the first report: never enough
}

}  // namespace
}  // namespace tw
