// BackupRunner (agent/backup_runner.h): when a VM's backup is due, how one is
// taken and pruned, what is reported. FakeHypervisor, ManualClock, and a temp
// directory standing in for the DR place (the runner's job is files).
#include "agent/backup_runner.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "tw/fake_hypervisor.h"

namespace tw {
namespace {

constexpr Millis kHour = 3600 * 1000;
// 2026-12-06T18:00:00Z
constexpr Millis kStart = 1796580000000;

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/tw-backup-test.XXXXXX";
    path_ = mkdtemp(tmpl);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

Assignment dbAssignment(const std::string& to, int keep = 2) {
  Assignment a;
  a.vm = "db-1";
  a.tier = "db";
  a.epoch = 3;
  a.storage.kind = StorageKind::kShared;
  a.backup.every_ms = kHour;
  a.backup.keep = keep;
  a.backup.to = to;
  return a;
}

class BackupRunnerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    clock_.set(kStart);
    DomainSpec spec;
    spec.meta.vm = "db-1";
    spec.meta.tier = "db";
    spec.meta.epoch = 3;
    disk_ = dir_.path() + "/db-1.qcow2";
    std::ofstream(disk_) << "row 42\n";
    spec.disk_path = disk_;
    ASSERT_TRUE(hv_.define(spec).isOk());
    ASSERT_TRUE(hv_.start("db-1").isOk());
    to_ = dir_.path() + "/backups";
    std::filesystem::create_directory(to_);
  }

  // due() then run() then finished(), as the daemon's loop and worker do.
  std::vector<AgentEvent> step(BackupRunner& runner, const Assignment& a) {
    std::vector<AgentEvent> events;
    for (BackupJob& job : runner.due({a}, BackupRunner::newestBackupMs)) {
      events.push_back(runner.finished(BackupRunner::run(hv_, clock_, std::move(job))));
    }
    return events;
  }

  ManualClock clock_;
  FakeHypervisor hv_;
  TempDir dir_;
  std::string disk_;
  std::string to_;
};

// Pins: the first sight of a VM with no backup yet takes one at once; the
// file is <to>/<vm>/<UTC stamp>-<8 hex>.qcow2 holding the disk's bytes, and
// "backup.done" carries the record (size, method, path).
TEST_F(BackupRunnerTest, FirstBackupAtOnceWithItsRecord) {
  BackupRunner runner(clock_, "h1");
  std::vector<AgentEvent> ev = step(runner, dbAssignment(to_));
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].kind, "backup.done");
  EXPECT_EQ(ev[0].vm, "db-1");
  EXPECT_EQ(ev[0].epoch, 3);
  const BackupRecord& r = ev[0].backup;
  EXPECT_EQ(r.id.substr(0, 17), "20261206T180000Z-");
  EXPECT_EQ(r.id.size(), 25u);
  EXPECT_EQ(r.path, to_ + "/db-1/" + r.id + ".qcow2");
  EXPECT_EQ(r.host, "h1");
  EXPECT_EQ(r.tier, "db");
  EXPECT_EQ(r.bytes, 7);
  EXPECT_EQ(r.method, "backup-api");
  EXPECT_EQ(r.taken_ms, kStart);
  std::ifstream in(r.path);
  std::string line;
  std::getline(in, line);
  EXPECT_EQ(line, "row 42");
  EXPECT_FALSE(std::filesystem::exists(r.path + ".part"));
  EXPECT_EQ(runner.inFlight(), 0u);
}

// Pins: the schedule counts from the newest file in the VM's directory (also
// one another host wrote), so nothing is due before `every`; then one is.
TEST_F(BackupRunnerTest, ScheduleCountsFromTheNewestFile) {
  std::filesystem::create_directories(to_ + "/db-1");
  std::ofstream(to_ + "/db-1/20261206T173000Z-0000beef.qcow2") << "x";
  BackupRunner runner(clock_, "h2");
  EXPECT_TRUE(step(runner, dbAssignment(to_)).empty());  // taken 30 min ago
  clock_.advance(29 * 60 * 1000);
  EXPECT_TRUE(step(runner, dbAssignment(to_)).empty());
  clock_.advance(60 * 1000);
  ASSERT_EQ(step(runner, dbAssignment(to_)).size(), 1u);
  EXPECT_TRUE(step(runner, dbAssignment(to_)).empty());  // just done
}

