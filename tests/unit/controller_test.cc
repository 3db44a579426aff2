// The controller's decisions: apply, placement into assignments, tier order,
// liveness, restart, recovery from SQLite. Hermetic: in-memory or temp-file
// SQLite, manual clock, no threads.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>
#include <vector>

#include "controller/controller.h"
#include "controller_fixture.h"
#include "tw/store.h"

namespace tw {
namespace {

using testing_controller::agentHeartbeat;
using testing_controller::runningHeartbeat;
using testing_controller::runningReport;

const char* kHosts = R"(
cluster:
  n_plus_one: warn
hosts:
  - name: h1
    uri: test:///default
  - name: h2
    uri: test:///default
  - name: h3
    uri: test:///default
    role: spare
)";

const char* kPolicy = R"(
tiers:
  - name: mysql
    image: tiny-db
    replicas: 2
    memory: 256MiB
  - name: apache
    image: tiny-web
    replicas: 2
    memory: 256MiB
    after: [mysql]
  - name: balancer
    image: tiny-balancer
    replicas: 1
    memory: 128MiB
    after: [apache]
)";

class ControllerTest : public testing_controller::ControllerFixture {
 protected:
  void SetUp() override { ASSERT_NO_FATAL_FAILURE(openController()); }

  Result<ApplyResult> apply(const std::string& text, bool dry_run = false,
                            const std::string& name = "demo.yaml") {
    return controller_->applyPolicy({PolicyFile{name, text}}, dry_run);
  }

  // A heartbeat that reports every assigned VM of `host` running and healthy,
  // and the hosts in `unreachable` as unreachable peers (for a minute).
  AssignmentSet beat(const std::string& host, bool report_running = true,
                     const std::vector<std::string>& unreachable = {}) {
    Heartbeat hb = report_running ? runningHeartbeat(*controller_, host) : agentHeartbeat(host);
    for (const auto& u : unreachable) hb.peers_unreachable[u] = 60000;
    return answer(hb);
  }

  // Declares the hosts (hosts.yaml) and lets every agent report its capacity.
  void join(const std::string& hosts = kHosts) {
    auto r = apply(hosts, false, "hosts.yaml");
    ASSERT_TRUE(r.isOk()) << r.status().toString();
    beatAll();
  }


  // A heartbeat from `host`, whose port forwards listen on `address`,
  // reporting every assignment (incoming ones too) running with `health` and
  // each guest port of its tier (service ports and check port) forwarded to a
  // host port (hostPort()); `except` is reported without forwards; `extra`
  // domains are reported as they are.
  void beatWithPorts(const std::string& host, const std::string& address,
                     Health health = Health::kHealthy, const std::string& except = "",
                     const std::vector<DomainReport>& extra = {}) {
    Heartbeat hb = agentHeartbeat(host);
    hb.service_address = address;
    for (const auto& a : controller_->assignmentsFor(host).assignments) {
      DomainReport d = runningReport(a);
      d.health = health;
      if (a.vm != except) {
        for (const auto& p : a.ports) d.ports[p.port] = hostPort(host, a.vm, p.port);
        if (a.health.port > 0) d.ports[a.health.port] = hostPort(host, a.vm, a.health.port);
      }
      hb.domains.push_back(d);
    }
    for (const auto& d : extra) hb.domains.push_back(d);
    auto r = controller_->handleHeartbeat(hb);
    EXPECT_TRUE(r.isOk()) << r.status().toString();
  }

  // The port on `host` that forwards to a VM's guest port: a new one (from
  // 20001) when first asked.
  int hostPort(const std::string& host, const std::string& vm, int guest_port) {
    std::string key = host + "/" + vm + ":" + std::to_string(guest_port);
    auto [it, inserted] = host_ports_.try_emplace(key, 0);
    if (inserted) it->second = 20000 + static_cast<int>(host_ports_.size());
    return it->second;
  }

  Json endpoints(const std::string& tier) {
    auto j = controller_->endpointsJson(tier);
    EXPECT_TRUE(j.isOk()) << j.status().toString();
    return j.isOk() ? *j : Json::object();
  }

  std::map<std::string, int> host_ports_;
};

// Pins: a heartbeat from a host no applied policy declares is refused (404).
TEST_F(ControllerTest, HeartbeatFromUndeclaredHostIsNotFound) {
  Heartbeat hb;
  hb.host = "h1";
  auto r = controller_->handleHeartbeat(hb);
  ASSERT_FALSE(r.isOk());
  EXPECT_EQ(r.status().code(), Code::kNotFound);
}

