// SqliteStore against real SQLite: ":memory:" for the record round trips, a
// temp file where the file itself matters (migrations, re-open, WAL, refusal).
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

namespace tw {
namespace {

namespace fs = std::filesystem;

// Strings that would break a store that builds SQL by concatenation, or that
// mangles bytes.
const std::string kInjection = "'); DROP TABLE vms;--";
const std::string kQuotes = "it's \"quoted\" \\ back`tick`";
const std::string kUnicode = "Grüße, 日本語, emoji 🚀, nul-free";

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

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store_ = openOrDie(":memory:");
    ASSERT_NE(store_, nullptr);
  }
  std::unique_ptr<Store> store_;
};

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

VmRecord sampleVm(const std::string& name) {
  VmRecord vm;
  vm.name = name;
  vm.tier = "apache";
  vm.ordinal = 2;
  vm.host = "h2";
  vm.epoch = 7;
  vm.state = VmState::kRestarting;
  vm.health = Health::kUnhealthy;
  vm.restarts = 3;
  vm.relocations = 1;
  vm.reason = "domain crashed";
  vm.updated_ms = 1700000000123;
  return vm;
}

void expectVmEq(const VmRecord& got, const VmRecord& want) {
  EXPECT_EQ(got.name, want.name);
  EXPECT_EQ(got.tier, want.tier);
  EXPECT_EQ(got.ordinal, want.ordinal);
  EXPECT_EQ(got.host, want.host);
  EXPECT_EQ(got.epoch, want.epoch);
  EXPECT_EQ(got.state, want.state);
  EXPECT_EQ(got.health, want.health);
  EXPECT_EQ(got.restarts, want.restarts);
  EXPECT_EQ(got.relocations, want.relocations);
  EXPECT_EQ(got.reason, want.reason);
  EXPECT_EQ(got.updated_ms, want.updated_ms);
}

HostRecord sampleHost(const std::string& name) {
  HostRecord h;
  h.name = name;
  h.state = HostState::kSuspect;
  h.state_since_ms = 42;
  h.capacity.cpus = 16;
  h.capacity.memory_mib = int64_t{1} << 40;  // does not fit in 32 bits
  h.reason = "missed 1 heartbeat";
  return h;
}

EventRecord sampleEvent(int i) {
  EventRecord e;
  e.t_ms = 1000 + i;
  e.level = "info";
  e.kind = "vm.placed";
  e.subject = "vm/apache-" + std::to_string(i);
  e.message = "event " + std::to_string(i);
  return e;
}

TierSpec sampleTier(const std::string& name, const std::string& image) {
  TierSpec t;
  t.name = name;
  t.image = image;
  t.replicas = 3;
  t.vcpus = 2;
  t.memory_mib = 512;
  return t;
}

// Pins: a new in-memory database is migrated to the newest schema this build
// knows.
TEST_F(StoreTest, OpenInMemoryIsAtLatestSchema) {
  EXPECT_GE(Store::latestSchemaVersion(), 1);
  EXPECT_EQ(store_->schemaVersion(), Store::latestSchemaVersion());
}

// Pins: an empty policy history has no policy in force (not an error).
TEST_F(StoreTest, LatestPolicyOnEmptyIsNullopt) {
  auto latest = store_->latestPolicy();
  ASSERT_TRUE(latest.isOk()) << latest.status().toString();
  EXPECT_FALSE(latest->has_value());
}

// Pins: a policy comes back byte for byte, files in order, odd characters
// included.
TEST_F(StoreTest, PolicyRoundTrip) {
  PolicyRecord in;
  in.version = 999;  // ignored: the store assigns versions
  in.applied_ms = 1234567;
  in.digest = "sha256:abc" + kQuotes;
  in.files = {{"demo.yaml", "tiers:\n  - name: apache # " + kUnicode + "\n"},
              {kInjection, kQuotes},
              {"empty.yaml", ""}};
  auto version = store_->insertPolicy(in);
  ASSERT_TRUE(version.isOk()) << version.status().toString();
  EXPECT_NE(*version, 999);

  auto latest = store_->latestPolicy();
  ASSERT_TRUE(latest.isOk()) << latest.status().toString();
  ASSERT_TRUE(latest->has_value());
  const PolicyRecord& out = **latest;
  EXPECT_EQ(out.version, *version);
  EXPECT_EQ(out.applied_ms, in.applied_ms);
  EXPECT_EQ(out.digest, in.digest);
  ASSERT_EQ(out.files.size(), in.files.size());
  for (size_t i = 0; i < in.files.size(); ++i) {
    EXPECT_EQ(out.files[i].name, in.files[i].name);
    EXPECT_EQ(out.files[i].content, in.files[i].content);
  }
}

