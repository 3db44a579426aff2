// The host watchdog's side of the agent (agent/host_watchdog.h): when the
// agent is entitled to its VMs (Agent::watchdogEntitled), the petter, the
// lab and device watchdogs' plumbing; and what a restarted agent reads back
// from its host (agent/agent_state.h). Hermetic: manual clock, fake
// hypervisor, scripted controller link, temp files; no threads, no sleeps.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>

#include "agent/agent.h"
#include "agent/agent_state.h"
#include "agent/host_watchdog.h"
#include "tw/fake_hypervisor.h"

namespace tw {
namespace {

namespace fs = std::filesystem;

class Link final : public ControllerLink {
 public:
  Result<AssignmentSet> heartbeat(const Heartbeat& hb) override {
    heartbeats.push_back(hb);
    if (!answer.isOk()) return answer;
    return set;
  }
  Status sendEvent(const AgentEvent& e) override {
    if (!answer.isOk()) return answer;
    events.push_back(e);
    return Status::ok();
  }
  int count(const std::string& kind) const {
    int n = 0;
    for (const auto& e : events) n += e.kind == kind;
    for (const auto& hb : heartbeats) {
      for (const auto& e : hb.events) n += e.kind == kind;
    }
    return n;
  }
  AssignmentSet set;
  Status answer;
  std::vector<Heartbeat> heartbeats;
  std::vector<AgentEvent> events;
};

class Peers final : public PeerView {
 public:
  void setPeers(const std::vector<PeerInfo>& peers, Millis) override { given = peers; }
  std::set<std::string> reachable(Millis) const override { return reach; }
  std::map<std::string, Millis> unreachable(Millis) const override { return {}; }
  std::set<std::string> reach;
  std::vector<PeerInfo> given;
};

// A watchdog that counts pets (the test drives the clock).
class FakeWatchdog final : public HostWatchdog {
 public:
  Status open() override {
    armed = true;
    return Status::ok();
  }
  Status pet() override {
    ++pets;
    return Status::ok();
  }
  void close(bool disarm) override { armed = armed && !disarm; }
  Millis timeoutMs() const override { return 5000; }
  std::string describe() const override { return "fake, 5s"; }
  bool armed = false;
  int pets = 0;
};

Assignment web(const std::string& vm) {
  Assignment a;
  a.vm = vm;
  a.tier = "web";
  a.epoch = 1;
  a.policy_version = 1;
  a.spec_digest = "d1";
  a.vcpus = 1;
  a.memory_mib = 256;
  return a;
}

class AgentWatchdogTest : public ::testing::Test {
 protected:
  AgentWatchdogTest() {
    link_.set.host = "h1";
    link_.set.version = 1;
    link_.set.controller_id = "c1";
    link_.set.lease_ms = 5000;
    link_.set.peers = {{"h2", "10.0.0.2:7000"}, {"h3", "10.0.0.3:7000"}};
    link_.set.peer_timeout_ms = 1500;
    link_.set.assignments = {web("web-1"), web("web-2")};
  }

  // A new agent process on the same host (same state store, same boot
  // unless said otherwise), with external heartbeats as in the daemon.
  void startAgent(const std::string& boot = "boot-1") {
    agent_.reset();
    AgentOptions o;
    o.host = "h1";
    o.agent_id = "a" + std::to_string(++generation_);
    o.initial_lease_ms = 5000;
    o.watchdog_ms = 5000;
    o.boot_id = boot;
    agent_ = std::make_unique<Agent>(o, fake_, link_, clock_);
    agent_->setExternalHeartbeats(true);
    agent_->setPeerView(&peers_);
    agent_->setStateStore(&store_);
    agent_->setWakeCallback([this] { woken_ = true; });  // as the daemon's loop queue
    ASSERT_TRUE(agent_->start().isOk());
  }
  // The heartbeat thread's turn, then the loop's (unless stalled): the loop
  // runs when woken or due, as in the daemon.
  void step(bool loop = true) {
    for (int i = 0; i < 2; ++i) {
      agent_->heartbeatTick();
      if (loop && (woken_ || agent_->nextWakeMs() <= clock_.nowMs())) {
        woken_ = false;
        agent_->runOnce();
      }
    }
  }
  void runTo(Millis t, bool loop = true) {
    while (clock_.nowMs() < t) {
      clock_.set(clock_.nowMs() + 10);
      step(loop);
    }
  }

