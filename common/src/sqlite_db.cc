// The out-of-line part of sqlite_db.h: error codes and messages, constant
// scripts, PRAGMA user_version, opening a handle.
#include "sqlite_db.h"

#include <string>

namespace tw::sqlite {
namespace {

constexpr int kBusyTimeoutMs = 5000;

}  // namespace

Code codeFor(int rc) {
  switch (rc & 0xff) {  // primary code of an extended result code
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
    case SQLITE_IOERR:
      return Code::kUnavailable;
    case SQLITE_CONSTRAINT:
      return Code::kFailedPrecondition;
    default:
      return Code::kInternal;
  }
}

// Reads SQLite's message at once: the next call on `db` overwrites it.
Status sqliteError(sqlite3* db, int rc, std::string_view context) {
  const char* message = db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
  return Status(codeFor(rc), std::string(context) + ": " + message);
}

Status execScript(sqlite3* db, const char* sql, std::string_view context) {
  int rc = sqlite3_exec(db, sql, nullptr, nullptr, nullptr);
  return rc == SQLITE_OK ? Status::ok() : sqliteError(db, rc, context);
}

Result<int> readUserVersion(sqlite3* db) {
  Result<Statement> stmt = query(db, "PRAGMA user_version");
  if (!stmt.isOk()) return stmt.status();
  Result<bool> row = stmt->step();
  if (!row.isOk()) return row.status();
  if (!*row) return internalError("PRAGMA user_version returned no row");
  return stmt->intAt(0);
}

// PRAGMA takes no bound parameters; `version` is an int, not text, so
// formatting it into the statement cannot inject anything.
Status writeUserVersion(sqlite3* db, int version) {
  std::string sql = "PRAGMA user_version = " + std::to_string(version);
  return execScript(db, sql.c_str(), "setting user_version");
}

Result<DbPtr> openHandle(const std::string& path, int flags) {
  sqlite3* raw = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &raw, flags, nullptr);
  DbPtr db(raw);  // sqlite3_open_v2 may hand back a handle even on failure
  if (rc != SQLITE_OK) return sqliteError(db.get(), rc, "opening database " + inQuotes(path));
  sqlite3_extended_result_codes(db.get(), 1);
  sqlite3_busy_timeout(db.get(), kBusyTimeoutMs);
  return db;
}

}  // namespace tw::sqlite
