// The controller's failure handling, step by step on a manual clock: two
// signals before a host is dead, fencing before reassignment, lease expiry
// timing, budgets -> relocation -> error -> reset, incidents. Migration and
// drain: controller_migration_test.cc.
#include <gtest/gtest.h>

#include <set>

#include "controller/controller.h"
#include "healing_fixture.h"
#include "tw/store.h"

namespace tw {
namespace {

using namespace testing_healing;  // NOLINT: the fixture and its helpers

// Pins: a powered-off host with a confirming fence agent is fenced once
// dead_after passes, and its VMs get new epochs on other hosts (the spare
// included) — never before the fence confirmed.
TEST_F(HealingTest, PowerOffWithFenceAgentMovesVmsAfterFence) {
  auto on_h1 = vmsOn("h1");
  ASSERT_FALSE(on_h1.empty());
  std::map<std::string, int64_t> epochs;
  for (const auto& n : on_h1) epochs[n] = controller_->vm(n)->epoch;
  up_.erase("h1");
  hosts_.alive.erase("h1");
  Millis off = clock_.nowMs();
  while (controller_->host("h1")->state != HostState::kFenced && clock_.nowMs() - off < 10000) {
    tick();
    if (controller_->host("h1")->state != HostState::kFenced) {
      for (const auto& n : on_h1) EXPECT_EQ(controller_->vm(n)->host, "h1") << "moved before fence";
    }
  }
  ASSERT_EQ(controller_->host("h1")->state, HostState::kFenced);
  EXPECT_LE(clock_.nowMs() - off, 3300);  // dead after 3 s, the agent confirms at once
  ASSERT_EQ(hosts_.calls.size(), 1u);
  EXPECT_EQ(hosts_.calls[0],
            "agent h1 ipmi [ipmitool] [-I] [lanplus] [-H] [bmc-h1] [-U] [admin] [-P] [S3cret] "
            "[chassis] [power] [off]");
  tick(10);
  for (const auto& n : on_h1) {
    const VmRecord* v = controller_->vm(n);
    EXPECT_NE(v->host, "h1") << n;
    EXPECT_GT(v->epoch, epochs[n]) << n;
    EXPECT_EQ(v->state, VmState::kRunning) << n;
  }
  EXPECT_TRUE(hasEvent("host.fenced"));
}

// Pins: placing a fenced host's VMs is an incremental placement run (issue
// #16): no full run after the policy's, and the check mode (on in this
// binary, placement_index_test.cc) found it equal to place().
TEST_F(HealingTest, FencedHostsVmsArePlacedIncrementally) {
  const int64_t full_runs = controller_->placementFullRuns();
  const int64_t runs = controller_->placementRuns();
  auto on_h1 = vmsOn("h1");
  ASSERT_FALSE(on_h1.empty());
  up_.erase("h1");
  hosts_.alive.erase("h1");
  const Millis off = clock_.nowMs();
  while (controller_->host("h1")->state != HostState::kFenced && clock_.nowMs() - off < 10000) tick();
  ASSERT_EQ(controller_->host("h1")->state, HostState::kFenced);
  tick(10);
  for (const auto& n : on_h1) EXPECT_EQ(controller_->vm(n)->state, VmState::kRunning) << n;
  EXPECT_TRUE(vmsOn("h1").empty());
  EXPECT_GT(controller_->placementRuns(), runs);
  EXPECT_EQ(controller_->placementFullRuns(), full_runs);
}

// Pins (the security fix): events, which anyone may read without a token,
// name the fence agent and its exit status, never its command or arguments
// (a BMC password here) — neither when it confirms nor when it fails.
TEST_F(HealingTest, FenceEventsNameTheAgentNeverTheCommand) {
  hosts_.agent_confirms = false;
  up_.erase("h1");
  hosts_.alive.erase("h1");
  tick(40);
  std::string events = allEvents();
  EXPECT_NE(events.find("host.fencing fencing host 'h1' by fence agent 'ipmi'\n"), std::string::npos)
      << events;
  EXPECT_NE(events.find("fencing host 'h1' by fence agent 'ipmi' did not confirm: exited 1"),
            std::string::npos)
      << events;
  EXPECT_EQ(controller_->host("h1")->state, HostState::kOffline);  // waits for the lease
  for (const char* secret : {"S3cret", "ipmitool", "bmc-h1", "chassis"}) {
    EXPECT_EQ(events.find(secret), std::string::npos) << secret << " in:\n" << events;
    EXPECT_EQ(controller_->host("h1")->reason.find(secret), std::string::npos);
  }
  // Fails again after it came back; this time the agent confirms.
  up_.insert("h1");
  hosts_.alive.insert("h1");
  tick(40);
  ASSERT_EQ(controller_->host("h1")->state, HostState::kOnline);
  hosts_.agent_confirms = true;
  up_.erase("h1");
  hosts_.alive.erase("h1");
  tick(40);
  ASSERT_EQ(controller_->host("h1")->state, HostState::kFenced);
  EXPECT_EQ(controller_->host("h1")->reason, "fenced by fence agent 'ipmi': exited 0");
  events = allEvents();
  for (const char* secret : {"S3cret", "ipmitool", "bmc-h1", "chassis"})
    EXPECT_EQ(events.find(secret), std::string::npos) << secret << " in:\n" << events;
  auto incidents = store_->incidents(10);
  ASSERT_TRUE(incidents.isOk());
  for (const auto& inc : *incidents)
    for (const auto& step : inc.steps) EXPECT_EQ(step.detail.find("S3cret"), std::string::npos);
}

// Pins: {uri} is the host's uri from the policy, one argv word.
TEST_F(HealingTest, FenceAgentGetsTheHostsUri) {
  ASSERT_TRUE(controller_
                  ->applyPolicy({{"hosts.yaml", R"(
hosts:
  - { name: h1, uri: "qemu+tcp://h1/system", fence: { agent: virsh } }
  - { name: h2, uri: "qemu+tcp://h2/system" }
  - { name: h3, uri: "qemu+tcp://h3/system", role: spare }
)"}},
                                false)
                  .isOk());
  up_.erase("h1");
  hosts_.alive.erase("h1");
  tick(40);
  ASSERT_EQ(controller_->host("h1")->state, HostState::kFenced);
  ASSERT_EQ(hosts_.calls.size(), 1u);
  EXPECT_EQ(hosts_.calls[0], "agent h1 virsh [virsh] [-c] [qemu+tcp://h1/system] [destroy-all]");
  EXPECT_NE(allEvents().find("fenced by fence agent 'virsh': exited 0"), std::string::npos);
}

// Pins: a policy naming a fence agent that the controller's configuration
// does not define is refused at apply (file:line:column of the name, the
// agents that exist), and nothing changes; so is {uri} for a host without one.
TEST_F(HealingTest, ApplyRefusesAnUnknownFenceAgent) {
  int64_t version = controller_->policyVersion();
  auto r = controller_->applyPolicy(
      {{"hosts.yaml", "hosts:\n  - name: h1\n    uri: qemu+tcp://h1/system\n"
                      "    fence: { agent: pdu }\n  - { name: h2 }\n  - { name: h3 }\n"}},
      false);
  ASSERT_FALSE(r.isOk());
  EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
  EXPECT_EQ(r.status().toString(),
            "hosts.yaml:4:21: host 'h1' names fence agent 'pdu', which the controller's "
            "configuration does not define (it defines 'ipmi', 'virsh')");
  r = controller_->applyPolicy(
      {{"hosts.yaml", "hosts:\n  - { name: h1, fence: { agent: virsh } }\n  - { name: h2 }\n"
                      "  - { name: h3 }\n"}},
      true);
  ASSERT_FALSE(r.isOk());
  EXPECT_EQ(r.status().toString(),
            "hosts.yaml:2:33: fence agent 'virsh' uses {uri}, but host 'h1' has no uri");
  EXPECT_EQ(controller_->policyVersion(), version);
  EXPECT_EQ(controller_->policy().findHost("h1")->fence_agent, "ipmi");

  // A controller without a fence agents file says how to give it one.
  auto store = Store::open(":memory:");
  ASSERT_TRUE(store.isOk());
  Controller bare(**store, clock_, &hosts_);
  ASSERT_TRUE(bare.recover().isOk());
  r = bare.applyPolicy({{"hosts.yaml", kHosts}}, false);
  ASSERT_FALSE(r.isOk());
  EXPECT_EQ(r.status().toString(),
            "hosts.yaml:3:62: host 'h1' names fence agent 'ipmi', which the controller's "
            "configuration does not define (the controller defines no fence agents: start it "
            "with --fence-agents FILE)");
}

// Pins: a policy stored before fence agents existed (fence: command) does not
// stop the controller from starting: its command is dropped and never run or
// shown, an error event says what to do, the host falls back to libvirt /
// lease expiry; a stored agent the configuration no longer defines is said
// too, and fencing by it fails over to lease expiry.
TEST(HealingRecoverTest, StoredPolicyWithFenceCommandOrUnknownAgent) {
  ManualClock clock(1000);
  auto opened = Store::open(":memory:");
  ASSERT_TRUE(opened.isOk());
  Store& store = **opened;
  PolicyRecord old;
  old.applied_ms = 1;
  old.digest = "d1";
  old.files = {{"hosts.yaml",
                "hosts:\n"
                "  - { name: h1, uri: \"qemu+tcp://h1/system\", fence: command, "
                "fence_command: \"ipmitool -P S3cret power off\" }\n"
                "  - { name: h2, fence: { agent: gone } }\n"}};
  ASSERT_TRUE(store.insertPolicy(old).isOk());
  FakeHostConnector hosts;
  Controller controller(store, clock, &hosts, fenceAgents());
  ASSERT_TRUE(controller.recover().isOk());
  const HostSpec* h1 = controller.policy().findHost("h1");
  ASSERT_NE(h1, nullptr);
  EXPECT_EQ(h1->fence, FenceMethod::kLibvirt);
  EXPECT_TRUE(h1->fence_legacy_command);
  auto eventText = [&store] { return eventLines(store); };
  std::string events = eventText();
  EXPECT_NE(events.find("host.fence_unusable host 'h1': the policy in force says fence: command, "
                        "which is no longer run"),
            std::string::npos)
      << events;
  EXPECT_NE(events.find("host.fence_unusable host 'h2' names fence agent 'gone', which the "
                        "controller's configuration does not define"),
            std::string::npos)
      << events;
  EXPECT_EQ(events.find("S3cret"), std::string::npos) << events;
  // An apply on top is refused until the old file is replaced.
  auto r = controller.applyPolicy({{"tiers.yaml", kTiers}}, true);
  ASSERT_FALSE(r.isOk());
  EXPECT_NE(r.status().toString().find("hosts.yaml:2:62: 'fence_command' (of host 'h1') is no "
                                       "longer supported"),
            std::string::npos)
      << r.status().toString();
  // h2 dies (h1 reports it unreachable: with the controller, a quorum): its
  // agent cannot run; lease expiry fences it.
  auto beat = [&](const std::string& host) {
    Heartbeat hb = agentHeartbeat(host);
    if (host == "h1") hb.peers_unreachable["h2"] = 60000;
    ASSERT_TRUE(controller.handleHeartbeat(hb).isOk());
  };
  for (int i = 0; i < 3; ++i) {
    clock.advance(100);
    beat("h1");
    beat("h2");
    controller.runOnce();
  }
  for (int i = 0; i < 120; ++i) {
    clock.advance(100);
    beat("h1");
    controller.runOnce();
  }
  EXPECT_EQ(controller.host("h2")->state, HostState::kFenced);
  EXPECT_TRUE(hosts.calls.empty());
  events = eventText();
  EXPECT_NE(events.find("fencing host 'h2' by fence agent 'gone' did not confirm: it is not "
                        "defined in the controller's configuration"),
            std::string::npos)
      << events;
  EXPECT_NE(events.find("fenced by lease"), std::string::npos) << events;
}

// Pins: without a fence agent (and libvirt silent), fencing waits for the
// lease plus margin after the last heartbeat: no earlier, and then at once.
TEST_F(HealingTest, LeaseExpiryFencesAfterLeasePlusMargin) {
  ASSERT_FALSE(vmsOn("h2").empty());
  Millis last = clock_.nowMs();
  up_.erase("h2");
  hosts_.alive.erase("h2");
  while (controller_->host("h2")->state != HostState::kFenced && clock_.nowMs() - last < 10000) tick();
  ASSERT_EQ(controller_->host("h2")->state, HostState::kFenced);
  Millis took = clock_.nowMs() - last;
  EXPECT_GE(took, 6000);  // lease 5 s + margin 1 s
  EXPECT_LE(took, 6200);
  EXPECT_TRUE(hosts_.calls.empty());
}

// Pins: a host whose agent reports a host watchdog of W is fenced by lease
// only W after lease + margin (its watchdog resets it by then even when its
// agent died or hangs), not before.
TEST_F(HealingTest, LeaseExpiryWaitsForTheHostWatchdog) {
  watchdog_ms_ = 4000;
  tick();
  Millis last = clock_.nowMs();
  up_.erase("h2");
  hosts_.alive.erase("h2");
  while (controller_->host("h2")->state != HostState::kFenced && clock_.nowMs() - last < 20000) tick();
  ASSERT_EQ(controller_->host("h2")->state, HostState::kFenced);
  Millis took = clock_.nowMs() - last;
  EXPECT_GE(took, 10000);  // lease 5 s + margin 1 s + watchdog 4 s
  EXPECT_LE(took, 10200);
  EXPECT_TRUE(hasEvent("host.fenced"));
}

// Pins: with a host watchdog, an agent that died while its libvirt answered
// does enforce its lease (its host was reset W after the last pet): when the
// host then goes dark it is fenced by lease (+ W), not left unfenceable.
TEST_F(HealingTest, DeadAgentWithWatchdogThenPartitionIsFencedByLease) {
  watchdog_ms_ = 4000;
  tick();
  up_.erase("h2");  // the agent dies; libvirt still answers
  tick(80);
  EXPECT_EQ(controller_->host("h2")->state, HostState::kSuspect);
  hosts_.alive.erase("h2");
  tick(150);
  EXPECT_EQ(controller_->host("h2")->state, HostState::kFenced);
  EXPECT_FALSE(hasEvent("host.unfenceable"));
}

// Pins: a host cut off from the network loses its heartbeats and its libvirt
// together; the controller sees libvirt go a little later than dead_after (its
// keepalive), and still counts it as one failure: the agent enforces its lease,
// so the host is fenced by lease expiry (it was "agent silent" for a moment).
TEST_F(HealingTest, PartitionSeenByLibvirtLateIsStillFencedByLease) {
  up_.erase("h2");  // heartbeats stop
  tick(40);         // 4 s: libvirt still "answers" (keepalive not yet expired)
  EXPECT_EQ(controller_->host("h2")->state, HostState::kSuspect);
  hosts_.alive.erase("h2");
  tick(150);
  EXPECT_EQ(controller_->host("h2")->state, HostState::kFenced);
  EXPECT_FALSE(hasEvent("host.unfenceable"));
}

// Pins: an agent that stops while its host's libvirt still answers gives a
// warning and moves nothing.
TEST_F(HealingTest, AgentDeathWithLibvirtAliveIsAWarning) {
  auto on_h2 = vmsOn("h2");
  up_.erase("h2");  // libvirt still answers
  tick(100);        // 10 s
  EXPECT_EQ(controller_->host("h2")->state, HostState::kSuspect);
  EXPECT_EQ(vmsOn("h2"), on_h2);
  EXPECT_TRUE(hasEvent("host.agent_silent"));
  EXPECT_FALSE(hasEvent("host.fenced"));
  up_.insert("h2");
  tick();
  EXPECT_EQ(controller_->host("h2")->state, HostState::kOnline);
}

// Pins: an agent that died while its libvirt answered enforces no lease: when
// the host then goes dark (here 8 s later: well past dead_after + the 3 s in
// which a lost network takes libvirt too), lease expiry is NOT a fence (its VMs
// may still run); the VMs stay put. When its libvirt answers again the host
// is within reach and nothing was moved: fencing is cancelled, nothing is
// destroyed (unfenceable-host-returns), and it is an agent silent host again.
TEST_F(HealingTest, DeadAgentThenPartitionIsNotFencedByLease) {
  auto on_h2 = vmsOn("h2");
  up_.erase("h2");  // the agent dies; libvirt still answers
  tick(80);
  EXPECT_EQ(controller_->host("h2")->state, HostState::kSuspect);
  hosts_.alive.erase("h2");  // now the host goes dark too
  tick(150);                 // 15 s: far past lease + margin
  EXPECT_EQ(controller_->host("h2")->state, HostState::kOffline);
  EXPECT_EQ(vmsOn("h2"), on_h2);
  EXPECT_TRUE(hasEvent("host.unfenceable"));
  EXPECT_FALSE(hasEvent("host.fenced"));
  hosts_.alive.insert("h2");  // its libvirt answers again: taken back, nothing destroyed
  tick(5);
  EXPECT_EQ(controller_->host("h2")->state, HostState::kSuspect);
  EXPECT_TRUE(hosts_.calls.empty());
  EXPECT_TRUE(hasEvent("host.fence_cancelled"));
  tick(50);
  EXPECT_EQ(vmsOn("h2"), on_h2);
  EXPECT_FALSE(hasEvent("host.fenced"));
  up_.insert("h2");  // its agent is back
  tick();
  EXPECT_EQ(controller_->host("h2")->state, HostState::kOnline);
}

// Pins: a blip longer than dead_after but shorter than the lease cancels the
// fence when the host answers again; nothing moved.
TEST_F(HealingTest, HostBackBeforeFenceCancels) {
  auto on_h2 = vmsOn("h2");
  up_.erase("h2");
  hosts_.alive.erase("h2");
  tick(40);  // 4 s: dead, waiting for the lease
  EXPECT_EQ(controller_->host("h2")->state, HostState::kOffline);
  up_.insert("h2");
  hosts_.alive.insert("h2");
  tick(30);
  EXPECT_EQ(controller_->host("h2")->state, HostState::kOnline);
  EXPECT_EQ(vmsOn("h2"), on_h2);
  EXPECT_TRUE(hasEvent("host.fence_cancelled"));
}

// Pins: a fenced host that returns rejoins only after its stale domains are
// gone, and gets no VM back (no ping-pong).
TEST_F(HealingTest, FencedHostRejoinsAsCapacityOnly) {
  auto on_h1 = vmsOn("h1");
  std::vector<DomainReport> stale;
  for (const auto& n : on_h1) {
    const VmRecord* v = controller_->vm(n);
    stale.push_back(report(n, v->tier, v->epoch));
  }
  up_.erase("h1");
  hosts_.alive.erase("h1");
  tick(40);
  ASSERT_EQ(controller_->host("h1")->state, HostState::kFenced);
  tick(10);
  stale_["h1"] = stale;  // it boots and (wrongly) still runs its old copies
  up_.insert("h1");
  tick(3);
  EXPECT_EQ(controller_->host("h1")->state, HostState::kFenced);
  EXPECT_NE(controller_->host("h1")->reason.find("stale domains"), std::string::npos);
  stale_["h1"].clear();  // its agent removed them
  tick(3);
  EXPECT_EQ(controller_->host("h1")->state, HostState::kOnline);
  tick(20);
  EXPECT_TRUE(vmsOn("h1").empty());
}

// Pins: the fenced host's incident has a timeline detected -> fencing ->
// fenced -> placed -> started -> healthy, and is closed.
TEST_F(HealingTest, HostIncidentTimeline) {
  up_.erase("h1");
  hosts_.alive.erase("h1");
  tick(60);
  auto incidents = store_->incidents(10);
  ASSERT_TRUE(incidents.isOk());
  const IncidentRecord* inc = nullptr;
  for (const auto& i : *incidents)
    if (i.subject == "host/h1") inc = &i;
  ASSERT_NE(inc, nullptr);
  std::vector<std::string> steps;
  for (const auto& s : inc->steps) steps.push_back(s.step);
  EXPECT_EQ(steps, (std::vector<std::string>{"detected", "fencing", "fenced", "placed", "started", "healthy"}));
  EXPECT_GT(inc->closed_ms, 0);
  for (size_t i = 1; i < inc->steps.size(); ++i) EXPECT_GE(inc->steps[i].t_ms, inc->steps[i - 1].t_ms);
}

// Pins: the agent's crash and restart events travel apart from heartbeats and
// may come first. The restart begins a new run: the old run's "healthy" must
// not close the incident; a heartbeat's verdict on the new run does.
TEST_F(HealingTest, CrashIncidentClosesOnlyOnTheNewRunsVerdict) {
  const VmRecord* v = controller_->vm("web-1");
  ASSERT_EQ(v->health, Health::kHealthy);
  const std::string host = v->host;
  const int64_t epoch = v->epoch;
  ASSERT_TRUE(controller_->handleAgentEvent(agentEvent(host, "web-1", epoch, "vm.crashed", "warn", "failed")).isOk());
  ASSERT_TRUE(controller_->handleAgentEvent(agentEvent(host, "web-1", epoch, "vm.restarted", "info", "restart 1 of 3")).isOk());
  controller_->runOnce();
  v = controller_->vm("web-1");
  EXPECT_EQ(v->state, VmState::kRunning);
  EXPECT_EQ(v->health, Health::kUnknown);
  auto open = [&] {
    auto incidents = store_->incidents(10);
    for (const auto& i : *incidents)
      if (i.subject == "vm/web-1") return i.closed_ms == 0;
    return false;
  };
  EXPECT_TRUE(open()) << allEvents();
  // The new run's first verdict: the guest is not up yet.
  Heartbeat hb = agentHeartbeat(host);
  for (const auto& a : controller_->assignmentsFor(host).assignments) {
    DomainReport d = runningReport(a);
    if (a.vm == "web-1") d.health = Health::kUnknown;
    hb.domains.push_back(d);
  }
  clock_.advance(100);
  ASSERT_TRUE(controller_->handleHeartbeat(hb).isOk());
  controller_->runOnce();
  EXPECT_TRUE(open());
  tick(1);  // healthy
  EXPECT_FALSE(open());
  EXPECT_EQ(controller_->vm("web-1")->health, Health::kHealthy);
}

// Pins: restart budget spent -> relocated to another host (new epoch);
// spent again there with the relocation budget used up -> error, running
// nowhere; reset -> placed and running again.
TEST_F(HealingTest, BudgetRelocationErrorReset) {
  std::string first = controller_->vm("db-1")->host;
  down_vms_.insert("db-1");
  reason_ = "restart budget spent (2 restarts in 10m)";
  tick(1);
  const VmRecord* v = controller_->vm("db-1");
  EXPECT_NE(v->host, first);
  EXPECT_FALSE(v->host.empty());
  EXPECT_EQ(v->relocations, 1);
  EXPECT_TRUE(hasEvent("vm.relocating"));
  std::string second = v->host;
  tick(4);  // reports from the new host: spent there too
  v = controller_->vm("db-1");
  EXPECT_EQ(v->state, VmState::kError);
  EXPECT_TRUE(v->host.empty());
  EXPECT_NE(v->reason.find("twctl reset vm db-1"), std::string::npos) << v->reason;
  for (const char* h : {"h1", "h2", "h3"})
    for (const auto& a : controller_->assignmentsFor(h).assignments) EXPECT_NE(a.vm, "db-1");
  // A late crash report from the last host changes nothing: it stays in error.
  Status late = controller_->handleAgentEvent(agentEvent(second, "db-1", v->epoch, "vm.crashed", "warn", "late"));
  ASSERT_TRUE(late.isOk()) << late.toString() << " host=" << second;
  EXPECT_EQ(controller_->vm("db-1")->state, VmState::kError);
  down_vms_.clear();
  ASSERT_TRUE(controller_->resetVm("db-1").isOk());
  tick(3);
  v = controller_->vm("db-1");
  EXPECT_EQ(v->state, VmState::kRunning);
  EXPECT_FALSE(v->host.empty());
  EXPECT_EQ(v->relocations, 0);
}

// Pins: the lease fence rests on reports made after the lease ran out, and
// the quorum is judged up to the fence (stale-quorum-host-returns). h2 goes
// dark and the others vote against it; then they fall silent themselves
// (their last reports still "fresh" for dead_after, past h2's lease + margin):
// h2 is not fenced on them. Once they report again, it is.
TEST_F(HealingTest, LeaseFenceNeedsReportsAfterTheLeaseRanOut) {
  const Millis last = clock_.nowMs();
  up_.erase("h2");
  hosts_.alive.erase("h2");
  tick(35);  // 3.5 s: declared dead with 3 of 4 votes
  ASSERT_EQ(controller_->host("h2")->state, HostState::kOffline);
  up_.clear();  // h1 and h3 fall silent (their libvirt answers: no fence of them)
  while (clock_.nowMs() - last < 12000) {
    tick();
    ASSERT_NE(controller_->host("h2")->state, HostState::kFenced)
        << "fenced on stale votes at +" << clock_.nowMs() - last << " ms";
  }
  EXPECT_TRUE(hasEvent("host.no_quorum"));
  up_ = {"h1", "h3"};
  for (int i = 0; i < 40 && controller_->host("h2")->state != HostState::kFenced; ++i) tick();
  EXPECT_EQ(controller_->host("h2")->state, HostState::kFenced);
  EXPECT_TRUE(hosts_.calls.empty());  // by lease
}

// Pins: a controller restarted while a host was declared dead (not fenced)
// gives it dead_after to heartbeat, and does not resume the fence through its
// libvirt when it is back (controller-restart-host-back). A host that stays
// dark is declared dead again and fenced.
TEST_F(HealingTest, RestartGivesAnOfflineHostGrace) {
  auto on_h2 = vmsOn("h2");
  up_.erase("h2");
  hosts_.alive.erase("h2");
  tick(35);
  ASSERT_EQ(controller_->host("h2")->state, HostState::kOffline);
  hosts_.alive.insert("h2");  // back while the controller restarts
  ASSERT_NO_FATAL_FAILURE(restartController(&hosts_, fenceAgents()));
  EXPECT_EQ(controller_->host("h2")->state, HostState::kSuspect);
  tick(5);
  EXPECT_TRUE(hosts_.calls.empty());
  up_.insert("h2");
  tick();
  EXPECT_EQ(controller_->host("h2")->state, HostState::kOnline);
  EXPECT_EQ(vmsOn("h2"), on_h2);

  // Dark again over a restart, and it stays dark.
  up_.erase("h2");
  hosts_.alive.erase("h2");
  tick(35);
  ASSERT_EQ(controller_->host("h2")->state, HostState::kOffline);
  ASSERT_NO_FATAL_FAILURE(restartController(&hosts_, fenceAgents()));
  for (int i = 0; i < 150 && controller_->host("h2")->state != HostState::kFenced; ++i) tick();
  EXPECT_EQ(controller_->host("h2")->state, HostState::kFenced);
}

// Pins (issue 14): each host's watchdog timeout is in the store, so a fresh
// controller (a new leader, a restart) that has not heard the host fences it
// lease + margin + the stored watchdog after its start, not after the
// conservative lease + margin + max(watchdog, lease).
TEST_F(HealingTest, FreshControllerWaitsTheStoredWatchdogNotALease) {
  const Millis took = restartAndFence(1000, /*forget=*/false);
  EXPECT_GE(took, 5000 + 1000 + 1000);  // lease 5 s + margin 1 s + watchdog 1 s
  EXPECT_LE(took, 5000 + 1000 + 1000 + 200);
}

// Pins: "no watchdog" (0) is stored as heard, not as unknown: the lease and
// the margin alone.
TEST_F(HealingTest, FreshControllerKnowsAStoredZeroWatchdog) {
  const Millis took = restartAndFence(0, /*forget=*/false);
  EXPECT_GE(took, 5000 + 1000);
  EXPECT_LE(took, 5000 + 1000 + 200);
}

// Pins: a host whose watchdog no controller stored (-1: a store of schema
// v3, never heard) still gets the conservative wait: at least a lease.
TEST_F(HealingTest, FreshControllerWithoutAStoredWatchdogWaitsALease) {
  const Millis took = restartAndFence(1000, /*forget=*/true);
  EXPECT_GE(took, 5000 + 1000 + 5000);
  EXPECT_LE(took, 5000 + 1000 + 5000 + 200);
}

// Pins: what a heartbeat reports is stored when it changes, longer or
// shorter (the agent re-arms its host's watchdog with it when it starts).
TEST_F(HealingTest, HeartbeatStoresTheWatchdogWhenItChanges) {
  auto stored = [&](const std::string& name) {
    auto hosts = store_->hosts();
    for (const auto& h : *hosts)
      if (h.name == name) return h.watchdog_ms;
    return Millis{-2};
  };
  EXPECT_EQ(stored("h2"), 0);
  watchdog_ms_ = 4000;
  tick();
  EXPECT_EQ(stored("h2"), 4000);
  watchdog_ms_ = 2000;
  tick();
  EXPECT_EQ(stored("h2"), 2000);
}


}  // namespace
}  // namespace tw
