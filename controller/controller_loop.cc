// The controller loop: a tick, gated VMs released, liveness, reconcile.
#include "controller/controller.h"
#include "controller/controller_util.h"

#include <algorithm>
#include <chrono>
#include <limits>

#include "tw/log.h"
#include "tw/policy.h"

namespace tw {

using controller_detail::vmsToRemove;
using controller_detail::seconds;

void Controller::runOnce() {
  guarded_store_.beginStep(clock_.nowMs());
  // One batch: every write of the tick in one SQLite transaction (none when
  // nothing changed).
  Status s = store_.batch([this]() -> Status {
    tick();
    return Status::ok();
  });
  if (!s.isOk()) log::error("storing the tick's changes: {}", s.toString());
}

void Controller::tick() {
  auto started = std::chrono::steady_clock::now();  // metric only, not logic
  processFenceResults();
  checkLiveness();
  if (settle_recheck_ms_ > 0 && clock_.nowMs() >= settle_recheck_ms_) dirty_ = true;
  // Placement runs only when something changed (dirty_), in one transaction.
  auto reconcileIfDirty = [this] {
    if (!dirty_) return;
    Status s = store_.transaction([&]() -> Status {
      reconcile();
      return Status::ok();
    });
    if (!s.isOk()) log::error("reconcile: {}", s.toString());
  };
  reconcileIfDirty();
  // Tier-order gates depend on health, which changes with every heartbeat.
  releaseGated();
  driveDrains();  // may displace VMs: place them in the same pass
  if (dirty_) {
    reconcileIfDirty();
    releaseGated();
  }
  trackIncidents();
  trackRestores();
  driveAddresses();
  publishAssignments();
  retention_.maybePrune(policy_.settings);
  std::chrono::duration<double> took = std::chrono::steady_clock::now() - started;
  reconcile_seconds_sum_ += took.count();
  ++reconcile_count_;
}

void Controller::releaseGated() {
  Millis now = clock_.nowMs();
  // Only the VMs that may be gated (gated_), in name order as vms_: a tick
  // costs nothing for the VMs that passed their gate long ago.
  for (auto it = gated_.begin(); it != gated_.end();) {
    const std::string& name = *it;
    auto v = vms_.find(name);
    if (v == vms_.end()) {
      it = gated_.erase(it);
      continue;
    }
    auto& rt = vm_runtime_[name];
    if (rt.released) {
      it = gated_.erase(it);
      continue;
    }
    ++it;
    VmRecord& vm = v->second;
    if (vm.host.empty()) continue;
    const TierSpec* tier = policy_.findTier(vm.tier);
    if (!tier) continue;
    std::string waiting;
    for (const auto& dep : tier->after) {
      if (!tierHealthy(dep)) waiting += (waiting.empty() ? "'" : ", '") + dep + "'";
    }
    if (rt.waiting_since_ms == 0) rt.waiting_since_ms = now;
    if (waiting.empty()) {
      rt.released = true;
      assignmentsTouched(name, false);
      setVmState(vm, VmState::kStarting, "assigned to host '" + vm.host + "'");
    } else if (now - rt.waiting_since_ms >= policy_.settings.tier_order_timeout_ms) {
      rt.released = true;
      assignmentsTouched(name, false);
      emit("warn", "tier.order_timeout", "vm/" + name,
           "vm '" + name + "' starts although tier " + waiting + " is not healthy after " +
               seconds(now - rt.waiting_since_ms));
      setVmState(vm, VmState::kStarting, "assigned to host '" + vm.host + "'");
    } else {
      setVmState(vm, VmState::kPending, "waiting for tier " + waiting + " to be healthy");
    }
  }
}

void Controller::checkLiveness() {
  noteRenewals();
  Millis now = clock_.nowMs();
  const auto& st = policy_.settings;
  Millis suspect_after = st.heartbeat_interval_ms * st.suspect_after_missed +
                         st.heartbeat_interval_ms / 2;
  for (auto& [name, h] : hosts_) {
    HostState s = h.rec.state;
    if (s == HostState::kOffline) {
      advanceFencing(h);
      continue;
    }
    if (s != HostState::kOnline && s != HostState::kSuspect) continue;
    Millis silent = now - h.last_heartbeat_ms;
    if (silent > st.dead_after_ms) {
      // Dead only when both signals agree: no heartbeat AND no libvirt, and
      // only with a quorum: the controller's vote plus the hosts that cannot
      // reach it must be a majority (the controller may be the one cut off).
      std::string votes;
      const bool quorum = votesAgainst(h, votes) * 2 > totalVotes();
      if (quorum && h.quorum_since_ms == 0) h.quorum_since_ms = now;
      if (!quorum) h.quorum_since_ms = 0;
      const bool libvirt = host_connector_.libvirtAlive(name);
      if (!libvirt && h.libvirt_lost_ms == 0) h.libvirt_lost_ms = now;
      if (libvirt) h.libvirt_lost_ms = 0;
      if (libvirt) {
        if (!h.agent_warned) {
          h.agent_warned = true;
          emit("warn", "host.agent_silent", "host/" + name,
               "agent of host '" + name + "' silent for " + seconds(silent) +
                   " but the host's libvirt answers: its VMs keep running, no failover");
          setHostState(h, HostState::kSuspect, "agent silent; libvirt answers");
        }
      } else if (!quorum) {
        if (!h.no_quorum_said) {
          h.no_quorum_said = true;
          emit("warn", "host.no_quorum", "host/" + name,
               "host '" + name + "' silent for " + seconds(silent) +
                   " and its libvirt does not answer, but no quorum says it is gone (" + votes +
                   "): not fencing it; its VMs keep running there");
          setHostState(h, HostState::kSuspect, "silent; no quorum to fence it");
        }
      } else if (off_loop_closer_ && off_loop_closer_(name)) {
        // Heard after all: a heartbeat answered off the loop since this step
        // took the renewals. Applied at the next step (it is online then).
      } else {
        h.no_quorum_said = false;
        declareDead(h, silent);
      }
    } else if (silent > suspect_after && s == HostState::kOnline) {
      setHostState(h, HostState::kSuspect, "no heartbeat for " + seconds(silent));
    }
  }
}

void Controller::reconcile() {
  dirty_ = false;
  ++placement_runs_;
  std::vector<HostView> hosts = hostViews(policy_);
  std::vector<std::string> settling = settlingHosts();
  std::string settling_reason;
  if (!settling.empty()) {
    // Give every declared host a chance to report before placing anything new.
    for (auto& h : hosts) h.accepts_new = false;
    // At most 8 named: the reason is copied into every pending VM.
    const size_t named = std::min<size_t>(settling.size(), 8);
    for (size_t i = 0; i < named; ++i) settling_reason += (i == 0 ? "'" : ", '") + settling[i] + "'";
    if (settling.size() > named) settling_reason += " and " + std::to_string(settling.size() - named) + " more";
    settling_reason = "waiting up to " + seconds(policy_.settings.dead_after_ms) + " for host " +
                      settling_reason + " to report";
    // Place again once they reported (a state change marks dirty_) or the
    // first wait is over (tick() marks dirty_ then), not on every tick: at
    // 1,000 hosts a tick that places 20,000 pending VMs is not free.
    settle_recheck_ms_ = std::numeric_limits<Millis>::max();
    for (const auto& name : settling) {
      settle_recheck_ms_ = std::min(settle_recheck_ms_,
                                    hosts_.at(name).declared_ms + policy_.settings.dead_after_ms);
    }
  } else {
    settle_recheck_ms_ = 0;
  }
  // Only what changed since the last run, when the policy did not
  // (placed.partial: the VMs not listed stay where they are).
  PlacementResult placed = placeForReconcile(hosts);
  Millis now = clock_.nowMs();
  for (const auto& name : vmsToRemove(placed, vms_)) {
    auto it = vms_.find(name);
    if (it == vms_.end()) continue;
    std::string where = it->second.host.empty() ? "" : " from host '" + it->second.host + "'";
    Status s = store_.deleteVm(name);
    if (!s.isOk()) log::error("cannot delete vm '{}': {}", name, s.toString());
    vms_.erase(it);
    vm_runtime_.erase(name);
    assignmentsTouched(name, true);
    emit("info", "vm.deleted", "vm/" + name, "vm '" + name + "' removed" + where + ": no longer desired");
  }
  for (const auto& p : placed.vms) {
    auto [it, inserted] = vms_.try_emplace(p.vm);
    VmRecord& vm = it->second;
    if (inserted) {
      vm.name = p.vm;
      vm.tier = p.tier;
      vm.ordinal = p.ordinal;
      vm.state = VmState::kPending;
      vm.updated_ms = now;
      vm_runtime_[p.vm] = VmRuntime{};
      gated_.insert(p.vm);
      assignmentsTouched(p.vm, true);
    }
    auto& rt = vm_runtime_[p.vm];
    if (rt.error) {
      if (!vm.host.empty()) {
        vm.host.clear();
        assignmentsTouched(p.vm, true);
        saveVm(vm);
      }
      continue;
    }
    if (!rt.migrate_to.empty()) continue;  // stays on its source until the migration ends
    if (p.host.empty() || vm.host != p.host) {
      // Placed elsewhere (or nowhere): an eviction from its old host is over.
      if (!rt.evict_from.empty()) assignmentsTouched(p.vm, false);
      rt.evict_from.clear();
      rt.evict_version = 0;
      rt.evict_confirmed = false;
    }
    if (p.host.empty()) {
      const std::string& reason = settling_reason.empty() ? p.reason : settling_reason;
      bool changed = !vm.host.empty();
      vm.host.clear();
      if (changed || rt.released) assignmentsTouched(p.vm, changed);
      rt.released = false;
      gated_.insert(p.vm);
      rt.waiting_since_ms = 0;
      if (changed || inserted || vm.state != VmState::kPending || vm.reason != reason) {
        if (inserted) saveVm(vm);
        setVmState(vm, VmState::kPending, reason);
        saveVm(vm);
      }
      continue;
    }
    if (vm.host != p.host) {
      std::string from = vm.host;
      vm.host = p.host;
      ++vm.epoch;
      assignmentsTouched(p.vm, true);
      vm.health = Health::kUnknown;
      rt.waiting_since_ms = 0;
      rt.released = false;
      gated_.insert(p.vm);
      incidentStep("vm/" + p.vm, "placed", "on host '" + p.host + "'");
      vm.updated_ms = now;
      saveVm(vm);
      emit("info", "vm.placed", "vm/" + vm.name,
           "placed vm '" + vm.name + "' on host '" + vm.host + "' (epoch " +
               std::to_string(vm.epoch) + ")" + (from.empty() ? "" : ", moved from '" + from + "'"));
      setVmState(vm, VmState::kPending, "placed on host '" + vm.host + "'");
    } else if (inserted) {
      saveVm(vm);
    }
  }
}

bool Controller::tierHealthy(const std::string& tier_name) const {
  const TierSpec* tier = policy_.findTier(tier_name);
  if (!tier) return true;
  int need = tier->min_healthy > 0 ? tier->min_healthy : tier->replicas;
  int healthy = 0;
  for (const auto& [_, vm] : vms_) {
    if (vm.tier == tier_name && vm.state == VmState::kRunning && vm.health == Health::kHealthy)
      ++healthy;
  }
  return healthy >= need;
}

}  // namespace tw
