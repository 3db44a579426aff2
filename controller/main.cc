// tierwarden-controller: parses flags, builds the components, runs the loop.
#include <fcntl.h>
#include <malloc.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <iostream>
#include <thread>

#include "controller/api_server.h"
#include "controller/auth.h"
#include "controller/pki.h"
#include "controller/controller.h"
#include "controller/fence_agents.h"
#include "controller/leader_lease.h"
#include "controller/lease_runner.h"
#include "controller/libvirt_host_connector.h"
#include "controller/memory_trim.h"
#include "controller/replica.h"
#include "controller/replica_directory.h"
#include "controller/service.h"
#include "controller/state_guard.h"
#include "controller/tls.h"
#include "controller/store_setup.h"
#include "controller/follower_heartbeats.h"
#include "controller/leader_renewals.h"
#include "controller/lease_renewals.h"
#include "tw/log.h"
#include "tw/policy.h"
#include "tw/store.h"

namespace {
constexpr tw::Millis kTrimEveryMs = 60 * 1000;
constexpr size_t kTrimMinFreeBytes = 16 * 1024 * 1024;
}  // namespace

int main(int argc, char** argv) {
  // A fixed mmap threshold: buffers over 128 KiB (request bodies) go back to
  // the system when freed. glibc's moving threshold left 520 MiB resident
  // after hostile 7 MiB bodies (bench/http_memory).
  mallopt(M_MMAP_THRESHOLD, 128 * 1024);
  CLI::App app{"tierwarden-controller: keeps VM tiers placed, running and healed"};
  std::string state_dir = "/var/lib/tierwarden";
  std::string listen = "127.0.0.1:7800";
  std::string agent_listen;
  std::string guest_listen;
  bool insecure_http = false;
  std::string token_file;
  std::string policy_dir;
  std::string fence_agents_file;
  std::string web_dir = TW_DEFAULT_WEB_DIR;
  std::string log_level = "info";
  int tick_ms = 100;
  int backup_interval_min = 10;
  int backup_keep = 10;
  std::string restore_from;
  std::string store_url;
  tw::EtcdSettings etcd;
  int leader_ttl_ms = 3000;
  std::string identity;
  std::string advertise_url, advertise_agent_url;
  std::string migrate_from, migrate_to;
  bool migrate_force = false;
  bool public_read = false;
  std::string host_name;
  std::string bundle_dir;
  bool rotate_viewer = false;
  std::vector<std::string> sans;
  app.set_config("--config", "", "config file (key = value lines, the long flag names)");
  app.add_option("--state-dir", state_dir, "directory of the SQLite database and the token")->capture_default_str();
  app.add_option("--listen", listen, "address:port of the API and dashboard")->capture_default_str();
  app.add_option("--agent-listen", agent_listen,
                 "address:port where agents (and guests polling tier endpoints) reach the controller "
                 "(default: the --listen address, port + 1)");
  app.add_option("--guest-listen", guest_listen,
                 "address:port where guests (balancer VMs) poll tier endpoints over plain HTTP; they hold "
                 "no client certificate (default with TLS: the --agent-listen address, port + 2; with "
                 "--insecure-http: none, guests poll the agents' listener; 'off': none)");
  app.add_flag("--insecure-http", insecure_http,
               "serve plain HTTP instead of HTTPS, with no client certificates (demos and tests only: "
               "tokens cross the network in clear)");
  app.add_option("--token-file", token_file, "API token file (default <state-dir>/token; created on first start)");
  app.add_option("--policy-dir", policy_dir, "apply the *.yaml policies in this directory at start");
  app.add_option("--fence-agents", fence_agents_file,
                 "fence agents file: 'name = command' lines that policies name with fence: { agent: NAME } "
                 "(default /etc/tierwarden/fence-agents.conf when it exists)");
  app.add_option("--web-dir", web_dir, "dashboard files")->capture_default_str();
  app.add_option("--tick-ms", tick_ms, "reconcile loop period")->check(CLI::Range(10, 10000))->capture_default_str();
  app.add_option("--log-level", log_level, "debug|info|warn|error")->capture_default_str();
  app.add_option("--backup-interval-min", backup_interval_min,
                 "minutes between online backups into <state-dir>/backups (0 = only after applies)")
      ->check(CLI::Range(0, 10080))->capture_default_str();
  app.add_option("--backup-keep", backup_keep, "backups kept in <state-dir>/backups")
      ->check(CLI::Range(1, 1000))->capture_default_str();
  app.add_option("--store", store_url,
                 "etcd://HOST[:PORT][,HOST[:PORT]...]: keep the state in etcd and run as one of several "
                 "replicas (one leads); default: SQLite in --state-dir");
  app.add_option("--cluster", etcd.cluster, "with --store etcd://: the cluster's name (keys under /tierwarden/NAME)")
      ->capture_default_str();
  auto addEtcdTls = [&etcd](CLI::App* on) {
    on->add_option("--etcd-cacert", etcd.ca_file,
                   "with etcd://: the CA of the etcd members' certificates; given, the members are spoken to "
                   "over HTTPS (etcdctl's --cacert)");
    on->add_option("--etcd-cert", etcd.cert_file,
                   "with --etcd-cacert: this client's certificate, for etcd's --client-cert-auth (etcdctl's --cert)");
    on->add_option("--etcd-key", etcd.key_file, "the key of --etcd-cert (etcdctl's --key)");
  };
  addEtcdTls(&app);
  app.add_option("--etcd-max-txn-ops", etcd.max_txn_ops,
                 "etcd's --max-txn-ops (operations in one transaction); set both alike (scripts use 4096)")
      ->check(CLI::Range(8, 1 << 20))->capture_default_str();
  app.add_option("--etcd-max-request-bytes", etcd.max_request_bytes, "etcd's --max-request-bytes; set both alike")
      ->check(CLI::Range(int64_t{64} << 10, int64_t{1} << 31))->capture_default_str();
  app.add_option("--leader-ttl-ms", leader_ttl_ms,
                 "with etcd: the leader lease's TTL (whole seconds; at most the policy's dead_after); the leader "
                 "stops acting 1 s before it could run out")
      ->check(CLI::Range(2000, 60000))->capture_default_str();
  app.add_option("--identity", identity, "with etcd: this replica's name in the leader key (default host:port pid)");
  app.add_option("--advertise-url", advertise_url,
                 "the URL at which clients reach this replica's API (followers redirect there; shown by "
                 "GET /api/v1/controllers); default: from --listen (this machine's hostname for 0.0.0.0)");
  app.add_option("--advertise-agent-url", advertise_agent_url,
                 "the URL at which agents reach this replica's agents' listener; default: from --agent-listen");
  CLI::App* migrate_cmd = app.add_subcommand(
      "migrate-store", "copy every record, ids kept, from one store to another (stop the controllers first)");
  migrate_cmd->add_option("--from", migrate_from, "sqlite:STATE_DIR or etcd://HOST[:PORT],...")->required();
  migrate_cmd->add_option("--to", migrate_to, "sqlite:STATE_DIR or etcd://HOST[:PORT],...")->required();
  migrate_cmd->add_option("--cluster", etcd.cluster, "the etcd side's cluster name")->capture_default_str();
  migrate_cmd->add_option("--etcd-max-txn-ops", etcd.max_txn_ops, "etcd's --max-txn-ops")
      ->check(CLI::Range(8, 1 << 20))->capture_default_str();
  migrate_cmd->add_flag("--force", migrate_force, "replace what the target holds");
  addEtcdTls(migrate_cmd);
  app.add_flag("--public-read", public_read,
               "serve reads and the event stream without a token (a demo's dashboard); changes "
               "still need the operator token");
  CLI::App* issue_cmd = app.add_subcommand(
      "issue-host", "give host NAME a new agent token (its old one stops working) and write its bundle");
  issue_cmd->add_option("NAME", host_name, "the host's name, as the policy declares it")->required();
  issue_cmd->add_option("--state-dir", state_dir, "the controller's state dir")->capture_default_str();
  issue_cmd->add_option("--out", bundle_dir, "where the bundle goes (default <state-dir>/hosts/NAME)");
  CLI::App* revoke_cmd = app.add_subcommand("revoke-host", "remove host NAME's agent token");
  revoke_cmd->add_option("NAME", host_name, "the host's name")->required();
  revoke_cmd->add_option("--state-dir", state_dir, "the controller's state dir")->capture_default_str();
  CLI::App* rotate_cmd = app.add_subcommand(
      "rotate-token", "replace the operator token (or with --viewer the viewer token); a running "
                      "controller takes the new one at once and refuses the old");
  rotate_cmd->add_option("--state-dir", state_dir, "the controller's state dir")->capture_default_str();
  rotate_cmd->add_option("--token-file", token_file, "the operator token file (default <state-dir>/token)");
  rotate_cmd->add_flag("--viewer", rotate_viewer, "rotate <state-dir>/viewer-token instead");
  CLI::App* init_cmd = app.add_subcommand(
      "init", "make the state dir's CA (EC P-256), the controller's certificate and the operator token");
  init_cmd->add_option("--state-dir", state_dir, "the controller's state dir")->capture_default_str();
  init_cmd->add_option("--token-file", token_file,
                       "the operator token file to keep or create (default <state-dir>/token)");
  init_cmd->add_option("--san", sans,
                       "a DNS name or IP address agents and twctl use to reach the controller (repeatable; "
                       "default: this machine's hostname, localhost, 127.0.0.1)");
  CLI::App* restore_cmd = app.add_subcommand(
      "restore-state", "install a backup as the state dir's database (the controller must be stopped)");
  restore_cmd->add_option("--from", restore_from, "the backup file (e.g. <state-dir>/backups/tierwarden-...db)")
      ->required();
  restore_cmd->add_option("--state-dir", state_dir, "the state dir to restore into")->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  tw::log::init("controller", log_level);
  // SIGINT/SIGTERM are taken by one thread with sigwait (no work in a
  // handler). Blocked before any thread starts (libvirt watchers, the HTTP
  // listeners' watchdogs): a thread started earlier would take a TERM with
  // its default action and end the process without a clean stop.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  auto fail = [](const std::string& msg) {
    std::cerr << "tierwarden-controller: " << msg << "\n";
    return 1;
  };
  const tw::StatePaths state_paths(state_dir);
  if (migrate_cmd->parsed()) {
    auto from = tw::parseStoreLocation(migrate_from);
    if (!from.isOk()) return fail("--from: " + from.status().toString());
    auto to = tw::parseStoreLocation(migrate_to);
    if (!to.isOk()) return fail("--to: " + to.status().toString());
    auto done = tw::migrateStore(*from, *to, etcd, migrate_force);
    if (!done.isOk()) return fail(done.status().toString());
    std::cout << "tierwarden-controller: " << *done << "\n";
    return 0;
  }
  const tw::CredentialPaths credential_paths(state_dir, token_file);
  const tw::TlsPaths tls_paths(state_dir);
  if (init_cmd->parsed()) {
    tw::Status st = tw::initPki(tls_paths, sans);
    if (!st.isOk()) return fail(st.toString());
    // The database with the token: a token without one reads as a lost
    // database at the next start (state_guard.h).
    {
      auto lock = tw::StateDirLock::acquire(state_paths);
      if (!lock.isOk()) return fail(lock.status().toString());
      auto store = tw::Store::open(state_paths.db);
      if (!store.isOk()) return fail(store.status().toString());
    }
    auto token = tw::loadOrCreateTokenFile(credential_paths.operator_token);
    if (!token.isOk()) return fail(token.status().toString());
    std::cout << "CA " << tls_paths.ca_cert << ", controller certificate " << tls_paths.server_cert
              << ", operator token " << credential_paths.operator_token << "\n";
    return 0;
  }
  if (issue_cmd->parsed()) {
    auto issued = tw::issueHostToken(credential_paths, host_name, bundle_dir);
    if (!issued.isOk()) return fail(issued.status().toString());
    auto cert = tw::writeHostCert(tls_paths, host_name, issued->out_dir);
    if (!cert.isOk()) return fail(cert.status().toString());
    if (*cert) {
      std::cout << "host '" << host_name << "': certificate (CN " << host_name << ") in " << issued->out_dir
                << "/host.pem, key host.key, CA ca.pem\n";
    }
    std::cout << "host '" << host_name << "': token in " << issued->token_file << ", peer token in "
              << issued->peer_token_file << "\n"
              << "copy " << issued->out_dir << " to the host (keep it 0600) and start its agent with "
              << "--token-file " << issued->token_file << "\n";
    return 0;
  }
  if (revoke_cmd->parsed()) {
    tw::Status st = tw::revokeHostToken(credential_paths, host_name);
    if (!st.isOk()) return fail(st.toString());
    std::cout << "host '" << host_name << "': token revoked\n";
    return 0;
  }
  if (rotate_cmd->parsed()) {
    const std::string path = rotate_viewer ? credential_paths.viewer_token : credential_paths.operator_token;
    if (!std::filesystem::exists(path)) {
      return fail("no token file '" + path + "' to rotate (it is created at the controller's first start)");
    }
    auto rotated = tw::rotateTokenFile(path);
    if (!rotated.isOk()) return fail(rotated.status().toString());
    std::cout << (rotate_viewer ? "viewer" : "operator") << " token replaced in " << path << "\n";
    return 0;
  }
  if (restore_cmd->parsed()) {
    auto restored = tw::restoreState(state_paths, restore_from, tw::utcStampNow());
    if (!restored.isOk()) return fail(restored.status().toString());
    std::cout << "tierwarden-controller: " << *restored << "\n";
    return 0;
  }
  auto parseListen = [](const std::string& flag, const std::string& value, std::string& address,
                        int& port) -> bool {
    auto colon = value.rfind(':');
    if (colon == std::string::npos || colon == 0) return false;
    address = value.substr(0, colon);
    std::string p = value.substr(colon + 1);
    if (p.empty() || p.size() > 5 || p.find_first_not_of("0123456789") != std::string::npos) return false;
    port = std::stoi(p);
    (void)flag;
    return port <= 65535;
  };
  std::string address, agent_address;
  int port = 0, agent_port = 0;
  if (!parseListen("--listen", listen, address, port)) {
    return fail("--listen must be address:port, got '" + listen + "'");
  }
  if (agent_listen.empty()) {
    agent_address = address;
    agent_port = port == 0 ? 0 : port + 1;
  } else if (!parseListen("--agent-listen", agent_listen, agent_address, agent_port)) {
    return fail("--agent-listen must be address:port, got '" + agent_listen + "'");
  }
  std::string guest_address = agent_address;
  // Plain HTTP: the guests poll the agents' listener unless told otherwise.
  int guest_port = insecure_http ? -1 : agent_port == 0 ? 0 : agent_port + 2;
  if (guest_listen == "off") {
    guest_port = -1;
  } else if (!guest_listen.empty() && !parseListen("--guest-listen", guest_listen, guest_address, guest_port)) {
    return fail("--guest-listen must be address:port or 'off', got '" + guest_listen + "'");
  }
  // TLS (docs/auth.md): the files `init` made; checked before anything starts.
  std::shared_ptr<const tw::ServerTls> public_tls, agent_tls;
  if (!insecure_http) {
    if (!std::filesystem::exists(tls_paths.server_cert)) {
      return fail("no TLS certificate " + tls_paths.server_cert + ": run 'tierwarden-controller init --state-dir " +
                  state_dir + " [--san NAME]...' first, or start with --insecure-http (plain HTTP)");
    }
    auto loaded = tw::ServerTls::load({tls_paths.server_cert, tls_paths.server_key, ""});
    if (!loaded.isOk()) return fail(loaded.status().toString());
    public_tls = std::move(*loaded);
    loaded = tw::ServerTls::load({tls_paths.server_cert, tls_paths.server_key, tls_paths.ca_cert});
    if (!loaded.isOk()) return fail(loaded.status().toString());
    agent_tls = std::move(*loaded);
  }

  std::error_code ec;
  std::filesystem::create_directories(state_dir, ec);
  if (ec) return fail("cannot create state dir " + state_dir + ": " + ec.message());
  ::chmod(state_dir.c_str(), 0700);
  token_file = credential_paths.operator_token;
  const bool on_etcd = !store_url.empty();
  tw::BackupWorker backups(state_paths, std::chrono::minutes(backup_interval_min), backup_keep);
  std::unique_ptr<tw::StateDirLock> state_lock;
  tw::Result<std::unique_ptr<tw::Store>> store = tw::internalError("no store");
  // With etcd: the leader lease (its own etcd connection, so renewals never
  // wait behind the store's transactions) and the thread that renews it.
  std::unique_ptr<tw::EtcdClient> lease_client;
  std::unique_ptr<tw::LeaderLease> lease;
  std::unique_ptr<tw::LeaseRunner> lease_runner;
  std::atomic<bool> term_lost{false};
  std::function<void()> on_term_lost = [] {};
  std::mutex on_term_lost_mu;  // guards on_term_lost
  std::unique_ptr<tw::EtcdClient> directory_client;
  std::unique_ptr<tw::ReplicaDirectory> directory;
  // Lease renewal by any replica (docs/ha.md): the records, the leader's
  // side (liveness, fence intents) and a follower's heartbeat answer.
  std::unique_ptr<tw::EtcdClient> renewals_client;
  std::unique_ptr<tw::LeaseRenewals> lease_renewals;
  std::unique_ptr<tw::LeaderRenewals> leader_renewals;
  std::shared_ptr<tw::FollowerHeartbeats> follower_heartbeats;
  if (on_etcd) {
    auto where = tw::parseStoreLocation(store_url);
    if (!where.isOk()) return fail("--store: " + where.status().toString());
    if (where->kind != tw::StoreLocation::Kind::kEtcd) {
      return fail("--store takes etcd://...; SQLite is the default (--state-dir)");
    }
    auto prefix = tw::etcdClusterPrefix(etcd.cluster);
    if (!prefix.isOk()) return fail("--cluster: " + prefix.status().toString());
    tw::HttpEtcdOptions http = tw::etcdHttpOptions(where->endpoints, etcd);
    // A renewal must not block past the next one: the leader's deadline is
    // checked on its clock regardless, but the loss is noticed (and the
    // process ends) only when the request returns.
    http.request_timeout_ms = std::max(500, leader_ttl_ms / 3);
    http.connect_timeout_ms = std::min<tw::Millis>(1000, http.request_timeout_ms);
    auto client = tw::makeHttpEtcdClient(http);
    if (!client.isOk()) return fail(client.status().toString());
    lease_client = std::move(*client);
    tw::LeaderLeaseOptions lease_options;
    lease_options.key = tw::etcdLeaderKey(*prefix);
    if (identity.empty()) {
      char host[256] = {};
      ::gethostname(host, sizeof host - 1);
      identity = std::string(host) + ":" + std::to_string(port) + " pid " + std::to_string(::getpid());
    }
    if (identity.find('/') != std::string::npos || identity.size() > 200) {
      return fail("--identity must be at most 200 bytes without '/' (it names a key), got '" + identity + "'");
    }
    lease_options.identity = identity;
    lease_options.ttl_ms = leader_ttl_ms;
    lease_options.margin_ms = 1000;
    lease = std::make_unique<tw::LeaderLease>(*lease_client, tw::SteadyClock::instance(), lease_options);
    // A write etcd refuses for an older term ends ours at once (the lease
    // runner then sees the loss and the process exits, status 75).
    store = tw::openEtcdStoreAt(where->endpoints, etcd, [&lease] { return lease->guard(); },
                                [&lease](const std::string& why) { lease->depose(why); });
    if (!store.isOk()) return fail(store.status().toString());
    // A lost term ends this process: its memory may lag the store from then
    // on, and a fresh start (systemd restarts it) rejoins as a follower and
    // reads the store again.
    lease_runner = std::make_unique<tw::LeaseRunner>(*lease, [&] {
      term_lost = true;
      std::lock_guard<std::mutex> lock(on_term_lost_mu);
      on_term_lost();
    });
    lease_runner->start();
    tw::log::info("on etcd {} (cluster '{}'), replica '{}': campaigning", store_url, etcd.cluster, identity);
    // The replica directory (P/replicas/<identity>): a client of its own, so
    // that it never delays a lease renewal.
    client = tw::makeHttpEtcdClient(http);
    if (!client.isOk()) return fail(client.status().toString());
    directory_client = std::move(*client);
    tw::ReplicaDirectoryOptions directory_options;
    directory_options.prefix = *prefix;
    directory_options.identity = identity;
    directory = std::make_unique<tw::ReplicaDirectory>(*directory_client, tw::SystemClock::instance(),
                                                       directory_options);
    client = tw::makeHttpEtcdClient(http);
    if (!client.isOk()) return fail(client.status().toString());
    renewals_client = std::move(*client);
    lease_renewals = std::make_unique<tw::LeaseRenewals>(*renewals_client, *prefix);
    leader_renewals = std::make_unique<tw::LeaderRenewals>(*lease_renewals, [&lease] { return lease->guard(); });
    follower_heartbeats = std::make_shared<tw::FollowerHeartbeats>(*lease_renewals, **store,
                                                                   tw::SystemClock::instance(), identity);
  } else {
    // Held until exit; a second controller (or restore-state) on this dir refuses.
    auto locked = tw::StateDirLock::acquire(state_paths);
    if (!locked.isOk()) return fail(locked.status().toString());
    state_lock = std::move(*locked);
    // Only a token the controller wrote into its own state dir tells of an
    // earlier start: a token file elsewhere (the package's /etc/tierwarden/token,
    // made by its postinst) exists before the first start. A state dir that
    // ever held a policy is still guarded by its applied-once marker.
    const std::filesystem::path token_dir = std::filesystem::path(token_file).parent_path();
    const bool token_existed =
        std::filesystem::equivalent(token_dir.empty() ? "." : token_dir, state_dir, ec) &&
        std::filesystem::exists(token_file, ec);
    auto facts = tw::checkStateBeforeStart(state_paths, token_existed);
    if (!facts.isOk()) return fail(facts.status().toString());
    store = tw::Store::open(state_paths.db);
    if (!store.isOk()) return fail(store.status().toString());
    tw::Status watched = tw::watchApplies(**store, state_paths, *facts, backups);
    if (!watched.isOk()) return fail(watched.toString());
    backups.start();
  }
  // The operator's, the viewer's and the agents' peer token: made at the
  // first start (host tokens: issue-host).
  for (const std::string* path :
       {&credential_paths.operator_token, &credential_paths.viewer_token, &credential_paths.peer_token}) {
    auto token = tw::loadOrCreateTokenFile(*path);
    if (!token.isOk()) return fail(token.status().toString());
  }
  auto credentials = std::make_shared<tw::FileCredentials>(credential_paths);
  if (tw::Status st = credentials->load(); !st.isOk()) return fail(st.toString());
  if (credentials->hostCount() == 0) {
    tw::log::warn("no host holds an agent token yet: run 'tierwarden-controller issue-host NAME "
                  "--state-dir {}' for each host", state_dir);
  }
  // Fence agents are commands: only the controller's own configuration defines them.
  tw::FenceAgents fence_agents;
  {
    const std::string path = fence_agents_file.empty() ? "/etc/tierwarden/fence-agents.conf" : fence_agents_file;
    auto loaded = tw::loadFenceAgents(path);
    if (loaded.isOk()) {
      fence_agents = std::move(loaded).value();
      tw::log::info("fence agents from {}: {}", path, tw::fenceAgentNames(fence_agents));
    } else if (!fence_agents_file.empty() || loaded.status().code() != tw::Code::kNotFound) {
      return fail(loaded.status().toString());
    }
  }
  tw::LibvirtHostConnector host_connector;
  std::vector<tw::PolicyFile> policy_files;
  if (!policy_dir.empty()) {
    auto files = tw::readPolicyFiles(policy_dir);
    if (!files.isOk()) return fail(files.status().toString());
    policy_files = std::move(*files);
  }
  auto applyPolicyDir = [&](tw::Controller& c) -> tw::Status {
    if (policy_files.empty()) return tw::Status::ok();
    auto applied = c.applyPolicy(policy_files, false);
    if (!applied.isOk()) return applied.status();
    for (const auto& w : applied->warnings) tw::log::warn("policy: {}", w);
    return tw::Status::ok();
  };
  // SQLite: one controller, recovered here. etcd: the replica's role
  // (controller/replica.h) starts with a read-only view and builds the
  // controller it acts with when it wins a term.
  std::unique_ptr<tw::Controller> single;
  std::unique_ptr<tw::ReplicaSwitch> replica_switch;
  tw::Controller* first = nullptr;
  if (lease == nullptr) {
    single = std::make_unique<tw::Controller>(**store, tw::SystemClock::instance(), &host_connector,
                                              std::move(fence_agents));
    tw::Status s = single->recover();
    if (!s.isOk()) return fail(s.toString());
    if (tw::Status s2 = applyPolicyDir(*single); !s2.isOk()) return fail(s2.toString());
    first = single.get();
  } else {
    replica_switch = tw::makeReplicaSwitch(**store, *lease, &host_connector, fence_agents, [&](tw::Controller& c) {
      if (tw::Status st = applyPolicyDir(c); !st.isOk()) tw::log::error("--policy-dir: {}", st.toString());
      if (c.policy().settings.dead_after_ms < leader_ttl_ms) {
        tw::log::warn("--leader-ttl-ms {} is longer than the policy's dead_after ({} ms): a dead leader is "
                      "replaced later than a dead host is noticed", leader_ttl_ms, c.policy().settings.dead_after_ms);
      }
    }, leader_renewals.get());
    auto view = replica_switch->start();
    if (!view.isOk()) return fail(view.status().toString());
    first = *view;
  }
  tw::ControllerService service(*first, tick_ms);
  if (replica_switch != nullptr) {
    service.setMayAct([&replica_switch, &service] { return replica_switch->beforeStep(service); });
  }
  std::shared_ptr<tw::ReplicaStatus> replica_status;  // its URLs once the listeners are bound
  if (directory != nullptr) {
    replica_status = std::make_shared<tw::EtcdReplica>(*lease, *directory, identity, tw::SystemClock::instance(),
                                                       [&replica_switch] { return replica_switch->acting(); });
  } else {
    replica_status = std::make_shared<tw::SingleReplica>(identity.empty() ? listen : identity, tw::ReplicaUrls{},
                                                         tw::SystemClock::instance());
  }
  tw::ApiServerOptions api_options(address, port, "", web_dir);
  api_options.auth = credentials;
  api_options.public_read = public_read;
  api_options.agent_host = agent_address;
  api_options.agent_port = agent_port;
  api_options.guest_host = guest_address;
  api_options.guest_port = guest_port;
  api_options.public_tls = public_tls;
  api_options.agent_tls = agent_tls;
  api_options.replica = replica_status;
  api_options.follower_heartbeats = follower_heartbeats;
  tw::ApiServer server(service, api_options);
  if (tw::Status s = server.bind(); !s.isOk()) return fail(s.toString());
  // Advertised with the bound ports (--listen may say port 0).
  auto urls = tw::advertisedUrls(advertise_url, advertise_agent_url, !insecure_http, address, server.port(),
                                 agent_address, server.agentPort());
  if (!urls.isOk()) return fail(urls.status().toString());
  replica_status->setUrls(*urls);
  std::unique_ptr<tw::ReplicaDirectoryThread> directory_thread;
  if (directory != nullptr) {
    directory_thread = std::make_unique<tw::ReplicaDirectoryThread>(*directory);
    directory_thread->start();
  }
  std::thread([&server, &service, stop_signals] {
    int sig = 0;
    sigwait(&stop_signals, &sig);
    tw::log::info("signal {}: stopping", sig);
    service.releaseWaiters();
    server.stop();
  }).detach();
  if (lease != nullptr) {
    std::lock_guard<std::mutex> lock(on_term_lost_mu);
    on_term_lost = [&server, &service] {
      tw::log::error("this replica's term ended: stopping (restart it to rejoin as a follower)");
      service.releaseWaiters();
      server.stop();
    };
    if (term_lost) on_term_lost();
  }
  service.start();
  // Freed heap memory goes back to the system once a minute when over
  // 16 MiB of it is held (controller/memory_trim.h: 110 of 291 MiB at
  // 1,000 hosts were free chunks glibc kept).
  tw::MemoryTrimmer trimmer(kTrimEveryMs, kTrimMinFreeBytes);
  tw::MemoryTrimThread trim_thread(trimmer);
  trim_thread.start();
  const char* scheme = insecure_http ? "http" : "https";
  tw::log::info("listening on {}://{}:{}, agents on {}://{}:{}{}, guests on {} (state dir {}, token file {})",
                scheme, address, server.port(), scheme, agent_address, server.agentPort(),
                insecure_http ? "" : " (client certificates required)",
                server.guestPort() < 0 ? std::string("the agents' listener")
                                       : "http://" + guest_address + ":" + std::to_string(server.guestPort()),
                state_dir, token_file);
  if (insecure_http) tw::log::warn("--insecure-http: plain HTTP, tokens travel in clear (demos and tests only)");
  server.serve();
  trim_thread.stop();
  service.stop();
  backups.stop();
  if (directory_thread != nullptr) directory_thread->stop();  // withdraws the registration
  if (lease != nullptr) {
    lease_runner->stop();
    if (term_lost) return 75;  // EX_TEMPFAIL: systemd's Restart= brings it back as a follower
    lease->resign();            // a clean stop hands over at once
  }
  tw::log::info("stopped");
  return 0;
}