// Pins: a heartbeat that names the current peer list (peers_digest) gets an
// answer without it (O(its VMs), not O(cluster)); one with another or no
// digest gets the whole list; a changed peer address changes the digest.
TEST_F(ControllerTest, HeartbeatAnswerCarriesThePeerListOnlyWhenItChanged) {
  join();
  Heartbeat hb = agentHeartbeat("h1");
  auto first = controller_->handleHeartbeat(hb);
  ASSERT_TRUE(first.isOk()) << first.status().toString();
  EXPECT_FALSE(first->peers_omitted);
  const size_t others = controller_->policy().hosts.size() - 1;
  ASSERT_EQ(first->peers.size(), others);
  ASSERT_FALSE(first->peers_digest.empty());

  hb.peers_digest = first->peers_digest;
  auto again = controller_->handleHeartbeat(hb);
  ASSERT_TRUE(again.isOk());
  EXPECT_TRUE(again->peers_omitted);
  EXPECT_TRUE(again->peers.empty());
  EXPECT_EQ(again->peers_digest, first->peers_digest);

  hb.peers_digest = "stale";
  auto stale = controller_->handleHeartbeat(hb);
  ASSERT_TRUE(stale.isOk());
  EXPECT_FALSE(stale->peers_omitted);
  EXPECT_EQ(stale->peers.size(), others);

  // h2 starts answering peer checks at an address: every list changes.
  Heartbeat h2 = agentHeartbeat("h2");
  h2.peer_address = "10.0.0.2:7810";
  ASSERT_TRUE(controller_->handleHeartbeat(h2).isOk());
  hb.peers_digest = first->peers_digest;
  auto changed = controller_->handleHeartbeat(hb);
  ASSERT_TRUE(changed.isOk());
  EXPECT_FALSE(changed->peers_omitted);
  EXPECT_NE(changed->peers_digest, first->peers_digest);
  bool seen = false;
  for (const auto& p : changed->peers) seen |= p.host == "h2" && p.address == "10.0.0.2:7810";
  EXPECT_TRUE(seen);
}

// Pins: before any agent reported capacity, an apply is accepted with a
// warning and every VM waits pending; after heartbeats all are placed.
TEST_F(ControllerTest, ApplyBeforeAgentsReportWaitsThenPlaces) {
  ASSERT_TRUE(apply(kHosts, false, "hosts.yaml").isOk());
  auto r = apply(kPolicy);
  ASSERT_TRUE(r.isOk()) << r.status().toString();
  EXPECT_TRUE(r->applied);
  EXPECT_EQ(r->version, 2);
  ASSERT_FALSE(r->warnings.empty());
  EXPECT_NE(r->warnings[0].find("have not reported yet"), std::string::npos);
  for (const auto& v : controller_->vms()) EXPECT_EQ(v.state, VmState::kPending) << v.name;
  settle();
  for (const auto& v : controller_->vms()) {
    EXPECT_EQ(v.state, VmState::kRunning) << v.name << ": " << v.reason;
    EXPECT_FALSE(v.host.empty());
  }
  EXPECT_EQ(controller_->vms().size(), 5u);
}

