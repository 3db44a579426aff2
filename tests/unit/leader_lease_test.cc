// LeaderLease on FakeEtcd and a ManualClock: who leads, and above all when a
// leader stops — on its own deadline, before etcd could let another in.
#include "controller/leader_lease.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "tw/fake_etcd.h"
#include "tw/store_etcd.h"

namespace tw {
namespace {

// A FakeEtcdClient whose keepalive answer takes `delay_ms` on the manual
// clock (a slow network or a busy etcd): sent at t, answered at t + delay.
class SlowKeepAliveClient final : public EtcdClient {
 public:
  SlowKeepAliveClient(FakeEtcd& etcd, ManualClock& clock) : inner_(etcd), clock_(clock) {}
  Millis delay_ms = 0;
  void setCutOff(bool cut) { inner_.setCutOff(cut); }

  Result<EtcdRangeResult> range(const std::string& k, const std::string& e, int64_t l, bool c) override {
    ++ranges;
    return inner_.range(k, e, l, c);
  }
  Result<int64_t> put(const std::string& k, const std::string& v, int64_t l) override { return inner_.put(k, v, l); }
  Result<int64_t> deleteRange(const std::string& k, const std::string& e) override { return inner_.deleteRange(k, e); }
  Result<EtcdTxnResult> txn(const std::vector<EtcdCompare>& c, const std::vector<EtcdOp>& s,
                            const std::vector<EtcdOp>& f) override {
    return inner_.txn(c, s, f);
  }
  Result<EtcdLease> leaseGrant(int64_t ttl) override {
    ++grants;
    return inner_.leaseGrant(ttl);
  }
  int grants = 0;
  int ranges = 0;
  Result<int64_t> leaseKeepAlive(int64_t id) override {
    clock_.advance(delay_ms / 2);  // the request travels...
    Result<int64_t> r = inner_.leaseKeepAlive(id);
    clock_.advance(delay_ms - delay_ms / 2);  // ...and the answer
    return r;
  }
  Status leaseRevoke(int64_t id) override { return inner_.leaseRevoke(id); }

 private:
  FakeEtcdClient inner_;
  ManualClock& clock_;
};

class LeaderLeaseTest : public ::testing::Test {
 protected:
  LeaderLeaseOptions options(const std::string& who) {
    LeaderLeaseOptions o;
    o.key = etcdLeaderKey("/tierwarden/test");
    o.identity = who;
    o.ttl_ms = 3000;
    o.margin_ms = 500;
    o.renew_every_ms = 1000;
    return o;
  }
  // Steps both replicas' runOnce() every 100 ms of manual time up to `until`.
  void runUntil(Millis until, std::initializer_list<LeaderLease*> leases) {
    while (clock_.nowMs() < until) {
      for (LeaderLease* l : leases) l->runOnce();
      clock_.advance(100);
    }
  }

