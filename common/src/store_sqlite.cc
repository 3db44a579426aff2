// SqliteStore: tw::Store on SQLite. Only its files (store_sqlite*, sqlite_db.*)
// include sqlite3.h.
//
// Every SQLite handle lives in a unique_ptr with its closer; every value reaches
// SQL through a bound parameter (see Statement); every multi-statement change
// runs in a Transaction that rolls back unless committed; every SQLite error
// becomes a tw::Status here, with SQLite's own message and what we were doing.
// The schema is the kMigrations list in store_sqlite_schema.cc, numbered by
// PRAGMA user_version. This file: opening (Store::open), transactions and
// batches, JSON columns, and the test helpers; store_sqlite.h lists the rest.
#include "store_sqlite.h"

#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace tw::sqlite {

// --------------------------------------------------------- JSON columns ---

// nlohmann throws (e.g. on text that is not UTF-8); the store turns that into
// a Status here rather than let it cross the interface.
Result<std::string> dumpJson(const Json& j) {
  try {
    return j.dump();
  } catch (const Json::exception& e) {
    return invalidArgument(std::string("cannot encode as JSON: ") + e.what());
  }
}

Result<std::vector<PolicyFile>> decodeFiles(const std::string& text) {
  Result<Json> j = parseJson(text);
  if (!j.isOk()) return j.status();
  if (!j->is_array()) return invalidArgument("files_json is not an array");
  return decode<std::vector<PolicyFile>>(*j);
}

Status SqliteStore::transaction(const std::function<Status()>& body) {
  if (in_transaction_) {
    return failedPrecondition(
        "Store::transaction called inside another; nesting is not supported");
  }
  struct Guard {
    bool& flag;
    ~Guard() { flag = false; }
  } guard{in_transaction_};
  in_transaction_ = true;
  committed_policy_ = 0;
  Status status = atomically(db(), body);
  int64_t policy = committed_policy_;
  committed_policy_ = 0;
  if (status.isOk() && policy > 0 && policy_listener_) policy_listener_(policy);
  return status;
}

Status SqliteStore::batch(const std::function<Status()>& body) {
  if (in_transaction_ || batching_) return body();  // already one transaction
  batching_ = true;
  batch_open_ = false;
  Status status = body();
  batching_ = false;
  if (!batch_open_) return status;
  batch_open_ = false;
  // The writes are kept whatever the body returned: each would have been
  // committed on its own outside a batch.
  Status committed = execScript(db(), "COMMIT", "committing a batch");
  if (!committed.isOk()) {
    sqlite3_exec(db(), "ROLLBACK", nullptr, nullptr, nullptr);
    return committed;
  }
  return status;
}

}  // namespace tw::sqlite

namespace tw {

using sqlite::DbPtr;
using sqlite::execScript;
using sqlite::inQuotes;
using sqlite::migrate;
using sqlite::openHandle;
using sqlite::query;
using sqlite::readUserVersion;
using sqlite::refuseNewer;
using sqlite::SqliteStore;
using sqlite::Statement;
using sqlite::writeUserVersion;

Result<std::unique_ptr<Store>> Store::open(const std::string& path) {
  if (path.empty()) return invalidArgument("database path is empty");
  Result<DbPtr> db = openHandle(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
  if (!db.isOk()) return db.status();
  sqlite3* raw = db->get();
  std::string context = "opening database " + inQuotes(path);

  // Refuse a newer schema before anything below writes to the file (switching
  // to WAL rewrites the header).
  Result<int> version = readUserVersion(raw);
  if (!version.isOk()) return version.status().withContext(context);
  if (*version > latestSchemaVersion()) return refuseNewer(path, *version);

  TW_RETURN_IF_ERROR(execScript(raw, "PRAGMA foreign_keys = ON", context));
  TW_RETURN_IF_ERROR(execScript(raw, "PRAGMA synchronous = NORMAL", context));
  if (path != ":memory:") {
    Result<Statement> stmt = query(raw, "PRAGMA journal_mode = WAL");
    if (!stmt.isOk()) return stmt.status().withContext(context);
    Result<bool> row = stmt->step();
    if (!row.isOk()) return row.status().withContext(context);
    std::string mode = *row ? stmt->textAt(0) : std::string();
    if (mode != "wal") {
      return internalError("cannot switch to WAL journal mode (got '" + mode + "')")
          .withContext(context);
    }
  }

  TW_RETURN_IF_ERROR(migrate(raw, path).withContext(context));
  version = readUserVersion(raw);
  if (!version.isOk()) return version.status().withContext(context);
  return std::unique_ptr<Store>(std::make_unique<SqliteStore>(std::move(*db), *version));
}

Status setSchemaVersionForTest(const std::string& path, int version) {
  Result<DbPtr> db = openHandle(path, SQLITE_OPEN_READWRITE);
  if (!db.isOk()) return db.status();
  return writeUserVersion(db->get(), version);
}

Status execForTest(const std::string& path, const std::string& sql) {
  Result<DbPtr> db = openHandle(path, SQLITE_OPEN_READWRITE);
  if (!db.isOk()) return db.status();
  return execScript(db->get(), sql.c_str(), "running a test's statements");
}

Result<std::vector<std::vector<std::string>>> queryForTest(const std::string& path,
                                                           const std::string& sql) {
  Result<DbPtr> db = openHandle(path, SQLITE_OPEN_READONLY);
  if (!db.isOk()) return db.status();
  Result<Statement> stmt = query(db->get(), sql);
  if (!stmt.isOk()) return stmt.status();
  std::vector<std::vector<std::string>> rows;
  while (true) {
    Result<bool> row = stmt->step();
    if (!row.isOk()) return row.status();
    if (!*row) break;
    std::vector<std::string> cells;
    for (int col = 0; col < stmt->columnCount(); ++col) cells.push_back(stmt->textAt(col));
    rows.push_back(std::move(cells));
  }
  return rows;
}

}  // namespace tw
