// The controller's memory: one SQLite file in the state dir (or ":memory:").
// This is the only place that includes sqlite3.h. WAL mode, statements always
// bound, migrations numbered by PRAGMA user_version (each in one transaction;
// a database with a newer schema than this build knows is refused).
//
// Not thread-safe: the controller's loop thread owns the Store.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "tw/model.h"
#include "tw/status.h"

namespace tw {

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

  // Runs `body` in one transaction (BEGIN IMMEDIATE): committed when body
  // returns ok, rolled back otherwise (the body's status is returned).
  // Nesting is not supported.
  virtual Status transaction(const std::function<Status()>& body) = 0;

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
};

// For tests only: reach a database file behind the Store's back, so tests need
// not include sqlite3.h. Implemented next to SqliteStore.
//
// Sets PRAGMA user_version of the existing database file at `path`.
Status setSchemaVersionForTest(const std::string& path, int version);
// Runs one read-only statement on the database file at `path` (read-only
// connection) and returns its rows, every column as text (NULL as "").
Result<std::vector<std::vector<std::string>>> queryForTest(const std::string& path,
                                                           const std::string& sql);

}  // namespace tw
