// The state dir against a bad disk: each kind of damage the outside probe
// produced, on real SQLite files in a temp dir; the lock; backups; restore.
//
// Damage is produced the way the probe did: state is written through a live
// Store, and the files are copied while that connection is still open and
// nothing was checkpointed (the WAL holds everything, as after kill -9), or,
// for damage in the main file, after a clean close (checkpointed). Then the
// copy is damaged and checked the way the controller's start checks it.
#include "controller/state_guard.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "tw/store.h"

namespace tw {
namespace {

namespace fs = std::filesystem;

constexpr int kEvents = 60;  // small enough that SQLite never auto-checkpoints

std::vector<std::vector<std::string>> rowsOf(const std::string& db, const std::string& sql) {
  auto rows = queryForTest(db, sql);
  EXPECT_TRUE(rows.isOk()) << rows.status().toString();
  return rows.isOk() ? *rows : std::vector<std::vector<std::string>>{};
}

void writeBytes(const std::string& path, int64_t offset, const std::string& bytes) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  ASSERT_TRUE(f) << path;
  f.seekp(offset);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string randomBytes(size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::string out(n, '\0');
  for (auto& c : out) c = static_cast<char>(rng() & 0xff);
  return out;
}

class StateGuardTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string templ = (fs::temp_directory_path() / "tw-state-guard-XXXXXX").string();
    ASSERT_NE(mkdtemp(templ.data()), nullptr);
    root_ = templ;
    live_ = std::make_unique<StatePaths>(root_ + "/live");
    copy_ = std::make_unique<StatePaths>(root_ + "/copy");
    fs::create_directories(live_->dir);
    fs::create_directories(copy_->dir);
  }
  void TearDown() override { fs::remove_all(root_); }

  // Two applies with VMs and events in between, through a Store wired to the
  // state dir as the controller's is (watchApplies; the backup worker is not
  // started: no thread, a request only sets its flag).
  std::unique_ptr<Store> writeState(const StatePaths& paths) {
    auto opened = Store::open(paths.db);
    EXPECT_TRUE(opened.isOk()) << opened.status().toString();
    std::unique_ptr<Store> store = std::move(opened).value();
    EXPECT_TRUE(watchApplies(*store, paths, DatabaseFacts{}, idle_backups_).isOk());
    std::ofstream(paths.dir + "/token") << "0123456789abcdef0123456789abcdef\n";
    for (int version = 1; version <= 2; ++version) {
      Status s = store->transaction([&]() -> Status {
        PolicyRecord record;
        record.applied_ms = version;
        record.digest = "digest-" + std::to_string(version);
        record.files = {PolicyFile{"demo.yaml", "tiers: []  # v" + std::to_string(version)}};
        auto inserted = store->insertPolicy(record);
        if (!inserted.isOk()) return inserted.status();
        VmRecord vm;
        vm.name = "apache-" + std::to_string(version);
        vm.tier = "apache";
        vm.ordinal = version;
        return store->putVm(vm);
      });
      EXPECT_TRUE(s.isOk()) << s.toString();
      for (int i = 0; i < kEvents; ++i) {
        EventRecord e;
        e.t_ms = i;
        e.level = "info";
        e.kind = "vm.placed";
        e.subject = "vm/apache-" + std::to_string(i % 7);
        e.message = "event " + std::to_string(i) + " " + std::string(200, 'x');
        EXPECT_TRUE(store->appendEvent(e).isOk());
      }
    }
    return store;
  }

  // What kill -9 leaves: the files as they are while the connection is open.
  void copyLiveFiles() {
    fs::copy_file(live_->db, copy_->db, fs::copy_options::overwrite_existing);
    if (fs::exists(live_->db + "-wal"))
      fs::copy_file(live_->db + "-wal", copy_->db + "-wal", fs::copy_options::overwrite_existing);
    if (fs::exists(live_->db + "-shm"))
      fs::copy_file(live_->db + "-shm", copy_->db + "-shm", fs::copy_options::overwrite_existing);
    fs::copy_file(live_->marker, copy_->marker, fs::copy_options::overwrite_existing);
    fs::copy_file(live_->dir + "/token", copy_->dir + "/token", fs::copy_options::overwrite_existing);
  }

