// A GuardedHttpServer (controller/http_guard.h) on a loopback port with
// three routes, for the tests of its parked and deferred connections
// (tests/unit/parked_connections_test.cc, tests/integration/
// listener_parking_test.cc): /x answers; /auth answers as for a valid
// credential; /poll defers its answer (the ticket is kept in tickets_), or
// answers {"now":true} when it cannot. Clients are loopback_http.h's.
#pragma once

#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "controller/http_guard.h"
#include "loopback_http.h"

namespace tw {

class ParkingServerTest : public ::testing::Test {
 protected:
  void start(ListenerLimits limits) {
    server_ = std::make_unique<GuardedHttpServer>("test", limits);
    auto& h = server_->handlers();
    h.Get("/x", [this](const httplib::Request& req, httplib::Response& res) {
      server_->requestRead(req);
      res.set_content("{\"ok\":true}", "application/json");
    });
    h.Get("/auth", [this](const httplib::Request& req, httplib::Response& res) {
      server_->requestRead(req);
      server_->authenticated(req);
      res.set_content("{\"ok\":true}", "application/json");
    });
    h.Get("/poll", [this](const httplib::Request& req, httplib::Response& res) {
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
  // A connection the fixture closes at the end.
  int connect() {
    int s = connectTo(port_);
    EXPECT_GE(s, 0);
    socks_.push_back(s);
    return s;
  }
  // Until `cond` holds on the listener's counters (looked at every
  // millisecond: the counters wake nobody); false after 10 s.
  bool waitFor(const std::function<bool(const ListenerStats&)>& cond) {
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!cond(server_->stats())) {
      if (std::chrono::steady_clock::now() >= give_up) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return true;
  }
  static bool ok(const std::string& answer) { return answer.rfind("HTTP/1.1 200", 0) == 0; }

  std::unique_ptr<GuardedHttpServer> server_;
  std::thread thread_;
  int port_ = 0;
  std::vector<int> socks_;
  std::mutex mu_;
  std::vector<uint64_t> tickets_;
};

}  // namespace tw
