// The controller's decisions: apply, placement into assignments, tier order,
// liveness, restart, recovery from SQLite. Hermetic: in-memory or temp-file
// SQLite, manual clock, no threads.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>

#include "controller/controller.h"
#include "tw/store.h"

namespace tw {
namespace {

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

class ControllerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto s = Store::open(":memory:");
    ASSERT_TRUE(s.isOk()) << s.status().toString();
    store_ = std::move(s).value();
    controller_ = std::make_unique<Controller>(*store_, clock_);
    ASSERT_TRUE(controller_->recover().isOk());
  }

  Result<ApplyResult> apply(const std::string& text, bool dry_run = false,
                            const std::string& name = "demo.yaml") {
    return controller_->applyPolicy({PolicyFile{name, text}}, dry_run);
  }

  // A heartbeat that reports every assigned VM of `host` running and healthy.
  AssignmentSet beat(const std::string& host, bool report_running = true) {
    Heartbeat hb;
    hb.host = host;
    hb.agent_id = "agent-" + host;
    hb.capacity = {4, 4096};
    AssignmentSet current = controller_->assignmentsFor(host);
    if (report_running) {
      for (const auto& a : current.assignments) {
        DomainReport d;
        d.vm = a.vm;
        d.tier = a.tier;
        d.epoch = a.epoch;
        d.state = DomainState::kRunning;
        d.health = Health::kHealthy;
        hb.domains.push_back(d);
      }
    }
    auto r = controller_->handleHeartbeat(hb);
    EXPECT_TRUE(r.isOk()) << r.status().toString();
    return r.isOk() ? *r : AssignmentSet{};
  }

  // Declares the hosts (hosts.yaml) and lets every agent report its capacity.
  void join(const std::string& hosts = kHosts) {
    auto r = apply(hosts, false, "hosts.yaml");
    ASSERT_TRUE(r.isOk()) << r.status().toString();
    beatAll();
  }

  void beatAll() {
    for (const auto& h : controller_->policy().hosts) beat(h.name);
  }

  // Steps the cluster: heartbeats then a controller pass, `rounds` times.
  void settle(int rounds = 6) {
    for (int i = 0; i < rounds; ++i) {
      clock_.advance(100);
      beatAll();
      controller_->runOnce();
    }
  }

  ManualClock clock_{1000};
  std::unique_ptr<Store> store_;
  std::unique_ptr<Controller> controller_;
};

// Pins: a heartbeat from a host no applied policy declares is refused (404).
TEST_F(ControllerTest, HeartbeatFromUndeclaredHostIsNotFound) {
  Heartbeat hb;
  hb.host = "h1";
  auto r = controller_->handleHeartbeat(hb);
  ASSERT_FALSE(r.isOk());
  EXPECT_EQ(r.status().code(), Code::kNotFound);
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
      if (host != h) beat(h);
    controller_->runOnce();
  }
  EXPECT_EQ(controller_->host(host)->state, HostState::kOffline);
  EXPECT_EQ(controller_->vm("mysql-1")->host, host);
  // It comes back: online again.
  beat(host);
  EXPECT_EQ(controller_->host(host)->state, HostState::kOnline);
}

// Pins: a domain report with a stale epoch does not change the VM's state.
TEST_F(ControllerTest, StaleEpochReportIgnored) {
  join();
  ASSERT_TRUE(apply(kPolicy).isOk());
  settle();
  const VmRecord vm = *controller_->vm("mysql-1");
  Heartbeat hb;
  hb.host = vm.host;
  hb.agent_id = "agent-" + vm.host;
  hb.capacity = {4, 4096};
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
    auto s = Store::open(path.string());
    ASSERT_TRUE(s.isOk());
    store_ = std::move(s).value();
    controller_ = std::make_unique<Controller>(*store_, clock_);
    ASSERT_TRUE(controller_->recover().isOk());
    join();
    ASSERT_TRUE(apply(kPolicy).isOk());
    settle();
  }
  auto before = controller_->vms();
  controller_.reset();
  store_.reset();
  auto s = Store::open(path.string());
  ASSERT_TRUE(s.isOk());
  store_ = std::move(s).value();
  controller_ = std::make_unique<Controller>(*store_, clock_);
  ASSERT_TRUE(controller_->recover().isOk());
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

}  // namespace
}  // namespace tw
