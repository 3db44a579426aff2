// Hostile connections against a real tierwarden-controller process: idle and
// half-open connections, slowloris, and event streams, on both listeners.
// Heartbeats must keep being answered fast. Raw sockets with poll() on the
// client side: the test holds ~1,000 descriptors, beyond select()'s reach.
//
// Label integration; RUN_SERIAL (its latency bound must not share the two
// cores with a libvirt host booting in another test).
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <cstdlib>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "../free_port.h"
#include "tw/json.h"
#include "tw/protocol.h"

namespace tw {
namespace {

namespace fs = std::filesystem;
using Steady = std::chrono::steady_clock;

// A connection from 127.0.0.<src> to 127.0.0.1:port; -1 when it failed.
int connectFrom(int src, int port) {
  int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s < 0) return -1;
  sockaddr_in local{};
  local.sin_family = AF_INET;
  local.sin_addr.s_addr = htonl((127u << 24) | static_cast<uint32_t>(src));
  if (::bind(s, reinterpret_cast<sockaddr*>(&local), sizeof(local)) != 0) {
    ::close(s);
    return -1;
  }
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(static_cast<uint16_t>(port));
  to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int flags = ::fcntl(s, F_GETFL, 0);
  ::fcntl(s, F_SETFL, flags | O_NONBLOCK);
  int r = ::connect(s, reinterpret_cast<sockaddr*>(&to), sizeof(to));
  if (r != 0 && errno != EINPROGRESS) {
    ::close(s);
    return -1;
  }
  pollfd p{s, POLLOUT, 0};
  if (::poll(&p, 1, 3000) != 1) {
    ::close(s);
    return -1;
  }
  int err = 0;
  socklen_t len = sizeof(err);
  ::getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &len);
  if (err != 0) {
    ::close(s);
    return -1;
  }
  ::fcntl(s, F_SETFL, flags);
  return s;
}

bool sendAll(int s, const std::string& data) {
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::send(s, data.data() + off, data.size() - off, MSG_NOSIGNAL);
    if (n <= 0) return false;
    off += static_cast<size_t>(n);
  }
  return true;
}

// Reads one HTTP answer with a Content-Length body (or up to the head when
// head_only); returns it whole, or "" on error or timeout.
std::string readAnswer(int s, int timeout_ms, bool head_only = false) {
  std::string in;
  auto deadline = Steady::now() + std::chrono::milliseconds(timeout_ms);
  char buf[4096];
  for (;;) {
    size_t head_end = in.find("\r\n\r\n");
    if (head_end != std::string::npos) {
      if (head_only) return in;
      std::string lower = in.substr(0, head_end);
      std::transform(lower.begin(), lower.end(), lower.begin(), ::tolower);
      size_t cl = lower.find("content-length:");
      size_t want = cl == std::string::npos ? 0 : std::stoul(lower.substr(cl + 15));
      if (in.size() >= head_end + 4 + want) return in;
    }
    int left = static_cast<int>(
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Steady::now()).count());
    if (left <= 0) return "";
    pollfd p{s, POLLIN, 0};
    if (::poll(&p, 1, left) != 1) return "";
    ssize_t n = ::recv(s, buf, sizeof(buf), 0);
    if (n <= 0) return "";
    in.append(buf, static_cast<size_t>(n));
  }
}

std::string request(const std::string& method, const std::string& path, const std::string& token,
                    const std::string& body, bool keep_alive) {
  std::string r = method + " " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\n";
  if (!token.empty()) r += "Authorization: Bearer " + token + "\r\n";
  if (!keep_alive) r += "Connection: close\r\n";
  if (method == "POST") {
    r += "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) + "\r\n";
  }
  return r + "\r\n" + body;
}

class StarvationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    rlimit lim{};
    ::getrlimit(RLIMIT_NOFILE, &lim);
    lim.rlim_cur = std::min<rlim_t>(lim.rlim_max, 8192);
    ::setrlimit(RLIMIT_NOFILE, &lim);
    if (lim.rlim_cur < 2048) GTEST_SKIP() << "needs 2048 open files";

    dir_ = fs::temp_directory_path() / ("tw-starve-" + std::to_string(::getpid()));
    fs::create_directories(dir_ / "state");
    port_ = testing_ports::freeLoopbackPort();
    agent_port_ = testing_ports::freeLoopbackPort();
    // h1's agent token (issue-host before the start): its heartbeats below.
    {
      std::string issue = std::string(TW_BIN_DIR) + "/tierwarden-controller issue-host h1 --state-dir " +
                          (dir_ / "state").string() + " >/dev/null";
      ASSERT_EQ(std::system(issue.c_str()), 0);
      std::ifstream in(dir_ / "state" / "hosts" / "h1" / "token");
      std::getline(in, agent_token_);
      ASSERT_FALSE(agent_token_.empty());
    }
    pid_ = ::fork();
    if (pid_ == 0) {
      int log = ::open((dir_ / "controller.log").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      ::dup2(log, 1);
      ::dup2(log, 2);
      std::string listen = "127.0.0.1:" + std::to_string(port_);
      std::string agent = "127.0.0.1:" + std::to_string(agent_port_);
      std::string state = (dir_ / "state").string();
      std::string bin = std::string(TW_BIN_DIR) + "/tierwarden-controller";
      ::execl(bin.c_str(), bin.c_str(), "--state-dir", state.c_str(), "--listen", listen.c_str(),
              "--agent-listen", agent.c_str(), "--web-dir", TW_SOURCE_DIR "/web",
              "--public-read", "--insecure-http",  // streams and reads below: no token, raw HTTP
              (char*)nullptr);
      ::_exit(127);
    }
    for (int i = 0; i < 100 && token_.empty(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      std::ifstream in(dir_ / "state" / "token");
      std::getline(in, token_);
    }
    ASSERT_FALSE(token_.empty()) << "controller did not start";
    std::string policy = "hosts:\n  - { name: h1 }\ntiers:\n  - { name: web, image: tiny-web }\n";
    Json body{{"files", Json::array({Json{{"name", "p.yaml"}, {"content", policy}}})}};
    std::string answer;
    for (int i = 0; i < 50 && answer.find(" 200 ") == std::string::npos; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      int s = connectFrom(1, port_);
      if (s < 0) continue;
      sendAll(s, request("POST", "/api/v1/policies", token_, body.dump(), false));
      answer = readAnswer(s, 3000);
      ::close(s);
    }
    ASSERT_NE(answer.find(" 200 "), std::string::npos) << answer;
  }

  void TearDown() override {
    for (int s : held_) ::close(s);
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      int st = 0;
      ::waitpid(pid_, &st, 0);
    }
    if (!HasFailure()) fs::remove_all(dir_);
    else std::printf("controller log kept in %s\n", dir_.c_str());
  }

  std::string heartbeatBody(int64_t seq) {
    Heartbeat hb;
    hb.host = "h1";
    hb.agent_id = "starvation-test";
    hb.seq = seq;
    hb.capacity = Capacity{4, 4096};
    return Json(hb).dump();
  }

  // One heartbeat on `s` (kept alive) or on a new connection (s < 0); its
  // latency in ms, or -1 when it was not answered 200.
  double heartbeat(int s, int64_t seq) {
    bool fresh = s < 0;
    auto t0 = Steady::now();
    if (fresh) s = connectFrom(1, agent_port_);
    if (s < 0) return -1;
    bool sent = sendAll(s, request("POST", "/api/v1/agents/h1/heartbeat", agent_token_, heartbeatBody(seq), !fresh));
    std::string answer = sent ? readAnswer(s, 5000) : "";
    double ms = std::chrono::duration<double, std::milli>(Steady::now() - t0).count();
    if (fresh) ::close(s);
    return answer.rfind("HTTP/1.1 200", 0) == 0 ? ms : -1;
  }

  fs::path dir_;
  int port_ = 0;
  int agent_port_ = 0;
  pid_t pid_ = -1;
  std::string token_;        // the operator's
  std::string agent_token_;  // host h1's
  std::vector<int> held_;
};

