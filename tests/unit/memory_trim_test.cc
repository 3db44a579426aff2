// MemoryTrimmer (controller/memory_trim.h): freed heap memory is given back
// at most once per interval and only when enough of it is free.
// Hermetic: fake free-bytes and trim functions, times passed in.
#include <gtest/gtest.h>

#include "controller/memory_trim.h"

namespace tw {
namespace {

// Pins: the first call only starts the interval; a trim happens when the
// interval passed and more than the threshold is free, and the next one
// waits a whole interval again.
TEST(MemoryTrimmerTest, TrimsOncePerIntervalWhenEnoughIsFree) {
  size_t free_bytes = 100;
  int trims = 0;
  MemoryTrimmer t(60000, 50, [&] { return free_bytes; }, [&] { ++trims; });
  EXPECT_FALSE(t.runOnce(1000));
  EXPECT_EQ(t.dueMs(), 61000);
  EXPECT_FALSE(t.runOnce(60999));
  EXPECT_EQ(trims, 0);
  EXPECT_TRUE(t.runOnce(61000));
  EXPECT_EQ(trims, 1);
  EXPECT_EQ(t.dueMs(), 121000);
  EXPECT_FALSE(t.runOnce(61001));
  EXPECT_TRUE(t.runOnce(121500));
  EXPECT_EQ(trims, 2);
  EXPECT_EQ(t.trims(), 2);
}

// Pins: with no more than the threshold free (a controller at rest) nothing
// is trimmed, and the interval still moves on.
TEST(MemoryTrimmerTest, LittleFreeMemoryIsNotTrimmed) {
  size_t free_bytes = 50;
  int trims = 0;
  MemoryTrimmer t(1000, 50, [&] { return free_bytes; }, [&] { ++trims; });
  t.runOnce(0);
  EXPECT_FALSE(t.runOnce(1000));
  EXPECT_EQ(trims, 0);
  EXPECT_EQ(t.dueMs(), 2000);
  free_bytes = 51;
  EXPECT_TRUE(t.runOnce(2000));
  EXPECT_EQ(trims, 1);
}

// Pins: the real allocator's trimmer runs (glibc's mallinfo2/malloc_trim).
TEST(MemoryTrimmerTest, ProcessAllocatorTrims) {
  MemoryTrimmer t(1, 0);
  t.runOnce(0);
  EXPECT_TRUE(t.runOnce(1) || t.trims() == 0);  // nothing free at all is possible
}

}  // namespace
}  // namespace tw
