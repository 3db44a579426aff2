// The heartbeat counters of /metrics (controller/heartbeat_counters.h).
#include <gtest/gtest.h>

#include "controller/heartbeat_counters.h"

namespace tw {
namespace {

// Pins: one Prometheus line per path, each with its own count, every path
// present from the start (a rate over a missing series is no rate).
TEST(HeartbeatCountersTest, OneLinePerPath) {
  HeartbeatCounters c;
  c.count(HeartbeatPath::kFast);
  c.count(HeartbeatPath::kFast);
  c.count(HeartbeatPath::kRefused);
  const std::string text = c.metricsText();
  EXPECT_NE(text.find("# TYPE tierwarden_heartbeats_total counter\n"), std::string::npos);
  EXPECT_NE(text.find("tierwarden_heartbeats_total{path=\"fast\"} 2\n"), std::string::npos);
  EXPECT_NE(text.find("tierwarden_heartbeats_total{path=\"loop\"} 0\n"), std::string::npos);
  EXPECT_NE(text.find("tierwarden_heartbeats_total{path=\"published\"} 0\n"), std::string::npos);
  EXPECT_NE(text.find("tierwarden_heartbeats_total{path=\"follower\"} 0\n"), std::string::npos);
  EXPECT_NE(text.find("tierwarden_heartbeats_total{path=\"report_wanted\"} 0\n"), std::string::npos);
  EXPECT_NE(text.find("tierwarden_heartbeats_total{path=\"refused\"} 1\n"), std::string::npos);
  EXPECT_EQ(c.get(HeartbeatPath::kFast), 2);
}

}  // namespace
}  // namespace tw
