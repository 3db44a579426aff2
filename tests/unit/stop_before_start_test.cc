// A server stopped at once (a test's teardown, a controller told to stop
// while it starts): ApiServer::serve() starts its parts on its own thread,
// so stop() may come before or while each part starts. GuardedHttpServer
// (http_guard.h) must then not listen forever, and EventStreamer
// (event_streamer.h) must not leave a thread or descriptors behind. No
// sleeps: a listen that must end is waited for (10 s only turn a hang into
// a failure); the race is run many times from a common start line.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <thread>

#include "controller/event_streamer.h"
#include "controller/http_guard.h"
#include "controller/service.h"
#include "controller_fixture.h"
#include "fd_count.h"

namespace tw {
namespace {

// Pins: stop() before listen_after_bind() began makes the listen return at
// once. httplib's stop() did nothing before its listen ran: the listen then
// accepted forever and ApiServerTest's join of serve() hung.
TEST(StopBeforeStartTest, ListenAfterStopReturnsAtOnce) {
  const int before = openDescriptors();
  {
    GuardedHttpServer server("test", ListenerLimits{});
    ASSERT_GT(server.bind_to_any_port("127.0.0.1"), 0);
    server.stop();
    auto listening = std::async(std::launch::async, [&] { server.listen_after_bind(); });
    const bool ended = listening.wait_for(std::chrono::seconds(10)) == std::future_status::ready;
    if (!ended) server.httplib::Server::stop();  // it runs now: ends it, so that the test can fail
    listening.wait();
    EXPECT_TRUE(ended) << "listen_after_bind() after stop() did not return";
  }
  EXPECT_EQ(openDescriptors(), before);  // the listening socket, the parker's epoll and eventfd
}

// Pins: stop() while a listen runs still ends it (what httplib's stop() did).
TEST(StopBeforeStartTest, StopEndsARunningListen) {
  GuardedHttpServer server("test", ListenerLimits{});
  ASSERT_GT(server.bind_to_any_port("127.0.0.1"), 0);
  auto listening = std::async(std::launch::async, [&] { server.listen_after_bind(); });
  while (!server.is_running()) std::this_thread::yield();
  server.stop();
  EXPECT_EQ(listening.wait_for(std::chrono::seconds(10)), std::future_status::ready);
}

class StreamerStopTest : public testing_controller::ControllerFixture {
 protected:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(openController());
    service_ = std::make_unique<ControllerService>(*controller_, 100, clock_);  // its loop is not started
  }
  void TearDown() override {
    service_.reset();
    ControllerFixture::TearDown();
  }
  std::unique_ptr<ControllerService> service_;
};

// Pins: start() on one thread and stop() on another, from a common start
// line, 300 times: each streamer ends with no thread left running (a leaked
// one aborted the process at its destruction) and no descriptor (its epoll
// and eventfd), and the service calls no streamer that is gone.
TEST_F(StreamerStopTest, StopRacingStartLeavesNothingBehind) {
  const int before = openDescriptors();
  for (int i = 0; i < 300; ++i) {
    auto streamer = std::make_unique<EventStreamer>(*service_, StreamLimits{});
    std::atomic<int> ready{0};
    std::thread starter([&] {
      ++ready;
      while (ready.load() < 2) {
      }
      streamer->start();
    });
    ++ready;
    while (ready.load() < 2) {
    }
    streamer->stop();
    starter.join();
    streamer.reset();
    service_->noteEventId(i + 1);  // the event notifier: cleared by stop()
  }
  EXPECT_EQ(openDescriptors(), before);
}

}  // namespace
}  // namespace tw
