// bench/peer_checks: what one agent's peer checks cost as the cluster grows
// (issue #16; docs/fencing.md "Peer checks").
//
// For each N (default 100, 300, 1000 peers) it starts one real agent-side
// HttpPeerMonitor ("h0") in a child process of its own (this program, run
// with --agent), so that /proc/PID figures are that agent's alone, and plays
// its N peers from this process:
//   - h0 checks its N peers: their addresses are 127.1.x.y (loopback; Linux
//     routes all of 127/8 to lo) on a handful of fake answerers, which tell
//     the peer asked from the local address the check connected to, and
//     answer as that peer would: `sees` (the full list of the N hosts it
//     reaches, what main's agents answer) or, when the check asks for it
//     (`compact=1`), `sees_you`. --silent S of the peers sit on a listener
//     that never accepts (once its queue is full, a powered-off host's
//     connect that never completes);
//   - the N peers check h0 as often as h0 checks them, on 8 threads,
//     each check a new connection, as real agents do: --ask full (main's
//     checkers) or compact.
// Then it prints, per N, over a steady window:
//   - h0's CPU per round (utime + stime from /proc/PID/stat over the window,
//     divided by the rounds in it) and as % of one core;
//   - the round's duration: per burst of h0's checks of answering peers
//     (split where none came for a quarter interval), from its first check
//     to its last (p50, max; -1 when the checks spread over the whole
//     interval, no burst to measure), and how often each answering peer was
//     checked (p50, max of the time since its check before: the peer timeout
//     must not be reached);
//   - answer bytes per round (bodies; HTTP adds ~150 bytes of head each
//     way per check, and TCP's handshake and teardown): "in" the answers h0's
//     checks got, "out" the answers h0 gave its peers' checks, with how many
//     checks each way (sockets' bytes are not in /proc/PID/io: recv/send are
//     not counted there);
//   - h0's threads (most seen, sampled every 20 ms) and what it reached at
//     the end (all answering peers should be reached, only the silent ones
//     unreachable).
// A program that prints figures, not a test: nothing here asserts a time.
// The load generator shares the cores with h0: say the load (uptime) with
// the figures.
//
//   build/bin/peer_checks [--hosts 100,300,1000] [--silent 0] [--timeout-ms 1500]
//                         [--window-s 10] [--ask compact|full] [--answerers 4]
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <httplib.h>

#include "agent/peer_monitor.h"
#include "tw/clock.h"

namespace {

using Clock = std::chrono::steady_clock;
constexpr const char* kToken = "bench-peer-token-0123456789abcdef";
constexpr const char* kPath = "/api/v1/peer/status";

std::string hostName(int i) { return "h" + std::to_string(i); }

// Peer i (1..N) answers at 127.1.(i / 250).(i % 250 + 1); a silent one at 127.2.*.
std::string peerIp(int i, bool silent) {
  return std::string(silent ? "127.2." : "127.1.") + std::to_string(i / 250) + "." +
         std::to_string(i % 250 + 1);
}
int peerIndex(const std::string& ip) {
  int a = 0, b = 0, c = 0, d = 0;
  if (std::sscanf(ip.c_str(), "%d.%d.%d.%d", &a, &b, &c, &d) != 4 || a != 127 || b != 1) return -1;
  return c * 250 + d - 1;
}

int64_t procField(pid_t pid, const std::string& file, const std::string& key) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/" + file);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key + ":", 0) == 0) return std::stoll(line.substr(key.size() + 1));
  }
  return 0;
}

// utime + stime of a process (all its threads), in clock ticks: fields 14
// and 15 of /proc/PID/stat, after the command name's closing parenthesis.
int64_t cpuTicks(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  long long utime = 0, stime = 0;
  const size_t paren = all.rfind(')');
  if (paren == std::string::npos ||
      std::sscanf(all.c_str() + paren + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lld %lld",
                  &utime, &stime) != 2) {
    return 0;
  }
  return utime + stime;
}

