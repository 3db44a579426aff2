// EtcdStore's event log: appending, reading after an id, counting, and the
// retention (pruneEvents: one range delete of the oldest).
#include "store_etcd_store.h"

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

namespace tw::etcd_store {

Result<EventRecord> EtcdStore::appendEvent(EventRecord event) {
  Status s = stage([&](Pending& p) -> Status {
    Result<int64_t> id = nextId(p, "event");
    if (!id.isOk()) return id.status();
    event.id = *id;
    Result<std::string> value = dumpValue(Json(event));
    if (!value.isOk()) return value.status();
    p.writes[dir("/events/") + padded(*id)] = *value;
    ++p.new_events;
    return Status::ok();
  });
  if (!s.isOk()) return s.withContext("appending event " + inQuotes(event.kind));
  return event;
}

Result<std::vector<EventRecord>> EtcdStore::eventsSince(int64_t after_id, int limit) {
  const char* context = "loading events";
  if (limit <= 0) {
    return invalidArgument("limit must be positive, got " + std::to_string(limit)).withContext(context);
  }
  const std::string start = dir("/events/") + padded(std::max<int64_t>(after_id, -1) + 1);
  Result<std::vector<std::pair<std::string, std::string>>> kvs =
      list(overlay(), start, etcdPrefixEnd(dir("/events/")), limit);
  if (!kvs.isOk()) return kvs.status().withContext(context);
  return decodeAll<EventRecord>(*kvs, [](const Json& j) { return j.get<EventRecord>(); }, context);
}

Result<int64_t> EtcdStore::eventCount() {
  const std::string prefix = dir("/events/");
  Result<EtcdRangeResult> r = client_->range(prefix, etcdPrefixEnd(prefix), 0, /*count_only=*/true);
  if (!r.isOk()) return r.status().withContext("counting events");
  return r->count + (txn_ ? txn_->new_events : 0);
}

Result<int64_t> EtcdStore::lastEventId() {
  Result<Counter> last = readCounter(overlay(), "event");
  if (!last.isOk()) return last.status().withContext("reading the last event id");
  return last->last;
}

Result<int64_t> EtcdStore::pruneEvents(Millis before_ms, int64_t keep_at_most, int max_rows) {
  const char* context = "pruning the event log";
  if (Status st = checkPruneEventsArgs(keep_at_most, max_rows); !st.isOk()) return st.withContext(context);
  if (txn_) return failedPrecondition("pruneEvents inside a transaction").withContext(context);
  Result<int64_t> count = eventCount();
  if (!count.isOk()) return count.status().withContext(context);
  Result<std::vector<EventRecord>> oldest = eventsSince(0, max_rows);
  if (!oldest.isOk()) return oldest.status().withContext(context);
  const int64_t over = std::max<int64_t>(0, *count - keep_at_most);
  size_t n = 0;  // a prefix of the oldest: one range delete
  while (n < oldest->size() && (static_cast<int64_t>(n) < over || (*oldest)[n].t_ms < before_ms)) ++n;
  if (n == 0) return int64_t{0};
  const std::string from = dir("/events/") + padded((*oldest)[0].id);
  const std::string to = n < oldest->size() ? dir("/events/") + padded((*oldest)[n].id)
                                            : dir("/events/") + padded((*oldest)[n - 1].id + 1);
  Result<int64_t> sent = send({EtcdOp::del(from, to)}, {});
  if (!sent.isOk()) return sent.status().withContext(context);
  return static_cast<int64_t>(n);
}

// etcd keeps its own files (and their history until compaction): no
// figure for one key range.
Result<int64_t> EtcdStore::eventLogBytes() { return int64_t{-1}; }

}  // namespace tw::etcd_store
