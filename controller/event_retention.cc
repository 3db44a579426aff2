#include "controller/event_retention.h"

#include "tw/log.h"

namespace tw {

void EventRetention::maybePrune(const ClusterSettings& settings) {
  const Millis now = clock_.nowMs();
  if (next_ms_ < 0) next_ms_ = now + kIntervalMs;
  if (now < next_ms_) return;
  Result<int64_t> removed =
      store_.pruneEvents(now - settings.event_retention_ms, settings.event_retention_rows, kBatchRows);
  if (!removed.isOk()) {
    log::warn("event log retention: {}", removed.status().toString());
    next_ms_ = now + kIntervalMs;
    return;
  }
  pruned_total_ += *removed;
  if (*removed > 0) log::info("event log retention: removed {} old events", *removed);
  next_ms_ = *removed >= kBatchRows ? now : now + kIntervalMs;
}

}  // namespace tw