  ManualClock clock_{0};
  FakeHypervisor fake_;
  Link link_;
  Peers peers_;
  MemoryAgentStateStore store_;
  std::unique_ptr<Agent> agent_;
  int generation_ = 0;
  bool woken_ = false;
};

// Pins: the watchdog is petted while the lease is valid; when the lease runs
// out while the host is isolated and the loop is stuck (the destroys wait),
// the agent is no longer entitled (a self-fence is due, VMs still run), and
// entitled again as soon as its loop has destroyed them.
TEST_F(AgentWatchdogTest, StuckSelfFenceStopsThePets) {
  startAgent();
  runTo(100);
  ASSERT_EQ(fake_.runningCount(), 2);
  EXPECT_TRUE(agent_->watchdogEntitled(clock_.nowMs()));
  EXPECT_EQ(link_.heartbeats.back().watchdog_ms, 5000);

  link_.answer = unavailable("cut off");
  runTo(4000, /*loop=*/false);
  EXPECT_TRUE(agent_->watchdogEntitled(clock_.nowMs()));  // the lease still runs
  runTo(5200, /*loop=*/false);
  EXPECT_EQ(agent_->leaseState(), LeaseState::kExpired);
  EXPECT_EQ(fake_.runningCount(), 2);  // the loop is stuck
  EXPECT_FALSE(agent_->watchdogEntitled(clock_.nowMs()));

  step();  // the loop runs again: it destroys
  EXPECT_EQ(fake_.runningCount(), 0);
  EXPECT_TRUE(agent_->watchdogEntitled(clock_.nowMs()));  // nothing left to give up
}

// Pins: a lease that ran out while peers reach the host (held) keeps the
// pets going; losing them (isolated) stops the pets before the heartbeat
// thread has even judged the lease.
TEST_F(AgentWatchdogTest, HeldHostIsEntitledUntilIsolated) {
  startAgent();
  runTo(100);
  peers_.reach = {"h2"};
  link_.answer = unavailable("controller down");
  runTo(9000);
  EXPECT_EQ(agent_->leaseState(), LeaseState::kHeld);
  EXPECT_TRUE(agent_->watchdogEntitled(clock_.nowMs()));
  peers_.reach.clear();
  EXPECT_FALSE(agent_->watchdogEntitled(clock_.nowMs()));
}

// Pins: the petter pets on every tick while entitled, stops (and says so
// once) when not, resumes after; its ticks come every fifth of W.
TEST(WatchdogPetterTest, PetsOnlyWhileEntitled) {
  ManualClock clock(0);
  FakeWatchdog wd;
  bool entitled = true;
  WatchdogPetter petter(wd, clock, [&](Millis) { return entitled; });
  EXPECT_EQ(petter.tick(), 1000);  // W/5 = 1 s
  EXPECT_EQ(wd.pets, 1);
  entitled = false;
  clock.set(1000);
  petter.tick();
  petter.tick();
  EXPECT_EQ(wd.pets, 1);
  EXPECT_FALSE(petter.petting());
  EXPECT_EQ(petter.lastPetMs(), 0);
  entitled = true;
  clock.set(2000);
  petter.tick();
  EXPECT_EQ(wd.pets, 2);
  EXPECT_TRUE(petter.petting());
  EXPECT_EQ(petter.lastPetMs(), 2000);
}

// Pins: an agent restarted while the controller is down reads the peer list
// and lease end its predecessor kept: it does not judge the lease before its
// peer checks had a peer timeout, then is held (it reaches a peer), keeps
// its VMs and pets the watchdog; it restarts nothing and starts nothing.
TEST_F(AgentWatchdogTest, RestartedAgentDecidesFromTheKeptState) {
  startAgent();
  runTo(2000);
  ASSERT_EQ(fake_.runningCount(), 2);
  ASSERT_TRUE(store_.load().value().has_value());
  const PersistedAgentState kept = *store_.load().value();
  EXPECT_EQ(kept.peers.size(), 2u);
  EXPECT_GE(kept.lease_until_ms, 5000);
  EXPECT_LE(kept.lease_until_ms, agent_->leaseUntilMs());  // never later than the real one

  link_.answer = unavailable("controller down");
  peers_.reach = {"h2", "h3"};
  clock_.set(12000);  // crash, then systemd starts a new process later
  startAgent();
  EXPECT_EQ(peers_.given.size(), 2u);
  EXPECT_TRUE(agent_->watchdogEntitled(clock_.nowMs()));
  runTo(20000);
  EXPECT_EQ(agent_->leaseState(), LeaseState::kHeld);
  EXPECT_EQ(fake_.runningCount(), 2);
  EXPECT_EQ(link_.count("host.self_fenced"), 0);
  EXPECT_TRUE(agent_->watchdogEntitled(clock_.nowMs()));
  EXPECT_EQ(agent_->restarts("web-1"), 0);
}

// Pins when the kept state is written (issue #16 compares it field by field
// instead of copying it after every pass): a loop pass that changes nothing
// writes nothing; a lease end that moved by kLeaseSaveStepMs is written
// (never ahead of the real one); a new set is written at once, whole.
TEST_F(AgentWatchdogTest, KeptStateIsWrittenOnlyWhenItChanges) {
  startAgent();
  runTo(3000);
  const int saves = store_.saves();
  for (int i = 0; i < 5; ++i) agent_->runOnce();  // no heartbeat: the lease stands
  EXPECT_EQ(store_.saves(), saves);
  runTo(6000);  // three renewals by the interval (1 s): each one written
  EXPECT_GE(store_.saves(), saves + 3);
  const Millis kept_lease = store_.load().value()->lease_until_ms;
  EXPECT_LE(kept_lease, agent_->leaseUntilMs());
  EXPECT_GT(kept_lease, agent_->leaseUntilMs() - Agent::kLeaseSaveStepMs);

  link_.set.version = 2;
  link_.set.assignments = {web("web-2")};
  runTo(7500);
  const PersistedAgentState kept = *store_.load().value();
  EXPECT_EQ(kept.assignments_version, 2);
  EXPECT_EQ(kept.vms, std::vector<std::string>{"web-2"});
  EXPECT_EQ(kept.peers.size(), 2u);
  EXPECT_EQ(kept.controller_id, "c1");
  EXPECT_EQ(kept.boot_id, "boot-1");
}

// Pins: the kept lease end counts only in the boot that saved it; without
// kept state the start-up lease rules as before (and without a peer list an
// expired start-up lease still self-fences).
TEST_F(AgentWatchdogTest, KeptLeaseEndCountsInItsOwnBootOnly) {
  startAgent("boot-1");
  runTo(1000);
  const Millis kept = store_.load().value()->lease_until_ms;
  link_.answer = unavailable("controller down");
  clock_.set(2000);
  startAgent("boot-1");
  EXPECT_EQ(agent_->leaseUntilMs(), kept);  // min(now + 5 s, kept)
  startAgent("boot-2");
  EXPECT_EQ(agent_->leaseUntilMs(), 7000);
}

// Pins: a self-fence survives an agent restart: the new process starts in
// the fenced state, starts nothing from a pushed set, and only an answer to
// a heartbeat it sent (carrying the reason) ends it.
TEST_F(AgentWatchdogTest, SelfFenceSurvivesARestart) {
  startAgent();
  runTo(100);
  link_.answer = unavailable("cut off");
  runTo(5500);
  ASSERT_EQ(agent_->leaseState(), LeaseState::kExpired);
  ASSERT_EQ(fake_.runningCount(), 0);
  EXPECT_FALSE(store_.load().value()->self_fence_reason.empty());

  clock_.set(6000);
  startAgent();
  EXPECT_EQ(agent_->leaseState(), LeaseState::kExpired);
  agent_->onAssignments(link_.set);  // a push: ignored while fenced
  runTo(7000);
  EXPECT_EQ(fake_.runningCount(), 0);
  link_.answer = Status::ok();
  runTo(9000);
  EXPECT_EQ(agent_->leaseState(), LeaseState::kValid);
  EXPECT_EQ(fake_.runningCount(), 2);
  EXPECT_TRUE(store_.load().value()->self_fence_reason.empty());
}

// Pins: the file store round-trips, writes atomically (no temp file left),
// and refuses a malformed or foreign file with a clear error.
TEST(AgentStateStoreTest, FileRoundTripAndBadInput) {
  const fs::path dir = fs::temp_directory_path() / ("tw-agent-state-" + std::to_string(getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  FileAgentStateStore store(dir.string());
  auto none = store.load();
  ASSERT_TRUE(none.isOk());
  EXPECT_FALSE(none->has_value());

  PersistedAgentState s;
  s.boot_id = "b";
  s.lease_until_ms = 1234;
  s.has_peers = true;
  s.peers = {{"h2", "10.0.0.2:7000"}};
  s.peer_timeout_ms = 1500;
  s.assignments_version = 7;
  s.controller_id = "c";
  s.vms = {"web-1"};
  s.self_fence_reason = "isolated";
  ASSERT_TRUE(store.save(s).isOk());
  EXPECT_FALSE(fs::exists(store.path() + ".tmp"));
  auto back = store.load();
  ASSERT_TRUE(back.isOk());
  ASSERT_TRUE(back->has_value());
  EXPECT_EQ(**back, s);

  std::ofstream(store.path()) << "{\"format\": 9}";
  auto foreign = store.load();
  ASSERT_FALSE(foreign.isOk());
  EXPECT_NE(foreign.status().toString().find("format"), std::string::npos);
  std::ofstream(store.path()) << "{\"format\": 1, \"boot_id\": 3}";
  EXPECT_EQ(store.load().status().code(), Code::kInvalidArgument);
  std::ofstream(store.path()) << "not json";
  EXPECT_EQ(store.load().status().code(), Code::kInvalidArgument);
  fs::remove_all(dir);
}

// Pins: --watchdog is a device, lab:PATH or none; anything else, or a
// timeout <= 0 with a watchdog, is refused with the reason.
TEST(HostWatchdogTest, SpecsAreCheckedWhole) {
  auto none = makeHostWatchdog("none", 5000);
  ASSERT_TRUE(none.isOk());
  EXPECT_EQ((*none)->timeoutMs(), 0);
  auto dev = makeHostWatchdog("/dev/watchdog", 5000);
  ASSERT_TRUE(dev.isOk());
  EXPECT_EQ((*dev)->timeoutMs(), 5000);
  EXPECT_EQ(makeHostWatchdog("softdog", 5000).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(makeHostWatchdog("lab:", 5000).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(makeHostWatchdog("lab:/tmp/x", 0).status().code(), Code::kInvalidArgument);
  auto missing = DeviceWatchdog("/dev/tw-no-such-watchdog", 5000).open();
  EXPECT_EQ(missing.code(), Code::kUnavailable);
  EXPECT_NE(missing.toString().find("softdog"), std::string::npos);
}

// Pins: the lab watchdog's file: "armed W" on open, touched by pets,
// "disarmed" after a clean close, left armed by a close that does not disarm.
TEST(HostWatchdogTest, LabWatchdogFile) {
  const fs::path path = fs::temp_directory_path() / ("tw-lab-wd-" + std::to_string(getpid()));
  auto read = [&] {
    std::ifstream f(path);
    std::string line;
    std::getline(f, line);
    return line;
  };
  LabWatchdog wd(path.string(), 3000);
  ASSERT_TRUE(wd.open().isOk());
  EXPECT_EQ(read(), "armed 3000");
  struct timespec old_times[2] = {{1, 0}, {1, 0}};
  ASSERT_EQ(::utimensat(AT_FDCWD, path.c_str(), old_times, 0), 0);
  ASSERT_TRUE(wd.pet().isOk());
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_GT(st.st_mtim.tv_sec, 1);
  wd.close(/*disarm=*/false);
  EXPECT_EQ(read(), "armed 3000");
  wd.close(/*disarm=*/true);
  EXPECT_EQ(read(), "disarmed");
  fs::remove(path);
}

}  // namespace
}  // namespace tw