// Pins: policy versions strictly increase and the newest insert is the one in
// force.
TEST_F(StoreTest, PolicyVersionsIncrease) {
  int64_t previous = 0;
  for (int i = 0; i < 3; ++i) {
    PolicyRecord p;
    p.applied_ms = i;
    p.digest = "d" + std::to_string(i);
    auto version = store_->insertPolicy(p);
    ASSERT_TRUE(version.isOk()) << version.status().toString();
    EXPECT_GT(*version, previous);
    previous = *version;
  }
  auto latest = store_->latestPolicy();
  ASSERT_TRUE(latest.isOk() && latest->has_value());
  EXPECT_EQ((*latest)->version, previous);
  EXPECT_EQ((*latest)->digest, "d2");
  EXPECT_TRUE((*latest)->files.empty());
}

// Pins: every host field survives storage; put replaces; list is sorted by
// name; delete removes.
TEST_F(StoreTest, HostRoundTripReplaceAndDelete) {
  HostRecord b = sampleHost("h2");
  HostRecord a = sampleHost(kInjection);
  a.reason = kUnicode + kQuotes;
  a.state = HostState::kMaintenance;
  ASSERT_TRUE(store_->putHost(b).isOk());
  ASSERT_TRUE(store_->putHost(a).isOk());

  auto hosts = store_->hosts();
  ASSERT_TRUE(hosts.isOk()) << hosts.status().toString();
  ASSERT_EQ(hosts->size(), 2u);
  const HostRecord& got = (*hosts)[0];  // "'..." sorts before "h2"
  EXPECT_EQ(got.name, a.name);
  EXPECT_EQ(got.state, a.state);
  EXPECT_EQ(got.state_since_ms, a.state_since_ms);
  EXPECT_EQ(got.capacity.cpus, a.capacity.cpus);
  EXPECT_EQ(got.capacity.memory_mib, a.capacity.memory_mib);
  EXPECT_EQ(got.reason, a.reason);
  EXPECT_EQ((*hosts)[1].name, "h2");

  b.state = HostState::kFenced;
  b.reason = "lease expired";
  ASSERT_TRUE(store_->putHost(b).isOk());
  ASSERT_TRUE(store_->deleteHost(a.name).isOk());
  hosts = store_->hosts();
  ASSERT_TRUE(hosts.isOk());
  ASSERT_EQ(hosts->size(), 1u);
  EXPECT_EQ((*hosts)[0].state, HostState::kFenced);
  EXPECT_EQ((*hosts)[0].reason, "lease expired");
}

// Pins: every vm field survives storage, values are bound (an SQL-looking name
// is just a name), put replaces, delete removes only its row.
TEST_F(StoreTest, VmRoundTripReplaceAndDelete) {
  VmRecord evil = sampleVm(kInjection);
  evil.reason = kQuotes + kUnicode;
  evil.host = "";  // not placed
  VmRecord plain = sampleVm("apache-1");
  ASSERT_TRUE(store_->putVm(plain).isOk());
  ASSERT_TRUE(store_->putVm(evil).isOk());

  auto vms = store_->vms();
  ASSERT_TRUE(vms.isOk()) << vms.status().toString();
  ASSERT_EQ(vms->size(), 2u);
  expectVmEq((*vms)[0], evil);
  expectVmEq((*vms)[1], plain);

  plain.epoch = 8;
  plain.state = VmState::kRunning;
  plain.health = Health::kHealthy;
  ASSERT_TRUE(store_->putVm(plain).isOk());
  ASSERT_TRUE(store_->deleteVm(evil.name).isOk());
  ASSERT_TRUE(store_->deleteVm("no-such-vm").isOk());
  vms = store_->vms();
  ASSERT_TRUE(vms.isOk());
  ASSERT_EQ(vms->size(), 1u);
  expectVmEq((*vms)[0], plain);
}

