// GuardedHttpServer's parked and deferred connections (http_guard.h) at
// their edges, on loopback: a peer that closes while parked is reaped with
// its descriptors; parked_max refuses beyond the cap (the connection to park
// is closed when every parked one showed a credential, defer() answers at
// once); stop() closes parked and deferred connections alike. The keep-alive
// timeout is 30 s, so no connection here is ever closed as idle: what closes
// one is what the test did. No sleeps for timing: the tests wait (bounded)
// for the listener's counters or for the socket's end.
#include <unistd.h>

#include <gtest/gtest.h>

#include <mutex>
#include <string>

#include "fd_count.h"
#include "parking_server.h"

namespace tw {
namespace {

// 4 threads, 32 per address, 2 admitted on threads, 2 s request deadline,
// 100 requests per connection, 30 s keep-alive, 2 s writes.
ListenerLimits limitsParking(int parked_max) {
  ListenerLimits limits{4, 32, 2, 2000, 100, 30, 2000};
  limits.parked_max = parked_max;
  return limits;
}

class ParkedConnectionsTest : public ParkingServerTest {};

// Pins: a client that closes its kept-alive connection while it is parked
// is reaped at once (not at the keep-alive timeout, not counted idle): the
// server's socket and the watchdog's dup are closed, the process is back at
// its descriptors before the connection.
TEST_F(ParkedConnectionsTest, PeerClosingWhileParkedIsReapedWithItsDescriptors) {
  start(limitsParking(0));
  const int before = openDescriptors();
  int s = connectTo(port_);
  ASSERT_GE(s, 0);
  ASSERT_TRUE(ok(get(s, "/x")));
  ASSERT_TRUE(waitFor([](const ListenerStats& st) { return st.parked == 1 && st.open == 0; }));
  EXPECT_EQ(openDescriptors(), before + 3);  // ours, the server's, its dup
  ::close(s);
  ASSERT_TRUE(waitFor([](const ListenerStats& st) { return st.parked == 0 && st.open == 0; }))
      << server_->stats().parked << " parked, " << server_->stats().open << " open";
  EXPECT_EQ(openDescriptors(), before);
  EXPECT_EQ(server_->stats().idle_closed, 0);
  EXPECT_EQ(server_->stats().parks, 1);
}

// Pins: at parked_max with every parked connection credentialed, the
// connection that would park is closed after its answer (refused_parked),
// none is evicted, and the parked ones are served on.
TEST_F(ParkedConnectionsTest, FullOfCredentialedConnectionsClosesTheOneToPark) {
  start(limitsParking(2));
  const int a = connect();
  const int b = connect();
  ASSERT_TRUE(ok(get(a, "/auth")));
  ASSERT_TRUE(waitFor([](const ListenerStats& st) { return st.parked == 1; }));
  ASSERT_TRUE(ok(get(b, "/auth")));
  ASSERT_TRUE(waitFor([](const ListenerStats& st) { return st.parked == 2; }));
  const int c = connect();
  ASSERT_TRUE(ok(get(c, "/auth")));  // answered, then not parked
  EXPECT_TRUE(closedByPeer(c, 10000));
  ASSERT_TRUE(waitFor([](const ListenerStats& st) { return st.refused_parked == 1 && st.open == 0; }));
  EXPECT_EQ(server_->stats().parked, 2);
  EXPECT_EQ(server_->stats().evicted, 0);
  EXPECT_TRUE(ok(get(a, "/x")));
  EXPECT_TRUE(ok(get(b, "/x")));
}

// Pins: at parked_max, defer() refuses (0) and the long poll is answered at
// once on its thread instead of holding a descriptor beyond the cap.
TEST_F(ParkedConnectionsTest, DeferAtTheCapAnswersAtOnce) {
  start(limitsParking(1));
  const int a = connect();
  ASSERT_TRUE(ok(get(a, "/auth")));
  ASSERT_TRUE(waitFor([](const ListenerStats& st) { return st.parked == 1; }));
  const int b = connect();
  const std::string answer = get(b, "/poll");
  EXPECT_TRUE(ok(answer)) << answer;
  EXPECT_NE(answer.find("{\"now\":true}"), std::string::npos) << answer;
  EXPECT_EQ(server_->stats().deferred, 0);
  std::lock_guard<std::mutex> lock(mu_);
  EXPECT_TRUE(tickets_.empty());
}

// Pins: stop() with a parked connection and a deferred long poll returns,
// closes both (the poll unanswered: the agent asks again elsewhere), and
// once the listener is gone the process holds no descriptor of it: no
// socket, no dup, no epoll instance or eventfd of its parker.
TEST_F(ParkedConnectionsTest, StopClosesParkedAndDeferredAndLeavesNoDescriptor) {
  const int before = openDescriptors();
  start(limitsParking(0));
  const int kept = connectTo(port_);
  const int polling = connectTo(port_);
  ASSERT_GE(kept, 0);
  ASSERT_GE(polling, 0);
  ASSERT_TRUE(ok(get(kept, "/x")));
  ASSERT_TRUE(sendGet(polling, "/poll"));
  ASSERT_TRUE(waitFor([](const ListenerStats& st) { return st.parked == 2 && st.deferred == 1; }))
      << server_->stats().parked << " parked, " << server_->stats().deferred << " deferred";
  server_->stop();
  EXPECT_TRUE(closedByPeer(kept, 10000));
  EXPECT_TRUE(closedByPeer(polling, 10000));  // nothing to read: closed unanswered
  EXPECT_EQ(server_->stats().parked, 0);
  thread_.join();
  server_.reset();
  ::close(kept);
  ::close(polling);
  EXPECT_EQ(openDescriptors(), before);
}

}  // namespace
}  // namespace tw
