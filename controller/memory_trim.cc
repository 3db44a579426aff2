#include "controller/memory_trim.h"

#include <malloc.h>

#include <algorithm>
#include <chrono>
#include <utility>

namespace tw {

MemoryTrimmer::MemoryTrimmer(Millis every_ms, size_t min_free_bytes)
    : MemoryTrimmer(
          every_ms, min_free_bytes, [] { return static_cast<size_t>(mallinfo2().fordblks); },
          [] { malloc_trim(0); }) {}

MemoryTrimmer::MemoryTrimmer(Millis every_ms, size_t min_free_bytes, FreeBytes free_bytes, Trim trim)
    : every_ms_(every_ms),
      min_free_bytes_(min_free_bytes),
      free_bytes_(std::move(free_bytes)),
      trim_(std::move(trim)) {}

bool MemoryTrimmer::runOnce(Millis now_ms) {
  if (due_ms_ < 0) {
    due_ms_ = now_ms + every_ms_;
    return false;
  }
  if (now_ms < due_ms_) return false;
  due_ms_ = now_ms + every_ms_;
  if (free_bytes_() <= min_free_bytes_) return false;
  trim_();
  ++trims_;
  return true;
}

void MemoryTrimThread::start() {
  thread_ = std::thread([this] {
    for (;;) {
      trimmer_.runOnce(SystemClock::instance().nowMs());
      std::unique_lock<std::mutex> lock(mu_);
      const Millis wait = std::max<Millis>(trimmer_.dueMs() - SystemClock::instance().nowMs(), 10);
      if (cv_.wait_for(lock, std::chrono::milliseconds(wait), [this] { return stopping_; })) break;
    }
  });
}

void MemoryTrimThread::stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

}  // namespace tw