  std::string root_;
  BackupWorker idle_backups_{StatePaths("/nonexistent"), std::chrono::milliseconds(0), 1};
  std::unique_ptr<StatePaths> live_;
  std::unique_ptr<StatePaths> copy_;
};

// The (page) root of a table or index, from a checkpointed copy.
int64_t rootPage(const std::string& db, const std::string& name) {
  auto rows = rowsOf(db, "SELECT rootpage FROM sqlite_master WHERE name = '" + name + "'");
  return rows.empty() ? 0 : std::stoll(rows[0][0]);
}

struct DamageCase {
  const char* name;
  bool checkpointed;  // damage the main file of a cleanly closed database
  std::function<void(const StatePaths&)> damage;
  bool refused;             // the start is refused ...
  const char* message_has;  // ... with a message containing this
};

// Pins: every damage kind the probe produced either refuses the start with a
// one-line message naming the file and the restore command, or (where SQLite
// recovers every committed transaction) starts with all the data.
TEST_F(StateGuardTest, EachDamageRefusesOrLosesNothing) {
  const int64_t kPage = 4096;
  const DamageCase cases[] = {
      {"deleted WAL", false, [](const StatePaths& p) { fs::remove(p.db + "-wal"); }, true,
       "holds no policy"},
      {"half a WAL", false,
       [](const StatePaths& p) { fs::resize_file(p.db + "-wal", fs::file_size(p.db + "-wal") / 2); },
       true, "cut short"},
      {"WAL cut at a frame boundary before the last apply", false,
       [](const StatePaths& p) {
         // 32-byte header + frames of 24 + 4096 bytes; keep the first third.
         auto frames = (fs::file_size(p.db + "-wal") - 32) / 4120;
         fs::resize_file(p.db + "-wal", 32 + frames / 3 * 4120);
       },
       true, "recent state is missing"},
      {"256 random bytes in the middle of the WAL", false,
       [](const StatePaths& p) {
         writeBytes(p.db + "-wal", static_cast<int64_t>(fs::file_size(p.db + "-wal") / 2),
                    randomBytes(256, 1));
       },
       true, "committed transactions after it"},
      {"256 random bytes over the WAL header", false,
       [](const StatePaths& p) { writeBytes(p.db + "-wal", 0, randomBytes(256, 2)); }, true,
       "header of its WAL"},
      {"0-byte database, no WAL", false,
       [](const StatePaths& p) {
         fs::resize_file(p.db, 0);
         fs::remove(p.db + "-wal");
       },
       true, "holds no policy"},
      {"0-byte database, no WAL, no marker (token only)", false,
       [](const StatePaths& p) {
         fs::resize_file(p.db, 0);
         fs::remove(p.db + "-wal");
         fs::remove(p.marker);
       },
       true, "token file of an earlier start"},
      {"deleted database and WAL, token only", false,
       [](const StatePaths& p) {
         fs::remove(p.db);
         fs::remove(p.db + "-wal");
         fs::remove(p.marker);
       },
       true, "is missing although"},
      // SQLite deletes the WAL of a 0-byte database on open, even read-only:
      // refused before anything opens it, so the WAL is still there to save.
      {"0-byte database, WAL intact", false, [](const StatePaths& p) { fs::resize_file(p.db, 0); },
       true, "0 bytes but its WAL holds"},
      // The -shm is only an index of the WAL: SQLite rebuilds it. Lossless.
      {"deleted -shm", false, [](const StatePaths& p) { fs::remove(p.db + "-shm"); }, false, ""},
      // Index entries that no longer match their rows pass quick_check; the
      // rows are intact, so the start rebuilds the indexes (REINDEX): lossless.
      {"index entries out of step with the rows (passes quick_check)", true,
       [kPage](const StatePaths& p) {
         int64_t root = rootPage(p.db, "events_by_subject");
         ASSERT_GT(root, 1);
         std::string byte(1, '\0');
         {
           std::ifstream in(p.db, std::ios::binary);
           in.seekg((root - 1) * kPage + kPage - 20);
           in.read(byte.data(), 1);
         }
         byte[0] = static_cast<char>(byte[0] ^ 0x01);
         writeBytes(p.db, (root - 1) * kPage + kPage - 20, byte);
       },
       false, ""},
      {"damaged index page (events_by_subject)", true,
       [kPage](const StatePaths& p) {
         int64_t root = rootPage(p.db, "events_by_subject");
         ASSERT_GT(root, 1);
         writeBytes(p.db, (root - 1) * kPage, randomBytes(256, 3));
       },
       true, "integrity_check"},
      {"damaged sequence page (sqlite_sequence)", true,
       [kPage](const StatePaths& p) {
         int64_t root = rootPage(p.db, "sqlite_sequence");
         ASSERT_GT(root, 1);
         writeBytes(p.db, (root - 1) * kPage, randomBytes(256, 4));
       },
       true, "damaged"},
      {"corrupt events page", true,
       [kPage](const StatePaths& p) {
         int64_t root = rootPage(p.db, "events");
         ASSERT_GT(root, 1);
         writeBytes(p.db, (root - 1) * kPage, randomBytes(256, 5));
       },
       true, "damaged"},
  };
  for (const DamageCase& c : cases) {
    SCOPED_TRACE(c.name);
    fs::remove_all(live_->dir);
    fs::remove_all(copy_->dir);
    fs::create_directories(live_->dir);
    fs::create_directories(copy_->dir);
    {
      std::unique_ptr<Store> store = writeState(*live_);
      ASSERT_NE(store, nullptr);
      if (!c.checkpointed) copyLiveFiles();
    }  // closed: checkpointed, WAL removed
    if (c.checkpointed) copyLiveFiles();
    // The undamaged copy passes and holds everything.
    auto before = checkStateBeforeStart(*copy_, true);
    ASSERT_TRUE(before.isOk()) << before.status().toString();
    EXPECT_EQ(before->policy_version, 2);
    EXPECT_EQ(before->event_count, 2 * kEvents);

    c.damage(*copy_);
    const std::string wal = copy_->db + "-wal";
    const auto wal_bytes = fs::exists(wal) ? static_cast<int64_t>(fs::file_size(wal)) : -1;
    auto after = checkStateBeforeStart(*copy_, true);
    // The check itself destroys nothing (a read-only open may leave an empty WAL).
    if (wal_bytes >= 0) {
      EXPECT_EQ(fs::exists(wal) ? static_cast<int64_t>(fs::file_size(wal)) : -1, wal_bytes);
    }
    if (c.refused) {
      ASSERT_FALSE(after.isOk()) << "started on damaged state";
      const std::string message = after.status().message();
      EXPECT_EQ(after.status().code(), Code::kFailedPrecondition);
      EXPECT_NE(message.find(c.message_has), std::string::npos) << message;
      EXPECT_NE(message.find("refusing to start"), std::string::npos) << message;
      EXPECT_NE(message.find("restore-state --from"), std::string::npos) << message;
      EXPECT_EQ(message.find('\n'), std::string::npos) << "one line: " << message;
    } else {
      ASSERT_TRUE(after.isOk()) << after.status().toString();
      EXPECT_EQ(after->policy_version, 2);
      EXPECT_EQ(after->event_count, 2 * kEvents);
      auto store = Store::open(copy_->db);
      ASSERT_TRUE(store.isOk()) << store.status().toString();
      auto vms = (*store)->vms();
      ASSERT_TRUE(vms.isOk());
      EXPECT_EQ(vms->size(), 2u);
      EXPECT_EQ(rowsOf(copy_->db, "PRAGMA integrity_check"),
                (std::vector<std::vector<std::string>>{{"ok"}}));
    }
  }
}

