// EtcdStore's incidents (what happened to a subject, step by step) and the
// action journal (actions begun and not yet ended).
#include "store_etcd_store.h"

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

namespace tw::etcd_store {

Result<int64_t> EtcdStore::putIncident(const IncidentRecord& incident) {
  int64_t id = incident.id;
  Status s = stage([&](Pending& p) -> Status {
    IncidentRecord stored = incident;
    if (stored.id == 0) {
      Result<int64_t> next = nextId(p, "incident");
      if (!next.isOk()) return next.status();
      stored.id = *next;
    }
    Result<std::string> value = dumpValue(incidentJson(stored));
    if (!value.isOk()) return value.status();
    p.writes[dir("/incidents/") + padded(stored.id)] = *value;
    id = stored.id;
    return Status::ok();
  });
  if (!s.isOk()) return s.withContext("storing incident of " + inQuotes(incident.subject));
  return id;
}

Result<std::vector<IncidentRecord>> EtcdStore::incidents(int recent) {
  // All of them, then the open ones and the newest `recent` closed ones.
  // TODO(issue 14): an index of open incidents when the history grows large.
  Result<std::vector<IncidentRecord>> all = listRecords<IncidentRecord>(dir("/incidents/"), incidentFrom, "loading incidents");
  if (!all.isOk()) return all;
  int64_t closed = std::count_if(all->begin(), all->end(), [](const IncidentRecord& i) { return i.closed_ms != 0; });
  int64_t skip = std::max<int64_t>(0, closed - std::max(recent, 0));
  std::vector<IncidentRecord> out;
  for (IncidentRecord& i : *all) {
    if (i.closed_ms != 0 && skip > 0) {
      --skip;
      continue;
    }
    out.push_back(std::move(i));
  }
  return out;
}

Result<int64_t> EtcdStore::beginAction(const ActionRecord& action) {
  int64_t id = 0;
  Status s = stage([&](Pending& p) -> Status {
    Result<int64_t> next = nextId(p, "action");
    if (!next.isOk()) return next.status();
    ActionRecord stored = action;
    stored.id = *next;
    Result<std::string> value = dumpValue(actionJson(stored));
    if (!value.isOk()) return value.status();
    p.writes[dir("/actions/") + padded(stored.id)] = *value;
    id = stored.id;
    return Status::ok();
  });
  if (!s.isOk()) return s.withContext("journaling " + action.kind + " of " + inQuotes(action.subject));
  return id;
}

Status EtcdStore::endAction(int64_t id) {
  return deleteKey(dir("/actions/") + padded(id)).withContext("ending action " + std::to_string(id));
}

Result<std::vector<ActionRecord>> EtcdStore::openActions() {
  return listRecords<ActionRecord>(dir("/actions/"), actionFrom, "loading the action journal");
}

}  // namespace tw::etcd_store
