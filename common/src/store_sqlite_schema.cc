// The SQLite schema: the migrations, oldest first, numbered by PRAGMA
// user_version, and migrate(), which applies those a database lacks.
#include "store_sqlite.h"

#include <iterator>
#include <string>

#include "tw/log.h"

namespace tw::sqlite {

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
// and read/write the new tables in SqliteStore (store_sqlite.h). Never edit, reorder or
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

}  // namespace

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

}  // namespace tw::sqlite

namespace tw {

int Store::latestSchemaVersion() { return sqlite::kMigrationCount; }

}  // namespace tw
