// NetworkHealthProber and its socket probes against real local servers on
// 127.0.0.1 (ephemeral ports): a TCP listener, an httplib::Server on its own
// thread, and raw one-shot servers that answer in pieces. The verdicts are
// awaited through the prober's change callback (with a deadline), never by
// sleeping.
#include "agent/health_prober.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "agent/net_probe.h"
#include "agent/port_map.h"

namespace tw {
namespace {

using std::chrono::milliseconds;
using std::chrono::steady_clock;

// A listening TCP socket on 127.0.0.1 with an ephemeral port.
// (Or on `port`: ok() says whether it could.)
class Listener {
 public:
  explicit Listener(int port = 0) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<uint16_t>(port));
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
        ::listen(fd_, 16) != 0) {
      if (port == 0) ADD_FAILURE() << "cannot listen on 127.0.0.1";
      close();
      return;
    }
    socklen_t len = sizeof(addr);
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
  }
  ~Listener() { close(); }
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;

  bool ok() const { return fd_ >= 0; }
  int port() const { return port_; }
  int fd() const { return fd_; }
  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
  int port_ = 0;
};

// Serves one connection on its own thread with `serve(fd)`, then closes it.
// (Or listens on `port`: ok() says whether it could.)
class OneShotServer {
 public:
  explicit OneShotServer(std::function<void(int)> serve, int port = 0) : listener_(port) {
    thread_ = std::thread([this, serve = std::move(serve)] {
      int conn = ::accept(listener_.fd(), nullptr, nullptr);
      if (conn < 0) return;
      serve(conn);
      ::close(conn);
    });
  }
  ~OneShotServer() {
    ::shutdown(listener_.fd(), SHUT_RDWR);  // unblocks accept() when nobody came
    thread_.join();
  }
  bool ok() const { return listener_.ok(); }
  int port() const { return listener_.port(); }

 private:
  Listener listener_;
  std::thread thread_;
};

// Reads the request head (up to the blank line).
void readRequest(int fd) {
  std::string got;
  char buf[512];
  while (got.find("\r\n\r\n") == std::string::npos) {
    ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) return;
    got.append(buf, static_cast<size_t>(n));
  }
}

void writeAll(int fd, const std::string& s) {
  ASSERT_EQ(::send(fd, s.data(), s.size(), MSG_NOSIGNAL), static_cast<ssize_t>(s.size()));
}

HealthCheckSpec check(HealthKind kind, int failures) {
  HealthCheckSpec c;
  c.kind = kind;
  c.port = 80;
  c.path = "/health";
  c.expect_status = 200;
  c.interval_ms = 50;
  c.timeout_ms = 1000;
  c.failures = failures;
  c.grace_ms = 0;
  return c;
}

// A NetworkHealthProber whose VM "web-1" has guest port 80 at host port `port`.
class ProberFixture : public ::testing::Test {
 protected:
  // (With `more` VMs: host ports port+1... in order.)
  void startProber(int port, const std::vector<std::string>& more = {}) {
    ports_ = std::make_unique<PortMap>(port, 1 + static_cast<int>(more.size()));
    ASSERT_TRUE(ports_->assign("web-1", {80}).isOk());
    for (const std::string& vm : more) ASSERT_TRUE(ports_->assign(vm, {80}).isOk());
    prober_ = std::make_unique<NetworkHealthProber>(*ports_);
    prober_->setOnVerdictChange([this] {
      std::lock_guard<std::mutex> lock(mu_);
      ++changes_;
      cv_.notify_all();
    });
    prober_->start();
  }
  void TearDown() override {
    if (prober_) prober_->stop();
  }

  // Waits (at most 5 s) until web-1's verdict is `want`.
  bool waitFor(Health want, const HealthCheckSpec& c) {
    const auto deadline = steady_clock::now() + std::chrono::seconds(5);
    for (;;) {
      std::unique_lock<std::mutex> lock(mu_);
      const int seen = changes_;  // read before the verdict: no change is missed
      lock.unlock();
      if (prober_->health("web-1", c, 0) == want) return true;
      lock.lock();
      if (!cv_.wait_until(lock, deadline, [&] { return changes_ != seen; })) return false;
    }
  }

  std::unique_ptr<PortMap> ports_;
  std::unique_ptr<NetworkHealthProber> prober_;
  std::mutex mu_;
  std::condition_variable cv_;
  int changes_ = 0;  // guarded by mu_
};