// Pins: hosts with a capacity override that have not reported yet do not
// make the first apply fail: the VMs wait for them (found by the simulator).
TEST_F(ControllerTest, CapacityOverrideHostsNotYetReportedDoNotRefuse) {
  ASSERT_TRUE(apply(R"(
hosts:
  - { name: h1, uri: "test:///default", capacity: { cpus: 4, memory: 4GiB } }
  - { name: h2, uri: "test:///default", capacity: { cpus: 4, memory: 4GiB } }
)", false, "hosts.yaml").isOk());
  auto r = apply("tiers:\n  - { name: web, image: tiny-web, replicas: 2 }\n");
  ASSERT_TRUE(r.isOk()) << r.status().toString();
  EXPECT_TRUE(r->applied);
  beatAll();
  settle();
  EXPECT_EQ(controller_->vm("web-1")->state, VmState::kRunning);
}

// Pins: replicas of one tier land on distinct hosts, active hosts before the spare.
TEST_F(ControllerTest, SpreadsReplicasOverActiveHosts) {
  join();
  ASSERT_TRUE(apply(kPolicy).isOk());
  settle();
  EXPECT_NE(controller_->vm("mysql-1")->host, controller_->vm("mysql-2")->host);
  EXPECT_NE(controller_->vm("apache-1")->host, controller_->vm("apache-2")->host);
  for (const auto& v : controller_->vms()) EXPECT_NE(v.host, "h3") << v.name << " on the spare";
}

// Pins: tier order — apache is not assigned to any agent until mysql is
// healthy, and the balancer not until apache is.
TEST_F(ControllerTest, TierOrderGatesAssignments) {
  join();
  ASSERT_TRUE(apply(kPolicy).isOk());
  controller_->runOnce();
  auto assigned = [&](const std::string& tier) {
    int n = 0;
    for (const char* h : {"h1", "h2", "h3"})
      for (const auto& a : controller_->assignmentsFor(h).assignments) n += a.tier == tier;
    return n;
  };
  EXPECT_EQ(assigned("mysql"), 2);
  EXPECT_EQ(assigned("apache"), 0);
  EXPECT_EQ(controller_->vm("apache-1")->state, VmState::kPending);
  EXPECT_NE(controller_->vm("apache-1")->reason.find("waiting for tier 'mysql'"), std::string::npos);
  // mysql reported running and healthy -> apache released, balancer still waits.
  clock_.advance(100);
  beatAll();
  controller_->runOnce();
  EXPECT_EQ(assigned("apache"), 2);
  EXPECT_EQ(assigned("balancer"), 0);
  clock_.advance(100);
  beatAll();
  controller_->runOnce();
  EXPECT_EQ(assigned("balancer"), 1);
}

// Pins: the tier-order gate opens after tier_order_timeout with a warning event.
TEST_F(ControllerTest, TierOrderTimeoutReleasesWithWarning) {
  std::string hosts = kHosts;
  hosts.replace(hosts.find("n_plus_one: warn"), 16, "n_plus_one: warn\n  tier_order_timeout: 2s");
  join(hosts);
  ASSERT_TRUE(apply(kPolicy).isOk());
  controller_->runOnce();
  for (int i = 0; i < 25; ++i) {  // mysql never reports healthy
    clock_.advance(100);
    for (const char* h : {"h1", "h2", "h3"}) beat(h, /*report_running=*/false);
    controller_->runOnce();
  }
  EXPECT_EQ(controller_->vm("apache-1")->state, VmState::kStarting);
  auto ev = store_->eventsSince(0, 1000);
  ASSERT_TRUE(ev.isOk());
  bool warned = false;
  for (const auto& e : *ev) warned |= e.kind == "tier.order_timeout" && e.level == "warn";
  EXPECT_TRUE(warned);
}

// Pins: applying the same files again changes nothing (no new version, no moves).
TEST_F(ControllerTest, ReapplySameFileIsNoChange) {
  join();
  ASSERT_TRUE(apply(kPolicy).isOk());
  settle();
  auto before = controller_->vms();
  auto events_before = store_->eventCount();
  auto r = apply(kPolicy);
  ASSERT_TRUE(r.isOk());
  EXPECT_FALSE(r->changed);
  EXPECT_FALSE(r->applied);
  EXPECT_EQ(r->version, 2);
  for (const auto& item : r->plan) EXPECT_EQ(item.action, "keep") << item.vm;
  auto after = controller_->vms();
  ASSERT_EQ(before.size(), after.size());
  for (size_t i = 0; i < before.size(); ++i) {
    EXPECT_EQ(before[i].host, after[i].host);
    EXPECT_EQ(before[i].epoch, after[i].epoch);
  }
  EXPECT_EQ(*store_->eventCount(), *events_before);
}

// Pins: a broken policy is refused with file:line:column and nothing stored changes.
TEST_F(ControllerTest, BrokenPolicyChangesNothing) {
  join();
  ASSERT_TRUE(apply(kPolicy).isOk());
  settle();
  auto before = controller_->vms();
  auto r = apply("tiers:\n  - name: web\n    image: tiny-web\n    replicas: two\n");
  ASSERT_FALSE(r.isOk());
  EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
  ASSERT_TRUE(r.status().where().has_value());
  EXPECT_EQ(r.status().where()->file, "demo.yaml");
  EXPECT_EQ(r.status().where()->line, 4);
  EXPECT_EQ(controller_->policyVersion(), 2);
  auto latest = store_->latestPolicy();
  ASSERT_TRUE(latest.isOk() && latest->has_value());
  EXPECT_EQ((*latest)->version, 2);
  EXPECT_EQ(controller_->vms().size(), before.size());
}

// Pins: a dry run plans (create actions) and writes nothing.
TEST_F(ControllerTest, DryRunWritesNothing) {
  join();
  auto r = apply(kPolicy, /*dry_run=*/true);
  ASSERT_TRUE(r.isOk()) << r.status().toString();
  EXPECT_TRUE(r->dry_run);
  EXPECT_FALSE(r->applied);
  EXPECT_EQ(r->plan.size(), 5u);
  for (const auto& item : r->plan) {
    EXPECT_EQ(item.action, "create") << item.vm;
    EXPECT_FALSE(item.host.empty());
  }
  EXPECT_TRUE(controller_->vms().empty());
  EXPECT_EQ(controller_->policyVersion(), 1);  // the hosts file only
}

// Pins: with n_plus_one: refuse, a plan that one host's loss would break is
// refused naming that host, and nothing is applied.
TEST_F(ControllerTest, NPlusOneRefuseNamesHost) {
  join(R"(
cluster: { n_plus_one: refuse }
hosts:
  - { name: h1, uri: "test:///default" }
  - { name: h2, uri: "test:///default" }
)");
  std::string p = R"(
tiers:
  - { name: big, image: tiny-web, replicas: 2, memory: 3GiB }
)";
  auto r = apply(p);
  ASSERT_FALSE(r.isOk());
  EXPECT_EQ(r.status().code(), Code::kFailedPrecondition);
  EXPECT_NE(r.status().message().find("losing host 'h1'"), std::string::npos) << r.status().message();
  EXPECT_EQ(controller_->policyVersion(), 1);
}

