// SqliteStore: tw::Store on SQLite. The only file that includes sqlite3.h.
//
// Every SQLite handle lives in a unique_ptr with its closer; every value reaches
// SQL through a bound parameter (see Statement); every multi-statement change
// runs in a Transaction that rolls back unless committed; every SQLite error
// becomes a tw::Status here, with SQLite's own message and what we were doing.
// The schema is the kMigrations list below, numbered by PRAGMA user_version.
#include <fcntl.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tw/json.h"
#include "tw/log.h"
#include "tw/store.h"

namespace tw {
namespace {

// ------------------------------------------------------------ migrations ---
//
// The schema, oldest step first. Step i (0-based) takes a database from
// user_version i to i + 1, in one transaction together with the user_version
// bump, so latestSchemaVersion() is the number of steps.
//
// TO CHANGE THE SCHEMA, APPEND A STEP at the end of this list, e.g.
//   {"v2: incidents", R"sql(CREATE TABLE incidents (...) STRICT;)sql"},
//   {"v3: action journal", R"sql(CREATE TABLE actions (...) STRICT;)sql"},
// and read/write the new tables in SqliteStore below. Never edit, reorder or
// remove a step that has been released: databases in the field already ran it.
// A step may hold several statements; it must not BEGIN/COMMIT itself.
struct Migration {
  const char* description;
  const char* sql;
};

constexpr Migration kMigrations[] = {
    {"v1: policies, tiers, hosts, vms, events", R"sql(
CREATE TABLE policies (
  version    INTEGER PRIMARY KEY AUTOINCREMENT,
  applied_ms INTEGER NOT NULL,
  digest     TEXT    NOT NULL,
  files_json TEXT    NOT NULL  -- [{"name": "demo.yaml", "content": "..."}, ...]
) STRICT;

CREATE TABLE tiers (
  name           TEXT    PRIMARY KEY,
  policy_version INTEGER NOT NULL REFERENCES policies(version),
  ord            INTEGER NOT NULL,  -- declaration order in the policy
  image          TEXT    NOT NULL,
  replicas       INTEGER NOT NULL,
  vcpus          INTEGER NOT NULL,
  memory_mib     INTEGER NOT NULL,
  spec_json      TEXT    NOT NULL   -- the whole TierSpec, as tw/json.h encodes it
) STRICT;

CREATE TABLE hosts (
  name           TEXT    PRIMARY KEY,
  state          TEXT    NOT NULL,  -- toString(HostState)
  state_since_ms INTEGER NOT NULL,
  cpus           INTEGER NOT NULL,
  memory_mib     INTEGER NOT NULL,
  reason         TEXT    NOT NULL
) STRICT;

CREATE TABLE vms (
  name        TEXT    PRIMARY KEY,
  tier        TEXT    NOT NULL,
  ordinal     INTEGER NOT NULL,
  host        TEXT    NOT NULL,     -- '' = not placed
  epoch       INTEGER NOT NULL,
  state       TEXT    NOT NULL,     -- toString(VmState)
  health      TEXT    NOT NULL,     -- toString(Health)
  restarts    INTEGER NOT NULL,
  relocations INTEGER NOT NULL,
  reason      TEXT    NOT NULL,
  updated_ms  INTEGER NOT NULL
) STRICT;

CREATE TABLE events (
  id      INTEGER PRIMARY KEY AUTOINCREMENT,
  t_ms    INTEGER NOT NULL,
  level   TEXT    NOT NULL,
  kind    TEXT    NOT NULL,
  subject TEXT    NOT NULL,
  message TEXT    NOT NULL
) STRICT;
CREATE INDEX events_by_subject ON events(subject, id);
)sql"},
    {"v2: incidents, action journal", R"sql(
CREATE TABLE incidents (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  subject TEXT NOT NULL,
  kind TEXT NOT NULL,
  opened_ms INTEGER NOT NULL,
  closed_ms INTEGER NOT NULL,
  summary TEXT NOT NULL,
  steps_json TEXT NOT NULL
) STRICT;
CREATE INDEX incidents_open ON incidents (closed_ms, id);
CREATE TABLE actions (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  kind TEXT NOT NULL,
  subject TEXT NOT NULL,
  data_json TEXT NOT NULL,
  started_ms INTEGER NOT NULL
) STRICT;
)sql"},
    {"v3: backup catalogue", R"sql(
CREATE TABLE backups (
  vm          TEXT    NOT NULL,
  id          TEXT    NOT NULL,
  tier        TEXT    NOT NULL,
  host        TEXT    NOT NULL,
  path        TEXT    NOT NULL,
  taken_ms    INTEGER NOT NULL,
  duration_ms INTEGER NOT NULL,
  bytes       INTEGER NOT NULL,
  method      TEXT    NOT NULL,
  request     INTEGER NOT NULL,
  PRIMARY KEY (vm, id)
) STRICT;
)sql"},
    // -1: never heard (HostRecord::watchdog_ms); a leader writes the value
    // its agent's heartbeat reports.
    {"v4: host watchdog timeouts", R"sql(
ALTER TABLE hosts ADD COLUMN watchdog_ms INTEGER NOT NULL DEFAULT -1;
)sql"},
    // Append v5 here (see the comment above kMigrations).
};

constexpr int kMigrationCount = static_cast<int>(std::size(kMigrations));

constexpr int kBusyTimeoutMs = 5000;

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

std::string inQuotes(const std::string& s) { return "'" + s + "'"; }

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

// --------------------------------------------------------------- opening ---

Result<DbPtr> openHandle(const std::string& path, int flags) {
  sqlite3* raw = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &raw, flags, nullptr);
  DbPtr db(raw);  // sqlite3_open_v2 may hand back a handle even on failure
  if (rc != SQLITE_OK) return sqliteError(db.get(), rc, "opening database " + inQuotes(path));
  sqlite3_extended_result_codes(db.get(), 1);
  sqlite3_busy_timeout(db.get(), kBusyTimeoutMs);
  return db;
}

Status refuseNewer(const std::string& path, int version) {
  return failedPrecondition("database " + path + " has schema version " + std::to_string(version) +
                            ", newer than this build's " + std::to_string(kMigrationCount) +
                            "; upgrade tierwarden or use another state dir");
}

// Applies every step after the database's version, each in its own transaction.
Status migrate(sqlite3* db, const std::string& path) {
  for (int target = 1; target <= kMigrationCount; ++target) {
    Transaction txn(db);
    TW_RETURN_IF_ERROR(txn.begin());
    // Read under the write lock: another process may have migrated meanwhile.
    Result<int> current = readUserVersion(db);
    if (!current.isOk()) return current.status();
    if (*current > kMigrationCount) return refuseNewer(path, *current);
    if (*current >= target) continue;  // the Transaction rolls back: nothing written
    const Migration& step = kMigrations[target - 1];
    TW_RETURN_IF_ERROR(execScript(db, step.sql, std::string("migrating to ") + step.description));
    TW_RETURN_IF_ERROR(writeUserVersion(db, target));
    TW_RETURN_IF_ERROR(txn.commit());
    log::info("database '{}' migrated to schema version {} ({})", path, target, step.description);
  }
  return Status::ok();
}

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

// ----------------------------------------------------------- the store ---

class SqliteStore final : public Store {
 public:
  SqliteStore(DbPtr db, int schema_version) : db_(std::move(db)), schema_version_(schema_version) {}

