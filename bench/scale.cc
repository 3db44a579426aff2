// bench/scale: what one controller costs as the cluster grows (issue #16).
//
// For each N (default 100, 300, 1000 hosts with 20 VMs each) it starts one
// real tierwarden-controller process (SQLite in a temp state dir, per-host
// agent tokens from issue-host) and a load generator in this process that
// plays N agents over real HTTP: the real Agent class on a FakeHypervisor
// each, heartbeating every second with its VMs, on a few threads. Then it
// prints, per N:
//   - the controller's CPU (% of one core) over a steady window, from
//     /proc/PID/stat (utime + stime);
//   - heartbeat latency p50 and p99 (the agents' HTTP round trips);
//   - the controller's resident memory (VmRSS; VmHWM as the peak);
//   - fence -> placed: one host's agent stops (its peers report it
//     unreachable), the controller fences it by lease expiry; from its
//     host.fenced event to all of its VMs assigned elsewhere (released into
//     their new hosts' sets: "fence>asg") and to all of them running there
//     ("fence>run"), and each stage in between (bench/fence_stages.h).
// A program that prints figures, not a test: nothing here asserts a time.
//
//   build/bin/scale [--hosts 100,300,1000] [--vms-per-host 20] [--steady-s 20]
//                   [--threads 8] [--converge-s 300] [--no-compact] [--no-push]
//                   [--controller build/bin/tierwarden-controller]
//   build/bin/scale --serve WEB_DIR --hosts 1000 --vms-per-host 2
//       no figures: once every VM runs it prints "serving URL" and keeps the
//       cluster up (the controller serves WEB_DIR with --public-read) until
//       SIGTERM or SIGINT: the dashboard's browser test at 1,000 hosts
//       (tests/web/run_scale.sh).
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <httplib.h>

#include "agent/agent.h"
#include "agent/peer_view.h"
#include "bench/bench_agents.h"
#include "bench/fence_stages.h"
#include "bench/proc_stats.h"
#include "controller/auth.h"
#include "tw/clock.h"
#include "tw/compact_heartbeats.h"
#include "tw/fake_hypervisor.h"
#include "tw/http_client.h"
#include "tw/json.h"
#include "tw/log.h"

extern char** environ;

namespace {

namespace fs = std::filesystem;
using Steady = std::chrono::steady_clock;
using twbench::BenchHost;
using twbench::cpuTicks;
using twbench::freePort;
using twbench::heartbeatPaths;
using twbench::labelledCounts;
using twbench::loadAverage;
using twbench::Outages;
using twbench::percentile;
using twbench::statusKiB;
using twbench::TimedLink;
using twbench::wallMs;
using twbench::BenchPeerView;

// How long every VM may take to run after the agents start (--converge-s).
int g_converge_s = 300;
// Compact heartbeats (tw/compact_heartbeats.h); off: --no-compact, every
// heartbeat carries its full report, as agents before issue #16's second step.
bool g_compact = true;
// Sets answered by the long poll go to the agent (as agent/main.cc's
// pollAssignments() posts them to its loop); off: --no-push, an agent learns
// its set from its heartbeats' answers alone, as this bench did before.
bool g_push = true;
// The fast path's misses by reason (controller/heartbeat_fastpath.h).
const std::string kMisses = "tierwarden_heartbeat_fastpath_misses_total{reason=\"";
// Where the fence's VMs are (bench/fence_stages.h).
twbench::FenceStages g_stages;

std::string hostName(int i) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "h%04d", i);
  return buf;
}

struct Figures {
  int hosts = 0;
  int vms = 0;
  double cpu_pct = 0;
  double p50_ms = 0, p99_ms = 0;
  int64_t heartbeats = 0, heartbeat_errors = 0;
  std::string last_error;
  double rss_mib = 0, hwm_mib = 0;
  double fence_to_assigned_s = -1;  // fence -> the last of its VMs released into a new host's set
  double fence_to_placed_s = -1;    // fence -> the last of its VMs' domains started elsewhere
  std::string fence_stages;         // FenceStages::describe
  // Hosts' assignment sets the controller built from the fence to every VM
  // running elsewhere (tierwarden_assignment_set_builds_total).
  int64_t fence_set_builds = -1;
  double old_walk_ms = -1;          // the hypervisor walk the bench used to poll every 2 ms
  std::string load;                 // /proc/loadavg at the start and at the end
  double placed_all_s = 0;
  double settle_s = 0;  // from every VM running to the steady window (no heartbeat via the loop for 2 s)
  double metrics_kib = -1;  // GET /metrics, bytes / 1024
  // tierwarden_heartbeats_total{path} over the steady window (the controller's count).
  std::map<std::string, int64_t> paths;
  // tierwarden_heartbeat_fastpath_misses_total{reason} over the steady window.
  std::map<std::string, int64_t> misses;
  double cpu_ms_per_hb = 0;  // controller CPU ms per heartbeat it answered
};

