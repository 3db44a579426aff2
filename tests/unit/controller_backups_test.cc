// The controller's side of backups (controller/controller_backups.cc): the
// catalogue from agents' events, backup requests and restores in the
// assignments, refusals, and the tier's staleness warning. Hermetic: SQLite
// in a temp file (recover() is tested), manual clock, no threads.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <vector>

#include "controller/backup_book.h"
#include "controller/controller.h"
#include "controller_fixture.h"
#include "tw/store.h"

namespace tw {
namespace {

const char* kHosts = R"(
cluster:
  n_plus_one: warn
hosts:
  - name: h1
    uri: test:///default
  - name: h2
    uri: test:///default
)";

const char* kPolicy = R"(
tiers:
  - name: db
    image: tiny-db
    replicas: 1
    storage: { type: shared, path: /srv/tw/shared }
    backup: { every: 1h, keep: 3, to: /srv/tw/backups }
  - name: web
    image: tiny-web
    replicas: 1
)";

constexpr Millis kHour = 3600 * 1000;

class ControllerBackupsTest : public testing_controller::ControllerFixture {
 protected:
  ControllerBackupsTest() : ControllerFixture(1796580000000) {}

  void SetUp() override {
    char tmpl[] = "/tmp/tw-ctl-backups.XXXXXX";
    dir_ = mkdtemp(tmpl);
    ASSERT_NO_FATAL_FAILURE(open());
    ASSERT_TRUE(controller_->applyPolicy({PolicyFile{"hosts.yaml", kHosts}}, false).isOk());
    beatAll();
    auto r = controller_->applyPolicy({PolicyFile{"demo.yaml", kPolicy}}, false);
    ASSERT_TRUE(r.isOk()) << r.status().toString();
    settle();
    ASSERT_EQ(controller_->vm("db-1")->state, VmState::kRunning);
  }
  void TearDown() override {
    controller_.reset();
    store_.reset();
    std::filesystem::remove_all(dir_);
  }

  void open() { openController(dir_ + "/state.db"); }

  // A heartbeat reporting every assignment of `host` running, with `events`.
  AssignmentSet beat(const std::string& host, const std::vector<AgentEvent>& events = {}) {
    Heartbeat hb = testing_controller::runningHeartbeat(*controller_, host);
    hb.events = events;
    return answer(hb);
  }

  const Assignment* assignment(const std::string& vm) {
    const VmRecord* rec = controller_->vm(vm);
    if (rec == nullptr) return nullptr;
    last_set_ = controller_->assignmentsFor(rec->host);
    for (const Assignment& a : last_set_.assignments)
      if (a.vm == vm) return &a;
    return nullptr;
  }

  AgentEvent doneEvent(const std::string& id, int64_t request = 0,
                       std::vector<std::string> pruned = {}) {
    AgentEvent e;
    e.vm = "db-1";
    e.epoch = controller_->vm("db-1")->epoch;
    e.kind = "backup.done";
    e.message = "backup '" + id + "' of vm 'db-1' done";
    e.backup.id = id;
    e.backup.vm = "db-1";
    e.backup.tier = "db";
    e.backup.path = "/srv/tw/backups/db-1/" + id + ".qcow2";
    e.backup.taken_ms = clock_.nowMs();
    e.backup.duration_ms = 90;
    e.backup.bytes = 1441792;
    e.backup.method = "backup-api";
    e.backup.request = request;
    e.pruned = std::move(pruned);
    return e;
  }

  std::vector<std::string> eventKinds() {
    std::vector<std::string> out;
    auto j = controller_->eventsJson(0, 5000);
    for (const auto& e : (*j)["events"]) out.push_back(e["kind"].get<std::string>());
    return out;
  }

  std::string dir_;
  AssignmentSet last_set_;
};