// Pins: a policy that cannot be placed on hosts with known capacity is refused with the reason.
TEST_F(ControllerTest, UnplaceablePolicyIsRefused) {
  join();
  std::string p = R"(
tiers:
  - { name: huge, image: tiny-web, replicas: 1, memory: 64GiB }
)";
  auto r = apply(p);
  ASSERT_FALSE(r.isOk());
  EXPECT_EQ(r.status().code(), Code::kFailedPrecondition);
  EXPECT_NE(r.status().message().find("vm 'huge-1'"), std::string::npos) << r.status().message();
}

// Pins: scaling a tier down deletes its highest ordinals only.
TEST_F(ControllerTest, ScaleDownDeletesHighestOrdinal) {
  join();
  ASSERT_TRUE(apply(kPolicy).isOk());
  settle();
  std::string p = kPolicy;
  p.replace(p.find("replicas: 2\n    memory: 256MiB\n    after"), 11, "replicas: 1");
  auto r = apply(p);
  ASSERT_TRUE(r.isOk()) << r.status().toString();
  EXPECT_EQ(controller_->vm("apache-2"), nullptr);
  EXPECT_NE(controller_->vm("apache-1"), nullptr);
  bool deleted = false;
  for (const auto& item : r->plan) deleted |= item.vm == "apache-2" && item.action == "delete";
  EXPECT_TRUE(deleted);
}

// Pins: an operator restart bumps the VM's epoch on the same host and changes
// the host's assignment set version.
TEST_F(ControllerTest, RestartBumpsEpochSameHost) {
  join();
  ASSERT_TRUE(apply(kPolicy).isOk());
  settle();
  const VmRecord before = *controller_->vm("mysql-1");
  int64_t version = controller_->assignmentsFor(before.host).version;
  ASSERT_TRUE(controller_->restartVm("mysql-1").isOk());
  EXPECT_EQ(controller_->vm("mysql-1")->epoch, before.epoch + 1);
  EXPECT_EQ(controller_->vm("mysql-1")->host, before.host);
  EXPECT_EQ(controller_->vm("mysql-1")->state, VmState::kRestarting);
  EXPECT_GT(controller_->assignmentsFor(before.host).version, version);
  EXPECT_EQ(controller_->restartVm("nope").code(), Code::kNotFound);
}

// Pins (issue #16): while a declared host has not reported yet (new VMs wait
// for it), ticks run no placement pass; the pass runs again once the wait
// is over, and places the VMs on the hosts that did report.
TEST_F(ControllerTest, SettlingHostsRunPlacementOnlyWhenTheWaitEnds) {
  ASSERT_TRUE(apply(kHosts, false, "hosts.yaml").isOk());
  ASSERT_TRUE(apply(kPolicy).isOk());
  auto tick = [&] {
    clock_.advance(100);
    beat("h1");
    beat("h2");
    controller_->runOnce();
  };
  tick();  // h1 and h2 reported: placement runs (h3 still settles)
  const int64_t runs = controller_->placementRuns();
  for (int i = 0; i < 5; ++i) tick();
  EXPECT_EQ(controller_->placementRuns(), runs);
  EXPECT_TRUE(controller_->vm("mysql-1")->host.empty());
  for (int i = 0; i < 40; ++i) tick();  // past dead_after (3 s)
  EXPECT_GT(controller_->placementRuns(), runs);
  EXPECT_FALSE(controller_->vm("mysql-1")->host.empty());
}

// Pins (issue #16): a host that goes suspect (late heartbeats) and back to
// online runs no placement pass: placement treats both states alike, and at
// 1,000 hosts a pass per flap slowed the loop into more flaps.
TEST_F(ControllerTest, SuspectFlapRunsNoPlacement) {
  join();
  ASSERT_TRUE(apply(kPolicy).isOk());
  settle(40);
  const std::string late = controller_->policy().hosts.front().name;
  const int64_t runs = controller_->placementRuns();
  for (int i = 0; i < 100 && controller_->host(late)->state != HostState::kSuspect; ++i) {
    clock_.advance(100);
    for (const auto& h : controller_->policy().hosts)
      if (h.name != late) beat(h.name);
    controller_->runOnce();
  }
  ASSERT_EQ(controller_->host(late)->state, HostState::kSuspect);
  beat(late);
  controller_->runOnce();
  EXPECT_EQ(controller_->host(late)->state, HostState::kOnline);
  EXPECT_EQ(controller_->placementRuns(), runs);
}

