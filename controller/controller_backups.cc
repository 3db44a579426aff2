// The controller's side of VM backups (docs/backups.md): the catalogue in the
// store, backup requests, restores, and the staleness warning of a tier.
// The agents take the backups (agent/backup_runner.h).
#include <algorithm>

#include "controller/controller.h"
#include "tw/json.h"
#include "tw/log.h"

namespace tw {

namespace {

bool isBackupId(const std::string& id) {
  // <YYYYMMDD>T<HHMMSS>Z-<8 hex>, as BackupRunner names them.
  if (id.size() != 25 || id[8] != 'T' || id[15] != 'Z' || id[16] != '-') return false;
  for (size_t i = 0; i < id.size(); ++i) {
    if (i == 8 || i == 15 || i == 16) continue;
    const char c = id[i];
    const bool ok = i < 16 ? (c >= '0' && c <= '9') : ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'));
    if (!ok) return false;
  }
  return true;
}

}  // namespace

Status Controller::loadBackups() {
  auto all = store_.backups("");
  if (!all.isOk()) return all.status().withContext("loading the backup catalogue");
  backups_.load(*all);
  backups_since_ms_ = clock_.nowMs();
  return Status::ok();
}

void Controller::handleBackupEvent(const AgentEvent& e) {
  const BackupRecord& r = e.backup;
  if (r.id.empty() || r.vm != e.vm || !isBackupId(r.id)) return;  // nothing to catalogue
  if (e.kind == "backup.done") {
    BackupRecord stored = r;
    stored.host = e.host;
    stored.error.clear();
    Status s = store_.transaction([&]() -> Status {
      TW_RETURN_IF_ERROR(store_.putBackup(stored));
      for (const std::string& id : e.pruned) {
        if (isBackupId(id)) TW_RETURN_IF_ERROR(store_.deleteBackup(r.vm, id));
      }
      return Status::ok();
    });
    if (!s.isOk()) {
      log::error("cataloguing backup '{}' of vm '{}': {}", r.id, r.vm, s.toString());
      return;
    }
    backups_.onDone(stored);
  } else if (e.kind == "backup.failed") {
    backups_.onFailed(r);
  } else {
    return;
  }
  assignmentsTouched(r.vm, false);  // an answered request leaves the assignment
  publishAssignments();
}

Result<int64_t> Controller::backupVm(const std::string& name) {
  auto it = vms_.find(name);
  if (it == vms_.end()) return notFound("no vm named '" + name + "'");
  const VmRecord& vm = it->second;
  const TierSpec* tier = policy_.findTier(vm.tier);
  if (tier == nullptr || !tier->backup.enabled())
    return failedPrecondition("vm '" + name + "': its tier '" + vm.tier +
                              "' has no backup (add backup: { every, keep, to } on shared storage)");
  if (vm.host.empty() || vm.state != VmState::kRunning)
    return failedPrecondition("vm '" + name + "' is " + toString(vm.state) +
                              ", not running: a backup copies a running VM's disk");
  const int64_t id = backups_.request(name);
  emit("info", "backup.requested", "vm/" + name,
       "backup of vm '" + name + "' on host '" + vm.host + "' requested (request " +
           std::to_string(id) + ")");
  assignmentsTouched(name, false);
  publishAssignments();
  return id;
}

Result<int64_t> Controller::restoreVm(const std::string& name, const std::string& backup_id) {
  if (!isBackupId(backup_id))
    return invalidArgument("expected a backup id like 20261206T180000Z-1a2b3c4d, got '" +
                           backup_id.substr(0, 64) + "'");
  auto it = vms_.find(name);
  if (it == vms_.end()) return notFound("no vm named '" + name + "'");
  VmRecord& vm = it->second;
  const auto& rt = vm_runtime_[name];
  if (!rt.migrate_to.empty())
    return failedPrecondition("vm '" + name + "' is migrating to host '" + rt.migrate_to +
                              "'; restore it when the migration is over");
  if (vm.state == VmState::kFencing || vm.state == VmState::kRecovering ||
      vm.state == VmState::kMigrating || !rt.evict_from.empty())
    return failedPrecondition("vm '" + name + "' is " + toString(vm.state) +
                              " (a recovery or a move is under way); restore it when it is over");
  if (vm.host.empty()) return failedPrecondition("vm '" + name + "' is not placed on any host");
  if (backups_.restore(name) != nullptr)
    return failedPrecondition("vm '" + name + "' is being restored already");
  auto list = store_.backups(name);
  if (!list.isOk()) return list.status().withContext("restoring vm '" + name + "'");
  auto b = std::find_if(list->begin(), list->end(),
                        [&](const BackupRecord& r) { return r.id == backup_id; });
  if (b == list->end())
    return notFound("vm '" + name + "' has no backup '" + backup_id + "' (twctl get backups " +
                    name + ")");
  int64_t restore_id = 0;
  Status s = store_.transaction([&]() -> Status {
    ++vm.epoch;
    vm.health = Health::kUnknown;
    restore_id = backups_.startRestore(name, vm.epoch, *b);
    emit("warn", "backup.restore_requested", "vm/" + name,
         "restore of vm '" + name + "' on host '" + vm.host + "' from backup '" + backup_id +
             "' requested: it is stopped, its disk replaced, and started again (epoch " +
             std::to_string(vm.epoch) + ")");
    setVmState(vm, VmState::kRestarting, "restoring from backup '" + backup_id + "'");
    saveVm(vm);
    return Status::ok();
  });
  if (!s.isOk()) {
    backups_.finishRestore(name);
    return s;
  }
  assignmentsTouched(name, false);
  publishAssignments();
  return restore_id;
}

void Controller::trackRestores() {
  // Only the VMs with a restore under way, in name order as vms_: a tick
  // costs nothing for the others (issue #16: it walked every VM).
  for (const std::string& name : backups_.restoringVms()) {
    auto v = vms_.find(name);
    if (v == vms_.end()) continue;
    const VmRecord& vm = v->second;
    const PendingRestore* r = backups_.restore(name);
    if (r == nullptr) continue;
    if (vm.epoch != r->epoch) {  // moved on (recovered elsewhere, restarted): not ours to finish
      emit("warn", "backup.restore_abandoned", "vm/" + name,
           "restore of vm '" + name + "' from backup '" + r->from.id + "' abandoned: its epoch moved on to " +
               std::to_string(vm.epoch));
      backups_.finishRestore(name);
      assignmentsTouched(name, false);
      continue;
    }
    if (vm.state != VmState::kRunning) continue;
    emit("info", "backup.restored", "vm/" + name,
         "vm '" + name + "' runs again on host '" + vm.host + "' from backup '" + r->from.id + "'");
    backups_.finishRestore(name);
    assignmentsTouched(name, false);
  }
}

void Controller::addBackupFields(Assignment& a) const {
  a.backup_request = backups_.pendingRequest(a.vm);
  if (const PendingRestore* r = backups_.restore(a.vm); r != nullptr && r->epoch == a.epoch) {
    a.restore_id = r->id;
    a.restore_from = r->from.path;
  }
}

Result<Json> Controller::backupsJson(const std::string& vm) {
  if (!vm.empty() && vms_.count(vm) == 0) return notFound("no vm named '" + vm + "'");
  auto list = store_.backups(vm);
  if (!list.isOk()) return list.status();
  Json out = Json::array();
  for (const BackupRecord& b : *list) out.push_back(b);
  return Json{{"backups", out}};
}

std::vector<std::string> Controller::backupWarnings(const TierSpec& t) const {
  std::vector<std::string> out;
  if (!t.backup.enabled()) return out;
  const Millis now = clock_.nowMs();
  for (const auto& [name, vm] : vms_) {
    if (vm.tier != t.name) continue;
    std::string w = backups_.staleness(name, t.backup, now, backups_since_ms_);
    if (!w.empty()) out.push_back(std::move(w));
  }
  return out;
}

}  // namespace tw