class Bench {
 public:
  Bench(std::string controller_bin, int hosts, int vms_per_host, int steady_s, int threads,
        std::string serve_web_dir = "")
      : bin_(std::move(controller_bin)),
        n_(hosts),
        per_host_(vms_per_host),
        steady_s_(steady_s),
        threads_(threads),
        web_dir_(std::move(serve_web_dir)) {}

  ~Bench() { stop(); }

  int run(Figures* out) {
    out->hosts = n_;
    out->vms = n_ * per_host_;
    out->load = loadAverage();
    char tmpl[] = "/tmp/tw-scale-XXXXXX";
    if (!mkdtemp(tmpl)) return fail("mkdtemp failed");
    dir_ = tmpl;
    // Agent tokens, as `tierwarden-controller issue-host NAME` writes them.
    const tw::CredentialPaths paths(dir_);
    std::map<std::string, std::string> tokens;
    for (int i = 1; i <= n_; ++i) {
      auto issued = tw::issueHostToken(paths, hostName(i), "");
      if (!issued.isOk()) return fail(issued.status().toString());
      tokens[hostName(i)] = issued->token;
    }
    if (!startController()) return 1;
    auto op_token = tw::loadTokenFile(paths.operator_token);
    if (!op_token.isOk()) return fail(op_token.status().toString());
    tw::ApiClientOptions api_options;
    api_options.base_url = "http://127.0.0.1:" + std::to_string(port_);
    api_options.token = *op_token;
    api_options.read_timeout_ms = 120000;
    api_ = std::make_unique<tw::ApiClient>(api_options);
    if (!applyPolicy()) return 1;

    // The agents, each on its FakeHypervisor.
    for (int i = 1; i <= n_; ++i) {
      auto h = std::make_unique<BenchHost>();
      h->name = hostName(i);
      h->hv = std::make_unique<tw::FakeHypervisor>(tw::Capacity{64, 256 * 1024});
      BenchHost* raw = h.get();
      // Called inside the worker's hypervisor calls (FakeHypervisor's
      // events are synchronous): which domains run, kept for other threads.
      h->hv->subscribe([raw](const tw::DomainEvent& e) {
        if (e.kind == tw::DomainEventKind::kStarted)
          g_stages.note(twbench::FenceStages::kStarted, raw->name, e.vm, wallMs());
        std::lock_guard<std::mutex> lock(raw->events_mu);
        raw->events.push_back(e);
        if (e.kind == tw::DomainEventKind::kStarted || e.kind == tw::DomainEventKind::kResumed) {
          raw->active.insert(e.vm);
        } else if (e.kind == tw::DomainEventKind::kStopped || e.kind == tw::DomainEventKind::kCrashed ||
                   e.kind == tw::DomainEventKind::kMigrated || e.kind == tw::DomainEventKind::kUndefined) {
          raw->active.erase(e.vm);
        }
      });
      const std::string source = "127.0." + std::to_string(1 + i / 250) + "." +
                                 std::to_string(2 + i % 250);
      h->link = std::make_unique<TimedLink>(agent_port_, tokens[h->name], source, g_stages);
      h->link->setCompact(g_compact);
      h->peers = std::make_unique<BenchPeerView>(outages_);
      tw::AgentOptions options;
      options.host = h->name;
      options.agent_id = h->name + "-bench";
      options.peer_address = "127.0.0.1:1";  // peer checks are the BenchPeerView's
      h->agent = std::make_unique<tw::Agent>(options, *h->hv, *h->link, tw::SystemClock::instance());
      h->agent->setPeerView(h->peers.get());
      if (tw::Status s = h->agent->start(); !s.isOk()) return fail(s.toString());
      h->link->startPolling(h->name, [raw](tw::AssignmentSet set) {
        if (!g_push) return;
        std::lock_guard<std::mutex> lock(raw->events_mu);
        raw->pushed = std::move(set);
      });
      hosts_.push_back(std::move(h));
    }
    const auto t0 = Steady::now();
    for (int t = 0; t < threads_; ++t) workers_.emplace_back([this, t] { work(t); });

    // Wait until every VM runs (placement waits for every host to report).
    if (!waitAllRunning(std::chrono::seconds(g_converge_s))) {
      return fail("not every VM came to run in " + std::to_string(g_converge_s) + " s");
    }
    out->placed_all_s = std::chrono::duration<double>(Steady::now() - t0).count();
    if (!web_dir_.empty()) return serve(out->placed_all_s);
    op_token_ = *op_token;
    auto scrape = [this] { return scrapeMetrics(); };
    // Settle: after every VM runs, agents still report changes for a while
    // (at 1,000 hosts 15-30 % of a 10 s window's heartbeats went through the
    // loop when it began 3 s after). The steady state begins once 2 s pass
    // in which the controller's loop took no heartbeat and none was refused
    // as "report wanted" (at least 3 s, at most 60 s after all ran).
    {
      const auto settle0 = Steady::now();
      std::this_thread::sleep_for(std::chrono::seconds(1));
      auto unsteady = [](const std::map<std::string, int64_t>& p) {
        int64_t n = 0;
        for (const char* path : {"loop", "published", "report_wanted"}) n += p.count(path) ? p.at(path) : 0;
        return n;
      };
      int64_t before = unsteady(heartbeatPaths(scrape()));
      while (Steady::now() - settle0 < std::chrono::seconds(60)) {
        std::this_thread::sleep_for(std::chrono::seconds(2));
        const int64_t now_n = unsteady(heartbeatPaths(scrape()));
        const bool quiet = now_n == before;
        before = now_n;
        if (quiet && Steady::now() - settle0 >= std::chrono::seconds(3)) break;
      }
      out->settle_s = std::chrono::duration<double>(Steady::now() - settle0).count();
    }

    // Steady state: CPU, latency, memory.
    const std::string metrics0 = scrape();
    const std::map<std::string, int64_t> paths0 = heartbeatPaths(metrics0);
    const std::map<std::string, int64_t> misses0 = labelledCounts(metrics0, kMisses);
    for (auto& h : hosts_) h->link->record(true);
    const int64_t cpu0 = cpuTicks(pid_);
    const auto w0 = Steady::now();
    std::this_thread::sleep_for(std::chrono::seconds(steady_s_));
    const int64_t cpu1 = cpuTicks(pid_);
    const double wall = std::chrono::duration<double>(Steady::now() - w0).count();
    int64_t answered = 0;
    const std::string metrics1 = scrape();
    for (const auto& [why, n] : labelledCounts(metrics1, kMisses)) {
      if (n > (misses0.count(why) ? misses0.at(why) : 0)) out->misses[why] = n - (misses0.count(why) ? misses0.at(why) : 0);
    }
    for (const auto& [path, n] : heartbeatPaths(metrics1)) {
      out->paths[path] = n - (paths0.count(path) ? paths0.at(path) : 0);
      if (path != "refused") answered += out->paths[path];
    }
    out->cpu_ms_per_hb = answered > 0 ? 1000.0 * static_cast<double>(cpu1 - cpu0) /
                                            static_cast<double>(sysconf(_SC_CLK_TCK)) / static_cast<double>(answered)
                                      : 0;
    std::vector<double> samples;
    for (auto& h : hosts_) {
      h->link->record(false);
      int64_t errors = 0;
      std::vector<double> s = h->link->take(&errors, &out->last_error);
      out->heartbeat_errors += errors;
      samples.insert(samples.end(), s.begin(), s.end());
    }
    out->cpu_pct = 100.0 * static_cast<double>(cpu1 - cpu0) /
                   static_cast<double>(sysconf(_SC_CLK_TCK)) / wall;
    out->heartbeats = static_cast<int64_t>(samples.size());
    out->p50_ms = percentile(samples, 0.50);
    out->p99_ms = percentile(samples, 0.99);
    out->rss_mib = static_cast<double>(statusKiB(pid_, "VmRSS")) / 1024.0;
    {
      // The size of a Prometheus scrape at this size (issue #16: < 1 MB).
      const std::string text = scrape();
      if (!text.empty()) out->metrics_kib = static_cast<double>(text.size()) / 1024.0;
    }

    // One host's agent stops: fence -> all its VMs running elsewhere.
    fenceToPlaced(out);
    out->load += " -> " + loadAverage();
    out->hwm_mib = static_cast<double>(statusKiB(pid_, "VmHWM")) / 1024.0;
    // The workers stop: their hypervisors may be read from here.
    stop_ = true;
    for (auto& w : workers_) w.join();
    workers_.clear();
    out->old_walk_ms = oldWalkMs();
    return 0;
  }

