// What agents and operators send: heartbeats, agent events, and the VM and host actions (restart, kill, reset, migrate, drain).
#include "controller/controller.h"
#include "controller/controller_util.h"

#include "tw/keyed_assign.h"
#include "tw/log.h"
#include "tw/policy.h"

namespace tw {

using controller_detail::vmStateOf;

Result<AssignmentSet> Controller::handleHeartbeat(const Heartbeat& hb) {
  // One batch: the heartbeat's writes in one SQLite transaction.
  guarded_store_.beginStep(clock_.nowMs());
  std::optional<Result<AssignmentSet>> out;
  Status s = store_.batch([&]() -> Status {
    out.emplace(heartbeat(hb));
    return Status::ok();
  });
  if (!s.isOk()) log::error("storing heartbeat of host '{}': {}", hb.host, s.toString());
  // The answer renews the agent's lease and hands it a set: neither leaves a
  // deposed term, nor a step whose writes the store refused.
  if (out->isOk() && !term_guard_.mayAct("the answer to host '" + hb.host + "''s heartbeat")) {
    return unavailable("not answering host '" + hb.host + "': " + term_guard_.whyNot());
  }
  return std::move(*out);
}

Result<AssignmentSet> Controller::heartbeat(const Heartbeat& hb) {
  if (!policy_.findHost(hb.host)) {
    return notFound("host '" + hb.host + "' is not declared in the applied policy");
  }
  auto& h = hosts_[hb.host];
  h.rec.name = hb.host;
  Millis now = clock_.nowMs();
  if (h.seen && !h.agent_id.empty() && h.agent_id != hb.agent_id) {
    emit("info", "host.agent_restarted", "host/" + hb.host,
         "agent of host '" + hb.host + "' restarted");
  }
  h.seen = true;
  h.agent_id = hb.agent_id;
  h.last_heartbeat_ms = now;
  clearFenceIntent(h);
  h.service_address = hb.service_address.empty() ? "127.0.0.1" : hb.service_address;
  if (h.peer_address != hb.peer_address) {
    h.peer_address = hb.peer_address;
    ++peers_gen_;
  }
  h.peers_unreachable = hb.peers_unreachable;
  if (h.peers_unreachable.empty()) {
    unreachable_reporters_.erase(hb.host);
  } else {
    unreachable_reporters_.insert(hb.host);
  }
  bool save_host = noteWatchdog(h, hb.watchdog_ms);
  h.quorum_since_ms = 0;
  h.no_quorum_said = false;
  h.libvirt_lost_ms = 0;
  if (!hb.self_fence_reason.empty() && hb.self_fence_reason != h.self_fence_reason) {
    h.self_fence_reason = hb.self_fence_reason;
    h.self_fenced_ms = now;  // its own host.self_fenced event says it in the log
  }
  // The events this report already reflects come first (Heartbeat::events).
  for (AgentEvent e : hb.events) {
    e.host = hb.host;  // an agent speaks for its own host only
    Status s = handleAgentEvent(e);
    if (!s.isOk()) log::warn("agent event from host '{}' dropped: {}", hb.host, s.toString());
  }
  // In place when it names the same VMs as last time (tw/keyed_assign.h).
  assignKeyed(h.domains, hb.domains, [](const DomainReport& d) -> const std::string& {
    return d.vm;
  });
  confirmEvictions(hb);
  noteAddressesHeld(h, hb);
  noteHostReport(h, hb);
  if (hb.capacity.cpus != h.rec.capacity.cpus || hb.capacity.memory_mib != h.rec.capacity.memory_mib) {
    h.rec.capacity = hb.capacity;
    h.reported = hb.capacity;
    save_host = true;
    dirty_ = true;
  }
  if (save_host) saveHost(h.rec);
  hostHeartbeatState(h, hb);
  if (h.rec.state == HostState::kFenced) return assignmentsFor(hb.host, hb.peers_digest);  // stale copies only

  for (const auto& d : hb.domains) {
    auto it = vms_.find(d.vm);
    if (it == vms_.end()) continue;
    VmRecord& vm = it->second;
    auto& rt = vm_runtime_[d.vm];
    // The destination runs the new epoch: the migration is over even if the
    // source's vm.migrated event was lost. Running, not merely active: libvirt
    // defines the incoming domain, paused, on the destination as the copy
    // begins, seconds before the switch-over (7 s for a TCG guest on a loaded
    // machine). Taken as arrived, the VM's endpoints and floating address
    // moved to a host that could not serve them yet, and the paused domain
    // showed as "stopped" until it ran (e2e_faults part e: 5 of 11 requests
    // failed during a drain).
    if (!rt.migrate_to.empty() && rt.migrate_to == hb.host && d.epoch == rt.migrate_epoch &&
        isExecuting(d.state)) {
      finishMigration(vm, true, "reported by host '" + hb.host + "'");  // event may be lost
      continue;
    }
    if (vm.host != hb.host || vm.epoch != d.epoch) continue;  // stale copy: the agent removes it
    if (!rt.migrate_to.empty()) continue;  // migrating: the outcome decides
    if (rt.error) continue;                // runs nowhere until a reset
    if (d.reason.find("restart budget spent") != std::string::npos && !isActive(d.state)) {
      relocate(vm, d.reason);
      continue;
    }
    VmState state = vmStateOf(d.state);
    std::string reason = d.reason;
    if (state == VmState::kRunning) reason.clear();
    bool changed = vm.restarts != d.restarts || vm.health != d.health;
    vm.restarts = d.restarts;
    if (vm.health != d.health) {
      Health old = vm.health;
      vm.health = d.health;
      if (old != Health::kUnknown || d.health == Health::kUnhealthy) {
        emit(d.health == Health::kUnhealthy ? "warn" : "info", std::string("vm.") + toString(d.health),
             "vm/" + vm.name,
             "vm '" + vm.name + "' on host '" + vm.host + "' is " + toString(d.health));
      }
    }
    if (vm.state != state || vm.reason != reason) {
      setVmState(vm, state, reason);
    } else if (changed) {
      vm.updated_ms = now;
      saveVm(vm);
    }
  }
  return assignmentsFor(hb.host, hb.peers_digest);
}

Status Controller::handleAgentEvent(const AgentEvent& e) {
  guarded_store_.beginStep(clock_.nowMs());
  if (!policy_.findHost(e.host)) {
    return notFound("host '" + e.host + "' is not declared in the applied policy");
  }
  std::string level = e.level == "warn" || e.level == "error" ? e.level : "info";
  std::string subject = e.vm.empty() ? "host/" + e.host : "vm/" + e.vm;
  emit(level, e.kind, subject, e.message.empty() ? e.kind : e.message);
  if (e.vm.empty()) return Status::ok();
  if (e.kind.starts_with("backup.")) {
    handleBackupEvent(e);
    return Status::ok();
  }
  auto it = vms_.find(e.vm);
  if (it == vms_.end()) return Status::ok();
  auto& rt = vm_runtime_[e.vm];
  if ((e.kind == "vm.migrated" || e.kind == "vm.migrate_failed") && it->second.host == e.host &&
      !rt.migrate_to.empty() && e.epoch == rt.migrate_epoch) {
    finishMigration(it->second, e.kind == "vm.migrated", e.message);
    publishAssignments();
    return Status::ok();
  }
  if (it->second.host != e.host || it->second.epoch != e.epoch) return Status::ok();
  if (rt.error) return Status::ok();  // budgets spent: late reports change nothing until a reset
  VmRecord& vm = it->second;
  bool health_changed = false;
  // A crash, a reboot for health ("unhealthy: rebooting it") or a (re)start
  // ends the run the last verdict was about: the next run is unknown until a
  // report carries its verdict. An event may arrive before the heartbeat that
  // reflects it; a "healthy" left over from the old run would close the
  // incident before the guest is up.
  if (e.kind == "vm.crashed" || e.kind == "vm.unhealthy" || e.kind == "vm.restarted" ||
      e.kind == "vm.started") {
    health_changed = vm.health != Health::kUnknown;
    vm.health = Health::kUnknown;
  }
  if (e.kind == "vm.crashed") {
    openIncident("vm/" + vm.name, "vm.crashed", "vm '" + vm.name + "' crashed", e.message);
    setVmState(vm, VmState::kCrashed, e.message);
  } else if (e.kind == "vm.unhealthy") {
    openIncident("vm/" + vm.name, "vm.unhealthy", "vm '" + vm.name + "' unhealthy", e.message);
  } else if (e.kind == "vm.restarted") {
    incidentStep("vm/" + vm.name, "restarted", e.message);
    setVmState(vm, VmState::kRunning, "");
  } else if (e.kind == "vm.started") {
    setVmState(vm, VmState::kRunning, "");
  } else if (e.kind == "vm.budget_exhausted") {
    relocate(vm, e.message);
  }
  if (health_changed) saveVm(vm);
  return Status::ok();
}

Status Controller::restartVm(const std::string& name) {
  auto it = vms_.find(name);
  if (it == vms_.end()) return notFound("no vm named '" + name + "'");
  VmRecord& vm = it->second;
  if (vm.host.empty()) return failedPrecondition("vm '" + name + "' is not placed on any host");
  Status s = store_.transaction([&]() -> Status {
    ++vm.epoch;
    assignmentsTouched(name, false);
    vm.health = Health::kUnknown;
    emit("info", "vm.restart_requested", "vm/" + name,
         "restart of vm '" + name + "' on host '" + vm.host + "' requested (epoch " +
             std::to_string(vm.epoch) + ")");
    setVmState(vm, VmState::kRestarting, "restart requested by an operator");
    saveVm(vm);
    return Status::ok();
  });
  if (!s.isOk()) return s;
  publishAssignments();
  return Status::ok();
}

Status Controller::killVm(const std::string& name) {
  auto it = vms_.find(name);
  if (it == vms_.end()) return notFound("no vm named '" + name + "'");
  if (it->second.host.empty() || it->second.state != VmState::kRunning) {
    return failedPrecondition("vm '" + name + "' is " + toString(it->second.state) + ", not running");
  }
  guarded_store_.beginStep(clock_.nowMs());
  if (!term_guard_.mayAct("the kill of vm '" + name + "'")) {
    return unavailable("not killing vm '" + name + "': " + term_guard_.whyNot());
  }
  TW_RETURN_IF_ERROR(host_connector_.killVm(it->second.host, name));
  emit("warn", "vm.kill_requested", "vm/" + name,
       "killing vm '" + name + "' on host '" + it->second.host + "' (demo): its agent should see a crash");
  return Status::ok();
}

Status Controller::resetVm(const std::string& name) {
  auto it = vms_.find(name);
  if (it == vms_.end()) return notFound("no vm named '" + name + "'");
  VmRecord& vm = it->second;
  auto& rt = vm_runtime_[name];
  if (!rt.migrate_to.empty()) return failedPrecondition("vm '" + name + "' is migrating");
  Status s = store_.transaction([&]() -> Status {
    bool was_error = rt.error;
    rt.error = false;
    rt.avoid.clear();
    placement_index_.touch(name);
    rt.relocations.clear();
    rt.relocated_epoch = -1;
    vm.relocations = 0;
    vm.restarts = 0;
    if (!vm.host.empty()) ++vm.epoch;  // a new epoch resets the agent's restart budget too
    assignmentsTouched(name, false);
    emit("info", "vm.reset", "vm/" + name,
         "vm '" + name + "' reset by an operator" + std::string(was_error ? " (was in error)" : "") +
             ": budgets cleared, retrying now");
    setVmState(vm, vm.host.empty() ? VmState::kPending : VmState::kRestarting, "reset by an operator");
    saveVm(vm);
    dirty_ = true;
    reconcile();
    return Status::ok();
  });
  if (!s.isOk()) return s;
  releaseGated();
  publishAssignments();
  return Status::ok();
}

Status Controller::migrateVm(const std::string& name, const std::string& to_host) {
  auto it = vms_.find(name);
  if (it == vms_.end()) return notFound("no vm named '" + name + "'");
  const HostSpec* dest = policy_.findHost(to_host);
  if (!dest) return notFound("no host named '" + to_host + "'");
  VmRecord& vm = it->second;
  auto& rt = vm_runtime_[name];
  if (!rt.migrate_to.empty()) return failedPrecondition("vm '" + name + "' is already migrating to '" + rt.migrate_to + "'");
  if (vm.state != VmState::kRunning) {
    return failedPrecondition("vm '" + name + "' is " + toString(vm.state) + ", not running: nothing to migrate");
  }
  if (vm.host == to_host) return failedPrecondition("vm '" + name + "' already runs on '" + to_host + "'");
  const HostRecord* target = host(to_host);
  if (!target || target->state != HostState::kOnline) {
    return failedPrecondition("host '" + to_host + "' is " +
                              (target ? toString(target->state) : "unknown") + ", not online");
  }
  if (dest->uri.empty()) return failedPrecondition("host '" + to_host + "' has no libvirt uri to migrate to");
  // Would placement accept it there? Ask it with only that host open.
  PlacementInput in = placementInput(policy_);
  in.current.erase(name);
  for (auto& hv : in.hosts) hv.accepts_new = hv.accepts_new && hv.name == to_host;
  PlacementResult placed = place(in);
  const VmPlacement* p = placed.find(name);
  if (!p || p->host != to_host) {
    return failedPrecondition("host '" + to_host + "' cannot take vm '" + name + "': " +
                              (p ? p->reason : std::string("not placeable")));
  }
  Status s = store_.transaction([&]() -> Status {
    startMigration(vm, to_host, "requested by an operator");
    return Status::ok();
  });
  if (!s.isOk()) return s;
  publishAssignments();
  return Status::ok();
}

Status Controller::drainHost(const std::string& name) {
  if (!policy_.findHost(name)) return notFound("no host named '" + name + "'");
  HostRuntime& h = hosts_[name];
  if (h.rec.state == HostState::kMaintenance) return failedPrecondition("host '" + name + "' is already in maintenance");
  if (h.draining) return failedPrecondition("host '" + name + "' is already draining");
  if (h.rec.state != HostState::kOnline && h.rec.state != HostState::kSuspect) {
    return failedPrecondition("host '" + name + "' is " + toString(h.rec.state) + ": only an online host can be drained");
  }
  Status s = store_.transaction([&]() -> Status {
    auto id = store_.beginAction(ActionRecord{0, "drain", "host/" + name, "{}", clock_.nowMs()});
    if (!id.isOk()) return id.status();
    h.draining = true;
    h.drain_action_id = *id;
    h.drain_failed.clear();
    emit("info", "host.draining", "host/" + name,
         "draining host '" + name + "': live-migrating its VMs away in tier order");
    driveDrains();
    return Status::ok();
  });
  if (!s.isOk()) return s;
  publishAssignments();
  return Status::ok();
}

Status Controller::undrainHost(const std::string& name) {
  if (!policy_.findHost(name)) return notFound("no host named '" + name + "'");
  HostRuntime& h = hosts_[name];
  if (h.draining) {
    h.draining = false;
    cancelEvictions(name);
    if (h.drain_action_id) (void)store_.endAction(h.drain_action_id);
    h.drain_action_id = 0;
    emit("info", "host.drain_cancelled", "host/" + name, "drain of host '" + name + "' cancelled");
    dirty_ = true;
    return Status::ok();
  }
  if (h.rec.state != HostState::kMaintenance) {
    return failedPrecondition("host '" + name + "' is " + toString(h.rec.state) + ", not in maintenance");
  }
  Millis silent = clock_.nowMs() - h.last_heartbeat_ms;
  bool alive = h.seen && silent <= policy_.settings.dead_after_ms;
  setHostState(h, alive ? HostState::kOnline : HostState::kUnknown, "returned to service by an operator");
  return Status::ok();
}

}  // namespace tw
