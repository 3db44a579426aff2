// Heartbeat latency over TLS (mTLS on the agents' listener) against plain
// HTTP, and the cost of a TLS handshake: an in-process ApiServer on
// loopback, the agent's own client (HttpControllerLink, one kept-alive
// connection for heartbeats) and ApiClient without keep-alive (a new
// connection, and so a handshake, per request). Prints percentiles.
//
// With --silent N, N connections to each listener that never send a byte
// (no ClientHello on TLS) are held open meanwhile, from 127.0.0.2 and up, 8
// per address, and reopened as the server closes them (at its 5 s deadline,
// or evicted).
//
//   build/bin/tls_heartbeat [--requests N] [--silent N]
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <thread>
#include <vector>

#include "controller/api_server.h"
#include "controller/auth.h"
#include "controller/controller.h"
#include "controller/pki.h"
#include "controller/service.h"
#include "controller/tls.h"
#include "tw/http_client.h"
#include "tw/log.h"
#include "tw/store.h"

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

const char* kOperator = "bench-operator-token-0123456789abcdef";
const char* kAgent = "bench-agent-h1-token-0123456789abcdef";

void report(const char* what, std::vector<double> ms) {
  std::sort(ms.begin(), ms.end());
  auto at = [&ms](double q) { return ms[std::min(ms.size() - 1, static_cast<size_t>(q * ms.size()))]; };
  double sum = 0;
  for (double v : ms) sum += v;
  std::printf("%-44s n=%zu  mean %.3f  p50 %.3f  p90 %.3f  p99 %.3f  max %.3f ms\n", what, ms.size(),
              sum / ms.size(), at(0.5), at(0.9), at(0.99), ms.back());
}

// Connects from 127.0.0.(2 + i / 8) to `port`; -1 on failure.
int connectSilent(int i, int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in from{};
  from.sin_family = AF_INET;
  from.sin_addr.s_addr = htonl(0x7f000002u + static_cast<uint32_t>(i / 8));
  ::bind(fd, reinterpret_cast<sockaddr*>(&from), sizeof from);
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(static_cast<uint16_t>(port));
  to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof to) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// Holds `n` silent connections to each port until stopped.
class SilentClients {
 public:
  SilentClients(int n, std::vector<int> ports) : n_(n), ports_(std::move(ports)) {
    if (n_ > 0) thread_ = std::thread([this] { run(); });
  }
  ~SilentClients() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  int64_t reopened() const { return reopened_; }

