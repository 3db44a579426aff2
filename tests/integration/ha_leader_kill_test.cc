// kill -9 the leader controller at random instants during host-failure
// recoveries (issue 14, docs/ha.md): a real 3-member etcd cluster, three real
// tierwarden-controller processes, four hosts whose agents are the real Agent
// class on FakeHypervisors, talking to the controllers over real HTTP through
// HttpControllerLink with the three agents' URLs (as the agent daemon does).
//
// Each round: a host loses power (its agent stops, its domains are gone, its
// peers stop reaching it); after a random delay of 0-6 s (before the fence,
// during it, or while its VMs start elsewhere) the leader gets SIGKILL and is
// started again at once (it comes back as a follower). Then:
//   - the recovery completes: every VM runs again, on the other hosts;
//   - never two copies: no VM is ever active on two hosts at once, as the
//     hypervisors themselves hold them (checked after every agent step, not
//     from the store);
//   - no policy lost: the policy's digest and the tiers are as applied;
//   - no lease lost: only the failed host is fenced, and no other agent ever
//     self-fences (its lease state never becomes expired).
// The host comes back (a new agent process on the powered-on machine) before
// the next round.
//
// The leader's TTL is the default 3 s (2 s leaves a leader 1 s of slack for a
// keepalive: on a machine at load 40 leaders lost their terms on their own).
// Rounds: TW_HA_KILLS (default 4, ≈ 65 s: the CI's share; 20 by hand:
// `TW_HA_KILLS=20 build/bin/tw_integration_tests --gtest_filter='HaLeaderKill*'`).
// TW_HA_SEED fixes the random instants (the seed is printed); TW_HA_KEEP=1
// keeps the controllers' logs (in /tmp/tw-hakill-PID; also kept on a failure).
// Skipped when etcd is not installed.
#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "agent/agent.h"
#include "agent/peer_view.h"
#include "child_process.h"
#include "controller/auth.h"
#include "controller_process.h"
#include "etcd_process.h"
#include "tw/clock.h"
#include "tw/fake_hypervisor.h"
#include "tw/http_client.h"
#include "tw/json.h"

namespace tw {
namespace {

namespace fs = std::filesystem;
using testing_etcd::EtcdCluster;
using testing_etcd::freeLoopbackPort;
using testing_process::Child;
using testing_process::eventually;
using namespace testing_replicas;  // controller_process.h

constexpr int kHosts = 4;

const char* kPolicy = R"(cluster:
  n_plus_one: off
  heartbeat_interval: 500ms
  dead_after: 3s
  lease: 5s
  fence_margin: 500ms
hosts:
  - name: h1
    capacity: { cpus: 16, memory: 64GiB }
  - name: h2
    capacity: { cpus: 16, memory: 64GiB }
  - name: h3
    capacity: { cpus: 16, memory: 64GiB }
  - name: h4
    capacity: { cpus: 16, memory: 64GiB }
tiers:
  - name: web
    image: tiny
    replicas: 6
    memory: 1GiB
  - name: db
    image: tiny
    replicas: 3
    memory: 2GiB
)";

const std::set<std::string> kVms = {"web-1", "web-2", "web-3", "web-4", "web-5",
                                    "web-6", "db-1",  "db-2",  "db-3"};

// Which hosts lost power, since when: every agent's peer checks as they would
// find them.
class Outages {
 public:
  void down(const std::string& host, Millis at) {
    std::lock_guard<std::mutex> lock(mu_);
    since_[host] = at;
  }
  void up(const std::string& host) {
    std::lock_guard<std::mutex> lock(mu_);
    since_.erase(host);
  }
  Millis since(const std::string& host) const {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = since_.find(host);
    return it == since_.end() ? -1 : it->second;
  }

