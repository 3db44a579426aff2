// EtcdStore's records of the cluster: policies and their tiers, hosts, vms,
// and the catalogue of VM disk backups.
#include "store_etcd_store.h"

#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace tw::etcd_store {

Result<int64_t> EtcdStore::insertPolicy(const PolicyRecord& record) {
  int64_t version = 0;
  Status s = stage([&](Pending& p) -> Status {
    Result<int64_t> id = nextId(p, "policy");
    if (!id.isOk()) return id.status();
    PolicyRecord stored = record;
    stored.version = *id;
    Result<std::string> value = dumpValue(policyJson(stored));
    if (!value.isOk()) return value.status();
    p.writes[dir("/policies/") + padded(*id)] = *value;
    p.policy_version = *id;
    version = *id;
    return Status::ok();
  });
  if (!s.isOk()) return s.withContext("storing policy");
  return version;
}

Result<std::optional<PolicyRecord>> EtcdStore::latestPolicy() {
  const char* context = "loading latest policy";
  Result<Counter> last = readCounter(overlay(), "policy");
  if (!last.isOk()) return last.status().withContext(context);
  if (last->last == 0) return std::optional<PolicyRecord>();
  Result<std::optional<std::string>> value = get(overlay(), dir("/policies/") + padded(last->last));
  if (!value.isOk()) return value.status().withContext(context);
  if (!value->has_value()) {
    return internalError("policy version " + std::to_string(last->last) + " is missing from etcd")
        .withContext(context);
  }
  Result<PolicyRecord> p = decodeValue<PolicyRecord>(dir("/policies/") + padded(last->last), **value, policyFrom);
  if (!p.isOk()) return p.status().withContext(context);
  return std::optional<PolicyRecord>(std::move(*p));
}

Status EtcdStore::replaceTiers(int64_t policy_version, const std::vector<TierSpec>& tiers) {
  Status s = stage([&](Pending& p) -> Status {
    Result<std::optional<std::string>> policy = get(&p, dir("/policies/") + padded(policy_version));
    if (!policy.isOk()) return policy.status();
    if (!policy->has_value()) {
      return failedPrecondition("policy version " + std::to_string(policy_version) + " does not exist");
    }
    std::set<std::string> names;
    std::vector<std::pair<std::string, std::string>> puts;
    int64_t ord = 0;
    for (const TierSpec& tier : tiers) {
      if (!names.insert(tier.name).second) return failedPrecondition("tier " + inQuotes(tier.name) + " appears twice");
      Result<std::string> value = dumpValue(tierJson(policy_version, ord++, Json(tier)));
      if (!value.isOk()) return value.status().withContext("tier " + inQuotes(tier.name));
      puts.emplace_back(dir("/tiers/") + tier.name, *value);
    }
    // etcd refuses a txn that deletes a range and puts a key inside it
    // ("duplicate key given in txn request"): delete the old tiers one by
    // one, and only those not written again.
    auto old = list(&p, dir("/tiers/"), etcdPrefixEnd(dir("/tiers/")), 0);
    if (!old.isOk()) return old.status();
    for (const auto& kv : *old) p.writes[kv.first] = std::nullopt;
    for (auto& [key, value] : puts) p.writes[key] = std::move(value);
    return Status::ok();
  });
  return s.withContext("replacing tiers of policy version " + std::to_string(policy_version));
}

Status EtcdStore::putHost(const HostRecord& host) {
  return putRecord(dir("/hosts/") + host.name, Json(host)).withContext("storing host " + inQuotes(host.name));
}

Status EtcdStore::deleteHost(const std::string& name) {
  return deleteKey(dir("/hosts/") + name).withContext("deleting host " + inQuotes(name));
}

Result<std::vector<HostRecord>> EtcdStore::hosts() {
  return listRecords<HostRecord>(dir("/hosts/"), hostFrom, "loading hosts");
}

Status EtcdStore::putVm(const VmRecord& vm) {
  return putRecord(dir("/vms/") + vm.name, Json(vm)).withContext("storing vm " + inQuotes(vm.name));
}

Status EtcdStore::deleteVm(const std::string& name) {
  return deleteKey(dir("/vms/") + name).withContext("deleting vm " + inQuotes(name));
}

Result<std::vector<VmRecord>> EtcdStore::vms() { return listRecords<VmRecord>(dir("/vms/"), vmFrom, "loading vms"); }

// P/backups/<vm>/<id>: the record as JSON (BackupRecord's codec).
Status EtcdStore::putBackup(const BackupRecord& b) {
  return putRecord(dir("/backups/") + b.vm + "/" + b.id, Json(b))
      .withContext("storing backup " + inQuotes(b.id) + " of vm " + inQuotes(b.vm));
}

Status EtcdStore::deleteBackup(const std::string& vm, const std::string& id) {
  return deleteKey(dir("/backups/") + vm + "/" + id)
      .withContext("deleting backup " + inQuotes(id) + " of vm " + inQuotes(vm));
}

Result<std::vector<BackupRecord>> EtcdStore::backups(const std::string& vm) {
  const std::string prefix = dir("/backups/") + (vm.empty() ? "" : vm + "/");
  return listRecords<BackupRecord>(
      prefix, [](const Json& j) { return j.get<BackupRecord>(); }, "loading the backup catalogue");
}

}  // namespace tw::etcd_store