// Pins: 500 idle or half-open connections (250 on each listener, from 10
// client addresses), 200 event streams (from 10 other addresses) and 20
// slowloris connections do not delay heartbeats: every heartbeat, on the
// agent's kept-alive connection and on new connections, is answered 200 in
// < 100 ms for longer than the request deadline (5 s); all 200 streams are
// served; slowloris connections are closed by the read deadline.
TEST_F(StarvationTest, HeartbeatsStayFastUnderIdleConnectionsStreamsAndSlowloris) {
  // The agent's own connection, opened before the flood.
  int agent = connectFrom(1, agent_port_);
  ASSERT_GE(agent, 0);
  held_.push_back(agent);
  ASSERT_GE(heartbeat(agent, 1), 0);

  // Like a real agent, it heartbeats while the flood builds up (its kept-alive
  // connection would otherwise idle out).
  int64_t seq = 2;
  auto t_setup = Steady::now();
  int streams_ok = 0;
  for (int i = 0; i < 200; ++i) {
    if (i % 50 == 0) {
      EXPECT_GE(heartbeat(agent, seq++), 0);
    }
    int s = connectFrom(20 + i % 10, port_);
    if (s < 0) continue;
    held_.push_back(s);
    sendAll(s, request("GET", "/api/v1/events/stream", "", "", true));
    std::string head = readAnswer(s, 3000, true);
    if (head.rfind("HTTP/1.1 200", 0) == 0) ++streams_ok;
  }
  EXPECT_EQ(streams_ok, 200);

  int idle_connected = 0;
  for (int listener = 0; listener < 2; ++listener) {
    for (int i = 0; i < 250; ++i) {
      if (i % 50 == 0) {
      EXPECT_GE(heartbeat(agent, seq++), 0);
    }
      int s = connectFrom(2 + i % 10, listener == 0 ? port_ : agent_port_);
      if (s < 0) continue;
      ++idle_connected;
      held_.push_back(s);
      if (i % 2) sendAll(s, "POST /api/v1/policies HTTP/1.1\r\nHost: x\r\n");  // half-open
    }
  }
  std::vector<int> slow;
  for (int i = 0; i < 20; ++i) {
    int s = connectFrom(40 + i % 2, i % 2 ? port_ : agent_port_);
    if (s >= 0) slow.push_back(s);
  }

  double setup_s = std::chrono::duration<double>(Steady::now() - t_setup).count();
  std::vector<double> kept, fresh;
  int failed = 0;
  auto start = Steady::now();
  while (Steady::now() - start < std::chrono::milliseconds(6500)) {
    double a = heartbeat(agent, seq++);
    double b = heartbeat(-1, seq++);
    if (a < 0 || b < 0) ++failed;
    if (a >= 0) kept.push_back(a);
    if (b >= 0) fresh.push_back(b);
    for (int s : slow) sendAll(s, "X");  // slowloris: one byte of header per pass
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  double kept_max = kept.empty() ? -1 : *std::max_element(kept.begin(), kept.end());
  double fresh_max = fresh.empty() ? -1 : *std::max_element(fresh.begin(), fresh.end());
  std::printf("setup %.1f s, idle connections opened %d, streams %d, heartbeats kept-alive %zu (max %.1f ms), "
              "new connection %zu (max %.1f ms), failed %d\n",
              setup_s, idle_connected, streams_ok, kept.size(), kept_max, fresh.size(), fresh_max, failed);
  EXPECT_EQ(failed, 0);
  EXPECT_GE(kept.size(), 40u);
  EXPECT_LT(kept_max, 100.0);
  EXPECT_LT(fresh_max, 100.0);

  // The slowloris connections were closed by the deadline (5 s from connect).
  int closed = 0;
  for (int s : slow) {
    char c;
    pollfd p{s, POLLIN, 0};
    if (::poll(&p, 1, 0) == 1 && ::recv(s, &c, 1, MSG_DONTWAIT) <= 0) ++closed;
    ::close(s);
  }
  EXPECT_EQ(closed, static_cast<int>(slow.size()));

  // The controller still answers the public API (the idle ones were closed
  // by their deadline).
  int s = connectFrom(1, port_);
  ASSERT_GE(s, 0);
  sendAll(s, request("GET", "/api/v1/cluster", "", "", false));
  EXPECT_EQ(readAnswer(s, 3000).rfind("HTTP/1.1 200", 0), 0u);
  ::close(s);
}

}  // namespace
}  // namespace tw
