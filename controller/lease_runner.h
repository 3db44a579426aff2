// LeaseRunner: the real-time edge of LeaderLease — a thread that calls
// runOnce() when it asks to be called, and tells once when a term ends.
// Like ControllerService it waits on std::chrono time; the decisions are in
// LeaderLease, which tests step on a ManualClock.
#pragma once

#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>

#include "controller/leader_lease.h"

namespace tw {

class LeaseRunner {
 public:
  // REQUIRES: lease outlives the runner; its clock is SteadyClock.
  // `on_term_lost` runs on the runner's thread, once per lost term.
  LeaseRunner(LeaderLease& lease, std::function<void()> on_term_lost);
  ~LeaseRunner();  // stops and joins
  void start();
  void stop();

 private:
  void run();

  LeaderLease& lease_;
  std::function<void()> on_term_lost_;
  std::thread thread_;
  std::mutex mu_;  // guards stopping_
  std::condition_variable cv_;
  bool stopping_ = false;
};

}  // namespace tw
