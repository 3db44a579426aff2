// LongPolls (controller/long_polls.h): deferred assignment long polls,
// answered by one thread when their host's set is published with a newer
// version, or when their wait ends. The controller is stepped on the test's
// thread over a ControllerService whose loop is not started (its publishes
// reach LongPolls through the service's notifier). No sleeps: each test
// waits for the answers it expects (a bound of 10 s only turns a hang into
// a failure); a wait that must end is 1 ms, one that must not is an hour.
#include "controller/long_polls.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "controller/service.h"
#include "controller_fixture.h"
#include "reports.h"

namespace tw {
namespace {

constexpr Millis kHour = 3600 * 1000;

const char* kPolicy = R"(hosts:
  - { name: h1, uri: "test:///default" }
  - { name: h2, uri: "test:///default" }
tiers:
  - { name: web, image: tiny, replicas: 2, memory: 256MiB }
)";

// One answer as LongPolls gave it, and whether the host's published set was
// newer than `after` then (what the agents' listener writes: the new set,
// or the same one when the wait ended).
struct Answered {
  uint64_t ticket = 0;
  std::string host;
  int64_t after = 0;
  bool newer = false;
  std::string peers_digest;  // the peer list the poll said its agent holds
};

class LongPollsTest : public testing_controller::ControllerFixture {
 protected:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(openController());
    service_ = std::make_unique<ControllerService>(*controller_, 100, clock_);  // its loop is not started
    ASSERT_TRUE(controller_->applyPolicy({PolicyFile{"p.yaml", kPolicy}}, false).isOk());
    settle();
    ASSERT_EQ(controller_->vm("web-1")->state, VmState::kRunning);
    polls_ = std::make_unique<LongPolls>(*service_, [this](uint64_t ticket, const std::string& host, int64_t after,
                                                                const std::string& peers_digest) {
      answered_.add(Answered{ticket, host, after, service_->assignmentsAfter(host, after), peers_digest});
    });
    polls_->start();
  }
  void TearDown() override {
    polls_.reset();
    service_.reset();
    ControllerFixture::TearDown();
  }

  // The version of `host`'s set the service published last.
  int64_t version(const std::string& host) { return controller_->assignmentsFor(host).version; }

  bool waitForAnswers(size_t n) { return answered_.waitFor(n); }
  std::vector<Answered> answered() const { return answered_.list(); }

  // A restart of `vm` (a new epoch): only its host's set changes.
  void restart(const std::string& vm) {
    ASSERT_TRUE(controller_->restartVm(vm).isOk());
    settle(2);
  }

  std::unique_ptr<ControllerService> service_;
  std::unique_ptr<LongPolls> polls_;
  Reports<Answered> answered_;
};

// Pins: a poll is answered when its host's set is published with a newer
// version, and only its own: the other host's poll, through the same pass
// of LongPolls' thread, keeps waiting.
TEST_F(LongPollsTest, AnsweredWhenItsSetChangesAndOnlyThen) {
  const std::string moved_host = controller_->vm("web-1")->host;
  const std::string other_host = moved_host == "h1" ? "h2" : "h1";
  const int64_t moved_after = version(moved_host);
  const int64_t other_after = version(other_host);
  polls_->add(1, moved_host, moved_after, kHour);
  polls_->add(2, other_host, other_after, kHour);
  EXPECT_EQ(polls_->size(), 2u);
  restart("web-1");
  ASSERT_TRUE(service_->assignmentsAfter(moved_host, moved_after));
  ASSERT_FALSE(service_->assignmentsAfter(other_host, other_after));  // the premise
  ASSERT_TRUE(waitForAnswers(1));
  const std::vector<Answered> got = answered();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].ticket, 1u);
  EXPECT_EQ(got[0].host, moved_host);
  EXPECT_EQ(got[0].after, moved_after);
  EXPECT_TRUE(got[0].newer);
  EXPECT_EQ(polls_->size(), 1u);  // ticket 2 waits on
}

// Pins: a poll whose set does not change is answered when its wait ends,
// with nothing newer than it had (the listener writes the same set again),
// and with the peer digest the poll came with (the answer leaves that list out).
TEST_F(LongPollsTest, TimesOutEmptyWhenNothingChanges) {
  const int64_t after = version("h1");
  polls_->add(5, "h1", after, 1, "0123456789abcdef");
  ASSERT_TRUE(waitForAnswers(1));
  const Answered got = answered()[0];
  EXPECT_EQ(got.ticket, 5u);
  EXPECT_EQ(got.host, "h1");
  EXPECT_EQ(got.after, after);
  EXPECT_FALSE(got.newer);
  EXPECT_EQ(got.peers_digest, "0123456789abcdef");  // answered without a list the agent holds
  EXPECT_EQ(polls_->size(), 0u);
}

// Pins: a set published before the poll was added (between the handler's
// check and add()) is not missed: the poll is answered at once, not at the
// end of its hour.
TEST_F(LongPollsTest, SetPublishedBeforeAddIsNotMissed) {
  const std::string host = controller_->vm("web-1")->host;
  const int64_t after = version(host);
  restart("web-1");
  ASSERT_TRUE(service_->assignmentsAfter(host, after));
  polls_->add(9, host, after, kHour);
  ASSERT_TRUE(waitForAnswers(1));
  EXPECT_EQ(answered()[0].ticket, 9u);
  EXPECT_TRUE(answered()[0].newer);
}

// Pins: a publish that is not newer than a poll's `after` (the agent has
// that version already) does not answer it.
TEST_F(LongPollsTest, PublishNotNewerThanThePollKeepsItWaiting) {
  const std::string host = controller_->vm("web-1")->host;
  restart("web-1");
  polls_->add(3, host, version(host), kHour);  // it has the newest
  polls_->add(4, host, version(host), 1);      // passes through the same thread after
  ASSERT_TRUE(waitForAnswers(1));
  EXPECT_EQ(answered()[0].ticket, 4u);
  EXPECT_EQ(polls_->size(), 1u);
}

// Pins: releasing the service's waiters (before the HTTP server stops)
// answers every poll at once, and every later one too.
TEST_F(LongPollsTest, ReleasedWaitersAnswerEveryPoll) {
  polls_->add(1, "h1", version("h1"), kHour);
  polls_->add(2, "h2", version("h2"), kHour);
  service_->releaseWaiters();
  ASSERT_TRUE(waitForAnswers(2));
  polls_->add(3, "h1", version("h1"), kHour);
  ASSERT_TRUE(waitForAnswers(3));
  EXPECT_EQ(polls_->size(), 0u);
}

// Pins: stop() with polls pending returns, drops them unanswered (the
// listener closes their connections), and unhooks LongPolls from the
// service: later publishes, also after LongPolls is gone, reach nothing.
TEST_F(LongPollsTest, StopDropsPendingPollsAndUnhooksFromTheService) {
  const std::string host = controller_->vm("web-1")->host;
  polls_->add(1, "h1", version("h1"), kHour);
  polls_->add(2, "h2", version("h2"), kHour);
  polls_->stop();
  EXPECT_EQ(polls_->size(), 0u);
  restart("web-1");
  polls_.reset();
  restart("web-1");  // the service's notifier is empty: no call into a destroyed LongPolls
  EXPECT_TRUE(answered().empty());
}

// Pins: start() after stop() starts nothing, and stop() twice is harmless.
TEST_F(LongPollsTest, StartAfterStopStartsNothing) {
  polls_->stop();
  polls_->start();
  polls_->add(1, "h1", version("h1"), 1);
  polls_->stop();
  EXPECT_TRUE(answered().empty());
}

}  // namespace
}  // namespace tw
