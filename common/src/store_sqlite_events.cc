// SqliteStore's event log: appending, reading after an id, counting, and
// the retention (pruneEvents) with the log's size on disk.
#include "store_sqlite.h"

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

namespace tw::sqlite {

Result<EventRecord> SqliteStore::appendEvent(EventRecord event) {
  Status status = exec(wdb(),
                       "INSERT INTO events (t_ms, level, kind, subject, message)"
                       " VALUES (?, ?, ?, ?, ?)",
                       event.t_ms, event.level, event.kind, event.subject, event.message);
  if (!status.isOk()) return status.withContext("appending event " + inQuotes(event.kind));
  event.id = sqlite3_last_insert_rowid(db());
  return event;
}

Result<std::vector<EventRecord>> SqliteStore::eventsSince(int64_t after_id, int limit) {
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

Result<int64_t> SqliteStore::eventCount() {
  Result<Statement> stmt = query(db(), "SELECT count(*) FROM events");
  if (!stmt.isOk()) return stmt.status().withContext("counting events");
  Result<bool> row = stmt->step();
  if (!row.isOk()) return row.status().withContext("counting events");
  return stmt->int64At(0);
}

Result<int64_t> SqliteStore::lastEventId() {
  Result<Statement> stmt = query(db(), "SELECT coalesce(max(id), 0) FROM events");
  if (!stmt.isOk()) return stmt.status().withContext("reading the last event id");
  Result<bool> row = stmt->step();
  if (!row.isOk()) return row.status().withContext("reading the last event id");
  return stmt->int64At(0);
}

Result<int64_t> SqliteStore::pruneEvents(Millis before_ms, int64_t keep_at_most, int max_rows) {
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

Result<int64_t> SqliteStore::eventLogBytes() {
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

}  // namespace tw::sqlite
