// Floating addresses in the controller (controller/controller_address.cc),
// step by step on a manual clock: one holder at a time, a new one only after
// the old one was fenced or gave the address back.
#include <gtest/gtest.h>

#include <set>

#include "controller/controller.h"
#include "controller_fixture.h"
#include "tw/store.h"

namespace tw {
namespace {

class ScriptedHosts final : public HostConnector {
 public:
  void setHosts(const std::vector<HostSpec>&) override {}
  bool libvirtAlive(const std::string& host) override { return alive.count(host) > 0; }
  void fenceByLibvirt(const std::string& host) override {
    results.push_back({host, "libvirt", false, "error"});
  }
  void fenceByAgent(const std::string& host, const std::string& agent,
                    const std::vector<std::string>&, Millis) override {
    results.push_back({host, "agent", true, "exited 0", agent});
  }
  std::vector<FenceResult> takeResults() override {
    std::vector<FenceResult> out;
    out.swap(results);
    return out;
  }
  std::set<std::string> alive;
  std::vector<FenceResult> results;
};

const char* kPolicy = R"(
hosts:
  - { name: h1, uri: "qemu+tcp://h1/system", fence: { agent: ipmi } }
  - { name: h2, uri: "qemu+tcp://h2/system", fence: { agent: ipmi } }
  - { name: h3, uri: "qemu+tcp://h3/system", fence: { agent: ipmi } }
tiers:
  - name: lb
    image: tiny-lb
    replicas: 2
    ports: [{ name: http, port: 80 }]
    address: 10.213.0.100/24
)";

class AddressTest : public testing_controller::ControllerFixture {
 protected:
  void SetUp() override {
    auto agents = parseFenceAgents("ipmi = ipmitool power off {host}\n", "fence.conf");
    ASSERT_TRUE(agents.isOk());
    ASSERT_NO_FATAL_FAILURE(openController(":memory:", &hosts_, *agents));
    ASSERT_TRUE(controller_->applyPolicy({{"p.yaml", kPolicy}}, false).isOk());
    for (const char* h : {"h1", "h2", "h3"}) {
      up_.insert(h);
      hosts_.alive.insert(h);
    }
    tick(6);
    for (const auto& v : controller_->vms()) ASSERT_EQ(v.state, VmState::kRunning) << v.name;
  }

  // Every host in up_ heartbeats (its agent applied its set at once: it
  // holds the addresses its set tells it to, plus those in keep_), then one
  // controller pass and the no-two-holders check; `n` times, 100 ms apart.
  void tick(int n = 1) {
    for (int i = 0; i < n; ++i) {
      clock_.advance(100);
      for (const auto& h : up_) beat(h);
      controller_->runOnce();
      checkOneHolder();
    }
  }

  void beat(const std::string& host) {
    Heartbeat hb = testing_controller::agentHeartbeat(host);
    for (const char* other : {"h1", "h2", "h3"})
      if (!up_.count(other)) hb.peers_unreachable[other] = 60000;
    const AssignmentSet set = controller_->assignmentsFor(host);
    hb.assignments_version = set.version;
    hb.assignments_controller = set.controller_id;
    std::set<std::string> held = keep_[host];
    for (const auto& a : set.assignments) {
      if (a.incoming) continue;
      hb.domains.push_back(testing_controller::runningReport(a));
      if (a.address.set()) held.insert(a.address.cidr);
    }
    holding_[host] = held;
    hb.addresses_held.assign(held.begin(), held.end());
    ASSERT_TRUE(controller_->handleHeartbeat(hb).isOk());
  }

  // Hosts whose set tells them to hold the address now.
  std::vector<std::string> toldToHold() {
    std::vector<std::string> out;
    for (const char* h : {"h1", "h2", "h3"})
      for (const auto& a : controller_->assignmentsFor(h).assignments)
        if (a.address.set()) out.push_back(h);
    return out;
  }

  // Never two holders: a host that is told to hold it, or still holds it
  // (and is not fenced), is the only one.
  void checkOneHolder() {
    std::set<std::string> holders;
    for (const auto& h : toldToHold()) holders.insert(h);
    for (const auto& [h, held] : holding_) {
      const HostRecord* rec = controller_->host(h);
      if (held.count("10.213.0.100/24") && rec && rec->state != HostState::kFenced) holders.insert(h);
    }
    EXPECT_LE(holders.size(), 1u) << "two holders at t=" << clock_.nowMs();
  }

  std::vector<std::string> eventKinds(const std::string& prefix) {
    std::vector<std::string> out;
    auto events = store_->eventsSince(0, 5000);
    if (!events.isOk()) return out;
    for (const auto& e : *events)
      if (e.kind.rfind(prefix, 0) == 0) out.push_back(e.kind + " " + e.message);
    return out;
  }

  ScriptedHosts hosts_;
  std::set<std::string> up_;
  std::map<std::string, std::set<std::string>> holding_;  // what each agent has on its interfaces
  std::map<std::string, std::set<std::string>> keep_;     // held whatever its set says
};

// Pins: the host of the first running replica holds the address; exactly one
// set carries it, every set lists the policy's addresses; one address.claimed.
TEST_F(AddressTest, FirstRunningReplicaHoldsIt) {
  const std::string holder = controller_->vm("lb-1")->host;
  EXPECT_EQ(controller_->addressHolder("lb"), holder);
  EXPECT_EQ(toldToHold(), std::vector<std::string>{holder});
  for (const auto& a : controller_->assignmentsFor(holder).assignments) {
    if (a.vm == "lb-1") {
      EXPECT_EQ(a.address.cidr, "10.213.0.100/24");
    } else {
      EXPECT_FALSE(a.address.set());
    }
  }
  for (const char* h : {"h1", "h2", "h3"}) {
    const AssignmentSet set = controller_->assignmentsFor(h);
    ASSERT_EQ(set.addresses.size(), 1u);
    EXPECT_EQ(set.addresses[0].cidr, "10.213.0.100/24");
  }
  auto events = eventKinds("address.");
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0], "address.claimed address 10.213.0.100/24 of tier 'lb' is held by host '" +
                           holder + "' for vm 'lb-1'");
}

