// EtcdStore's whole state as one StoreSnapshot: exportState reads every
// record, importState clears the store and writes a snapshot in batches that
// fit etcd's limits, behind a marker that open() refuses until it is done.
#include "store_etcd_store.h"

#include <algorithm>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "tw/log.h"

namespace tw::etcd_store {

namespace {

// The data of a store: what importState() clears and emptiness counts.
constexpr const char* kDataDirs[] = {"/policies/", "/tiers/", "/hosts/",  "/vms/",
                                     "/events/",   "/incidents/", "/actions/", "/meta/last/",
                                     "/backups/"};

}  // namespace

Result<StoreSnapshot> EtcdStore::exportState() {
  const char* context = "exporting the etcd store";
  if (txn_) return failedPrecondition("exportState inside a transaction").withContext(context);
  StoreSnapshot snap;
  snap.schema_version = schema_version_;
  auto policies = listRecords<PolicyRecord>(dir("/policies/"), policyFrom, context);
  if (!policies.isOk()) return policies.status();
  snap.policies = std::move(*policies);
  auto tiers = list(nullptr, dir("/tiers/"), etcdPrefixEnd(dir("/tiers/")), 0);
  if (!tiers.isOk()) return tiers.status().withContext(context);
  for (const auto& entry : *tiers) {
    const std::string& key = entry.first;  // named: a lambda cannot capture a binding (clang)
    Result<StoredTier> t = decodeValue<StoredTier>(key, entry.second, [&](const Json& j) {
      return StoredTier{key.substr(dir("/tiers/").size()), j.at("policy_version").get<int64_t>(),
                        j.at("ord").get<int64_t>(), j.at("spec").dump()};
    });
    if (!t.isOk()) return t.status().withContext(context);
    snap.tiers.push_back(std::move(*t));
  }
  std::sort(snap.tiers.begin(), snap.tiers.end(), [](const StoredTier& a, const StoredTier& b) { return a.ord < b.ord; });
  auto h = hosts();
  if (!h.isOk()) return h.status();
  snap.hosts = std::move(*h);
  auto v = vms();
  if (!v.isOk()) return v.status();
  snap.vms = std::move(*v);
  auto e = eventsSince(0, std::numeric_limits<int>::max());
  if (!e.isOk()) return e.status();
  snap.events = std::move(*e);
  auto i = listRecords<IncidentRecord>(dir("/incidents/"), incidentFrom, context);
  if (!i.isOk()) return i.status();
  snap.incidents = std::move(*i);
  auto a = openActions();
  if (!a.isOk()) return a.status();
  snap.actions = std::move(*a);
  auto b = backups("");
  if (!b.isOk()) return b.status();
  snap.backups = std::move(*b);
  return snap;
}

Status EtcdStore::importState(const StoreSnapshot& snap, bool replace) {
  const std::string context = "importing into the etcd store " + inQuotes(options_.prefix);
  if (txn_) return failedPrecondition("importState inside a transaction").withContext(context);
  if (snap.schema_version != schema_version_) {
    return invalidArgument("the snapshot has schema version " + std::to_string(snap.schema_version) +
                           ", this store " + std::to_string(schema_version_))
        .withContext(context);
  }
  if (!options_.guard) {
    Result<EtcdRangeResult> leader = client_->range(etcdLeaderKey(options_.prefix), "");
    if (!leader.isOk()) return leader.status().withContext(context);
    if (!leader->kvs.empty()) {
      return failedPrecondition("a controller leads this cluster (leader key " + inQuotes(etcdLeaderKey(options_.prefix)) +
                                " is held by " + inQuotes(leader->kvs[0].value) + "); stop every controller first")
          .withContext(context);
    }
  }
  int64_t held = 0;
  for (const char* sub : kDataDirs) {
    Result<EtcdRangeResult> r = client_->range(dir(sub), etcdPrefixEnd(dir(sub)), 0, true);
    if (!r.isOk()) return r.status().withContext(context);
    held += r->count;
  }
  if (held > 0 && !replace) {
    return failedPrecondition("it holds " + std::to_string(held) +
                              " keys; refusing to import over them (use --force to replace them)")
        .withContext(context);
  }

  // 1: the marker and the clearing, in one txn; then the records in batches
  // that fit etcd's limits; last the counters and the marker's removal. A
  // store left with the marker is refused by open() until an import finishes.
  const std::string marker = dir("/meta/importing");
  std::vector<EtcdOp> first{EtcdOp::put(marker, "migrate-store")};
  for (const char* sub : kDataDirs) first.push_back(EtcdOp::del(dir(sub), etcdPrefixEnd(dir(sub))));
  Result<int64_t> sent = send(first, {});
  if (!sent.isOk()) return sent.status().withContext(context);
  counter_cache_.clear();

  std::vector<std::pair<std::string, Json>> records;
  for (const PolicyRecord& p : snap.policies) records.emplace_back(dir("/policies/") + padded(p.version), policyJson(p));
  for (const StoredTier& t : snap.tiers) {
    Result<Json> spec = parseJson(t.spec_json);
    if (!spec.isOk()) return invalidArgument("tier " + inQuotes(t.name) + " has a bad spec").withContext(context);
    records.emplace_back(dir("/tiers/") + t.name, tierJson(t.policy_version, t.ord, *spec));
  }
  for (const HostRecord& h : snap.hosts) records.emplace_back(dir("/hosts/") + h.name, Json(h));
  for (const VmRecord& v : snap.vms) records.emplace_back(dir("/vms/") + v.name, Json(v));
  for (const EventRecord& e : snap.events) records.emplace_back(dir("/events/") + padded(e.id), Json(e));
  for (const IncidentRecord& i : snap.incidents) records.emplace_back(dir("/incidents/") + padded(i.id), incidentJson(i));
  for (const ActionRecord& a : snap.actions) records.emplace_back(dir("/actions/") + padded(a.id), actionJson(a));
  for (const BackupRecord& b : snap.backups) records.emplace_back(dir("/backups/") + b.vm + "/" + b.id, Json(b));

  std::vector<EtcdOp> batch;
  int64_t batch_bytes = 0;
  const int64_t max_ops = std::max(1, options_.max_txn_ops - 2);
  const int64_t max_bytes = options_.max_request_bytes / 2;
  auto flush = [&]() -> Status {
    if (batch.empty()) return Status::ok();
    Result<int64_t> r = send(batch, {});
    batch.clear();
    batch_bytes = 0;
    return r.status();
  };
  for (const auto& [key, j] : records) {
    Result<std::string> value = dumpValue(j);
    if (!value.isOk()) return value.status().withContext(context + ", key " + inQuotes(key));
    int64_t bytes = static_cast<int64_t>(key.size() + value->size()) * 4 / 3 + 64;
    if (static_cast<int64_t>(batch.size()) >= max_ops || (batch_bytes + bytes > max_bytes && !batch.empty())) {
      TW_RETURN_IF_ERROR(flush().withContext(context));
    }
    batch.push_back(EtcdOp::put(key, *value));
    batch_bytes += bytes;
  }
  TW_RETURN_IF_ERROR(flush().withContext(context));

  auto maxId = [](const auto& v) {
    int64_t m = 0;
    for (const auto& r : v) m = std::max<int64_t>(m, r.id);
    return m;
  };
  int64_t last_policy = 0;
  for (const PolicyRecord& p : snap.policies) last_policy = std::max(last_policy, p.version);
  std::vector<EtcdOp> last{EtcdOp::put(dir("/meta/last/policy"), std::to_string(last_policy)),
                           EtcdOp::put(dir("/meta/last/event"), std::to_string(maxId(snap.events))),
                           EtcdOp::put(dir("/meta/last/incident"), std::to_string(maxId(snap.incidents))),
                           EtcdOp::put(dir("/meta/last/action"), std::to_string(maxId(snap.actions))),
                           EtcdOp::del(marker)};
  sent = send(last, {});
  if (!sent.isOk()) return sent.status().withContext(context);
  log::info("imported {} policies, {} tiers, {} hosts, {} vms, {} events, {} incidents, {} actions into etcd {}",
            snap.policies.size(), snap.tiers.size(), snap.hosts.size(), snap.vms.size(), snap.events.size(),
            snap.incidents.size(), snap.actions.size(), inQuotes(options_.prefix));
  return Status::ok();
}

}  // namespace tw::etcd_store
