// The controller daemon's threading shell: one loop thread owns the
// Controller; HTTP handler threads post work to it and wait for the answer.
// This is the real-time edge of the controller (it waits on std::chrono time);
// the logic inside Controller takes time only from its Clock.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <type_traits>

#include "controller/controller.h"

namespace tw {

class ControllerService {
 public:
  // REQUIRES: controller outlives the service; recover() already called.
  ControllerService(Controller& controller, Millis tick_ms);
  ~ControllerService();

  void start();
  // Releases every long poll and event wait at once (before the HTTP server
  // stops, so that it does not wait for them); the loop keeps serving calls.
  void releaseWaiters();
  void stop();  // joins the loop thread

  // Runs f(controller) on the loop thread and returns its result. Blocks.
  template <typename F>
  auto call(F f) -> std::invoke_result_t<F, Controller&> {
    using R = std::invoke_result_t<F, Controller&>;
    auto task = std::make_shared<std::packaged_task<R()>>([this, f]() mutable { return f(controller_); });
    auto fut = task->get_future();
    post([task] { (*task)(); });
    return fut.get();
  }

  // Long poll: the host's assignment set as soon as its version is > after,
  // or the current one after wait_ms.
  AssignmentSet waitAssignments(const std::string& host, int64_t after, Millis wait_ms);

  // Blocks until an event with id > after exists or wait_ms passes; returns
  // the newest event id known.
  int64_t waitEvents(int64_t after, Millis wait_ms);
  bool stopping();

 private:
  void post(std::function<void()> work);
  void loop();

  Controller& controller_;
  const Millis tick_ms_;
  std::thread thread_;

  std::mutex mu_;  // guards everything below
  std::condition_variable work_cv_;
  std::condition_variable change_cv_;
  std::deque<std::function<void()>> queue_;
  std::map<std::string, int64_t> versions_;  // host -> assignment version
  int64_t last_event_id_ = 0;
  bool stopping_ = false;
  bool waiters_released_ = false;
};

}  // namespace tw