// --agent: h0 itself. Prints "port P", then "reached R unreachable U" every
// 200 ms, until killed.
int runAgent(int n, int silent, int timeout_ms, const std::vector<int>& ports, int silent_port) {
  tw::Clock& clock = tw::SystemClock::instance();
  tw::HttpPeerMonitor h0("h0", kToken, clock);
  if (!h0.listen("127.0.0.1:0").isOk()) return 1;
  std::vector<tw::PeerInfo> peers;
  for (int i = 1; i <= n; ++i) {
    const bool is_silent = i > n - silent;
    const int port = is_silent ? silent_port : ports[i % ports.size()];
    peers.push_back({hostName(i), peerIp(i, is_silent) + ":" + std::to_string(port)});
  }
  h0.setPeers(peers, timeout_ms);
  h0.start();
  std::printf("port %s\n", h0.boundAddress().substr(h0.boundAddress().rfind(':') + 1).c_str());
  std::fflush(stdout);
  for (;;) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    const tw::Millis now = clock.nowMs();
    std::printf("reached %zu unreachable %zu\n", h0.reachable(now).size(), h0.unreachable(now).size());
    std::fflush(stdout);
  }
}

// The fake answerers: any peer's answer, told by the local address.
class Answerers {
 public:
  Answerers(int n, int count) : n_(n), last_(n + 1) {
    std::string sees = "[\"h0\"";
    for (int i = 1; i <= n; ++i) sees += ",\"" + hostName(i) + "\"";
    sees_ = sees + "]";
    for (int k = 0; k < count; ++k) {
      auto s = std::make_unique<httplib::Server>();
      s->new_task_queue = [] { return new httplib::ThreadPool(4); };
      s->set_keep_alive_max_count(1);
      int fd = -1;
      s->set_socket_options([&fd](socket_t sock) {
        httplib::default_socket_options(sock);
        fd = sock;
      });
      s->Get(kPath, [this](const httplib::Request& req, httplib::Response& res) { answer(req, res); });
      ports_.push_back(s->bind_to_any_port("0.0.0.0"));
      // httplib's queue of 5 would drop the SYNs of a burst of checks: a
      // handful of answerers take what N hosts' listeners would.
      ::listen(fd, 4096);
      servers_.push_back(std::move(s));
    }
  }
  ~Answerers() {
    for (auto& s : servers_) s->stop();
    for (auto& t : threads_) t.join();
  }
  void start() {
    for (auto& s : servers_) threads_.emplace_back([&s] { s->listen_after_bind(); });
  }
  const std::vector<int>& ports() const { return ports_; }

  // Per round (a burst of h0's checks: the checks of answering peers, split
  // where none came for `gap_ms`), from its first check to its last, for the
  // rounds that started in [from, to).
  std::vector<double> roundDurationsMs(Clock::time_point from, Clock::time_point to, int gap_ms) {
    std::vector<Clock::time_point> all;
    {
      std::lock_guard<std::mutex> lock(mu_);
      all = checks_;
    }
    std::sort(all.begin(), all.end());
    std::vector<double> out;
    for (size_t i = 0; i < all.size();) {
      size_t j = i;
      while (j + 1 < all.size() && all[j + 1] - all[j] < std::chrono::milliseconds(gap_ms)) ++j;
      if (all[i] >= from && all[j] < to) {
        out.push_back(std::chrono::duration<double, std::milli>(all[j] - all[i]).count());
      }
      i = j + 1;
    }
    return out;
  }
  // Per check of an answering peer in [from, to): the time since h0's check
  // of that peer before, in ms.
  std::vector<double> periodsMs(Clock::time_point from, Clock::time_point to) {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<double> out;
    for (const auto& [at, period] : periods_) {
      if (at >= from && at < to) out.push_back(std::chrono::duration<double, std::milli>(period).count());
    }
    return out;
  }
  // Answer bodies h0 received, and answers, since the last call.
  std::pair<int64_t, int64_t> takeBytes() {
    std::lock_guard<std::mutex> lock(mu_);
    auto out = std::make_pair(body_bytes_, answers_);
    body_bytes_ = answers_ = 0;
    return out;
  }

 private:
  void answer(const httplib::Request& req, httplib::Response& res) {
    const int i = peerIndex(req.local_addr);
    if (i < 1 || i > n_ || req.get_param_value("from") != "h0") {
      res.status = 404;
      return;
    }
    if (req.has_param("compact")) {
      res.set_content("{\"host\":\"" + hostName(i) + "\",\"sees_you\":true}", "application/json");
    } else {
      res.set_content("{\"host\":\"" + hostName(i) + "\",\"sees\":" + sees_ + "}", "application/json");
    }
    std::lock_guard<std::mutex> lock(mu_);
    const auto now = Clock::now();
    checks_.push_back(now);
    if (last_[i] != Clock::time_point{}) periods_.emplace_back(now, now - last_[i]);
    last_[i] = now;
    body_bytes_ += int64_t(res.body.size());
    ++answers_;
  }

