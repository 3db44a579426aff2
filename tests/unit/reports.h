// What another thread reported (a callback of a class under test), in order.
// A test waits for the count it expects: the bound (10 s) only turns a hang
// into a failure, it is no timing.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <utility>
#include <vector>

namespace tw {

template <typename T>
class Reports {
 public:
  void add(T report) {
    std::lock_guard<std::mutex> lock(mu_);
    list_.push_back(std::move(report));
    cv_.notify_all();
  }
  // Until `n` reports came; false after 10 s.
  bool waitFor(size_t n) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, std::chrono::seconds(10), [&] { return list_.size() >= n; });
  }
  std::vector<T> list() const {
    std::lock_guard<std::mutex> lock(mu_);
    return list_;
  }

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<T> list_;
};

}  // namespace tw