// Pins: a first start (no token, no marker, no database) is allowed, and so is
// a restart of a controller that never applied anything (token, schema, no
// policy): only an earlier life the database lost refuses.
TEST_F(StateGuardTest, FreshStateDirsStart) {
  auto first = checkStateBeforeStart(*live_, false);
  ASSERT_TRUE(first.isOk()) << first.status().toString();
  EXPECT_FALSE(first->exists);
  { ASSERT_TRUE(Store::open(live_->db).isOk()); }
  auto again = checkStateBeforeStart(*live_, true);
  ASSERT_TRUE(again.isOk()) << again.status().toString();
  EXPECT_EQ(again->policy_version, 0);
}

// Pins: a torn last frame (a write cut by kill -9, nothing committed after it)
// is what SQLite is built to survive: the start goes on with every commit.
TEST_F(StateGuardTest, TornLastFrameOfAnUnfinishedWriteIsFine) {
  std::unique_ptr<Store> store = writeState(*live_);
  copyLiveFiles();
  // Append a frame header with the WAL's salts but a bad checksum and no commit mark.
  std::string wal_path = copy_->db + "-wal";
  std::string header(32, '\0');
  {
    std::ifstream in(wal_path, std::ios::binary);
    in.read(header.data(), 32);
  }
  std::string frame(24 + 4096, '\0');
  frame[3] = 2;                              // page 2
  frame.replace(8, 8, header.substr(16, 8));  // salts
  std::ofstream(wal_path, std::ios::binary | std::ios::app).write(frame.data(), frame.size());
  auto facts = checkStateBeforeStart(*copy_, true);
  ASSERT_TRUE(facts.isOk()) << facts.status().toString();
  EXPECT_EQ(facts->policy_version, 2);
  EXPECT_EQ(facts->event_count, 2 * kEvents);
}