  const int n_;
  std::string sees_;
  std::vector<std::unique_ptr<httplib::Server>> servers_;
  std::vector<int> ports_;
  std::vector<std::thread> threads_;
  std::mutex mu_;
  std::vector<Clock::time_point> checks_;  // when h0 checked an answering peer
  std::vector<Clock::time_point> last_;    // per peer: its last check
  std::vector<std::pair<Clock::time_point, Clock::duration>> periods_;  // since its check before
  int64_t body_bytes_ = 0, answers_ = 0;
};

struct Figures {
  double cpu_ms_per_round = 0, core_pct = 0, round_p50 = -1, round_max = -1;
  double period_p50 = 0, period_max = 0;
  double in_kb = 0, out_kb = 0, checks_in = 0, checks_out = 0;
  int64_t threads_max = 0;
  std::string reach;
};

Figures runOne(const std::string& self, int n, int silent, int timeout_ms, int window_s,
               bool compact_ask, int answerer_count) {
  Figures f;
  Answerers answerers(n, answerer_count);
  // Bound and listening, never accepting: once its queue of 5 is full,
  // connects to it never complete (the first few get no answer).
  httplib::Server silent_server;
  const int silent_port = silent_server.bind_to_any_port("0.0.0.0");
  std::string ports;
  for (int p : answerers.ports()) ports += (ports.empty() ? "" : ",") + std::to_string(p);
  int out[2];
  if (::pipe(out) != 0) return f;
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(out[1], 1);
    ::close(out[0]);
    std::vector<std::string> args = {self, "--agent", "--hosts", std::to_string(n),
                                     "--silent", std::to_string(silent),
                                     "--timeout-ms", std::to_string(timeout_ms),
                                     "--ports", ports, "--silent-port", std::to_string(silent_port)};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv("/proc/self/exe", argv.data());
    ::_exit(127);
  }
  ::close(out[1]);
  answerers.start();
  FILE* child = ::fdopen(out[0], "r");
  char line[256];
  int h0_port = 0;
  if (std::fgets(line, sizeof line, child)) std::sscanf(line, "port %d", &h0_port);
  std::atomic<size_t> reached{0}, unreachable{0};
  std::thread reader([&] {
    size_t r = 0, u = 0;
    while (std::fgets(line, sizeof line, child)) {
      if (std::sscanf(line, "reached %zu unreachable %zu", &r, &u) == 2) {
        reached = r;
        unreachable = u;
      }
    }
  });

  // The N peers' checks of h0: each peer once per round, a new connection each.
  const int every = std::clamp(timeout_ms / 3, 200, 2000);
  std::atomic<bool> stop{false};
  std::atomic<int64_t> out_bytes{0}, out_answers{0};
  std::vector<std::thread> load;
  const int load_threads = 8;
  for (int t = 0; t < load_threads; ++t) {
    load.emplace_back([&, t] {
      while (!stop) {
        auto round_start = Clock::now();
        for (int i = 1 + t; i <= n && !stop; i += load_threads) {
          httplib::Client c("127.0.0.1", h0_port);
          c.set_connection_timeout(1, 0);
          c.set_read_timeout(1, 0);
          std::string path = std::string(kPath) + "?from=" + hostName(i) + (compact_ask ? "&compact=1" : "");
          auto res = c.Get(path.c_str(), {{"Authorization", std::string("Bearer ") + kToken}});
          if (res && res->status == 200) {
            out_bytes += int64_t(res->body.size());
            ++out_answers;
          }
        }
        std::this_thread::sleep_until(round_start + std::chrono::milliseconds(every));
      }
    });
  }
  std::atomic<int64_t> threads_max{0};
  std::thread sampler([&] {
    while (!stop) {
      threads_max = std::max<int64_t>(threads_max, procField(pid, "status", "Threads"));
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  });

  // Warm up: every answering peer reached (or 30 s), then a few more rounds.
  auto warm_end = Clock::now() + std::chrono::seconds(30);
  while (reached < size_t(n - silent) && Clock::now() < warm_end) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(3 * every));
  threads_max = 0;
  const auto t0 = Clock::now();
  const int64_t cpu0 = cpuTicks(pid);
  answerers.takeBytes();
  out_bytes = 0;
  out_answers = 0;
  std::this_thread::sleep_for(std::chrono::seconds(window_s));
  const auto t1 = Clock::now();
  const int64_t cpu1 = cpuTicks(pid);
  const auto [in_bytes, in_answers] = answerers.takeBytes();
  const int64_t out_b = out_bytes, out_a = out_answers;
  f.reach = std::to_string(reached.load()) + "/" + std::to_string(n - silent) + " reached, " +
            std::to_string(unreachable.load()) + " unreachable";
  f.threads_max = threads_max;

  const double window_ms = std::chrono::duration<double, std::milli>(t1 - t0).count();
  const double rounds = window_ms / every;
  const double cpu_ms = 1000.0 * double(cpu1 - cpu0) / double(::sysconf(_SC_CLK_TCK));
  f.cpu_ms_per_round = cpu_ms / rounds;
  f.core_pct = 100.0 * cpu_ms / window_ms;
  f.in_kb = double(in_bytes) / 1024.0 / rounds;
  f.out_kb = double(out_b) / 1024.0 / rounds;
  f.checks_in = double(in_answers) / rounds;
  f.checks_out = double(out_a) / rounds;
  auto durations = answerers.roundDurationsMs(t0, t1, every / 4);
  std::sort(durations.begin(), durations.end());
  if (!durations.empty()) {
    f.round_p50 = durations[durations.size() / 2];
    f.round_max = durations.back();
  }
  auto periods = answerers.periodsMs(t0, t1);
  std::sort(periods.begin(), periods.end());
  if (!periods.empty()) {
    f.period_p50 = periods[periods.size() / 2];
    f.period_max = periods.back();
  }

  stop = true;
  for (auto& t : load) t.join();
  sampler.join();
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
  reader.join();
  std::fclose(child);
  return f;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"peer_checks: one agent's peer checks against N peers; prints figures"};
  std::vector<int> hosts = {100, 300, 1000};
  int silent = 0, timeout_ms = 1500, window_s = 10, answerers = 4;
  std::string ask = "compact";
  bool agent = false;
  std::vector<int> ports;
  int silent_port = 0;
  app.add_option("--hosts", hosts, "numbers of peers, one run each")->delimiter(',');
  app.add_option("--silent", silent, "how many of the peers never answer (powered off)");
  app.add_option("--timeout-ms", timeout_ms, "the peer timeout (checks every third of it, 200-2000 ms)");
  app.add_option("--window-s", window_s, "seconds measured after the warm-up");
  app.add_option("--ask", ask, "how the peers ask h0: compact (?compact=1) or full (main's checkers)")
      ->check(CLI::IsMember({"compact", "full"}));
  app.add_option("--answerers", answerers, "fake answerer servers (4 threads each)");
  app.add_flag("--agent", agent, "internal: run h0");
  app.add_option("--ports", ports, "internal: the answerers' ports")->delimiter(',');
  app.add_option("--silent-port", silent_port, "internal: the silent listener's port");
  CLI11_PARSE(app, argc, argv);
  if (agent) return runAgent(hosts.at(0), silent, timeout_ms, ports, silent_port);

  std::signal(SIGPIPE, SIG_IGN);
  const int every = std::clamp(timeout_ms / 3, 200, 2000);
  std::printf("peer timeout %d ms: a round every %d ms; peers ask %s; %d silent\n", timeout_ms, every,
              ask.c_str(), silent);
  for (int n : hosts) {
    Figures f = runOne(argv[0], n, std::min(silent, n), timeout_ms, window_s, ask == "compact", answerers);
    std::printf(
        "N=%-5d CPU %7.2f ms/round (%5.1f %% of a core)  round p50 %6.1f ms max %6.1f ms  "
        "each peer every p50 %6.1f ms max %6.1f ms  "
        "answers in %8.1f KiB/round (%5.0f) out %8.1f KiB/round (%5.0f)  threads max %4lld  %s\n",
        n, f.cpu_ms_per_round, f.core_pct, f.round_p50, f.round_max, f.period_p50, f.period_max, f.in_kb, f.checks_in, f.out_kb,
        f.checks_out,
        static_cast<long long>(f.threads_max), f.reach.c_str());
    std::fflush(stdout);
  }
  return 0;
}