// Pins: a TCP check of a port where something listens is healthy.
TEST_F(ProberFixture, TcpListenerIsHealthy) {
  Listener listener;
  startProber(listener.port());
  EXPECT_TRUE(waitFor(Health::kHealthy, check(HealthKind::kTcp, 3)));
  EXPECT_EQ(prober_->lastFailure("web-1"), "");
}

// Pins: a refused connection makes the VM unhealthy, not before `failures`
// checks (at interval_ms apart) have failed, with the socket error as reason.
TEST_F(ProberFixture, RefusedConnectionIsUnhealthyAfterNFailures) {
  int port = 0;
  {
    Listener gone;  // a port that nothing listens on any more
    port = gone.port();
  }
  startProber(port);
  const HealthCheckSpec c = check(HealthKind::kTcp, 3);
  const auto start = steady_clock::now();
  ASSERT_TRUE(waitFor(Health::kUnhealthy, c));
  // Three checks are two intervals apart at least (less a little: the schedule
  // is in whole milliseconds of the system clock).
  EXPECT_GE(steady_clock::now() - start, milliseconds(2 * c.interval_ms - 5));
  EXPECT_EQ(prober_->lastFailure("web-1"),
            "connecting to 127.0.0.1:" + std::to_string(port) + ": Connection refused");
}

// Pins: a port forward that accepts and closes at once (nothing behind it) is
// a failed TCP check.
TEST(NetProbeTest, ConnectionClosedAtOnceFailsTheTcpCheck) {
  OneShotServer server([](int) {});  // accept, close
  Status st = probeTcp("127.0.0.1", server.port(), 1000);
  EXPECT_EQ(st.code(), Code::kUnavailable);
  EXPECT_EQ(st.message(), "connecting to 127.0.0.1:" + std::to_string(server.port()) +
                              ": the connection was closed at once");
}

// Pins: a greeting that contains the expected text passes a tcp check with
// `expect`, and probeService takes that path when check.expect is set.
TEST(NetProbeTest, GreetingWithTheTextPasses) {
  OneShotServer server([](int fd) {
    writeAll(fd, "TIERWARDEN-DB vm=db-1 storage=ram\r\n");
    char byte = 0;
    (void)::recv(fd, &byte, 1, 0);  // stays open: the probe must not wait for a close
  });
  HealthCheckSpec c = check(HealthKind::kTcp, 1);
  c.expect = "TIERWARDEN-DB";
  const auto start = steady_clock::now();
  Status st = probeService("127.0.0.1", server.port(), c);
  EXPECT_TRUE(st.isOk()) << st.toString();
  EXPECT_LT(steady_clock::now() - start, milliseconds(c.timeout_ms / 2));
}

// Pins: probes of several VMs run at once: while the probe of a VM hangs
// (its port forward accepts, the booting guest says nothing, until a long
// timeout), another VM is probed and found healthy.
TEST_F(ProberFixture, AHangingProbeDoesNotHoldUpTheOthers) {
  std::mutex m;
  std::condition_variable cv;
  bool accepted = false, done = false;
  auto silent = [&](int) {  // accepts, says nothing until the test ends
    std::unique_lock<std::mutex> lock(m);
    accepted = true;
    cv.notify_all();
    cv.wait(lock, [&] { return done; });
  };
  // Two servers on adjacent ports (the PortMap hands out a range).
  std::unique_ptr<Listener> good;
  std::unique_ptr<OneShotServer> quiet;
  for (int attempt = 0; attempt < 50 && !quiet; ++attempt) {
    auto first = std::make_unique<Listener>();
    auto second = std::make_unique<OneShotServer>(silent, first->port() + 1);
    if (second->ok()) {
      good = std::move(first);
      quiet = std::move(second);
    }
  }
  ASSERT_TRUE(quiet) << "no two adjacent free ports on 127.0.0.1";

  startProber(good->port(), {"db-1"});  // web-1 -> good, db-1 -> quiet
  HealthCheckSpec greeting = check(HealthKind::kTcp, 1);
  greeting.expect = "TIERWARDEN-DB";
  greeting.interval_ms = greeting.timeout_ms = 60000;
  EXPECT_EQ(prober_->health("db-1", greeting, 0), Health::kUnknown);
  {
    std::unique_lock<std::mutex> lock(m);
    ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(5), [&] { return accepted; }))
        << "db-1 was not probed";
  }
  EXPECT_TRUE(waitFor(Health::kHealthy, check(HealthKind::kTcp, 1)))
      << "web-1 waited for db-1's hanging probe";
  EXPECT_EQ(prober_->health("db-1", greeting, 0), Health::kUnknown);  // still in flight
  {
    std::lock_guard<std::mutex> lock(m);
    done = true;  // the server closes: db-1's probe ends, the prober can stop
    cv.notify_all();
  }
  quiet.reset();
}

