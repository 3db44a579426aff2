// tierwarden-agent: parses flags, builds the components, runs the loop.
//
// Threads: the loop thread (main) owns the Agent and is the only one that calls
// it. The hypervisor's event thread and a long-poll thread only post work to
// the loop's queue; a signal thread turns SIGINT/SIGTERM into a stop. A
// migration thread runs the live migrations the Agent hands out, on a libvirt
// connection of its own (a migration blocks its connection for about a second,
// and heartbeats must go on), and posts each outcome to the loop. The health
// prober's thread probes the VMs' services and wakes the loop when a verdict
// changes. A watchdog thread pets the host watchdog (agent/host_watchdog.h)
// while the agent is entitled to run its VMs; it never waits for libvirt,
// HTTP or the loop. Stopping leaves every VM as it is, and the watchdog
// armed while any of them runs (docs/fencing.md, "Host watchdog").
#include <pthread.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <deque>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>

#include "agent/agent.h"
#include "agent/agent_state.h"
#include "agent/backup_runner.h"
#include "agent/backup_worker.h"
#include "agent/host_watchdog.h"
#include "agent/health_prober.h"
#include "agent/peer_monitor.h"
#include "agent/port_map.h"
#include "tw/clock.h"
#include "tw/http_client.h"
#include "tw/hypervisor.h"
#include "tw/log.h"

namespace {

// What the other threads hand to the loop thread.
class WorkQueue {
 public:
  struct MigrationDone {
    std::string vm;
    int64_t migrate_epoch = 0;
    tw::Status outcome;
  };
  struct Work {
    std::vector<tw::DomainEvent> events;
    std::optional<tw::AssignmentSet> set;  // the newest pushed set only
    std::vector<MigrationDone> migrations;
    std::vector<tw::BackupOutcome> backups;
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
  void postMigrationDone(MigrationDone done) {
    std::lock_guard<std::mutex> lock(mu_);
    work_.migrations.push_back(std::move(done));
    cv_.notify_all();
  }
  void postBackupDone(tw::BackupOutcome done) {
    std::lock_guard<std::mutex> lock(mu_);
    work_.backups.push_back(std::move(done));
    cv_.notify_all();
  }
  // Something changed that the next runOnce() reads (a health verdict).
  void wake() {
    std::lock_guard<std::mutex> lock(mu_);
    woken_ = true;
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
    cv_.wait_until(lock, deadline, [&] {
      return work_.stop || woken_ || !work_.events.empty() || work_.set.has_value() ||
             !work_.migrations.empty() || !work_.backups.empty();
    });
    Work out;
    out.events.swap(work_.events);
    out.set.swap(work_.set);
    out.migrations.swap(work_.migrations);
    out.backups.swap(work_.backups);
    out.stop = work_.stop;
    woken_ = false;
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
  Work work_;           // guarded by mu_
  bool woken_ = false;  // guarded by mu_
};

// Runs the Agent's migrations one after another on a libvirt connection of its
// own (opened at the first one, reopened after a failure to connect), and
// posts each outcome to the loop. Shared with its thread, which may outlive
// main's scope (a migration cannot be interrupted): it holds what it uses.
class MigrationWorker {
 public:
  MigrationWorker(std::string libvirt_uri, std::shared_ptr<WorkQueue> loop)
      : uri_(std::move(libvirt_uri)), loop_(std::move(loop)) {}

  void post(tw::MigrationRequest request) {
    std::lock_guard<std::mutex> lock(mu_);
    todo_.push_back(std::move(request));
    cv_.notify_all();
  }
  void stop() {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    cv_.notify_all();
  }

  static void run(std::shared_ptr<MigrationWorker> self) {
    for (;;) {
      tw::MigrationRequest r;
      {
        std::unique_lock<std::mutex> lock(self->mu_);
        self->cv_.wait(lock, [&] { return self->stop_ || !self->todo_.empty(); });
        if (self->stop_) return;
        r = std::move(self->todo_.front());
        self->todo_.pop_front();
      }
      tw::Status outcome = self->migrate(r);
      self->loop_->postMigrationDone(
          WorkQueue::MigrationDone{r.vm, r.migrate_epoch, std::move(outcome)});
    }
  }

