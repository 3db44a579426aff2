// Many real agents' connections on one real tierwarden-controller process
// (issue #16): every agent holds its heartbeat connection open (keep-alive)
// and one assignments long poll, as agent/main.cc does through
// HttpControllerLink. The agents' listener used to serve each open
// connection on a thread of its own and admit at most `total` (112) of them:
// the 57th host's heartbeats were refused.
//
// Each host plays from its own loopback address (127.0.1.x, through
// ApiClientOptions::source_address), as real hosts have one address each: the
// listener's per-address limit (32) stays in force and is not what is tested.
//
// Label integration; RUN_SERIAL (with the starvation test, same executable).
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "../free_port.h"
#include "tw/http_client.h"
#include "tw/json.h"
#include "tw/protocol.h"

namespace tw {
namespace {

namespace fs = std::filesystem;
using Steady = std::chrono::steady_clock;

constexpr int kHosts = 150;  // 300 open connections: well over the 112 a thread each allowed

std::string hostName(int i) { return "h" + std::to_string(i); }
// Host i's own address: 127.0.1.1 ... 127.0.1.150.
std::string hostAddress(int i) { return "127.0.1." + std::to_string(i); }

class AgentConnectionsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ::signal(SIGPIPE, SIG_IGN);  // as agent/main.cc: a refused connection is an error, not a signal
    rlimit lim{};
    ::getrlimit(RLIMIT_NOFILE, &lim);
    lim.rlim_cur = std::min<rlim_t>(lim.rlim_max, 8192);
    ::setrlimit(RLIMIT_NOFILE, &lim);
    if (lim.rlim_cur < 2048) GTEST_SKIP() << "needs 2048 open files";
    dir_ = fs::temp_directory_path() / ("tw-conns-" + std::to_string(::getpid()));
    fs::create_directories(dir_ / "state");
    port_ = testing_ports::freeLoopbackPort();
    agent_port_ = testing_ports::freeLoopbackPort();
    {
      // Every host's own agent token (issue-host, before the start; ~60 ms each).
      std::string issue = "for i in $(seq 1 " + std::to_string(kHosts) + "); do " + std::string(TW_BIN_DIR) +
                          "/tierwarden-controller issue-host h$i --state-dir " + (dir_ / "state").string() +
                          " >/dev/null || exit 1; done";
      ASSERT_EQ(std::system(issue.c_str()), 0);
      for (int i = 1; i <= kHosts; ++i) {
        std::ifstream in(dir_ / "state" / "hosts" / hostName(i) / "token");
        std::getline(in, host_tokens_[i]);
        ASSERT_FALSE(host_tokens_[i].empty()) << hostName(i);
      }
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
              "--agent-listen", agent.c_str(), "--web-dir", TW_SOURCE_DIR "/web", "--insecure-http",
              (char*)nullptr);
      ::_exit(127);
    }
    for (int i = 0; i < 100 && token_.empty(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      std::ifstream in(dir_ / "state" / "token");
      std::getline(in, token_);
    }
    ASSERT_FALSE(token_.empty()) << "controller did not start";
    std::string policy = "hosts:\n";
    for (int i = 1; i <= kHosts; ++i) policy += "  - { name: " + hostName(i) + " }\n";
    policy += "tiers:\n  - { name: web, image: tiny-web }\n";
    ApiClient api(operatorOptions());
    Result<Json> applied = unavailable("not tried");
    for (int i = 0; i < 50; ++i) {
      applied = api.post("/api/v1/policies",
                         Json{{"files", Json::array({Json{{"name", "p.yaml"}, {"content", policy}}})}});
      if (applied.isOk()) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    ASSERT_TRUE(applied.isOk()) << applied.status().message();
  }

  void TearDown() override {
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      int st = 0;
      ::waitpid(pid_, &st, 0);
    }
    if (!HasFailure()) fs::remove_all(dir_);
    else std::printf("controller log kept in %s\n", dir_.c_str());
  }

  ApiClientOptions operatorOptions() const {
    ApiClientOptions o;
    o.base_url = "http://127.0.0.1:" + std::to_string(port_);
    o.token = token_;
    return o;
  }

  // Host i's link, as agent/main.cc builds it.
  ApiClientOptions agentOptions(int i) const {
    ApiClientOptions o;
    o.base_url = "http://127.0.0.1:" + std::to_string(agent_port_);
    o.token = host_tokens_.at(i);
    o.read_timeout_ms = 5000;
    o.source_address = hostAddress(i);
    return o;
  }

