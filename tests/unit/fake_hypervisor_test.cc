#include "tw/fake_hypervisor.h"

#include <gtest/gtest.h>

#include <set>
#include <string>
#include <vector>

#include "tw/hypervisor.h"

namespace tw {
namespace {

DomainSpec specFor(const std::string& vm, int64_t epoch = 1) {
  DomainSpec spec;
  spec.meta.vm = vm;
  spec.meta.tier = "web";
  spec.meta.epoch = epoch;
  spec.meta.policy_version = 3;
  spec.meta.spec_digest = "d1";
  return spec;
}

// Records events as "host vm kind detail", in delivery order, from any number
// of hypervisors.
struct Recorder {
  std::vector<std::string> events;
  DomainEventHandler on(const std::string& host) {
    return [this, host](const DomainEvent& e) {
      events.push_back(host + " " + e.vm + " " + toString(e.kind) + " " + e.detail);
    };
  }
};

class FakeHypervisorTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(hv_.subscribe(rec_.on("h1")).isOk()); }

  FakeHypervisor hv_{Capacity{4, 8192}};
  Recorder rec_;
};

// Pins: the UUID layout (8-4-4-4-12 lower hex, version 5, RFC 4122 variant).
TEST(UuidForVmTest, HasVersionFiveLayout) {
  std::string u = uuidForVm("apache-1");
  ASSERT_EQ(u.size(), 36u);
  for (size_t i = 0; i < u.size(); ++i) {
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      EXPECT_EQ(u[i], '-') << u;
    } else {
      EXPECT_NE(std::string("0123456789abcdef").find(u[i]), std::string::npos) << u;
    }
  }
  EXPECT_EQ(u[14], '5') << u;
  EXPECT_NE(std::string("89ab").find(u[19]), std::string::npos) << u;
}

// Pins: a VM's UUID never changes across releases (hosts keep old definitions;
// tests/integration/data/node.xml holds this value too).
TEST(UuidForVmTest, IsStableAndDistinct) {
  EXPECT_EQ(uuidForVm("apache-1"), uuidForVm("apache-1"));
  EXPECT_EQ(uuidForVm("uuid-probe"), "fa3cf759-9532-502e-b95c-e0cd6d9473e8");
  EXPECT_NE(uuidForVm("apache-1"), uuidForVm("apache-2"));
  EXPECT_NE(uuidForVm("a"), uuidForVm("b"));
}

// Pins: capacity comes from the constructor; ping answers while healthy.
TEST_F(FakeHypervisorTest, CapacityFromConstructor) {
  auto cap = hv_.capacity();
  ASSERT_TRUE(cap.isOk());
  EXPECT_EQ(cap->cpus, 4);
  EXPECT_EQ(cap->memory_mib, 8192);
  EXPECT_TRUE(hv_.ping().isOk());
  FakeHypervisor defaults;
  EXPECT_EQ(defaults.capacity()->cpus, 8);
  EXPECT_EQ(defaults.capacity()->memory_mib, 16384);
}

// Pins: define adds, redefine replaces the spec in place (kDefined added, then
// updated); an empty name is refused.
TEST_F(FakeHypervisorTest, DefineAndRedefine) {
  ASSERT_TRUE(hv_.define(specFor("web-1", 1)).isOk());
  ASSERT_TRUE(hv_.define(specFor("web-1", 2)).isOk());
  ASSERT_NE(hv_.spec("web-1"), nullptr);
  EXPECT_EQ(hv_.spec("web-1")->meta.epoch, 2);
  EXPECT_EQ(rec_.events,
            (std::vector<std::string>{"h1 web-1 defined added", "h1 web-1 defined updated"}));
  auto st = hv_.domainState("web-1");
  ASSERT_TRUE(st.isOk());
  EXPECT_EQ(st->state, DomainState::kShutoff);
  EXPECT_EQ(st->meta.epoch, 2);
  EXPECT_EQ(hv_.define(specFor("")).code(), Code::kInvalidArgument);
}