// Pins: a request (backup_request) takes one at once, once per request id,
// and the record names the request; a VM without backup spec is never due.
TEST_F(BackupRunnerTest, RequestTakesOneOnce) {
  BackupRunner runner(clock_, "h1");
  ASSERT_EQ(step(runner, dbAssignment(to_)).size(), 1u);
  Assignment a = dbAssignment(to_);
  a.backup_request = 7;
  clock_.advance(1000);
  std::vector<AgentEvent> ev = step(runner, a);
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].backup.request, 7);
  EXPECT_TRUE(step(runner, a).empty());
  Assignment none = a;
  none.backup = BackupSpec{};
  none.backup_request = 8;
  EXPECT_TRUE(step(runner, none).empty());
}

// Pins: beyond `keep` the oldest backups go, and "backup.done" names them.
TEST_F(BackupRunnerTest, PrunesBeyondKeep) {
  BackupRunner runner(clock_, "h1");
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) {
    std::vector<AgentEvent> ev = step(runner, dbAssignment(to_, 2));
    ASSERT_EQ(ev.size(), 1u) << i;
    ids.push_back(ev[0].backup.id);
    if (i < 2) {
      EXPECT_TRUE(ev[0].pruned.empty());
    } else {
      EXPECT_EQ(ev[0].pruned, std::vector<std::string>{ids[0]});
    }
    clock_.advance(kHour);
  }
  EXPECT_EQ(BackupRunner::listBackups(to_ + "/db-1"),
            (std::vector<std::string>{ids[1], ids[2]}));
}

// Pins: a failure is "backup.failed" (error level, the reason, no file left)
// and is tried again only after kRetryMs, or at once for a new request.
TEST_F(BackupRunnerTest, FailureIsReportedAndRetriedLater) {
  BackupRunner runner(clock_, "h1");
  hv_.failBackups(1);
  std::vector<AgentEvent> ev = step(runner, dbAssignment(to_));
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].kind, "backup.failed");
  EXPECT_EQ(ev[0].level, "error");
  EXPECT_NE(ev[0].backup.error.find("injected failure"), std::string::npos);
  EXPECT_TRUE(BackupRunner::listBackups(to_ + "/db-1").empty());
  EXPECT_TRUE(std::filesystem::is_empty(to_ + "/db-1"));
  clock_.advance(BackupRunner::kRetryMs - 1);
  EXPECT_TRUE(step(runner, dbAssignment(to_)).empty());
  clock_.advance(1);
  ev = step(runner, dbAssignment(to_));
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].kind, "backup.done");
}

// Pins: a DR place that is missing on this host fails the backup with a
// message saying so (the VM is not touched), and checkTarget says why.
TEST_F(BackupRunnerTest, MissingTargetFails) {
  BackupRunner runner(clock_, "h1");
  std::vector<AgentEvent> ev = step(runner, dbAssignment(dir_.path() + "/nowhere"));
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].kind, "backup.failed");
  EXPECT_NE(ev[0].message.find("is no directory on this host"), std::string::npos)
      << ev[0].message;
  EXPECT_EQ(hv_.backupCount(), 0);
  EXPECT_EQ(BackupRunner::checkTarget("relative").code(), Code::kFailedPrecondition);
  EXPECT_TRUE(BackupRunner::checkTarget(to_).isOk());
}

// Pins: one backup per VM at a time: a job handed out is not handed out
// again before finished() hears of it.
TEST_F(BackupRunnerTest, OneAtATimePerVm) {
  BackupRunner runner(clock_, "h1");
  std::vector<BackupJob> jobs = runner.due({dbAssignment(to_)}, BackupRunner::newestBackupMs);
  ASSERT_EQ(jobs.size(), 1u);
  Assignment asked = dbAssignment(to_);
  asked.backup_request = 1;
  EXPECT_TRUE(runner.due({asked}, BackupRunner::newestBackupMs).empty());
  EXPECT_EQ(runner.inFlight(), 1u);
  runner.finished(BackupRunner::run(hv_, clock_, jobs[0]));
  EXPECT_EQ(runner.due({asked}, BackupRunner::newestBackupMs).size(), 1u);
}

// Pins: stamps are UTC and read back; malformed ids are not backups.
TEST(BackupStamp, RoundTrip) {
  EXPECT_EQ(BackupRunner::stamp(kStart), "20261206T180000Z");
  EXPECT_EQ(BackupRunner::parseStamp("20261206T180000Z-abcdef01"), kStart);
  EXPECT_FALSE(BackupRunner::parseStamp("db-1.qcow2").has_value());
  EXPECT_FALSE(BackupRunner::parseStamp("2026-12-06T18:00").has_value());
}

}  // namespace
}  // namespace tw
