#include "controller/service.h"

#include <chrono>

#include "tw/log.h"

namespace tw {

ControllerService::ControllerService(Controller& controller, Millis tick_ms)
    : controller_(controller), tick_ms_(tick_ms) {
  controller_.setAssignmentListener([this](const std::string& host, int64_t version) {
    std::lock_guard<std::mutex> lock(mu_);
    versions_[host] = version;
    change_cv_.notify_all();
  });
  controller_.setEventListener([this](const EventRecord& e) {
    std::lock_guard<std::mutex> lock(mu_);
    if (e.id > last_event_id_) last_event_id_ = e.id;
    change_cv_.notify_all();
  });
}

ControllerService::~ControllerService() { stop(); }

void ControllerService::start() { thread_ = std::thread([this] { loop(); }); }

void ControllerService::releaseWaiters() {
  std::lock_guard<std::mutex> lock(mu_);
  waiters_released_ = true;
  change_cv_.notify_all();
}

void ControllerService::stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    work_cv_.notify_all();
    change_cv_.notify_all();
  }
  if (thread_.joinable()) thread_.join();
}

void ControllerService::post(std::function<void()> work) {
  std::lock_guard<std::mutex> lock(mu_);
  queue_.push_back(std::move(work));
  work_cv_.notify_one();
}

void ControllerService::loop() {
  using Steady = std::chrono::steady_clock;
  auto next_tick = Steady::now();
  for (;;) {
    std::deque<std::function<void()>> work;
    {
      std::unique_lock<std::mutex> lock(mu_);
      work_cv_.wait_until(lock, next_tick, [&] { return stopping_ || !queue_.empty(); });
      if (stopping_ && queue_.empty()) return;
      work.swap(queue_);
    }
    for (auto& w : work) w();
    if (Steady::now() >= next_tick) {
      controller_.runOnce();
      next_tick = Steady::now() + std::chrono::milliseconds(tick_ms_);
    }
  }
}

AssignmentSet ControllerService::waitAssignments(const std::string& host, int64_t after,
                                                 Millis wait_ms) {
  {
    std::unique_lock<std::mutex> lock(mu_);
    change_cv_.wait_for(lock, std::chrono::milliseconds(wait_ms), [&] {
      auto it = versions_.find(host);
      return stopping_ || waiters_released_ || (it != versions_.end() && it->second > after);
    });
  }
  return call([&](Controller& c) { return c.assignmentsFor(host); });
}

bool ControllerService::stopping() {
  std::lock_guard<std::mutex> lock(mu_);
  return stopping_ || waiters_released_;
}

int64_t ControllerService::waitEvents(int64_t after, Millis wait_ms) {
  std::unique_lock<std::mutex> lock(mu_);
  change_cv_.wait_for(lock, std::chrono::milliseconds(wait_ms),
                      [&] { return stopping_ || waiters_released_ || last_event_id_ > after; });
  return last_event_id_;
}

}  // namespace tw
