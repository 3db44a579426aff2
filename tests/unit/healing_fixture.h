// The fixture of the controller's failure-handling tests
// (controller_healing_test.cc, controller_migration_test.cc): three hosts and
// a spare on a manual clock, a scripted second signal and fence outcomes.
#pragma once

#include <gtest/gtest.h>

#include <map>
#include <set>
#include <string>
#include <vector>

#include "controller/controller.h"
#include "controller_fixture.h"
#include "tw/store.h"

namespace tw::testing_healing {

using testing_controller::agentHeartbeat;
using testing_controller::eventLines;
using testing_controller::runningReport;

// An agent's event as the tests write them (AgentEvent has more fields).
inline AgentEvent agentEvent(std::string host, std::string vm, int64_t epoch, std::string kind,
                      std::string level, std::string message) {
  AgentEvent e;
  e.host = std::move(host);
  e.vm = std::move(vm);
  e.epoch = epoch;
  e.kind = std::move(kind);
  e.level = std::move(level);
  e.message = std::move(message);
  return e;
}

// Scripted second signal and fence outcomes.
class FakeHostConnector final : public HostConnector {
 public:
  void setHosts(const std::vector<HostSpec>&) override {}
  bool libvirtAlive(const std::string& host) override { return alive.count(host) > 0; }
  void fenceByLibvirt(const std::string& host) override {
    calls.push_back("libvirt " + host);
    results.push_back({host, "libvirt", libvirt_confirms, libvirt_confirms ? "destroyed 2 domains" : "error"});
  }
  void fenceByAgent(const std::string& host, const std::string& agent,
                    const std::vector<std::string>& argv, Millis) override {
    std::string words;
    for (const auto& w : argv) words += " [" + w + "]";
    calls.push_back("agent " + host + " " + agent + words);
    results.push_back({host, "agent", agent_confirms, agent_confirms ? "exited 0" : "exited 1", agent});
  }
  std::vector<FenceResult> takeResults() override {
    std::vector<FenceResult> out;
    out.swap(results);
    return out;
  }
  std::set<std::string> alive;
  bool libvirt_confirms = true;
  bool agent_confirms = true;
  std::vector<std::string> calls;
  std::vector<FenceResult> results;
};

inline DomainReport report(const std::string& vm, const std::string& tier, int64_t epoch) {
  DomainReport d;
  d.vm = vm;
  d.tier = tier;
  d.epoch = epoch;
  d.state = DomainState::kRunning;
  d.health = Health::kHealthy;
  return d;
}

inline const char* const kHosts = R"(
hosts:
  - { name: h1, uri: "qemu+tcp://h1/system", fence: { agent: ipmi } }
  - { name: h2, uri: "qemu+tcp://h2/system" }
  - { name: h3, uri: "qemu+tcp://h3/system", role: spare }
)";

inline const char* const kTiers = R"(
tiers:
  - name: db
    image: tiny-db
    replicas: 2
    memory: 256MiB
    restart: { restarts: 2, window: 10m, relocations: 1 }
  - name: web
    image: tiny-web
    replicas: 2
    memory: 256MiB
    after: [db]
)";

// The controller's configuration: a command with a secret in its arguments.
inline const char* const kFenceAgentsConf =
    "ipmi = ipmitool -I lanplus -H bmc-{host} -U admin -P S3cret chassis power off\n"
    "virsh = virsh -c {uri} destroy-all\n";

inline FenceAgents fenceAgents() {
  auto agents = parseFenceAgents(kFenceAgentsConf, "fence-agents.conf");
  EXPECT_TRUE(agents.isOk()) << agents.status().toString();
  return agents.isOk() ? *agents : FenceAgents{};
}

class HealingTest : public testing_controller::ControllerFixture {
 protected:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(openController(":memory:", &hosts_, fenceAgents()));
    ASSERT_TRUE(controller_->applyPolicy({{"hosts.yaml", kHosts}}, false).isOk());
    for (const char* h : {"h1", "h2", "h3"}) {
      up_.insert(h);
      hosts_.alive.insert(h);
    }
    tick(3);
    ASSERT_TRUE(controller_->applyPolicy({{"tiers.yaml", kTiers}}, false).isOk());
    tick(5);
    for (const auto& v : controller_->vms()) ASSERT_EQ(v.state, VmState::kRunning) << v.name;
  }

  // Every host in up_ heartbeats, reporting its assigned VMs as running and
  // healthy (those in down_vms_ as shut off with reason_), then one
  // controller pass; `n` times, 100 ms apart.
  void tick(int n = 1) {
    for (int i = 0; i < n; ++i) {
      clock_.advance(100);
      for (const auto& h : up_) beat(h);
      controller_->runOnce();
    }
  }

  void beat(const std::string& host) {
    Heartbeat hb = agentHeartbeat(host);
    hb.watchdog_ms = watchdog_ms_;
    // Peer checks: the agents that do not heartbeat do not answer their
    // peers either (long enough for a vote).
    for (const char* other : {"h1", "h2", "h3"})
      if (!up_.count(other)) hb.peers_unreachable[other] = 60000;
    const AssignmentSet set = controller_->assignmentsFor(host);
    hb.assignments_version = set.version;
    hb.assignments_controller = set.controller_id;
    for (const auto& a : set.assignments) {
      if (a.incoming) continue;
      DomainReport d = runningReport(a);
      if (down_vms_.count(a.vm)) {
        d.state = DomainState::kShutoff;
        d.health = Health::kUnknown;
        d.reason = reason_;
      }
      hb.domains.push_back(d);
    }
    for (const auto& d : stale_[host]) hb.domains.push_back(d);
    ASSERT_TRUE(controller_->handleHeartbeat(hb).isOk());
  }

  std::vector<std::string> vmsOn(const std::string& host) {
    std::vector<std::string> out;
    for (const auto& v : controller_->vms())
      if (v.host == host) out.push_back(v.name);
    return out;
  }

  bool hasEvent(const std::string& kind) {
    auto ev = store_->eventsSince(0, 5000);
    for (const auto& e : *ev)
      if (e.kind == kind) return true;
    return false;
  }

  // Every event's message, one a line.
  std::string allEvents() { return eventLines(*store_, 5000); }

  // The controller is restarted over the same store (what a new leader
  // reads) in the instant h2 dies, its agents having reported `watchdog_ms`
  // (`forget`: the store has lost it, as a v3 store); returns how long
  // after the restart h2 is fenced.
  Millis restartAndFence(Millis watchdog_ms, bool forget) {
    watchdog_ms_ = watchdog_ms;
    tick(2);
    if (forget) {
      auto hosts = store_->hosts();
      for (HostRecord h : *hosts) {
        h.watchdog_ms = -1;
        EXPECT_TRUE(store_->putHost(h).isOk());
      }
    }
    up_.erase("h2");
    hosts_.alive.erase("h2");
    restartController(&hosts_, fenceAgents());
    const Millis start = clock_.nowMs();
    while (controller_->host("h2")->state != HostState::kFenced && clock_.nowMs() - start < 30000) tick();
    EXPECT_EQ(controller_->host("h2")->state, HostState::kFenced);
    return clock_.nowMs() - start;
  }

  FakeHostConnector hosts_;
  std::set<std::string> up_;
  Millis watchdog_ms_ = 0;  // what every heartbeat reports (Heartbeat::watchdog_ms)
  std::set<std::string> down_vms_;
  std::string reason_;
  std::map<std::string, std::vector<DomainReport>> stale_;
};

}  // namespace tw::testing_healing
