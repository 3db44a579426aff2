#include <gtest/gtest.h>

#include "tw/status.h"

// Pins: Status carries file:line:column into its text.
TEST(StatusTest, ToStringNamesLocation) {
  tw::Status s(tw::Code::kInvalidArgument, "expected an integer", {"a.yaml", 3, 7});
  EXPECT_EQ(s.toString(), "a.yaml:3:7: expected an integer");
}
