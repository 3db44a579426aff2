// EventRetention: the controller's background pruning of the event log
// (issue #16). Real SQLite in memory, manual clock.
#include "controller/event_retention.h"

#include <gtest/gtest.h>

#include "tw/clock.h"
#include "tw/store.h"

namespace tw {
namespace {

// Pins: no pass before a minute has gone by; then events older than the
// retention go, and a full batch makes the next pass due at once (a backlog
// drains tick by tick, kBatchRows at a time).
TEST(EventRetentionTest, PrunesOldEventsOnceAMinuteInBatches) {
  auto opened = Store::open(":memory:");
  ASSERT_TRUE(opened.isOk());
  std::unique_ptr<Store> store = std::move(opened).value();
  ManualClock clock(0);
  const int total = EventRetention::kBatchRows + 5;
  ASSERT_TRUE(store->transaction([&]() -> Status {
    for (int i = 0; i < total; ++i) {
      EventRecord e;
      e.t_ms = i % 2;  // all at the start
      e.level = "info";
      e.kind = "vm.placed";
      e.subject = "vm/web-1";
      e.message = "placed";
      TW_RETURN_IF_ERROR(store->appendEvent(e).status());
    }
    return Status::ok();
  }).isOk());
  ClusterSettings settings;
  settings.event_retention_ms = 3600 * 1000;
  EventRetention retention(*store, clock);
  clock.set(2 * 3600 * 1000);
  retention.maybePrune(settings);  // starts the interval
  EXPECT_EQ(*store->eventCount(), total);
  clock.advance(EventRetention::kIntervalMs);
  retention.maybePrune(settings);
  EXPECT_EQ(*store->eventCount(), 5);
  EXPECT_EQ(retention.prunedTotal(), EventRetention::kBatchRows);
  retention.maybePrune(settings);  // due again at once: the rest
  EXPECT_EQ(*store->eventCount(), 0);
  EXPECT_EQ(retention.prunedTotal(), total);
}

// Pins: the row cap holds even when every event is recent.
TEST(EventRetentionTest, KeepsAtMostTheRowCap) {
  auto opened = Store::open(":memory:");
  ASSERT_TRUE(opened.isOk());
  std::unique_ptr<Store> store = std::move(opened).value();
  ManualClock clock(0);
  ClusterSettings settings;
  settings.event_retention_rows = 1000;
  for (int i = 0; i < 1200; ++i) {
    EventRecord e;
    e.t_ms = 0;
    e.level = "info";
    e.kind = "k";
    e.subject = "s";
    e.message = "m";
    ASSERT_TRUE(store->appendEvent(e).isOk());
  }
  EventRetention retention(*store, clock);
  retention.maybePrune(settings);
  clock.advance(EventRetention::kIntervalMs);
  retention.maybePrune(settings);
  EXPECT_EQ(*store->eventCount(), 1000);
  auto first = store->eventsSince(0, 1);
  ASSERT_TRUE(first.isOk());
  EXPECT_EQ(first->front().id, 201);  // the newest 1,000 stay
}

}  // namespace
}  // namespace tw