// Pins: the state dir lock is exclusive, names the holder's pid, and is free
// again once the holder lets go.
TEST_F(StateGuardTest, LockIsExclusive) {
  auto first = StateDirLock::acquire(*live_);
  ASSERT_TRUE(first.isOk()) << first.status().toString();
  auto second = StateDirLock::acquire(*live_);
  ASSERT_FALSE(second.isOk());
  EXPECT_EQ(second.status().code(), Code::kFailedPrecondition);
  EXPECT_NE(second.status().message().find("pid " + std::to_string(::getpid())), std::string::npos)
      << second.status().message();
  first->reset();
  EXPECT_TRUE(StateDirLock::acquire(*live_).isOk());
}

// Pins: a backup of a live database (connection open, WAL unchecked-pointed)
// holds every committed row, passes quick_check, is one file (no -wal), and
// only the newest `keep` remain.
TEST_F(StateGuardTest, BackupsAreCompleteCheckedAndRotated) {
  std::unique_ptr<Store> store = writeState(*live_);
  for (int i = 0; i < 4; ++i) {
    auto info = backupNow(*live_, "20260101T00000" + std::to_string(i) + ".000Z", 3);
    ASSERT_TRUE(info.isOk()) << info.status().toString();
    EXPECT_EQ(info->policy_version, 2);
    EXPECT_FALSE(fs::exists(info->path + "-wal"));
  }
  std::vector<std::string> backups = listBackups(*live_);
  ASSERT_EQ(backups.size(), 3u);
  EXPECT_NE(backups.front().find("20260101T000003.000Z-v2"), std::string::npos) << backups.front();
  auto facts = inspectDatabase(backups.front());
  ASSERT_TRUE(facts.isOk()) << facts.status().toString();
  EXPECT_EQ(facts->event_count, 2 * kEvents);
  for (const auto& entry : fs::directory_iterator(live_->backups))
    EXPECT_EQ(entry.path().string().find(".tmp"), std::string::npos) << entry.path();
}

