// What EtcdStore adds to the Store contract (store_contract.h): the leader
// guard, etcd's size limits, the schema rule and monotonic ids between
// writers. A typed suite, instantiated on FakeEtcd (tests/unit/store_etcd_test.cc)
// and on a real etcd (tests/integration/store_etcd_test.cc), which keeps the
// fake honest.
//
// An EtcdBackend is a default-constructible type with
//   bool available();                       // false: skip (no etcd installed)
//   std::unique_ptr<EtcdClient> client();   // a new client of the one etcd
//   std::string freshPrefix();              // a cluster prefix no test used
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "tw/etcd_client.h"
#include "tw/store_etcd.h"

namespace tw {
namespace etcd_contract {

template <typename Backend>
class EtcdStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!backend_.available()) GTEST_SKIP() << "etcd not available";
    prefix_ = backend_.freshPrefix();
    raw_ = backend_.client();
  }

  std::unique_ptr<Store> open(EtcdStoreOptions options = {}) {
    options.prefix = prefix_;
    auto store = openEtcdStore(backend_.client(), std::move(options));
    EXPECT_TRUE(store.isOk()) << store.status().toString();
    return store.isOk() ? std::move(store).value() : nullptr;
  }

  // Every key under the prefix, with its mod revision: "nothing written"
  // means this is unchanged.
  std::vector<std::string> keys() {
    auto r = raw_->range(prefix_ + "/", etcdPrefixEnd(prefix_ + "/"));
    EXPECT_TRUE(r.isOk()) << r.status().toString();
    std::vector<std::string> out;
    if (r.isOk()) {
      for (const EtcdKv& kv : r->kvs) out.push_back(kv.key + "@" + std::to_string(kv.mod_revision));
    }
    return out;
  }

  // Makes `identity` the leader by creating the leader key on a fresh lease;
  // returns its term (create revision).
  int64_t takeLeadership(const std::string& identity) {
    auto lease = raw_->leaseGrant(30);
    EXPECT_TRUE(lease.isOk()) << lease.status().toString();
    if (!lease.isOk()) return 0;
    const std::string key = etcdLeaderKey(prefix_);
    auto txn = raw_->txn({EtcdCompare::createRevisionIs(key, 0)}, {EtcdOp::put(key, identity, lease->id)}, {});
    EXPECT_TRUE(txn.isOk() && txn->succeeded) << (txn.isOk() ? "key exists" : txn.status().toString());
    return txn.isOk() ? txn->revision : 0;
  }

  static VmRecord vm(const std::string& name) {
    VmRecord v;
    v.name = name;
    v.tier = "web";
    v.ordinal = 1;
    return v;
  }

  Backend backend_;
  std::string prefix_;
  std::unique_ptr<EtcdClient> raw_;
};

TYPED_TEST_SUITE_P(EtcdStoreTest);