// Pins (issue #16, work follows change): once the cluster has settled, ticks
// and heartbeats that change nothing build no assignment set at all; a change
// (an operator restart) builds the set of the VM's host only and publishes
// its new version; the other hosts keep theirs.
TEST_F(ControllerTest, TicksWithoutChangeBuildNoAssignmentSets) {
  join();
  ASSERT_TRUE(apply(kPolicy).isOk());
  settle(40);  // tier order: every tier placed, started, healthy
  const int64_t builds = controller_->assignmentSetBuilds();
  settle(20);
  EXPECT_EQ(controller_->assignmentSetBuilds(), builds);
  const VmRecord vm = *controller_->vm("mysql-1");
  const int64_t version = controller_->assignmentsFor(vm.host).version;
  std::map<std::string, int64_t> others;
  for (const auto& h : controller_->policy().hosts)
    if (h.name != vm.host) others[h.name] = controller_->assignmentsFor(h.name).version;
  ASSERT_EQ(others.size(), 2u);
  ASSERT_TRUE(controller_->restartVm("mysql-1").isOk());
  EXPECT_EQ(controller_->assignmentSetBuilds(), builds + 1);  // its host's set only
  EXPECT_GT(controller_->assignmentsFor(vm.host).version, version);
  for (const auto& [host, v] : others) EXPECT_EQ(controller_->assignmentsFor(host).version, v) << host;
  EXPECT_NE(controller_->metricsText().find("tierwarden_assignment_set_builds_total "),
            std::string::npos);
}

// Pins: an assignment set lists the VMs of its host only, in name order, with
// an incoming migration listed at its destination (the VmsByHost index gives
// the same sets as a scan of every VM).
TEST_F(ControllerTest, AssignmentSetsListTheirHostsVmsByName) {
  join();
  ASSERT_TRUE(apply(kPolicy).isOk());
  settle(40);
  int total = 0;
  for (const auto& h : controller_->policy().hosts) {
    std::vector<std::string> names;
    for (const auto& a : controller_->assignmentsFor(h.name).assignments) {
      EXPECT_EQ(controller_->vm(a.vm)->host, h.name) << a.vm;
      names.push_back(a.vm);
    }
    EXPECT_TRUE(std::is_sorted(names.begin(), names.end()));
    total += static_cast<int>(names.size());
  }
  EXPECT_EQ(total, 5);
}

// Pins: heartbeats missing -> suspect -> offline, and an offline (unfenced)
// host keeps its VMs assigned (never two copies).
TEST_F(ControllerTest, SilentHostGoesSuspectThenOfflineKeepingVms) {
  join();
  ASSERT_TRUE(apply(kPolicy).isOk());
  settle();
  std::string host = controller_->vm("mysql-1")->host;
  for (int i = 0; i < 20; ++i) {  // 2 s: only the other hosts beat
    clock_.advance(100);
    for (const char* h : {"h1", "h2", "h3"})
      if (host != h) beat(h);
    controller_->runOnce();
  }
  EXPECT_EQ(controller_->host(host)->state, HostState::kSuspect);
  for (int i = 0; i < 20; ++i) {
    clock_.advance(100);
    for (const char* h : {"h1", "h2", "h3"})
      if (host != h) beat(h, true, {host});  // the quorum: both peers lost it
    controller_->runOnce();
  }
  EXPECT_EQ(controller_->host(host)->state, HostState::kOffline);
  EXPECT_EQ(controller_->vm("mysql-1")->host, host);
  // It comes back: online again.
  beat(host);
  EXPECT_EQ(controller_->host(host)->state, HostState::kOnline);
}

// Pins: the quorum rule (docs/fencing.md). A host silent to the controller,
// whose libvirt does not answer either, is not declared dead while its peers
// still reach it (the controller alone is 1 of 4 votes: it may be the one cut
// off): it stays suspect, with a host.no_quorum event, and keeps its VMs. One
// peer's report is 2 of 4 votes: still no quorum. With both peers' reports
// (3 of 4) it is declared dead.
TEST_F(ControllerTest, SilentHostIsDeclaredDeadOnlyWithAQuorum) {
  join();
  ASSERT_TRUE(apply(kPolicy).isOk());
  settle();
  const std::string host = controller_->vm("mysql-1")->host;
  std::vector<std::string> others;
  for (const char* h : {"h1", "h2", "h3"})
    if (host != h) others.push_back(h);
  for (int i = 0; i < 60; ++i) {  // 6 s: no peer reports it
    clock_.advance(100);
    for (const auto& h : others) beat(h);
    controller_->runOnce();
  }
  EXPECT_EQ(controller_->host(host)->state, HostState::kSuspect);
  EXPECT_EQ(controller_->vm("mysql-1")->host, host);
  auto events = controller_->eventsJson(0, 5000);
  ASSERT_TRUE(events.isOk());
  bool said = false;
  for (const auto& e : (*events)["events"]) {
    said |= e["kind"] == "host.no_quorum" &&
            e["message"].get<std::string>().find("1 of 4 votes") != std::string::npos;
  }
  EXPECT_TRUE(said);
  for (int i = 0; i < 30; ++i) {  // one peer reports it: 2 of 4
    clock_.advance(100);
    beat(others[0], true, {host});
    beat(others[1]);
    controller_->runOnce();
  }
  EXPECT_EQ(controller_->host(host)->state, HostState::kSuspect);
  for (int i = 0; i < 10; ++i) {  // both: 3 of 4
    clock_.advance(100);
    for (const auto& h : others) beat(h, true, {host});
    controller_->runOnce();
  }
  EXPECT_EQ(controller_->host(host)->state, HostState::kOffline);
}

