// Time goes through this interface only. Only SystemClock reads the wall clock
// or sleeps; tests and the simulator use ManualClock and step the world.
#pragma once

#include <cstdint>

namespace tw {

// Milliseconds. Absolute times are milliseconds since the Unix epoch for
// SystemClock and since the start of the run for ManualClock.
using Millis = int64_t;

class Clock {
 public:
  virtual ~Clock() = default;
  virtual Millis nowMs() const = 0;
};

class SystemClock final : public Clock {
 public:
  Millis nowMs() const override;
  static SystemClock& instance();
};

// A monotonic clock (std::chrono::steady_clock): never jumps with NTP or an
// operator's date command. For deadlines that must hold against real time,
// such as the leader lease (controller/leader_lease.h). Its zero is arbitrary
// (boot time): use it for durations, never for timestamps shown or stored.
class SteadyClock final : public Clock {
 public:
  Millis nowMs() const override;
  static SteadyClock& instance();
};

// A clock that moves only when told. Not thread-safe: one thread steps it.
class ManualClock final : public Clock {
 public:
  explicit ManualClock(Millis start = 0) : now_(start) {}
  Millis nowMs() const override { return now_; }
  void advance(Millis delta) { now_ += delta; }
  void set(Millis t) { now_ = t; }

 private:
  Millis now_;
};

}  // namespace tw
