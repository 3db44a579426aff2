// LeaseRenewals (controller/lease_renewals.h): a follower's renewal and the
// leader's fence intent for one host exclude each other, whichever etcd
// orders first. A typed suite on the EtcdBackend concept of
// etcd_store_contract.h, instantiated on FakeEtcd (tests/unit/
// lease_renewals_test.cc) and on a real etcd (tests/integration/
// store_etcd_test.cc).
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "controller/lease_renewals.h"
#include "tw/etcd_client.h"
#include "tw/store_etcd.h"

namespace tw {
namespace renewals_contract {

template <typename Backend>
class LeaseRenewalsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!backend_.available()) GTEST_SKIP() << "etcd not available";
    prefix_ = backend_.freshPrefix();
    client_ = backend_.client();
    renewals_ = std::make_unique<LeaseRenewals>(*client_, prefix_);
  }

  // Makes `identity` lead (the leader key on a fresh lease); its guard.
  EtcdWriteGuard lead(const std::string& identity) {
    auto lease = client_->leaseGrant(30);
    EXPECT_TRUE(lease.isOk()) << lease.status().toString();
    const std::string key = etcdLeaderKey(prefix_);
    auto txn = client_->txn({EtcdCompare::createRevisionIs(key, 0)},
                            {EtcdOp::put(key, identity, lease.isOk() ? lease->id : 0)}, {});
    EXPECT_TRUE(txn.isOk() && txn->succeeded);
    return EtcdWriteGuard{key, txn.isOk() ? txn->revision : 0};
  }

  int64_t seen(const std::string& host) {
    auto all = renewals_->read();
    EXPECT_TRUE(all.isOk()) << all.status().toString();
    if (!all.isOk()) return -1;
    auto it = all->find(host);
    return it == all->end() ? 0 : it->second.mod_revision;
  }

  Backend backend_;
  std::string prefix_;
  std::unique_ptr<EtcdClient> client_;
  std::unique_ptr<LeaseRenewals> renewals_;
};

TYPED_TEST_SUITE_P(LeaseRenewalsTest);

// Pins: a follower's renewal is recorded (and read back with who took it);
// the leader's intent against the revision it read commits; after it no
// renewal is recorded (the agent is not told), and nothing is written; once
// the intent is cleared renewals are recorded again.
TYPED_TEST_P(LeaseRenewalsTest, IntentStopsRenewals) {
  EtcdWriteGuard guard = this->lead("c1");
  auto recorded = this->renewals_->record("h1", "h1-1", 1000, "c2");
  ASSERT_TRUE(recorded.isOk()) << recorded.status().toString();
  EXPECT_TRUE(*recorded);
  auto all = this->renewals_->read();
  ASSERT_TRUE(all.isOk());
  ASSERT_EQ(all->count("h1"), 1u);
  EXPECT_EQ(all->at("h1").agent_id, "h1-1");
  EXPECT_EQ(all->at("h1").t_ms, 1000);
  EXPECT_EQ(all->at("h1").by, "c2");

  auto intent = this->renewals_->intendFence(guard, "h1", this->seen("h1"), 5000);
  ASSERT_TRUE(intent.isOk()) << intent.status().toString();
  EXPECT_TRUE(*intent);
  EXPECT_TRUE(*this->renewals_->intentExists("h1"));
  const int64_t before = this->seen("h1");
  auto late = this->renewals_->record("h1", "h1-1", 5100, "c3");
  ASSERT_TRUE(late.isOk());
  EXPECT_FALSE(*late);
  EXPECT_EQ(this->seen("h1"), before);  // nothing written

  EXPECT_TRUE(this->renewals_->clearIntent(guard, "h1").isOk());
  EXPECT_FALSE(*this->renewals_->intentExists("h1"));
  auto again = this->renewals_->record("h1", "h1-1", 9000, "c2");
  ASSERT_TRUE(again.isOk());
  EXPECT_TRUE(*again);
}

// Pins: a renewal the leader has not read (it came in after the leader's
// last read) makes the intent fail whole: the host is alive; with the fresh
// revision it commits. A host never renewed through a follower (no record)
// takes an intent against revision 0, but not once a record appeared.
TYPED_TEST_P(LeaseRenewalsTest, UnreadRenewalBlocksTheIntent) {
  EtcdWriteGuard guard = this->lead("c1");
  ASSERT_TRUE(*this->renewals_->record("h1", "h1-1", 1000, "c2"));
  const int64_t read_at = this->seen("h1");
  ASSERT_TRUE(*this->renewals_->record("h1", "h1-1", 2000, "c3"));  // after the leader's read
  auto stale = this->renewals_->intendFence(guard, "h1", read_at, 3000);
  ASSERT_TRUE(stale.isOk()) << stale.status().toString();
  EXPECT_FALSE(*stale);
  EXPECT_FALSE(*this->renewals_->intentExists("h1"));
  auto fresh = this->renewals_->intendFence(guard, "h1", this->seen("h1"), 3000);
  ASSERT_TRUE(fresh.isOk());
  EXPECT_TRUE(*fresh);

  auto none = this->renewals_->intendFence(guard, "h2", 0, 3000);
  ASSERT_TRUE(none.isOk());
  EXPECT_TRUE(*none);
  ASSERT_TRUE(this->renewals_->clearIntent(guard, "h2").isOk());
  ASSERT_TRUE(*this->renewals_->record("h2", "h2-1", 3100, "c2"));
  auto after = this->renewals_->intendFence(guard, "h2", 0, 3200);
  ASSERT_TRUE(after.isOk());
  EXPECT_FALSE(*after);
}

// Pins: a deposed leader (its leader key gone, another term leads) can
// neither write an intent nor clear one: kFailedPrecondition "not the
// leader", nothing written. Bad host names are refused.
TYPED_TEST_P(LeaseRenewalsTest, DeposedLeaderCannotIntend) {
  EtcdWriteGuard old_guard = this->lead("c1");
  ASSERT_TRUE(this->client_->deleteRange(old_guard.key, "").isOk());
  EtcdWriteGuard new_guard = this->lead("c2");
  ASSERT_GT(new_guard.create_revision, old_guard.create_revision);
  auto intent = this->renewals_->intendFence(old_guard, "h1", 0, 1000);
  EXPECT_EQ(intent.status().code(), Code::kFailedPrecondition);
  EXPECT_NE(intent.status().message().find("belongs to term " + std::to_string(new_guard.create_revision)),
            std::string::npos)
      << intent.status().message();
  EXPECT_FALSE(*this->renewals_->intentExists("h1"));
  ASSERT_TRUE(*this->renewals_->intendFence(new_guard, "h1", 0, 1000));
  EXPECT_EQ(this->renewals_->clearIntent(old_guard, "h1").code(), Code::kFailedPrecondition);
  EXPECT_TRUE(*this->renewals_->intentExists("h1"));
  EXPECT_EQ(this->renewals_->record("a/b", "x", 1, "c2").status().code(), Code::kInvalidArgument);
  EXPECT_EQ(this->renewals_->intendFence(new_guard, "", 0, 1).status().code(), Code::kInvalidArgument);
}

REGISTER_TYPED_TEST_SUITE_P(LeaseRenewalsTest, IntentStopsRenewals, UnreadRenewalBlocksTheIntent,
                            DeposedLeaderCannotIntend);

}  // namespace renewals_contract
}  // namespace tw