 private:
  // --serve: the cluster stays up until SIGTERM or SIGINT.
  int serve(double placed_s) {
    std::printf("serving http://127.0.0.1:%d (%d hosts, %d VMs, all running after %.1f s)\n", port_, n_,
                n_ * per_host_, placed_s);
    std::fflush(stdout);
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGTERM);
    sigaddset(&stop_signals, SIGINT);
    int sig = 0;
    sigwait(&stop_signals, &sig);
    return 0;
  }

  int fail(const std::string& why) {
    std::fprintf(stderr, "scale (%d hosts): %s\n", n_, why.c_str());
    return 1;
  }

  bool startController() {
    port_ = freePort();
    agent_port_ = freePort();
    std::vector<std::string> args = {bin_,
                                     "--state-dir", dir_,
                                     "--listen", "127.0.0.1:" + std::to_string(port_),
                                     "--agent-listen", "127.0.0.1:" + std::to_string(agent_port_),
                                     // Plain HTTP: the figures are the controller's own work (a TLS
                                     // handshake per request would dominate; bench/tls_heartbeat).
                                     "--guest-listen", "127.0.0.1:" + std::to_string(freePort()),
                                     "--insecure-http",
                                     "--log-level", "warn",
                                     "--backup-interval-min", "0"};
    if (!web_dir_.empty()) {
      args.push_back("--web-dir");
      args.push_back(web_dir_);
      args.push_back("--public-read");
    }
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    const std::string log = dir_ + "/controller.log";
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    int rc = posix_spawn(&pid_, bin_.c_str(), &fa, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) {
      fail("cannot start " + bin_);
      return false;
    }
    tw::ApiClientOptions o;
    o.base_url = "http://127.0.0.1:" + std::to_string(port_);
    tw::ApiClient probe(o);
    for (int i = 0; i < 300; ++i) {
      // Up once it answers at all (without a token: 401).
      if (probe.get("/api/v1/cluster").status().code() != tw::Code::kUnavailable) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    fail("the controller did not answer in 30 s (see " + log + ")");
    return false;
  }

  // The controller's /metrics text ("" when it does not answer).
  std::string scrapeMetrics() {
    httplib::Client metrics("127.0.0.1", port_);
    metrics.set_read_timeout(30, 0);
    auto r = metrics.Get("/metrics", {{"Authorization", "Bearer " + op_token_}});
    return r && r->status == 200 ? r->body : std::string();
  }

  bool applyPolicy() {
    std::ostringstream hosts;
    hosts << "cluster:\n  n_plus_one: off\n";
    // --serve: the browser test looks at a page, not at flaps of a load
    // generator that shares 2 cores with it and with chromium.
    if (!web_dir_.empty()) hosts << "  suspect_after_missed: 3\n  dead_after: 10s\n  lease: 15s\n";
    hosts << "hosts:\n";
    for (int i = 1; i <= n_; ++i) {
      hosts << "  - name: " << hostName(i) << "\n    capacity: { cpus: 64, memory: 256GiB }\n";
    }
    std::ostringstream tiers;
    tiers << "tiers:\n";
    const int tier_count = std::max(10, (n_ * per_host_ + 999) / 1000);  // <= 1,000 replicas each
    for (int t = 1; t <= tier_count; ++t) {
      tiers << "  - name: tier" << t << "\n    image: tiny\n    replicas: "
            << n_ * per_host_ / tier_count << "\n    memory: 512MiB\n";
    }
    for (const auto& [name, text] : {std::pair<std::string, std::string>{"hosts.yaml", hosts.str()},
                                     {"tiers.yaml", tiers.str()}}) {
      tw::Json body{{"files", tw::Json::array({tw::Json{{"name", name}, {"content", text}}})}};
      auto r = api_->post("/api/v1/policies", body);
      if (!r.isOk()) {
        fail("applying " + name + ": " + r.status().toString());
        return false;
      }
    }
    return true;
  }

  // One worker: its share of the agents, each run when it has something due.
  void work(int index) {
    std::vector<BenchHost*> mine;
    for (size_t i = static_cast<size_t>(index); i < hosts_.size(); i += static_cast<size_t>(threads_))
      mine.push_back(hosts_[i].get());
    while (!stop_) {
      const int64_t now = tw::SystemClock::instance().nowMs();
      for (BenchHost* h : mine) {
        if (h->stopped) continue;
        if (h->stop_requested) {
          // Power lost: its VMs are gone with it, no events (here, on the
          // thread that owns its hypervisor).
          h->hv->powerOff();
          std::lock_guard<std::mutex> lock(h->events_mu);
          h->active.clear();
          h->stopped = true;
          continue;
        }
        std::vector<tw::DomainEvent> events;
        std::optional<tw::AssignmentSet> pushed;
        {
          std::lock_guard<std::mutex> lock(h->events_mu);
          events.swap(h->events);
          pushed.swap(h->pushed);
        }
        for (const auto& e : events) h->agent->onDomainEvent(e);
        if (pushed) {
          g_stages.noteSet(twbench::FenceStages::kAtAgent, *pushed, wallMs());
          h->agent->onAssignments(*pushed);
        }
        if (events.empty() && !pushed && h->agent->nextWakeMs() > now) continue;
        h->agent->runOnce();
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }

  // VM name -> host: the domains the hosts' workers saw start and not stop
  // (BenchHost::active; no hypervisor is called from this thread).
  std::map<std::string, std::string> running() {
    std::map<std::string, std::string> out;
    for (auto& h : hosts_) {
      if (h->stopped) continue;
      std::lock_guard<std::mutex> lock(h->events_mu);
      for (const auto& vm : h->active) out[vm] = h->name;
    }
    return out;
  }

  size_t runningCount() {
    size_t n = 0;
    for (auto& h : hosts_) {
      std::lock_guard<std::mutex> lock(h->events_mu);
      n += h->active.size();
    }
    return n;
  }

  bool waitAllRunning(std::chrono::seconds limit) {
    const auto until = Steady::now() + limit;
    while (Steady::now() < until) {
      if (static_cast<int>(runningCount()) >= n_ * per_host_) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    return false;
  }

  // What this bench did before (bench/scale at 829358f) to see whether the
  // displaced VMs run: every hypervisor listed, every 2 ms. Timed once after
  // the workers stopped (it raced with them: FakeHypervisor is not
  // thread-safe): the CPU that poll took from the 2 cores while the figure
  // was measured. Milliseconds per walk.
  double oldWalkMs() {
    const auto t0 = Steady::now();
    constexpr int kWalks = 5;
    size_t seen = 0;
    for (int i = 0; i < kWalks; ++i) {
      std::map<std::string, std::string> out;
      for (auto& h : hosts_) {
        if (h->stopped) continue;
        auto listed = h->hv->listManaged();
        if (!listed.isOk()) continue;
        for (const auto& d : *listed)
          if (tw::isActive(d.state)) out[d.meta.vm] = h->name;
      }
      seen += out.size();
    }
    if (seen == 0) return 0;
    return std::chrono::duration<double, std::milli>(Steady::now() - t0).count() / kWalks;
  }

  // The controller's events after `after` (its id moves on): fn(event) each.
  template <typename F>
  void readEvents(int64_t* after, F fn) {
    for (;;) {
      auto page = api_->get("/api/v1/events?since=" + std::to_string(*after) + "&limit=1000");
      if (!page.isOk() || (*page)["events"].empty()) return;
      for (const auto& e : (*page)["events"]) fn(e);
      *after = (*page)["last_id"].get<int64_t>();
    }
  }

  // One host's agent stops; its lease fence; its VMs through the stages of
  // bench/fence_stages.h. The times are the controller's event times (t_ms)
  // and what the load generator's threads noted when they did it: the
  // events are read every 50 ms, and how often does not change a figure.
  // Host hostName(i)'s row of GET /api/v1/hosts: the page of one after the
  // host before it (none before h0001: ?after= must name a declared host).
  tw::Result<tw::Json> hostRow(int i) {
    auto page = api_->get(i > 1 ? "/api/v1/hosts?limit=1&after=" + hostName(i - 1) : "/api/v1/hosts?limit=1");
    if (!page.isOk()) return page.status();
    if ((*page)["hosts"].empty() || (*page)["hosts"][0].value("name", "") != hostName(i)) {
      return tw::notFound("no row for host " + hostName(i));
    }
    return (*page)["hosts"][0];
  }

  void fenceToPlaced(Figures* out) {
    // The first host from the middle on that runs VMs now (on a loaded
    // machine a host may have been fenced and emptied before).
    size_t victim_index = hosts_.size() / 2;
    std::set<std::string> displaced;
    for (size_t k = 0; k < hosts_.size(); ++k) {
      const size_t i = (hosts_.size() / 2 + k) % hosts_.size();
      std::lock_guard<std::mutex> lock(hosts_[i]->events_mu);
      if (hosts_[i]->active.size() > displaced.size()) {
        displaced = hosts_[i]->active;
        victim_index = i;
      }
      if (static_cast<int>(displaced.size()) >= per_host_) break;
    }
    BenchHost& victim = *hosts_[victim_index];
    if (displaced.empty()) {
      fail("no host runs a VM");
      return;
    }
    // The newest event's id (?since=0&limit=1, as this bench asked before,
    // gave the first one's: it then read every event since the start, 1,000
    // a page, through the controller's loop).
    auto last = api_->get("/api/v1/events?tail=1");
    int64_t after = last.isOk() ? (*last)["last_id"].get<int64_t>() : 0;
    g_stages.watch(victim.name, displaced);
    const int64_t builds0 = twbench::metricValue(scrapeMetrics(), "tierwarden_assignment_set_builds_total");
    // Its agent is gone (the process died): no heartbeats, no lease held;
    // its VMs stop with it (power lost).
    victim.link->endPolling();
    outages_.stop(victim.name, tw::SystemClock::instance().nowMs());
    victim.stop_requested = true;
    int64_t fenced_ms = -1;
    auto onEvent = [&](const tw::Json& e) {
      const std::string kind = e["kind"].get<std::string>();
      const std::string subject = e["subject"].get<std::string>();
      const int64_t t = e["t_ms"].get<int64_t>();
      if (kind == "host.fenced" && subject == "host/" + victim.name) fenced_ms = t;
      if (subject.rfind("vm/", 0) != 0) return;
      const std::string vm = subject.substr(3);
      if (kind == "vm.placed") g_stages.note(twbench::FenceStages::kPlaced, "", vm, t);
      if (kind == "vm.starting") g_stages.note(twbench::FenceStages::kAssigned, "", vm, t);
      if (kind == "vm.running") g_stages.note(twbench::FenceStages::kRunning, "", vm, t);
    };
    const auto until = Steady::now() + std::chrono::seconds(120);
    while (Steady::now() < until && fenced_ms < 0) {
      readEvents(&after, onEvent);
      if (fenced_ms < 0) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    if (fenced_ms < 0) {
      auto row = hostRow(static_cast<int>(victim_index) + 1);
      std::string state = row.isOk() ? (*row)["state"].get<std::string>() + ": " + row->value("reason", "")
                                     : row.status().toString();
      fail("host " + victim.name + " was not fenced in 120 s (it is " + state + ")");
      // What the controller said about it: the reason it did not fence.
      for (int64_t since = 0;;) {
        auto page = api_->get("/api/v1/events?since=" + std::to_string(since) + "&limit=1000");
        if (!page.isOk() || (*page)["events"].empty()) break;
        for (const auto& e : (*page)["events"]) {
          if (e["subject"] == "host/" + victim.name)
            std::fprintf(stderr, "  %s %s: %s\n", e["kind"].get<std::string>().c_str(),
                         e["level"].get<std::string>().c_str(), e["message"].get<std::string>().c_str());
        }
        since = (*page)["last_id"].get<int64_t>();
      }
      return;
    }
    using S = twbench::FenceStages;
    while (Steady::now() < until &&
           !(g_stages.all(S::kStarted) && g_stages.all(S::kReported) && g_stages.all(S::kRunning))) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      readEvents(&after, onEvent);
    }
    const S::Summary summary = g_stages.summarize(fenced_ms);
    out->fence_stages = S::describe(summary);
    out->fence_to_assigned_s = summary.to_stage_s[S::kAssigned];
    out->fence_to_placed_s = summary.to_stage_s[S::kStarted];
    const int64_t builds1 = twbench::metricValue(scrapeMetrics(), "tierwarden_assignment_set_builds_total");
    if (builds0 >= 0 && builds1 >= 0) out->fence_set_builds = builds1 - builds0;
    if (g_stages.all(S::kStarted)) return;
    fail("the VMs of " + victim.name + " were not all running elsewhere in 120 s");
    {
      auto now = running();
      for (const auto& vm : displaced) {
        if (now.count(vm)) continue;
        auto v = api_->get("/api/v1/vms/" + vm);
        if (!v.isOk()) {
          std::fprintf(stderr, "  %s: %s\n", vm.c_str(), v.status().toString().c_str());
          continue;
        }
        const std::string dest = v->value("host", "");
        std::string on_dest = "(no such bench host)";
        for (auto& h : hosts_) {
          if (h->name != dest) continue;
          on_dest = "";
          {
            std::lock_guard<std::mutex> lock(h->events_mu);
            for (const auto& d : h->active) on_dest += d + " ";
          }
          // What its agent holds: the set it runs, its lease, when it runs next
          // (read while its worker runs: a diagnosis, not a figure).
          const int64_t now = tw::SystemClock::instance().nowMs();
          on_dest += "| agent: set v" + std::to_string(h->agent->assignmentsVersion()) + ", lease " +
                     tw::toString(h->agent->leaseState()) + ", seq " + std::to_string(h->agent->heartbeatSeq()) +
                     ", next pass in " + std::to_string(h->agent->nextWakeMs() - now) + " ms";
          if (!h->agent->selfFenceReason().empty()) on_dest += ", self-fenced: " + h->agent->selfFenceReason();
          auto host = hostRow(std::stoi(dest.substr(1)));
          if (host.isOk()) {
            const auto& hj = *host;
            on_dest += " | controller: " + hj.value("state", "?") + " (" + hj.value("reason", "") + "), set v" +
                       (hj.contains("assignments_version") ? hj["assignments_version"].dump() : "?");
          }
        }
        std::fprintf(stderr, "  %s: state %s, epoch %s, host %s (%s); running on %s: %s\n", vm.c_str(),
                     v->value("state", "?").c_str(), v->contains("epoch") ? (*v)["epoch"].dump().c_str() : "?",
                     dest.c_str(), v->value("reason", "").c_str(), dest.c_str(), on_dest.c_str());
      }
      std::fprintf(stderr, "  stages: %s\n", out->fence_stages.c_str());
    }
  }

  void stop() {
    stop_ = true;
    for (auto& w : workers_) w.join();
    workers_.clear();
    // The long polls end with the controller (each would wait up to 25 s).
    for (auto& h : hosts_) h->link->endPolling();
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      int status = 0;
      ::waitpid(pid_, &status, 0);
      pid_ = 0;
    }
    hosts_.clear();
    if (!dir_.empty()) {
      std::error_code ec;
      fs::remove_all(dir_, ec);
      dir_.clear();
    }
  }

  const std::string bin_;
  const int n_, per_host_, steady_s_, threads_;
  const std::string web_dir_;  // --serve
  std::string dir_;
  pid_t pid_ = 0;
  int port_ = 0, agent_port_ = 0;
  std::string op_token_;  // the operator token (its /metrics)
  std::unique_ptr<tw::ApiClient> api_;
  Outages outages_;
  std::vector<std::unique_ptr<BenchHost>> hosts_;
  std::vector<std::thread> workers_;
  std::atomic<bool> stop_{false};
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"scale: one controller process and N agents over HTTP; prints figures"};
  std::vector<int> sizes = {100, 300, 1000};
  int per_host = 20;
  int steady_s = 20;
  int threads = 8;
  std::string controller = (fs::path(argv[0]).parent_path() / "tierwarden-controller").string();
  app.add_option("--hosts", sizes, "host counts to measure")->delimiter(',')->capture_default_str();
  app.add_option("--vms-per-host", per_host, "VMs per host")->capture_default_str();
  app.add_option("--steady-s", steady_s, "seconds of steady state measured")->capture_default_str();
  app.add_option("--threads", threads, "load generator threads")->capture_default_str();
  app.add_option("--converge-s", g_converge_s, "seconds every VM may take to run after the agents start")
      ->capture_default_str();
  app.add_option("--controller", controller, "the controller binary")->capture_default_str();
  bool no_compact = false;
  app.add_flag("--no-compact", no_compact, "every heartbeat carries its full report (no compact heartbeats)");
  bool no_push = false;
  app.add_flag("--no-push", no_push, "agents take sets from heartbeat answers only, not from their long poll");
  std::string serve_dir;
  app.add_option("--serve", serve_dir,
                 "keep the first size's cluster up, the controller serving this web dir (no figures)");
  CLI11_PARSE(app, argc, argv);
  g_compact = !no_compact;
  g_push = !no_push;
  if (!serve_dir.empty()) {
    // Blocked in every thread, so that serve()'s sigwait takes them.
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGTERM);
    sigaddset(&stop_signals, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
    tw::log::init("scale", "off");
    std::signal(SIGPIPE, SIG_IGN);
    Figures f;
    Bench bench(controller, sizes.empty() ? 1000 : sizes.front(), per_host, steady_s, threads,
                fs::absolute(serve_dir).string());
    return bench.run(&f);
  }
  tw::log::init("scale", "off");
  std::signal(SIGPIPE, SIG_IGN);

  std::printf("%6s %7s %9s %8s %8s %9s %9s %9s %11s %11s %8s %12s\n", "hosts", "vms", "cpu%", "hb p50",
              "hb p99", "hb/s", "rss MiB", "peak MiB", "fence>asg s", "fence>run s", "start s",
              "metrics KiB");
  int rc = 0;
  for (int n : sizes) {
    Figures f;
    {
      Bench bench(controller, n, per_host, steady_s, threads);
      rc |= bench.run(&f);
    }
    std::printf("%6d %7d %8.1f%% %6.1fms %6.1fms %9.0f %9.1f %9.1f %11.2f %11.2f %8.1f %12.1f\n", f.hosts,
                f.vms, f.cpu_pct, f.p50_ms, f.p99_ms,
                static_cast<double>(f.heartbeats) / std::max(1, steady_s), f.rss_mib, f.hwm_mib,
                f.fence_to_assigned_s, f.fence_to_placed_s, f.placed_all_s, f.metrics_kib);
    if (!f.fence_stages.empty()) {
      // Each stage: fence -> the first and the last of the host's VMs reaching it (s).
      std::printf("       fence -> %s\n", f.fence_stages.c_str());
    }
    if (f.fence_set_builds >= 0) {
      std::printf("       assignment sets built from the fence to every VM running: %lld (of %d hosts)\n",
                  static_cast<long long>(f.fence_set_builds), f.hosts);
    }
    if (f.old_walk_ms >= 0) {
      std::printf("       one walk of every hypervisor (what the bench polled every 2 ms before): %.2f ms\n",
                  f.old_walk_ms);
    }
    std::printf("       load average: %s\n", f.load.c_str());
    if (!f.paths.empty()) {
      // How the controller answered the steady window's heartbeats (tierwarden_heartbeats_total).
      int64_t all = 0;
      for (const auto& [path, k] : f.paths) all += k;
      std::printf("       heartbeats answered:");
      for (const auto& [path, k] : f.paths) {
        std::printf(" %s %lld (%.1f%%)", path.c_str(), static_cast<long long>(k),
                    all > 0 ? 100.0 * static_cast<double>(k) / static_cast<double>(all) : 0.0);
      }
      std::printf("; controller CPU %.3f ms per answered heartbeat; window began %.1f s after every VM ran\n",
                  f.cpu_ms_per_hb, f.settle_s);
      if (!f.misses.empty()) {
        // Why heartbeats left the fast path in the window (its misses by rule).
        std::printf("       fast path misses:");
        for (const auto& [why, k] : f.misses) std::printf(" %s %lld", why.c_str(), static_cast<long long>(k));
        std::printf("\n");
      }
    }
    if (f.heartbeat_errors > 0) {
      std::printf("       (%lld heartbeats failed in the steady window; the last: %s)\n",
                  static_cast<long long>(f.heartbeat_errors), f.last_error.c_str());
    }
    std::fflush(stdout);
  }
  return rc;
}
