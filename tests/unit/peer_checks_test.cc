// Which peer an agent checks next, and what it concludes (agent/peer_checks.h),
// stepped on virtual time: the checking threads are played by a loop that
// gives each check the time it would take (an answering peer 1 ms, a silent
// one its whole connect timeout).
#include <gtest/gtest.h>

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "agent/peer_checks.h"

namespace tw {
namespace {

std::string host(int i) { return "h" + std::to_string(i); }

std::vector<PeerInfo> peerList(int n) {
  std::vector<PeerInfo> peers;
  for (int i = 1; i <= n; ++i) peers.push_back({host(i), "10.0.0." + std::to_string(i) + ":7001"});
  return peers;
}

// Pins: a new peer is checked in the live lane with the short connect
// timeout; when that check gets no answer it waits in the silent lane, due
// at once (ahead of a peer silent for longer) and checked with the full
// timeout; when it answers there it is back in the live lane, due one
// interval after the check's start.
TEST(PeerChecksTest, LanesAndTimeouts) {
  PeerChecks checks("h0", PeerCheckTuning{4, 25, 4});
  checks.setPeers({{"h1", "10.0.0.1:7001"}, {"h2", "10.0.0.2:7001"}, {"h3", ""}}, 1500, 0, 0);
  EXPECT_EQ(checks.interval(), 500);
  EXPECT_EQ(checks.workersPerLane(), 3u);

  std::optional<PeerCheck> c1 = checks.take(PeerLane::kLive, 0);
  std::optional<PeerCheck> c2 = checks.take(PeerLane::kLive, 0);
  ASSERT_TRUE(c1 && c2);
  EXPECT_EQ(c1->host, "h1");
  EXPECT_EQ(c2->host, "h2");
  EXPECT_EQ(c1->connect_timeout_ms, 25);
  EXPECT_EQ(c1->timeout_ms, 500);
  // h3 has no address yet: never checked.
  EXPECT_FALSE(checks.take(PeerLane::kLive, 0));
  EXPECT_FALSE(checks.take(PeerLane::kSilent, 0));

  // h2 silent for a while already: it waits in the silent lane.
  checks.finish(*c2, std::nullopt, 25);
  std::optional<PeerCheck> s2 = checks.take(PeerLane::kSilent, 25);
  ASSERT_TRUE(s2);
  checks.finish(*s2, std::nullopt, 525);
  EXPECT_EQ(checks.nextDue(PeerLane::kSilent), 525);  // one interval after that check's start

  // h1 answers: due in the live lane, where nothing else waits (its threads
  // may sleep up to a second: a wake-up). Then it misses the short connect:
  // retried at once in the silent lane (a wake-up there), before h2.
  EXPECT_EQ(checks.finish(*c1, true, 1), PeerLane::kLive);
  EXPECT_EQ(checks.nextDue(PeerLane::kLive), 500);
  EXPECT_FALSE(checks.take(PeerLane::kLive, 499));
  c1 = checks.take(PeerLane::kLive, 500);
  ASSERT_TRUE(c1);
  EXPECT_EQ(checks.finish(*c1, std::nullopt, 525), PeerLane::kSilent);
  std::optional<PeerCheck> s1 = checks.take(PeerLane::kSilent, 526);
  ASSERT_TRUE(s1);
  EXPECT_EQ(s1->host, "h1");
  EXPECT_EQ(s1->connect_timeout_ms, 500);
  // It answers the full check: live again, due an interval after that start.
  checks.finish(*s1, true, 530);
  EXPECT_EQ(checks.nextDue(PeerLane::kLive), 1026);
  EXPECT_EQ(checks.reachable(530), std::set<std::string>{"h1"});
}

// Pins: a lane asks for one more thread only when its earliest waiting
// check is overdue by more than a quarter interval, and never beyond the
// most allowed or beyond one per peer.
TEST(PeerChecksTest, MoreThreadsOnlyWhenBehind) {
  PeerChecks checks("h0", PeerCheckTuning{2, 25, 3});
  checks.setPeers(peerList(10), 1500, 0, 0);  // all due at 0, interval 500
  EXPECT_FALSE(checks.wantsWorker(PeerLane::kLive, 2, 125));
  EXPECT_TRUE(checks.wantsWorker(PeerLane::kLive, 2, 126));
  EXPECT_FALSE(checks.wantsWorker(PeerLane::kLive, 3, 10'000));
  EXPECT_FALSE(checks.wantsWorker(PeerLane::kSilent, 2, 10'000));  // nothing waits there
  PeerChecks few("h0", PeerCheckTuning{2, 25, 128});
  few.setPeers(peerList(2), 1500, 0, 0);
  EXPECT_FALSE(few.wantsWorker(PeerLane::kLive, 2, 10'000));
}

// Pins: what reachable() and unreachable() say does not depend on when
// checks ran: a peer is reached only within the timeout after an answer that
// named this host; an answer that did not name it counts as an answer (not
// unreachable) but not as reached; unreachable runs from the last answer (or
// the first peer list), however long ago the last check was.
TEST(PeerChecksTest, ReachedAndUnreachableFromAnswers) {
  PeerChecks checks("h0");
  checks.setPeers({{"h1", "a:1"}, {"h2", "b:1"}, {"h3", "c:1"}}, 3000, 10'000, 0);
  auto finishNext = [&](Millis at, std::optional<bool> mutual) {
    std::optional<PeerCheck> c = checks.take(PeerLane::kLive, 0);
    ASSERT_TRUE(c);
    checks.finish(*c, mutual, at);
  };
  finishNext(10'100, true);         // h1
  finishNext(10'200, false);        // h2: answers, does not see us
  finishNext(10'300, std::nullopt); // h3: silent
  EXPECT_EQ(checks.reachable(13'099), std::set<std::string>{"h1"});
  EXPECT_TRUE(checks.reachable(13'100).empty());
  EXPECT_TRUE(checks.unreachable(12'999).empty());
  EXPECT_EQ(checks.unreachable(13'000), (std::map<std::string, Millis>{{"h3", 3000}}));
  EXPECT_EQ(checks.unreachable(20'000),
            (std::map<std::string, Millis>{{"h1", 9900}, {"h2", 9800}, {"h3", 10'000}}));
  EXPECT_TRUE(checks.hears("h2", 13'199));
  EXPECT_FALSE(checks.hears("h3", 10'400));
  EXPECT_EQ(checks.heard(12'000), (std::vector<std::string>{"h1", "h2"}));
}

// N peers on virtual time, with the lanes' threads played by a loop: the
// threads a lane starts with, never more (HttpPeerMonitor adds some when a
// lane falls behind; the bounds below hold without them).
class LaneSim {
 public:
  LaneSim(int n, Millis timeout, PeerCheckTuning tuning) : checks_("h0", tuning), n_(n) {
    answers_.assign(n + 1, true);
    last_answer_.assign(n + 1, -1);
    checks_.setPeers(peerList(n), timeout, 0, 0);
    for (auto& lane : busy_) lane.resize(checks_.workersPerLane());
  }
  void setAnswers(int i, bool answers) { answers_[i] = answers; }
  Millis lastAnswer(int i) const { return last_answer_[i]; }
  const PeerChecks& checks() const { return checks_; }
  Millis now() const { return now_; }

  // Steps 1 ms at a time up to `until`, calling `every10ms` at each 10 ms.
  void runUntil(Millis until, const std::function<void()>& every10ms) {
    for (; now_ < until; ++now_) {
      for (int lane = 0; lane < 2; ++lane) {
        for (auto& w : busy_[lane]) {
          if (w && w->done_at <= now_) {
            checks_.finish(w->check, w->mutual, now_);
            if (w->mutual) last_answer_[std::stoi(w->check.host.substr(1))] = now_;
            w.reset();
          }
        }
        for (auto& w : busy_[lane]) {
          if (w) continue;
          std::optional<PeerCheck> c = checks_.take(static_cast<PeerLane>(lane), now_);
          if (!c) break;
          const bool answers = answers_[std::stoi(c->host.substr(1))];
          // A silent peer: the connect never completes.
          w = Busy{*c, now_ + (answers ? 1 : c->connect_timeout_ms),
                   answers ? std::optional<bool>(true) : std::nullopt};
        }
      }
      if (now_ % 10 == 0) every10ms();
    }
  }

 private:
  struct Busy {
    PeerCheck check;
    Millis done_at;
    std::optional<bool> mutual;
  };
  PeerChecks checks_;
  const int n_;
  std::vector<bool> answers_;
  std::vector<Millis> last_answer_;
  std::vector<std::optional<Busy>> busy_[2];
  Millis now_ = 0;
};

// Every answering peer reached and none unreachable; every silent one
// unreachable for exactly as long as since its last answer (or the start).
// Counts the instants where that did not hold.
struct Judge {
  int wrong_answering = 0;
  int wrong_silent = 0;
  void operator()(LaneSim& sim, int n, const std::function<bool(int)>& answering, Millis since) {
    if (sim.now() < since) return;
    const Millis now = sim.now();
    std::set<std::string> reached = sim.checks().reachable(now);
    std::map<std::string, Millis> unreachable = sim.checks().unreachable(now);
    for (int i = 1; i <= n; ++i) {
      if (answering(i)) {
        if (!reached.count(host(i)) || unreachable.count(host(i))) ++wrong_answering;
      } else {
        const Millis silent_for = now - std::max<Millis>(sim.lastAnswer(i), 0);
        auto it = unreachable.find(host(i));
        const bool right = silent_for >= 1500 ? it != unreachable.end() && it->second == silent_for
                                              : it == unreachable.end();
        if (!right) ++wrong_silent;
      }
    }
  }
};

// Pins: with half of 1,000 peers silent from the start (powered off), every
// peer that answers is reached and never reported unreachable, from the
// first peer timeout on; the silent ones are reported unreachable for exactly
// as long as they have been silent. Peer timeout 1.5 s: checks every 500 ms.
TEST(PeerChecksTest, SilentPeersDoNotMakeAnsweringPeersUnreachable) {
  const int n = 1000;
  LaneSim sim(n, 1500, PeerCheckTuning{});
  auto answering = [](int i) { return i % 2 == 0; };
  for (int i = 1; i <= n; ++i) sim.setAnswers(i, answering(i));
  Judge judge;
  sim.runUntil(20'000, [&] { judge(sim, n, answering, 1500); });
  EXPECT_EQ(judge.wrong_answering, 0);
  EXPECT_EQ(judge.wrong_silent, 0);
}

// Pins: half of 1,000 answering peers go silent at once (half the cluster
// powered off): the other half stays reached without a gap while the live
// lane finds out which went silent; the silent ones' unreachable durations
// run from their last answers. When they answer again, all are reached
// within one sweep of the silent lane (500 peers x 500 ms / 16 threads ≈
// 16 s).
TEST(PeerChecksTest, HalfTheClusterGoesSilentAtOnce) {
  const int n = 1000;
  LaneSim sim(n, 1500, PeerCheckTuning{});
  Judge judge;
  sim.runUntil(10'000, [&] { judge(sim, n, [](int) { return true; }, 1500); });
  for (int i = 1; i <= n; i += 2) sim.setAnswers(i, false);
  auto answering = [](int i) { return i % 2 == 0; };
  sim.runUntil(30'000, [&] { judge(sim, n, answering, 0); });
  EXPECT_EQ(judge.wrong_answering, 0);
  EXPECT_EQ(judge.wrong_silent, 0);
  for (int i = 1; i <= n; i += 2) {
    EXPECT_GE(sim.lastAnswer(i), 9'000);
    EXPECT_LT(sim.lastAnswer(i), 10'000);
  }

  for (int i = 1; i <= n; i += 2) sim.setAnswers(i, true);
  sim.runUntil(30'000 + 17'000, [] {});
  EXPECT_EQ(sim.checks().reachable(sim.now()).size(), size_t(n));
  EXPECT_TRUE(sim.checks().unreachable(sim.now()).empty());
}

// Pins that the test above can fail: with the live lane's connect timeout as
// long as the whole check (no short connect), finding the 500 silent peers
// holds the live threads for 500 x 500 ms / 16 ≈ 16 s, and answering peers
// queued behind them are reported unreachable.
TEST(PeerChecksTest, WithoutTheShortConnectAnsweringPeersWouldStarve) {
  const int n = 1000;
  LaneSim sim(n, 1500, PeerCheckTuning{16, 500, 16});
  sim.runUntil(10'000, [] {});
  for (int i = 1; i <= n; i += 2) sim.setAnswers(i, false);
  Judge judge;
  sim.runUntil(30'000, [&] { judge(sim, n, [](int i) { return i % 2 == 0; }, 0); });
  EXPECT_GT(judge.wrong_answering, 0);
}

}  // namespace
}  // namespace tw