// Pins: a server that accepts and says nothing (a port forward while the
// guest boots) fails a tcp check with `expect` when the timeout runs out,
// where probeTcp would pass it.
TEST(NetProbeTest, QuietServerFailsTheGreetingCheck) {
  OneShotServer server([](int fd) {
    char byte = 0;
    (void)::recv(fd, &byte, 1, 0);  // silent until the client closes
  });
  Status st = probeTcpGreeting("127.0.0.1", server.port(), "TIERWARDEN-DB", 300);
  EXPECT_EQ(st.code(), Code::kUnavailable);
  EXPECT_EQ(st.message(), "127.0.0.1:" + std::to_string(server.port()) +
                              " sent 0 bytes in 300 ms, expected \"TIERWARDEN-DB\"");
}

// Pins: a greeting without the text that ends with a close fails at once,
// with a printable excerpt of what came.
TEST(NetProbeTest, OtherGreetingThenCloseFails) {
  OneShotServer server([](int fd) { writeAll(fd, "HELLO there\r\n"); });
  const auto start = steady_clock::now();
  Status st = probeTcpGreeting("127.0.0.1", server.port(), "TIERWARDEN-DB", 2000);
  EXPECT_LT(steady_clock::now() - start, milliseconds(1000));
  EXPECT_EQ(st.code(), Code::kUnavailable);
  EXPECT_EQ(st.message(), "127.0.0.1:" + std::to_string(server.port()) +
                              " closed after 13 bytes without \"TIERWARDEN-DB\": "
                              "\"HELLO there\\r\\n\"");
}

// Pins: the text may arrive split over two writes; it is found across them.
TEST(NetProbeTest, TextSplitOverTwoWritesPasses) {
  OneShotServer server([](int fd) {
    writeAll(fd, "TIERWAR");
    std::this_thread::sleep_for(milliseconds(150));  // the server's pause, not a wait
    writeAll(fd, "DEN-DB vm=db-1\r\n");
    char byte = 0;
    (void)::recv(fd, &byte, 1, 0);
  });
  Status st = probeTcpGreeting("127.0.0.1", server.port(), "TIERWARDEN-DB", 2000);
  EXPECT_TRUE(st.isOk()) << st.toString();
}

// Pins: a binary greeting (a MySQL handshake packet: length, sequence,
// protocol 10, version string, NULs) passes when it contains the text.
TEST(NetProbeTest, BinaryGreetingWithTheTextPasses) {
  static const char kHandshake[] =
      "\x5a\x00\x00\x00\x0a"
      "5.5.5-10.11.6-MariaDB-0+deb12u1\x00"
      "\x03\x00\x00\x00\x2f\x5c\x21\x7e\x00\xfe\xff";
  OneShotServer server([](int fd) {
    writeAll(fd, std::string(kHandshake, sizeof(kHandshake) - 1));
    char byte = 0;
    (void)::recv(fd, &byte, 1, 0);
  });
  Status st = probeTcpGreeting("127.0.0.1", server.port(), "MariaDB", 2000);
  EXPECT_TRUE(st.isOk()) << st.toString();
}

// Pins: binary bytes are escaped in the message, and the text is not looked
// for beyond kMaxGreeting bytes: a server that keeps talking fails at the cap.
TEST(NetProbeTest, GreetingIsReadUpToTheCap) {
  OneShotServer server([](int fd) {
    std::string noise(kMaxGreeting, 'x');
    noise[0] = '\0';
    noise[1] = '\xfe';
    writeAll(fd, noise + "TIERWARDEN-DB\r\n");
    char byte = 0;
    (void)::recv(fd, &byte, 1, 0);
  });
  Status st = probeTcpGreeting("127.0.0.1", server.port(), "TIERWARDEN-DB", 2000);
  EXPECT_EQ(st.code(), Code::kUnavailable);
  EXPECT_EQ(st.message(), "127.0.0.1:" + std::to_string(server.port()) +
                              " sent 4096 bytes (as many as a probe reads) without "
                              "\"TIERWARDEN-DB\": \"\\x00\\xfe" +
                              std::string(52, 'x') + "...\"");
}