  ManualClock clock_{1'000'000};
  FakeEtcd etcd_{clock_};
  SlowKeepAliveClient client_a_{etcd_, clock_};
  SlowKeepAliveClient client_b_{etcd_, clock_};
  LeaderLease a_{client_a_, clock_, options("a")};
  LeaderLease b_{client_b_, clock_, options("b")};
};

// Pins: the first replica to campaign leads (term = the key's create
// revision); the other follows and knows who leads; renewals keep the term.
TEST_F(LeaderLeaseTest, FirstCampaignLeadsOtherFollows) {
  EXPECT_FALSE(a_.isLeader());
  EXPECT_EQ(a_.guard().status().code(), Code::kFailedPrecondition);
  a_.runOnce();
  b_.runOnce();
  EXPECT_TRUE(a_.isLeader());
  EXPECT_FALSE(b_.isLeader());
  EXPECT_GT(a_.term(), 0);
  EXPECT_EQ(b_.leaderIdentity(), "a");
  auto guard = a_.guard();
  ASSERT_TRUE(guard.isOk());
  EXPECT_EQ(guard->create_revision, a_.term());
  const int64_t term = a_.term();
  runUntil(clock_.nowMs() + 20'000, {&a_, &b_});
  EXPECT_TRUE(a_.isLeader());
  EXPECT_FALSE(b_.isLeader());
  EXPECT_EQ(a_.term(), term);
  EXPECT_EQ(a_.losses(), 0);
}

// Pins: while a leader holds the key, a follower only reads it, once per
// campaign_every_ms (250): it grants no lease, and knows who leads.
TEST_F(LeaderLeaseTest, FollowerOnlyLooksWhileTheKeyIsHeld) {
  a_.runOnce();
  ASSERT_TRUE(a_.isLeader());
  const Millis end = clock_.nowMs() + 10'000;
  while (clock_.nowMs() < end) {
    a_.runOnce();
    b_.runOnce();
    clock_.advance(50);
  }
  EXPECT_TRUE(a_.isLeader());
  EXPECT_EQ(client_b_.grants, 0);
  EXPECT_EQ(client_b_.ranges, 40);  // 10 s / 250 ms looks, one range each
  EXPECT_EQ(b_.leaderIdentity(), "a");
  EXPECT_FALSE(b_.isLeader());
}

// Pins: a leader cut off from etcd stops leading at its own deadline
// (last keepalive SENT + TTL - margin), on its own clock, without any answer
// from etcd — strictly before etcd expires its lease and the other replica
// can win. No instant has two leaders.
TEST_F(LeaderLeaseTest, CutOffLeaderStopsBeforeTheTtl) {
  a_.runOnce();
  ASSERT_TRUE(a_.isLeader());
  runUntil(clock_.nowMs() + 2500, {&a_, &b_});  // a few renewals
  const Millis last_sent = clock_.nowMs() - 500;  // renewals at +1000, +2000
  EXPECT_EQ(a_.deadline(), last_sent + 3000 - 500);
  client_a_.setCutOff(true);

  Millis a_stopped = 0;
  Millis b_started = 0;
  while (clock_.nowMs() < last_sent + 10'000) {
    a_.runOnce();
    b_.runOnce();
    if (a_stopped == 0 && !a_.isLeader()) a_stopped = clock_.nowMs();
    if (b_started == 0 && b_.isLeader()) b_started = clock_.nowMs();
    EXPECT_FALSE(a_.isLeader() && b_.isLeader()) << "two leaders at " << clock_.nowMs();
    clock_.advance(10);
  }
  EXPECT_EQ(a_stopped, last_sent + 3000 - 500);  // exactly at its deadline
  ASSERT_GT(b_started, 0);
  EXPECT_GE(b_started, last_sent + 3000);  // not before etcd's TTL ran out
  EXPECT_LE(b_started, last_sent + 3000 + 250 + 10);  // within one look at the key (+ a step)
  EXPECT_LT(a_stopped, b_started);
  EXPECT_GT(b_.term(), a_.term());
  EXPECT_EQ(a_.guard().status().code(), Code::kFailedPrecondition);
  EXPECT_NE(a_.guard().status().message().find("term " + std::to_string(a_.term())), std::string::npos)
      << a_.guard().status().message();
}

// Pins: isLeader() turns false at the deadline even when runOnce() is not
// called (the lease thread is stuck): the check is on the clock, not on the
// renewing thread.
TEST_F(LeaderLeaseTest, DeadlineHoldsWithoutRunOnce) {
  a_.runOnce();
  ASSERT_TRUE(a_.isLeader());
  const Millis deadline = a_.deadline();
  clock_.set(deadline - 1);
  EXPECT_TRUE(a_.isLeader());
  EXPECT_TRUE(a_.guard().isOk());
  clock_.set(deadline);
  EXPECT_FALSE(a_.isLeader());
  EXPECT_FALSE(a_.guard().isOk());
}

// Pins: the deadline counts from when the keepalive was sent, not from when
// its answer came: a slow answer shortens the time left, never lengthens it.
TEST_F(LeaderLeaseTest, DeadlineCountsFromSendTime) {
  a_.runOnce();
  ASSERT_TRUE(a_.isLeader());
  client_a_.delay_ms = 800;
  clock_.advance(1000);
  const Millis sent = clock_.nowMs();
  a_.runOnce();
  EXPECT_EQ(clock_.nowMs(), sent + 800);
  EXPECT_EQ(a_.deadline(), sent + 3000 - 500);
}

// Pins: a keepalive answered only after the deadline ends the term for good
// (no resuming a term after acting stopped); the replica campaigns again
// and wins a new, higher term.
TEST_F(LeaderLeaseTest, LateRenewalEndsTheTerm) {
  a_.runOnce();
  const int64_t first = a_.term();
  client_a_.delay_ms = 2600;  // sent at +1000, answered at +3600 > deadline +2500
  clock_.advance(1000);
  a_.runOnce();
  EXPECT_FALSE(a_.isLeader());
  EXPECT_EQ(a_.losses(), 1);
  client_a_.delay_ms = 0;
  runUntil(clock_.nowMs() + 5000, {&a_});
  EXPECT_TRUE(a_.isLeader());
  EXPECT_GT(a_.term(), first);
}

// Pins: when the leader key is deleted (or taken) behind the leader's back,
// the next renewal ends its term; resign() lets the other replica in at
// once.
TEST_F(LeaderLeaseTest, KeyGoneEndsTermAndResignHandsOver) {
  a_.runOnce();
  ASSERT_TRUE(a_.isLeader());
  FakeEtcdClient admin(etcd_);
  ASSERT_TRUE(admin.deleteRange(etcdLeaderKey("/tierwarden/test"), "").isOk());
  clock_.advance(1000);
  a_.runOnce();
  EXPECT_FALSE(a_.isLeader());
  EXPECT_EQ(a_.losses(), 1);
  b_.runOnce();
  ASSERT_TRUE(b_.isLeader());
  b_.resign();
  EXPECT_FALSE(b_.isLeader());
  clock_.advance(1000);
  a_.runOnce();
  EXPECT_TRUE(a_.isLeader());
}

// Pins: a replica whose write etcd refused for an older term (the store's
// on_deposed) stops leading at once, before its own deadline: isLeader()
// false, the loss counted (the lease runner ends the process), guard()
// fails, so no later write is sent; a second depose changes nothing.
TEST_F(LeaderLeaseTest, DeposeEndsTheTermAtOnce) {
  a_.runOnce();
  ASSERT_TRUE(a_.isLeader());
  const int64_t term = a_.term();
  ASSERT_LT(clock_.nowMs(), a_.deadline());
  a_.depose("the leader key belongs to term 99");
  EXPECT_FALSE(a_.isLeader());
  EXPECT_EQ(a_.losses(), 1);
  EXPECT_EQ(a_.term(), term);
  Result<EtcdWriteGuard> g = a_.guard();
  EXPECT_EQ(g.status().code(), Code::kFailedPrecondition);
  a_.depose("again");
  EXPECT_EQ(a_.losses(), 1);
  b_.depose("never led");
  EXPECT_EQ(b_.losses(), 0);
}

// Pins: EtcdStore guarded by a lease writes while it leads and, once the
// deadline passed, refuses without sending anything to etcd.
TEST_F(LeaderLeaseTest, StoreWritesOnlyWhileLeading) {
  a_.runOnce();
  EtcdStoreOptions options;
  options.prefix = "/tierwarden/test";
  options.guard = [this] { return a_.guard(); };
  auto store = openEtcdStore(std::make_unique<FakeEtcdClient>(etcd_), options);
  ASSERT_TRUE(store.isOk()) << store.status().toString();
  VmRecord vm;
  vm.name = "web-1";
  EXPECT_TRUE((*store)->putVm(vm).isOk());
  clock_.set(a_.deadline());
  const int64_t requests = etcd_.requests();
  Status s = (*store)->putVm(vm);
  EXPECT_EQ(s.code(), Code::kFailedPrecondition);
  EXPECT_NE(s.message().find("not the leader"), std::string::npos) << s.message();
  EXPECT_EQ(etcd_.requests(), requests);
}

}  // namespace
}  // namespace tw
