// The Store contract (store_contract.h) on SqliteStore and on EtcdStore over
// FakeEtcd, and SqliteStore's own file behaviour against real SQLite:
// ":memory:" for the record round trips, a temp file where the file itself
// matters (migrations, re-open, WAL, refusal).
#include "tw/store.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "store_contract.h"
#include "tw/fake_etcd.h"
#include "tw/store_etcd.h"

namespace tw {
namespace {

namespace fs = std::filesystem;
using namespace store_contract;

std::unique_ptr<Store> openOrDie(const std::string& path) {
  Result<std::unique_ptr<Store>> store = Store::open(path);
  EXPECT_TRUE(store.isOk()) << store.status().toString();
  return store.isOk() ? std::move(store).value() : nullptr;
}

std::string readFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Runs a read-only query through the test hook; one string per cell.
std::vector<std::vector<std::string>> queryOrDie(const std::string& path, const std::string& sql) {
  auto rows = queryForTest(path, sql);
  EXPECT_TRUE(rows.isOk()) << rows.status().toString();
  return rows.isOk() ? rows.value() : std::vector<std::vector<std::string>>{};
}

// ---- the contract on both backends ----

struct SqliteMemoryBackend {
  bool available() { return true; }
  std::unique_ptr<Store> open() { return openOrDie(":memory:"); }
  std::unique_ptr<Store> reopen() { return nullptr; }  // StoreFileTest covers files
};

// Each open() is a new cluster prefix in one FakeEtcd; reopen() the last one.
struct FakeEtcdBackend {
  bool available() { return true; }
  std::unique_ptr<Store> open() {
    ++n;
    return reopen();
  }
  std::unique_ptr<Store> reopen() {
    EtcdStoreOptions options;
    options.prefix = "/tierwarden/c" + std::to_string(n);
    auto store = openEtcdStore(std::make_unique<FakeEtcdClient>(etcd), options);
    EXPECT_TRUE(store.isOk()) << store.status().toString();
    return store.isOk() ? std::move(store).value() : nullptr;
  }
  ManualClock clock;
  FakeEtcd etcd{clock};
  int n = 0;
};

using Backends = ::testing::Types<SqliteMemoryBackend, FakeEtcdBackend>;
INSTANTIATE_TYPED_TEST_SUITE_P(Store, StoreContractTest, Backends);

// ---- SqliteStore on files ----

// A fresh temp directory per test, removed afterwards.
class StoreFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string templ = (fs::temp_directory_path() / "tw-store-test-XXXXXX").string();
    ASSERT_NE(mkdtemp(templ.data()), nullptr);
    dir_ = templ;
    path_ = (dir_ / "state.db").string();
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  fs::path dir_;
  std::string path_;
};

// Pins: replaceTiers stores every tier with its order and spec, replaces the
// whole set, and a failing replace (duplicate names) leaves the previous set in
// place.
TEST_F(StoreFileTest, ReplaceTiers) {
  auto store = openOrDie(path_);
  ASSERT_NE(store, nullptr);
  auto v1 = store->insertPolicy(PolicyRecord{});
  auto v2 = store->insertPolicy(PolicyRecord{});
  ASSERT_TRUE(v1.isOk() && v2.isOk());

  ASSERT_TRUE(store->replaceTiers(*v1, {sampleTier("old", "x")}).isOk());
  TierSpec mysql = sampleTier("mysql", kInjection);
  TierSpec apache = sampleTier("apache", kUnicode);
  apache.after = {"mysql"};
  Status s = store->replaceTiers(*v2, {mysql, apache});
  ASSERT_TRUE(s.isOk()) << s.toString();

  const std::string sql =
      "SELECT name, policy_version, ord, image, replicas, vcpus, memory_mib,"
      " json_extract(spec_json, '$.after[0]') FROM tiers ORDER BY ord";
  auto rows = queryOrDie(path_, sql);
  const std::string v2s = std::to_string(*v2);
  std::vector<std::vector<std::string>> want = {
      {"mysql", v2s, "0", kInjection, "3", "2", "512", ""},
      {"apache", v2s, "1", kUnicode, "3", "2", "512", "mysql"},
  };
  EXPECT_EQ(rows, want);

  s = store->replaceTiers(*v2, {sampleTier("dup", "a"), sampleTier("dup", "b")});
  EXPECT_EQ(s.code(), Code::kFailedPrecondition) << s.toString();
  EXPECT_NE(s.message().find("'dup'"), std::string::npos) << s.message();
  EXPECT_EQ(queryOrDie(path_, sql), want);
}

// Pins: a store method that fails inside Store::transaction undoes only its own
// part (savepoint); the body may carry on and commit the rest.
TEST_F(StoreFileTest, FailedStepInsideTransactionIsUndoneAlone) {
  auto store = openOrDie(path_);
  ASSERT_NE(store, nullptr);
  auto v1 = store->insertPolicy(PolicyRecord{});
  ASSERT_TRUE(v1.isOk());
  ASSERT_TRUE(store->replaceTiers(*v1, {sampleTier("keep", "x")}).isOk());

  Status replace;
  Status s = store->transaction([&]() -> Status {
    TW_RETURN_IF_ERROR(store->putVm(sampleVm("apache-1")));
    replace = store->replaceTiers(*v1, {sampleTier("dup", "a"), sampleTier("dup", "b")});
    return Status::ok();  // carries on regardless
  });
  ASSERT_TRUE(s.isOk()) << s.toString();
  EXPECT_EQ(replace.code(), Code::kFailedPrecondition);
  EXPECT_EQ(store->vms()->size(), 1u);
  auto rows = queryOrDie(path_, "SELECT name FROM tiers");
  EXPECT_EQ(rows, (std::vector<std::vector<std::string>>{{"keep"}}));
}

// Pins: opening a path that does not exist yet creates the file and migrates it
// to user_version = latestSchemaVersion() with every v1 and v2 table in place.
TEST_F(StoreFileTest, MigratesEmptyFile) {
  auto store = openOrDie(path_);
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(store->schemaVersion(), Store::latestSchemaVersion());
  store.reset();

  auto version = queryOrDie(path_, "PRAGMA user_version");
  EXPECT_EQ(
      version,
      (std::vector<std::vector<std::string>>{{std::to_string(Store::latestSchemaVersion())}}));
  auto tables = queryOrDie(path_,
                           "SELECT name FROM sqlite_schema WHERE type IN ('table', 'index')"
                           " AND name NOT LIKE 'sqlite_%' ORDER BY name");
  EXPECT_EQ(tables,
            (std::vector<std::vector<std::string>>{{"actions"},
                                                   {"backups"},
                                                   {"events"},
                                                   {"events_by_subject"},
                                                   {"hosts"},
                                                   {"incidents"},
                                                   {"incidents_open"},
                                                   {"policies"},
                                                   {"tiers"},
                                                   {"vms"}}));
}

// Pins: data written by one store is there after close and re-open, and ids
// keep increasing across the re-open.
TEST_F(StoreFileTest, ReopenKeepsData) {
  int64_t event_id = 0;
  int64_t policy_version = 0;
  {
    auto store = openOrDie(path_);
    ASSERT_NE(store, nullptr);
    ASSERT_TRUE(store->putVm(sampleVm("apache-1")).isOk());
    ASSERT_TRUE(store->putHost(sampleHost("h1")).isOk());
    auto e = store->appendEvent(sampleEvent(1));
    ASSERT_TRUE(e.isOk());
    event_id = e->id;
    PolicyRecord p;
    p.digest = "abc";
    p.files = {{"demo.yaml", "x: 1\n"}};
    auto v = store->insertPolicy(p);
    ASSERT_TRUE(v.isOk());
    policy_version = *v;
  }
  auto store = openOrDie(path_);
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(store->schemaVersion(), Store::latestSchemaVersion());
  auto vms = store->vms();
  ASSERT_TRUE(vms.isOk());
  ASSERT_EQ(vms->size(), 1u);
  expectVmEq((*vms)[0], sampleVm("apache-1"));
  EXPECT_EQ(store->hosts()->size(), 1u);
  auto events = store->eventsSince(0, 10);
  ASSERT_TRUE(events.isOk());
  ASSERT_EQ(events->size(), 1u);
  EXPECT_EQ((*events)[0].id, event_id);
  auto latest = store->latestPolicy();
  ASSERT_TRUE(latest.isOk() && latest->has_value());
  EXPECT_EQ((*latest)->version, policy_version);
  ASSERT_EQ((*latest)->files.size(), 1u);
  EXPECT_EQ((*latest)->files[0].content, "x: 1\n");

  auto next = store->appendEvent(sampleEvent(2));
  ASSERT_TRUE(next.isOk());
  EXPECT_GT(next->id, event_id);
}

// Pins: schema v4 adds each host's watchdog timeout: a v3 database's hosts
// read as never heard (-1, so a controller waits conservatively), and the
// value written after the migration is kept.
TEST_F(StoreFileTest, MigratesV3HostsToNeverHeardWatchdog) {
  {
    auto store = openOrDie(path_);
    ASSERT_NE(store, nullptr);
    ASSERT_TRUE(store->putHost(sampleHost("h1")).isOk());
  }
  // The v3 hosts table, as a build of schema v3 left it.
  ASSERT_TRUE(execForTest(path_, "ALTER TABLE hosts DROP COLUMN watchdog_ms").isOk());
  ASSERT_TRUE(setSchemaVersionForTest(path_, 3).isOk());
  auto store = openOrDie(path_);
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(store->schemaVersion(), 4);
  auto hosts = store->hosts();
  ASSERT_TRUE(hosts.isOk()) << hosts.status().toString();
  ASSERT_EQ(hosts->size(), 1u);
  EXPECT_EQ((*hosts)[0].watchdog_ms, -1);
  EXPECT_EQ((*hosts)[0].reason, sampleHost("h1").reason);
  HostRecord h = (*hosts)[0];
  h.watchdog_ms = 0;
  ASSERT_TRUE(store->putHost(h).isOk());
  EXPECT_EQ(store->hosts()->at(0).watchdog_ms, 0);
}

// Pins: a database with a newer schema than this build is refused with
// kFailedPrecondition and the agreed message, and the file is left untouched.
TEST_F(StoreFileTest, RefusesNewerSchema) {
  {
    auto store = openOrDie(path_);
    ASSERT_NE(store, nullptr);
    ASSERT_TRUE(store->putVm(sampleVm("apache-1")).isOk());
  }
  const int newer = Store::latestSchemaVersion() + 5;
  Status set = setSchemaVersionForTest(path_, newer);
  ASSERT_TRUE(set.isOk()) << set.toString();
  ASSERT_FALSE(fs::exists(path_ + "-wal"));  // all in the main file before we look
  const std::string before = readFile(path_);
  ASSERT_FALSE(before.empty());

  auto store = Store::open(path_);
  ASSERT_FALSE(store.isOk());
  EXPECT_EQ(store.status().code(), Code::kFailedPrecondition);
  EXPECT_EQ(store.status().message(), "database " + path_ + " has schema version " +
                                          std::to_string(newer) + ", newer than this build's " +
                                          std::to_string(Store::latestSchemaVersion()) +
                                          "; upgrade tierwarden or use another state dir");
  EXPECT_EQ(readFile(path_), before);
  EXPECT_EQ(queryOrDie(path_, "SELECT name FROM vms"),
            (std::vector<std::vector<std::string>>{{"apache-1"}}));
}

// Pins: a file database runs in WAL mode (the -wal file exists while it is
// open).
TEST_F(StoreFileTest, FileDatabaseUsesWal) {
  auto store = openOrDie(path_);
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->putVm(sampleVm("apache-1")).isOk());
  EXPECT_TRUE(fs::exists(path_ + "-wal"));
  EXPECT_EQ(queryOrDie(path_, "PRAGMA journal_mode"),
            (std::vector<std::vector<std::string>>{{"wal"}}));
}

