#include "controller/state_guard.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "tw/log.h"
#include "tw/text.h"

namespace tw {

namespace fs = std::filesystem;

namespace {

constexpr const char* kBackupPrefix = "tierwarden-";
constexpr const char* kBackupSuffix = ".db";


Status syncFile(const std::string& path, bool directory) {
  int fd = ::open(path.c_str(), (directory ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC);
  if (fd < 0) return unavailable("opening " + singleQuoted(path) + ": " + std::strerror(errno));
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  if (rc != 0) return unavailable("fsync of " + singleQuoted(path) + ": " + std::strerror(err));
  return Status::ok();
}

Status copyFileSynced(const std::string& from, const std::string& to) {
  std::error_code ec;
  fs::copy_file(from, to, fs::copy_options::overwrite_existing, ec);
  if (ec) return unavailable("copying " + singleQuoted(from) + " to " + singleQuoted(to) + ": " + ec.message());
  return syncFile(to, false);
}

// What the operator does next, with the newest backup named when there is one.
std::string whatToDo(const StatePaths& paths) {
  std::vector<std::string> backups = listBackups(paths);
  std::string restore = "tierwarden-controller restore-state --from " +
                        (backups.empty() ? std::string("BACKUP") : backups.front()) +
                        " --state-dir " + paths.dir;
  std::string where = backups.empty()
                          ? " (no backup in " + paths.backups + "; use a copy of your own)"
                          : "";
  return "restore a backup: " + restore + where +
         ", or remove the state dir to start empty on purpose";
}

}  // namespace

Status writeFileAtomically(const std::string& path, const std::string& content) {
  const std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return unavailable("creating " + singleQuoted(tmp) + ": " + std::strerror(errno));
  bool ok = ::write(fd, content.data(), content.size()) == static_cast<ssize_t>(content.size()) &&
            ::fsync(fd) == 0;
  int err = errno;
  ::close(fd);
  if (!ok) {
    ::unlink(tmp.c_str());
    return unavailable("writing " + singleQuoted(tmp) + ": " + std::strerror(err));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    err = errno;
    ::unlink(tmp.c_str());
    return unavailable("renaming " + singleQuoted(tmp) + ": " + std::strerror(err));
  }
  return syncFile(fs::path(path).parent_path().string(), true);
}


StatePaths::StatePaths(std::string state_dir)
    : dir(std::move(state_dir)),
      db(dir + "/tierwarden.db"),
      lock(dir + "/lock"),
      marker(dir + "/applied-once"),
      backups(dir + "/backups") {}

// ------------------------------------------------------------------ lock ---

Result<std::unique_ptr<StateDirLock>> StateDirLock::acquire(const StatePaths& paths) {
  int fd = ::open(paths.lock.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return unavailable("opening lock file " + singleQuoted(paths.lock) + ": " + std::strerror(errno));
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    int err = errno;
    char buf[32] = {};
    ssize_t n = ::pread(fd, buf, sizeof buf - 1, 0);
    ::close(fd);
    std::string pid = n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
    pid.erase(std::remove(pid.begin(), pid.end(), '\n'), pid.end());
    if (err != EWOULDBLOCK) {
      return unavailable("locking " + singleQuoted(paths.lock) + ": " + std::strerror(err));
    }
    return failedPrecondition("state dir " + singleQuoted(paths.dir) +
                              " is in use by another tierwarden-controller" +
                              (pid.empty() ? "" : " (pid " + pid + ")") + ", which holds " +
                              singleQuoted(paths.lock) + "; stop it first");
  }
  std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd, 0) != 0 ||
      ::pwrite(fd, pid.data(), pid.size(), 0) != static_cast<ssize_t>(pid.size())) {
    // The lock holds without the pid; the pid only makes the refusal clearer.
    log::warn("cannot write the pid into lock file '{}': {}", paths.lock, std::strerror(errno));
  }
  return std::unique_ptr<StateDirLock>(new StateDirLock(fd));
}

StateDirLock::~StateDirLock() { ::close(fd_); }

// ---------------------------------------------------------------- marker ---

Result<int64_t> readAppliedMarker(const StatePaths& paths) {
  std::ifstream in(paths.marker);
  if (!in) return int64_t{0};
  std::string key;
  long long version = -1;
  in >> key >> version;
  if (key != "policy_version" || version < 0) {
    return failedPrecondition("marker file " + singleQuoted(paths.marker) +
                              " is unreadable (expected 'policy_version N'); " + whatToDo(paths));
  }
  return static_cast<int64_t>(version);
}

Status writeAppliedMarker(const StatePaths& paths, int64_t policy_version) {
  return writeFileAtomically(paths.marker, "policy_version " + std::to_string(policy_version) + "\n");
}

// ----------------------------------------------------------------- start ---