// Pins: a controller that hears from nobody fences nobody: every host silent
// (the controller is cut off) leaves them all suspect with their VMs.
TEST_F(ControllerTest, ControllerThatHearsFromNobodyFencesNobody) {
  join();
  ASSERT_TRUE(apply(kPolicy).isOk());
  settle();
  for (int i = 0; i < 100; ++i) {
    clock_.advance(100);
    controller_->runOnce();
  }
  for (const char* h : {"h1", "h2", "h3"}) {
    EXPECT_EQ(controller_->host(h)->state, HostState::kSuspect) << h;
  }
  for (const auto& vm : controller_->vms()) EXPECT_NE(vm.state, VmState::kFencing) << vm.name;
}

// Pins: a domain report with a stale epoch does not change the VM's state.
TEST_F(ControllerTest, StaleEpochReportIgnored) {
  join();
  ASSERT_TRUE(apply(kPolicy).isOk());
  settle();
  const VmRecord vm = *controller_->vm("mysql-1");
  Heartbeat hb = agentHeartbeat(vm.host);
  DomainReport d;
  d.vm = vm.name;
  d.tier = vm.tier;
  d.epoch = vm.epoch - 1;
  d.state = DomainState::kCrashed;
  hb.domains.push_back(d);
  ASSERT_TRUE(controller_->handleHeartbeat(hb).isOk());
  EXPECT_EQ(controller_->vm("mysql-1")->state, VmState::kRunning);
}

// Pins: a controller restarted on the same SQLite file comes back with the
// same policy, VMs, hosts and epochs, and keeps every VM where it was.
TEST_F(ControllerTest, RecoverFromStoreKeepsEverything) {
  auto path = std::filesystem::temp_directory_path() / ("tw-ctl-" + std::to_string(::getpid()) + ".db");
  std::filesystem::remove(path);
  {
    ASSERT_NO_FATAL_FAILURE(openController(path.string()));
    join();
    ASSERT_TRUE(apply(kPolicy).isOk());
    settle();
  }
  auto before = controller_->vms();
  ASSERT_NO_FATAL_FAILURE(openController(path.string()));
  EXPECT_EQ(controller_->policyVersion(), 2);
  controller_->runOnce();
  auto after = controller_->vms();
  ASSERT_EQ(before.size(), after.size());
  for (size_t i = 0; i < before.size(); ++i) {
    EXPECT_EQ(before[i].name, after[i].name);
    EXPECT_EQ(before[i].host, after[i].host);
    EXPECT_EQ(before[i].epoch, after[i].epoch);
  }
  // Every VM is assigned again at once (no tier-order gate for running VMs).
  size_t assigned = 0;
  for (const char* h : {"h1", "h2", "h3"}) assigned += controller_->assignmentsFor(h).assignments.size();
  EXPECT_EQ(assigned, 5u);
  controller_.reset();
  store_.reset();
  std::filesystem::remove(path);
  std::filesystem::remove(path.string() + "-wal");
  std::filesystem::remove(path.string() + "-shm");
}

// Pins: metrics expose hosts by state, VMs by state and tier, and the event counter.
TEST_F(ControllerTest, MetricsText) {
  join();
  ASSERT_TRUE(apply(kPolicy).isOk());
  settle();
  std::string m = controller_->metricsText();
  EXPECT_NE(m.find("tierwarden_hosts{state=\"online\"} 3"), std::string::npos) << m;
  EXPECT_NE(m.find("tierwarden_vms{state=\"running\",tier=\"mysql\"} 2"), std::string::npos) << m;
  EXPECT_NE(m.find("tierwarden_events_total "), std::string::npos);
  EXPECT_NE(m.find("tierwarden_reconcile_duration_seconds_count"), std::string::npos);
}

// Pins: assignments carry the tier's `after:` list (the balancer's backends).
TEST_F(ControllerTest, AssignmentCarriesAfter) {
  join();
  ASSERT_TRUE(apply(kPolicy).isOk());
  settle();
  int seen = 0;
  for (const char* h : {"h1", "h2", "h3"}) {
    for (const auto& a : controller_->assignmentsFor(h).assignments) {
      ++seen;
      std::vector<std::string> expected;
      if (a.tier == "apache") expected = {"mysql"};
      if (a.tier == "balancer") expected = {"apache"};
      EXPECT_EQ(a.after, expected) << a.vm;
    }
  }
  EXPECT_EQ(seen, 5);
}