 private:
  tw::Status migrate(const tw::MigrationRequest& r) {
    if (!hv_) {
      tw::Result<std::unique_ptr<tw::Hypervisor>> hv = tw::connectLibvirt(uri_);
      if (!hv) return hv.status().withContext("connecting for the migration");
      hv_ = std::move(*hv);
    }
    // A disk-copying migration needs the destination's overlay, which its
    // agent creates when the assignment reaches it, in the same moment as
    // ours: a first failure may just be too early. Retried a few times.
    tw::Status st = hv_->migrate(r.vm, r.dest_uri, r.options);
    for (int retry = 1; !st.isOk() && r.options.copy_storage && retry <= 4; ++retry) {
      tw::log::info("migrating vm '{}': {}; trying again ({} of 4)", r.vm, st.message(), retry);
      std::this_thread::sleep_for(std::chrono::milliseconds(400));
      st = hv_->migrate(r.vm, r.dest_uri, r.options);
    }
    return st;
  }

  const std::string uri_;
  const std::shared_ptr<WorkQueue> loop_;
  std::unique_ptr<tw::Hypervisor> hv_;  // the worker thread's only
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<tw::MigrationRequest> todo_;  // guarded by mu_
  bool stop_ = false;                      // guarded by mu_
};

// Long-polls the controller for new assignment sets and posts them to the loop.
void pollAssignments(std::shared_ptr<tw::HttpControllerLink> link, std::shared_ptr<WorkQueue> queue,
                     std::string host) {
  int64_t known_version = 0;
  // The last failure's code, to log a change of condition once (-1 = none);
  // an int, not std::optional: g++ 12 -O2 warns maybe-uninitialized on it.
  int condition = -1;
  while (!queue->stopping()) {
    tw::Result<tw::AssignmentSet> set = link->waitAssignments(host, known_version, 25000);
    if (queue->stopping()) return;
    if (!set) {
      if (condition != static_cast<int>(set.status().code())) {  // the heartbeat logs the details
        tw::log::debug("long poll for assignments failed: {}", set.status().toString());
      }
      condition = static_cast<int>(set.status().code());
      if (queue->sleepOrStop(1000)) return;
      continue;
    }
    condition = -1;
    if (set->version > known_version) queue->postSet(*set);
    known_version = set->version;
  }
}

// Where guests poll tier endpoints, from the agents' URL: the same
// HOST:PORT when it is plain HTTP ("http://127.0.0.1:8080/" ->
// "127.0.0.1:8080", port 80 when none); with https:// the controller's
// guests' listener, by default its port + 2 (--guest-listen).
std::string guestApiOf(const std::string& url) {
  std::string rest = url;
  const size_t scheme = rest.find("://");
  const bool https = url.rfind("https://", 0) == 0;
  if (scheme != std::string::npos) rest = rest.substr(scheme + 3);
  rest = rest.substr(0, rest.find('/'));
  const size_t colon = rest.rfind(':');
  const bool has_port = colon != std::string::npos && rest.find(']', colon) == std::string::npos;
  if (!https) return has_port ? rest : rest + ":80";
  int port = has_port ? std::atoi(rest.c_str() + colon + 1) : 443;
  return (has_port ? rest.substr(0, colon) : rest) + ":" + std::to_string(port + 2);
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
  std::string controller = tw::kDefaultAgentControllerUrl;
  std::string token;
  std::string token_file;
  std::string peer_token_file;
  std::string bundle_dir;
  std::string ca_file, cert_file, key_file;
  std::string host;
  std::string libvirt_uri = "qemu:///system";
  std::string disk_dir = "/var/lib/tierwarden/disks";
  std::string images_dir = "/var/cache/tierwarden/images";
  std::string service_address = "127.0.0.1";
  std::string address_interface;
  bool no_floating_addresses = false;
  std::string api_address;
  std::string peer_listen = "127.0.0.1:0";
  std::string peer_address;
  std::string log_level = "info";
  int port_base = 20000;
  int port_count = 1000;
  std::string watchdog_spec = "none";
  int watchdog_timeout_s = 5;
  int start_timeout_s = 60;
  std::string state_dir;
  app.add_option("--controller", controller,
                 "the controller's agents' listener (its --agent-listen); http:// only when the "
                 "controller runs with --insecure-http. Several replicas (docs/ha.md): URL,URL,... "
                 "(the agent follows the leader; guests poll the first one)")
      ->capture_default_str();
  app.add_option("--bundle", bundle_dir,
                 "this host's bundle directory as 'tierwarden-controller issue-host NAME --out DIR' wrote it: "
                 "token, peer-token, ca.pem, host.pem, host.key (the flags below override its files)");
  app.add_option("--ca", ca_file, "the controller's CA certificate (PEM; default: ca.pem of --bundle)");
  app.add_option("--cert", cert_file, "this host's client certificate, CN = --host (default: host.pem of --bundle)");
  app.add_option("--key", key_file, "its private key (default: host.key of --bundle)");
  auto* token_opt = app.add_option("--token", token, "this host's agent token (tierwarden-controller issue-host)");
  auto* token_file_opt = app.add_option("--token-file", token_file, "file holding this host's agent token");
  token_opt->excludes(token_file_opt);
  app.add_option("--peer-token-file", peer_token_file,
                 "file holding the cluster's peer token, which agents present to each other's peer checks "
                 "(default: 'peer-token' beside --token-file, as issue-host writes it)");
  app.add_option("--host", host, "this host's name, as declared in the policy")->required();
  app.add_option("--libvirt-uri", libvirt_uri, "local libvirt URI")->capture_default_str();
  app.add_option("--disk-dir", disk_dir, "where VM disk overlays and console logs go")
      ->capture_default_str();
  app.add_option("--images", images_dir, "tier image dir (images/build --cache DIR)")
      ->capture_default_str();
  app.add_option("--service-address", service_address,
                 "IPv4 address the VMs' service port forwards listen on")
      ->capture_default_str();
  app.add_option("--address-interface", address_interface,
                 "interface for a tier's floating address (policy address:) that no interface's "
                 "subnet holds and whose policy names none");
  app.add_flag("--no-floating-addresses", no_floating_addresses,
               "never add a tier's floating address on this host (hosts sharing one network "
               "namespace, as scripts/hosts without --net)");
  app.add_option("--api-address", api_address,
                 "the controller's HOST:PORT as guests should reach it (tw.api=, plain HTTP); default: "
                 "from --controller, its port + 2 (the controller's --guest-listen) when https://");
  app.add_option("--peer-listen", peer_listen,
                 "ADDR:PORT where this agent answers its peers' checks (port 0: any free port)")
      ->capture_default_str();
  app.add_option("--peer-address", peer_address,
                 "ADDR:PORT the other hosts' agents use to check this one (default: the bound "
                 "--peer-listen address)");
  app.add_option("--log-level", log_level, "debug|info|warn|error")->capture_default_str();
  app.add_option("--port-base", port_base, "first host port for VM service port forwards")
      ->check(CLI::Range(1, 65535))
      ->capture_default_str();
  app.add_option("--port-count", port_count, "how many host ports from --port-base")
      ->check(CLI::Range(1, 65535))
      ->capture_default_str();
  app.add_option("--watchdog", watchdog_spec,
                 "host watchdog that resets this host when the agent dies or a self-fence hangs: "
                 "a device (/dev/watchdog; `modprobe softdog` without a hardware one), "
                 "lab:PATH (scripts/hosts lab hosts) or none")
      ->capture_default_str();
  app.add_option("--watchdog-timeout", watchdog_timeout_s,
                 "seconds without a pet before the watchdog resets the host (W; at most the "
                 "cluster's lease, so that recovery by lease expiry grows by W only)")
      ->check(CLI::Range(1, 3600))
      ->capture_default_str();
  app.add_option("--start-timeout", start_timeout_s,
                 "seconds a VM start may take before the agent gives it up: reported as "
                 "failed, what it began destroyed, restarted within the restart budget "
                 "(keep it above libvirt's 30 s job wait; docs/fencing.md)")
      ->check(CLI::Range(1, 3600))
      ->capture_default_str();
  app.add_option("--state-dir", state_dir,
                 "where the agent keeps what a restarted agent needs to decide alone (peer list, "
                 "lease end, self-fence); default: --disk-dir");
  try {
    app.parse(argc, argv);
    if (!bundle_dir.empty()) {
      auto in_bundle = [&bundle_dir](std::string& slot, const char* name) {
        if (slot.empty()) slot = (std::filesystem::path(bundle_dir) / name).string();
      };
      if (token.empty()) in_bundle(token_file, "token");
      if (std::filesystem::exists(std::filesystem::path(bundle_dir) / "peer-token")) {
        in_bundle(peer_token_file, "peer-token");
      }
      in_bundle(ca_file, "ca.pem");
      in_bundle(cert_file, "host.pem");
      in_bundle(key_file, "host.key");
    }
    if (token.empty() && token_file.empty()) {
      throw CLI::RequiredError("--token or --token-file");
    }
    if (port_base + port_count - 1 > 65535) {
      throw CLI::ValidationError("--port-count", "the port range ends past 65535");
    }
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  tw::log::init("agent " + host, log_level);
  tw::Result<std::unique_ptr<tw::HostWatchdog>> watchdog =
      tw::makeHostWatchdog(watchdog_spec, static_cast<tw::Millis>(watchdog_timeout_s) * 1000);
  if (!watchdog) {
    tw::log::error("{}", watchdog.status().toString());
    return 2;
  }
  if (state_dir.empty()) state_dir = disk_dir;

  if (tw::Status st = tw::checkBaseUrl(controller); !st.isOk()) {
    tw::log::error("{}", st.toString());
    return 2;
  }
  tw::ApiClientOptions api;
  api.base_url = controller;
  if (controller.rfind("https://", 0) == 0) {
    api.ca_file = ca_file;
    api.cert_file = cert_file;
    api.key_file = key_file;
    if (ca_file.empty() || cert_file.empty()) {
      tw::log::error("an https:// controller needs --ca, --cert and --key (or --bundle DIR from "
                     "'tierwarden-controller issue-host {} --out DIR')", host);
      return 2;
    }
    if (tw::Status st = tw::checkTlsFiles(api); !st.isOk()) {
      tw::log::error("{}", st.toString());
      return 2;
    }
  } else {
    tw::log::warn("plain HTTP to the controller ({}): its token travels in clear (the controller runs "
                  "with --insecure-http)", controller);
  }
  if (!token_file.empty()) {
    tw::Result<std::string> read = readToken(token_file);
    if (!read) {
      tw::log::error("{}", read.status().toString());
      return 2;
    }
    token = *read;
  }
  // Peer checks (docs/fencing.md) use one secret that every agent holds; the
  // agent token is this host's own.
  std::string peer_token;
  if (peer_token_file.empty() && !token_file.empty()) {
    std::string beside = (std::filesystem::path(token_file).parent_path() / "peer-token").string();
    if (std::filesystem::exists(beside)) peer_token_file = beside;
  }
  if (!peer_token_file.empty()) {
    tw::Result<std::string> read = readToken(peer_token_file);
    if (!read) {
      tw::log::error("{}", read.status().toString());
      return 2;
    }
    peer_token = *read;
  } else {
    tw::log::warn("no peer token (--peer-token-file): peer checks use this agent's own token, which "
                  "only works while every agent shares one token");
    peer_token = token;
  }

  // SIGINT/SIGTERM go to the signal thread only: block them before any thread starts.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  // A write to a peer that went away (libvirtd restarted, the controller, a
  // guest's service) must be an error, not the death of the agent: libvirt's
  // remote client writes to its socket without MSG_NOSIGNAL.
  std::signal(SIGPIPE, SIG_IGN);

  tw::Result<std::unique_ptr<tw::Hypervisor>> hv = tw::connectLibvirt(libvirt_uri);
  if (!hv) {
    tw::log::error("connecting to libvirt at '{}': {}", libvirt_uri, hv.status().toString());
    return 1;
  }
  api.token = token;
  auto link = std::make_shared<tw::HttpControllerLink>(api);
  auto queue = std::make_shared<WorkQueue>();

  // Peer checks (docs/fencing.md): answered and made on threads of their own.
  tw::HttpPeerMonitor peers(host, peer_token, tw::SystemClock::instance());
  if (tw::Status st = peers.listen(peer_listen); !st.isOk()) {
    tw::log::error("{}", st.toString());
    return 1;
  }

  tw::AgentOptions options;
  options.peer_address = peer_address.empty() ? peers.boundAddress() : peer_address;
  options.host = host;
  options.agent_id = tw::newAgentId();
  options.service_address = service_address;
  options.port_base = port_base;
  options.port_count = port_count;
  options.boot_id = tw::currentBootId();
  options.start_timeout_ms = static_cast<tw::Millis>(start_timeout_s) * 1000;
  tw::PortMap ports(port_base, port_count);
  // libvirt's test driver runs no guest: a running domain passes its check there.
  tw::DomainRunningProber running_prober;
  tw::NetworkHealthProber network_prober(
      ports, service_address == "0.0.0.0" ? std::string("127.0.0.1") : service_address);
  bool test_driver = libvirt_uri.rfind("test", 0) == 0;
  if (test_driver) tw::log::info("test driver: health checks pass while a domain runs");
  tw::HealthProber* prober = test_driver ? static_cast<tw::HealthProber*>(&running_prober)
                                         : static_cast<tw::HealthProber*>(&network_prober);
  tw::ImageBuilderOptions image_options;
  image_options.images_dir = images_dir;
  image_options.disk_dir = disk_dir;
  image_options.host = host;
  image_options.api = api_address.empty() ? guestApiOf(controller.substr(0, controller.find(','))) : api_address;
  // Several replicas: a VM polls the one that answered our heartbeats last (the
  // leader), not the first of the list, which may be dead (docs/ha.md).
  if (api_address.empty() && controller.find(',') != std::string::npos) {
    image_options.api_now = [link] { return guestApiOf(link->baseUrl()); };
  }
  image_options.pool_dir = [&hv](const std::string& pool) { return (*hv)->storagePoolDir(pool); };
  tw::ImageDomainBuilder image_builder(image_options);
  tw::PlainDomainBuilder plain_builder;
  // The test driver boots nothing: plain domains, no disks.
  tw::DomainBuilder* builder = test_driver ? static_cast<tw::DomainBuilder*>(&plain_builder)
                                           : static_cast<tw::DomainBuilder*>(&image_builder);
  tw::Agent agent(options, **hv, *link, tw::SystemClock::instance(), prober, &ports, builder);
  // Heartbeats (and so the lease) on a thread of their own: they never wait
  // for libvirt, a VM start, a health probe or the loop (docs/fencing.md).
  agent.setExternalHeartbeats(true);
  agent.setPeerView(&peers);
  agent.setWakeCallback([queue] { queue->wake(); });
  std::error_code dir_error;
  std::filesystem::create_directories(state_dir, dir_error);
  // An incoming live migration writes the VM's console log here before this
  // agent has defined any VM itself (a spare's first VM): the directory must
  // exist from the start, or the migration fails.
  if (!test_driver) {
    std::error_code disk_error;
    std::filesystem::create_directories(disk_dir, disk_error);
    if (disk_error) tw::log::warn("cannot create the disk dir {}: {}", disk_dir, disk_error.message());
  }
  tw::FileAgentStateStore state_store(state_dir);
  agent.setStateStore(&state_store);
  // Floating addresses (docs/policy.md): not on the test driver, whose
  // "hosts" share this machine's network and forward nothing.
  tw::CommandHostNetwork host_network;
  tw::FloatingAddresses floating(host_network, **hv, address_interface);
  if (test_driver || no_floating_addresses) {
    tw::log::info("floating addresses: off ({})", test_driver ? "libvirt test driver" : "--no-floating-addresses");
  } else {
    agent.setFloatingAddresses(&floating);
  }
  // What heartbeats report for the controller's checks at apply
  // (agent/host_report.h): subnets, shared storage, DR places.
  tw::SystemHostInspector host_inspector(host_network, **hv);
  tw::HostReporter host_reporter(host_inspector, address_interface, options.agent_id,
                                 test_driver || no_floating_addresses);
  agent.setHostReporter(&host_reporter);
  auto migrator = std::make_shared<MigrationWorker>(libvirt_uri, queue);

  if (tw::Status st = (*hv)->subscribe([queue](const tw::DomainEvent& e) { queue->postEvent(e); });
      !st.isOk()) {
    tw::log::error("subscribing to domain events: {}", st.toString());
    return 1;
  }
  // The watchdog's timeout goes into heartbeats: the controller's lease
  // fence waits for it. Set before start(), which publishes the first one.
  tw::HostWatchdog& wd = **watchdog;
  if (tw::Status st = wd.open(); !st.isOk()) {
    tw::log::error("{}", st.toString());
    return 1;
  }
  agent.setWatchdogMs(wd.timeoutMs());
  if (tw::Status st = agent.start(); !st.isOk()) {
    tw::log::error("starting: {}", st.toString());
    return 1;  // the watchdog stays armed: systemd starts us again in time, or the host resets
  }
  if (wd.timeoutMs() > 0) tw::log::info("host watchdog: {}", wd.describe());

  std::thread signal_thread([queue, signals] {
    int sig = 0;
    sigwait(&signals, &sig);
    tw::log::info("signal {}: stopping (VMs keep running)", sig);
    queue->stop();
  });
  peers.start();
  std::atomic<bool> stopping{false};
  std::thread heartbeat_thread([&agent, &stopping] {
    while (!stopping) {
      const tw::Millis next = agent.heartbeatTick();
      const tw::Millis wait = std::clamp<tw::Millis>(next - tw::SystemClock::instance().nowMs(), 0, 50);
      std::this_thread::sleep_for(std::chrono::milliseconds(wait));
    }
  });
  // The watchdog's pets: a thread of its own that takes no lock but the
  // agent's lease mutex (held only for instants) and never waits for libvirt,
  // HTTP or the loop.
  std::thread watchdog_thread([&agent, &wd, &stopping] {
    tw::WatchdogPetter petter(wd, tw::SystemClock::instance(),
                              [&agent](tw::Millis now) { return agent.watchdogEntitled(now); });
    while (!stopping) {
      const tw::Millis next = petter.tick();
      const tw::Millis wait =
          std::clamp<tw::Millis>(next - tw::SystemClock::instance().nowMs(), 10, 1000);
      std::this_thread::sleep_for(std::chrono::milliseconds(wait));
    }
  });
  std::thread poller(pollAssignments, link, queue, host);
  std::thread migration_thread(MigrationWorker::run, migrator);
  // Backups: the schedule on the loop, the copies on a worker (docs/backups.md).
  tw::BackupRunner backup_runner(tw::SystemClock::instance(), host);
  auto backup_worker = std::make_shared<tw::BackupWorker>(
      libvirt_uri, [queue](tw::BackupOutcome o) { queue->postBackupDone(std::move(o)); });
  std::thread backup_thread(tw::BackupWorker::run, backup_worker);
  if (!test_driver) {
    network_prober.setOnVerdictChange([queue] { queue->wake(); });
    network_prober.start();
  }

  tw::log::info("agent '{}' for host '{}' started (controller {}, libvirt {}, peer checks on {})",
                options.agent_id, host, controller, libvirt_uri, options.peer_address);
  for (;;) {
    WorkQueue::Work work = queue->waitUntil(agent.nextWakeMs());
    if (work.stop) break;
    for (const tw::DomainEvent& e : work.events) agent.onDomainEvent(e);
    if (work.set) agent.onAssignments(*work.set);
    for (const WorkQueue::MigrationDone& done : work.migrations) {
      agent.onMigrationDone(done.vm, done.migrate_epoch, done.outcome);
    }
    for (const tw::BackupOutcome& done : work.backups) agent.report(backup_runner.finished(done));
    agent.runOnce();
    for (tw::MigrationRequest& r : agent.takeMigrations()) migrator->post(std::move(r));
    for (tw::BackupJob& job : backup_runner.due(agent.runningAssignments(),
                                                tw::BackupRunner::newestBackupMs)) {
      backup_worker->post(std::move(job));
    }
  }

  signal_thread.join();
  stopping = true;
  heartbeat_thread.join();
  watchdog_thread.join();
  // A clean stop disarms the watchdog only when no managed VM runs here:
  // else nothing would enforce the lease any more if the host were cut off
  // now, so the watchdog stays armed and resets the host W after the last
  // pet unless an agent starts again first (systemctl restart, an upgrade).
  // To stop the agent for longer, drain the host first.
  const bool nothing_runs = agent.runningManaged() == 0;
  wd.close(nothing_runs);
  if (wd.timeoutMs() > 0) {
    if (nothing_runs) {
      tw::log::info("host watchdog disarmed (no managed VM runs here)");
    } else {
      tw::log::warn("host watchdog left armed: {} managed VMs run here and nothing else "
                    "enforces the lease; the host is reset in {} s unless an agent starts again",
                    agent.runningManaged(), wd.timeoutMs() / 1000);
    }
  }
  peers.stop();
  network_prober.stop();
  // The long poll may block for up to 25 s, and a migration under way cannot
  // be interrupted: leave both behind. They hold their own references to what
  // they use, and exit with the process.
  poller.detach();
  migrator->stop();
  migration_thread.detach();
  backup_worker->stop();
  backup_thread.detach();
  (*hv)->subscribe([](const tw::DomainEvent&) {});
  tw::log::info("stopped");
  return 0;
}
