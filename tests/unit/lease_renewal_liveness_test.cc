// Lease renewal by any replica (docs/ha.md): a follower's heartbeat answer
// (controller/follower_heartbeats.h) and the leader's liveness with the
// renewal records and its fence intent (controller/leader_renewals.h,
// controller_renewals.cc). Hermetic: the leader's Controller on an EtcdStore
// over FakeEtcd, a manual clock, no threads; the follower is a
// FollowerHeartbeats on the same etcd.
#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "controller/controller.h"
#include "controller/follower_heartbeats.h"
#include "controller/leader_renewals.h"
#include "controller/lease_renewals.h"
#include "controller_fixture.h"
#include "tw/fake_etcd.h"
#include "tw/store_etcd.h"

namespace tw {
namespace {

constexpr const char* kPrefix = "/tierwarden/test";

const char* kPolicy = R"(
cluster:
  heartbeat_interval: 500ms
  dead_after: 1500ms
  lease: 2s
  fence_margin: 1s
hosts:
  - name: h1
  - name: h2
  - name: h3
tiers:
  - name: web
    image: tiny-web
    replicas: 3
    memory: 128MiB
)";

class LeaseRenewalLivenessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    FakeEtcdClient setup(etcd_);
    auto put = setup.put(etcdLeaderKey(kPrefix), "c1", 0);
    ASSERT_TRUE(put.isOk());
    auto leader = setup.range(etcdLeaderKey(kPrefix), "");
    ASSERT_TRUE(leader.isOk() && !leader->kvs.empty());
    guard_ = EtcdWriteGuard{etcdLeaderKey(kPrefix), leader->kvs[0].create_revision};
    EtcdStoreOptions options;
    options.prefix = kPrefix;
    options.guard = [this]() -> Result<EtcdWriteGuard> { return guard_; };
    auto store = openEtcdStore(std::make_unique<FakeEtcdClient>(etcd_), options);
    ASSERT_TRUE(store.isOk()) << store.status().toString();
    store_ = std::move(store).value();
    leader_records_ = std::make_unique<LeaseRenewals>(leader_client_, kPrefix);
    follower_records_ = std::make_unique<LeaseRenewals>(follower_client_, kPrefix);
    follower_ = std::make_unique<FollowerHeartbeats>(*follower_records_, *store_, clock_, "c2");
  }

  // The leader; `read_every_ms`: how often it reads the records while a host is silent.
  void startLeader(bool with_renewals, Millis read_every_ms = 250) {
    controller_ = std::make_unique<Controller>(*store_, clock_);
    if (with_renewals) {
      renewals_ = std::make_unique<LeaderRenewals>(
          *leader_records_, [this]() -> Result<EtcdWriteGuard> { return guard_; }, read_every_ms);
      controller_->setLeaseRenewals(renewals_.get());
    }
    ASSERT_TRUE(controller_->recover().isOk());
    auto applied = controller_->applyPolicy({PolicyFile{"p.yaml", kPolicy}}, false);
    ASSERT_TRUE(applied.isOk()) << applied.status().toString();
  }

  Heartbeat heartbeatOf(const std::string& host, const std::vector<std::string>& unreachable = {}) {
    Heartbeat hb = testing_controller::runningHeartbeat(*controller_, host);
    for (const auto& u : unreachable) hb.peers_unreachable[u] = 60000;
    return hb;
  }

  void beat(const std::string& host, const std::vector<std::string>& unreachable = {}) {
    auto r = controller_->handleHeartbeat(heartbeatOf(host, unreachable));
    ASSERT_TRUE(r.isOk()) << r.status().toString();
  }

  // `ms` of the cluster in 100 ms ticks: h2 and h3 heartbeat the leader every
  // 500 ms and report h1 unreachable once `h1_silent`; h1 heartbeats the
  // leader unless silent, and `h1_via_follower` renews through c2 then.
  void run(Millis ms, bool h1_silent, bool h1_via_follower) {
    for (Millis t = 0; t < ms; t += 100) {
      clock_.advance(100);
      if (clock_.nowMs() % 500 == 0) {
        const std::vector<std::string> down = h1_silent ? std::vector<std::string>{"h1"} : std::vector<std::string>{};
        beat("h2", down);
        beat("h3", down);
        if (!h1_silent) beat("h1");
        if (h1_silent && h1_via_follower) {
          auto set = follower_->handle(heartbeatOf("h1"));
          ASSERT_TRUE(set.isOk()) << set.status().toString();
          EXPECT_EQ(set->renewed_by, "c2");
        }
      }
      controller_->runOnce();
    }
  }

  bool eventSaid(const std::string& text) {
    auto events = store_->eventsSince(0, 100000);
    if (!events.isOk()) return false;
    for (const auto& e : *events) {
      if (e.message.find(text) != std::string::npos) return true;
    }
    return false;
  }

  ManualClock clock_{1000};
  FakeEtcd etcd_{clock_};
  FakeEtcdClient leader_client_{etcd_};
  FakeEtcdClient follower_client_{etcd_};
  EtcdWriteGuard guard_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<LeaseRenewals> leader_records_;
  std::unique_ptr<LeaseRenewals> follower_records_;
  std::unique_ptr<FollowerHeartbeats> follower_;
  std::unique_ptr<LeaderRenewals> renewals_;
  std::unique_ptr<Controller> controller_;
};