Result<DatabaseFacts> checkStateBeforeStart(const StatePaths& paths, bool token_existed) {
  Result<DatabaseFacts> facts = inspectDatabase(paths.db);
  if (!facts.isOk()) {
    if (facts.status().code() != Code::kFailedPrecondition) return facts.status();
    return failedPrecondition("refusing to start: " + facts.status().message() + "; " +
                              whatToDo(paths));
  }
  if (!facts->index_damage.empty()) {
    // The rows are intact; only indexes disagree with them. REINDEX rebuilds
    // them from the rows: nothing is lost, so the start goes on (said loudly).
    log::warn("database '{}': {}; rebuilding its indexes from the tables (REINDEX)", paths.db,
              facts->index_damage);
    Status rebuilt = rebuildIndexes(paths.db);
    if (!rebuilt.isOk()) {
      return failedPrecondition("refusing to start: " + rebuilt.message() + "; " + whatToDo(paths));
    }
    facts = inspectDatabase(paths.db);
    if (!facts.isOk() || !facts->index_damage.empty()) {
      return failedPrecondition("refusing to start: database " + singleQuoted(paths.db) +
                                " is still damaged after REINDEX; " + whatToDo(paths));
    }
  }
  Result<int64_t> marker = readAppliedMarker(paths);
  if (!marker.isOk()) return failedPrecondition("refusing to start: " + marker.status().message());
  if (*marker > facts->policy_version) {
    return failedPrecondition(
        "refusing to start: " + singleQuoted(paths.marker) + " says policy version " +
        std::to_string(*marker) + " was applied, but " + singleQuoted(paths.db) + " holds " +
        (facts->policy_version == 0 ? std::string("no policy")
                                    : "only version " + std::to_string(facts->policy_version)) +
        ": recent state is missing (a lost or damaged WAL?); " + whatToDo(paths));
  }
  if (*marker == 0 && token_existed && facts->schema_version == 0) {
    return failedPrecondition("refusing to start: " + singleQuoted(paths.db) + " is " +
                              (facts->exists ? "empty (" + std::to_string(facts->file_bytes) + " bytes, no schema)"
                                             : std::string("missing")) +
                              " although the state dir has the token file of an earlier start; " +
                              whatToDo(paths));
  }
  return facts;
}

Status watchApplies(Store& store, const StatePaths& paths, const DatabaseFacts& facts,
                    BackupWorker& backups) {
  if (facts.policy_version > 0) TW_RETURN_IF_ERROR(writeAppliedMarker(paths, facts.policy_version));
  store.setPolicyCommitListener([paths, &backups](int64_t version) {
    // Marker first: were the process killed now, the start would still know.
    Status marked = writeAppliedMarker(paths, version);
    if (!marked.isOk()) {
      log::error("cannot record applied policy version {} in '{}': {}", version, paths.marker,
                 marked.toString());
    }
    backups.requestNow();
  });
  return Status::ok();
}

// --------------------------------------------------------------- backups ---

std::vector<std::string> listBackups(const StatePaths& paths) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(paths.backups, ec)) {
    std::string name = entry.path().filename().string();
    if (name.rfind(kBackupPrefix, 0) == 0 && name.size() > 3 &&
        name.compare(name.size() - 3, 3, kBackupSuffix) == 0) {
      out.push_back(entry.path().string());
    }
  }
  // Names start with the UTC time: the newest sorts last.
  std::sort(out.rbegin(), out.rend());
  return out;
}

Result<BackupInfo> backupNow(const StatePaths& paths, const std::string& utc_stamp, int keep) {
  std::error_code ec;
  fs::create_directories(paths.backups, ec);
  if (ec) return unavailable("creating " + singleQuoted(paths.backups) + ": " + ec.message());
  ::chmod(paths.backups.c_str(), 0700);
  // Leftovers of a backup cut short (the process died mid-copy): never a backup.
  for (const auto& entry : fs::directory_iterator(paths.backups, ec)) {
    std::string name = entry.path().filename().string();
    bool tmp = name.size() > 4 && name.compare(name.size() - 4, 4, ".tmp") == 0;
    if (name.rfind("staging-", 0) == 0 || tmp) fs::remove(entry.path(), ec);
  }
  // The policy version goes into the name after the copy: name it by time
  // first, then rename within the dir (atomic, no copy).
  const std::string staged = paths.backups + "/staging-" + utc_stamp + kBackupSuffix;
  Result<BackupInfo> info = backupDatabase(paths.db, staged);
  if (!info.isOk()) return info.status();
  const std::string final_path = paths.backups + "/" + kBackupPrefix + utc_stamp + "-v" +
                                 std::to_string(info->policy_version) + kBackupSuffix;
  if (::rename(staged.c_str(), final_path.c_str()) != 0) {
    return unavailable("renaming " + singleQuoted(staged) + ": " + std::strerror(errno));
  }
  TW_RETURN_IF_ERROR(syncFile(paths.backups, true));
  info->path = final_path;
  std::vector<std::string> all = listBackups(paths);
  for (size_t i = static_cast<size_t>(std::max(keep, 1)); i < all.size(); ++i) {
    fs::remove(all[i], ec);
    if (ec) log::warn("cannot remove old backup '{}': {}", all[i], ec.message());
  }
  return info;
}