  int schemaVersion() const override { return schema_version_; }

  Status transaction(const std::function<Status()>& body) override {
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

  Status batch(const std::function<Status()>& body) override {
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

  void setPolicyCommitListener(PolicyCommitListener listener) override {
    policy_listener_ = std::move(listener);
  }

  Result<int64_t> insertPolicy(const PolicyRecord& record) override {
    Json files = Json::array();
    for (const PolicyFile& f : record.files) files.push_back(f);
    Result<std::string> files_json = dumpJson(files);
    if (!files_json.isOk()) return files_json.status().withContext("storing policy");
    Status status =
        exec(wdb(), "INSERT INTO policies (applied_ms, digest, files_json) VALUES (?, ?, ?)",
             record.applied_ms, record.digest, *files_json);
    if (!status.isOk()) return status.withContext("storing policy");
    auto version = static_cast<int64_t>(sqlite3_last_insert_rowid(db()));
    if (in_transaction_) {
      committed_policy_ = version;  // told after COMMIT (see transaction())
    } else if (policy_listener_) {
      policy_listener_(version);
    }
    return version;
  }

  Result<std::optional<PolicyRecord>> latestPolicy() override {
    const char* context = "loading latest policy";
    Result<Statement> stmt = query(db(),
                                   "SELECT version, applied_ms, digest, files_json FROM policies "
                                   "ORDER BY version DESC LIMIT 1");
    if (!stmt.isOk()) return stmt.status().withContext(context);
    Result<bool> row = stmt->step();
    if (!row.isOk()) return row.status().withContext(context);
    if (!*row) return std::optional<PolicyRecord>();
    PolicyRecord record;
    record.version = stmt->int64At(0);
    record.applied_ms = stmt->int64At(1);
    record.digest = stmt->textAt(2);
    Result<std::vector<PolicyFile>> files = decodeFiles(stmt->textAt(3));
    if (!files.isOk()) {
      return internalError("policy version " + std::to_string(record.version) +
                           " has corrupt files_json: " + files.status().message())
          .withContext(context);
    }
    record.files = std::move(*files);
    return std::optional<PolicyRecord>(std::move(record));
  }

  Status replaceTiers(int64_t policy_version, const std::vector<TierSpec>& tiers) override {
    Status status = atomically(wdb(), [&]() -> Status {
      TW_RETURN_IF_ERROR(exec(db(), "DELETE FROM tiers"));
      int64_t ord = 0;
      for (const TierSpec& tier : tiers) {
        Result<std::string> spec_json = dumpJson(Json(tier));
        if (!spec_json.isOk()) return spec_json.status().withContext("tier " + inQuotes(tier.name));
        Status s = exec(db(),
                        "INSERT INTO tiers (name, policy_version, ord, image, replicas, vcpus,"
                        " memory_mib, spec_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        tier.name, policy_version, ord++, tier.image, tier.replicas, tier.vcpus,
                        tier.memory_mib, *spec_json);
        if (!s.isOk()) return s.withContext("tier " + inQuotes(tier.name));
      }
      return Status::ok();
    });
    return status.withContext("replacing tiers of policy version " +
                              std::to_string(policy_version));
  }

  Result<int64_t> putIncident(const IncidentRecord& incident) override {
    Json steps = Json::array();
    for (const IncidentStep& st : incident.steps)
      steps.push_back(Json{{"step", st.step}, {"t_ms", st.t_ms}, {"detail", st.detail}});
    Result<std::string> steps_json = dumpJson(steps);
    if (!steps_json.isOk()) return steps_json.status().withContext("storing incident");
    if (incident.id == 0) {
      Status s = exec(wdb(),
                      "INSERT INTO incidents (subject, kind, opened_ms, closed_ms, summary, steps_json)"
                      " VALUES (?, ?, ?, ?, ?, ?)",
                      incident.subject, incident.kind, incident.opened_ms, incident.closed_ms,
                      incident.summary, *steps_json);
      if (!s.isOk()) return s.withContext("storing incident of " + inQuotes(incident.subject));
      return static_cast<int64_t>(sqlite3_last_insert_rowid(db()));
    }
    Status s = exec(wdb(),
                    "UPDATE incidents SET subject = ?, kind = ?, opened_ms = ?, closed_ms = ?,"
                    " summary = ?, steps_json = ? WHERE id = ?",
                    incident.subject, incident.kind, incident.opened_ms, incident.closed_ms,
                    incident.summary, *steps_json, incident.id);
    if (!s.isOk()) return s.withContext("storing incident " + std::to_string(incident.id));
    return incident.id;
  }

  Result<std::vector<IncidentRecord>> incidents(int recent) override {
    const char* context = "loading incidents";
    Result<Statement> stmt = query(
        db(),
        "SELECT id, subject, kind, opened_ms, closed_ms, summary, steps_json FROM incidents"
        " WHERE closed_ms = 0 OR id IN (SELECT id FROM incidents WHERE closed_ms != 0"
        " ORDER BY id DESC LIMIT ?) ORDER BY id",
        static_cast<int64_t>(recent));
    if (!stmt.isOk()) return stmt.status().withContext(context);
    std::vector<IncidentRecord> out;
    while (true) {
      Result<bool> row = stmt->step();
      if (!row.isOk()) return row.status().withContext(context);
      if (!*row) break;
      IncidentRecord r;
      r.id = stmt->int64At(0);
      r.subject = stmt->textAt(1);
      r.kind = stmt->textAt(2);
      r.opened_ms = stmt->int64At(3);
      r.closed_ms = stmt->int64At(4);
      r.summary = stmt->textAt(5);
      try {
        for (const auto& j : Json::parse(stmt->textAt(6))) {
          r.steps.push_back(IncidentStep{j.value("step", ""), j.value("t_ms", int64_t{0}),
                                         j.value("detail", "")});
        }
      } catch (const nlohmann::json::exception& e) {
        return internalError("incident " + std::to_string(r.id) + " has corrupt steps_json: " +
                             e.what());
      }
      out.push_back(std::move(r));
    }
    return out;
  }

  Result<int64_t> beginAction(const ActionRecord& action) override {
    Status s = exec(wdb(),
                    "INSERT INTO actions (kind, subject, data_json, started_ms) VALUES (?, ?, ?, ?)",
                    action.kind, action.subject, action.data_json, action.started_ms);
    if (!s.isOk()) return s.withContext("journaling " + action.kind + " of " + inQuotes(action.subject));
    return static_cast<int64_t>(sqlite3_last_insert_rowid(db()));
  }

  Status endAction(int64_t id) override {
    return exec(wdb(), "DELETE FROM actions WHERE id = ?", id)
        .withContext("ending action " + std::to_string(id));
  }

  Result<std::vector<ActionRecord>> openActions() override {
    const char* context = "loading the action journal";
    Result<Statement> stmt =
        query(db(), "SELECT id, kind, subject, data_json, started_ms FROM actions ORDER BY id");
    if (!stmt.isOk()) return stmt.status().withContext(context);
    std::vector<ActionRecord> out;
    while (true) {
      Result<bool> row = stmt->step();
      if (!row.isOk()) return row.status().withContext(context);
      if (!*row) break;
      out.push_back(ActionRecord{stmt->int64At(0), stmt->textAt(1), stmt->textAt(2),
                                 stmt->textAt(3), stmt->int64At(4)});
    }
    return out;
  }

  Status putBackup(const BackupRecord& b) override {
    return exec(wdb(),
                "INSERT OR REPLACE INTO backups (vm, id, tier, host, path, taken_ms, duration_ms,"
                " bytes, method, request) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                b.vm, b.id, b.tier, b.host, b.path, b.taken_ms, b.duration_ms, b.bytes, b.method,
                b.request)
        .withContext("storing backup " + inQuotes(b.id) + " of vm " + inQuotes(b.vm));
  }

  Status deleteBackup(const std::string& vm, const std::string& id) override {
    return exec(wdb(), "DELETE FROM backups WHERE vm = ? AND id = ?", vm, id)
        .withContext("deleting backup " + inQuotes(id) + " of vm " + inQuotes(vm));
  }

  Result<std::vector<BackupRecord>> backups(const std::string& vm) override {
    const char* context = "loading the backup catalogue";
    Result<Statement> stmt = query(db(),
                                   "SELECT vm, id, tier, host, path, taken_ms, duration_ms, bytes,"
                                   " method, request FROM backups WHERE ? = '' OR vm = ?"
                                   " ORDER BY vm, id",
                                   vm, vm);
    if (!stmt.isOk()) return stmt.status().withContext(context);
    std::vector<BackupRecord> out;
    while (true) {
      Result<bool> row = stmt->step();
      if (!row.isOk()) return row.status().withContext(context);
      if (!*row) break;
      BackupRecord b;
      b.vm = stmt->textAt(0);
      b.id = stmt->textAt(1);
      b.tier = stmt->textAt(2);
      b.host = stmt->textAt(3);
      b.path = stmt->textAt(4);
      b.taken_ms = stmt->int64At(5);
      b.duration_ms = stmt->int64At(6);
      b.bytes = stmt->int64At(7);
      b.method = stmt->textAt(8);
      b.request = stmt->int64At(9);
      out.push_back(std::move(b));
    }
    return out;
  }

  Status putHost(const HostRecord& host) override {
    return exec(wdb(),
                "INSERT OR REPLACE INTO hosts (name, state, state_since_ms, cpus, memory_mib, "
                "reason, watchdog_ms)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                host.name, toString(host.state), host.state_since_ms, host.capacity.cpus,
                host.capacity.memory_mib, host.reason, host.watchdog_ms)
        .withContext("storing host " + inQuotes(host.name));
  }

  Status deleteHost(const std::string& name) override {
    return exec(wdb(), "DELETE FROM hosts WHERE name = ?", name)
        .withContext("deleting host " + inQuotes(name));
  }

  Result<std::vector<HostRecord>> hosts() override {
    const char* context = "loading hosts";
    Result<Statement> stmt = query(
        db(),
        "SELECT name, state, state_since_ms, cpus, memory_mib, reason, watchdog_ms FROM hosts "
        "ORDER BY name");
    if (!stmt.isOk()) return stmt.status().withContext(context);
    std::vector<HostRecord> out;
    while (true) {
      Result<bool> row = stmt->step();
      if (!row.isOk()) return row.status().withContext(context);
      if (!*row) break;
      HostRecord h;
      h.name = stmt->textAt(0);
      std::string state = stmt->textAt(1);
      std::optional<HostState> parsed = hostStateFromString(state);
      if (!parsed) return corrupt("host", h.name, "state", state).withContext(context);
      h.state = *parsed;
      h.state_since_ms = stmt->int64At(2);
      h.capacity.cpus = stmt->intAt(3);
      h.capacity.memory_mib = stmt->int64At(4);
      h.reason = stmt->textAt(5);
      h.watchdog_ms = stmt->int64At(6);
      out.push_back(std::move(h));
    }
    return out;
  }

  Status putVm(const VmRecord& vm) override {
    return exec(wdb(),
                "INSERT OR REPLACE INTO vms (name, tier, ordinal, host, epoch, state, health,"
                " restarts, relocations, reason, updated_ms)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                vm.name, vm.tier, vm.ordinal, vm.host, vm.epoch, toString(vm.state),
                toString(vm.health), vm.restarts, vm.relocations, vm.reason, vm.updated_ms)
        .withContext("storing vm " + inQuotes(vm.name));
  }

  Status deleteVm(const std::string& name) override {
    return exec(wdb(), "DELETE FROM vms WHERE name = ?", name)
        .withContext("deleting vm " + inQuotes(name));
  }

  Result<std::vector<VmRecord>> vms() override {
    const char* context = "loading vms";
    Result<Statement> stmt =
        query(db(),
              "SELECT name, tier, ordinal, host, epoch, state, health, restarts,"
              " relocations, reason, updated_ms FROM vms ORDER BY name");
    if (!stmt.isOk()) return stmt.status().withContext(context);
    std::vector<VmRecord> out;
    while (true) {
      Result<bool> row = stmt->step();
      if (!row.isOk()) return row.status().withContext(context);
      if (!*row) break;
      VmRecord vm;
      vm.name = stmt->textAt(0);
      vm.tier = stmt->textAt(1);
      vm.ordinal = stmt->intAt(2);
      vm.host = stmt->textAt(3);
      vm.epoch = stmt->int64At(4);
      std::string state = stmt->textAt(5);
      std::optional<VmState> parsed_state = vmStateFromString(state);
      if (!parsed_state) return corrupt("vm", vm.name, "state", state).withContext(context);
      vm.state = *parsed_state;
      std::string health = stmt->textAt(6);
      std::optional<Health> parsed_health = healthFromString(health);
      if (!parsed_health) return corrupt("vm", vm.name, "health", health).withContext(context);
      vm.health = *parsed_health;
      vm.restarts = stmt->intAt(7);
      vm.relocations = stmt->intAt(8);
      vm.reason = stmt->textAt(9);
      vm.updated_ms = stmt->int64At(10);
      out.push_back(std::move(vm));
    }
    return out;
  }

  Result<EventRecord> appendEvent(EventRecord event) override {
    Status status = exec(wdb(),
                         "INSERT INTO events (t_ms, level, kind, subject, message)"
                         " VALUES (?, ?, ?, ?, ?)",
                         event.t_ms, event.level, event.kind, event.subject, event.message);
    if (!status.isOk()) return status.withContext("appending event " + inQuotes(event.kind));
    event.id = sqlite3_last_insert_rowid(db());
    return event;
  }

  Result<std::vector<EventRecord>> eventsSince(int64_t after_id, int limit) override {
    const char* context = "loading events";
    // SQLite reads a negative LIMIT as "no limit": refuse it rather than
    // return the whole log.
    if (limit <= 0) {
      return invalidArgument("limit must be positive, got " + std::to_string(limit))
          .withContext(context);
    }
    Result<Statement> stmt = query(db(),
                                   "SELECT id, t_ms, level, kind, subject, message FROM events"
                                   " WHERE id > ? ORDER BY id LIMIT ?",
                                   after_id, limit);
    if (!stmt.isOk()) return stmt.status().withContext(context);
    std::vector<EventRecord> out;
    while (true) {
      Result<bool> row = stmt->step();
      if (!row.isOk()) return row.status().withContext(context);
      if (!*row) break;
      EventRecord e;
      e.id = stmt->int64At(0);
      e.t_ms = stmt->int64At(1);
      e.level = stmt->textAt(2);
      e.kind = stmt->textAt(3);
      e.subject = stmt->textAt(4);
      e.message = stmt->textAt(5);
      out.push_back(std::move(e));
    }
    return out;
  }

  Result<int64_t> eventCount() override {
    Result<Statement> stmt = query(db(), "SELECT count(*) FROM events");
    if (!stmt.isOk()) return stmt.status().withContext("counting events");
    Result<bool> row = stmt->step();
    if (!row.isOk()) return row.status().withContext("counting events");
    return stmt->int64At(0);
  }

  Result<int64_t> lastEventId() override {
    Result<Statement> stmt = query(db(), "SELECT coalesce(max(id), 0) FROM events");
    if (!stmt.isOk()) return stmt.status().withContext("reading the last event id");
    Result<bool> row = stmt->step();
    if (!row.isOk()) return row.status().withContext("reading the last event id");
    return stmt->int64At(0);
  }

  Result<int64_t> pruneEvents(Millis before_ms, int64_t keep_at_most, int max_rows) override {
    const char* context = "pruning the event log";
    if (Status st = checkPruneEventsArgs(keep_at_most, max_rows); !st.isOk()) return st.withContext(context);
    // The oldest events by id (time order): those older than before_ms, and
    // those beyond the newest keep_at_most, whichever reaches further.
    Result<int64_t> count = eventCount();
    if (!count.isOk()) return count.status().withContext(context);
    const int64_t over = std::max<int64_t>(0, *count - keep_at_most);
    if (over == 0) {
      // Events are appended in time order: when the oldest is recent enough,
      // so is the rest (and the table is not scanned for nothing).
      Result<Statement> oldest = query(db(), "SELECT t_ms FROM events ORDER BY id LIMIT 1");
      if (!oldest.isOk()) return oldest.status().withContext(context);
      Result<bool> row = oldest->step();
      if (!row.isOk()) return row.status().withContext(context);
      if (!*row || oldest->int64At(0) >= before_ms) return int64_t{0};
    }
    int64_t removed = 0;
    Status status = atomically(wdb(), [&]() -> Status {
      int64_t by_count_last = 0;  // highest id removed for the row cap
      if (over > 0) {
        Result<Statement> stmt = query(db(), "SELECT id FROM events ORDER BY id LIMIT 1 OFFSET ?",
                                       std::min<int64_t>(over, max_rows) - 1);
        if (!stmt.isOk()) return stmt.status();
        Result<bool> row = stmt->step();
        if (!row.isOk()) return row.status();
        if (*row) by_count_last = stmt->int64At(0);
      }
      TW_RETURN_IF_ERROR(exec(db(),
                              "DELETE FROM events WHERE id IN (SELECT id FROM events"
                              " WHERE t_ms < ? OR id <= ? ORDER BY id LIMIT ?)",
                              before_ms, by_count_last, max_rows));
      removed = sqlite3_changes(db());
      return Status::ok();
    });
    if (!status.isOk()) return status.withContext(context);
    return removed;
  }

  Result<int64_t> eventLogBytes() override {
    // dbstat (Debian's SQLite has it) counts the pages of the table and its
    // index; without it, the share of the file that the rows' text takes.
    Result<Statement> stmt =
        query(db(), "SELECT coalesce(sum(pgsize), 0) FROM dbstat"
                    " WHERE name IN ('events', 'events_by_subject')");
    if (stmt.isOk()) {
      Result<bool> row = stmt->step();
      if (row.isOk() && *row) return stmt->int64At(0);
    }
    Result<Statement> approx = query(
        db(), "SELECT coalesce(sum(length(level) + length(kind) + 2 * length(subject) +"
              " length(message) + 32), 0) FROM events");
    if (!approx.isOk()) return approx.status().withContext("measuring the event log");
    Result<bool> row = approx->step();
    if (!row.isOk()) return row.status().withContext("measuring the event log");
    return approx->int64At(0);
  }

  Result<StoreSnapshot> exportState() override {
    StoreSnapshot snap;
    snap.schema_version = schema_version_;
    Status status = atomically(db(), [&]() -> Status {  // one consistent snapshot
      {
        Result<Statement> stmt = query(
            db(), "SELECT version, applied_ms, digest, files_json FROM policies ORDER BY version");
        if (!stmt.isOk()) return stmt.status();
        while (true) {
          Result<bool> row = stmt->step();
          if (!row.isOk()) return row.status();
          if (!*row) break;
          PolicyRecord p;
          p.version = stmt->int64At(0);
          p.applied_ms = stmt->int64At(1);
          p.digest = stmt->textAt(2);
          Result<std::vector<PolicyFile>> files = decodeFiles(stmt->textAt(3));
          if (!files.isOk()) return files.status().withContext("policy " + std::to_string(p.version));
          p.files = std::move(*files);
          snap.policies.push_back(std::move(p));
        }
      }
      {
        Result<Statement> stmt =
            query(db(), "SELECT name, policy_version, ord, spec_json FROM tiers ORDER BY ord");
        if (!stmt.isOk()) return stmt.status();
        while (true) {
          Result<bool> row = stmt->step();
          if (!row.isOk()) return row.status();
          if (!*row) break;
          snap.tiers.push_back(
              StoredTier{stmt->textAt(0), stmt->int64At(1), stmt->int64At(2), stmt->textAt(3)});
        }
      }
      Result<std::vector<HostRecord>> h = hosts();
      if (!h.isOk()) return h.status();
      snap.hosts = std::move(*h);
      Result<std::vector<VmRecord>> v = vms();
      if (!v.isOk()) return v.status();
      snap.vms = std::move(*v);
      Result<std::vector<EventRecord>> e = eventsSince(0, std::numeric_limits<int>::max());
      if (!e.isOk()) return e.status();
      snap.events = std::move(*e);
      Result<std::vector<IncidentRecord>> i = incidents(std::numeric_limits<int>::max());
      if (!i.isOk()) return i.status();
      snap.incidents = std::move(*i);
      Result<std::vector<ActionRecord>> a = openActions();
      if (!a.isOk()) return a.status();
      snap.actions = std::move(*a);
      Result<std::vector<BackupRecord>> b = backups("");
      if (!b.isOk()) return b.status();
      snap.backups = std::move(*b);
      return Status::ok();
    });
    if (!status.isOk()) return status.withContext("exporting the database");
    return snap;
  }

  Status importState(const StoreSnapshot& snap, bool replace) override {
    const char* context = "importing into the database";
    if (snap.schema_version != schema_version_) {
      return invalidArgument("the snapshot has schema version " + std::to_string(snap.schema_version) +
                             ", this database " + std::to_string(schema_version_))
          .withContext(context);
    }
    static const char* const kTables[] = {"tiers", "policies", "hosts", "vms", "events", "incidents", "actions", "backups"};
    Status status = atomically(db(), [&]() -> Status {
      int64_t rows = 0;
      for (const char* table : kTables) {
        Result<Statement> stmt = query(db(), std::string("SELECT count(*) FROM ") + table);
        if (!stmt.isOk()) return stmt.status();
        Result<bool> row = stmt->step();
        if (!row.isOk()) return row.status();
        rows += stmt->int64At(0);
      }
      if (rows > 0 && !replace) {
        return failedPrecondition("the database holds " + std::to_string(rows) +
                                  " rows; refusing to import over them (use --force to replace them)");
      }
      for (const char* table : kTables) TW_RETURN_IF_ERROR(exec(db(), std::string("DELETE FROM ") + table));
      for (const PolicyRecord& p : snap.policies) {
        Json files = Json::array();
        for (const PolicyFile& f : p.files) files.push_back(f);
        Result<std::string> files_json = dumpJson(files);
        if (!files_json.isOk()) return files_json.status();
        TW_RETURN_IF_ERROR(exec(db(), "INSERT INTO policies (version, applied_ms, digest, files_json) VALUES (?, ?, ?, ?)",
                                p.version, p.applied_ms, p.digest, *files_json));
      }
      for (const StoredTier& t : snap.tiers) {
        Result<Json> spec = parseJson(t.spec_json);
        if (!spec.isOk() || !spec->is_object()) return invalidArgument("tier " + inQuotes(t.name) + " has a bad spec");
        TW_RETURN_IF_ERROR(exec(db(),
                                "INSERT INTO tiers (name, policy_version, ord, image, replicas, vcpus,"
                                " memory_mib, spec_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                                t.name, t.policy_version, t.ord, spec->value("image", std::string()),
                                spec->value("replicas", int64_t{0}), spec->value("vcpus", int64_t{0}),
                                spec->value("memory_mib", int64_t{0}), t.spec_json));
      }
      for (const HostRecord& h : snap.hosts) TW_RETURN_IF_ERROR(putHost(h));
      for (const VmRecord& v : snap.vms) TW_RETURN_IF_ERROR(putVm(v));
      for (const EventRecord& e : snap.events) {
        TW_RETURN_IF_ERROR(exec(db(), "INSERT INTO events (id, t_ms, level, kind, subject, message) VALUES (?, ?, ?, ?, ?, ?)",
                                e.id, e.t_ms, e.level, e.kind, e.subject, e.message));
      }
      for (const IncidentRecord& i : snap.incidents) {
        Json steps = Json::array();
        for (const IncidentStep& st : i.steps)
          steps.push_back(Json{{"step", st.step}, {"t_ms", st.t_ms}, {"detail", st.detail}});
        Result<std::string> steps_json = dumpJson(steps);
        if (!steps_json.isOk()) return steps_json.status();
        TW_RETURN_IF_ERROR(exec(db(),
                                "INSERT INTO incidents (id, subject, kind, opened_ms, closed_ms, summary, steps_json)"
                                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                                i.id, i.subject, i.kind, i.opened_ms, i.closed_ms, i.summary, *steps_json));
      }
      for (const ActionRecord& a : snap.actions) {
        TW_RETURN_IF_ERROR(exec(db(), "INSERT INTO actions (id, kind, subject, data_json, started_ms) VALUES (?, ?, ?, ?, ?)",
                                a.id, a.kind, a.subject, a.data_json, a.started_ms));
      }
      for (const BackupRecord& b : snap.backups) TW_RETURN_IF_ERROR(putBackup(b));
      return Status::ok();
    });
    return status.withContext(context);
  }

 private:
  sqlite3* db() const { return db_.get(); }
  // The connection for a write: inside batch(), the batch's transaction is
  // opened by its first write (a batch that writes nothing costs nothing).
  // Should BEGIN fail, the write goes on alone (autocommit), as outside one.
  sqlite3* wdb() {
    if (batching_ && !batch_open_ && sqlite3_get_autocommit(db()) != 0) {
      batch_open_ = execScript(db(), "BEGIN IMMEDIATE", "beginning a batch").isOk();
    }
    return db();
  }

  static Status corrupt(const char* table, const std::string& name, const char* column,
                        const std::string& value) {
    return internalError(std::string(table) + " " + inQuotes(name) + " has unknown " + column +
                         " " + inQuotes(value));
  }

  DbPtr db_;
  int schema_version_;
  bool in_transaction_ = false;
  bool batching_ = false;    // inside batch()
  bool batch_open_ = false;  // ... and its transaction was begun
  int64_t committed_policy_ = 0;  // inserted in the running transaction
  PolicyCommitListener policy_listener_;
};

// ------------------------------------------------------- the WAL on disk ---
//
// SQLite reads a WAL up to the last commit frame of the longest prefix of
// frames whose salts match the header and whose cumulative checksums hold,
// and ignores the rest without a word. That is right after a crash (an
// unfinished transaction), and wrong after damage: a WAL cut short or
// overwritten in its middle loses committed transactions silently. This walks
// the WAL the way SQLite does (https://www.sqlite.org/fileformat2.html#walformat)
// and tells the two apart.

constexpr uint32_t kWalMagicLe = 0x377f0682;  // checksums over little-endian words
constexpr uint32_t kWalMagicBe = 0x377f0683;
constexpr int64_t kWalHeaderBytes = 32;
constexpr int64_t kWalFrameHeaderBytes = 24;

uint32_t be32(const unsigned char* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}
uint32_t le32(const unsigned char* p) {
  return (uint32_t{p[3]} << 24) | (uint32_t{p[2]} << 16) | (uint32_t{p[1]} << 8) | uint32_t{p[0]};
}

// SQLite's WAL checksum over `bytes` (a multiple of 8), continuing from s.
void walChecksum(bool big_endian, const unsigned char* data, size_t bytes, uint32_t s[2]) {
  for (size_t i = 0; i + 8 <= bytes; i += 8) {
    uint32_t a = big_endian ? be32(data + i) : le32(data + i);
    uint32_t b = big_endian ? be32(data + i + 4) : le32(data + i + 4);
    s[0] += a + s[1];
    s[1] += b + s[0];
  }
}

Status damaged(const std::string& path, const std::string& what) {
  return failedPrecondition("database " + inQuotes(path) + " is damaged: " + what);
}

// ok when the WAL next to `db_path` is absent, empty, or would be read
// without losing a committed frame.
Status checkWal(const std::string& db_path) {
  const std::string wal_path = db_path + "-wal";
  std::ifstream in(wal_path, std::ios::binary);
  if (!in) return Status::ok();  // no WAL: nothing to lose there
  std::string wal((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) return unavailable("reading " + inQuotes(wal_path) + ": I/O error");
  if (wal.empty()) return Status::ok();
  const auto* bytes = reinterpret_cast<const unsigned char*>(wal.data());
  const auto size = static_cast<int64_t>(wal.size());
  if (size < kWalHeaderBytes) {
    return damaged(db_path, "its WAL " + inQuotes(wal_path) + " is cut off inside its header (" +
                                std::to_string(size) + " bytes)");
  }
  const uint32_t magic = be32(bytes);
  const uint32_t page_size = be32(bytes + 8);
  uint32_t s[2] = {0, 0};
  const bool big_endian = magic == kWalMagicBe;
  walChecksum(big_endian, bytes, 24, s);
  const bool header_ok = (magic == kWalMagicLe || magic == kWalMagicBe) && page_size >= 512 &&
                         page_size <= 65536 && (page_size & (page_size - 1)) == 0 &&
                         s[0] == be32(bytes + 24) && s[1] == be32(bytes + 28);
  const int64_t frame_bytes = kWalFrameHeaderBytes + (header_ok ? page_size : 0);
  if (!header_ok) {
    // SQLite would ignore the whole WAL. Only harmless when it holds no frame.
    if (size == kWalHeaderBytes) return Status::ok();
    return damaged(db_path, "the header of its WAL " + inQuotes(wal_path) +
                                " is damaged, so SQLite would ignore the " +
                                std::to_string(size) + " bytes of transactions in it");
  }
  const uint32_t salt1 = be32(bytes + 16);
  const uint32_t salt2 = be32(bytes + 20);
  const int64_t frames = (size - kWalHeaderBytes) / frame_bytes;
  const bool partial_tail = (size - kWalHeaderBytes) % frame_bytes != 0;

  // The valid prefix, as SQLite reads it.
  int64_t valid = 0;
  for (; valid < frames; ++valid) {
    const unsigned char* f = bytes + kWalHeaderBytes + valid * frame_bytes;
    if (be32(f + 8) != salt1 || be32(f + 12) != salt2 || be32(f) == 0) break;
    uint32_t next[2] = {s[0], s[1]};
    walChecksum(big_endian, f, 8, next);
    walChecksum(big_endian, f + kWalFrameHeaderBytes, page_size, next);
    if (next[0] != be32(f + 16) || next[1] != be32(f + 20)) break;
    s[0] = next[0];
    s[1] = next[1];
  }
  // After it: frames of the current WAL generation (its salts) that carry a
  // commit mark are committed transactions SQLite would drop. The first
  // broken frame may be the last, unfinished write of a killed process: it is
  // only damage when more of the current generation follows it.
  int64_t later_commits = 0;
  for (int64_t i = valid + 1; i < frames; ++i) {
    const unsigned char* f = bytes + kWalHeaderBytes + i * frame_bytes;
    if (be32(f + 8) == salt1 && be32(f + 12) == salt2 && be32(f + 4) != 0) ++later_commits;
  }
  const std::string where = "its WAL " + inQuotes(wal_path) + " ";
  if (later_commits > 0) {
    return damaged(db_path, where + "is broken at frame " + std::to_string(valid + 1) + " of " +
                                std::to_string(frames) + " and SQLite would silently drop " +
                                std::to_string(later_commits) + " committed transactions after it");
  }
  if (partial_tail && valid == frames) {
    // Every whole frame is fine but the file ends inside a frame: SQLite writes
    // whole frames, so the file was cut (or a write of a killed process was
    // torn). Without the rest we cannot know what was lost: refuse.
    return damaged(db_path, where + "ends inside a frame (" + std::to_string(size) +
                                " bytes is not a whole number of " +
                                std::to_string(frame_bytes) + "-byte frames): it was cut short");
  }
  return Status::ok();
}

struct CheckProblem {
  std::string text;         // one line, "" = ok
  bool index_only = false;  // only index entries out of step with their tables
};

// `pragma` is "quick_check" or "integrity_check" (our constants only).
Result<CheckProblem> firstCheckProblem(sqlite3* db, const std::string& pragma) {
  Result<Statement> stmt = query(db, "PRAGMA " + pragma);
  if (!stmt.isOk()) return stmt.status();
  Result<bool> row = stmt->step();
  if (!row.isOk()) return row.status();
  if (!*row) return CheckProblem{pragma + " returned nothing"};
  std::string first = stmt->textAt(0);
  if (first == "ok") return CheckProblem{};
  // Only index entries that do not match their rows: the tables are intact,
  // REINDEX rebuilds the indexes from them.
  bool index_only = true;
  while (true) {  // one row per problem (up to 100)
    Result<bool> next = stmt->step();
    if (!next.isOk() || !*next) break;
    first += "\n" + stmt->textAt(0);
  }
  {
    size_t start = 0;
    while (start < first.size()) {
      size_t end = first.find('\n', start);
      std::string line = first.substr(start, end == std::string::npos ? std::string::npos : end - start);
      if (!line.empty() && line.rfind("***", 0) != 0 &&
          line.find("missing from index") == std::string::npos &&
          line.find("wrong # of entries in index") == std::string::npos) {
        index_only = false;
      }
      if (end == std::string::npos) break;
      start = end + 1;
    }
  }
  // One line: SQLite puts several problems in one row, separated by newlines,
  // after a "*** in database main ***" line. Keep the first three.
  std::string out;
  int kept = 0;
  size_t start = 0;
  while (start <= first.size() && kept < 3) {
    size_t end = first.find('\n', start);
    std::string line = first.substr(start, end == std::string::npos ? std::string::npos : end - start);
    if (!line.empty() && line.rfind("***", 0) != 0) {
      out += (out.empty() ? "" : "; ") + line;
      ++kept;
    }
    if (end == std::string::npos) break;
    start = end + 1;
  }
  return CheckProblem{out.empty() ? pragma + " failed" : out, index_only};
}

// "<pragma>: ..." when the database is damaged, "" when it is fine.
// SQLITE_CORRUPT / SQLITE_NOTADB on the way are damage too.
Result<CheckProblem> checkDb(sqlite3* db, const std::string& pragma) {
  Result<CheckProblem> problem = firstCheckProblem(db, pragma);
  if (problem.isOk()) {
    if (!problem->text.empty()) problem->text = pragma + ": " + problem->text;
    return problem;
  }
  const std::string message = problem.status().message();
  int rc = sqlite3_errcode(db) & 0xff;
  if (rc == SQLITE_CORRUPT || rc == SQLITE_NOTADB) return CheckProblem{pragma + ": " + message};
  return problem.status();
}

Result<std::string> quickCheck(sqlite3* db) {
  Result<CheckProblem> problem = checkDb(db, "quick_check");
  if (!problem.isOk()) return problem.status();
  return problem->text;
}

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

int Store::latestSchemaVersion() { return kMigrationCount; }

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
  if (*version > kMigrationCount) return refuseNewer(path, *version);

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

Result<DatabaseFacts> inspectDatabase(const std::string& path) {
  DatabaseFacts facts;
  if (path.empty() || path == ":memory:") return invalidArgument("inspectDatabase needs a file");
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    if (errno != ENOENT) return unavailable("stat of " + inQuotes(path) + ": " + std::strerror(errno));
    struct stat wal_st {};
    if (::stat((path + "-wal").c_str(), &wal_st) == 0 && wal_st.st_size > 0) {
      return damaged(path, "the file is missing but its WAL '" + path + "-wal' exists");
    }
    return facts;  // exists = false
  }
  facts.exists = true;
  facts.file_bytes = static_cast<int64_t>(st.st_size);
  struct stat wal_st {};
  if (facts.file_bytes == 0 && ::stat((path + "-wal").c_str(), &wal_st) == 0 && wal_st.st_size > 0) {
    // SQLite deletes the WAL of a 0-byte database on open (even read-only),
    // taking every transaction in it along: never open it.
    return damaged(path, "the file is 0 bytes but its WAL holds " +
                             std::to_string(wal_st.st_size) +
                             " bytes, which SQLite would delete on open");
  }
  TW_RETURN_IF_ERROR(checkWal(path));
  // Read-only, but SQLite may still need to build the -shm index of a WAL left
  // by a killed process: that changes no data.
  Result<DbPtr> db = openHandle(path, SQLITE_OPEN_READONLY);
  if (!db.isOk()) return db.status();
  // integrity_check is quick_check plus the check of every index against its
  // table: quick_check alone passes an index whose entries were damaged.
  Result<CheckProblem> problem = checkDb(db->get(), "integrity_check");
  if (!problem.isOk()) return problem.status().withContext("checking " + inQuotes(path));
  if (problem->index_only) {
    facts.index_damage = problem->text;
  } else if (!problem->text.empty()) {
    return damaged(path, problem->text);
  }
  Result<int> version = readUserVersion(db->get());
  if (!version.isOk()) return damaged(path, version.status().message());
  facts.schema_version = *version;
  if (facts.schema_version >= 1) {
    for (auto [sql, out] : {std::pair{"SELECT coalesce(max(version), 0) FROM policies",
                                      &facts.policy_version},
                            std::pair{"SELECT count(*) FROM events", &facts.event_count}}) {
      Result<Statement> stmt = query(db->get(), sql);
      Result<bool> row = stmt.isOk() ? stmt->step() : Result<bool>(stmt.status());
      if (!row.isOk()) return damaged(path, row.status().message());
      if (*row) *out = stmt->int64At(0);
    }
  }
  return facts;
}

Status rebuildIndexes(const std::string& path) {
  const std::string context = "rebuilding the indexes of " + inQuotes(path);
  Result<DbPtr> db = openHandle(path, SQLITE_OPEN_READWRITE);
  if (!db.isOk()) return db.status().withContext(context);
  TW_RETURN_IF_ERROR(execScript(db->get(), "REINDEX", context));
  Result<CheckProblem> problem = checkDb(db->get(), "integrity_check");
  if (!problem.isOk()) return problem.status().withContext(context);
  if (!problem->text.empty()) return damaged(path, problem->text + " (after REINDEX)");
  return Status::ok();
}

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