// Pins: start emits kStarted and counts; starting a running VM is a no-op.
TEST_F(FakeHypervisorTest, StartIsIdempotent) {
  ASSERT_TRUE(hv_.define(specFor("web-1")).isOk());
  rec_.events.clear();
  ASSERT_TRUE(hv_.start("web-1").isOk());
  ASSERT_TRUE(hv_.start("web-1").isOk());
  EXPECT_EQ(hv_.startCount("web-1"), 1);
  EXPECT_TRUE(hv_.isRunning("web-1"));
  EXPECT_EQ(hv_.runningCount(), 1);
  EXPECT_EQ(rec_.events, (std::vector<std::string>{"h1 web-1 started booted"}));
  EXPECT_EQ(hv_.start("nope").code(), Code::kNotFound);
}

// Pins runningVms(): the managed VMs isRunning() says yes to, by name; also
// while hung (as isRunning()); unmanaged domains never.
TEST_F(FakeHypervisorTest, RunningVmsListsWhatIsRunning) {
  for (const char* vm : {"web-2", "web-1", "db-1"}) ASSERT_TRUE(hv_.define(specFor(vm)).isOk());
  ASSERT_TRUE(hv_.start("web-2").isOk());
  ASSERT_TRUE(hv_.start("db-1").isOk());
  hv_.addUnmanaged("foreign");
  EXPECT_EQ(hv_.runningVms(), (std::vector<std::string>{"db-1", "web-2"}));
  hv_.setHung(true);
  EXPECT_EQ(hv_.runningVms(), (std::vector<std::string>{"db-1", "web-2"}));
  hv_.setHung(false);
  hv_.crash("db-1");
  EXPECT_EQ(hv_.runningVms(), std::vector<std::string>{"web-2"});
}

// Pins runsExactly(): yes only for the very set runningVms() names (none
// missing, none more; unmanaged domains and stopped VMs do not count).
TEST_F(FakeHypervisorTest, RunsExactlyWhatRunningVmsNames) {
  using Names = std::set<std::string>;
  EXPECT_TRUE(hv_.runsExactly(Names{}));
  for (const char* vm : {"web-2", "web-1", "db-1"}) ASSERT_TRUE(hv_.define(specFor(vm)).isOk());
  ASSERT_TRUE(hv_.start("web-2").isOk());
  ASSERT_TRUE(hv_.start("db-1").isOk());
  hv_.addUnmanaged("foreign");
  EXPECT_TRUE(hv_.runsExactly(Names{"db-1", "web-2"}));
  EXPECT_FALSE(hv_.runsExactly(Names{}));
  EXPECT_FALSE(hv_.runsExactly(Names{"db-1"}));
  EXPECT_FALSE(hv_.runsExactly(Names{"web-2"}));
  EXPECT_FALSE(hv_.runsExactly(Names{"db-1", "web-1", "web-2"}));
  EXPECT_FALSE(hv_.runsExactly(Names{"db-1", "web-1"}));
  EXPECT_FALSE(hv_.runsExactly(Names{"db-1", "foreign", "web-2"}));
  hv_.crash("db-1");
  EXPECT_TRUE(hv_.runsExactly(Names{"web-2"}));
  EXPECT_FALSE(hv_.runsExactly(Names{"db-1", "web-2"}));
}

// Pins: destroy stops a running VM with kStopped; destroying a stopped or
// absent VM is ok and silent.
TEST_F(FakeHypervisorTest, DestroyIsIdempotent) {
  ASSERT_TRUE(hv_.define(specFor("web-1")).isOk());
  ASSERT_TRUE(hv_.start("web-1").isOk());
  rec_.events.clear();
  ASSERT_TRUE(hv_.destroy("web-1").isOk());
  ASSERT_TRUE(hv_.destroy("web-1").isOk());
  ASSERT_TRUE(hv_.destroy("absent").isOk());
  EXPECT_FALSE(hv_.isRunning("web-1"));
  EXPECT_EQ(hv_.domainState("web-1")->state, DomainState::kShutoff);
  EXPECT_EQ(rec_.events, (std::vector<std::string>{"h1 web-1 stopped destroyed"}));
}