// The follower answers with the set the leader published for the host (read
// from etcd), marked renewed_by, and records the renewal.
TEST_F(LeaseRenewalLivenessTest, FollowerAnswersWithTheLeadersPublishedSet) {
  startLeader(true);
  run(2000, false, false);
  const AssignmentSet leaders = controller_->assignmentsFor("h1");
  ASSERT_FALSE(leaders.assignments.empty());
  auto set = follower_->handle(heartbeatOf("h1"));
  ASSERT_TRUE(set.isOk()) << set.status().toString();
  EXPECT_EQ(set->host, "h1");
  EXPECT_EQ(set->version, leaders.version);
  EXPECT_EQ(set->controller_id, leaders.controller_id);
  ASSERT_EQ(set->assignments.size(), leaders.assignments.size());
  EXPECT_EQ(set->assignments[0].vm, leaders.assignments[0].vm);
  EXPECT_EQ(set->assignments[0].epoch, leaders.assignments[0].epoch);
  EXPECT_EQ(set->lease_ms, 2000);
  EXPECT_TRUE(set->peers_omitted);
  EXPECT_EQ(set->renewed_by, "c2");
  auto records = leader_records_->read();
  ASSERT_TRUE(records.isOk());
  ASSERT_EQ(records->count("h1"), 1u);
  EXPECT_EQ((*records)["h1"].by, "c2");
  EXPECT_EQ(follower_->renewed(), 1);
}

// Nothing published for the host (no leader ever did): unavailable, and no
// renewal is recorded (an empty set would tell the agent to drop its VMs).
TEST_F(LeaseRenewalLivenessTest, NothingPublishedIsUnavailableAndRecordsNothing) {
  Heartbeat hb;
  hb.host = "h1";
  hb.agent_id = "a";
  auto set = follower_->handle(hb);
  ASSERT_FALSE(set.isOk());
  EXPECT_EQ(set.status().code(), Code::kUnavailable);
  auto records = leader_records_->read();
  ASSERT_TRUE(records.isOk());
  EXPECT_TRUE(records->empty());
}

// A host whose heartbeats reach only a follower stays online on the leader:
// never suspect, never fenced. Without the renewals the same silence fences it.
TEST_F(LeaseRenewalLivenessTest, RenewalThroughFollowerKeepsTheHostAlive) {
  startLeader(true);
  run(2000, false, false);
  run(15000, true, true);
  EXPECT_EQ(controller_->host("h1")->state, HostState::kOnline);
  EXPECT_FALSE(eventSaid("'h1' online -> suspect"));
  EXPECT_FALSE(eventSaid("fenced by lease"));
}

