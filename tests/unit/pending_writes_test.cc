// PendingWrites (controller/pending_writes.h): failed whole-record writes,
// one per record, written again oldest first.
#include "controller/pending_writes.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace tw {
namespace {

// Pins: a later failure of the same record replaces the earlier one in its
// place; a later success drops it; a rewrite stops at the first failure and
// keeps it and the rest.
TEST(PendingWritesTest, OnePerRecordOldestFirstStopsAtTheFirstFailure) {
  auto store = Store::open(":memory:");
  ASSERT_TRUE(store.isOk());
  PendingWrites p;
  std::vector<std::string> sent;
  auto write = [&](std::string what, bool ok) {
    return [&sent, what, ok](Store&) {
      sent.push_back(what);
      return ok ? Status::ok() : unavailable("etcd out of reach");
    };
  };
  p.failed("vm/a", write("a1", true));
  p.failed("host/h1", write("h1", false));
  p.failed("vm/b", write("b1", true));
  p.failed("vm/a", write("a2", true));  // newer state of the same record
  EXPECT_EQ(p.keys(), (std::vector<std::string>{"vm/a", "host/h1", "vm/b"}));
  Status s = p.rewrite(**store);
  EXPECT_EQ(s.code(), Code::kUnavailable);
  EXPECT_EQ(sent, (std::vector<std::string>{"a2", "h1"}));
  EXPECT_EQ(p.keys(), (std::vector<std::string>{"host/h1", "vm/b"}));
  p.written("host/h1");  // written by a later step
  sent.clear();
  EXPECT_TRUE(p.rewrite(**store).isOk());
  EXPECT_EQ(sent, (std::vector<std::string>{"b1"}));
  EXPECT_TRUE(p.empty());
}

}  // namespace
}  // namespace tw