// Pins: the tier's backup spec reaches the VM's assignment; a request puts
// backup_request into it until the agent answers it, and "backup.done"
// enters the catalogue (with the reporting host) and removes what it pruned.
TEST_F(ControllerBackupsTest, RequestAndCatalogue) {
  const Assignment* a = assignment("db-1");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->backup.to, "/srv/tw/backups");
  EXPECT_EQ(a->backup.keep, 3);
  EXPECT_EQ(a->backup_request, 0);
  const std::string host = controller_->vm("db-1")->host;
  ASSERT_TRUE(store_->putBackup(doneEvent("20261206T170000Z-00000001").backup).isOk());
  auto id = controller_->backupVm("db-1");
  ASSERT_TRUE(id.isOk()) << id.status().toString();
  EXPECT_EQ(assignment("db-1")->backup_request, *id);
  beat(host, {doneEvent("20261206T180000Z-0000beef", *id, {"20261206T170000Z-00000001"})});
  EXPECT_EQ(assignment("db-1")->backup_request, 0);
  auto list = controller_->backupsJson("db-1");
  ASSERT_TRUE(list.isOk());
  ASSERT_EQ((*list)["backups"].size(), 1u);
  EXPECT_EQ((*list)["backups"][0]["id"], "20261206T180000Z-0000beef");
  EXPECT_EQ((*list)["backups"][0]["host"], host);
  EXPECT_EQ((*list)["backups"][0]["bytes"], 1441792);
  const auto kinds = eventKinds();
  EXPECT_NE(std::find(kinds.begin(), kinds.end(), "backup.requested"), kinds.end());
  EXPECT_NE(std::find(kinds.begin(), kinds.end(), "backup.done"), kinds.end());
}

// Pins: a failure is an event (error level kept) and answers the request,
// and nothing enters the catalogue.
TEST_F(ControllerBackupsTest, FailureIsAnEvent) {
  auto id = controller_->backupVm("db-1");
  ASSERT_TRUE(id.isOk());
  AgentEvent e = doneEvent("20261206T180000Z-0000beef", *id);
  e.kind = "backup.failed";
  e.level = "error";
  e.message = "backup of vm 'db-1' failed: disk full";
  beat(controller_->vm("db-1")->host, {e});
  EXPECT_EQ(assignment("db-1")->backup_request, 0);
  EXPECT_TRUE((*controller_->backupsJson(""))["backups"].empty());
  auto j = controller_->eventsJson(0, 5000);
  bool seen = false;
  for (const auto& ev : (*j)["events"]) {
    if (ev["kind"] == "backup.failed") {
      seen = true;
      EXPECT_EQ(ev["level"], "error");
    }
  }
  EXPECT_TRUE(seen);
}

// Pins: what is refused and why; nothing changes then.
TEST_F(ControllerBackupsTest, Refusals) {
  EXPECT_EQ(controller_->backupVm("nope-1").status().code(), Code::kNotFound);
  Status s = controller_->backupVm("web-1").status();
  EXPECT_EQ(s.code(), Code::kFailedPrecondition);
  EXPECT_NE(s.message().find("has no backup"), std::string::npos) << s.message();
  EXPECT_EQ(controller_->restoreVm("db-1", "../../etc/passwd").status().code(),
            Code::kInvalidArgument);
  EXPECT_EQ(controller_->restoreVm("db-1", "20261206T180000Z-0000beef").status().code(),
            Code::kNotFound);
  EXPECT_EQ(controller_->backupsJson("nope-1").status().code(), Code::kNotFound);
  const int64_t epoch = controller_->vm("db-1")->epoch;
  // A migration under way: 409, and the VM keeps its epoch.
  beat(controller_->vm("db-1")->host, {doneEvent("20261206T180000Z-0000beef")});
  const std::string other = controller_->vm("db-1")->host == "h1" ? "h2" : "h1";
  ASSERT_TRUE(controller_->migrateVm("db-1", other).isOk());
  s = controller_->restoreVm("db-1", "20261206T180000Z-0000beef").status();
  EXPECT_EQ(s.code(), Code::kFailedPrecondition) << s.toString();
  EXPECT_NE(s.message().find("migrating"), std::string::npos) << s.message();
  EXPECT_EQ(controller_->vm("db-1")->epoch, epoch);
}

