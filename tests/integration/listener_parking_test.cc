// GuardedHttpServer's parked connections (http_guard.h, issue #16), on real
// loopback sockets with a listener of 2 admitted connections: kept-alive
// connections and deferred answers wait without a thread, idle parked ones
// are closed after the keep-alive timeout, and parked_max is a bound.
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "../unit/parking_server.h"

namespace tw {
namespace {

class ListenerParkingTest : public ParkingServerTest {
 protected:
  // `n` connections, each served one request (then parked, kept alive).
  void openAndServe(int n) {
    for (int i = 0; i < n; ++i) {
      int s = connectTo(port_);
      ASSERT_GE(s, 0);
      socks_.push_back(s);
      ASSERT_EQ(get(s, "/x").rfind("HTTP/1.1 200", 0), 0u) << "connection " << i;
    }
  }
};

// Pins: with room for 2 connections on threads, 20 kept-alive connections
// are all served and stay open (parked, no thread); each serves a second
// request. Their keep-alive timeout (60 s) is far beyond the test: on a
// loaded machine, 20 connects and 40 requests took longer than the 1 s that
// this test once used for both this and the idle-out below, and the first
// connections idled out before the last was parked (1 failure in 25 at
// load 23): the server did what it should, the test raced it.
TEST_F(ListenerParkingTest, KeptAliveConnectionsWaitWithoutAThread) {
  start(ListenerLimits{4, 32, 2, 2000, 100, 60, 2000});
  ASSERT_NO_FATAL_FAILURE(openAndServe(20));
  EXPECT_TRUE(waitFor([](const ListenerStats& st) { return st.parked == 20 && st.open == 0; }))
      << server_->stats().parked << " parked, " << server_->stats().open << " open";
  for (int s : socks_) EXPECT_EQ(get(s, "/x").rfind("HTTP/1.1 200", 0), 0u);
  EXPECT_EQ(server_->stats().refused_total, 0);
  EXPECT_EQ(server_->stats().idle_closed, 0);
}

// Pins: parked connections idle for keep_alive_timeout_s (1 s) are closed,
// however long the machine took to park them all.
TEST_F(ListenerParkingTest, ParkedConnectionsIdleOut) {
  start(ListenerLimits{4, 32, 2, 2000, 100, 1, 2000});
  ASSERT_NO_FATAL_FAILURE(openAndServe(20));
  EXPECT_TRUE(waitFor([](const ListenerStats& st) { return st.idle_closed >= 20 && st.parked == 0; }))
      << server_->stats().idle_closed << " idle-closed, " << server_->stats().parked << " parked";
  for (int s : socks_) EXPECT_TRUE(closedByPeer(s, 1000));
  EXPECT_EQ(server_->stats().refused_total, 0);
}

// Pins: 10 deferred answers (long polls) hold no thread (2 admitted at a
// time), are written by answerDeferred() from another thread, and their
// connections then serve their next request.
TEST_F(ListenerParkingTest, DeferredAnswersWaitWithoutAThread) {
  start(ListenerLimits{4, 32, 2, 2000, 100, 5, 2000});
  std::vector<std::thread> clients;
  std::vector<std::string> answers(10);
  for (int i = 0; i < 10; ++i) {
    int s = connectTo(port_);
    ASSERT_GE(s, 0);
    socks_.push_back(s);
    clients.emplace_back([&, i, s] {
      answers[static_cast<size_t>(i)] = get(s, "/poll", 5000);
      if (!answers[static_cast<size_t>(i)].empty()) answers[static_cast<size_t>(i)] += get(s, "/x");
    });
    // One at a time: a connection still waiting for its request when two
    // others are admitted would be evicted (no credential), by design.
    EXPECT_TRUE(waitFor([i](const ListenerStats& st) { return st.deferred == i + 1 && st.parked == i + 1; }))
        << server_->stats().deferred << " deferred, " << server_->stats().parked << " parked";
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (uint64_t t : tickets_) server_->answerDeferred(t, 200, "{\"later\":true}");
  }
  for (auto& c : clients) c.join();
  for (const auto& a : answers) {
    EXPECT_EQ(a.rfind("HTTP/1.1 200 OK", 0), 0u) << a;
    EXPECT_NE(a.find("{\"later\":true}"), std::string::npos) << a;
    EXPECT_NE(a.find("{\"ok\":true}"), std::string::npos) << a;  // the next request on it
  }
}

// Pins: parked_max bounds parked connections: at 3, a 4th connection that
// would park closes the oldest parked one without a credential.
TEST_F(ListenerParkingTest, ParkedMaxClosesTheOldestUnauthenticated) {
  ListenerLimits limits{4, 32, 2, 2000, 100, 5, 2000};
  limits.parked_max = 3;
  start(limits);
  for (int i = 0; i < 4; ++i) {
    int s = connectTo(port_);
    ASSERT_GE(s, 0);
    socks_.push_back(s);
    ASSERT_EQ(get(s, "/x").rfind("HTTP/1.1 200", 0), 0u);
    ASSERT_TRUE(waitFor([i](const ListenerStats& st) { return st.parked == std::min(i + 1, 3); }));
  }
  // The 4th is parked after its answer was written: wait for it.
  EXPECT_TRUE(waitFor([](const ListenerStats& st) { return st.evicted == 1 && st.parked == 3; }))
      << server_->stats().evicted << " evicted";
  EXPECT_TRUE(closedByPeer(socks_[0], 1000));
  EXPECT_EQ(get(socks_[3], "/x").rfind("HTTP/1.1 200", 0), 0u);
}

}  // namespace
}  // namespace tw
