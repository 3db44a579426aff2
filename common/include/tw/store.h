// The controller's memory, behind one interface with two implementations:
//  - SqliteStore (Store::open, common/src/store_sqlite.h and its
//    store_sqlite*.cc, the only files that include sqlite3.h, through
//    sqlite_db.h): one SQLite file in the state dir (or ":memory:"), the
//    default. WAL mode, statements always bound, migrations numbered by PRAGMA
//    user_version (each in one transaction).
//  - EtcdStore (tw/store_etcd.h): keys in etcd, for several controller
//    replicas with one leader; every write is one etcd txn guarded by the
//    leader key.
// Both refuse a store whose schema is newer than this build knows.
//
// Not thread-safe: the controller's loop thread owns the Store.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "tw/model.h"
#include "tw/status.h"

namespace tw {

// One tier row as stored (the TierSpec as tw/json.h encodes it): tiers are
// written by replaceTiers() and read back only whole, by exportState().
struct StoredTier {
  std::string name;
  int64_t policy_version = 0;
  int64_t ord = 0;        // declaration order in the policy
  std::string spec_json;  // the whole TierSpec
};

// A store's whole content with every id and version as assigned: what
// `tierwarden-controller migrate-store` copies from one store to another.
struct StoreSnapshot {
  int schema_version = 0;
  std::vector<PolicyRecord> policies;     // oldest first
  std::vector<StoredTier> tiers;          // by ord
  std::vector<HostRecord> hosts;          // by name
  std::vector<VmRecord> vms;              // by name
  std::vector<EventRecord> events;        // by id
  std::vector<IncidentRecord> incidents;  // by id, open and closed
  std::vector<ActionRecord> actions;      // by id
  std::vector<BackupRecord> backups;      // by vm, then id (schema v3)
};

class Store {
 public:
  virtual ~Store() = default;

  // The newest schema version this build knows.
  static int latestSchemaVersion();

  // Opens (creating if needed) and migrates the database at `path`.
  // Errors: kFailedPrecondition for a newer schema ("database schema 7 is newer
  // than this build (5); upgrade tierwarden"), kUnavailable for I/O errors.
  static Result<std::unique_ptr<Store>> open(const std::string& path);

  virtual int schemaVersion() const = 0;

  // Called after a commit that wrote a new policy version (at once for an
  // insertPolicy() outside a transaction, after COMMIT inside one; never for a
  // rolled-back one), on the thread that committed. The controller's start-up
  // guard uses it for its applied-once marker and a backup after every apply.
  using PolicyCommitListener = std::function<void(int64_t policy_version)>;
  virtual void setPolicyCommitListener(PolicyCommitListener listener) = 0;

  // Runs `body` in one transaction (BEGIN IMMEDIATE): committed when body
  // returns ok, rolled back otherwise (the body's status is returned).
  // Nesting is not supported.
  virtual Status transaction(const std::function<Status()>& body) = 0;

  // Runs `body`, whose writes are batched: SQLite puts them in one
  // transaction, begun by the first write (none when the body writes
  // nothing) and committed when the body returns, whatever it returned (each
  // write would have been kept on its own). The controller runs each tick and
  // each heartbeat in one batch (issue #16). A transaction() inside a batch
  // is part of it. The default runs the body as it is: for etcd, where one
  // transaction's operations are limited, each write stays its own.
  // Errors: the commit's (then the batch's writes are rolled back).
  virtual Status batch(const std::function<Status()>& body) { return body(); }

