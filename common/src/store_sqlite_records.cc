// SqliteStore's records of the cluster: policies and their tiers, hosts,
// vms, and the catalogue of VM disk backups.
#include "store_sqlite.h"

#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace tw::sqlite {

Result<int64_t> SqliteStore::insertPolicy(const PolicyRecord& record) {
  Json files = Json::array();
  for (const PolicyFile& f : record.files) files.push_back(f);
  Result<std::string> files_json = dumpJson(files);
  if (!files_json.isOk()) return files_json.status().withContext("storing policy");
  Status status =
      exec(wdb(), "INSERT INTO policies (applied_ms, digest, files_json) VALUES (?, ?, ?)",
           record.applied_ms, record.digest, *files_json);
  if (!status.isOk()) return status.withContext("storing policy");
  auto version = static_cast<int64_t>(sqlite3_last_insert_rowid(db()));
  if (in_transaction_) {
    committed_policy_ = version;  // told after COMMIT (see transaction())
  } else if (policy_listener_) {
    policy_listener_(version);
  }
  return version;
}

Result<std::optional<PolicyRecord>> SqliteStore::latestPolicy() {
  const char* context = "loading latest policy";
  Result<Statement> stmt = query(db(),
                                 "SELECT version, applied_ms, digest, files_json FROM policies "
                                 "ORDER BY version DESC LIMIT 1");
  if (!stmt.isOk()) return stmt.status().withContext(context);
  Result<bool> row = stmt->step();
  if (!row.isOk()) return row.status().withContext(context);
  if (!*row) return std::optional<PolicyRecord>();
  PolicyRecord record;
  record.version = stmt->int64At(0);
  record.applied_ms = stmt->int64At(1);
  record.digest = stmt->textAt(2);
  Result<std::vector<PolicyFile>> files = decodeFiles(stmt->textAt(3));
  if (!files.isOk()) {
    return internalError("policy version " + std::to_string(record.version) +
                         " has corrupt files_json: " + files.status().message())
        .withContext(context);
  }
  record.files = std::move(*files);
  return std::optional<PolicyRecord>(std::move(record));
}

Status SqliteStore::replaceTiers(int64_t policy_version, const std::vector<TierSpec>& tiers) {
  Status status = atomically(wdb(), [&]() -> Status {
    TW_RETURN_IF_ERROR(exec(db(), "DELETE FROM tiers"));
    int64_t ord = 0;
    for (const TierSpec& tier : tiers) {
      Result<std::string> spec_json = dumpJson(Json(tier));
      if (!spec_json.isOk()) return spec_json.status().withContext("tier " + inQuotes(tier.name));
      Status s = exec(db(),
                      "INSERT INTO tiers (name, policy_version, ord, image, replicas, vcpus,"
                      " memory_mib, spec_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                      tier.name, policy_version, ord++, tier.image, tier.replicas, tier.vcpus,
                      tier.memory_mib, *spec_json);
      if (!s.isOk()) return s.withContext("tier " + inQuotes(tier.name));
    }
    return Status::ok();
  });
  return status.withContext("replacing tiers of policy version " +
                            std::to_string(policy_version));
}

Status SqliteStore::putHost(const HostRecord& host) {
  return exec(wdb(),
              "INSERT OR REPLACE INTO hosts (name, state, state_since_ms, cpus, memory_mib, "
              "reason, watchdog_ms)"
              " VALUES (?, ?, ?, ?, ?, ?, ?)",
              host.name, toString(host.state), host.state_since_ms, host.capacity.cpus,
              host.capacity.memory_mib, host.reason, host.watchdog_ms)
      .withContext("storing host " + inQuotes(host.name));
}

Status SqliteStore::deleteHost(const std::string& name) {
  return exec(wdb(), "DELETE FROM hosts WHERE name = ?", name)
      .withContext("deleting host " + inQuotes(name));
}

Result<std::vector<HostRecord>> SqliteStore::hosts() {
  const char* context = "loading hosts";
  Result<Statement> stmt = query(
      db(),
      "SELECT name, state, state_since_ms, cpus, memory_mib, reason, watchdog_ms FROM hosts "
      "ORDER BY name");
  if (!stmt.isOk()) return stmt.status().withContext(context);
  std::vector<HostRecord> out;
  while (true) {
    Result<bool> row = stmt->step();
    if (!row.isOk()) return row.status().withContext(context);
    if (!*row) break;
    HostRecord h;
    h.name = stmt->textAt(0);
    std::string state = stmt->textAt(1);
    std::optional<HostState> parsed = hostStateFromString(state);
    if (!parsed) return corrupt("host", h.name, "state", state).withContext(context);
    h.state = *parsed;
    h.state_since_ms = stmt->int64At(2);
    h.capacity.cpus = stmt->intAt(3);
    h.capacity.memory_mib = stmt->int64At(4);
    h.reason = stmt->textAt(5);
    h.watchdog_ms = stmt->int64At(6);
    out.push_back(std::move(h));
  }
  return out;
}

