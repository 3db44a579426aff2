// Event log retention (cluster.event_retention, issue #16): the controller's
// loop calls maybePrune() every tick; at most once a minute (of its clock) it
// removes a bounded batch of the oldest events that are older than the
// retention or beyond its row cap, so that a big backlog drains over a few
// passes and no tick stalls on it.
//
// Not thread-safe: called on the controller's loop thread, which owns the Store.
#pragma once

#include <cstdint>

#include "tw/clock.h"
#include "tw/model.h"
#include "tw/store.h"

namespace tw {

class EventRetention {
 public:
  static constexpr Millis kIntervalMs = 60000;  // between passes
  static constexpr int kBatchRows = 20000;      // at most per pass

  // REQUIRES: store and clock outlive this object.
  EventRetention(Store& store, Clock& clock) : store_(store), clock_(clock) {}

  // Prunes when a pass is due (the first call starts the interval). A full
  // batch makes the next pass due at once (the backlog drains tick by tick).
  // Errors are logged, not returned: retention never stops the loop.
  void maybePrune(const ClusterSettings& settings);

  int64_t prunedTotal() const { return pruned_total_; }

 private:
  Store& store_;
  Clock& clock_;
  Millis next_ms_ = -1;
  int64_t pruned_total_ = 0;
};

}  // namespace tw
