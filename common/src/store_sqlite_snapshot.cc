// SqliteStore's whole state as one StoreSnapshot: exportState reads it in
// one transaction, importState writes it into an empty (or --force) database.
#include "store_sqlite.h"

#include <limits>
#include <string>
#include <utility>
#include <vector>

namespace tw::sqlite {

Result<StoreSnapshot> SqliteStore::exportState() {
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

Status SqliteStore::importState(const StoreSnapshot& snap, bool replace) {
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

}  // namespace tw::sqlite