// Pins: every VmState and Health name is written and read back as the same
// enum.
TEST_F(StoreTest, VmEveryStateRoundTrips) {
  const VmState states[] = {VmState::kPending,   VmState::kStarting, VmState::kRunning,
                            VmState::kStopped,   VmState::kCrashed,  VmState::kRestarting,
                            VmState::kMigrating, VmState::kFencing,  VmState::kRecovering,
                            VmState::kError};
  const Health healths[] = {Health::kUnknown, Health::kHealthy, Health::kUnhealthy};
  int i = 0;
  for (VmState s : states) {
    VmRecord vm = sampleVm("vm-" + std::to_string(10 + i));
    vm.state = s;
    vm.health = healths[i % 3];
    ASSERT_TRUE(store_->putVm(vm).isOk());
    ++i;
  }
  auto vms = store_->vms();
  ASSERT_TRUE(vms.isOk()) << vms.status().toString();
  ASSERT_EQ(vms->size(), std::size(states));
  for (size_t j = 0; j < std::size(states); ++j) {
    EXPECT_EQ((*vms)[j].state, states[j]) << j;
    EXPECT_EQ((*vms)[j].health, healths[j % 3]) << j;
  }
}

// Pins: appendEvent assigns increasing ids and stores every field as given.
TEST_F(StoreTest, AppendEventAssignsIdsAndRoundTrips) {
  EventRecord in = sampleEvent(1);
  in.id = 12345;  // ignored
  in.message = kInjection + kQuotes + kUnicode;
  auto first = store_->appendEvent(in);
  auto second = store_->appendEvent(sampleEvent(2));
  ASSERT_TRUE(first.isOk() && second.isOk());
  EXPECT_NE(first->id, 12345);
  EXPECT_GT(second->id, first->id);

  auto events = store_->eventsSince(0, 10);
  ASSERT_TRUE(events.isOk()) << events.status().toString();
  ASSERT_EQ(events->size(), 2u);
  const EventRecord& got = (*events)[0];
  EXPECT_EQ(got.id, first->id);
  EXPECT_EQ(got.t_ms, in.t_ms);
  EXPECT_EQ(got.level, in.level);
  EXPECT_EQ(got.kind, in.kind);
  EXPECT_EQ(got.subject, in.subject);
  EXPECT_EQ(got.message, in.message);
}

// Pins: eventsSince returns ids > after_id, oldest first, at most `limit`, so a
// reader can page through the log; eventCount counts them all.
TEST_F(StoreTest, EventsSincePagesAndCounts) {
  auto empty = store_->eventCount();
  ASSERT_TRUE(empty.isOk());
  EXPECT_EQ(*empty, 0);

  std::vector<int64_t> ids;
  for (int i = 0; i < 7; ++i) {
    auto e = store_->appendEvent(sampleEvent(i));
    ASSERT_TRUE(e.isOk()) << e.status().toString();
    ids.push_back(e->id);
  }
  auto count = store_->eventCount();
  ASSERT_TRUE(count.isOk());
  EXPECT_EQ(*count, 7);

  std::vector<int64_t> seen;
  int64_t cursor = 0;
  int pages = 0;
  while (true) {
    auto page = store_->eventsSince(cursor, 3);
    ASSERT_TRUE(page.isOk()) << page.status().toString();
    if (page->empty()) break;
    EXPECT_LE(page->size(), 3u);
    for (const EventRecord& e : *page) seen.push_back(e.id);
    cursor = page->back().id;
    ASSERT_LT(++pages, 10);
  }
  EXPECT_EQ(pages, 3);  // 3 + 3 + 1
  EXPECT_EQ(seen, ids);

  auto tail = store_->eventsSince(ids[4], 100);
  ASSERT_TRUE(tail.isOk());
  ASSERT_EQ(tail->size(), 2u);
  EXPECT_EQ((*tail)[0].id, ids[5]);
  EXPECT_EQ((*tail)[0].subject, "vm/apache-5");
}