// Pins: a file that is not a SQLite database is refused with an error naming
// the path, not a crash, and is not overwritten.
TEST_F(StoreFileTest, RefusesGarbageFile) {
  const std::string garbage(4096, 'x');
  { std::ofstream(path_, std::ios::binary) << garbage; }
  auto store = Store::open(path_);
  ASSERT_FALSE(store.isOk());
  EXPECT_EQ(store.status().code(), Code::kInternal);
  EXPECT_NE(store.status().message().find(path_), std::string::npos) << store.status().message();
  EXPECT_EQ(readFile(path_), garbage);
}

// Pins: a path in a directory that does not exist is an error, not a crash.
TEST_F(StoreFileTest, RefusesMissingDirectory) {
  auto store = Store::open((dir_ / "no" / "such" / "dir" / "state.db").string());
  ASSERT_FALSE(store.isOk());
  EXPECT_NE(store.status().message().find("no/such/dir"), std::string::npos)
      << store.status().message();
}

// Pins: in SQLite, replaceTiers for a policy version that does not exist violates the
// foreign key (foreign_keys is on) and maps to kFailedPrecondition.
TEST(SqliteStoreTest, ReplaceTiersNeedsExistingPolicy) {
  auto store = openOrDie(":memory:");
  ASSERT_NE(store, nullptr);
  Status s = store->replaceTiers(42, {sampleTier("apache", "img")});
  EXPECT_EQ(s.code(), Code::kFailedPrecondition) << s.toString();
  EXPECT_NE(s.message().find("FOREIGN KEY"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("42"), std::string::npos) << s.message();
}

}  // namespace
}  // namespace tw
