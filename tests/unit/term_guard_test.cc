// A deposed leader's step ends at the refused write (controller/term_guard.h,
// agent/term_watch.h, docs/ha.md): a controller on an EtcdStore over FakeEtcd,
// with its LeaderLease, on a manual clock. Once etcd refuses one of its writes
// for an older term, nothing the rest of the step decided leaves the process
// (no set published, no heartbeat answered, no fence run); a write that fails
// for another reason silences that one step and deposes nothing. And the
// agent's side: a set of an older term is refused.
#include <gtest/gtest.h>

#include <map>
#include <set>
#include <string>
#include <vector>

#include "agent/term_watch.h"
#include "controller/controller.h"
#include "controller/leader_lease.h"
#include "controller/term_guard.h"
#include "controller_fixture.h"
#include "tw/fake_etcd.h"
#include "tw/store_etcd.h"

namespace tw {
namespace {

const char* kPrefix = "/tierwarden/test";

// Records every fence the controller starts.
class RecordingHosts final : public HostConnector {
 public:
  void setHosts(const std::vector<HostSpec>&) override {}
  bool libvirtAlive(const std::string& host) override { return alive.count(host) > 0; }
  void fenceByLibvirt(const std::string& host) override { calls.push_back("libvirt " + host); }
  void fenceByAgent(const std::string& host, const std::string& agent, const std::vector<std::string>&,
                    Millis) override {
    calls.push_back("agent " + host + " " + agent);
  }
  std::vector<FenceResult> takeResults() override { return {}; }
  std::set<std::string> alive;
  std::vector<std::string> calls;
};

const char* kPolicy = R"(
cluster:
  n_plus_one: warn
hosts:
  - { name: h1, uri: "qemu+tcp://h1/system" }
  - { name: h2, uri: "qemu+tcp://h2/system" }
  - { name: h3, uri: "qemu+tcp://h3/system", role: spare }
tiers:
  - name: web
    image: tiny-web
    replicas: 2
    memory: 256MiB
)";

class TermGuardTest : public ::testing::Test {
 protected:
  void SetUp() override {
    LeaderLeaseOptions lo;
    lo.key = etcdLeaderKey(kPrefix);
    lo.identity = "c1";
    lo.ttl_ms = 3000;
    lo.margin_ms = 1000;
    lease_ = std::make_unique<LeaderLease>(lease_client_, clock_, lo);
    (void)lease_->runOnce();
    ASSERT_TRUE(lease_->isLeader());
    auto client = std::make_unique<FakeEtcdClient>(etcd_);
    store_client_ = client.get();
    EtcdStoreOptions so;
    so.prefix = kPrefix;
    so.guard = [this] { return lease_->guard(); };
    so.on_deposed = [this](const std::string& why) { lease_->depose(why); };
    auto store = openEtcdStore(std::move(client), std::move(so));
    ASSERT_TRUE(store.isOk()) << store.status().toString();
    store_ = std::move(store).value();
    controller_ = std::make_unique<Controller>(*store_, clock_, &hosts_);
    const int64_t term = lease_->term();
    controller_->actForTerm(term, [this, term] { return lease_->isLeader() && lease_->term() == term; });
    controller_->setAssignmentListener(
        [this](const std::string& host, int64_t version) { published_.push_back({host, version}); });
    ASSERT_TRUE(controller_->recover().isOk());
    ASSERT_TRUE(controller_->applyPolicy({{"p.yaml", kPolicy}}, false).isOk());
    for (const char* h : {"h1", "h2", "h3"}) {
      up_.insert(h);
      hosts_.alive.insert(h);
    }
    for (int i = 0; i < 5; ++i) tick();
    for (const auto& v : controller_->vms()) ASSERT_EQ(v.state, VmState::kRunning) << v.name;
  }

  // Renews the lease as its thread would (every 100 ms here), heartbeats
  // every host in up_ and runs one controller pass.
  void tick() {
    clock_.advance(100);
    if (!overstay_) (void)lease_->runOnce();
    for (const auto& h : up_) (void)beat(h);
    controller_->runOnce();
  }

