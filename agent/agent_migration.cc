// Live migration, the agent's side: the source asks its migration worker,
// the destination waits for the domain to arrive; outcomes are reported.
#include "agent/agent.h"
#include "agent/agent_util.h"

#include <utility>

#include "tw/log.h"

namespace tw {

using agent_detail::isExecuting;
using agent_detail::vmId;
using agent_detail::seconds;

// The destination of a migration: the domain arrives by itself with the
// assignment's epoch; it is neither defined, started nor destroyed here. Only
// an older epoch's leftover is removed.
bool Agent::convergeIncoming(const Assignment& a, VmTrack& t, Millis now) {
  auto it = view_.find(a.vm);
  if (it == view_.end()) {  // not arrived (yet)
    if (!t.prepared) {
      Status st = builder_.prepareIncoming(a);
      if (!st.isOk()) {
        logFailureOnce(a.vm, fmt::format("preparing the arrival of {}: {}", vmId(a.vm, a.epoch),
                                         st.toString()));
      } else {
        clearFailure(a.vm);
        t.prepared = true;
      }
    }
    return false;
  }
  const DomainStatus& d = it->second;
  if (d.meta.epoch < a.epoch) {
    t.expect_running = false;
    prober_.forget(a.vm);
    return destroyAndUndefine(d, fmt::format("stale, epoch {} arrives by migration", a.epoch),
                              "info", /*announce_undefine=*/true);
  }
  // Its epoch (a newer one was removed by converge()).
  if (isActive(d.state) && !t.expect_running) {
    t.expect_running = true;
    t.launched = true;
    t.running_since_ms = now;
    log::info("{} arrived by migration: adopted", vmId(a.vm, a.epoch));
  }
  // Arrived and stopped while still incoming: the migration's outcome decides.
  t.down = false;
  t.fenced = false;
  return isExecuting(d.state) && ensureForwards(a, t);
}

// The VM left this host by migration at the assigned epoch: never started here
// again at this epoch. A leftover of it is removed.
bool Agent::convergeMigratedAway(const Assignment& a) {
  auto it = view_.find(a.vm);
  if (it == view_.end()) return false;
  return destroyAndUndefine(it->second, "it left this host by migration", "warn",
                            /*announce_undefine=*/false);
}

void Agent::requestMigration(const Assignment& a, VmTrack& t) {
  if (a.migrate_epoch <= 0) {
    refuseMigration(a, t, "the assignment carries no migrate_epoch");
    return;
  }
  t.migrate_tried = a.migrate_epoch;
  Migration m;
  MigrationRequest& r = m.request;
  r.vm = a.vm;
  r.epoch = a.epoch;
  r.migrate_epoch = a.migrate_epoch;
  r.dest_host = a.migrate_to_host.empty() ? a.migrate_to_uri : a.migrate_to_host;
  r.dest_uri = a.migrate_to_uri;
  r.options.live = true;
  r.options.unsafe = a.storage.kind == StorageKind::kShared;
  r.options.copy_storage = builder_.hasLocalDisk(a);
  r.options.dest_meta = DomainMeta{a.vm, a.tier, a.migrate_epoch, a.policy_version, a.spec_digest};
  migrations_[a.vm] = std::move(m);
  log::info("migrating {} to host '{}' ({}), as epoch {} there", vmId(a.vm, a.epoch), r.dest_host,
            r.dest_uri, a.migrate_epoch);
}

// A migration that cannot be done here: reported once per migrate_epoch.
bool Agent::refuseMigration(const Assignment& a, VmTrack& t, const std::string& why) {
  if (t.migrate_tried == a.migrate_epoch) return false;
  t.migrate_tried = a.migrate_epoch;
  const std::string dest = a.migrate_to_host.empty() ? a.migrate_to_uri : a.migrate_to_host;
  emit("warn", "vm.migrate_failed", a.vm, a.migrate_epoch,
       fmt::format("cannot migrate {} to host '{}': {}", vmId(a.vm, a.epoch), dest, why));
  return true;
}

std::vector<MigrationRequest> Agent::takeMigrations() {
  std::vector<MigrationRequest> out;
  const Millis now = clock_.nowMs();
  for (auto& [vm, m] : migrations_) {
    if (m.taken) continue;
    m.taken = true;
    m.taken_ms = now;
    out.push_back(m.request);
  }
  return out;
}

void Agent::onMigrationDone(const std::string& vm, int64_t migrate_epoch, const Status& outcome) {
  auto it = migrations_.find(vm);
  if (it == migrations_.end() || it->second.request.migrate_epoch != migrate_epoch) {
    log::warn("ignoring the outcome of a migration of vm '{}' (epoch {}) that is not under way", vm,
              migrate_epoch);
    return;
  }
  const Migration m = std::move(it->second);
  migrations_.erase(it);
  dirty_ = true;
  const MigrationRequest& r = m.request;
  const Millis took = clock_.nowMs() - m.taken_ms;
  if (!outcome.isOk()) {
    emit("warn", "vm.migrate_failed", vm, migrate_epoch,
         fmt::format("migrating {} to host '{}' failed after {}: {}; it keeps running here",
                     vmId(vm, r.epoch), r.dest_host, seconds(took), outcome.toString()));
    return;
  }
  auto t = tracks_.find(vm);
  if (t != tracks_.end() && t->second.epoch == r.epoch) {
    t->second.migrated_away = true;
    t->second.expect_running = false;
    t->second.down = false;
    t->second.reason.clear();
  }
  prober_.forget(vm);
  ports_.release(vm);
  builder_.release(vm);
  emit("info", "vm.migrated", vm, migrate_epoch,
       fmt::format("migrated vm '{}' to host '{}' in {}", vm, r.dest_host, seconds(took)));
}

void Agent::runMigrations() {
  for (const MigrationRequest& r : takeMigrations()) {
    onMigrationDone(r.vm, r.migrate_epoch, hv_.migrate(r.vm, r.dest_uri, r.options));
  }
}

}  // namespace tw
