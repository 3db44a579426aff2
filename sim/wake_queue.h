// WakeQueue: which simulated hosts the simulator must look at in a step
// (issue #16: work follows change, not the number of hosts).
//
// Every host is either *ready* (looked at in every pass of the current step,
// in index order, until it says it has nothing left to do now) or asleep
// until a time: the earliest instant at which it could have something to do
// on its own (a heartbeat, a lease judgement, a watchdog pet, a restart, a
// health probe). Whatever reaches a host from outside (a domain event, a
// pushed assignment set, a script command) wakes it at once.
//
// A host looked at too early is harmless (the simulator finds nothing to do,
// as it did when it looked at every host on every step); a host looked at
// too late would change the run. So a wake time is a lower bound, and a
// caller that cannot tell wakes the host now.
//
// Ready hosts are a bitmap (one pass is O(hosts / 64) plus the ready ones);
// sleeping ones sit in a min-heap keyed by wake time, with stale entries
// skipped when they come up (a host's later schedule() replaces its time).
// Single-threaded, like the simulation.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <queue>
#include <utility>
#include <vector>

#include "tw/clock.h"

namespace tw::sim {

class WakeQueue {
 public:
  static constexpr size_t kNone = static_cast<size_t>(-1);
  static constexpr Millis kNever = std::numeric_limits<Millis>::max();

  // Hosts 0..hosts-1, all ready.
  explicit WakeQueue(size_t hosts);

  size_t size() const { return wake_at_.size(); }

  // Host h has something to do now: ready until schedule() puts it to sleep.
  // REQUIRES: h < size().
  void wake(size_t h);
  void wakeAll();

  // Host h, just looked at, has nothing to do before `at` (kNever: nothing
  // until something wakes it). At or before `now`: it stays ready.
  void schedule(size_t h, Millis at, Millis now);

  // Makes ready every sleeping host whose time has come (at <= now).
  void advance(Millis now);

  // The first ready host with index >= from, or kNone.
  size_t nextReady(size_t from) const;
  bool ready(size_t h) const { return (bits_[h / 64] >> (h % 64)) & 1U; }
  // When host h wakes on its own (kNever while ready or asleep for good).
  Millis wakeAt(size_t h) const { return ready(h) ? kNever : wake_at_[h]; }

 private:
  using Entry = std::pair<Millis, size_t>;  // (wake time, host)
  std::vector<uint64_t> bits_;              // ready hosts
  std::vector<Millis> wake_at_;             // a sleeping host's time
  std::priority_queue<Entry, std::vector<Entry>, std::greater<>> heap_;
};

}  // namespace tw::sim