// An httplib::Server on 127.0.0.1 that answers /health with `status`.
class HttpServer {
 public:
  explicit HttpServer(int status) {
    server_.Get("/health", [status](const httplib::Request&, httplib::Response& res) {
      res.status = status;
      res.set_content("state\n", "text/plain");
    });
    port_ = server_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    const auto deadline = steady_clock::now() + std::chrono::seconds(5);
    while (!server_.is_running() && steady_clock::now() < deadline) std::this_thread::yield();
  }
  ~HttpServer() {
    server_.stop();
    thread_.join();
  }
  int port() const { return port_; }

 private:
  httplib::Server server_;
  int port_ = 0;
  std::thread thread_;
};

// Pins: an HTTP check that gets expect_status is healthy.
TEST_F(ProberFixture, HttpExpectedStatusIsHealthy) {
  HttpServer server(200);
  ASSERT_GT(server.port(), 0);
  startProber(server.port());
  EXPECT_TRUE(waitFor(Health::kHealthy, check(HealthKind::kHttp, 2)));
}

// Pins: an HTTP check that gets another status is unhealthy after `failures`
// checks, saying what it got.
TEST_F(ProberFixture, HttpWrongStatusIsUnhealthy) {
  HttpServer server(503);
  ASSERT_GT(server.port(), 0);
  startProber(server.port());
  ASSERT_TRUE(waitFor(Health::kUnhealthy, check(HealthKind::kHttp, 2)));
  EXPECT_EQ(prober_->lastFailure("web-1"), "GET http://127.0.0.1:" + std::to_string(server.port()) +
                                               "/health answered 503, expected 200");
}

// Pins: an answer written in two writes (the head, then the body a moment
// later, as busybox httpd does) is read to its end when the server closes.
TEST(NetProbeTest, ReadsAnAnswerInTwoWritesToItsEnd) {
  OneShotServer server([](int fd) {
    readRequest(fd);
    writeAll(fd, "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n");
    std::this_thread::sleep_for(milliseconds(150));  // the server's pause, not a wait
    writeAll(fd, "second write\n");
  });
  Result<HttpAnswer> answer = httpGet("127.0.0.1", server.port(), "/health", 2000);
  ASSERT_TRUE(answer.isOk()) << answer.status().toString();
  EXPECT_EQ(answer->status, 200);
  EXPECT_EQ(answer->body, "second write\n");
}

// Pins: with a Content-Length the answer ends after that many body bytes, even
// when the server keeps the connection open (no wait for the timeout).
TEST(NetProbeTest, ContentLengthEndsTheAnswerWithoutAClose) {
  OneShotServer server([](int fd) {
    readRequest(fd);
    writeAll(fd, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n");
    std::this_thread::sleep_for(milliseconds(50));
    writeAll(fd, "hello");
    char byte = 0;
    (void)::recv(fd, &byte, 1, 0);  // keeps the connection open until the client closes
  });
  const auto start = steady_clock::now();
  Result<HttpAnswer> answer = httpGet("127.0.0.1", server.port(), "/health", 3000);
  ASSERT_TRUE(answer.isOk()) << answer.status().toString();
  EXPECT_LT(steady_clock::now() - start, milliseconds(2000));
  EXPECT_EQ(answer->body, "hello");
}

// Pins: a server that closes before a complete status line fails the check
// (what a port forward does when nothing listens in the guest).
TEST(NetProbeTest, CloseBeforeAnAnswerFailsTheHttpCheck) {
  OneShotServer server([](int fd) { readRequest(fd); });
  Result<HttpAnswer> answer = httpGet("127.0.0.1", server.port(), "/health", 2000);
  ASSERT_FALSE(answer.isOk());
  EXPECT_EQ(answer.status().code(), Code::kUnavailable);
  EXPECT_NE(answer.status().message().find("closed before a complete answer"), std::string::npos)
      << answer.status().message();
}

}  // namespace
}  // namespace tw