 private:
  mutable std::mutex mu_;
  std::map<std::string, Millis> since_;
};

class TestPeerView final : public PeerView {
 public:
  explicit TestPeerView(const Outages& outages) : outages_(outages) {}
  void setPeers(const std::vector<PeerInfo>& peers, Millis timeout_ms) override {
    std::lock_guard<std::mutex> lock(mu_);
    peers_.clear();
    for (const auto& p : peers) peers_.push_back(p.host);
    timeout_ms_ = timeout_ms;
  }
  std::set<std::string> reachable(Millis now) const override {
    std::lock_guard<std::mutex> lock(mu_);
    std::set<std::string> out;
    for (const auto& p : peers_) {
      const Millis since = outages_.since(p);
      if (since < 0 || now - since < timeout_ms_) out.insert(p);
    }
    return out;
  }
  std::map<std::string, Millis> unreachable(Millis now) const override {
    std::lock_guard<std::mutex> lock(mu_);
    std::map<std::string, Millis> out;
    for (const auto& p : peers_) {
      const Millis since = outages_.since(p);
      if (since >= 0 && now - since >= timeout_ms_) out[p] = now - since;
    }
    return out;
  }

 private:
  const Outages& outages_;
  mutable std::mutex mu_;
  std::vector<std::string> peers_;
  Millis timeout_ms_ = 2000;
};

// What the hypervisors run, published by each host after every step of its
// agent; a VM active on two hosts at once is recorded as a violation.
class Truth {
 public:
  void publish(const std::string& host, std::set<std::string> active) {
    std::lock_guard<std::mutex> lock(mu_);
    active_[host] = std::move(active);
    std::map<std::string, std::vector<std::string>> where;
    for (const auto& [h, vms] : active_) {
      for (const auto& vm : vms) where[vm].push_back(h);
    }
    for (const auto& [vm, hosts] : where) {
      if (hosts.size() > 1) {
        std::string text = vm + " active on";
        for (const auto& h : hosts) text += " " + h;
        violations_.push_back(text);
      }
    }
  }
  std::map<std::string, std::set<std::string>> active() const {
    std::lock_guard<std::mutex> lock(mu_);
    return active_;
  }
  void violation(const std::string& text) {
    std::lock_guard<std::mutex> lock(mu_);
    violations_.push_back(text);
  }
  std::vector<std::string> violations() const {
    std::lock_guard<std::mutex> lock(mu_);
    return violations_;
  }

