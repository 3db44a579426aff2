// SQLite's C API wrapped for the store (store_sqlite*.cc): handles in
// unique_ptrs with their closers, prepared statements whose values go in
// through bind() only, a Transaction that rolls back unless committed, and
// every SQLite error turned into a tw::Status with SQLite's own message and
// what we were doing. Only the store's files include this header (and with
// it sqlite3.h).
#pragma once

#include <sqlite3.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include "tw/status.h"

namespace tw::sqlite {

// ------------------------------------------------------------- handles ---

struct DbCloser {
  void operator()(sqlite3* db) const { sqlite3_close_v2(db); }
};
struct StmtFinalizer {
  void operator()(sqlite3_stmt* stmt) const { sqlite3_finalize(stmt); }
};
using DbPtr = std::unique_ptr<sqlite3, DbCloser>;
using StmtPtr = std::unique_ptr<sqlite3_stmt, StmtFinalizer>;

// busy/locked/ioerr are transient (retry with back-off); a violated constraint
// means the caller asked for something the current state forbids; anything
// else is a bug or a broken file.
Code codeFor(int rc);

// Reads SQLite's message at once: the next call on `db` overwrites it.
Status sqliteError(sqlite3* db, int rc, std::string_view context);

inline std::string inQuotes(const std::string& s) { return "'" + s + "'"; }

// ----------------------------------------------------------- statements ---

// One prepared statement. Values go in through bind() only, never into the SQL
// text. Columns are read by 0-based index while step() reports a row.
class Statement {
 public:
  static Result<Statement> prepare(sqlite3* db, std::string_view sql) {
    sqlite3_stmt* raw = nullptr;
    int rc = sqlite3_prepare_v2(db, sql.data(), static_cast<int>(sql.size()), &raw, nullptr);
    StmtPtr stmt(raw);
    if (rc != SQLITE_OK) return sqliteError(db, rc, "preparing SQL");
    if (stmt == nullptr) return internalError("preparing SQL: empty statement");
    return Statement(db, std::move(stmt));
  }

  // Binds args to ?1..?N in order. REQUIRES: one arg per parameter.
  template <typename... Args>
  Status bindAll(const Args&... args) {
    int expected = sqlite3_bind_parameter_count(stmt_.get());
    if (expected != static_cast<int>(sizeof...(args))) {
      return internalError("binding SQL: statement has " + std::to_string(expected) +
                           " parameters, given " + std::to_string(sizeof...(args)) + ": " +
                           sqlite3_sql(stmt_.get()));
    }
    Status status;
    int index = 0;
    ((status = status.isOk() ? bind(++index, args) : status), ...);
    return status;
  }

  // True when a row is ready to read; false when the statement is done.
  Result<bool> step() {
    int rc = sqlite3_step(stmt_.get());
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    return sqliteError(db_, rc, "running SQL");
  }

  // Steps to the end, ignoring any rows.
  Status run() {
    while (true) {
      Result<bool> row = step();
      if (!row.isOk()) return row.status();
      if (!*row) return Status::ok();
    }
  }

  int64_t int64At(int col) const { return sqlite3_column_int64(stmt_.get(), col); }
  int intAt(int col) const { return sqlite3_column_int(stmt_.get(), col); }
  std::string textAt(int col) const {
    const unsigned char* text = sqlite3_column_text(stmt_.get(), col);
    if (text == nullptr) return {};  // NULL
    int bytes = sqlite3_column_bytes(stmt_.get(), col);
    return std::string(reinterpret_cast<const char*>(text), static_cast<size_t>(bytes));
  }
  int columnCount() const { return sqlite3_column_count(stmt_.get()); }

 private:
  Statement(sqlite3* db, StmtPtr stmt) : db_(db), stmt_(std::move(stmt)) {}

  Status bind(int index, int64_t value) {
    return check(sqlite3_bind_int64(stmt_.get(), index, value));
  }
  Status bind(int index, std::string_view value) {
    // SQLITE_TRANSIENT: SQLite copies the bytes, so temporaries are safe. A null
    // data pointer would bind NULL, so an empty view binds "".
    const char* data = value.data() != nullptr ? value.data() : "";
    return check(
        sqlite3_bind_text64(stmt_.get(), index, data, value.size(), SQLITE_TRANSIENT, SQLITE_UTF8));
  }
  Status check(int rc) {
    return rc == SQLITE_OK ? Status::ok() : sqliteError(db_, rc, "binding SQL");
  }

  sqlite3* db_;
  StmtPtr stmt_;
};

// Prepares `sql` and binds `args` to its parameters.
template <typename... Args>
Result<Statement> query(sqlite3* db, std::string_view sql, const Args&... args) {
  Result<Statement> stmt = Statement::prepare(db, sql);
  if (!stmt.isOk()) return stmt;
  TW_RETURN_IF_ERROR(stmt->bindAll(args...));
  return stmt;
}

// Prepares, binds and runs `sql` to completion.
template <typename... Args>
Status exec(sqlite3* db, std::string_view sql, const Args&... args) {
  Result<Statement> stmt = query(db, sql, args...);
  if (!stmt.isOk()) return stmt.status();
  return stmt->run();
}

// Runs a constant script of one or more statements. For our own SQL only
// (migrations, pragmas): never for anything that carries a value.
Status execScript(sqlite3* db, const char* sql, std::string_view context);

Result<int> readUserVersion(sqlite3* db);

// PRAGMA takes no bound parameters; `version` is an int, not text, so
// formatting it into the statement cannot inject anything.
Status writeUserVersion(sqlite3* db, int version);

// --------------------------------------------------------- transactions ---

// Rolls back unless commit() succeeded. Outside a transaction it is
// BEGIN IMMEDIATE (the write lock is taken up front, so the transaction
// cannot fail halfway on a lock upgrade); inside one it is a SAVEPOINT, so a
// store method that needs atomicity also works within Store::transaction().
class Transaction {
 public:
  explicit Transaction(sqlite3* db) : db_(db) {}
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  ~Transaction() {
    if (!active_) return;
    // Errors are ignored: SQLite may already have rolled back on its own
    // (after SQLITE_FULL, SQLITE_IOERR, ...), and a destructor cannot report.
    if (nested_) {
      sqlite3_exec(db_, "ROLLBACK TO tw_nested; RELEASE tw_nested", nullptr, nullptr, nullptr);
    } else {
      sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    }
  }

  Status begin() {
    nested_ = sqlite3_get_autocommit(db_) == 0;
    TW_RETURN_IF_ERROR(execScript(db_, nested_ ? "SAVEPOINT tw_nested" : "BEGIN IMMEDIATE",
                                  "beginning transaction"));
    active_ = true;
    return Status::ok();
  }

  Status commit() {
    TW_RETURN_IF_ERROR(
        execScript(db_, nested_ ? "RELEASE tw_nested" : "COMMIT", "committing transaction"));
    active_ = false;
    return Status::ok();
  }

 private:
  sqlite3* db_;
  bool active_ = false;
  bool nested_ = false;
};

// Runs body in a Transaction: committed when it returns ok.
template <typename Body>
Status atomically(sqlite3* db, Body&& body) {
  Transaction txn(db);
  TW_RETURN_IF_ERROR(txn.begin());
  TW_RETURN_IF_ERROR(body());
  return txn.commit();
}

// A handle with extended result codes and the store's busy timeout.
Result<DbPtr> openHandle(const std::string& path, int flags);

}  // namespace tw::sqlite