// --------------------------------------------------------------- restore ---

Result<std::string> restoreState(const StatePaths& paths, const std::string& backup,
                                 const std::string& utc_stamp) {
  std::error_code ec;
  if (!fs::is_regular_file(backup, ec)) {
    return invalidArgument("backup " + singleQuoted(backup) + " is not a file");
  }
  // A WAL next to the backup would be read with it: refuse what we cannot vouch for.
  Result<DatabaseFacts> facts = inspectDatabase(backup);
  if (!facts.isOk()) {
    return invalidArgument("backup " + singleQuoted(backup) + " cannot be used: " + facts.status().message());
  }
  if (facts->schema_version < 1 || facts->schema_version > Store::latestSchemaVersion()) {
    return invalidArgument("backup " + singleQuoted(backup) + " has schema version " +
                           std::to_string(facts->schema_version) + "; this build reads 1.." +
                           std::to_string(Store::latestSchemaVersion()));
  }
  if (!fs::is_directory(paths.dir, ec)) {
    return invalidArgument("state dir " + singleQuoted(paths.dir) + " does not exist");
  }
  Result<std::unique_ptr<StateDirLock>> lock = StateDirLock::acquire(paths);
  if (!lock.isOk()) return lock.status();

  // Move the damaged files aside, never delete them.
  const std::string aside = paths.dir + "/damaged-" + utc_stamp;
  std::vector<std::string> moved;
  for (const char* suffix : {"", "-wal", "-shm"}) {
    const std::string from = paths.db + suffix;
    if (!fs::exists(from, ec)) continue;
    fs::create_directories(aside, ec);
    if (ec) return unavailable("creating " + singleQuoted(aside) + ": " + ec.message());
    fs::rename(from, aside + "/tierwarden.db" + suffix, ec);
    if (ec) return unavailable("moving " + singleQuoted(from) + " aside: " + ec.message());
    moved.push_back(from);
  }
  const std::string tmp = paths.db + ".restore-tmp";
  TW_RETURN_IF_ERROR(copyFileSynced(backup, tmp));
  ::chmod(tmp.c_str(), 0600);
  if (::rename(tmp.c_str(), paths.db.c_str()) != 0) {
    return unavailable("installing " + singleQuoted(paths.db) + ": " + std::strerror(errno));
  }
  TW_RETURN_IF_ERROR(syncFile(paths.dir, true));
  TW_RETURN_IF_ERROR(writeAppliedMarker(paths, facts->policy_version));
  return "restored " + singleQuoted(backup) + " (policy version " +
         std::to_string(facts->policy_version) + ", " + std::to_string(facts->event_count) +
         " events) into " + singleQuoted(paths.db) +
         (moved.empty() ? std::string("; there was no database to move aside")
                        : "; the old files are in " + singleQuoted(aside));
}

std::string utcStampNow() {
  auto now = std::chrono::system_clock::now();
  std::time_t secs = std::chrono::system_clock::to_time_t(now);
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y%m%dT%H%M%S", &tm);
  char out[48];
  std::snprintf(out, sizeof out, "%s.%03dZ", buf, static_cast<int>(ms));
  return out;
}

// ---------------------------------------------------------------- worker ---

BackupWorker::BackupWorker(StatePaths paths, std::chrono::milliseconds interval, int keep)
    : paths_(std::move(paths)), interval_(interval), keep_(keep) {}

BackupWorker::~BackupWorker() { stop(); }

void BackupWorker::start() { thread_ = std::thread([this] { run(); }); }

void BackupWorker::requestNow() {
  std::lock_guard<std::mutex> lock(mu_);
  requested_ = true;
  cv_.notify_one();
}

void BackupWorker::stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    cv_.notify_one();
  }
  if (thread_.joinable()) thread_.join();
}

void BackupWorker::run() {
  using Steady = std::chrono::steady_clock;
  auto next = interval_.count() > 0 ? Steady::now() + interval_ : Steady::time_point::max();
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait_until(lock, next, [&] { return stopping_ || requested_; });
      if (stopping_) return;
      requested_ = false;
    }
    auto started = Steady::now();
    Result<BackupInfo> info = backupNow(paths_, utcStampNow(), keep_);
    double took = std::chrono::duration<double>(Steady::now() - started).count();
    if (info.isOk()) {
      log::info("backup '{}' written: policy version {}, {} bytes, copy {:.3f}s, check {:.3f}s, total {:.3f}s",
                info->path, info->policy_version, info->bytes, info->copy_seconds,
                info->check_seconds, took);
    } else {
      log::error("backup of '{}' failed: {}", paths_.db, info.status().toString());
    }
    if (interval_.count() > 0) next = Steady::now() + interval_;
  }
}

}  // namespace tw
