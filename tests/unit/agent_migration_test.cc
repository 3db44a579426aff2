// Live migration between two agents on FakeHypervisors joined as peers: the
// VM moves with its new epoch; failures, vanishing VMs, incoming and stale
// domains (agent_fixture.h).
#include "agent/agent.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "agent_fixture.h"

namespace tw {
namespace {

using namespace testing_agent;  // agent_fixture.h

// --------------------------------------------------------------- migration ---

// One simulated host: a FakeHypervisor (recorded), a scripted link, an agent.
struct TestHost {
  TestHost(std::string host_name, ManualClock& clock)
      : name(std::move(host_name)), hv(fake), link(clock), clock_(clock) {
    hv.subscribe([this](const DomainEvent& e) {
      if (agent) agent->onDomainEvent(e);
    });
  }
  void startAgent() {
    AgentOptions options;
    options.host = name;
    options.agent_id = name + "-agent";
    agent = std::make_unique<Agent>(options, hv, link, clock_);
    ASSERT_TRUE(agent->start().isOk());
  }
  // The controller's set for this host, answered from now on and pushed.
  void assign(std::vector<Assignment> assignments, int64_t version) {
    link.set.host = name;
    link.set.version = version;
    link.set.lease_ms = 5000;
    link.set.heartbeat_interval_ms = 1000;
    link.set.assignments = std::move(assignments);
    if (agent) agent->onAssignments(link.set);
  }
  std::string name;
  FakeHypervisor fake;
  RecordingHypervisor hv;
  ScriptedLink link;
  std::unique_ptr<Agent> agent;

 private:
  ManualClock& clock_;
};

constexpr char kH2Uri[] = "qemu+unix:///h2";

// The source's view of a VM under migration to h2 (epoch `epoch` here,
// `migrate_epoch` there).
Assignment migrating(Assignment a, int64_t migrate_epoch) {
  a.migrate_to_host = "h2";
  a.migrate_to_uri = kH2Uri;
  a.migrate_epoch = migrate_epoch;
  return a;
}
Assignment incoming(Assignment a) {
  a.incoming = true;
  return a;
}

class AgentMigrationTest : public ::testing::Test {
 protected:
  AgentMigrationTest() { h1_.fake.connectPeer(kH2Uri, &h2_.fake); }

  // Runs both agents (those started) up to t, migrations at once.
  void runUntil(Millis t) {
    for (int i = 0; i < 10000; ++i) {
      Millis next = t + 1;
      for (TestHost* h : {&h1_, &h2_}) {
        if (h->agent) next = std::min(next, h->agent->nextWakeMs());
      }
      if (next > t) {
        clock_.set(t);
        return;
      }
      clock_.set(std::max(clock_.nowMs(), next));
      for (TestHost* h : {&h1_, &h2_}) {
        if (!h->agent || h->agent->nextWakeMs() > clock_.nowMs()) continue;
        h->agent->runOnce();
        h->agent->runMigrations();
      }
    }
    FAIL() << "agents never idle";
  }

  // web-1 running on h1 at epoch 4 (clock at 1000); h2's agent idle.
  void runningOnH1(Assignment a) {
    h1_.assign({a}, 1);
    h2_.assign({}, 1);
    h1_.startAgent();
    h2_.startAgent();
    runUntil(1000);
    ASSERT_TRUE(h1_.fake.isRunning(a.vm));
    h1_.hv.calls.clear();
    h2_.hv.calls.clear();
  }

  // A domain defined and running on a host's hypervisor behind the agent's back.
  static void runDomain(FakeHypervisor& fake, const Assignment& a) {
    ASSERT_TRUE(fake.define(specOf(a)).isOk());
    ASSERT_TRUE(fake.start(a.vm).isOk());
  }

