// SqliteStore: tw::Store on SQLite (opened by Store::open). Its methods live
// in one file per concern:
//   store_sqlite.cc           opening, transactions and batches, JSON columns
//   store_sqlite_schema.cc    the migrations (PRAGMA user_version)
//   store_sqlite_records.cc   policies, tiers, hosts, vms, the backup catalogue
//   store_sqlite_events.cc    the event log and its retention
//   store_sqlite_journal.cc   incidents and the action journal
//   store_sqlite_snapshot.cc  exportState / importState
//   store_sqlite_check.cc     the database file's WAL and integrity checks
//   store_sqlite_copy.cc      backupDatabase: an online copy of the file
// sqlite_db.h wraps the C API. Internal to twcommon: include tw/store.h.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "sqlite_db.h"
#include "tw/json.h"
#include "tw/store.h"

namespace tw::sqlite {

// Applies every migration after the database's version, each in its own
// transaction (store_sqlite_schema.cc).
Status migrate(sqlite3* db, const std::string& path);
// kFailedPrecondition: the database at `path` has a newer schema than this build.
Status refuseNewer(const std::string& path, int version);

// JSON columns. nlohmann throws (e.g. on text that is not UTF-8); the store
// turns that into a Status rather than let it cross the interface.
Result<std::string> dumpJson(const Json& j);
Result<std::vector<PolicyFile>> decodeFiles(const std::string& text);

// "quick_check: ..." when the database is damaged, "" when it is fine
// (store_sqlite_check.cc).
Result<std::string> quickCheck(sqlite3* db);

class SqliteStore final : public Store {
 public:
  SqliteStore(DbPtr db, int schema_version) : db_(std::move(db)), schema_version_(schema_version) {}

  int schemaVersion() const override { return schema_version_; }

  Status transaction(const std::function<Status()>& body) override;
  Status batch(const std::function<Status()>& body) override;

  void setPolicyCommitListener(PolicyCommitListener listener) override {
    policy_listener_ = std::move(listener);
  }

  // Policies and tiers, hosts, vms, the backup catalogue (store_sqlite_records.cc).
  Result<int64_t> insertPolicy(const PolicyRecord& record) override;
  Result<std::optional<PolicyRecord>> latestPolicy() override;
  Status replaceTiers(int64_t policy_version, const std::vector<TierSpec>& tiers) override;
  Status putHost(const HostRecord& host) override;
  Status deleteHost(const std::string& name) override;
  Result<std::vector<HostRecord>> hosts() override;
  Status putVm(const VmRecord& vm) override;
  Status deleteVm(const std::string& name) override;
  Result<std::vector<VmRecord>> vms() override;
  Status putBackup(const BackupRecord& b) override;
  Status deleteBackup(const std::string& vm, const std::string& id) override;
  Result<std::vector<BackupRecord>> backups(const std::string& vm) override;

  // Incidents and the action journal (store_sqlite_journal.cc).
  Result<int64_t> putIncident(const IncidentRecord& incident) override;
  Result<std::vector<IncidentRecord>> incidents(int recent) override;
  Result<int64_t> beginAction(const ActionRecord& action) override;
  Status endAction(int64_t id) override;
  Result<std::vector<ActionRecord>> openActions() override;

  // The event log and its retention (store_sqlite_events.cc).
  Result<EventRecord> appendEvent(EventRecord event) override;
  Result<std::vector<EventRecord>> eventsSince(int64_t after_id, int limit) override;
  Result<int64_t> eventCount() override;
  Result<int64_t> lastEventId() override;
  Result<int64_t> pruneEvents(Millis before_ms, int64_t keep_at_most, int max_rows) override;
  Result<int64_t> eventLogBytes() override;

  // The whole database as one snapshot (store_sqlite_snapshot.cc).
  Result<StoreSnapshot> exportState() override;
  Status importState(const StoreSnapshot& snap, bool replace) override;

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

}  // namespace tw::sqlite
