// The Store contract: what every Store implementation must do, as a typed
// test suite (googletest's TYPED_TEST_SUITE_P). Instantiated for SQLite and
// for EtcdStore on FakeEtcd in tests/unit/store_test.cc, and for EtcdStore on
// a real etcd in tests/integration/store_etcd_test.cc.
//
// A Backend is a default-constructible type with
//   std::unique_ptr<Store> open();    // a fresh, empty store (nullptr + a failure: error)
//   std::unique_ptr<Store> reopen();  // the same store again (nullptr: cannot; the test skips)
//   bool available();                 // false: every test skips (e.g. no etcd installed)
#pragma once

#include <gtest/gtest.h>

#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "tw/json.h"
#include "tw/store.h"

namespace tw {
namespace store_contract {

// Strings that would break a store that builds SQL by concatenation, or that
// mangles bytes.
inline const std::string kInjection = "'); DROP TABLE vms;--";
inline const std::string kQuotes = "it's \"quoted\" \\ back`tick`";
inline const std::string kUnicode = "Grüße, 日本語, emoji 🚀, nul-free";

inline VmRecord sampleVm(const std::string& name) {
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

inline void expectVmEq(const VmRecord& got, const VmRecord& want) {
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

inline HostRecord sampleHost(const std::string& name) {
  HostRecord h;
  h.name = name;
  h.state = HostState::kSuspect;
  h.state_since_ms = 42;
  h.capacity.cpus = 16;
  h.capacity.memory_mib = int64_t{1} << 40;  // does not fit in 32 bits
  h.reason = "missed 1 heartbeat";
  h.watchdog_ms = 2500;
  return h;
}

inline EventRecord sampleEvent(int i) {
  EventRecord e;
  e.t_ms = 1000 + i;
  e.level = "info";
  e.kind = "vm.placed";
  e.subject = "vm/apache-" + std::to_string(i);
  e.message = "event " + std::to_string(i);
  return e;
}

inline TierSpec sampleTier(const std::string& name, const std::string& image) {
  TierSpec t;
  t.name = name;
  t.image = image;
  t.replicas = 3;
  t.vcpus = 2;
  t.memory_mib = 512;
  return t;
}


template <typename Backend>
class StoreContractTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!backend_.available()) GTEST_SKIP() << "backend not available";
    store_ = backend_.open();
    ASSERT_NE(store_, nullptr);
  }
  Backend backend_;
  std::unique_ptr<Store> store_;
};

TYPED_TEST_SUITE_P(StoreContractTest);

// One line per record kind, for comparing whole stores.
inline std::vector<std::string> describe(const StoreSnapshot& s) {
  std::vector<std::string> out{"schema " + std::to_string(s.schema_version)};
  for (const PolicyRecord& p : s.policies) {
    Json files = Json::array();
    for (const PolicyFile& f : p.files) files.push_back(f);
    out.push_back("policy " + std::to_string(p.version) + " " + std::to_string(p.applied_ms) + " " + p.digest + " " + files.dump());
  }
  for (const StoredTier& t : s.tiers) {
    out.push_back("tier " + t.name + " " + std::to_string(t.policy_version) + " " + std::to_string(t.ord) + " " +
                  Json::parse(t.spec_json).dump());
  }
  for (const HostRecord& h : s.hosts) out.push_back("host " + Json(h).dump());
  for (const VmRecord& v : s.vms) out.push_back("vm " + Json(v).dump());
  for (const EventRecord& e : s.events) out.push_back("event " + Json(e).dump());
  for (const IncidentRecord& i : s.incidents) {
    std::string line = "incident " + std::to_string(i.id) + " " + i.subject + " " + i.kind + " " +
                       std::to_string(i.opened_ms) + " " + std::to_string(i.closed_ms) + " " + i.summary;
    for (const IncidentStep& st : i.steps) line += " [" + st.step + " " + std::to_string(st.t_ms) + " " + st.detail + "]";
    out.push_back(line);
  }
  for (const ActionRecord& a : s.actions) {
    out.push_back("action " + std::to_string(a.id) + " " + a.kind + " " + a.subject + " " + a.data_json + " " +
                  std::to_string(a.started_ms));
  }
  for (const BackupRecord& b : s.backups) out.push_back("backup " + Json(b).dump());
  return out;
}

inline BackupRecord sampleBackup(const std::string& vm, const std::string& id) {
  BackupRecord b;
  b.vm = vm;
  b.id = id;
  b.tier = "mysql";
  b.host = "h1";
  b.path = "/srv/backups/" + vm + "/" + id + ".qcow2 " + kQuotes;
  b.taken_ms = 1000;
  b.duration_ms = 120;
  b.bytes = 1441792;
  b.method = "backup-api";
  b.request = 2;
  return b;
}

// Fills a store with one of everything (odd characters included).
inline void fill(Store& store) {
  PolicyRecord p;
  p.applied_ms = 5;
  p.digest = "d1";
  p.files = {{"demo.yaml", "x: 1 # " + kUnicode}};
  auto v1 = store.insertPolicy(p);
  ASSERT_TRUE(v1.isOk()) << v1.status().toString();
  p.digest = "d2";
  auto v2 = store.insertPolicy(p);
  ASSERT_TRUE(v2.isOk());
  TierSpec apache = sampleTier("apache", kQuotes);
  apache.after = {"mysql"};
  ASSERT_TRUE(store.replaceTiers(*v2, {sampleTier("mysql", kInjection), apache}).isOk());
  ASSERT_TRUE(store.putHost(sampleHost("h1")).isOk());
  HostRecord unheard = sampleHost("h0");
  unheard.watchdog_ms = -1;  // never heard: carried as such
  ASSERT_TRUE(store.putHost(unheard).isOk());
  ASSERT_TRUE(store.putVm(sampleVm("apache-1")).isOk());
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(store.appendEvent(sampleEvent(i)).isOk());
  IncidentRecord open;
  open.subject = "host/h1";
  open.kind = "host.failed";
  open.opened_ms = 10;
  open.summary = kUnicode;
  open.steps = {{"detected", 11, "no heartbeat"}, {"fenced", 12, kQuotes}};
  ASSERT_TRUE(store.putIncident(open).isOk());
  IncidentRecord closed = open;
  closed.closed_ms = 20;
  closed.steps.clear();
  ASSERT_TRUE(store.putIncident(closed).isOk());
  ASSERT_TRUE(store.beginAction(ActionRecord{0, "migrate", "vm/apache-1", R"({"to":"h2"})", 7}).isOk());
  auto ended = store.beginAction(ActionRecord{0, "fence", "host/h1", "{}", 8});
  ASSERT_TRUE(ended.isOk());
  ASSERT_TRUE(store.endAction(*ended).isOk());
  ASSERT_TRUE(store.putBackup(sampleBackup("mysql-1", "20261206T180000Z-0000beef")).isOk());
}


// Pins: a new store is migrated to the newest schema this build
// knows.
TYPED_TEST_P(StoreContractTest, OpensAtLatestSchema) {
  EXPECT_GE(Store::latestSchemaVersion(), 1);
  EXPECT_EQ(this->store_->schemaVersion(), Store::latestSchemaVersion());
}

// Pins: an empty policy history has no policy in force (not an error).
TYPED_TEST_P(StoreContractTest, LatestPolicyOnEmptyIsNullopt) {
  auto latest = this->store_->latestPolicy();
  ASSERT_TRUE(latest.isOk()) << latest.status().toString();
  EXPECT_FALSE(latest->has_value());
}

// Pins: a policy comes back byte for byte, files in order, odd characters
// included.
TYPED_TEST_P(StoreContractTest, PolicyRoundTrip) {
  PolicyRecord in;
  in.version = 999;  // ignored: the store assigns versions
  in.applied_ms = 1234567;
  in.digest = "sha256:abc" + kQuotes;
  in.files = {{"demo.yaml", "tiers:\n  - name: apache # " + kUnicode + "\n"},
              {kInjection, kQuotes},
              {"empty.yaml", ""}};
  auto version = this->store_->insertPolicy(in);
  ASSERT_TRUE(version.isOk()) << version.status().toString();
  EXPECT_NE(*version, 999);

  auto latest = this->store_->latestPolicy();
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
TYPED_TEST_P(StoreContractTest, PolicyVersionsIncrease) {
  int64_t previous = 0;
  for (int i = 0; i < 3; ++i) {
    PolicyRecord p;
    p.applied_ms = i;
    p.digest = "d" + std::to_string(i);
    auto version = this->store_->insertPolicy(p);
    ASSERT_TRUE(version.isOk()) << version.status().toString();
    EXPECT_GT(*version, previous);
    previous = *version;
  }
  auto latest = this->store_->latestPolicy();
  ASSERT_TRUE(latest.isOk() && latest->has_value());
  EXPECT_EQ((*latest)->version, previous);
  EXPECT_EQ((*latest)->digest, "d2");
  EXPECT_TRUE((*latest)->files.empty());
}

// Pins: every host field survives storage; put replaces; list is sorted by
// name; delete removes.
TYPED_TEST_P(StoreContractTest, HostRoundTripReplaceAndDelete) {
  HostRecord b = sampleHost("h2");
  HostRecord a = sampleHost(kInjection);
  a.reason = kUnicode + kQuotes;
  a.state = HostState::kMaintenance;
  ASSERT_TRUE(this->store_->putHost(b).isOk());
  ASSERT_TRUE(this->store_->putHost(a).isOk());

  auto hosts = this->store_->hosts();
  ASSERT_TRUE(hosts.isOk()) << hosts.status().toString();
  ASSERT_EQ(hosts->size(), 2u);
  const HostRecord& got = (*hosts)[0];  // "'..." sorts before "h2"
  EXPECT_EQ(got.name, a.name);
  EXPECT_EQ(got.state, a.state);
  EXPECT_EQ(got.state_since_ms, a.state_since_ms);
  EXPECT_EQ(got.capacity.cpus, a.capacity.cpus);
  EXPECT_EQ(got.capacity.memory_mib, a.capacity.memory_mib);
  EXPECT_EQ(got.reason, a.reason);
  EXPECT_EQ(got.watchdog_ms, 2500);
  EXPECT_EQ((*hosts)[1].name, "h2");

  b.state = HostState::kFenced;
  b.reason = "lease expired";
  b.watchdog_ms = 0;  // heard: the agent arms no watchdog (not "never heard")
  ASSERT_TRUE(this->store_->putHost(b).isOk());
  ASSERT_TRUE(this->store_->deleteHost(a.name).isOk());
  hosts = this->store_->hosts();
  ASSERT_TRUE(hosts.isOk());
  ASSERT_EQ(hosts->size(), 1u);
  EXPECT_EQ((*hosts)[0].state, HostState::kFenced);
  EXPECT_EQ((*hosts)[0].reason, "lease expired");
  EXPECT_EQ((*hosts)[0].watchdog_ms, 0);
  HostRecord never = sampleHost("h3");
  never.watchdog_ms = -1;
  ASSERT_TRUE(this->store_->putHost(never).isOk());
  EXPECT_EQ(this->store_->hosts()->back().watchdog_ms, -1);
}

// Pins: every vm field survives storage, values are bound (an SQL-looking name
// is just a name), put replaces, delete removes only its row.
TYPED_TEST_P(StoreContractTest, VmRoundTripReplaceAndDelete) {
  VmRecord evil = sampleVm(kInjection);
  evil.reason = kQuotes + kUnicode;
  evil.host = "";  // not placed
  VmRecord plain = sampleVm("apache-1");
  ASSERT_TRUE(this->store_->putVm(plain).isOk());
  ASSERT_TRUE(this->store_->putVm(evil).isOk());

  auto vms = this->store_->vms();
  ASSERT_TRUE(vms.isOk()) << vms.status().toString();
  ASSERT_EQ(vms->size(), 2u);
  expectVmEq((*vms)[0], evil);
  expectVmEq((*vms)[1], plain);

  plain.epoch = 8;
  plain.state = VmState::kRunning;
  plain.health = Health::kHealthy;
  ASSERT_TRUE(this->store_->putVm(plain).isOk());
  ASSERT_TRUE(this->store_->deleteVm(evil.name).isOk());
  ASSERT_TRUE(this->store_->deleteVm("no-such-vm").isOk());
  vms = this->store_->vms();
  ASSERT_TRUE(vms.isOk());
  ASSERT_EQ(vms->size(), 1u);
  expectVmEq((*vms)[0], plain);
}

// Pins: every VmState and Health name is written and read back as the same
// enum.
TYPED_TEST_P(StoreContractTest, VmEveryStateRoundTrips) {
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
    ASSERT_TRUE(this->store_->putVm(vm).isOk());
    ++i;
  }
  auto vms = this->store_->vms();
  ASSERT_TRUE(vms.isOk()) << vms.status().toString();
  ASSERT_EQ(vms->size(), std::size(states));
  for (size_t j = 0; j < std::size(states); ++j) {
    EXPECT_EQ((*vms)[j].state, states[j]) << j;
    EXPECT_EQ((*vms)[j].health, healths[j % 3]) << j;
  }
}

// Pins: appendEvent assigns increasing ids and stores every field as given.
TYPED_TEST_P(StoreContractTest, AppendEventAssignsIdsAndRoundTrips) {
  EventRecord in = sampleEvent(1);
  in.id = 12345;  // ignored
  in.message = kInjection + kQuotes + kUnicode;
  auto first = this->store_->appendEvent(in);
  auto second = this->store_->appendEvent(sampleEvent(2));
  ASSERT_TRUE(first.isOk() && second.isOk());
  EXPECT_NE(first->id, 12345);
  EXPECT_GT(second->id, first->id);

  auto events = this->store_->eventsSince(0, 10);
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
TYPED_TEST_P(StoreContractTest, EventsSincePagesAndCounts) {
  auto empty = this->store_->eventCount();
  ASSERT_TRUE(empty.isOk());
  EXPECT_EQ(*empty, 0);

  std::vector<int64_t> ids;
  for (int i = 0; i < 7; ++i) {
    auto e = this->store_->appendEvent(sampleEvent(i));
    ASSERT_TRUE(e.isOk()) << e.status().toString();
    ids.push_back(e->id);
  }
  auto count = this->store_->eventCount();
  ASSERT_TRUE(count.isOk());
  EXPECT_EQ(*count, 7);

  std::vector<int64_t> seen;
  int64_t cursor = 0;
  int pages = 0;
  while (true) {
    auto page = this->store_->eventsSince(cursor, 3);
    ASSERT_TRUE(page.isOk()) << page.status().toString();
    if (page->empty()) break;
    EXPECT_LE(page->size(), 3u);
    for (const EventRecord& e : *page) seen.push_back(e.id);
    cursor = page->back().id;
    ASSERT_LT(++pages, 10);
  }
  EXPECT_EQ(pages, 3);  // 3 + 3 + 1
  EXPECT_EQ(seen, ids);

  auto tail = this->store_->eventsSince(ids[4], 100);
  ASSERT_TRUE(tail.isOk());
  ASSERT_EQ(tail->size(), 2u);
  EXPECT_EQ((*tail)[0].id, ids[5]);
  EXPECT_EQ((*tail)[0].subject, "vm/apache-5");
}

// Pins (issue #16, event retention): pruneEvents removes the oldest events,
// those older than the cut-off and those beyond the row cap, at most max_rows
// per call; ids go on growing (lastEventId) and paging still works; bad
// arguments are refused and change nothing.
TYPED_TEST_P(StoreContractTest, PruneEventsByAgeAndRows) {
  auto none = this->store_->lastEventId();
  ASSERT_TRUE(none.isOk()) << none.status().toString();
  EXPECT_EQ(*none, 0);
  std::vector<int64_t> ids;
  for (int i = 0; i < 10; ++i) {
    EventRecord e = sampleEvent(i);
    e.t_ms = 1000 * (i + 1);  // 1 s .. 10 s
    auto stored = this->store_->appendEvent(e);
    ASSERT_TRUE(stored.isOk()) << stored.status().toString();
    ids.push_back(stored->id);
  }
  EXPECT_EQ(this->store_->pruneEvents(0, -1, 10).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(this->store_->pruneEvents(0, 10, 0).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(*this->store_->eventCount(), 10);
  // Nothing older than 1 s, no more than 100 rows: nothing to do.
  auto removed = this->store_->pruneEvents(1000, 100, 100);
  ASSERT_TRUE(removed.isOk()) << removed.status().toString();
  EXPECT_EQ(*removed, 0);
  // Older than 4 s (1 s, 2 s, 3 s), but at most 2 this call.
  removed = this->store_->pruneEvents(4000, 100, 2);
  ASSERT_TRUE(removed.isOk()) << removed.status().toString();
  EXPECT_EQ(*removed, 2);
  removed = this->store_->pruneEvents(4000, 100, 100);
  ASSERT_TRUE(removed.isOk());
  EXPECT_EQ(*removed, 1);
  // At most 5 rows left: the oldest 2 of the 7 go.
  removed = this->store_->pruneEvents(0, 5, 100);
  ASSERT_TRUE(removed.isOk());
  EXPECT_EQ(*removed, 2);
  EXPECT_EQ(*this->store_->eventCount(), 5);
  auto left = this->store_->eventsSince(0, 100);
  ASSERT_TRUE(left.isOk());
  ASSERT_EQ(left->size(), 5u);
  EXPECT_EQ(left->front().id, ids[5]);
  EXPECT_EQ(*this->store_->lastEventId(), ids[9]);
  auto next = this->store_->appendEvent(sampleEvent(11));
  ASSERT_TRUE(next.isOk());
  EXPECT_GT(next->id, ids[9]);
  EXPECT_TRUE(this->store_->eventLogBytes().isOk());
}

// Pins: a non-positive limit is refused (SQLite would read a negative LIMIT as
// "all").
TYPED_TEST_P(StoreContractTest, EventsSinceRefusesNonPositiveLimit) {
  ASSERT_TRUE(this->store_->appendEvent(sampleEvent(1)).isOk());
  EXPECT_EQ(this->store_->eventsSince(0, 0).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(this->store_->eventsSince(0, -1).status().code(), Code::kInvalidArgument);
}

// Pins: writes made in a transaction whose body returns ok are all kept.
TYPED_TEST_P(StoreContractTest, TransactionCommits) {
  Status s = this->store_->transaction([&]() -> Status {
    TW_RETURN_IF_ERROR(this->store_->putVm(sampleVm("apache-1")));
    TW_RETURN_IF_ERROR(this->store_->putHost(sampleHost("h1")));
    return this->store_->appendEvent(sampleEvent(1)).status();
  });
  ASSERT_TRUE(s.isOk()) << s.toString();
  EXPECT_EQ(this->store_->vms()->size(), 1u);
  EXPECT_EQ(this->store_->hosts()->size(), 1u);
  EXPECT_EQ(*this->store_->eventCount(), 1);
}

// Pins: a failing body leaves nothing written, and its own status is returned.
TYPED_TEST_P(StoreContractTest, TransactionRollsBackOnFailure) {
  ASSERT_TRUE(this->store_->putVm(sampleVm("before")).isOk());
  Status s = this->store_->transaction([&]() -> Status {
    TW_RETURN_IF_ERROR(this->store_->putVm(sampleVm("apache-1")));
    TW_RETURN_IF_ERROR(this->store_->deleteVm("before"));
    TW_RETURN_IF_ERROR(this->store_->putHost(sampleHost("h1")));
    TW_RETURN_IF_ERROR(this->store_->appendEvent(sampleEvent(1)).status());
    PolicyRecord p;
    TW_RETURN_IF_ERROR(this->store_->insertPolicy(p).status());
    return notFound("tier 'ghost'");
  });
  EXPECT_EQ(s.code(), Code::kNotFound);
  EXPECT_EQ(s.message(), "tier 'ghost'");
  auto vms = this->store_->vms();
  ASSERT_TRUE(vms.isOk());
  ASSERT_EQ(vms->size(), 1u);
  EXPECT_EQ((*vms)[0].name, "before");
  EXPECT_TRUE(this->store_->hosts()->empty());
  EXPECT_EQ(*this->store_->eventCount(), 0);
  EXPECT_FALSE(this->store_->latestPolicy()->has_value());
  // The store is usable afterwards (no transaction left open).
  EXPECT_TRUE(this->store_->transaction([&] { return this->store_->putVm(sampleVm("after")); }).isOk());
  EXPECT_EQ(this->store_->vms()->size(), 2u);
}

// Pins (issue #16): a batch keeps every write of its body, whatever the body
// returns (a tick's writes, one transaction in SQLite); a transaction inside
// a batch still rolls back alone; reads inside see the batch's writes.
TYPED_TEST_P(StoreContractTest, BatchKeepsItsWrites) {
  Status inner;
  Status s = this->store_->batch([&]() -> Status {
    TW_RETURN_IF_ERROR(this->store_->putVm(sampleVm("apache-1")));
    TW_RETURN_IF_ERROR(this->store_->appendEvent(sampleEvent(1)).status());
    EXPECT_EQ(this->store_->vms()->size(), 1u);
    inner = this->store_->transaction([&]() -> Status {
      TW_RETURN_IF_ERROR(this->store_->putVm(sampleVm("apache-2")));
      return notFound("rolled back");
    });
    TW_RETURN_IF_ERROR(this->store_->putHost(sampleHost("h1")));
    return unavailable("the body's own error");
  });
  EXPECT_EQ(s.code(), Code::kUnavailable);
  EXPECT_EQ(inner.code(), Code::kNotFound);
  auto vms = this->store_->vms();
  ASSERT_TRUE(vms.isOk());
  ASSERT_EQ(vms->size(), 1u);
  EXPECT_EQ((*vms)[0].name, "apache-1");
  EXPECT_EQ(this->store_->hosts()->size(), 1u);
  EXPECT_EQ(*this->store_->eventCount(), 1);
  // An empty batch, and the store usable afterwards.
  EXPECT_TRUE(this->store_->batch([] { return Status::ok(); }).isOk());
  EXPECT_TRUE(this->store_->transaction([&] { return this->store_->putVm(sampleVm("after")); }).isOk());
  EXPECT_EQ(this->store_->vms()->size(), 2u);
}

// Pins: a nested transaction is refused with kFailedPrecondition, and the outer
// one rolls back when its body passes that error on.
TYPED_TEST_P(StoreContractTest, NestedTransactionRefused) {
  Status inner;
  Status outer = this->store_->transaction([&]() -> Status {
    TW_RETURN_IF_ERROR(this->store_->putVm(sampleVm("apache-1")));
    inner = this->store_->transaction([] { return Status::ok(); });
    return inner;
  });
  EXPECT_EQ(inner.code(), Code::kFailedPrecondition);
  EXPECT_EQ(outer.code(), Code::kFailedPrecondition);
  EXPECT_TRUE(this->store_->vms()->empty());
}

// Pins: replaceTiers for a policy version that does not exist is refused
// with kFailedPrecondition naming the version, and writes nothing.
TYPED_TEST_P(StoreContractTest, ReplaceTiersNeedsExistingPolicy) {
  Status s = this->store_->replaceTiers(42, {sampleTier("apache", "img")});
  EXPECT_EQ(s.code(), Code::kFailedPrecondition) << s.toString();
  EXPECT_NE(s.message().find("42"), std::string::npos) << s.message();
  auto snap = this->store_->exportState();
  ASSERT_TRUE(snap.isOk()) << snap.status().toString();
  EXPECT_TRUE(snap->tiers.empty());
}

// Pins: replaceTiers replaces the whole set in declaration order, and a
// failing replace (duplicate names) leaves the previous set in place, also
// inside a transaction that carries on and commits the rest.
TYPED_TEST_P(StoreContractTest, ReplaceTiersWholeOrNothing) {
  Store& store = *this->store_;
  auto v1 = store.insertPolicy(PolicyRecord{});
  ASSERT_TRUE(v1.isOk());
  ASSERT_TRUE(store.replaceTiers(*v1, {sampleTier("old", "x")}).isOk());
  ASSERT_TRUE(store.replaceTiers(*v1, {sampleTier("zeta", "z"), sampleTier("alpha", "a")}).isOk());
  Status dup = store.replaceTiers(*v1, {sampleTier("dup", "a"), sampleTier("dup", "b")});
  EXPECT_EQ(dup.code(), Code::kFailedPrecondition) << dup.toString();
  EXPECT_NE(dup.message().find("'dup'"), std::string::npos) << dup.message();
  Status inner;
  Status s = store.transaction([&]() -> Status {
    TW_RETURN_IF_ERROR(store.putVm(sampleVm("apache-1")));
    inner = store.replaceTiers(*v1, {sampleTier("dup", "a"), sampleTier("dup", "b")});
    return Status::ok();
  });
  ASSERT_TRUE(s.isOk()) << s.toString();
  EXPECT_EQ(inner.code(), Code::kFailedPrecondition);
  auto snap = store.exportState();
  ASSERT_TRUE(snap.isOk()) << snap.status().toString();
  ASSERT_EQ(snap->tiers.size(), 2u);
  EXPECT_EQ(snap->tiers[0].name, "zeta");
  EXPECT_EQ(snap->tiers[0].ord, 0);
  EXPECT_EQ(snap->tiers[1].name, "alpha");
  EXPECT_EQ(snap->vms.size(), 1u);
}

// Pins: reads inside a transaction see its own writes (a policy inserted,
// then its tiers; vms put and deleted; events appended).
TYPED_TEST_P(StoreContractTest, TransactionReadsItsOwnWrites) {
  Store& store = *this->store_;
  ASSERT_TRUE(store.putVm(sampleVm("old")).isOk());
  Status s = store.transaction([&]() -> Status {
    auto v = store.insertPolicy(PolicyRecord{});
    if (!v.isOk()) return v.status();
    TW_RETURN_IF_ERROR(store.replaceTiers(*v, {sampleTier("apache", "img")}));
    auto latest = store.latestPolicy();
    EXPECT_TRUE(latest.isOk() && latest->has_value() && (*latest)->version == *v);
    TW_RETURN_IF_ERROR(store.putVm(sampleVm("new")));
    TW_RETURN_IF_ERROR(store.deleteVm("old"));
    auto vms = store.vms();
    EXPECT_TRUE(vms.isOk() && vms->size() == 1 && (*vms)[0].name == "new");
    TW_RETURN_IF_ERROR(store.appendEvent(sampleEvent(1)).status());
    auto count = store.eventCount();
    EXPECT_TRUE(count.isOk() && *count == 1);
    auto events = store.eventsSince(0, 10);
    EXPECT_TRUE(events.isOk() && events->size() == 1);
    return Status::ok();
  });
  ASSERT_TRUE(s.isOk()) << s.toString();
  EXPECT_EQ(*store.eventCount(), 1);
}

// Pins: the policy commit listener hears a policy once it is committed: at
// once outside a transaction, after the commit inside one, never for a
// rolled-back one.
TYPED_TEST_P(StoreContractTest, PolicyListenerOnlyAfterCommit) {
  Store& store = *this->store_;
  std::vector<int64_t> heard;
  store.setPolicyCommitListener([&](int64_t v) { heard.push_back(v); });
  auto v1 = store.insertPolicy(PolicyRecord{});
  ASSERT_TRUE(v1.isOk());
  EXPECT_EQ(heard, std::vector<int64_t>{*v1});
  (void)store.transaction([&]() -> Status {
    (void)store.insertPolicy(PolicyRecord{});
    return notFound("rolled back");
  });
  EXPECT_EQ(heard.size(), 1u);
  int64_t v3 = 0;
  ASSERT_TRUE(store.transaction([&]() -> Status {
                     auto v = store.insertPolicy(PolicyRecord{});
                     if (!v.isOk()) return v.status();
                     v3 = *v;
                     EXPECT_EQ(heard.size(), 1u);  // not before the commit
                     return Status::ok();
                   }).isOk());
  EXPECT_EQ(heard, (std::vector<int64_t>{*v1, v3}));
}

// Pins: incidents() returns the open ones and the newest `recent` closed
// ones, oldest first; putIncident with an id replaces.
TYPED_TEST_P(StoreContractTest, IncidentsOpenAndRecent) {
  Store& store = *this->store_;
  std::vector<int64_t> ids;
  for (int i = 0; i < 5; ++i) {
    IncidentRecord r;
    r.subject = "vm/web-" + std::to_string(i);
    r.kind = "vm.crashed";
    r.closed_ms = i % 2 == 0 ? 100 + i : 0;  // 0, 2, 4 closed
    auto id = store.putIncident(r);
    ASSERT_TRUE(id.isOk()) << id.status().toString();
    ids.push_back(*id);
  }
  auto got = store.incidents(1);
  ASSERT_TRUE(got.isOk()) << got.status().toString();
  std::vector<int64_t> seen;
  for (const auto& r : *got) seen.push_back(r.id);
  EXPECT_EQ(seen, (std::vector<int64_t>{ids[1], ids[3], ids[4]}));
  IncidentRecord again = (*got)[0];
  again.closed_ms = 999;
  ASSERT_TRUE(store.putIncident(again).isOk());
  got = store.incidents(0);
  ASSERT_TRUE(got.isOk());
  ASSERT_EQ(got->size(), 1u);
  EXPECT_EQ((*got)[0].id, ids[3]);
}

// Pins: the action journal lists begun and not ended actions by id.
TYPED_TEST_P(StoreContractTest, ActionJournal) {
  Store& store = *this->store_;
  auto a = store.beginAction(ActionRecord{0, "migrate", "vm/web-1", R"({"to":"h2"})", 5});
  auto b = store.beginAction(ActionRecord{0, "fence", "host/h1", "{}", 6});
  ASSERT_TRUE(a.isOk() && b.isOk());
  EXPECT_GT(*b, *a);
  ASSERT_TRUE(store.endAction(*a).isOk());
  auto open = store.openActions();
  ASSERT_TRUE(open.isOk()) << open.status().toString();
  ASSERT_EQ(open->size(), 1u);
  EXPECT_EQ((*open)[0].id, *b);
  EXPECT_EQ((*open)[0].kind, "fence");
  EXPECT_EQ((*open)[0].data_json, "{}");
}

// Pins: the backup catalogue stores, replaces (same vm and id), lists one
// VM's or all by vm then id, and deletes (ok when absent); bad characters in
// names are data, not SQL or key syntax.
TYPED_TEST_P(StoreContractTest, BackupCatalogue) {
  Store& store = *this->store_;
  ASSERT_TRUE(store.putBackup(sampleBackup("web-1", "20261206T190000Z-00000002")).isOk());
  ASSERT_TRUE(store.putBackup(sampleBackup("db-1", "20261206T190000Z-00000003")).isOk());
  ASSERT_TRUE(store.putBackup(sampleBackup("db-1", "20261206T180000Z-00000001")).isOk());
  BackupRecord replaced = sampleBackup("db-1", "20261206T190000Z-00000003");
  replaced.bytes = 7;
  ASSERT_TRUE(store.putBackup(replaced).isOk());
  auto all = store.backups("");
  ASSERT_TRUE(all.isOk()) << all.status().toString();
  ASSERT_EQ(all->size(), 3u);
  EXPECT_EQ((*all)[0].id, "20261206T180000Z-00000001");
  EXPECT_EQ((*all)[1], replaced);
  EXPECT_EQ((*all)[2].vm, "web-1");
  auto db = store.backups("db-1");
  ASSERT_TRUE(db.isOk());
  EXPECT_EQ(db->size(), 2u);
  EXPECT_TRUE(store.backups(kInjection)->empty());
  ASSERT_TRUE(store.deleteBackup("db-1", "20261206T180000Z-00000001").isOk());
  ASSERT_TRUE(store.deleteBackup("db-1", "nope").isOk());
  EXPECT_EQ(store.backups("db-1")->size(), 1u);
}

// Pins: exportState + importState into a fresh store copy everything with
// every id, and later ids continue after the imported ones.
TYPED_TEST_P(StoreContractTest, ExportImportRoundTrip) {
  fill(*this->store_);
  auto snap = this->store_->exportState();
  ASSERT_TRUE(snap.isOk()) << snap.status().toString();
  EXPECT_EQ(snap->events.size(), 3u);
  EXPECT_EQ(snap->incidents.size(), 2u);
  EXPECT_EQ(snap->actions.size(), 1u);
  EXPECT_EQ(snap->backups.size(), 1u);
  std::unique_ptr<Store> copy = this->backend_.open();
  ASSERT_NE(copy, nullptr);
  Status s = copy->importState(*snap, false);
  ASSERT_TRUE(s.isOk()) << s.toString();
  auto again = copy->exportState();
  ASSERT_TRUE(again.isOk()) << again.status().toString();
  EXPECT_EQ(describe(*again), describe(*snap));
  auto e = copy->appendEvent(sampleEvent(9));
  ASSERT_TRUE(e.isOk());
  EXPECT_GT(e->id, snap->events.back().id);
  auto v = copy->insertPolicy(PolicyRecord{});
  ASSERT_TRUE(v.isOk());
  EXPECT_GT(*v, snap->policies.back().version);
  auto a = copy->beginAction(ActionRecord{0, "x", "y", "{}", 1});
  ASSERT_TRUE(a.isOk());
  EXPECT_GT(*a, snap->actions.back().id);
}

// Pins: importState refuses a store that holds anything unless asked to
// replace it, and then holds exactly the snapshot.
TYPED_TEST_P(StoreContractTest, ImportRefusesNonEmptyUnlessReplace) {
  std::unique_ptr<Store> source = this->backend_.open();
  ASSERT_NE(source, nullptr);
  fill(*source);
  auto snap = source->exportState();
  ASSERT_TRUE(snap.isOk());
  ASSERT_TRUE(this->store_->putVm(sampleVm("in-the-way")).isOk());
  Status s = this->store_->importState(*snap, false);
  EXPECT_EQ(s.code(), Code::kFailedPrecondition) << s.toString();
  EXPECT_NE(s.message().find("--force"), std::string::npos) << s.message();
  EXPECT_EQ(this->store_->vms()->size(), 1u);
  s = this->store_->importState(*snap, true);
  ASSERT_TRUE(s.isOk()) << s.toString();
  auto again = this->store_->exportState();
  ASSERT_TRUE(again.isOk());
  EXPECT_EQ(describe(*again), describe(*snap));
  StoreSnapshot older = *snap;
  older.schema_version = snap->schema_version + 1;
  EXPECT_EQ(this->store_->importState(older, true).code(), Code::kInvalidArgument);
}

// Pins: data and ids survive a close and re-open of the same store.
TYPED_TEST_P(StoreContractTest, ReopenKeepsDataAndIds) {
  fill(*this->store_);
  auto before = this->store_->exportState();
  ASSERT_TRUE(before.isOk());
  this->store_.reset();
  std::unique_ptr<Store> store = this->backend_.reopen();
  if (store == nullptr) GTEST_SKIP() << "this backend cannot re-open";
  EXPECT_EQ(store->schemaVersion(), Store::latestSchemaVersion());
  auto after = store->exportState();
  ASSERT_TRUE(after.isOk());
  EXPECT_EQ(describe(*after), describe(*before));
  auto e = store->appendEvent(sampleEvent(4));
  ASSERT_TRUE(e.isOk());
  EXPECT_GT(e->id, before->events.back().id);
}

REGISTER_TYPED_TEST_SUITE_P(StoreContractTest,
                            OpensAtLatestSchema,
                            LatestPolicyOnEmptyIsNullopt,
                            PolicyRoundTrip,
                            PolicyVersionsIncrease,
                            HostRoundTripReplaceAndDelete,
                            VmRoundTripReplaceAndDelete,
                            VmEveryStateRoundTrips,
                            AppendEventAssignsIdsAndRoundTrips,
                            EventsSincePagesAndCounts,
                            EventsSinceRefusesNonPositiveLimit,
                            PruneEventsByAgeAndRows,
                            TransactionCommits,
                            TransactionRollsBackOnFailure,
                            NestedTransactionRefused,
                            BatchKeepsItsWrites,
                            ReplaceTiersNeedsExistingPolicy,
                            ReplaceTiersWholeOrNothing,
                            TransactionReadsItsOwnWrites,
                            PolicyListenerOnlyAfterCommit,
                            IncidentsOpenAndRecent,
                            ActionJournal,
                            BackupCatalogue,
                            ExportImportRoundTrip,
                            ImportRefusesNonEmptyUnlessReplace,
                            ReopenKeepsDataAndIds);

}  // namespace store_contract
}  // namespace tw