  ManualClock clock_{0};
  TestHost h1_{"h1", clock_};
  TestHost h2_{"h2", clock_};
};

// Pins: a live migration moves the VM to h2 with its new epoch (dest_meta):
// the source reports vm.migrated (epoch 5, with the time it took) and forgets
// it without a crash, destroy or restart; the destination adopts it without
// defining, starting or destroying anything, before and after the controller
// clears the migration. Shared storage migrates with `unsafe`.
TEST_F(AgentMigrationTest, MovesTheVmWithItsNewEpoch) {
  Assignment a = assignment("web-1", 4);
  a.storage.kind = StorageKind::kShared;
  a.storage.path = "/shared/web-1.qcow2";
  runningOnH1(a);
  h1_.hv.during_migrate = [this] { clock_.advance(840); };

  h1_.assign({migrating(a, 5)}, 2);
  h2_.assign({incoming(assignment("web-1", 5))}, 2);
  runUntil(10000);

  EXPECT_EQ(h1_.hv.calls, (std::vector<std::string>{"migrate web-1"}));
  ASSERT_EQ(h1_.hv.migrate_options.size(), 1u);
  const MigrateOptions& options = h1_.hv.migrate_options[0];
  EXPECT_TRUE(options.live);
  EXPECT_TRUE(options.unsafe);
  EXPECT_EQ(options.dest_meta.vm, "web-1");
  EXPECT_EQ(options.dest_meta.tier, "web");
  EXPECT_EQ(options.dest_meta.epoch, 5);
  EXPECT_EQ(options.dest_meta.spec_digest, "d1");
  EXPECT_EQ(h1_.fake.spec("web-1"), nullptr);
  const AgentEvent* migrated = h1_.link.findEvent("vm.migrated", "web-1");
  ASSERT_NE(migrated, nullptr);
  EXPECT_EQ(migrated->epoch, 5);
  EXPECT_EQ(migrated->level, "info");
  EXPECT_EQ(migrated->message, "migrated vm 'web-1' to host 'h2' in 0.84s");
  EXPECT_EQ(h1_.link.countEvents("vm.crashed"), 0);
  EXPECT_EQ(h1_.link.countEvents("vm.migrate_failed"), 0);
  EXPECT_EQ(h1_.link.lastReport("web-1"), nullptr);
  EXPECT_FALSE(h1_.agent->migrating("web-1"));

  EXPECT_TRUE(h2_.hv.calls.empty()) << h2_.hv.calls.front();
  ASSERT_TRUE(h2_.fake.isRunning("web-1"));
  EXPECT_EQ(h2_.fake.spec("web-1")->meta.epoch, 5);
  const DomainReport* there = h2_.link.lastReport("web-1");
  ASSERT_NE(there, nullptr);
  EXPECT_EQ(there->epoch, 5);
  EXPECT_EQ(there->state, DomainState::kRunning);
  EXPECT_EQ(there->health, Health::kHealthy);

  // The controller completes the move.
  h1_.assign({}, 3);
  h2_.assign({assignment("web-1", 5)}, 3);
  runUntil(20000);
  EXPECT_TRUE(h1_.hv.calls == std::vector<std::string>{"migrate web-1"});
  EXPECT_TRUE(h2_.hv.calls.empty()) << h2_.hv.calls.front();
  EXPECT_TRUE(h2_.fake.isRunning("web-1"));
  EXPECT_EQ(h2_.fake.startCount("web-1"), 0);
  EXPECT_EQ(h2_.agent->restarts("web-1"), 0);
}

// Pins: a failed migration is reported once (vm.migrate_failed, warn, epoch =
// migrate_epoch, the hypervisor's message) and not retried for that epoch; the
// VM keeps running on the source untouched; ephemeral storage is not unsafe.
TEST_F(AgentMigrationTest, FailedMigrationKeepsTheVmRunning) {
  runningOnH1(assignment("web-1", 4));
  h1_.fake.failMigrations(1);

  h1_.assign({migrating(assignment("web-1", 4), 5)}, 2);
  h2_.assign({incoming(assignment("web-1", 5))}, 2);
  runUntil(10000);

  EXPECT_EQ(h1_.hv.calls, (std::vector<std::string>{"migrate web-1"}));
  EXPECT_FALSE(h1_.hv.migrate_options.at(0).unsafe);
  EXPECT_TRUE(h1_.fake.isRunning("web-1"));
  EXPECT_EQ(h1_.fake.startCount("web-1"), 1);
  const AgentEvent* failed = h1_.link.findEvent("vm.migrate_failed", "web-1");
  ASSERT_NE(failed, nullptr);
  EXPECT_EQ(failed->level, "warn");
  EXPECT_EQ(failed->epoch, 5);
  EXPECT_EQ(failed->message,
            "migrating vm 'web-1' (epoch 4) to host 'h2' failed after 0.00s: migrating vm "
            "'web-1' to 'qemu+unix:///h2': injected migration failure; it keeps running here");
  EXPECT_EQ(h1_.link.countEvents("vm.migrate_failed"), 1);
  EXPECT_EQ(h1_.link.countEvents("vm.crashed"), 0);
  ASSERT_NE(h1_.link.lastReport("web-1"), nullptr);
  EXPECT_EQ(h1_.link.lastReport("web-1")->state, DomainState::kRunning);
  EXPECT_EQ(h2_.fake.spec("web-1"), nullptr);
  EXPECT_TRUE(h2_.hv.calls.empty()) << h2_.hv.calls.front();

  // A new migrate_epoch is a new attempt.
  h1_.assign({migrating(assignment("web-1", 4), 6)}, 3);
  h2_.assign({incoming(assignment("web-1", 6))}, 3);
  runUntil(12000);
  EXPECT_EQ(h2_.fake.spec("web-1")->meta.epoch, 6);
  EXPECT_NE(h1_.link.findEvent("vm.migrated", "web-1"), nullptr);
}

// Pins: the daemon's order of things — the migration is handed out, the domain
// vanishes from the source (its events arrive) and heartbeats go on before the
// outcome is posted back: no crash, no restart meanwhile; then vm.migrated.
TEST_F(AgentMigrationTest, VanishingDuringTheMigrationIsNoCrash) {
  runningOnH1(assignment("web-1", 4));
  h1_.assign({migrating(assignment("web-1", 4), 5)}, 2);
  h1_.agent->runOnce();
  std::vector<MigrationRequest> requests = h1_.agent->takeMigrations();
  ASSERT_EQ(requests.size(), 1u);
  EXPECT_TRUE(h1_.agent->takeMigrations().empty());  // handed out once
  const MigrationRequest& r = requests[0];
  EXPECT_EQ(r.vm, "web-1");
  EXPECT_EQ(r.epoch, 4);
  EXPECT_EQ(r.migrate_epoch, 5);
  EXPECT_EQ(r.dest_host, "h2");
  EXPECT_EQ(r.dest_uri, kH2Uri);
  EXPECT_EQ(r.options.dest_meta.epoch, 5);
  EXPECT_TRUE(h1_.agent->migrating("web-1"));

  ASSERT_TRUE(h1_.fake.migrate(r.vm, r.dest_uri, r.options).isOk());  // the worker thread
  const size_t heartbeats = h1_.link.heartbeats.size();
  runUntil(4000);
  EXPECT_GE(h1_.link.heartbeats.size(), heartbeats + 3);
  EXPECT_EQ(h1_.link.countEvents("vm.crashed"), 0);
  EXPECT_TRUE(h1_.hv.calls.empty()) << h1_.hv.calls.front();
  EXPECT_EQ(h1_.link.lastReport("web-1"), nullptr);

  clock_.advance(500);
  h1_.agent->onMigrationDone("web-1", 5, Status::ok());
  EXPECT_LE(h1_.agent->nextWakeMs(), clock_.nowMs());
  runUntil(10000);
  ASSERT_NE(h1_.link.findEvent("vm.migrated", "web-1"), nullptr);
  EXPECT_EQ(h1_.link.findEvent("vm.migrated", "web-1")->message,
            "migrated vm 'web-1' to host 'h2' in 3.50s");
  EXPECT_TRUE(h1_.hv.calls.empty()) << h1_.hv.calls.front();
  EXPECT_EQ(h1_.fake.spec("web-1"), nullptr);
}

// Pins: the destination neither defines nor starts an incoming VM while it has
// not arrived, adopts it when it arrives with the assigned epoch, and never
// destroys (or restarts) it while the assignment says incoming, even when it
// stops.
TEST_F(AgentMigrationTest, IncomingVmIsNeverStartedNorDestroyed) {
  runDomain(h1_.fake, assignment("web-1", 4));  // a source without an agent
  h2_.assign({incoming(assignment("web-1", 5))}, 1);
  h2_.startAgent();
  runUntil(5000);
  EXPECT_TRUE(h2_.hv.calls.empty()) << h2_.hv.calls.front();
  EXPECT_EQ(h2_.fake.spec("web-1"), nullptr);
  EXPECT_EQ(h2_.link.lastReport("web-1"), nullptr);

  MigrateOptions options;
  options.dest_meta = DomainMeta{"web-1", "web", 5, 1, "d1"};
  ASSERT_TRUE(h1_.fake.migrate("web-1", kH2Uri, options).isOk());
  runUntil(6000);
  ASSERT_NE(h2_.link.lastReport("web-1"), nullptr);
  EXPECT_EQ(h2_.link.lastReport("web-1")->state, DomainState::kRunning);
  EXPECT_EQ(h2_.link.lastReport("web-1")->epoch, 5);

  h2_.fake.crash("web-1");
  runUntil(30000);
  EXPECT_TRUE(h2_.hv.calls.empty()) << h2_.hv.calls.front();
  EXPECT_NE(h2_.fake.spec("web-1"), nullptr);
  EXPECT_EQ(h2_.link.lastReport("web-1")->state, DomainState::kCrashed);
}

// Pins: on the destination, a domain of that name with an older epoch is
// stale: destroyed and undefined (events name its epoch), nothing is started;
// the migrated domain is then adopted untouched.
TEST_F(AgentMigrationTest, StaleEpochOnTheDestinationIsRemoved) {
  runDomain(h2_.fake, assignment("web-1", 2));
  runDomain(h1_.fake, assignment("web-1", 4));
  h2_.assign({incoming(assignment("web-1", 5))}, 1);
  h2_.startAgent();
  runUntil(1000);

  EXPECT_EQ(h2_.hv.calls, (std::vector<std::string>{"destroy web-1", "undefine web-1"}));
  EXPECT_EQ(h2_.fake.spec("web-1"), nullptr);
  const AgentEvent* destroyed = h2_.link.findEvent("vm.destroyed", "web-1");
  ASSERT_NE(destroyed, nullptr);
  EXPECT_EQ(destroyed->epoch, 2);
  EXPECT_EQ(destroyed->message,
            "destroyed vm 'web-1' (epoch 2): stale, epoch 5 arrives by migration");
  EXPECT_EQ(h2_.link.countEvents("vm.undefined", "web-1"), 1);

  h2_.hv.calls.clear();
  MigrateOptions options;
  options.dest_meta = DomainMeta{"web-1", "web", 5, 1, "d1"};
  ASSERT_TRUE(h1_.fake.migrate("web-1", kH2Uri, options).isOk());
  runUntil(5000);
  EXPECT_TRUE(h2_.hv.calls.empty()) << h2_.hv.calls.front();
  EXPECT_TRUE(h2_.fake.isRunning("web-1"));
}

// Pins: a VM that arrives by migration before the destination's set in force
// names it is not destroyed on that old set: the agent asks the controller
// first (a heartbeat at once) and adopts it when the answer assigns it; when
// the answer does not, it is removed then.
TEST_F(AgentMigrationTest, ArrivalBeforeItsAssignmentWaitsForTheController) {
  runDomain(h1_.fake, assignment("web-1", 4));
  runDomain(h1_.fake, assignment("web-2", 4));
  h2_.assign({}, 1);
  h2_.startAgent();
  runUntil(1000);
  // The controller's set now names web-1 incoming; the agent has not got it.
  h2_.link.set.version = 2;
  h2_.link.set.assignments = {incoming(assignment("web-1", 5))};

  MigrateOptions to5;
  to5.dest_meta = DomainMeta{"web-1", "web", 5, 1, "d1"};
  ASSERT_TRUE(h1_.fake.migrate("web-1", kH2Uri, to5).isOk());
  const size_t heartbeats = h2_.link.heartbeats.size();
  runUntil(1000);
  EXPECT_GT(h2_.link.heartbeats.size(), heartbeats);
  EXPECT_TRUE(h2_.fake.isRunning("web-1"));
  EXPECT_TRUE(h2_.hv.calls.empty()) << h2_.hv.calls.front();
  EXPECT_EQ(h2_.agent->assignmentsVersion(), 2);

  // web-2 arrives, and the controller's answer does not name it: removed.
  MigrateOptions other;
  other.dest_meta = DomainMeta{"web-2", "web", 9, 1, "d1"};
  ASSERT_TRUE(h1_.fake.migrate("web-2", kH2Uri, other).isOk());
  runUntil(2000);
  EXPECT_EQ(h2_.hv.calls, (std::vector<std::string>{"destroy web-2", "undefine web-2"}));
  EXPECT_TRUE(h2_.fake.isRunning("web-1"));
}

// Pins: a source asked to migrate a VM that does not run here (a restarted
// agent after the domain left, say) never defines or starts it; it says so
// once with vm.migrate_failed.
TEST_F(AgentMigrationTest, SourceNeverStartsAVmItShouldMigrate) {
  h1_.assign({migrating(assignment("web-1", 4), 5)}, 1);
  h1_.startAgent();
  runUntil(10000);

  EXPECT_TRUE(h1_.hv.calls.empty()) << h1_.hv.calls.front();
  EXPECT_EQ(h1_.link.countEvents("vm.migrate_failed", "web-1"), 1);
  EXPECT_EQ(h1_.link.findEvent("vm.migrate_failed", "web-1")->message,
            "cannot migrate vm 'web-1' (epoch 4) to host 'h2': it does not run here");
}

}  // namespace
}  // namespace tw