  // The leader's published assignment sets (docs/ha.md, "Agents renew their
  // leases with any replica"): a follower answers a heartbeat that could not
  // reach the leader with the set last published for its host. Only a store
  // that several replicas share keeps them (wantsPublishedSets()); the
  // default (SQLite, one controller) keeps nothing.
  virtual bool wantsPublishedSets() const { return false; }
  // host -> the set's JSON and its digest, written with the leader's term
  // (its write guard) in as few transactions as etcd's limits allow (one
  // per tick normally). Errors: the store's; kFailedPrecondition when this
  // replica does not lead (nothing written).
  struct PublishedSet {
    std::string set_json;  // AssignmentSet as JSON (peers left out)
    std::string digest;
    int64_t term = 0;      // the leader's term when it was published (read side)
  };
  virtual Status publishSets(const std::map<std::string, PublishedSet>& sets) {
    (void)sets;
    return Status::ok();
  }
  // The set last published for `host`; nullopt when none.
  virtual Result<std::optional<PublishedSet>> publishedSet(const std::string& host) {
    (void)host;
    return std::optional<PublishedSet>();
  }

  // Policies: append-only history; the newest row is the one in force.
  virtual Result<int64_t> insertPolicy(const PolicyRecord& record) = 0;  // returns version
  virtual Result<std::optional<PolicyRecord>> latestPolicy() = 0;

  // Tiers of the policy in force, for queries: replaced whole on each apply.
  virtual Status replaceTiers(int64_t policy_version, const std::vector<TierSpec>& tiers) = 0;

  virtual Status putHost(const HostRecord& host) = 0;  // insert or replace
  virtual Status deleteHost(const std::string& name) = 0;
  virtual Result<std::vector<HostRecord>> hosts() = 0;  // by name

  virtual Status putVm(const VmRecord& vm) = 0;  // insert or replace
  virtual Status deleteVm(const std::string& name) = 0;
  virtual Result<std::vector<VmRecord>> vms() = 0;  // by name

  // Append-only event log. Returns the event with its id set.
  virtual Result<EventRecord> appendEvent(EventRecord event) = 0;
  // Events with id > after_id, oldest first, at most `limit`.
  virtual Result<std::vector<EventRecord>> eventsSince(int64_t after_id, int limit) = 0;
  virtual Result<int64_t> eventCount() = 0;
  // The newest event's id; 0 when none was ever appended. Ids keep growing
  // after old events are pruned.
  virtual Result<int64_t> lastEventId() = 0;
  // Event log retention (cluster.event_retention): removes the oldest events
  // while they are older than `before_ms` (t_ms < before_ms) or more than
  // `keep_at_most` rows are left, at most `max_rows` of them per call (the
  // caller prunes a little per pass). Returns how many were removed.
  // Errors: kInvalidArgument for a negative keep_at_most or max_rows < 1.
  virtual Result<int64_t> pruneEvents(Millis before_ms, int64_t keep_at_most, int max_rows) = 0;
  // What the event log takes on disk, in bytes (SQLite: its table's and
  // index's pages); -1 when the store cannot tell (etcd).
  virtual Result<int64_t> eventLogBytes() = 0;

  // Incidents (schema v2): insert when id == 0 (returns the new id), else
  // replace. incidents() returns the open ones and the `recent` newest closed
  // ones, oldest first.
  virtual Result<int64_t> putIncident(const IncidentRecord& incident) = 0;
  virtual Result<std::vector<IncidentRecord>> incidents(int recent) = 0;

  // The action journal (schema v2): an action is written before it starts and
  // removed when it ends; openActions() lists those a restart must resume.
  virtual Result<int64_t> beginAction(const ActionRecord& action) = 0;
  virtual Status endAction(int64_t id) = 0;
  virtual Result<std::vector<ActionRecord>> openActions() = 0;

  // The backup catalogue (schema v3, docs/backups.md): the VM backups that
  // agents reported done. putBackup inserts or replaces by id; deleteBackup is
  // ok when absent; backups() lists one VM's ("" = all), by vm then id (the
  // id starts with its UTC time: oldest first).
  virtual Status putBackup(const BackupRecord& backup) = 0;
  virtual Status deleteBackup(const std::string& vm, const std::string& id) = 0;
  virtual Result<std::vector<BackupRecord>> backups(const std::string& vm) = 0;

