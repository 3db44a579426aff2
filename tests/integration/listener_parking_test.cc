// GuardedHttpServer's parked connections (http_guard.h, issue #16), on real
// loopback sockets with a listener of 2 admitted connections: kept-alive
// connections and deferred answers wait without a thread, idle parked ones
// are closed after the keep-alive timeout, and parked_max is a bound.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "controller/http_guard.h"

namespace tw {
namespace {

using Steady = std::chrono::steady_clock;

int connectTo(int port) {
  int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(static_cast<uint16_t>(port));
  to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(s, reinterpret_cast<sockaddr*>(&to), sizeof(to)) != 0) {
    ::close(s);
    return -1;
  }
  return s;
}

// Sends a kept-alive GET and reads its answer (Content-Length body); "" on error.
std::string get(int s, const std::string& path, int timeout_ms = 3000) {
  std::string req = "GET " + path + " HTTP/1.1\r\nHost: x\r\n\r\n";
  if (::send(s, req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size())) return "";
  std::string in;
  char buf[4096];
  auto deadline = Steady::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    size_t end = in.find("\r\n\r\n");
    if (end != std::string::npos) {
      size_t cl = in.find("Content-Length: ");
      size_t want = cl == std::string::npos ? 0 : std::stoul(in.substr(cl + 16));
      if (in.size() >= end + 4 + want) return in;
    }
    int left = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Steady::now()).count());
    pollfd p{s, POLLIN, 0};
    if (left <= 0 || ::poll(&p, 1, left) != 1) return "";
    ssize_t n = ::recv(s, buf, sizeof(buf), 0);
    if (n <= 0) return "";
    in.append(buf, static_cast<size_t>(n));
  }
}

bool closedByPeer(int s, int timeout_ms) {
  pollfd p{s, POLLIN, 0};
  char c;
  return ::poll(&p, 1, timeout_ms) == 1 && ::recv(s, &c, 1, MSG_DONTWAIT) <= 0;
}

class ListenerParkingTest : public ::testing::Test {
 protected:
  void start(ListenerLimits limits) {
    server_ = std::make_unique<GuardedHttpServer>("test", limits);
    server_->handlers().Get("/x", [this](const httplib::Request& req, httplib::Response& res) {
      server_->requestRead(req);
      res.set_content("{\"ok\":true}", "application/json");
    });
    server_->handlers().Get("/poll", [this](const httplib::Request& req, httplib::Response& res) {
      server_->requestRead(req);
      uint64_t ticket = server_->defer(req);
      if (ticket == 0) return res.set_content("{\"now\":true}", "application/json");
      std::lock_guard<std::mutex> lock(mu_);
      tickets_.push_back(ticket);
    });
    port_ = server_->bind_to_any_port("127.0.0.1");
    ASSERT_GT(port_, 0);
    thread_ = std::thread([this] { server_->listen_after_bind(); });
  }
  void TearDown() override {
    for (int s : socks_) ::close(s);
    if (server_) server_->stop();
    if (thread_.joinable()) thread_.join();
  }
  // Waits (bounded) until `cond` holds on the listener's stats.
  bool waitFor(const std::function<bool(const ListenerStats&)>& cond) {
    for (int i = 0; i < 300; ++i) {
      if (cond(server_->stats())) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  }

  std::unique_ptr<GuardedHttpServer> server_;
  std::thread thread_;
  int port_ = 0;
  std::vector<int> socks_;
  std::mutex mu_;
  std::vector<uint64_t> tickets_;
};

// Pins: with room for 2 connections on threads, 20 kept-alive connections
// are all served and stay open (parked, no thread); each serves a second
// request; idle, they are closed after keep_alive_timeout_s (1 s).
TEST_F(ListenerParkingTest, KeptAliveConnectionsWaitWithoutAThreadAndIdleOut) {
  start(ListenerLimits{4, 32, 2, 2000, 100, 1, 2000});
  for (int i = 0; i < 20; ++i) {
    int s = connectTo(port_);
    ASSERT_GE(s, 0);
    socks_.push_back(s);
    ASSERT_EQ(get(s, "/x").rfind("HTTP/1.1 200", 0), 0u) << "connection " << i;
  }
  EXPECT_TRUE(waitFor([](const ListenerStats& st) { return st.parked == 20 && st.open == 0; }))
      << server_->stats().parked << " parked, " << server_->stats().open << " open";
  for (int s : socks_) EXPECT_EQ(get(s, "/x").rfind("HTTP/1.1 200", 0), 0u);
  EXPECT_EQ(server_->stats().refused_total, 0);
  // Idle for the keep-alive timeout: closed.
  EXPECT_TRUE(waitFor([](const ListenerStats& st) { return st.idle_closed >= 20 && st.parked == 0; }));
  for (int s : socks_) EXPECT_TRUE(closedByPeer(s, 1000));
}

// Pins: 10 deferred answers (long polls) hold no thread (2 admitted at a
// time), are written by answerDeferred() from another thread, and their
// connections then serve their next request.
TEST_F(ListenerParkingTest, DeferredAnswersWaitWithoutAThread) {
  start(ListenerLimits{4, 32, 2, 2000, 100, 5, 2000});
  std::vector<std::thread> clients;
  std::vector<std::string> answers(10);
  for (int i = 0; i < 10; ++i) {
    int s = connectTo(port_);
    ASSERT_GE(s, 0);
    socks_.push_back(s);
    clients.emplace_back([&, i, s] {
      answers[static_cast<size_t>(i)] = get(s, "/poll", 5000);
      if (!answers[static_cast<size_t>(i)].empty()) answers[static_cast<size_t>(i)] += get(s, "/x");
    });
    // One at a time: a connection still waiting for its request when two
    // others are admitted would be evicted (no credential), by design.
    EXPECT_TRUE(waitFor([i](const ListenerStats& st) { return st.deferred == i + 1 && st.parked == i + 1; }))
        << server_->stats().deferred << " deferred, " << server_->stats().parked << " parked";
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (uint64_t t : tickets_) server_->answerDeferred(t, 200, "{\"later\":true}");
  }
  for (auto& c : clients) c.join();
  for (const auto& a : answers) {
    EXPECT_EQ(a.rfind("HTTP/1.1 200 OK", 0), 0u) << a;
    EXPECT_NE(a.find("{\"later\":true}"), std::string::npos) << a;
    EXPECT_NE(a.find("{\"ok\":true}"), std::string::npos) << a;  // the next request on it
  }
}

// Pins: parked_max bounds parked connections: at 3, a 4th connection that
// would park closes the oldest parked one without a credential.
TEST_F(ListenerParkingTest, ParkedMaxClosesTheOldestUnauthenticated) {
  ListenerLimits limits{4, 32, 2, 2000, 100, 5, 2000};
  limits.parked_max = 3;
  start(limits);
  for (int i = 0; i < 4; ++i) {
    int s = connectTo(port_);
    ASSERT_GE(s, 0);
    socks_.push_back(s);
    ASSERT_EQ(get(s, "/x").rfind("HTTP/1.1 200", 0), 0u);
    ASSERT_TRUE(waitFor([i](const ListenerStats& st) { return st.parked == std::min(i + 1, 3); }));
  }
  // The 4th is parked after its answer was written: wait for it.
  EXPECT_TRUE(waitFor([](const ListenerStats& st) { return st.evicted == 1 && st.parked == 3; }))
      << server_->stats().evicted << " evicted";
  EXPECT_TRUE(closedByPeer(socks_[0], 1000));
  EXPECT_EQ(get(socks_[3], "/x").rfind("HTTP/1.1 200", 0), 0u);
}

}  // namespace
}  // namespace tw
