// SqliteStore's incidents (what happened to a subject, step by step) and the
// action journal (actions begun and not yet ended).
#include "store_sqlite.h"

#include <string>
#include <utility>
#include <vector>

namespace tw::sqlite {

Result<int64_t> SqliteStore::putIncident(const IncidentRecord& incident) {
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

Result<std::vector<IncidentRecord>> SqliteStore::incidents(int recent) {
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

Result<int64_t> SqliteStore::beginAction(const ActionRecord& action) {
  Status s = exec(wdb(),
                  "INSERT INTO actions (kind, subject, data_json, started_ms) VALUES (?, ?, ?, ?)",
                  action.kind, action.subject, action.data_json, action.started_ms);
  if (!s.isOk()) return s.withContext("journaling " + action.kind + " of " + inQuotes(action.subject));
  return static_cast<int64_t>(sqlite3_last_insert_rowid(db()));
}

Status SqliteStore::endAction(int64_t id) {
  return exec(wdb(), "DELETE FROM actions WHERE id = ?", id)
      .withContext("ending action " + std::to_string(id));
}

Result<std::vector<ActionRecord>> SqliteStore::openActions() {
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

}  // namespace tw::sqlite