const char* kServicePolicy = R"(
tiers:
  - name: db
    image: tiny-db
    replicas: 1
    health: { type: tcp, port: 3306 }
  - name: web
    image: tiny-web
    replicas: 2
    ports:
      - { name: http, port: 80 }
      - { name: admin, port: 8080 }
)";

// Pins: a tier's endpoints are its service ports (else its check port) of the
// VMs their host reports running with a forward, at the host's service
// address, sorted by vm then port; nothing before ports are reported.
TEST_F(ControllerTest, EndpointsOfRunningVmsWithForwards) {
  join();
  ASSERT_TRUE(apply(kServicePolicy).isOk());
  settle();  // running, but no port forwards reported
  EXPECT_EQ(endpoints("web"), (Json{{"tier", "web"}, {"endpoints", Json::array()}}));
  beatWithPorts("h1", "10.0.0.1");
  beatWithPorts("h2", "10.0.0.2");
  beatWithPorts("h3", "10.0.0.3");
  const VmRecord web1 = *controller_->vm("web-1");
  const VmRecord web2 = *controller_->vm("web-2");
  auto address = [](const std::string& host) { return "10.0.0." + host.substr(1); };
  Json expected = Json::array();
  for (const VmRecord* vm : {&web1, &web2}) {
    expected.push_back(Json{{"vm", vm->name}, {"host", address(vm->host)},
                            {"port", hostPort(vm->host, vm->name, 80)}, {"hypervisor", vm->host},
                            {"name", "http"}, {"guest_port", 80}, {"healthy", true}});
    expected.push_back(Json{{"vm", vm->name}, {"host", address(vm->host)},
                            {"port", hostPort(vm->host, vm->name, 8080)}, {"hypervisor", vm->host},
                            {"name", "admin"}, {"guest_port", 8080}, {"healthy", true}});
  }
  EXPECT_EQ(endpoints("web"), (Json{{"tier", "web"}, {"endpoints", expected}}));
  // No `ports:`: the health check port, named "health".
  Json db = endpoints("db")["endpoints"];
  ASSERT_EQ(db.size(), 1u);
  EXPECT_EQ(db[0]["vm"], "db-1");
  EXPECT_EQ(db[0]["name"], "health");
  EXPECT_EQ(db[0]["guest_port"], 3306);
  EXPECT_EQ(db[0]["port"], hostPort(controller_->vm("db-1")->host, "db-1", 3306));
  // A VM reported without forwards has no entry.
  beatWithPorts(web1.host, address(web1.host), Health::kHealthy, "web-1");
  Json list = endpoints("web")["endpoints"];
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0]["vm"], "web-2");
}

// Pins: only the current epoch, running, counts: a stale-epoch report, a
// crashed domain and a host being fenced drop the VM's endpoints.
TEST_F(ControllerTest, EndpointsOnlyForRunningCurrentEpoch) {
  join();
  ASSERT_TRUE(apply(kServicePolicy).isOk());
  settle();
  for (const char* h : {"h1", "h2", "h3"}) beatWithPorts(h, "127.0.0.1");
  ASSERT_EQ(endpoints("web")["endpoints"].size(), 4u);
  const VmRecord web1 = *controller_->vm("web-1");
  const VmRecord web2 = *controller_->vm("web-2");

  // web-1's host reports it at an older epoch: a stale copy, not an endpoint.
  Heartbeat hb = agentHeartbeat(web1.host);
  DomainReport stale;
  stale.vm = "web-1";
  stale.tier = "web";
  stale.epoch = web1.epoch - 1;
  stale.state = DomainState::kRunning;
  stale.health = Health::kHealthy;
  stale.ports = {{80, 20999}, {8080, 20998}};
  hb.domains.push_back(stale);
  ASSERT_TRUE(controller_->handleHeartbeat(hb).isOk());
  Json list = endpoints("web")["endpoints"];
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0]["vm"], "web-2");

  // Crashed at the current epoch (reported by the heartbeat): gone too.
  hb.domains[0].epoch = web1.epoch;
  hb.domains[0].state = DomainState::kCrashed;
  ASSERT_TRUE(controller_->handleHeartbeat(hb).isOk());
  EXPECT_EQ(endpoints("web")["endpoints"].size(), 2u);
  beatWithPorts(web1.host, "127.0.0.1");
  EXPECT_EQ(endpoints("web")["endpoints"].size(), 4u);

  // A crash event between heartbeats drops it at once.
  AgentEvent crash;
  crash.host = web1.host;
  crash.vm = "web-1";
  crash.epoch = web1.epoch;
  crash.kind = "vm.crashed";
  crash.level = "warn";
  crash.message = "domain crashed";
  ASSERT_TRUE(controller_->handleAgentEvent(crash).isOk());
  EXPECT_EQ(endpoints("web")["endpoints"].size(), 2u);
  beatWithPorts(web1.host, "127.0.0.1");
  ASSERT_EQ(endpoints("web")["endpoints"].size(), 4u);

  // web-2's host goes silent and is declared dead: its last report no longer counts.
  for (int i = 0; i < 40 && controller_->vm("web-2")->host == web2.host &&
                  controller_->vm("web-2")->state == VmState::kRunning;
       ++i) {
    clock_.advance(100);
    for (const char* h : {"h1", "h2", "h3"})
      if (web2.host != h) beat(h, true, {web2.host});
    controller_->runOnce();
  }
  EXPECT_NE(controller_->vm("web-2")->state, VmState::kRunning);
  const Json after = endpoints("web");  // named: a temporary's member would dangle in the loop
  for (const auto& e : after["endpoints"]) EXPECT_EQ(e["vm"], "web-1");
}

