// HttpPeerMonitor over real HTTP on the loopback: two agents' peer checks.
#include <gtest/gtest.h>
#include <httplib.h>

#include <chrono>
#include <thread>

#include "agent/peer_monitor.h"

namespace tw {
namespace {

bool eventually(const std::function<bool()>& cond, int ms) {
  auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  while (std::chrono::steady_clock::now() < end) {
    if (cond()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return cond();
}

// Pins: two monitors that check each other count each other as reached
// (mutually) within a few check rounds and report nobody unreachable; when
// one stops, the other reports it unreachable after the peer timeout and no
// longer counts it; a check with the wrong token is refused (401) and never
// counts.
TEST(PeerMonitorTest, MutualReachThenLossAfterTheTimeout) {
  Clock& clock = SystemClock::instance();
  HttpPeerMonitor h1("h1", "secret-token-0123456789", clock);
  auto h2 = std::make_unique<HttpPeerMonitor>("h2", "secret-token-0123456789", clock);
  HttpPeerMonitor h3("h3", "another-token-0123456789", clock);  // wrong token
  ASSERT_TRUE(h1.listen("127.0.0.1:0").isOk());
  ASSERT_TRUE(h2->listen("127.0.0.1:0").isOk());
  ASSERT_TRUE(h3.listen("127.0.0.1:0").isOk());
  const Millis timeout = 900;
  h1.setPeers({{"h2", h2->boundAddress()}, {"h3", h3.boundAddress()}}, timeout);
  h2->setPeers({{"h1", h1.boundAddress()}}, timeout);
  h3.setPeers({{"h1", h1.boundAddress()}}, timeout);
  h1.start();
  h2->start();
  h3.start();

  EXPECT_TRUE(eventually([&] { return h1.reachable(clock.nowMs()).count("h2") == 1; }, 3000));
  EXPECT_TRUE(eventually([&] { return h2->reachable(clock.nowMs()).count("h1") == 1; }, 3000));
  EXPECT_EQ(h1.unreachable(clock.nowMs()).count("h2"), 0u);
  // h3's token is not h1's: neither answers the other.
  EXPECT_EQ(h1.reachable(clock.nowMs()).count("h3"), 0u);
  EXPECT_TRUE(eventually([&] { return h1.unreachable(clock.nowMs()).count("h3") == 1; }, 3000));

  httplib::Client raw(h1.boundAddress().substr(0, h1.boundAddress().rfind(':')),
                      std::stoi(h1.boundAddress().substr(h1.boundAddress().rfind(':') + 1)));
  auto refused = raw.Get("/api/v1/peer/status");
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->status, 401);

  h2->stop();
  h2.reset();
  EXPECT_TRUE(eventually([&] { return h1.unreachable(clock.nowMs()).count("h2") == 1; }, 3000));
  EXPECT_EQ(h1.reachable(clock.nowMs()).count("h2"), 0u);
  EXPECT_GE(h1.unreachable(clock.nowMs()).at("h2"), timeout);
  h1.stop();
  h3.stop();
}

}  // namespace
}  // namespace tw