 private:
  mutable std::mutex mu_;
  std::map<std::string, std::set<std::string>> active_;
  std::vector<std::string> violations_;
};

// One host: its machine (a FakeHypervisor, never replaced), and the agent
// process on it (replaced when the host comes back), run by a thread of its own.
struct Host {
  std::string name;
  std::string token;
  FakeHypervisor hv{Capacity{16, 64 * 1024}};
  std::mutex mu;  // held while the agent steps; guards the fields below
  bool down = false;
  int generation = 0;
  std::unique_ptr<HttpControllerLink> link;
  std::unique_ptr<TestPeerView> peers;
  std::unique_ptr<Agent> agent;
  std::mutex events_mu;
  std::vector<DomainEvent> events;
  std::thread thread;
};

class HaLeaderKillTest : public ::testing::Test {
 protected:
  void SetUp() override {
    etcd_ = EtcdCluster::shared();
    if (etcd_ == nullptr) GTEST_SKIP() << "etcd is not installed (Debian: etcd-server)";
    dir_ = fs::temp_directory_path() / ("tw-hakill-" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    cluster_ = "kill-" + std::to_string(::getpid());
    std::ofstream(dir_ / "policy.yaml") << kPolicy;
    const CredentialPaths paths(dir_.string());
    for (int i = 1; i <= kHosts; ++i) {
      auto h = std::make_unique<Host>();
      h->name = "h" + std::to_string(i);
      auto issued = issueHostToken(paths, h->name, "");
      ASSERT_TRUE(issued.isOk()) << issued.status().toString();
      h->token = issued->token;
      hosts_.push_back(std::move(h));
    }
    for (int i = 1; i <= 3; ++i) {
      const std::string name = "c" + std::to_string(i);
      ports_[name] = freeLoopbackPort();
      agent_ports_[name] = freeLoopbackPort();
    }
  }

  void TearDown() override {
    stop_ = true;
    for (auto& h : hosts_) {
      if (h->thread.joinable()) h->thread.join();
    }
    hosts_.clear();
    children_.clear();
    std::error_code ec;
    if (!HasFailure() && std::getenv("TW_HA_KEEP") == nullptr) fs::remove_all(dir_, ec);
  }

  void startController(const std::string& name) {
    children_[name] = std::make_unique<Child>(
        replicaCommand(dir_, name, ports_[name], agent_ports_[name], etcd_->storeUrl(), cluster_, 3000),
        (dir_ / (name + ".log")).string(), /*append=*/true);
  }

  std::string publicUrls() const { return loopbackUrls(ports_); }
  std::string agentUrls() const { return loopbackUrls(agent_ports_); }

  std::string token() { return stateDirToken(dir_); }

  // A client of one replica (no list: it asks that one).
  std::unique_ptr<ApiClient> clientOf(const std::string& name, Millis read_timeout_ms = 3000) {
    return replicaClient(ports_[name], token(), read_timeout_ms);
  }

  // The leader every live replica names, once it says it acts; "" if none.
  std::string actingLeader() {
    return testing_replicas::actingLeader(children_, [this](const std::string& n) { return clientOf(n); });
  }

  // The agent of host `h` starts (a new process: a new agent id).
  void startAgent(Host& h) {
    ApiClientOptions o;
    o.base_url = agentUrls();
    o.token = h.token;
    o.keep_alive = true;
    o.connect_timeout_ms = 1000;
    o.read_timeout_ms = 3000;
    h.link = std::make_unique<HttpControllerLink>(o);
    h.peers = std::make_unique<TestPeerView>(outages_);
    AgentOptions options;
    options.host = h.name;
    options.agent_id = h.name + "-" + std::to_string(++h.generation);
    options.peer_address = "127.0.0.1:1";  // peer checks are the TestPeerView's
    options.initial_lease_ms = 5000;
    h.agent = std::make_unique<Agent>(options, h.hv, *h.link, SystemClock::instance());
    h.agent->setPeerView(h.peers.get());
    ASSERT_TRUE(h.agent->start().isOk());
  }

  // The host's thread: steps its agent when something is due, then publishes
  // what its hypervisor runs.
  void runHost(Host* h) {
    while (!stop_) {
      {
        std::lock_guard<std::mutex> lock(h->mu);
        if (!h->down && h->agent != nullptr) {
          std::vector<DomainEvent> events;
          {
            std::lock_guard<std::mutex> ev(h->events_mu);
            events.swap(h->events);
          }
          for (const auto& e : events) h->agent->onDomainEvent(e);
          if (!events.empty() || h->agent->nextWakeMs() <= SystemClock::instance().nowMs()) {
            h->agent->runOnce();
          }
          if (h->agent->leaseState() == LeaseState::kExpired) {
            truth_.violation(h->name + " self-fenced (its lease expired) while its machine was up");
          }
          std::set<std::string> active;
          auto listed = h->hv.listManaged();
          if (listed.isOk()) {
            for (const auto& d : *listed) {
              if (isActive(d.state)) active.insert(d.meta.vm);
            }
          }
          truth_.publish(h->name, std::move(active));
        }
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }

  // Power loss: the agent is gone, every domain with it, its peers stop
  // reaching it.
  void crash(Host& h) {
    std::lock_guard<std::mutex> lock(h.mu);
    h.down = true;
    outages_.down(h.name, SystemClock::instance().nowMs());
    h.hv.powerOff();
    truth_.publish(h.name, {});
    h.agent.reset();
  }

  // The machine is powered on again and a new agent starts on it.
  void restore(Host& h) {
    std::lock_guard<std::mutex> lock(h.mu);
    h.hv.powerOn();
    {
      std::lock_guard<std::mutex> ev(h.events_mu);
      h.events.clear();
    }
    startAgent(h);
    outages_.up(h.name);
    h.down = false;
  }

  // Every VM active exactly once, none on `excluded`.
  bool allRunning(const std::string& excluded) {
    std::map<std::string, int> count;
    for (const auto& [host, vms] : truth_.active()) {
      for (const auto& vm : vms) {
        if (host == excluded) return false;
        ++count[vm];
      }
    }
    if (count.size() != kVms.size()) return false;
    for (const auto& [vm, n] : count) {
      if (kVms.count(vm) == 0 || n != 1) return false;
    }
    return true;
  }

  bool allHostsOnline() {
    auto j = clientOf(actingLeader().empty() ? "c1" : actingLeader())->get("/api/v1/hosts");
    if (!j.isOk()) return false;
    int online = 0;
    for (const auto& h : (*j)["hosts"]) online += h["state"] == "online" ? 1 : 0;
    return online == kHosts;
  }

  // Events after `since` of a kind, through any replica: subject -> count.
  std::map<std::string, int> eventsOf(int64_t since, const std::string& kind) {
    ApiClientOptions o;
    o.base_url = publicUrls();
    o.token = token();
    ApiClient api(o);
    std::map<std::string, int> out;
    for (int page = 0; page < 100; ++page) {
      auto j = api.get("/api/v1/events?since=" + std::to_string(since) + "&limit=5000");
      if (!j.isOk() || (*j)["events"].empty()) break;
      for (const auto& e : (*j)["events"]) {
        if (e["kind"] == kind) ++out[e["subject"].get<std::string>()];
      }
      since = (*j)["last_id"].get<int64_t>();
    }
    return out;
  }

  int64_t lastEventId() {
    ApiClientOptions o;
    o.base_url = publicUrls();
    o.token = token();
    ApiClient api(o);
    auto j = api.get("/api/v1/events?tail=1");  // last_id: the newest event's
    return j.isOk() ? (*j)["last_id"].get<int64_t>() : -1;
  }

  std::string log(const std::string& name) {
    std::ifstream in(dir_ / (name + ".log"));
    std::string all((std::istreambuf_iterator<char>(in)), {});
    return all.size() > 6000 ? all.substr(all.size() - 6000) : all;
  }

  EtcdCluster* etcd_ = nullptr;
  fs::path dir_;
  std::string cluster_;
  std::map<std::string, int> ports_;
  std::map<std::string, int> agent_ports_;
  std::map<std::string, std::unique_ptr<Child>> children_;
  std::vector<std::unique_ptr<Host>> hosts_;
  Outages outages_;
  Truth truth_;
  std::atomic<bool> stop_{false};
};

TEST_F(HaLeaderKillTest, LeaderKilledAtRandomInstantsDuringHostRecoveries) {
  const char* kills_env = std::getenv("TW_HA_KILLS");
  const int kills = kills_env != nullptr ? std::atoi(kills_env) : 4;
  const char* seed_env = std::getenv("TW_HA_SEED");
  const unsigned seed = seed_env != nullptr ? static_cast<unsigned>(std::strtoul(seed_env, nullptr, 10))
                                            : static_cast<unsigned>(std::random_device{}());
  std::printf("TW_HA_KILLS=%d TW_HA_SEED=%u\n", kills, seed);
  std::mt19937 rng(seed);

  startController("c1");
  ASSERT_TRUE(eventually([&] { return fs::exists(dir_ / "token") && !actingLeader().empty(); }, 20))
      << log("c1");
  startController("c2");
  startController("c3");
  ApiClientOptions o;
  o.base_url = publicUrls();
  o.token = token();
  o.no_leader_retry_ms = 5000;
  ApiClient api(o);
  {
    std::ifstream in(dir_ / "policy.yaml");
    const std::string text((std::istreambuf_iterator<char>(in)), {});
    Json body{{"files", Json::array({Json{{"name", "policy.yaml"}, {"content", text}}})}};
    auto applied = api.post("/api/v1/policies", body);
    ASSERT_TRUE(applied.isOk()) << applied.status().toString();
  }
  auto cluster = api.get("/api/v1/cluster");
  ASSERT_TRUE(cluster.isOk());
  const std::string digest = (*cluster)["policy_digest"].get<std::string>();

  for (auto& h : hosts_) {
    Host* raw = h.get();
    h->hv.subscribe([raw](const DomainEvent& e) {
      std::lock_guard<std::mutex> lock(raw->events_mu);
      raw->events.push_back(e);
    });
    {
      std::lock_guard<std::mutex> lock(h->mu);
      startAgent(*h);
    }
    h->thread = std::thread([this, raw] { runHost(raw); });
  }
  ASSERT_TRUE(eventually([&] { return allRunning("") && allHostsOnline(); }, 30))
      << log("c1") << log("c2") << log("c3");

  std::uniform_int_distribution<int> delay_ms(0, 6000);
  std::vector<double> recoveries;
  for (int round = 0; round < kills; ++round) {
    Host& victim = *hosts_[static_cast<size_t>(round % kHosts)];
    // Steady: every host online, one acting leader.
    ASSERT_TRUE(eventually([&] { return allRunning("") && allHostsOnline() && !actingLeader().empty(); }, 60))
        << "round " << round << ": not steady" << log("c1") << log("c2") << log("c3");
    const int64_t since = lastEventId();
    ASSERT_GE(since, 0);

    const auto crashed_at = std::chrono::steady_clock::now();
    crash(victim);
    const int delay = delay_ms(rng);
    std::this_thread::sleep_until(crashed_at + std::chrono::milliseconds(delay));
    const std::string leader = actingLeader();
    ASSERT_FALSE(leader.empty()) << "round " << round << ": no leader to kill" << log("c1") << log("c2")
                                 << log("c3");
    children_[leader]->kill(SIGKILL);
    startController(leader);  // it comes back as a follower

    // The recovery completes: every VM once, on the other hosts.
    const bool recovered = eventually([&] { return allRunning(victim.name); }, 60);
    const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - crashed_at).count();
    std::printf("round %2d: %s lost power, leader %s killed %4d ms later; every VM running elsewhere %.2f s "
                "after the crash\n",
                round + 1, victim.name.c_str(), leader.c_str(), delay, took);
    std::fflush(stdout);
    ASSERT_TRUE(recovered) << "round " << round << log("c1") << log("c2") << log("c3");
    recoveries.push_back(took);

    // No lease lost: the failed host is the only one fenced.
    ASSERT_TRUE(eventually([&] { return eventsOf(since, "host.fenced").count("host/" + victim.name) > 0; }, 10));
    for (const auto& [subject, n] : eventsOf(since, "host.fenced")) {
      EXPECT_EQ(subject, "host/" + victim.name) << "round " << round << ": " << subject << " was fenced";
    }
    // No policy lost.
    auto now = api.get("/api/v1/cluster");
    ASSERT_TRUE(now.isOk()) << now.status().toString();
    EXPECT_EQ((*now)["policy_digest"], digest);
    auto tiers = api.get("/api/v1/tiers");
    ASSERT_TRUE(tiers.isOk());
    int replicas = 0;
    for (const auto& t : (*tiers)["tiers"]) replicas += t["replicas"].get<int>();
    EXPECT_EQ(replicas, static_cast<int>(kVms.size()));

    restore(victim);
  }
  ASSERT_TRUE(eventually([&] { return allRunning("") && allHostsOnline(); }, 60))
      << log("c1") << log("c2") << log("c3");
  // Never two copies, no agent self-fenced.
  const auto violations = truth_.violations();
  for (const auto& v : violations) ADD_FAILURE() << v;
  EXPECT_TRUE(violations.empty());
  std::sort(recoveries.begin(), recoveries.end());
  if (!recoveries.empty()) {
    std::printf("%d leader kills: every VM running elsewhere after median %.2f s, max %.2f s (lease 5 s + "
                "margin 0.5 s, leader TTL 3 s)\n",
                kills, recoveries[recoveries.size() / 2], recoveries.back());
  }
}

}  // namespace
}  // namespace tw