TEST_F(LeaseRenewalLivenessTest, WithoutRenewalsTheSameSilenceFences) {
  startLeader(false);
  run(2000, false, false);
  run(15000, true, false);
  EXPECT_EQ(controller_->host("h1")->state, HostState::kFenced);
}

// The race, renewal first: a renewal the leader has not read comes in just
// before its lease fence. The fence intent's compare fails, the leader
// re-reads, the host is alive again; nothing is fenced.
TEST_F(LeaseRenewalLivenessTest, RenewalBeforeTheIntentWinsTheRace) {
  startLeader(true, /*read_every_ms=*/3600000);  // after its first read it reads only when forced
  run(2000, false, false);
  // h1 goes silent; the leader reads the records once, declares h1 dead and
  // waits for its lease.
  for (int i = 0; i < 200 && controller_->host("h1")->state != HostState::kOffline; ++i) run(100, true, false);
  ASSERT_EQ(controller_->host("h1")->state, HostState::kOffline);
  const int64_t reads = renewals_->reads();
  ASSERT_GE(reads, 2);  // the baseline and one poll: no more until forced
  ASSERT_TRUE(follower_->handle(heartbeatOf("h1")).isOk());  // unread by the leader
  // Until the lease fence comes due (lease 2 s + margin 1 s): its intent fails.
  for (int i = 0; i < 40 && !eventSaid("lease renewed through"); ++i) run(100, true, false);
  EXPECT_TRUE(eventSaid("lease renewed through controller replica 'c2'"));
  EXPECT_FALSE(eventSaid("fenced by lease"));
  EXPECT_EQ(renewals_->reads(), reads + 1);  // the forced re-read after the failed intent
  EXPECT_EQ(controller_->host("h1")->state, HostState::kOnline);
  auto intent = leader_records_->intentExists("h1");
  ASSERT_TRUE(intent.isOk());
  EXPECT_FALSE(*intent);
}

// The race, intent first: once the leader's intent committed (and it
// fenced), a follower refuses to renew: the agent is not told "renewed",
// nothing is written. A heartbeat that reaches the leader clears the intent.
TEST_F(LeaseRenewalLivenessTest, IntentBeforeTheRenewalRefusesIt) {
  startLeader(true);
  run(2000, false, false);
  run(15000, true, false);
  ASSERT_EQ(controller_->host("h1")->state, HostState::kFenced);
  auto intent = leader_records_->intentExists("h1");
  ASSERT_TRUE(intent.isOk());
  ASSERT_TRUE(*intent);
  auto before = leader_records_->read();
  ASSERT_TRUE(before.isOk());
  auto set = follower_->handle(heartbeatOf("h1"));
  ASSERT_FALSE(set.isOk());
  EXPECT_EQ(set.status().code(), Code::kFailedPrecondition);
  EXPECT_EQ(follower_->refused(), 1);
  auto after = leader_records_->read();
  ASSERT_TRUE(after.isOk());
  EXPECT_EQ(after->size(), before->size());
  beat("h1");  // its agent reaches the leader again
  intent = leader_records_->intentExists("h1");
  ASSERT_TRUE(intent.isOk());
  EXPECT_FALSE(*intent);
  EXPECT_TRUE(follower_->handle(heartbeatOf("h1")).isOk());
}

// The leader reads the records only while some host is silent: a cluster
// whose heartbeats all reach it costs no etcd read for renewals.
TEST_F(LeaseRenewalLivenessTest, NoReadsWhileEveryHostHeartbeats) {
  startLeader(true);
  const int64_t at_start = renewals_->reads();  // the baseline of recover()
  run(5000, false, false);
  EXPECT_EQ(renewals_->reads(), at_start);
}

}  // namespace
}  // namespace tw
