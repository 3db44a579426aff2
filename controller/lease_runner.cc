#include "controller/lease_runner.h"

#include <chrono>
#include <utility>

#include "tw/clock.h"

namespace tw {

LeaseRunner::LeaseRunner(LeaderLease& lease, std::function<void()> on_term_lost, bool stop_after_loss)
    : lease_(lease), on_term_lost_(std::move(on_term_lost)), stop_after_loss_(stop_after_loss) {}

LeaseRunner::~LeaseRunner() { stop(); }

void LeaseRunner::start() { thread_ = std::thread([this] { run(); }); }

void LeaseRunner::stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void LeaseRunner::run() {
  int64_t losses = lease_.losses();
  for (;;) {
    Millis next = lease_.runOnce();
    if (lease_.losses() != losses) {
      losses = lease_.losses();
      if (on_term_lost_) on_term_lost_();
      if (stop_after_loss_) return;
    }
    Millis wait = next - SteadyClock::instance().nowMs();
    std::unique_lock<std::mutex> lock(mu_);
    if (wait > 0) cv_.wait_for(lock, std::chrono::milliseconds(wait), [this] { return stopping_; });
    if (stopping_) return;
  }
}

}  // namespace tw
