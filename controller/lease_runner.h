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
  // `on_term_lost` runs on the runner's thread, once per lost term. With
  // `stop_after_loss` the runner ends after it (the controller exits then and
  // must not win a new term on the way out); else it campaigns again.
  LeaseRunner(LeaderLease& lease, std::function<void()> on_term_lost, bool stop_after_loss = true);
  ~LeaseRunner();  // stops and joins
  void start();
  void stop();

 private:
  void run();

  LeaderLease& lease_;
  std::function<void()> on_term_lost_;
  const bool stop_after_loss_;
  std::thread thread_;
  std::mutex mu_;  // guards stopping_
  std::condition_variable cv_;
  bool stopping_ = false;
};

}  // namespace tw
