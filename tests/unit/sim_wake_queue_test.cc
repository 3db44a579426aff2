// The simulator's wake scheduler (sim/wake_queue.h): which hosts a step
// looks at, in index order, and when a sleeping host comes up again.
#include <gtest/gtest.h>

#include <vector>

#include "sim/wake_queue.h"

namespace tw::sim {
namespace {

// The ready hosts from `from` on, in the order a pass visits them.
std::vector<size_t> readyHosts(const WakeQueue& q, size_t from = 0) {
  std::vector<size_t> out;
  for (size_t h = q.nextReady(from); h != WakeQueue::kNone; h = q.nextReady(h + 1)) {
    out.push_back(h);
  }
  return out;
}

// Pins that a new queue has every host ready (the first step looks at all).
TEST(SimWakeQueueTest, StartsWithEveryHostReady) {
  WakeQueue q(3);
  EXPECT_EQ(readyHosts(q), (std::vector<size_t>{0, 1, 2}));
  EXPECT_EQ(WakeQueue(0).nextReady(0), WakeQueue::kNone);
}

// Pins that a host scheduled later sleeps until its time, and one scheduled
// at or before now stays ready (it still has work in this step).
TEST(SimWakeQueueTest, SleepsUntilItsTime) {
  WakeQueue q(3);
  q.schedule(0, 50, 10);
  q.schedule(1, 10, 10);
  q.schedule(2, WakeQueue::kNever, 10);
  EXPECT_EQ(readyHosts(q), (std::vector<size_t>{1}));
  EXPECT_EQ(q.wakeAt(0), 50);
  q.advance(40);
  EXPECT_EQ(readyHosts(q), (std::vector<size_t>{1}));
  q.advance(50);
  EXPECT_EQ(readyHosts(q), (std::vector<size_t>{0, 1}));
  q.advance(1'000'000);
  EXPECT_FALSE(q.ready(2));  // kNever: only a wake() brings it back
  q.wake(2);
  EXPECT_EQ(readyHosts(q), (std::vector<size_t>{0, 1, 2}));
}

// Pins that a later schedule replaces an earlier one: the old time is stale
// and wakes nothing.
TEST(SimWakeQueueTest, LaterScheduleReplacesTheEarlierTime) {
  WakeQueue q(1);
  q.schedule(0, 30, 0);
  q.wake(0);
  q.schedule(0, 90, 20);
  q.advance(30);
  EXPECT_FALSE(q.ready(0));
  q.advance(89);
  EXPECT_FALSE(q.ready(0));
  q.advance(90);
  EXPECT_TRUE(q.ready(0));
}

// Pins that a host woken during a pass is visited in the same pass when it
// comes after the current one, and only in the next pass when before it
// (as the simulator's host-by-host order has it).
TEST(SimWakeQueueTest, WakeDuringAPassKeepsIndexOrder) {
  WakeQueue q(130);
  for (size_t h = 0; h < 130; ++h) q.schedule(h, WakeQueue::kNever, 0);
  q.wake(64);
  std::vector<size_t> visited;
  for (size_t h = q.nextReady(0); h != WakeQueue::kNone; h = q.nextReady(h + 1)) {
    visited.push_back(h);
    q.schedule(h, WakeQueue::kNever, 0);
    if (h == 64) {
      q.wake(3);    // before: next pass
      q.wake(129);  // after, in another word: this pass
    }
  }
  EXPECT_EQ(visited, (std::vector<size_t>{64, 129}));
  EXPECT_EQ(readyHosts(q), (std::vector<size_t>{3}));
}

// Pins wakeAll() (a script command may touch any host).
TEST(SimWakeQueueTest, WakeAllReadiesEveryHost) {
  WakeQueue q(70);
  for (size_t h = 0; h < 70; ++h) q.schedule(h, 1000 + static_cast<Millis>(h), 0);
  EXPECT_EQ(q.nextReady(0), WakeQueue::kNone);
  q.wakeAll();
  EXPECT_EQ(readyHosts(q).size(), 70U);
  EXPECT_EQ(readyHosts(q, 69), (std::vector<size_t>{69}));
}

}  // namespace
}  // namespace tw::sim
