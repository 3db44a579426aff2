// ConnectionParker (controller/connection_parker.h): idle connections held
// by one epoll thread and handed back once each, readable or not. On
// socketpair()s; no sleeps: each test waits for the wakes it expects (a
// bound of 10 s only turns a hang into a failure), and an idle deadline is
// one that has passed already.
#include "controller/connection_parker.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <utility>
#include <vector>

#include "fd_count.h"
#include "reports.h"

namespace tw {
namespace {

using Steady = std::chrono::steady_clock;
using Woken = std::pair<uint64_t, bool>;  // id, readable

const auto kNever = Steady::now() + std::chrono::hours(1);

// What the parker's thread reported: wakes(id, readable) is its `wake`.
struct Wakes : Reports<Woken> {
  void operator()(uint64_t id, bool readable) { add(Woken{id, readable}); }
};

// A connected pair: `parked` is what the server side parks, `peer` the client.
struct Pair {
  Pair() {
    int fds[2];
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
    parked = fds[0];
    peer = fds[1];
  }
  ~Pair() {
    if (parked >= 0) ::close(parked);
    if (peer >= 0) ::close(peer);
  }
  Pair(const Pair&) = delete;
  Pair& operator=(const Pair&) = delete;
  void send(char c = 'x') const { EXPECT_EQ(::send(peer, &c, 1, MSG_NOSIGNAL), 1); }
  int parked = -1;
  int peer = -1;
};

bool isOpen(int fd) { return ::fcntl(fd, F_GETFD) != -1; }

class ConnectionParkerTest : public ::testing::Test {
 protected:
  Wakes wakes_;
  ConnectionParker parker_{[this](uint64_t id, bool readable) { wakes_(id, readable); }};
};

// Pins: a parked connection is handed back (readable) once when its next
// request begins to arrive, and forgotten: the parker does not read it, does
// not close it, and does not wake it again (another connection's wake,
// later, comes alone).
TEST_F(ConnectionParkerTest, ReadableConnectionIsHandedBackOnce) {
  Pair a, b;
  ASSERT_TRUE(parker_.park(1, a.parked, kNever).isOk());
  EXPECT_EQ(parker_.size(), 1u);
  a.send();
  ASSERT_TRUE(wakes_.waitFor(1));
  EXPECT_EQ(wakes_.list(), (std::vector<Woken>{{1, true}}));
  EXPECT_EQ(parker_.size(), 0u);
  EXPECT_FALSE(parker_.unpark(1));  // woken already
  ASSERT_TRUE(isOpen(a.parked));
  char c = 0;
  EXPECT_EQ(::recv(a.parked, &c, 1, MSG_DONTWAIT), 1);  // the byte is still there for the owner
  EXPECT_EQ(c, 'x');
  a.send();  // more on the forgotten connection: no wake
  ASSERT_TRUE(parker_.park(2, b.parked, kNever).isOk());
  b.send();
  ASSERT_TRUE(wakes_.waitFor(2));
  EXPECT_EQ(wakes_.list(), (std::vector<Woken>{{1, true}, {2, true}}));
}

// Pins: a peer that closes while its connection is parked wakes it readable
// (the owner's read sees the end at once and closes it); the parker holds no
// descriptor of its own for it, so once the owner closed it the process has
// as many open descriptors as before.
TEST_F(ConnectionParkerTest, PeerClosingWhileParkedIsHandedBackAndLeavesNoDescriptor) {
  const int before = openDescriptors();
  {
    Pair a;
    ASSERT_TRUE(parker_.park(7, a.parked, kNever).isOk());
    ::close(a.peer);
    a.peer = -1;
    ASSERT_TRUE(wakes_.waitFor(1));
    EXPECT_EQ(wakes_.list(), (std::vector<Woken>{{7, true}}));
    char c;
    EXPECT_EQ(::recv(a.parked, &c, 1, MSG_DONTWAIT), 0);  // the end
  }  // the owner closes it
  EXPECT_EQ(parker_.size(), 0u);
  EXPECT_EQ(openDescriptors(), before);
}

// Pins: a connection whose idle deadline passed is woken not readable (the
// owner closes it as idle); one whose deadline is ahead stays parked through
// the same sweep.
TEST_F(ConnectionParkerTest, IdleDeadlineWakesNotReadableAndSparesTheOthers) {
  Pair idle, busy;
  ASSERT_TRUE(parker_.park(1, idle.parked, Steady::now() - std::chrono::milliseconds(1)).isOk());
  ASSERT_TRUE(parker_.park(2, busy.parked, kNever).isOk());
  ASSERT_TRUE(wakes_.waitFor(1));
  EXPECT_EQ(wakes_.list(), (std::vector<Woken>{{1, false}}));
  EXPECT_EQ(parker_.size(), 1u);
  EXPECT_TRUE(isOpen(idle.parked));  // closing is the owner's
  busy.send();
  ASSERT_TRUE(wakes_.waitFor(2));
  EXPECT_EQ(wakes_.list()[1], (Woken{2, true}));
}

// Pins: unpark() forgets a connection without a wake, once; its data then
// wakes nothing.
TEST_F(ConnectionParkerTest, UnparkForgetsWithoutAWake) {
  Pair a, b;
  ASSERT_TRUE(parker_.park(1, a.parked, kNever).isOk());
  EXPECT_TRUE(parker_.unpark(1));
  EXPECT_FALSE(parker_.unpark(1));
  EXPECT_EQ(parker_.size(), 0u);
  a.send();
  ASSERT_TRUE(parker_.park(2, b.parked, kNever).isOk());
  b.send();
  ASSERT_TRUE(wakes_.waitFor(1));
  EXPECT_EQ(wakes_.list(), (std::vector<Woken>{{2, true}}));
}

// Pins: `wake` runs without the parker's lock: it may park the connection
// again (a kept-alive connection between two requests), under a new id.
TEST(ConnectionParkerWakeTest, WakeMayParkAgain) {
  Pair a;
  Wakes wakes;
  ConnectionParker* self = nullptr;
  ConnectionParker parker([&](uint64_t id, bool readable) {
    if (id == 1) {
      char c;
      EXPECT_EQ(::recv(a.parked, &c, 1, MSG_DONTWAIT), 1);  // its request, served
      EXPECT_TRUE(self->park(2, a.parked, kNever).isOk());
    }
    wakes(id, readable);
  });
  self = &parker;
  ASSERT_TRUE(parker.park(1, a.parked, kNever).isOk());
  a.send();
  ASSERT_TRUE(wakes.waitFor(1));
  EXPECT_EQ(parker.size(), 1u);
  a.send();
  ASSERT_TRUE(wakes.waitFor(2));
  EXPECT_EQ(wakes.list(), (std::vector<Woken>{{1, true}, {2, true}}));
  EXPECT_EQ(parker.size(), 0u);
}

// Pins: more connections readable at once than one epoll_wait() returns
// (256) are all handed back, each once.
TEST_F(ConnectionParkerTest, ManyReadableAtOnceAreAllHandedBack) {
  constexpr int kConns = 300;
  std::vector<std::unique_ptr<Pair>> pairs;
  for (int i = 0; i < kConns; ++i) {
    pairs.push_back(std::make_unique<Pair>());
    ASSERT_TRUE(parker_.park(static_cast<uint64_t>(i + 1), pairs.back()->parked, kNever).isOk());
  }
  for (const auto& p : pairs) p->send();
  ASSERT_TRUE(wakes_.waitFor(kConns));
  std::vector<int> seen(kConns + 1, 0);
  for (const auto& [id, readable] : wakes_.list()) {
    EXPECT_TRUE(readable) << id;
    ASSERT_LE(id, static_cast<uint64_t>(kConns));
    ++seen[id];
  }
  for (int i = 1; i <= kConns; ++i) EXPECT_EQ(seen[static_cast<size_t>(i)], 1) << i;
  EXPECT_EQ(parker_.size(), 0u);
}

// Pins: what epoll cannot watch is refused (kUnavailable) and not counted:
// the caller keeps the connection on its thread.
TEST_F(ConnectionParkerTest, UnwatchableDescriptorIsRefused) {
  EXPECT_EQ(parker_.park(1, -1, kNever).code(), Code::kUnavailable);
  const int file = ::open("/proc/self/status", O_RDONLY | O_CLOEXEC);  // epoll refuses regular files
  ASSERT_GE(file, 0);
  EXPECT_EQ(parker_.park(2, file, kNever).code(), Code::kUnavailable);
  ::close(file);
  Pair a;
  ASSERT_TRUE(parker_.park(3, a.parked, kNever).isOk());
  EXPECT_EQ(parker_.park(4, a.parked, kNever).code(), Code::kUnavailable);  // already watched
  EXPECT_EQ(parker_.size(), 1u);
}

// Pins: stop() with parked connections returns, forgets them without a wake
// (their owner closes them: the parker closed none), and refuses to park
// more; the parker's own descriptors (epoll, eventfd) go with it.
TEST(ConnectionParkerStopTest, StopForgetsParkedWithoutAWakeAndLeavesNoDescriptor) {
  const int before = openDescriptors();
  Wakes wakes;
  {
    Pair a, b;
    ConnectionParker parker([&](uint64_t id, bool readable) { wakes(id, readable); });
    ASSERT_TRUE(parker.park(1, a.parked, kNever).isOk());
    ASSERT_TRUE(parker.park(2, b.parked, Steady::now() + std::chrono::seconds(5)).isOk());
    parker.stop();
    EXPECT_EQ(parker.size(), 0u);
    EXPECT_TRUE(isOpen(a.parked));
    EXPECT_TRUE(isOpen(b.parked));
    a.send();
    EXPECT_EQ(parker.park(3, b.parked, kNever).code(), Code::kUnavailable);
    EXPECT_FALSE(parker.unpark(1));
    parker.stop();  // twice: nothing more
  }
  EXPECT_TRUE(wakes.list().empty());  // its thread ended in stop(): no wake can follow
  EXPECT_EQ(openDescriptors(), before);
}

}  // namespace
}  // namespace tw
