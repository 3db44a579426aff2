#include "tw/clock.h"

#include <chrono>

namespace tw {

// The one place that reads the wall clock.
Millis SystemClock::nowMs() const {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

SystemClock& SystemClock::instance() {
  static SystemClock clock;
  return clock;
}

}  // namespace tw
