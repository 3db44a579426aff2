// tierwarden-agent: parses flags, builds the components, runs the loop.
//
// Threads: the loop thread (main) owns the Agent and is the only one that calls
// it. The hypervisor's event thread and a long-poll thread only post work to
// the loop's queue; a signal thread turns SIGINT/SIGTERM into a stop. Stopping
// leaves every VM as it is.
#include <pthread.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <deque>
#include <fstream>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>

#include "agent/agent.h"
#include "tw/clock.h"
#include "tw/http_client.h"
#include "tw/hypervisor.h"
#include "tw/log.h"

namespace {

// What the other threads hand to the loop thread.
class WorkQueue {
 public:
  struct Work {
    std::vector<tw::DomainEvent> events;
    std::optional<tw::AssignmentSet> set;  // the newest pushed set only
    bool stop = false;
  };

  void postEvent(const tw::DomainEvent& e) {
    std::lock_guard<std::mutex> lock(mu_);
    work_.events.push_back(e);
    cv_.notify_all();
  }
  void postSet(tw::AssignmentSet set) {
    std::lock_guard<std::mutex> lock(mu_);
    work_.set = std::move(set);
    cv_.notify_all();
  }
  void stop() {
    std::lock_guard<std::mutex> lock(mu_);
    work_.stop = true;
    cv_.notify_all();
  }
  bool stopping() {
    std::lock_guard<std::mutex> lock(mu_);
    return work_.stop;
  }
  // Waits until work arrives or the wall clock reaches `until_ms` (SystemClock
  // time), then takes what is queued (the stop flag stays set).
  Work waitUntil(tw::Millis until_ms) {
    std::unique_lock<std::mutex> lock(mu_);
    const auto deadline =
        std::chrono::system_clock::time_point(std::chrono::milliseconds(until_ms));
    cv_.wait_until(lock, deadline,
                   [&] { return work_.stop || !work_.events.empty() || work_.set.has_value(); });
    Work out;
    out.events.swap(work_.events);
    out.set.swap(work_.set);
    out.stop = work_.stop;
    return out;
  }
  // Sleeps up to `ms`, returning early (true) when stopping.
  bool sleepOrStop(tw::Millis ms) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, std::chrono::milliseconds(ms), [&] { return work_.stop; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  Work work_;  // guarded by mu_
};

// Long-polls the controller for new assignment sets and posts them to the loop.
void pollAssignments(std::shared_ptr<tw::HttpControllerLink> link, std::shared_ptr<WorkQueue> queue,
                     std::string host) {
  int64_t known_version = 0;
  std::optional<tw::Code> condition;
  while (!queue->stopping()) {
    tw::Result<tw::AssignmentSet> set = link->waitAssignments(host, known_version, 25000);
    if (queue->stopping()) return;
    if (!set) {
      if (condition != set.status().code()) {  // the heartbeat logs the details
        tw::log::debug("long poll for assignments failed: {}", set.status().toString());
      }
      condition = set.status().code();
      if (queue->sleepOrStop(1000)) return;
      continue;
    }
    condition.reset();
    if (set->version > known_version) queue->postSet(*set);
    known_version = set->version;
  }
}

tw::Result<std::string> readToken(const std::string& path) {
  std::ifstream in(path);
  if (!in) return tw::invalidArgument("cannot read token file " + path);
  std::string token;
  std::getline(in, token);
  while (!token.empty() && (token.back() == '\r' || token.back() == ' ')) token.pop_back();
  if (token.empty()) return tw::invalidArgument("token file " + path + " is empty");
  return token;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"tierwarden-agent: keeps this host's VMs as the controller assigns them"};
  std::string controller = tw::kDefaultControllerUrl;
  std::string token;
  std::string token_file;
  std::string host;
  std::string libvirt_uri = "qemu:///system";
  std::string disk_dir = "/var/lib/tierwarden/disks";
  std::string log_level = "info";
  app.add_option("--controller", controller, "controller base URL")->capture_default_str();
  auto* token_opt = app.add_option("--token", token, "API token");
  auto* token_file_opt = app.add_option("--token-file", token_file, "file holding the API token");
  token_opt->excludes(token_file_opt);
  app.add_option("--host", host, "this host's name, as declared in the policy")->required();
  app.add_option("--libvirt-uri", libvirt_uri, "local libvirt URI")->capture_default_str();
  app.add_option("--disk-dir", disk_dir, "where VM disk overlays go")->capture_default_str();
  app.add_option("--log-level", log_level, "debug|info|warn|error")->capture_default_str();
  try {
    app.parse(argc, argv);
    if (token.empty() && token_file.empty()) {
      throw CLI::RequiredError("--token or --token-file");
    }
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  tw::log::init("agent " + host, log_level);

  if (tw::Status st = tw::checkBaseUrl(controller); !st.isOk()) {
    tw::log::error("{}", st.toString());
    return 2;
  }
  if (!token_file.empty()) {
    tw::Result<std::string> read = readToken(token_file);
    if (!read) {
      tw::log::error("{}", read.status().toString());
      return 2;
    }
    token = *read;
  }

  // SIGINT/SIGTERM go to the signal thread only: block them before any thread starts.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  tw::Result<std::unique_ptr<tw::Hypervisor>> hv = tw::connectLibvirt(libvirt_uri);
  if (!hv) {
    tw::log::error("connecting to libvirt at '{}': {}", libvirt_uri, hv.status().toString());
    return 1;
  }
  tw::ApiClientOptions api;
  api.base_url = controller;
  api.token = token;
  auto link = std::make_shared<tw::HttpControllerLink>(api);
  auto queue = std::make_shared<WorkQueue>();

  tw::AgentOptions options;
  options.host = host;
  options.agent_id = tw::newAgentId();
  options.disk_dir = disk_dir;
  // libvirt's test driver runs no guest: a running domain passes its check there.
  tw::DomainRunningProber running_prober;
  bool test_driver = libvirt_uri.rfind("test", 0) == 0;
  if (test_driver) tw::log::info("test driver: health checks pass while a domain runs");
  tw::Agent agent(options, **hv, *link, tw::SystemClock::instance(),
                  test_driver ? &running_prober : nullptr);

  if (tw::Status st = (*hv)->subscribe([queue](const tw::DomainEvent& e) { queue->postEvent(e); });
      !st.isOk()) {
    tw::log::error("subscribing to domain events: {}", st.toString());
    return 1;
  }
  if (tw::Status st = agent.start(); !st.isOk()) {
    tw::log::error("starting: {}", st.toString());
    return 1;
  }

  std::thread signal_thread([queue, signals] {
    int sig = 0;
    sigwait(&signals, &sig);
    tw::log::info("signal {}: stopping (VMs keep running)", sig);
    queue->stop();
  });
  std::thread poller(pollAssignments, link, queue, host);

  tw::log::info("agent '{}' for host '{}' started (controller {}, libvirt {})", options.agent_id,
                host, controller, libvirt_uri);
  for (;;) {
    WorkQueue::Work work = queue->waitUntil(agent.nextWakeMs());
    if (work.stop) break;
    for (const tw::DomainEvent& e : work.events) agent.onDomainEvent(e);
    if (work.set) agent.onAssignments(*work.set);
    agent.runOnce();
  }

  signal_thread.join();
  // The long poll may block for up to 25 s and cannot be interrupted: leave it
  // behind. It holds its own references to the link and the queue, and exits
  // with the process.
  poller.detach();
  (*hv)->subscribe([](const tw::DomainEvent&) {});
  tw::log::info("stopped");
  return 0;
}