  // Everything the store holds (one consistent read for SQLite; for etcd, a
  // read per kind: stop the writers first, as migrate-store requires).
  virtual Result<StoreSnapshot> exportState() = 0;
  // Writes `snapshot` into this store, keeping every id and version; later
  // ids continue after the snapshot's. A store that holds anything is refused
  // (kFailedPrecondition) unless `replace`, which removes what it holds first.
  // kInvalidArgument when the snapshot's schema is not this store's.
  virtual Status importState(const StoreSnapshot& snapshot, bool replace) = 0;
};

// ---- files on disk: start-up checks and backups (not for ":memory:") ----

// What a database file holds, as a read-only look sees it (inspectDatabase).
struct DatabaseFacts {
  bool exists = false;         // the main file exists (it may be 0 bytes)
  int64_t file_bytes = 0;      // size of the main file
  int schema_version = 0;      // PRAGMA user_version (0 = never migrated)
  int64_t policy_version = 0;  // newest policy version (0 = none)
  int64_t event_count = 0;
  // integrity_check found only index entries out of step with their tables
  // (the rows are intact; rebuildIndexes() repairs it without loss).
  std::string index_damage;
};

// Looks at the database at `path` without changing it: first its WAL
// (`path`-wal) frame by frame, the way SQLite will read it, then
// `PRAGMA integrity_check` (quick_check plus every index against its table)
// on a read-only connection. Errors (one line, naming the file):
// kFailedPrecondition "database '...' is damaged: ..." when the check fails
// (other than index_damage, see DatabaseFacts) or the WAL holds committed frames SQLite would drop
// without a word (a WAL cut off mid-frame, bytes overwritten in a committed
// frame, a damaged WAL header); kUnavailable for I/O errors. A torn last frame
// that no later commit follows is an unfinished write (kill -9) and is fine.
// Blocks for one read of the whole file (quick_check).
Result<DatabaseFacts> inspectDatabase(const std::string& path);

// The argument check every Store::pruneEvents makes first (kInvalidArgument,
// in the words of its contract).
inline Status checkPruneEventsArgs(int64_t keep_at_most, int max_rows) {
  if (keep_at_most >= 0 && max_rows >= 1) return Status::ok();
  return invalidArgument("keep_at_most must be >= 0 and max_rows >= 1, got " +
                         std::to_string(keep_at_most) + " and " + std::to_string(max_rows));
}

// REINDEX of the database at `path`, then integrity_check must pass.
// For DatabaseFacts::index_damage. Errors: kFailedPrecondition (still damaged).
Status rebuildIndexes(const std::string& path);

struct BackupInfo {
  std::string path;
  int64_t bytes = 0;
  int64_t pages = 0;
  int64_t policy_version = 0;
  double copy_seconds = 0;   // sqlite3_backup_step, the only time the source is read-locked
  double check_seconds = 0;  // quick_check of the copy
};

// Copies the live database at `source_path` to `dest_path` with SQLite's
// online backup API on its own read-only connection (one read transaction, so
// the copy is one consistent snapshot; in WAL mode it blocks no writer of
// other connections). Writes `dest_path`.tmp, switches the copy to
// journal_mode=DELETE (one self-contained file), runs quick_check on it,
// fsyncs and renames it into place. Safe on any thread; blocks for the copy.
// Errors: kUnavailable (busy, I/O), kFailedPrecondition (the copy fails
// quick_check).
Result<BackupInfo> backupDatabase(const std::string& source_path, const std::string& dest_path);

// For tests only: reach a database file behind the Store's back, so tests need
// not include sqlite3.h. Implemented next to SqliteStore.
//
// Sets PRAGMA user_version of the existing database file at `path`.
Status setSchemaVersionForTest(const std::string& path, int version);
// Runs `sql` (statements, no rows) on the database file at `path`: to build
// a database of an older schema.
Status execForTest(const std::string& path, const std::string& sql);
// Runs one read-only statement on the database file at `path` (read-only
// connection) and returns its rows, every column as text (NULL as "").
Result<std::vector<std::vector<std::string>>> queryForTest(const std::string& path,
                                                           const std::string& sql);

}  // namespace tw