  // The hosts' states, by name (GET /api/v1/hosts).
  std::map<std::string, std::string> hostStates() {
    ApiClient api(operatorOptions());
    std::map<std::string, std::string> out;
    auto j = api.get("/api/v1/hosts");
    if (!j.isOk()) return out;
    for (const auto& h : (*j)["hosts"]) out[h["name"].get<std::string>()] = h["state"].get<std::string>();
    return out;
  }

  fs::path dir_;
  int port_ = 0;
  int agent_port_ = 0;
  pid_t pid_ = -1;
  std::string token_;                    // the operator's
  std::map<int, std::string> host_tokens_;  // host i's agent token
};

// Pins: 150 hosts (300 open agent connections: a kept-alive heartbeat
// connection and a 25 s long poll each, every host from its own address)
// are all served for 10 s: every heartbeat of every host is answered with
// its set, and every host is online at the end.
TEST_F(AgentConnectionsTest, EveryHeartbeatOfManyRealAgentsIsAnswered) {
  std::vector<std::unique_ptr<HttpControllerLink>> links;
  for (int i = 1; i <= kHosts; ++i) links.push_back(std::make_unique<HttpControllerLink>(agentOptions(i)));

  std::atomic<bool> stop{false};
  // One long poll per host, always open (agent/main.cc's pollAssignments()).
  std::vector<std::thread> pollers;
  std::atomic<int> polls_failed{0};
  std::vector<std::unique_ptr<HttpControllerLink>> poll_links;
  for (int i = 1; i <= kHosts; ++i) {
    poll_links.push_back(std::make_unique<HttpControllerLink>(agentOptions(i)));
    pollers.emplace_back([&, i] {
      HttpControllerLink& link = *poll_links[static_cast<size_t>(i - 1)];
      int64_t after = 0;
      while (!stop.load()) {
        auto set = link.waitAssignments(hostName(i), after, 25000);
        if (set.isOk()) {
          after = set->version;
        } else if (!stop.load()) {
          ++polls_failed;
          std::this_thread::sleep_for(std::chrono::milliseconds(200));
        }
      }
    });
  }
  // Heartbeats: every host once a second, from 5 threads of 30 hosts each.
  std::mutex mu;
  std::vector<std::string> failures;
  std::atomic<int> answered{0};
  std::vector<std::thread> beaters;
  const auto start = Steady::now();
  const auto end = start + std::chrono::seconds(10);
  constexpr int kBeaters = 5;
  for (int t = 0; t < kBeaters; ++t) {
    beaters.emplace_back([&, t] {
      int64_t seq = 0;
      for (auto next = Steady::now(); next < end; next += std::chrono::seconds(1)) {
        std::this_thread::sleep_until(next);
        ++seq;
        for (int i = 1 + t; i <= kHosts; i += kBeaters) {
          Heartbeat hb;
          hb.host = hostName(i);
          hb.agent_id = "conns-test-" + std::to_string(i);
          hb.seq = seq;
          hb.capacity = Capacity{8, 16384};
          auto set = links[static_cast<size_t>(i - 1)]->heartbeat(hb);
          if (set.isOk()) {
            ++answered;
          } else {
            std::lock_guard<std::mutex> lock(mu);
            failures.push_back(hb.host + " #" + std::to_string(seq) + ": " + set.status().message());
          }
        }
      }
    });
  }
  for (auto& b : beaters) b.join();
  auto states = hostStates();
  stop = true;
  // The long polls end when their wait does; the controller's stop ends them sooner.
  ::kill(pid_, SIGTERM);
  int st = 0;
  ::waitpid(pid_, &st, 0);
  pid_ = -1;
  for (auto& p : pollers) p.join();

  std::printf("%d heartbeats answered, %zu refused or failed; %d long polls failed\n", answered.load(),
              failures.size(), polls_failed.load());
  for (size_t k = 0; k < failures.size() && k < 10; ++k) std::printf("  %s\n", failures[k].c_str());
  EXPECT_TRUE(failures.empty()) << failures.size() << " heartbeats not answered, first: " << failures[0];
  EXPECT_EQ(polls_failed.load(), 0);
  ASSERT_EQ(states.size(), static_cast<size_t>(kHosts));
  int online = 0;
  for (const auto& [name, state] : states) {
    if (state == "online") ++online;
    else std::printf("  %s is %s\n", name.c_str(), state.c_str());
  }
  EXPECT_EQ(online, kHosts);
}

}  // namespace
}  // namespace tw