// Pins: undefine refuses a running VM, removes a stopped one (kUndefined), and
// is ok for an absent one; afterwards domainState says kNotFound.
TEST_F(FakeHypervisorTest, UndefineRules) {
  ASSERT_TRUE(hv_.define(specFor("web-1")).isOk());
  ASSERT_TRUE(hv_.start("web-1").isOk());
  EXPECT_EQ(hv_.undefine("web-1").code(), Code::kFailedPrecondition);
  ASSERT_TRUE(hv_.destroy("web-1").isOk());
  rec_.events.clear();
  ASSERT_TRUE(hv_.undefine("web-1").isOk());
  ASSERT_TRUE(hv_.undefine("web-1").isOk());
  EXPECT_EQ(rec_.events, (std::vector<std::string>{"h1 web-1 undefined removed"}));
  EXPECT_EQ(hv_.domainState("web-1").status().code(), Code::kNotFound);
  EXPECT_EQ(hv_.spec("web-1"), nullptr);
}

// Pins: listManaged is sorted by vm and carries meta and state.
TEST_F(FakeHypervisorTest, ListIsSortedWithState) {
  ASSERT_TRUE(hv_.define(specFor("web-2")).isOk());
  ASSERT_TRUE(hv_.define(specFor("db-1")).isOk());
  ASSERT_TRUE(hv_.start("web-2").isOk());
  auto list = hv_.listManaged();
  ASSERT_TRUE(list.isOk());
  ASSERT_EQ(list->size(), 2u);
  EXPECT_EQ((*list)[0].meta.vm, "db-1");
  EXPECT_EQ((*list)[0].state, DomainState::kShutoff);
  EXPECT_EQ((*list)[1].meta.vm, "web-2");
  EXPECT_EQ((*list)[1].meta.tier, "web");
  EXPECT_EQ((*list)[1].state, DomainState::kRunning);
}

// Pins: failStarts makes exactly the next n starts fail with kInternal, also
// when injected before the VM is defined.
TEST_F(FakeHypervisorTest, FailStarts) {
  hv_.failStarts("web-1", 2);
  ASSERT_TRUE(hv_.define(specFor("web-1")).isOk());
  rec_.events.clear();
  EXPECT_EQ(hv_.start("web-1").code(), Code::kInternal);
  EXPECT_EQ(hv_.start("web-1").code(), Code::kInternal);
  EXPECT_FALSE(hv_.isRunning("web-1"));
  EXPECT_TRUE(rec_.events.empty());
  ASSERT_TRUE(hv_.start("web-1").isOk());
  EXPECT_EQ(hv_.startCount("web-1"), 1);

  ASSERT_TRUE(hv_.define(specFor("web-2")).isOk());
  hv_.failStarts("web-2", 1);
  EXPECT_EQ(hv_.start("web-2").code(), Code::kInternal);
  EXPECT_TRUE(hv_.start("web-2").isOk());
}

// Pins: crash() kills a running VM (state crashed, kCrashed); it can be
// started again; crashing a stopped VM does nothing.
TEST_F(FakeHypervisorTest, Crash) {
  ASSERT_TRUE(hv_.define(specFor("web-1")).isOk());
  ASSERT_TRUE(hv_.start("web-1").isOk());
  rec_.events.clear();
  hv_.crash("web-1");
  hv_.crash("web-1");
  EXPECT_EQ(hv_.domainState("web-1")->state, DomainState::kCrashed);
  EXPECT_FALSE(hv_.isRunning("web-1"));
  EXPECT_EQ(rec_.events, (std::vector<std::string>{"h1 web-1 crashed crashed"}));
  // Destroying a crashed VM is ok (it is not running) and silent.
  ASSERT_TRUE(hv_.destroy("web-1").isOk());
  ASSERT_TRUE(hv_.start("web-1").isOk());
  EXPECT_EQ(hv_.startCount("web-1"), 2);
}