// Pins: restore-state installs a checked backup over a damaged database,
// moves the damaged files aside (kept), sets applied-once, and the start is
// then allowed with the backup's data.
TEST_F(StateGuardTest, RestoreReplacesDamagedState) {
  {
    std::unique_ptr<Store> store = writeState(*live_);
    ASSERT_TRUE(backupNow(*live_, "20260101T000000.000Z", 10).isOk());
    copyLiveFiles();
  }
  fs::remove(copy_->db + "-wal");  // damage: the start refuses
  ASSERT_FALSE(checkStateBeforeStart(*copy_, true).isOk());
  std::string backup = listBackups(*live_).front();
  auto restored = restoreState(*copy_, backup, "20260101T010000.000Z");
  ASSERT_TRUE(restored.isOk()) << restored.status().toString();
  EXPECT_NE(restored->find("policy version 2"), std::string::npos) << *restored;
  EXPECT_TRUE(fs::exists(copy_->dir + "/damaged-20260101T010000.000Z/tierwarden.db"));
  auto facts = checkStateBeforeStart(*copy_, true);
  ASSERT_TRUE(facts.isOk()) << facts.status().toString();
  EXPECT_EQ(facts->policy_version, 2);
  EXPECT_EQ(facts->event_count, 2 * kEvents);
  EXPECT_EQ(*readAppliedMarker(*copy_), 2);
}

// Pins: restore-state refuses a file that is not a good database, and a state
// dir whose lock a running controller holds; neither touches the state dir.
TEST_F(StateGuardTest, RestoreRefusesBadBackupAndRunningController) {
  {
    std::unique_ptr<Store> store = writeState(*live_);
    ASSERT_TRUE(backupNow(*live_, "20260101T000000.000Z", 10).isOk());
  }
  std::string junk = root_ + "/junk.db";
  std::ofstream(junk) << randomBytes(8192, 9);
  auto bad = restoreState(*copy_, junk, "x");
  ASSERT_FALSE(bad.isOk());
  EXPECT_EQ(bad.status().code(), Code::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("junk.db"), std::string::npos) << bad.status().message();
  auto missing = restoreState(*copy_, root_ + "/nope.db", "x");
  ASSERT_FALSE(missing.isOk());
  EXPECT_EQ(missing.status().code(), Code::kInvalidArgument);

  auto held = StateDirLock::acquire(*copy_);
  ASSERT_TRUE(held.isOk());
  auto refused = restoreState(*copy_, listBackups(*live_).front(), "x");
  ASSERT_FALSE(refused.isOk());
  EXPECT_EQ(refused.status().code(), Code::kFailedPrecondition);
  EXPECT_NE(refused.status().message().find("in use"), std::string::npos);
  EXPECT_FALSE(fs::exists(copy_->db));
}

// Pins: the policy listener fires after COMMIT only: a rolled-back apply
// leaves applied-once as it was.
TEST_F(StateGuardTest, MarkerFollowsCommitsOnly) {
  std::unique_ptr<Store> store = writeState(*live_);
  ASSERT_EQ(*readAppliedMarker(*live_), 2);
  Status s = store->transaction([&]() -> Status {
    PolicyRecord record;
    record.digest = "rolled back";
    auto inserted = store->insertPolicy(record);
    if (!inserted.isOk()) return inserted.status();
    return failedPrecondition("no");
  });
  EXPECT_FALSE(s.isOk());
  EXPECT_EQ(*readAppliedMarker(*live_), 2);
}

// Pins: a state dir from before applied-once gets the marker at its first
// start from the policy version its database holds.
TEST_F(StateGuardTest, MarkerIsBackfilledFromTheDatabase) {
  auto opened = Store::open(live_->db);
  ASSERT_TRUE(opened.isOk());
  DatabaseFacts facts;
  facts.policy_version = 5;
  ASSERT_TRUE(watchApplies(**opened, *live_, facts, idle_backups_).isOk());
  EXPECT_EQ(*readAppliedMarker(*live_), 5);
}

}  // namespace
}  // namespace tw