  Result<AssignmentSet> beat(const std::string& host, const std::string& agent_id = "") {
    Heartbeat hb = testing_controller::runningHeartbeat(*controller_, host);
    if (!agent_id.empty()) hb.agent_id = agent_id;
    for (const char* other : {"h1", "h2", "h3"})
      if (!up_.count(other)) hb.peers_unreachable[other] = 60000;
    const AssignmentSet set = controller_->assignmentsFor(host);
    hb.assignments_version = set.version;
    hb.assignments_controller = set.controller_id;
    return controller_->handleHeartbeat(hb);
  }

  // Another replica wins a new term while this one still believes it leads
  // (its lease thread is stopped: the overstay of docs/ha.md).
  void newTermElsewhere() {
    overstay_ = true;
    const std::string key = etcdLeaderKey(kPrefix);
    ASSERT_TRUE(other_client_.deleteRange(key, "").isOk());
    ASSERT_TRUE(other_client_.put(key, "c2").isOk());
    ASSERT_TRUE(lease_->isLeader());  // it has not noticed
  }

  ManualClock clock_{1000000};
  FakeEtcd etcd_{clock_};
  FakeEtcdClient lease_client_{etcd_};
  FakeEtcdClient other_client_{etcd_};
  FakeEtcdClient* store_client_ = nullptr;
  std::unique_ptr<LeaderLease> lease_;
  std::unique_ptr<Store> store_;
  RecordingHosts hosts_;
  std::unique_ptr<Controller> controller_;
  std::vector<std::pair<std::string, int64_t>> published_;
  std::set<std::string> up_;
  bool overstay_ = false;
};

// Pins: sets carry the leader's term (0 would be SQLite's single controller).
TEST_F(TermGuardTest, SetsCarryTheTerm) {
  EXPECT_GT(lease_->term(), 0);
  EXPECT_EQ(controller_->assignmentsFor("h1").term, lease_->term());
  EXPECT_EQ(controller_->termGuard().term(), lease_->term());
}

// Pins: a heartbeat whose write etcd refuses for an older term gets no
// answer (no lease renewal, no set), and the term is over at once.
TEST_F(TermGuardTest, RefusedHeartbeatWriteIsNotAnswered) {
  newTermElsewhere();
  // A new agent process: the controller writes an event (refused by etcd).
  Result<AssignmentSet> answer = beat("h1", "agent-h1-restarted");
  ASSERT_FALSE(answer.isOk());
  EXPECT_EQ(answer.status().code(), Code::kUnavailable);
  EXPECT_NE(answer.status().message().find("is over"), std::string::npos) << answer.status().toString();
  EXPECT_FALSE(lease_->isLeader());
  EXPECT_TRUE(controller_->termGuard().deposed());
  // Nor any later heartbeat, even one that writes nothing.
  EXPECT_FALSE(beat("h2").isOk());
}

// Pins: a host that dies while the term is being lost: the tick declares it
// dead (the write is refused), and the rest of that tick neither runs the
// libvirt fence nor publishes the sets it computed; later ticks send nothing.
TEST_F(TermGuardTest, RefusedTickWriteSendsNoFenceAndNoSet) {
  up_.erase("h1");
  // h1 goes silent; its libvirt answers (a libvirt fence will be chosen).
  for (int i = 0; i < 8; ++i) tick();
  ASSERT_NE(controller_->host("h1")->state, HostState::kOffline);
  newTermElsewhere();
  published_.clear();
  hosts_.calls.clear();
  hosts_.alive.erase("h1");
  for (int i = 0; i < 100; ++i) tick();  // past dead_after and the lease
  EXPECT_FALSE(lease_->isLeader());
  EXPECT_TRUE(hosts_.calls.empty()) << hosts_.calls.front();
  EXPECT_TRUE(published_.empty()) << published_.front().first;
  EXPECT_GE(controller_->termGuard().withheldSteps(), 1);
}

// The same host failure without a new term: the fence runs (the test above
// fails for the guard, not for a host that never dies).
TEST_F(TermGuardTest, WithoutANewTermTheFenceRuns) {
  up_.erase("h1");
  for (int i = 0; i < 8; ++i) tick();
  hosts_.alive.erase("h1");
  hosts_.calls.clear();
  for (int i = 0; i < 100 && hosts_.calls.empty() && controller_->host("h1")->state != HostState::kFenced; ++i) {
    tick();
  }
  EXPECT_EQ(controller_->host("h1")->state == HostState::kFenced || !hosts_.calls.empty(), true);
  EXPECT_EQ(controller_->termGuard().withheldSteps(), 0);
}

// Pins: a write that fails for another reason (etcd out of reach for the
// store's connection, the lease's still renewing) deposes nothing: that
// step's heartbeat answer is withheld, the leader still leads, and once the
// store answers again the next step answers and publishes as before.
TEST_F(TermGuardTest, TransientStoreErrorSilencesOneStepOnly) {
  store_client_->setCutOff(true);
  Result<AssignmentSet> answer = beat("h1", "agent-h1-restarted");  // writes: fails
  ASSERT_FALSE(answer.isOk());
  EXPECT_NE(answer.status().message().find("store write of this step failed"), std::string::npos)
      << answer.status().toString();
  EXPECT_TRUE(lease_->isLeader());
  EXPECT_FALSE(controller_->termGuard().deposed());
  // A heartbeat that writes nothing is answered even now.
  EXPECT_TRUE(beat("h2").isOk());
  store_client_->setCutOff(false);
  tick();
  EXPECT_TRUE(lease_->isLeader());
  EXPECT_TRUE(beat("h1", "agent-h1-restarted-again").isOk());
}

// Pins (issue 14): a whole-record write that failed for a transient reason
// is written again by the next step; until it is, no step acts (not even a
// heartbeat that writes nothing: its answer would hand out memory that is
// ahead of the store).
TEST_F(TermGuardTest, FailedWriteIsWrittenAgainBeforeAnyStepActs) {
  EtcdStoreOptions ro;
  ro.prefix = kPrefix;
  auto reader = openEtcdStore(std::make_unique<FakeEtcdClient>(etcd_), ro);
  ASSERT_TRUE(reader.isOk()) << reader.status().toString();
  auto stored = [&](const std::string& host) {
    auto hosts = (*reader)->hosts();
    for (const HostRecord& h : *hosts)
      if (h.name == host) return h.state;
    return HostState::kUnknown;
  };
  up_.erase("h1");  // silent; it turns suspect after a while
  store_client_->setCutOff(true);
  for (int i = 0; i < 100 && controller_->host("h1")->state != HostState::kSuspect; ++i) tick();
  ASSERT_EQ(controller_->host("h1")->state, HostState::kSuspect);
  EXPECT_EQ(stored("h1"), HostState::kOnline);  // the write failed
  store_client_->setCutOff(false);
  // The store answers again, but the write is pending: the rewrite comes
  // first (the last one failed less than 250 ms ago: not yet).
  EXPECT_GE(controller_->pendingWrites().size(), 1u);
  clock_.advance(GuardedStore::kRewriteEveryMs);
  Result<AssignmentSet> answer = beat("h2");
  ASSERT_TRUE(answer.isOk()) << answer.status().toString();
  EXPECT_EQ(stored("h1"), HostState::kSuspect);
  EXPECT_TRUE(controller_->pendingWrites().empty());
  EXPECT_TRUE(lease_->isLeader());
}

// Pins: while the store stays out of reach, a pending write is tried again
// at most every kRewriteEveryMs; the steps in between act on nothing, and
// say why.
TEST_F(TermGuardTest, PendingWritesKeepStepsSilentAndArePaced) {
  up_.erase("h1");
  store_client_->setCutOff(true);
  for (int i = 0; i < 100 && controller_->host("h1")->state != HostState::kSuspect; ++i) tick();
  ASSERT_EQ(controller_->host("h1")->state, HostState::kSuspect);
  clock_.advance(GuardedStore::kRewriteEveryMs);
  Result<AssignmentSet> tried = beat("h2");  // tries, fails
  ASSERT_FALSE(tried.isOk());
  EXPECT_NE(tried.status().message().find("writing again"), std::string::npos) << tried.status().toString();
  clock_.advance(GuardedStore::kRewriteEveryMs - 1);
  Result<AssignmentSet> paced = beat("h2");  // too soon: not tried
  ASSERT_FALSE(paced.isOk());
  EXPECT_NE(paced.status().message().find("not in the store yet"), std::string::npos) << paced.status().toString();
  store_client_->setCutOff(false);
  Result<AssignmentSet> still = beat("h2");  // reachable, but too soon
  EXPECT_FALSE(still.isOk());
  clock_.advance(1);
  EXPECT_TRUE(beat("h2").isOk());
}

// Pins: the guard itself: a failed write silences its step only; sets
// withheld are handed back once; a term that is over stays over.
TEST(TermGuardUnitTest, StepsWithholdAndTermsEnd) {
  TermGuard g;
  EXPECT_TRUE(g.mayAct("x"));  // SQLite: always, term 0
  EXPECT_EQ(g.term(), 0);
  bool leads = true;
  g.setTerm(42, [&leads] { return leads; });
  g.beginStep();
  g.writeFailed(unavailable("etcd: no quorum"));
  EXPECT_FALSE(g.mayAct("sets"));
  EXPECT_NE(g.whyNot().find("no quorum"), std::string::npos);
  g.withhold("h1", 7);
  g.withhold("h1", 8);
  EXPECT_FALSE(g.deposed());
  g.beginStep();
  EXPECT_TRUE(g.mayAct("sets"));
  ASSERT_TRUE(g.hasWithheld());
  auto w = g.takeWithheld();
  EXPECT_EQ(w.size(), 1u);
  EXPECT_EQ(w["h1"], 8);
  EXPECT_FALSE(g.hasWithheld());
  leads = false;
  EXPECT_TRUE(g.deposed());
  g.beginStep();
  EXPECT_FALSE(g.mayAct("sets"));
  EXPECT_EQ(g.withheldSteps(), 2);
}

// ------------------------------------------------------------- the agent ---

// Pins: the agent accepts equal and newer terms, refuses an older one (saying
// so once per run of refusals), and says when the newer term is back.
TEST(TermWatchTest, RefusesOlderTermsAndSaysSoOnce) {
  TermWatch w;
  EXPECT_TRUE(w.check(7, 1000, 3000).accept);
  EXPECT_TRUE(w.check(7, 2000, 3000).accept);
  TermWatch::Verdict v = w.check(5, 2100, 3000);
  EXPECT_FALSE(v.accept);
  EXPECT_NE(v.say.find("refusing assignments of term 5"), std::string::npos) << v.say;
  v = w.check(5, 2200, 3000);
  EXPECT_FALSE(v.accept);
  EXPECT_TRUE(v.say.empty());  // said once
  v = w.check(9, 2300, 3000);
  EXPECT_TRUE(v.accept);
  EXPECT_NE(v.say.find("accepted again"), std::string::npos);
  EXPECT_EQ(w.highest(), 9);
  EXPECT_EQ(w.refused(), 2);
}

// Pins: not stuck on a dead term: when only older-term sets come for longer
// than the lease of the last accepted set (at least 5 s), the older term is
// taken as the newest (an etcd cluster rebuilt: its revisions start low).
TEST(TermWatchTest, GivesUpADeadTermAfterALease) {
  TermWatch w;
  EXPECT_TRUE(w.check(900, 0, 8000).accept);
  EXPECT_FALSE(w.check(3, 7000, 8000).accept);
  EXPECT_FALSE(w.check(3, 8000, 8000).accept);
  TermWatch::Verdict v = w.check(3, 8001, 8000);
  EXPECT_TRUE(v.accept);
  EXPECT_NE(v.say.find("accepting assignments of term 3, older than term 900"), std::string::npos) << v.say;
  EXPECT_EQ(w.highest(), 3);
  // A short lease still waits the floor of 5 s.
  TermWatch s;
  EXPECT_TRUE(s.check(10, 0, 1000).accept);
  EXPECT_FALSE(s.check(2, 4000, 1000).accept);
  EXPECT_TRUE(s.check(2, 5001, 1000).accept);
}

// Pins: a new agent process accepts whatever term comes first (nothing is
// persisted), SQLite's term 0 included.
TEST(TermWatchTest, FirstSetOfAProcessIsAccepted) {
  TermWatch w;
  EXPECT_EQ(w.highest(), -1);
  EXPECT_TRUE(w.check(0, 0, 3000).accept);
  EXPECT_TRUE(w.check(0, 100, 3000).accept);
}

}  // namespace
}  // namespace tw