// Pins: a hung hypervisor fails every call with kUnavailable and delivers no
// events; its domains keep their state; it recovers when unhung.
TEST_F(FakeHypervisorTest, HungFailsEverythingSilently) {
  ASSERT_TRUE(hv_.define(specFor("web-1")).isOk());
  ASSERT_TRUE(hv_.start("web-1").isOk());
  rec_.events.clear();
  hv_.setHung(true);
  EXPECT_EQ(hv_.ping().code(), Code::kUnavailable);
  EXPECT_EQ(hv_.ping().message(), "hypervisor not answering");
  EXPECT_EQ(hv_.capacity().status().code(), Code::kUnavailable);
  EXPECT_EQ(hv_.define(specFor("web-2")).code(), Code::kUnavailable);
  EXPECT_EQ(hv_.start("web-1").code(), Code::kUnavailable);
  EXPECT_EQ(hv_.destroy("web-1").code(), Code::kUnavailable);
  EXPECT_EQ(hv_.undefine("web-1").code(), Code::kUnavailable);
  EXPECT_EQ(hv_.listManaged().status().code(), Code::kUnavailable);
  EXPECT_EQ(hv_.domainState("web-1").status().code(), Code::kUnavailable);
  EXPECT_EQ(hv_.migrate("web-1", "h2", {}).code(), Code::kUnavailable);
  hv_.crash("web-1");  // dies while nobody can tell
  EXPECT_TRUE(rec_.events.empty());
  hv_.setHung(false);
  EXPECT_TRUE(hv_.ping().isOk());
  EXPECT_EQ(hv_.domainState("web-1")->state, DomainState::kCrashed);
  EXPECT_EQ(hv_.spec("web-2"), nullptr);
}

// Pins: power loss shuts every domain off without events, keeps definitions,
// and fails calls until powerOn.
TEST_F(FakeHypervisorTest, PowerCycleKeepsDefinitions) {
  ASSERT_TRUE(hv_.define(specFor("web-1")).isOk());
  ASSERT_TRUE(hv_.define(specFor("web-2")).isOk());
  ASSERT_TRUE(hv_.start("web-1").isOk());
  rec_.events.clear();
  hv_.powerOff();
  EXPECT_EQ(hv_.ping().code(), Code::kUnavailable);
  EXPECT_EQ(hv_.start("web-2").code(), Code::kUnavailable);
  EXPECT_EQ(hv_.runningCount(), 0);
  hv_.powerOn();
  EXPECT_TRUE(rec_.events.empty());
  auto list = hv_.listManaged();
  ASSERT_TRUE(list.isOk());
  ASSERT_EQ(list->size(), 2u);
  EXPECT_EQ((*list)[0].state, DomainState::kShutoff);
  EXPECT_EQ((*list)[1].state, DomainState::kShutoff);
}

// Pins: an unmanaged domain is never listed and every call on its name is
// refused with kFailedPrecondition, without events.
TEST_F(FakeHypervisorTest, UnmanagedIsNeverTouched) {
  FakeHypervisor peer;
  hv_.connectPeer("h2", &peer);
  hv_.addUnmanaged("legacy");
  EXPECT_TRUE(hv_.listManaged()->empty());
  EXPECT_EQ(hv_.runningCount(), 0);
  EXPECT_EQ(hv_.spec("legacy"), nullptr);
  EXPECT_EQ(hv_.define(specFor("legacy")).code(), Code::kFailedPrecondition);
  EXPECT_EQ(hv_.start("legacy").code(), Code::kFailedPrecondition);
  EXPECT_EQ(hv_.destroy("legacy").code(), Code::kFailedPrecondition);
  EXPECT_EQ(hv_.undefine("legacy").code(), Code::kFailedPrecondition);
  EXPECT_EQ(hv_.domainState("legacy").status().code(), Code::kFailedPrecondition);
  EXPECT_EQ(hv_.migrate("legacy", "h2", {}).code(), Code::kFailedPrecondition);
  hv_.crash("legacy");
  EXPECT_EQ(hv_.define(specFor("legacy")).message(),
            "defining vm 'legacy': domain 'legacy' exists and is not managed by tierwarden");
  EXPECT_TRUE(rec_.events.empty());
  EXPECT_TRUE(peer.listManaged()->empty());
}