// Pins: a non-positive limit is refused (SQLite would read a negative LIMIT as
// "all").
TEST_F(StoreTest, EventsSinceRefusesNonPositiveLimit) {
  ASSERT_TRUE(store_->appendEvent(sampleEvent(1)).isOk());
  EXPECT_EQ(store_->eventsSince(0, 0).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(store_->eventsSince(0, -1).status().code(), Code::kInvalidArgument);
}

// Pins: writes made in a transaction whose body returns ok are all kept.
TEST_F(StoreTest, TransactionCommits) {
  Status s = store_->transaction([&]() -> Status {
    TW_RETURN_IF_ERROR(store_->putVm(sampleVm("apache-1")));
    TW_RETURN_IF_ERROR(store_->putHost(sampleHost("h1")));
    return store_->appendEvent(sampleEvent(1)).status();
  });
  ASSERT_TRUE(s.isOk()) << s.toString();
  EXPECT_EQ(store_->vms()->size(), 1u);
  EXPECT_EQ(store_->hosts()->size(), 1u);
  EXPECT_EQ(*store_->eventCount(), 1);
}

// Pins: a failing body leaves nothing written, and its own status is returned.
TEST_F(StoreTest, TransactionRollsBackOnFailure) {
  ASSERT_TRUE(store_->putVm(sampleVm("before")).isOk());
  Status s = store_->transaction([&]() -> Status {
    TW_RETURN_IF_ERROR(store_->putVm(sampleVm("apache-1")));
    TW_RETURN_IF_ERROR(store_->deleteVm("before"));
    TW_RETURN_IF_ERROR(store_->putHost(sampleHost("h1")));
    TW_RETURN_IF_ERROR(store_->appendEvent(sampleEvent(1)).status());
    PolicyRecord p;
    TW_RETURN_IF_ERROR(store_->insertPolicy(p).status());
    return notFound("tier 'ghost'");
  });
  EXPECT_EQ(s.code(), Code::kNotFound);
  EXPECT_EQ(s.message(), "tier 'ghost'");
  auto vms = store_->vms();
  ASSERT_TRUE(vms.isOk());
  ASSERT_EQ(vms->size(), 1u);
  EXPECT_EQ((*vms)[0].name, "before");
  EXPECT_TRUE(store_->hosts()->empty());
  EXPECT_EQ(*store_->eventCount(), 0);
  EXPECT_FALSE(store_->latestPolicy()->has_value());
  // The store is usable afterwards (no transaction left open).
  EXPECT_TRUE(store_->transaction([&] { return store_->putVm(sampleVm("after")); }).isOk());
  EXPECT_EQ(store_->vms()->size(), 2u);
}

// Pins: a nested transaction is refused with kFailedPrecondition, and the outer
// one rolls back when its body passes that error on.
TEST_F(StoreTest, NestedTransactionRefused) {
  Status inner;
  Status outer = store_->transaction([&]() -> Status {
    TW_RETURN_IF_ERROR(store_->putVm(sampleVm("apache-1")));
    inner = store_->transaction([] { return Status::ok(); });
    return inner;
  });
  EXPECT_EQ(inner.code(), Code::kFailedPrecondition);
  EXPECT_EQ(outer.code(), Code::kFailedPrecondition);
  EXPECT_TRUE(store_->vms()->empty());
}

// Pins: replaceTiers for a policy version that does not exist violates the
// foreign key (foreign_keys is on) and maps to kFailedPrecondition.
TEST_F(StoreTest, ReplaceTiersNeedsExistingPolicy) {
  Status s = store_->replaceTiers(42, {sampleTier("apache", "img")});
  EXPECT_EQ(s.code(), Code::kFailedPrecondition) << s.toString();
  EXPECT_NE(s.message().find("FOREIGN KEY"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("42"), std::string::npos) << s.message();
}

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

}  // namespace
}  // namespace tw