// Pins: a leader deposed between two of its writes (its leader key expired
// and another replica won a new term) cannot write, not even once: its
// transaction, its single writes and its event appends all fail with
// kFailedPrecondition "not the leader" and etcd holds exactly what it held.
// The deposed replica still believes it leads (its guard returns its old
// term): etcd's compare is what stops it, and on_deposed tells it why (once
// per refused write; never while it leads).
TYPED_TEST_P(EtcdStoreTest, DeposedLeaderWritesNothing) {
  int64_t term_a = this->takeLeadership("a");
  ASSERT_GT(term_a, 0);
  EtcdStoreOptions options;
  options.guard = [&]() -> Result<EtcdWriteGuard> { return EtcdWriteGuard{etcdLeaderKey(this->prefix_), term_a}; };
  int deposed = 0;
  std::string deposed_why;
  options.on_deposed = [&](const std::string& why) {
    ++deposed;
    deposed_why = why;
  };
  auto a = this->open(options);
  ASSERT_NE(a, nullptr);
  ASSERT_TRUE(a->putVm(this->vm("web-1")).isOk());  // leading: writes work
  EXPECT_EQ(deposed, 0);

  // A's key goes (lease expiry) and B wins a term.
  ASSERT_TRUE(this->raw_->deleteRange(etcdLeaderKey(this->prefix_), "").isOk());
  int64_t term_b = this->takeLeadership("b");
  ASSERT_GT(term_b, term_a);
  const std::vector<std::string> before = this->keys();

  Status s = a->transaction([&]() -> Status {
    TW_RETURN_IF_ERROR(a->putVm(this->vm("web-2")));
    TW_RETURN_IF_ERROR(a->deleteVm("web-1"));
    TW_RETURN_IF_ERROR(a->appendEvent(EventRecord{0, 1, "info", "vm.placed", "vm/web-2", "m"}).status());
    return a->insertPolicy(PolicyRecord{}).status();
  });
  EXPECT_EQ(s.code(), Code::kFailedPrecondition) << s.toString();
  EXPECT_NE(s.message().find("not the leader"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("term " + std::to_string(term_b)), std::string::npos) << s.message();
  EXPECT_EQ(deposed, 1);
  EXPECT_NE(deposed_why.find("belongs to term " + std::to_string(term_b)), std::string::npos) << deposed_why;
  EXPECT_EQ(a->putVm(this->vm("web-3")).code(), Code::kFailedPrecondition);
  EXPECT_EQ(a->appendEvent(EventRecord{}).status().code(), Code::kFailedPrecondition);
  EXPECT_EQ(a->beginAction(ActionRecord{0, "fence", "host/h1", "{}", 1}).status().code(), Code::kFailedPrecondition);
  EXPECT_EQ(this->keys(), before);

  // B, the leader now, writes.
  EtcdStoreOptions b_options;
  b_options.guard = [&]() -> Result<EtcdWriteGuard> { return EtcdWriteGuard{etcdLeaderKey(this->prefix_), term_b}; };
  auto b = this->open(b_options);
  ASSERT_NE(b, nullptr);
  EXPECT_TRUE(b->putVm(this->vm("web-2")).isOk());
  auto vms = b->vms();
  ASSERT_TRUE(vms.isOk());
  EXPECT_EQ(vms->size(), 2u);
}

// Pins: a guard source that says "not leading" stops the write before it is
// sent, with its reason.
TYPED_TEST_P(EtcdStoreTest, NoGuardNoWrite) {
  EtcdStoreOptions options;
  options.guard = []() -> Result<EtcdWriteGuard> { return failedPrecondition("lease ran out 5 ms ago"); };
  int deposed = 0;  // nothing was sent, so etcd deposed nobody
  options.on_deposed = [&](const std::string&) { ++deposed; };
  auto store = this->open(options);
  ASSERT_NE(store, nullptr);
  const auto before = this->keys();
  Status s = store->putVm(this->vm("web-1"));
  EXPECT_EQ(s.code(), Code::kFailedPrecondition);
  EXPECT_NE(s.message().find("lease ran out 5 ms ago"), std::string::npos) << s.message();
  EXPECT_EQ(this->keys(), before);
  EXPECT_EQ(deposed, 0);
}

// Pins: a transaction bigger than the configured --max-txn-ops is refused
// before it is sent, naming the flag and a value; one bigger than etcd's
// own limit (the store told a larger one) is refused by etcd with the flag
// named too. Nothing is written either way.
TYPED_TEST_P(EtcdStoreTest, TooManyOperationsIsAClearError) {
  const auto before_store = this->keys();
  EtcdStoreOptions small;
  small.max_txn_ops = 16;
  auto store = this->open(small);
  ASSERT_NE(store, nullptr);
  const auto before = this->keys();
  auto many = [&](Store& s, int n) {
    return s.transaction([&]() -> Status {
      for (int i = 0; i < n; ++i) TW_RETURN_IF_ERROR(s.putVm(this->vm("web-" + std::to_string(i))));
      return Status::ok();
    });
  };
  Status s = many(*store, 20);
  EXPECT_EQ(s.code(), Code::kFailedPrecondition) << s.toString();
  EXPECT_NE(s.message().find("--max-txn-ops"), std::string::npos) << s.message();
  EXPECT_EQ(this->keys(), before);
  EXPECT_TRUE(many(*store, 10).isOk());

  EtcdStoreOptions large;
  large.max_txn_ops = 100000;
  auto unbounded = this->open(large);
  ASSERT_NE(unbounded, nullptr);
  const auto before2 = this->keys();
  s = many(*unbounded, kEtcdDefaultMaxTxnOps + 1);
  EXPECT_EQ(s.code(), Code::kInvalidArgument) << s.toString();
  EXPECT_NE(s.message().find("--max-txn-ops"), std::string::npos) << s.message();
  EXPECT_EQ(this->keys(), before2);
  (void)before_store;
}

// Pins: a store whose schema is newer than this build is refused on open
// with the agreed kind of message, and a store migrated under a running
// replica refuses that replica's writes.
TYPED_TEST_P(EtcdStoreTest, RefusesNewerSchema) {
  auto store = this->open();
  ASSERT_NE(store, nullptr);
  const int newer = Store::latestSchemaVersion() + 1;
  ASSERT_TRUE(this->raw_->put(this->prefix_ + "/meta/schema", std::to_string(newer)).isOk());
  Status s = store->putVm(this->vm("web-1"));
  EXPECT_EQ(s.code(), Code::kFailedPrecondition) << s.toString();
  EXPECT_NE(s.message().find("schema is now " + std::to_string(newer)), std::string::npos) << s.message();

  EtcdStoreOptions options;
  options.prefix = this->prefix_;
  auto again = openEtcdStore(this->backend_.client(), options);
  ASSERT_FALSE(again.isOk());
  EXPECT_EQ(again.status().code(), Code::kFailedPrecondition);
  EXPECT_EQ(again.status().message(), "etcd store '" + this->prefix_ + "' has schema version " +
                                          std::to_string(newer) + ", newer than this build's " +
                                          std::to_string(Store::latestSchemaVersion()) +
                                          "; upgrade tierwarden or use another cluster name");
}

// Pins: a fresh prefix is migrated to the latest schema, one step per txn,
// and the etcd steps are as many as SQLite's.
TYPED_TEST_P(EtcdStoreTest, MigratesFreshPrefix) {
  EXPECT_EQ(etcdMigrationCount(), Store::latestSchemaVersion());
  auto store = this->open();
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(store->schemaVersion(), Store::latestSchemaVersion());
  auto r = this->raw_->range(this->prefix_ + "/meta/schema", "");
  ASSERT_TRUE(r.isOk());
  ASSERT_EQ(r->kvs.size(), 1u);
  EXPECT_EQ(r->kvs[0].value, std::to_string(Store::latestSchemaVersion()));
  EXPECT_EQ(r->kvs[0].version, Store::latestSchemaVersion());  // one put per step
}

// Pins: a store of schema v3 (host records without "watchdog_ms") opens,
// is migrated to v4, and its hosts read as never heard (-1); a value written
// since is read back, 0 (no watchdog) included.
TYPED_TEST_P(EtcdStoreTest, MigratesV3HostsToNeverHeardWatchdog) {
  ASSERT_TRUE(this->raw_->put(this->prefix_ + "/meta/schema", "3").isOk());
  ASSERT_TRUE(this->raw_
                  ->put(this->prefix_ + "/hosts/h1",
                        R"({"name":"h1","state":"online","state_since_ms":5,)"
                        R"("capacity":{"cpus":4,"memory_mib":8192},"reason":"up"})")
                  .isOk());
  auto store = this->open();
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(store->schemaVersion(), 4);
  auto hosts = store->hosts();
  ASSERT_TRUE(hosts.isOk()) << hosts.status().toString();
  ASSERT_EQ(hosts->size(), 1u);
  EXPECT_EQ((*hosts)[0].watchdog_ms, -1);
  EXPECT_EQ((*hosts)[0].capacity.memory_mib, 8192);
  HostRecord h = (*hosts)[0];
  h.watchdog_ms = 0;
  ASSERT_TRUE(store->putHost(h).isOk());
  EXPECT_EQ(store->hosts()->at(0).watchdog_ms, 0);
}

// Pins: an import that did not finish (its marker is still there) makes
// open() refuse, saying what to do.
TYPED_TEST_P(EtcdStoreTest, UnfinishedImportRefused) {
  ASSERT_NE(this->open(), nullptr);
  ASSERT_TRUE(this->raw_->put(this->prefix_ + "/meta/importing", "migrate-store").isOk());
  EtcdStoreOptions options;
  options.prefix = this->prefix_;
  auto again = openEtcdStore(this->backend_.client(), options);
  ASSERT_FALSE(again.isOk());
  EXPECT_EQ(again.status().code(), Code::kFailedPrecondition);
  EXPECT_NE(again.status().message().find("--force"), std::string::npos) << again.status().message();
}

// Pins: two writers appending events in turn never reuse an id, and ids
// increase in the order of the appends (a stale counter loses the compare
// and is read again).
TYPED_TEST_P(EtcdStoreTest, EventIdsMonotonicBetweenWriters) {
  auto a = this->open();
  auto b = this->open();
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  std::vector<int64_t> ids;
  for (int i = 0; i < 6; ++i) {
    Store& s = i % 2 == 0 ? *a : *b;
    auto e = s.appendEvent(EventRecord{0, i, "info", "k", "s", "m"});
    ASSERT_TRUE(e.isOk()) << e.status().toString();
    ids.push_back(e->id);
  }
  for (size_t i = 1; i < ids.size(); ++i) EXPECT_GT(ids[i], ids[i - 1]);
  auto all = a->eventsSince(0, 100);
  ASSERT_TRUE(all.isOk());
  EXPECT_EQ(all->size(), 6u);
}

// Pins: importState refuses while a controller leads the target cluster.
TYPED_TEST_P(EtcdStoreTest, ImportRefusedWhileALeaderRuns) {
  auto store = this->open();
  ASSERT_NE(store, nullptr);
  ASSERT_GT(this->takeLeadership("ctl-1"), 0);
  StoreSnapshot snap;
  snap.schema_version = Store::latestSchemaVersion();
  Status s = store->importState(snap, true);
  EXPECT_EQ(s.code(), Code::kFailedPrecondition) << s.toString();
  EXPECT_NE(s.message().find("'ctl-1'"), std::string::npos) << s.message();
}

REGISTER_TYPED_TEST_SUITE_P(EtcdStoreTest, DeposedLeaderWritesNothing, NoGuardNoWrite,
                            TooManyOperationsIsAClearError, RefusesNewerSchema, MigratesFreshPrefix,
                            MigratesV3HostsToNeverHeardWatchdog,
                            UnfinishedImportRefused, EventIdsMonotonicBetweenWriters,
                            ImportRefusedWhileALeaderRuns);

}  // namespace etcd_contract
}  // namespace tw