// Pins: a migration runs the VM on the peer with the same spec first
// (kStarted there), then it leaves here (kMigrated, kUndefined).
TEST_F(FakeHypervisorTest, MigrateMovesTheDomain) {
  FakeHypervisor peer;
  ASSERT_TRUE(peer.subscribe(rec_.on("h2")).isOk());
  hv_.connectPeer("qemu+unix:///h2", &peer);
  DomainSpec spec = specFor("web-1", 7);
  spec.kernel = "/img/vmlinux";
  ASSERT_TRUE(hv_.define(spec).isOk());
  ASSERT_TRUE(hv_.start("web-1").isOk());
  rec_.events.clear();
  MigrateOptions opts;
  opts.migrate_uri = "unix:///tmp/h2.sock";
  ASSERT_TRUE(hv_.migrate("web-1", "qemu+unix:///h2", opts).isOk());
  EXPECT_EQ(rec_.events,
            (std::vector<std::string>{"h2 web-1 started migrated", "h1 web-1 migrated migrated",
                                      "h1 web-1 undefined removed"}));
  EXPECT_FALSE(hv_.isRunning("web-1"));
  EXPECT_EQ(hv_.spec("web-1"), nullptr);
  EXPECT_TRUE(peer.isRunning("web-1"));
  ASSERT_NE(peer.spec("web-1"), nullptr);
  EXPECT_EQ(peer.spec("web-1")->meta.epoch, 7);
  EXPECT_EQ(peer.spec("web-1")->kernel, "/img/vmlinux");
}

// Pins: failed migrations leave the VM running here: unknown destination
// (kUnavailable), injected failure (kInternal), hung peer (kUnavailable), and
// a stopped VM cannot be migrated (kFailedPrecondition).
TEST_F(FakeHypervisorTest, FailedMigrationKeepsTheDomain) {
  FakeHypervisor peer;
  hv_.connectPeer("h2", &peer);
  ASSERT_TRUE(hv_.define(specFor("web-1")).isOk());
  EXPECT_EQ(hv_.migrate("web-1", "h2", {}).code(), Code::kFailedPrecondition);
  ASSERT_TRUE(hv_.start("web-1").isOk());
  rec_.events.clear();

  EXPECT_EQ(hv_.migrate("web-1", "h9", {}).code(), Code::kUnavailable);
  hv_.failMigrations(1);
  EXPECT_EQ(hv_.migrate("web-1", "h2", {}).code(), Code::kInternal);
  peer.setHung(true);
  EXPECT_EQ(hv_.migrate("web-1", "h2", {}).code(), Code::kUnavailable);
  EXPECT_TRUE(hv_.isRunning("web-1"));
  EXPECT_TRUE(rec_.events.empty());
  peer.setHung(false);
  EXPECT_TRUE(peer.listManaged()->empty());

  ASSERT_TRUE(hv_.migrate("web-1", "h2", {}).isOk());  // the injection was used up
  EXPECT_TRUE(peer.isRunning("web-1"));
}

// Pins: a second subscribe replaces the handler.
TEST_F(FakeHypervisorTest, SubscribeReplacesHandler) {
  Recorder other;
  ASSERT_TRUE(hv_.subscribe(other.on("h1")).isOk());
  ASSERT_TRUE(hv_.define(specFor("web-1")).isOk());
  EXPECT_TRUE(rec_.events.empty());
  EXPECT_EQ(other.events.size(), 1u);
}

}  // namespace
}  // namespace tw