// Pins: `healthy` is the report's health: unhealthy or not yet judged is false.
TEST_F(ControllerTest, EndpointsHealthyFlag) {
  join();
  ASSERT_TRUE(apply(kServicePolicy).isOk());
  settle();
  for (const char* h : {"h1", "h2", "h3"}) beatWithPorts(h, "127.0.0.1");
  const std::string host = controller_->vm("web-1")->host;
  beatWithPorts(host, "127.0.0.1", Health::kUnhealthy);
  const Json all = endpoints("web");  // named: a temporary's member would dangle in the loop
  for (const auto& e : all["endpoints"]) {
    EXPECT_EQ(e["healthy"], e["vm"] != "web-1") << e.dump();
  }
  beatWithPorts(host, "127.0.0.1", Health::kUnknown);
  const Json unknown = endpoints("web");
  for (const auto& e : unknown["endpoints"]) {
    EXPECT_EQ(e["healthy"], e["vm"] != "web-1") << e.dump();
  }
  beatWithPorts(host, "127.0.0.1", Health::kHealthy);
  const Json healthy = endpoints("web");
  for (const auto& e : healthy["endpoints"]) EXPECT_EQ(e["healthy"], true) << e.dump();
}

// Pins: a migrating VM is listed where it runs; once it runs on the new host
// at the new epoch its endpoints follow it (new address and ports), and the
// old host's leftover copy is not listed.
TEST_F(ControllerTest, EndpointsFollowMigratedVm) {
  join();
  ASSERT_TRUE(apply(kServicePolicy).isOk());
  settle();
  for (const char* h : {"h1", "h2", "h3"}) beatWithPorts(h, "192.0.2." + std::string(h + 1));
  const VmRecord before = *controller_->vm("web-1");
  ASSERT_NE(before.host, "h3");
  ASSERT_TRUE(controller_->migrateVm("web-1", "h3").isOk());
  Json list = endpoints("web")["endpoints"];
  ASSERT_EQ(list.size(), 4u);
  EXPECT_EQ(list[0]["hypervisor"], before.host);
  // The destination reports it running at the migration's epoch, with its forwards.
  beatWithPorts("h3", "192.0.2.3");
  const VmRecord after = *controller_->vm("web-1");
  ASSERT_EQ(after.host, "h3");
  EXPECT_GT(after.epoch, before.epoch);
  // The source still reports its copy at the old epoch (not yet removed).
  DomainReport leftover;
  leftover.vm = "web-1";
  leftover.tier = "web";
  leftover.epoch = before.epoch;
  leftover.state = DomainState::kRunning;
  leftover.health = Health::kHealthy;
  leftover.ports = {{80, hostPort(before.host, "web-1", 80)},
                    {8080, hostPort(before.host, "web-1", 8080)}};
  beatWithPorts(before.host, "192.0.2." + before.host.substr(1), Health::kHealthy, "", {leftover});
  list = endpoints("web")["endpoints"];
  ASSERT_EQ(list.size(), 4u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(list[i]["vm"], "web-1");
    EXPECT_EQ(list[i]["hypervisor"], "h3");
    EXPECT_EQ(list[i]["host"], "192.0.2.3");
    EXPECT_EQ(list[i]["port"], hostPort("h3", "web-1", list[i]["guest_port"].get<int>()));
  }
}

// Pins: an unknown tier is kNotFound naming it.
TEST_F(ControllerTest, EndpointsOfUnknownTierIsNotFound) {
  join();
  ASSERT_TRUE(apply(kServicePolicy).isOk());
  auto j = controller_->endpointsJson("nope");
  ASSERT_FALSE(j.isOk());
  EXPECT_EQ(j.status().code(), Code::kNotFound);
  EXPECT_NE(j.status().message().find("'nope'"), std::string::npos);
}

}  // namespace
}  // namespace tw
