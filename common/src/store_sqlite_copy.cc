// backupDatabase: an online copy of the database file (SQLite's backup API,
// one consistent snapshot), checked, fsynced and renamed into place.
#include "store_sqlite.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>

namespace tw::sqlite {

namespace {

Status fsyncPath(const std::string& path, bool directory) {
  int fd = ::open(path.c_str(), (directory ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC);
  if (fd < 0) return unavailable("opening " + inQuotes(path) + ": " + std::strerror(errno));
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  if (rc != 0) return unavailable("fsync of " + inQuotes(path) + ": " + std::strerror(err));
  return Status::ok();
}

std::string dirOf(const std::string& path) {
  auto slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

}  // namespace

}  // namespace tw::sqlite

namespace tw {

using sqlite::codeFor;
using sqlite::DbPtr;
using sqlite::dirOf;
using sqlite::execScript;
using sqlite::fsyncPath;
using sqlite::inQuotes;
using sqlite::openHandle;
using sqlite::query;
using sqlite::quickCheck;
using sqlite::sqliteError;
using sqlite::Statement;

Result<BackupInfo> backupDatabase(const std::string& source_path, const std::string& dest_path) {
  using Steady = std::chrono::steady_clock;  // durations for the report only
  const std::string context = "backing up " + inQuotes(source_path) + " to " + inQuotes(dest_path);
  const std::string tmp = dest_path + ".tmp";
  std::remove(tmp.c_str());
  std::remove((tmp + "-journal").c_str());
  BackupInfo info;
  info.path = dest_path;
  {
    Result<DbPtr> source = openHandle(source_path, SQLITE_OPEN_READONLY);
    if (!source.isOk()) return source.status().withContext(context);
    Result<DbPtr> dest = openHandle(tmp, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
    if (!dest.isOk()) return dest.status().withContext(context);
    auto started = Steady::now();
    sqlite3_backup* backup = sqlite3_backup_init(dest->get(), "main", source->get(), "main");
    if (backup == nullptr) return sqliteError(dest->get(), sqlite3_errcode(dest->get()), context);
    // All pages in one step: one read transaction on the source connection,
    // hence one consistent snapshot. In WAL mode a reader blocks no writer;
    // stepping in pieces instead would restart the copy after every write of
    // the controller's connection.
    int rc = sqlite3_backup_step(backup, -1);
    info.pages = sqlite3_backup_pagecount(backup);
    int finish = sqlite3_backup_finish(backup);
    if (rc != SQLITE_DONE) {
      std::remove(tmp.c_str());
      return Status(codeFor(rc), std::string("copying pages: ") + sqlite3_errstr(rc)).withContext(context);
    }
    if (finish != SQLITE_OK) {
      std::remove(tmp.c_str());
      return sqliteError(dest->get(), finish, "finishing the copy").withContext(context);
    }
    info.copy_seconds = std::chrono::duration<double>(Steady::now() - started).count();
    // One self-contained file: the restore copies it alone, no -wal beside it.
    Status mode = execScript(dest->get(), "PRAGMA journal_mode = DELETE", "switching the copy out of WAL");
    if (!mode.isOk()) {
      std::remove(tmp.c_str());
      return mode.withContext(context);
    }
    started = Steady::now();
    Result<std::string> problem = quickCheck(dest->get());
    info.check_seconds = std::chrono::duration<double>(Steady::now() - started).count();
    if (!problem.isOk() || !problem->empty()) {
      std::remove(tmp.c_str());
      return failedPrecondition("the copy fails its check: " +
                                (problem.isOk() ? *problem : problem.status().message()))
          .withContext(context);
    }
    Result<Statement> stmt = query(dest->get(), "SELECT coalesce(max(version), 0) FROM policies");
    Result<bool> row = stmt.isOk() ? stmt->step() : Result<bool>(stmt.status());
    if (row.isOk() && *row) info.policy_version = stmt->int64At(0);
  }
  Status synced = fsyncPath(tmp, false);
  if (!synced.isOk()) {
    std::remove(tmp.c_str());
    return synced.withContext(context);
  }
  if (std::rename(tmp.c_str(), dest_path.c_str()) != 0) {
    Status s = unavailable("renaming " + inQuotes(tmp) + ": " + std::strerror(errno));
    std::remove(tmp.c_str());
    return s.withContext(context);
  }
  TW_RETURN_IF_ERROR(fsyncPath(dirOf(dest_path), true).withContext(context));
  struct stat st {};
  if (::stat(dest_path.c_str(), &st) == 0) info.bytes = static_cast<int64_t>(st.st_size);
  return info;
}

}  // namespace tw