 private:
  void run() {
    std::vector<std::vector<int>> fds(ports_.size(), std::vector<int>(n_, -1));
    while (!stop_) {
      for (size_t p = 0; p < ports_.size(); ++p) {
        for (int i = 0; i < n_; ++i) {
          int& fd = fds[p][i];
          if (fd >= 0) {
            pollfd q{fd, POLLIN, 0};
            char c;
            if (::poll(&q, 1, 0) > 0 && ::recv(fd, &c, 1, MSG_DONTWAIT) <= 0) {
              ::close(fd);
              fd = -1;
              ++reopened_;
            }
          }
          if (fd < 0) fd = connectSilent(i, ports_[p]);
        }
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    for (auto& v : fds) {
      for (int fd : v) {
        if (fd >= 0) ::close(fd);
      }
    }
  }
  int n_;
  std::vector<int> ports_;
  std::atomic<bool> stop_{false};
  std::atomic<int64_t> reopened_{0};
  std::thread thread_;
};

struct Server {
  std::unique_ptr<tw::Store> store;
  std::unique_ptr<tw::Controller> controller;
  std::unique_ptr<tw::ControllerService> service;
  std::unique_ptr<tw::ApiServer> api;
  std::thread thread;

  Server(bool tls, const tw::TlsPaths& paths) {
    store = std::move(tw::Store::open(":memory:")).value();
    controller = std::make_unique<tw::Controller>(*store, tw::SystemClock::instance());
    (void)controller->recover();
    service = std::make_unique<tw::ControllerService>(*controller, 50);
    tw::ApiServerOptions options{"127.0.0.1", 0, "", ""};
    tw::CredentialSet credentials;
    credentials.add(tw::Principal{tw::Role::kOperator, ""}, kOperator);
    credentials.add(tw::Principal{tw::Role::kAgent, "h1"}, kAgent);
    options.auth = std::make_shared<tw::StaticAuthenticator>(std::move(credentials));
    if (tls) {
      options.public_tls = *tw::ServerTls::load({paths.server_cert, paths.server_key, ""});
      options.agent_tls = *tw::ServerTls::load({paths.server_cert, paths.server_key, paths.ca_cert});
    }
    api = std::make_unique<tw::ApiServer>(*service, options);
    (void)api->bind();
    service->start();
    thread = std::thread([this] { api->serve(); });
  }
  ~Server() {
    service->releaseWaiters();
    api->stop();
    thread.join();
    service->stop();
  }
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"tls_heartbeat: heartbeat latency over mTLS vs plain HTTP, and the handshake's cost"};
  int requests = 2000;
  int silent = 0;
  app.add_option("--requests", requests, "requests per series")->check(CLI::Range(10, 1000000));
  app.add_option("--silent", silent, "silent connections held to each listener meanwhile")
      ->check(CLI::Range(0, 2000));
  CLI11_PARSE(app, argc, argv);
  tw::log::init("bench", "error");

  fs::path dir = fs::temp_directory_path() / ("tw-bench-tls-" + std::to_string(::getpid()));
  fs::create_directories(dir / "h1");
  tw::TlsPaths paths((dir / "state").string());
  if (!tw::initPki(paths, {"127.0.0.1"}).isOk() || !*tw::writeHostCert(paths, "h1", (dir / "h1").string())) {
    std::fprintf(stderr, "cannot make the PKI in %s\n", dir.c_str());
    return 1;
  }
  for (bool tls : {false, true}) {
    Server server(tls, paths);
    const std::string scheme = tls ? "https" : "http";
    tw::ApiClientOptions op;
    op.base_url = scheme + "://127.0.0.1:" + std::to_string(server.api->port());
    op.token = kOperator;
    op.ca_file = tls ? paths.ca_cert : "";
    tw::Json body{{"files", std::vector<tw::PolicyFile>{{"h.yaml", "hosts:\n  - { name: h1 }\n"}}}};
    if (!tw::ApiClient(op).post("/api/v1/policies", body).isOk()) {
      std::fprintf(stderr, "apply failed\n");
      return 1;
    }
    tw::ApiClientOptions agent;
    agent.base_url = scheme + "://127.0.0.1:" + std::to_string(server.api->agentPort());
    agent.token = kAgent;
    if (tls) {
      agent.ca_file = paths.ca_cert;
      agent.cert_file = (dir / "h1" / "host.pem").string();
      agent.key_file = (dir / "h1" / "host.key").string();
    }
    SilentClients hostile(silent, {server.api->port(), server.api->agentPort()});
    if (silent > 0) std::this_thread::sleep_for(std::chrono::seconds(1));  // they are open
    tw::Heartbeat hb;
    hb.host = "h1";
    hb.agent_id = "bench";
    hb.capacity = {4, 8192};
    // Heartbeats as the agent sends them: one kept-alive connection.
    {
      tw::HttpControllerLink link(agent);
      std::vector<double> ms;
      for (int i = 0; i < requests; ++i) {
        hb.seq = i;
        auto t0 = Clock::now();
        auto r = link.heartbeat(hb);
        ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
        if (!r.isOk()) {
          std::fprintf(stderr, "heartbeat: %s\n", r.status().toString().c_str());
          return 1;
        }
      }
      report(tls ? "heartbeat, mTLS, kept-alive connection" : "heartbeat, plain HTTP, kept-alive connection", ms);
    }
    // A new connection per heartbeat: TCP (+ the TLS handshake with client
    // certificate verification) each time.
    {
      // Counted, not fatal: under --silent a new connection may be evicted
      // (as the oldest without a credential) before it is served.
      std::vector<double> ms;
      int failed = 0;
      std::string last_error;
      for (int i = 0; i < requests / 4; ++i) {
        tw::ApiClient client(agent);
        hb.seq = requests + i;
        auto t0 = Clock::now();
        auto r = client.post("/api/v1/agents/h1/heartbeat", tw::Json(hb));
        if (!r.isOk()) {
          ++failed;
          last_error = r.status().toString();
          continue;
        }
        ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
      }
      if (failed > 0) std::printf("  %d of %d failed; the last: %s\n", failed, requests / 4, last_error.c_str());
      report(tls ? "heartbeat, mTLS, new connection each" : "heartbeat, plain HTTP, new connection each", ms);
    }
    if (silent > 0) {
      auto stats = server.api->agentStats();
      std::printf("  agents' listener: %lld evicted, %lld deadline kills, %lld TLS handshakes failed; "
                  "silent clients reopened %lld times\n",
                  static_cast<long long>(stats.evicted), static_cast<long long>(stats.deadline_kills),
                  static_cast<long long>(stats.tls_failures), static_cast<long long>(hostile.reopened()));
    }
  }
  fs::remove_all(dir);
  return 0;
}