// Pins: a restore gives the VM a new epoch on the same host whose
// assignment names the backup file; once the VM runs at that epoch the
// restore is over ("backup.restored") and the assignment no longer names it.
TEST_F(ControllerBackupsTest, RestoreNewEpochThenDone) {
  const std::string host = controller_->vm("db-1")->host;
  beat(host, {doneEvent("20261206T180000Z-0000beef")});
  const int64_t epoch = controller_->vm("db-1")->epoch;
  auto r = controller_->restoreVm("db-1", "20261206T180000Z-0000beef");
  ASSERT_TRUE(r.isOk()) << r.status().toString();
  EXPECT_EQ(controller_->vm("db-1")->epoch, epoch + 1);
  EXPECT_EQ(controller_->vm("db-1")->host, host);
  const Assignment* a = assignment("db-1");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->restore_id, *r);
  EXPECT_EQ(a->restore_from, "/srv/tw/backups/db-1/20261206T180000Z-0000beef.qcow2");
  EXPECT_EQ(controller_->restoreVm("db-1", "20261206T180000Z-0000beef").status().code(),
            Code::kFailedPrecondition);  // one at a time
  settle();
  EXPECT_EQ(controller_->vm("db-1")->state, VmState::kRunning);
  EXPECT_EQ(assignment("db-1")->restore_id, 0);
  EXPECT_TRUE(assignment("db-1")->restore_from.empty());
  const auto kinds = eventKinds();
  EXPECT_NE(std::find(kinds.begin(), kinds.end(), "backup.restore_requested"), kinds.end());
  EXPECT_NE(std::find(kinds.begin(), kinds.end(), "backup.restored"), kinds.end());
}

// Pins: a tier whose newest good backup is older than 2 x every (or that has
// none 2 x every after the controller started) carries a warning in the
// tiers JSON; a fresh backup clears it; a restarted controller knows the
// catalogue.
TEST_F(ControllerBackupsTest, StalenessWarning) {
  auto warnings = [&]() -> Json {
    const Json tiers = controller_->tiersJson();  // kept: the loop reads into it
    for (const auto& t : tiers["tiers"])
      if (t["name"] == "db") return t.value("backup_warnings", Json::array());
    return Json();
  };
  EXPECT_TRUE(warnings().empty());
  clock_.advance(2 * kHour + 1000);
  ASSERT_EQ(warnings().size(), 1u) << controller_->tiersJson().dump();
  EXPECT_NE(warnings()[0].get<std::string>().find("has no good backup yet"), std::string::npos);
  const Json tiers = controller_->tiersJson();
  for (const auto& t : tiers["tiers"]) {
    if (t["name"] == "web") {
      EXPECT_FALSE(t.contains("backup_warnings"));
    }
  }
  beat(controller_->vm("db-1")->host, {doneEvent("20261206T200000Z-0000beef")});
  EXPECT_TRUE(warnings().empty());
  clock_.advance(2 * kHour + 60 * 1000);
  ASSERT_EQ(warnings().size(), 1u);
  EXPECT_NE(warnings()[0].get<std::string>().find("is 2h 1m old (every 1h 0m)"), std::string::npos)
      << warnings()[0];
  clock_.advance(-(kHour));
  open();  // the catalogue is loaded again
  EXPECT_TRUE(warnings().empty());
}

// Pins restoringVms(): the VMs with a restore under way, by name (what a
// tick walks instead of every VM, issue #16); a finished one is gone.
TEST(BackupBook, RestoringVmsInNameOrder) {
  BackupBook book;
  EXPECT_TRUE(book.restoringVms().empty());
  BackupRecord from;
  from.id = "b1";
  book.startRestore("web-2", 3, from);
  book.startRestore("db-1", 1, from);
  EXPECT_EQ(book.restoringVms(), (std::vector<std::string>{"db-1", "web-2"}));
  book.finishRestore("db-1");
  EXPECT_EQ(book.restoringVms(), std::vector<std::string>{"web-2"});
}

// Pins: coarse ages in messages.
TEST(BackupBook, CoarseAge) {
  EXPECT_EQ(coarseAge(17 * 1000), "17s");
  EXPECT_EQ(coarseAge(42 * 60 * 1000), "42m");
  EXPECT_EQ(coarseAge(kHour * 3 + 5 * 60 * 1000), "3h 5m");
  EXPECT_EQ(coarseAge(kHour * 50), "2d 2h");
}

}  // namespace
}  // namespace tw
