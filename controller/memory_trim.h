// Giving freed heap memory back to the system (issue #16: under 300 MiB of
// resident memory at 1,000 hosts and 20,000 VMs).
//
// Measured (bench/scale --hosts 1000 --serve, glibc malloc_info through gdb):
// of 291 MiB resident, 110 MiB were free chunks inside glibc's arenas that it
// never returned: what the convergence's peaks (loop answers with the whole
// peer list, placement, JSON trees of full reports) freed again stays
// resident, because free chunks between used ones are not at an arena's top
// and glibc trims only the top. malloc_trim(0) gives the pages inside free
// chunks back (madvise(MADV_DONTNEED)): 292 -> 200 MiB on that controller.
//
// MemoryTrimmer calls the trim function at most once per `every_ms`, and only
// when more than `min_free_bytes` are free in the arenas (mallinfo2: cheap, a
// walk of the arenas' counters): a controller at rest pays nothing. What a
// trim costs: a walk of every free chunk under each arena's lock (printed by
// bench/scale's note in README, "Memory").
//
// Threads: runOnce() on one thread (MemoryTrimThread's).
#pragma once

#include <condition_variable>
#include <cstddef>
#include <functional>
#include <mutex>
#include <thread>

#include "tw/clock.h"

namespace tw {

class MemoryTrimmer {
 public:
  // Free bytes the allocator holds (glibc: mallinfo2().fordblks).
  using FreeBytes = std::function<size_t()>;
  // Gives free memory back (glibc: malloc_trim(0)).
  using Trim = std::function<void()>;

  // The process's allocator (glibc).
  MemoryTrimmer(Millis every_ms, size_t min_free_bytes);
  // REQUIRES: every_ms > 0. For tests: any free-bytes and trim functions.
  MemoryTrimmer(Millis every_ms, size_t min_free_bytes, FreeBytes free_bytes, Trim trim);

  // Trims when due (the first call only starts the interval) and enough is
  // free. Returns whether it trimmed.
  bool runOnce(Millis now_ms);
  // When runOnce() is next due.
  Millis dueMs() const { return due_ms_; }
  int64_t trims() const { return trims_; }

 private:
  const Millis every_ms_;
  const size_t min_free_bytes_;
  FreeBytes free_bytes_;
  Trim trim_;
  Millis due_ms_ = -1;  // -1: runOnce() not called yet
  int64_t trims_ = 0;
};

// Runs a MemoryTrimmer on a thread of its own, on the system clock.
class MemoryTrimThread {
 public:
  explicit MemoryTrimThread(MemoryTrimmer& trimmer) : trimmer_(trimmer) {}
  ~MemoryTrimThread() { stop(); }
  void start();
  void stop();

 private:
  MemoryTrimmer& trimmer_;
  std::thread thread_;
  std::mutex mu_;  // guards stopping_
  std::condition_variable cv_;
  bool stopping_ = false;
};

}  // namespace tw