Status SqliteStore::putVm(const VmRecord& vm) {
  return exec(wdb(),
              "INSERT OR REPLACE INTO vms (name, tier, ordinal, host, epoch, state, health,"
              " restarts, relocations, reason, updated_ms)"
              " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
              vm.name, vm.tier, vm.ordinal, vm.host, vm.epoch, toString(vm.state),
              toString(vm.health), vm.restarts, vm.relocations, vm.reason, vm.updated_ms)
      .withContext("storing vm " + inQuotes(vm.name));
}

Status SqliteStore::deleteVm(const std::string& name) {
  return exec(wdb(), "DELETE FROM vms WHERE name = ?", name)
      .withContext("deleting vm " + inQuotes(name));
}

Result<std::vector<VmRecord>> SqliteStore::vms() {
  const char* context = "loading vms";
  Result<Statement> stmt =
      query(db(),
            "SELECT name, tier, ordinal, host, epoch, state, health, restarts,"
            " relocations, reason, updated_ms FROM vms ORDER BY name");
  if (!stmt.isOk()) return stmt.status().withContext(context);
  std::vector<VmRecord> out;
  while (true) {
    Result<bool> row = stmt->step();
    if (!row.isOk()) return row.status().withContext(context);
    if (!*row) break;
    VmRecord vm;
    vm.name = stmt->textAt(0);
    vm.tier = stmt->textAt(1);
    vm.ordinal = stmt->intAt(2);
    vm.host = stmt->textAt(3);
    vm.epoch = stmt->int64At(4);
    std::string state = stmt->textAt(5);
    std::optional<VmState> parsed_state = vmStateFromString(state);
    if (!parsed_state) return corrupt("vm", vm.name, "state", state).withContext(context);
    vm.state = *parsed_state;
    std::string health = stmt->textAt(6);
    std::optional<Health> parsed_health = healthFromString(health);
    if (!parsed_health) return corrupt("vm", vm.name, "health", health).withContext(context);
    vm.health = *parsed_health;
    vm.restarts = stmt->intAt(7);
    vm.relocations = stmt->intAt(8);
    vm.reason = stmt->textAt(9);
    vm.updated_ms = stmt->int64At(10);
    out.push_back(std::move(vm));
  }
  return out;
}

Status SqliteStore::putBackup(const BackupRecord& b) {
  return exec(wdb(),
              "INSERT OR REPLACE INTO backups (vm, id, tier, host, path, taken_ms, duration_ms,"
              " bytes, method, request) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
              b.vm, b.id, b.tier, b.host, b.path, b.taken_ms, b.duration_ms, b.bytes, b.method,
              b.request)
      .withContext("storing backup " + inQuotes(b.id) + " of vm " + inQuotes(b.vm));
}

Status SqliteStore::deleteBackup(const std::string& vm, const std::string& id) {
  return exec(wdb(), "DELETE FROM backups WHERE vm = ? AND id = ?", vm, id)
      .withContext("deleting backup " + inQuotes(id) + " of vm " + inQuotes(vm));
}

Result<std::vector<BackupRecord>> SqliteStore::backups(const std::string& vm) {
  const char* context = "loading the backup catalogue";
  Result<Statement> stmt = query(db(),
                                 "SELECT vm, id, tier, host, path, taken_ms, duration_ms, bytes,"
                                 " method, request FROM backups WHERE ? = '' OR vm = ?"
                                 " ORDER BY vm, id",
                                 vm, vm);
  if (!stmt.isOk()) return stmt.status().withContext(context);
  std::vector<BackupRecord> out;
  while (true) {
    Result<bool> row = stmt->step();
    if (!row.isOk()) return row.status().withContext(context);
    if (!*row) break;
    BackupRecord b;
    b.vm = stmt->textAt(0);
    b.id = stmt->textAt(1);
    b.tier = stmt->textAt(2);
    b.host = stmt->textAt(3);
    b.path = stmt->textAt(4);
    b.taken_ms = stmt->int64At(5);
    b.duration_ms = stmt->int64At(6);
    b.bytes = stmt->int64At(7);
    b.method = stmt->textAt(8);
    b.request = stmt->int64At(9);
    out.push_back(std::move(b));
  }
  return out;
}

}  // namespace tw::sqlite
