// HttpPeerMonitor over real HTTP on the loopback: two agents' peer checks.
#include <gtest/gtest.h>
#include <httplib.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "tw/json.h"

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

int portOf(const std::string& address) { return std::stoi(address.substr(address.rfind(':') + 1)); }

// A listener that never accepts, its queue full: a connect to it does not
// complete (a powered-off host), or completes and gets no answer.
class SilentListener {
 public:
  SilentListener() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    ::listen(fd_, 0);
    socklen_t len = sizeof addr;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    for (int& c : fillers_) {
      c = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
      ::connect(c, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    }
  }
  ~SilentListener() {
    for (int c : fillers_) ::close(c);
    ::close(fd_);
  }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }

 private:
  int fd_ = -1;
  int port_ = 0;
  int fillers_[2] = {-1, -1};
};

// Pins: a monitor answers a check that asks for it (from + compact=1) with
// {"host","sees_you"} and without the list, and a check without compact=1
// (main's checkers, which send `from` too) with the full `sees` list; both
// need the token.
TEST(PeerMonitorTest, CompactAnswerOnlyWhenAsked) {
  Clock& clock = SystemClock::instance();
  HttpPeerMonitor h1("h1", "secret-token-0123456789", clock);
  HttpPeerMonitor h2("h2", "secret-token-0123456789", clock);
  ASSERT_TRUE(h1.listen("127.0.0.1:0").isOk());
  ASSERT_TRUE(h2.listen("127.0.0.1:0").isOk());
  h1.setPeers({{"h2", h2.boundAddress()}}, 900);
  h2.setPeers({{"h1", h1.boundAddress()}}, 900);
  h1.start();
  h2.start();
  ASSERT_TRUE(eventually([&] { return h1.reachable(clock.nowMs()).count("h2") == 1; }, 3000));

  httplib::Client raw("127.0.0.1", portOf(h2.boundAddress()));
  httplib::Headers auth{{"Authorization", "Bearer secret-token-0123456789"}};
  auto compact = raw.Get("/api/v1/peer/status?from=h1&compact=1", auth);
  ASSERT_TRUE(compact);
  EXPECT_EQ(compact->status, 200);
  EXPECT_EQ(compact->body, R"({"host":"h2","sees_you":true})");
  auto stranger = raw.Get("/api/v1/peer/status?from=h9&compact=1", auth);
  ASSERT_TRUE(stranger);
  EXPECT_EQ(stranger->body, R"({"host":"h2","sees_you":false})");
  auto old = raw.Get("/api/v1/peer/status?from=h1", auth);
  ASSERT_TRUE(old);
  EXPECT_EQ(old->status, 200);
  EXPECT_EQ(old->body, R"({"host":"h2","sees":["h1"]})");
  auto refused = raw.Get("/api/v1/peer/status?from=h1&compact=1");
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->status, 401);
  EXPECT_EQ(refused->body.find("sees"), std::string::npos);
  h1.stop();
  h2.stop();
}

// Pins: a peer that answers the old way (only `sees`, as agents before the
// compact answer do) counts as reached when its list names this host; the
// check asked it for the compact answer and said who asks.
TEST(PeerMonitorTest, OldStyleAnswerAccepted) {
  Clock& clock = SystemClock::instance();
  httplib::Server old;
  std::atomic<bool> asked_right{false};
  old.Get("/api/v1/peer/status", [&](const httplib::Request& req, httplib::Response& res) {
    if (req.get_param_value("from") == "h1" && req.get_param_value("compact") == "1") asked_right = true;
    res.set_content(R"({"host":"h4","sees":["h3","h1"]})", "application/json");
  });
  const int port = old.bind_to_any_port("127.0.0.1");
  std::thread serve([&] { old.listen_after_bind(); });
  HttpPeerMonitor h1("h1", "secret-token-0123456789", clock);
  ASSERT_TRUE(h1.listen("127.0.0.1:0").isOk());
  h1.setPeers({{"h4", "127.0.0.1:" + std::to_string(port)}}, 900);
  h1.start();
  EXPECT_TRUE(eventually([&] { return h1.reachable(clock.nowMs()).count("h4") == 1; }, 3000));
  EXPECT_TRUE(asked_right);
  EXPECT_TRUE(h1.unreachable(clock.nowMs()).empty());
  h1.stop();
  old.stop();
  serve.join();
}

// Pins: with most peers silent (their connects never complete, or complete
// and get no answer), the one that answers is reached and stays so on every
// look for several peer timeouts, never reported unreachable; the silent
// ones are reported unreachable.
TEST(PeerMonitorTest, SilentPeersDoNotMakeAnsweringPeersUnreachable) {
  Clock& clock = SystemClock::instance();
  const std::string token = "secret-token-0123456789";
  HttpPeerMonitor h1("h1", token, clock, PeerCheckTuning{2, 25, 2});
  HttpPeerMonitor h2("h2", token, clock);
  ASSERT_TRUE(h1.listen("127.0.0.1:0").isOk());
  ASSERT_TRUE(h2.listen("127.0.0.1:0").isOk());
  SilentListener silent;
  std::vector<PeerInfo> peers = {{"h2", h2.boundAddress()}};
  for (int i = 3; i <= 12; ++i) peers.push_back({"h" + std::to_string(i), silent.address()});
  const Millis timeout = 900;
  h1.setPeers(peers, timeout);
  h2.setPeers({{"h1", h1.boundAddress()}}, timeout);
  h1.start();
  h2.start();
  ASSERT_TRUE(eventually([&] { return h1.reachable(clock.nowMs()).count("h2") == 1; }, 3000));
  EXPECT_TRUE(eventually([&] { return h1.unreachable(clock.nowMs()).size() == 10; }, 3000));
  const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(4 * timeout);
  int looks = 0, lost = 0;
  while (std::chrono::steady_clock::now() < end) {
    const Millis now = clock.nowMs();
    lost += h1.reachable(now).count("h2") == 0 || h1.unreachable(now).count("h2") == 1;
    ++looks;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_GT(looks, 50);
  EXPECT_EQ(lost, 0);
  auto unreachable = h1.unreachable(clock.nowMs());
  EXPECT_EQ(unreachable.size(), 10u);
  for (const auto& [host, ms] : unreachable) EXPECT_GE(ms, timeout) << host;
  h1.stop();
  h2.stop();
}

}  // namespace
}  // namespace tw