// Pins: the holder's host crashes: nobody else is told to hold the address
// until it is fenced; then it goes to the other running replica's host.
TEST_F(AddressTest, HostCrashMovesItOnlyAfterTheFence) {
  const std::string old_holder = controller_->vm("lb-1")->host;
  const std::string other = controller_->vm("lb-2")->host;
  ASSERT_NE(old_holder, other);
  up_.erase(old_holder);
  hosts_.alive.erase(old_holder);
  for (int i = 0; i < 100 && controller_->host(old_holder)->state != HostState::kFenced; ++i) {
    tick();
    if (controller_->host(old_holder)->state != HostState::kFenced) {
      for (const auto& h : toldToHold()) EXPECT_EQ(h, old_holder) << "moved before the fence";
    }
  }
  ASSERT_EQ(controller_->host(old_holder)->state, HostState::kFenced);
  tick(2);
  EXPECT_EQ(controller_->addressHolder("lb"), other);
  EXPECT_EQ(toldToHold(), std::vector<std::string>{other});
  auto events = eventKinds("address.");
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[1], "address.released address 10.213.0.100/24 of tier 'lb' released: host '" +
                           old_holder + "' was fenced (host '" + old_holder + "' was fenced)");
  EXPECT_EQ(events[2].rfind("address.claimed address 10.213.0.100/24 of tier 'lb' is held by host '" +
                                other + "' for vm 'lb-2'", 0),
            0u);
}

// Pins: a partitioned holder (agent silent, libvirt still answering: never
// fenced) keeps the address; no second holder, however long it lasts.
TEST_F(AddressTest, PartitionedHolderIsNeverJoinedByASecond) {
  const std::string old_holder = controller_->vm("lb-1")->host;
  up_.erase(old_holder);  // libvirt still answers: the two signals disagree
  tick(300);
  EXPECT_NE(controller_->host(old_holder)->state, HostState::kFenced);
  for (const auto& h : toldToHold()) EXPECT_EQ(h, old_holder);
  EXPECT_EQ(eventKinds("address.").size(), 1u);
}

// Pins: a migration moves the address after the VM moved and the source
// gave it back (a drain does the same, one migration at a time).
TEST_F(AddressTest, MigrationMovesItAfterTheVm) {
  const std::string src = controller_->vm("lb-1")->host;
  std::string dest;
  for (const char* h : {"h1", "h2", "h3"})
    if (h != src && controller_->vm("lb-2")->host != h) dest = h;
  ASSERT_TRUE(controller_->migrateVm("lb-1", dest).isOk());
  tick(3);
  EXPECT_EQ(toldToHold(), std::vector<std::string>{src}) << "holds on while it migrates";
  int64_t mepoch = 0;
  for (const auto& a : controller_->assignmentsFor(src).assignments)
    if (a.vm == "lb-1") mepoch = a.migrate_epoch;
  // The source holds it still when the migration ends: it must give it back first.
  keep_[src].insert("10.213.0.100/24");
  AgentEvent migrated;
  migrated.host = src;
  migrated.vm = "lb-1";
  migrated.epoch = mepoch;
  migrated.kind = "vm.migrated";
  ASSERT_TRUE(controller_->handleAgentEvent(migrated).isOk());
  tick(5);
  EXPECT_TRUE(toldToHold().empty()) << "the source has not given it back";
  EXPECT_EQ(controller_->addressHolder("lb"), "");
  keep_.clear();
  tick(3);
  EXPECT_EQ(controller_->addressHolder("lb"), dest);
  EXPECT_EQ(toldToHold(), std::vector<std::string>{dest});
  auto events = eventKinds("address.");
  ASSERT_EQ(events.size(), 3u);
  EXPECT_NE(events[1].find("host '" + src + "' removed it (vm 'lb-1' moved to host '" + dest + "')"),
            std::string::npos)
      << events[1];
}

// Pins: a restarted controller learns the holder from the heartbeats and
// keeps it there; it gives the address to nobody before every host reported.
TEST_F(AddressTest, RestartedControllerKeepsTheHolder) {
  const std::string holder = controller_->vm("lb-1")->host;
  keep_[holder].insert("10.213.0.100/24");  // the agent has it on its interface
  ASSERT_NO_FATAL_FAILURE(restartController(&hosts_, *parseFenceAgents("ipmi = x {host}\n", "f.conf")));
  std::set<std::string> all = up_;
  up_ = {holder == "h1" ? "h2" : "h1"};  // one host reports first
  tick(3);
  EXPECT_EQ(controller_->addressHolder("lb"), "");
  EXPECT_TRUE(toldToHold().empty());
  up_ = all;
  tick(5);
  EXPECT_EQ(controller_->addressHolder("lb"), holder);
  EXPECT_EQ(toldToHold(), std::vector<std::string>{holder});
}

}  // namespace
}  // namespace tw
