// The controller's failure handling: a host declared dead only when its
// heartbeats stopped AND its libvirt no longer answers; fencing (libvirt,
// fence agent, lease expiry) before any of its VMs runs elsewhere; budget
// relocations and errors; live migrations and drains; incidents.
#include <cstdio>

#include "controller/controller.h"
#include "tw/log.h"

namespace tw {

namespace {

std::string secs(Millis ms) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1fs", static_cast<double>(ms) / 1000.0);
  return buf;
}

// How a fence result names its method in events: "libvirt", "fence agent 'ipmi'".
std::string byWhat(const FenceResult& r) {
  return r.method == "agent" ? "fence agent '" + r.agent + "'" : r.method;
}

constexpr Millis kFenceAgentTimeoutMs = 30000;

}  // namespace

// ------------------------------------------------------------- hosts ---

void Controller::declareDead(HostRuntime& h, Millis silent) {
  setHostState(h, HostState::kOffline,
               "no heartbeat for " + secs(silent) + " and its libvirt does not answer");
  openIncident("host/" + h.rec.name, "host.failed", "host '" + h.rec.name + "' failed",
               "no heartbeat for " + secs(silent) + ", libvirt not answering");
  // Its agent died before the host went dark only if libvirt kept answering
  // well past the heartbeats' end. A host that loses power or its network
  // loses both at once; the controller sees libvirt go within its check's
  // detection time (a 1 s bound on a check, keepalive 1 s x 2), so a loss
  // within dead_after + kLibvirtLossSlackMs of the last heartbeat is one event
  // and the agent (if cut off) enforces its lease (docs/fencing.md).
  constexpr Millis kLibvirtLossSlackMs = 3000;
  const Millis lost = h.libvirt_lost_ms != 0 ? h.libvirt_lost_ms : clock_.nowMs();
  // A host watchdog enforces the lease of a dead agent too: its host was
  // reset W after the last pet, which the lease fence waits for.
  h.lease_unenforced = h.watchdog_ms == 0 && h.agent_warned &&
                       lost - h.last_heartbeat_ms > policy_.settings.dead_after_ms + kLibvirtLossSlackMs;
  h.unfenceable_said = false;
  h.lease_wait_said = false;
  h.agent_warned = false;
  advanceFencing(h);
}

// Starts fencing (once) and checks the lease-expiry fallback. Called on every
// pass while the host is offline.
void Controller::advanceFencing(HostRuntime& h) {
  const std::string& name = h.rec.name;
  const HostSpec* spec = hostSpec(name);
  const auto& st = policy_.settings;
  Millis now = clock_.nowMs();
  if (!h.fencing) {
    h.fencing = true;
    h.fence_agent_tried = false;  // a host may fail again after it came back
    ActionRecord a{0, "fence", "host/" + name, "{}", now};
    auto id = store_.beginAction(a);
    h.fence_action_id = id.isOk() ? *id : 0;
    for (auto& [vm_name, vm] : vms_) {
      if (vm.host == name) setVmState(vm, VmState::kFencing, "host '" + name + "' is being fenced");
    }
    if (host_connector_.libvirtAlive(name)) {
      h.fence_libvirt_pending = true;
      emit("warn", "host.fencing", "host/" + name,
           "fencing host '" + name + "' through its libvirt (destroying its VMs)");
      if (term_guard_.mayAct("the libvirt fence of host '" + name + "'")) {
        host_connector_.fenceByLibvirt(name);
      } else {
        // Withheld: it fails as a fence that did not confirm (and falls
        // back like one) at the next pass.
        local_fence_results_.push_back({name, "libvirt", false, "withheld: " + term_guard_.whyNot(), ""});
      }
    } else if (spec && spec->fence == FenceMethod::kAgent) {
      startFenceAgent(h, *spec);
    } else if (!h.lease_unenforced) {
      emit("warn", "host.fencing", "host/" + name,
           "fencing host '" + name + "' by lease expiry: its agent destroys its VMs when its " +
               secs(st.lease_ms) + " lease runs out" +
               (watchdogWaitMs(h) > 0 ? " (else its " + secs(watchdogWaitMs(h)) +
                                            " watchdog resets the host)"
                                      : "") +
               "; safe after " +
               secs(h.last_heartbeat_ms + st.lease_ms + st.fence_margin_ms + watchdogWaitMs(h) -
                    now) +
               " more");
    }
    incidentStep("host/" + name, "fencing", "fence started");
  }
  if (h.lease_unenforced) {
    // No agent enforces the lease: only a fence agent can confirm. When its
    // libvirt answers again, the host is back within reach and none of its
    // VMs was moved (they stay assigned to it until a fence confirms): it is
    // taken back as it was before it went dark, an agent silent while libvirt
    // answers, and nothing is destroyed (invariant 5). Its agent's next
    // heartbeat makes it online.
    if (!h.fence_libvirt_pending && !h.fence_agent_pending && host_connector_.libvirtAlive(name)) {
      cancelFencing(h, "its libvirt answers again and none of its VMs was moved");
      h.agent_warned = true;
      setHostState(h, HostState::kSuspect, "agent silent; libvirt answers");
      // Its VMs are where they were: as its agent last reported them (its
      // next heartbeat, if it comes back, says more).
      for (auto& [vm_name, vm] : vms_) {
        if (vm.host != name || vm.state != VmState::kFencing) continue;
        auto d = h.domains.find(vm_name);
        if (d == h.domains.end() || d->second.epoch != vm.epoch) continue;
        setVmState(vm, isActive(d->second.state) ? VmState::kRunning : VmState::kStopped,
                   "as its agent last reported it (agent silent)");
      }
    } else if (!h.unfenceable_said && !h.fence_libvirt_pending && !h.fence_agent_pending) {
      h.unfenceable_said = true;
      emit("error", "host.unfenceable", "host/" + name,
           "cannot fence host '" + name + "' by lease: its agent died before the host went "
           "silent, so nothing enforces the lease and its VMs may still run; its VMs stay "
           "assigned there until a fence agent confirms, or its libvirt answers again (then "
           "it is taken back as it is)");
    }
    return;
  }
  // Lease expiry: the agent self-fences when it cannot renew; its lease was
  // renewed at most at its last heartbeat (send time <= our receipt time).
  // Also a peer timeout after the quorum formed: a peer the host still
  // counted as seeing it (its last answer) ages out of its view by then, so
  // an isolated host has judged itself isolated and fenced (docs/fencing.md).
  //
  // The quorum is judged again on every pass, right up to the fence: the
  // hosts that voted may have lost the controller since and reach the host
  // again (it then holds its lease and keeps its VMs). A vote counts only
  // for the instant of its report, so the fence also needs an instant after
  // the lease ran out that enough reports cover (leaseFenceWitnessed).
  // Who can hold this back by accident: peers that stop heartbeating (they
  // cannot vote) — the host then stays offline, its VMs assigned to it,
  // until they report again or the host returns; nothing is destroyed.
  std::string votes;
  const bool quorum = votesAgainst(h, votes) * 2 > totalVotes();
  if (!quorum) h.quorum_since_ms = 0;
  if (quorum && h.quorum_since_ms == 0) h.quorum_since_ms = now;
  if (h.fence_libvirt_pending || h.fence_agent_pending ||
      now < h.last_heartbeat_ms + st.lease_ms + st.fence_margin_ms + watchdogWaitMs(h)) {
    return;
  }
  std::string witness;
  if (!quorum || now < h.quorum_since_ms + peerTimeoutMs() + st.fence_margin_ms ||
      !leaseFenceWitnessed(h, witness)) {
    if (!quorum && !h.lease_wait_said) {
      h.lease_wait_said = true;
      emit("warn", "host.no_quorum", "host/" + name,
           "not fencing host '" + name + "' by lease: no quorum says it is gone any more (" +
               votes + "); its VMs stay assigned to it");
    }
    return;
  }
  h.lease_wait_said = false;
  if (!leaseFenceIntended(h)) return;  // renewed through a follower meanwhile: alive
  fenced(h, "lease",
         "lease expired " + secs(now - h.last_heartbeat_ms - st.lease_ms) + " ago (lease " +
             secs(st.lease_ms) + " + margin " + secs(st.fence_margin_ms) +
             (watchdogWaitMs(h) > 0 ? " + watchdog " + secs(watchdogWaitMs(h)) : "") + ")");
}

// Runs the host's fence agent. The event names the agent only: its command
// and arguments are the controller's configuration and may hold secrets.
void Controller::startFenceAgent(HostRuntime& h, const HostSpec& spec) {
  const std::string& name = h.rec.name;
  h.fence_agent_pending = h.fence_agent_tried = true;
  emit("warn", "host.fencing", "host/" + name,
       "fencing host '" + name + "' by fence agent '" + spec.fence_agent + "'");
  auto agent = fence_agents_.find(spec.fence_agent);
  if (agent == fence_agents_.end()) {
    // Only for a policy recovered from the store (an apply refuses it).
    local_fence_results_.push_back({name, "agent", false,
                                    "it is not defined in the controller's configuration",
                                    spec.fence_agent});
    return;
  }
  auto argv = fenceArgv(agent->second, FenceTarget{name, spec.uri});
  if (!argv.isOk()) {
    local_fence_results_.push_back({name, "agent", false, argv.status().message(), spec.fence_agent});
    return;
  }
  if (!term_guard_.mayAct("fence agent '" + spec.fence_agent + "' against host '" + name + "'")) {
    local_fence_results_.push_back({name, "agent", false, "withheld: " + term_guard_.whyNot(), spec.fence_agent});
    return;
  }
  host_connector_.fenceByAgent(name, spec.fence_agent, *argv, kFenceAgentTimeoutMs);
}

Status Controller::checkFenceAgent(const HostSpec& spec) const {
  if (spec.fence != FenceMethod::kAgent) return Status::ok();
  auto agent = fence_agents_.find(spec.fence_agent);
  if (agent == fence_agents_.end()) {
    std::string defined =
        fence_agents_.empty()
            ? "the controller defines no fence agents: start it with --fence-agents FILE"
            : "it defines " + fenceAgentNames(fence_agents_);
    return Status(Code::kInvalidArgument,
                  "host '" + spec.name + "' names fence agent '" + spec.fence_agent +
                      "', which the controller's configuration does not define (" + defined + ")",
                  spec.fence_agent_at);
  }
  auto argv = fenceArgv(agent->second, FenceTarget{spec.name, spec.uri});
  if (!argv.isOk()) return Status(Code::kInvalidArgument, argv.status().message(), spec.fence_agent_at);
  return Status::ok();
}

Status Controller::checkFenceAgents(const Policy& policy) const {
  for (const auto& spec : policy.hosts) TW_RETURN_IF_ERROR(checkFenceAgent(spec));
  return Status::ok();
}

void Controller::processFenceResults() {
  std::vector<FenceResult> results = host_connector_.takeResults();
  results.insert(results.end(), local_fence_results_.begin(), local_fence_results_.end());
  local_fence_results_.clear();
  for (const FenceResult& r : results) {
    auto it = hosts_.find(r.host);
    if (it == hosts_.end()) continue;
    HostRuntime& h = it->second;
    if (r.method == "libvirt") h.fence_libvirt_pending = false;
    if (r.method == "agent") h.fence_agent_pending = false;
    if (h.rec.state != HostState::kOffline || !h.fencing) continue;  // cancelled meanwhile
    if (r.confirmed) {
      fenced(h, byWhat(r), r.detail);
      continue;
    }
    emit("warn", "host.fence_failed", "host/" + r.host,
         "fencing host '" + r.host + "' by " + byWhat(r) + " did not confirm: " + r.detail);
    const HostSpec* spec = hostSpec(r.host);
    if (r.method == "libvirt" && spec && spec->fence == FenceMethod::kAgent &&
        !h.fence_agent_tried) {
      startFenceAgent(h, *spec);
    } else if (!h.lease_unenforced) {
      emit("warn", "host.fencing", "host/" + r.host,
           "fencing host '" + r.host + "' falls back to lease expiry");
    }
  }
}

void Controller::fenced(HostRuntime& h, const std::string& method, const std::string& detail) {
  const std::string& name = h.rec.name;
  h.fencing = false;
  h.lease_unenforced = false;
  h.fence_libvirt_pending = h.fence_agent_pending = false;
  if (h.fence_action_id) (void)store_.endAction(h.fence_action_id);
  h.fence_action_id = 0;
  h.draining = false;
  cancelEvictions(name);
  setHostState(h, HostState::kFenced, "fenced by " + method + ": " + detail);
  incidentStep("host/" + name, "fenced", "by " + method + ": " + detail);
  // Its VMs are known dead: they are placed elsewhere (new epochs) by the
  // next reconcile, in tier order, active hosts before spares.
  h.recovering_vms.clear();
  for (auto& [vm_name, vm] : vms_) {
    if (vm.host != name) continue;
    h.recovering_vms.insert(vm_name);
    auto& rt = vm_runtime_[vm_name];
    if (!rt.migrate_to.empty()) {
      // A migration from the dead host was under way: the VM may already run
      // on the destination. Rebuild it THERE (a newer epoch): its agent keeps
      // one copy whatever arrived, so it never runs twice.
      std::string dest = rt.migrate_to;
      int64_t epoch = rt.migrate_epoch;
      if (rt.migrate_action_id) (void)store_.endAction(rt.migrate_action_id);
      rt.migrate_to.clear();
      rt.migrate_epoch = rt.migrate_action_id = 0;
      vm.host = dest;
      placement_index_.touch(vm_name);
      vm.epoch = epoch + 1;
      rt.released = true;
      assignmentsTouched(vm_name, true);
      saveVm(vm);
      emit("warn", "vm.migrate_failed", "vm/" + vm_name,
           "source host '" + name + "' of vm '" + vm_name + "' failed during its migration; rebuilding it on '" +
               dest + "' (epoch " + std::to_string(vm.epoch) + ")");
    }
    setVmState(vm, VmState::kRecovering, "host '" + name + "' fenced; rebuilding elsewhere");
  }
  dirty_ = true;
}

void Controller::cancelFencing(HostRuntime& h, const std::string& why) {
  h.lease_unenforced = false;
  if (h.fence_action_id) (void)store_.endAction(h.fence_action_id);
  h.fence_action_id = 0;
  h.fencing = false;
  emit("info", "host.fence_cancelled", "host/" + h.rec.name,
       "fencing of host '" + h.rec.name + "' cancelled: " + why);
  closeIncident("host/" + h.rec.name, why);
}

// Host state from a heartbeat (before its domain reports are applied).
void Controller::hostHeartbeatState(HostRuntime& h, const Heartbeat& hb) {
  switch (h.rec.state) {
    case HostState::kUnknown:
    case HostState::kSuspect:
      h.agent_warned = false;
      setHostState(h, HostState::kOnline, "heartbeat received");
      break;
    case HostState::kOffline:
      // Answered before it was fenced: nothing was moved, nothing runs twice.
      cancelFencing(h, "host '" + h.rec.name + "' answered again before it was fenced");
      setHostState(h, HostState::kOnline, "heartbeat received");
      break;
    case HostState::kFenced: {
      // Rejoins as capacity once its agent removed every stale domain.
      int stale = 0;
      for (const auto& d : hb.domains)
        if (isActive(d.state)) ++stale;
      if (stale > 0) {
        std::string reason = "back after fencing; waiting for its agent to remove " +
                             std::to_string(stale) + " stale domains";
        if (h.rec.reason != reason) {
          h.rec.reason = reason;
          saveHost(h.rec);
        }
      } else {
        setHostState(h, HostState::kOnline, "back after fencing; rejoins as capacity, no VM moves back");
      }
      break;
    }
    case HostState::kOnline:
    case HostState::kMaintenance:
      break;
  }
}

// ------------------------------------------------------------------ vms ---

void Controller::relocate(VmRecord& vm, const std::string& why) {
  auto& rt = vm_runtime_[vm.name];
  if (rt.relocated_epoch == vm.epoch || rt.error) return;  // already handled
  rt.relocated_epoch = vm.epoch;
  const TierSpec* tier = policy_.findTier(vm.tier);
  if (!tier) return;
  Millis now = clock_.nowMs();
  std::erase_if(rt.relocations, [&](Millis t) { return now - t >= tier->restart.window_ms; });
  std::string from = vm.host;
  if (static_cast<int>(rt.relocations.size()) < tier->restart.relocations) {
    rt.relocations.push_back(now);
    vm.relocations = static_cast<int>(rt.relocations.size());
    rt.avoid.insert(from);
    emit("warn", "vm.relocating", "vm/" + vm.name,
         "relocating vm '" + vm.name + "' away from host '" + from + "' (" +
             std::to_string(vm.relocations) + "/" + std::to_string(tier->restart.relocations) +
             "): " + why);
    openIncident("vm/" + vm.name, "vm.failing", "vm '" + vm.name + "' keeps failing", why);
    incidentStep("vm/" + vm.name, "relocating", "away from host '" + from + "'");
    setVmState(vm, VmState::kRecovering, "relocating: " + why);
  } else {
    rt.error = true;
    vm.relocations = static_cast<int>(rt.relocations.size());
    std::string reason = why + "; relocation budget spent (" + std::to_string(rt.relocations.size()) +
                         " in " + secs(tier->restart.window_ms) + "): run 'twctl reset vm " +
                         vm.name + "' after fixing the cause";
    openIncident("vm/" + vm.name, "vm.failing", "vm '" + vm.name + "' keeps failing", why);
    incidentStep("vm/" + vm.name, "error", reason);
    setVmState(vm, VmState::kError, reason);
  }
  placement_index_.touch(vm.name);  // a host to avoid, or error
  dirty_ = true;
}

void Controller::startMigration(VmRecord& vm, const std::string& to, const std::string& why) {
  auto& rt = vm_runtime_[vm.name];
  rt.migrate_to = to;
  assignmentsTouched(vm.name, true);
  // Every attempt gets its own epoch, so that the agent runs a retry.
  rt.migrate_epoch = std::max(vm.epoch, rt.last_migrate_epoch) + 1;
  rt.last_migrate_epoch = rt.migrate_epoch;
  Json data{{"vm", vm.name}, {"from", vm.host}, {"to", to}, {"epoch", rt.migrate_epoch}};
  auto id = store_.beginAction(ActionRecord{0, "migrate", "vm/" + vm.name, data.dump(), clock_.nowMs()});
  rt.migrate_action_id = id.isOk() ? *id : 0;
  emit("info", "vm.migrating", "vm/" + vm.name,
       "live-migrating vm '" + vm.name + "' from host '" + vm.host + "' to host '" + to + "'" +
           (why.empty() ? "" : ": " + why));
  setVmState(vm, VmState::kMigrating, "live migration to host '" + to + "'");
}

void Controller::finishMigration(VmRecord& vm, bool ok, const std::string& detail) {
  auto& rt = vm_runtime_[vm.name];
  if (rt.migrate_to.empty()) return;
  std::string from = vm.host, to = rt.migrate_to;
  if (rt.migrate_action_id) (void)store_.endAction(rt.migrate_action_id);
  int64_t epoch = rt.migrate_epoch;
  rt.migrate_to.clear();
  rt.migrate_epoch = 0;
  rt.migrate_action_id = 0;
  assignmentsTouched(vm.name, true);
  if (ok) {
    vm.host = to;
    placement_index_.touch(vm.name);
    vm.epoch = epoch;
    emit("info", "vm.migrated", "vm/" + vm.name,
         "vm '" + vm.name + "' migrated from host '" + from + "' to host '" + to + "'" +
             (detail.empty() ? "" : ": " + detail));
    setVmState(vm, VmState::kRunning, "");
    saveVm(vm);
  } else {
    // The source keeps its epoch (and its running domain); the destination
    // drops its incoming assignment, so nothing arrives there to keep.
    emit("warn", "vm.migrate_failed", "vm/" + vm.name,
         "migration of vm '" + vm.name + "' from host '" + from + "' to host '" + to +
             "' failed: " + detail);
    auto h = hosts_.find(from);
    if (h != hosts_.end() && h->second.draining) h->second.drain_failed.insert(vm.name);
    if (h != hosts_.end() && (h->second.rec.state == HostState::kOnline ||
                              h->second.rec.state == HostState::kSuspect)) {
      setVmState(vm, VmState::kRunning, "migration failed; still on host '" + from + "'");
    }
    saveVm(vm);
  }
  dirty_ = true;
}

void Controller::driveDrains() {
  for (auto& [name, h] : hosts_) {
    if (!h.draining) continue;
    bool busy = false;
    std::vector<VmRecord*> left;
    for (auto& [vm_name, vm] : vms_) {
      if (vm.host != name) continue;
      const VmRuntime& rt = vm_runtime_[vm_name];
      if (!rt.migrate_to.empty() || rt.evict_from == name) busy = true;
      left.push_back(&vm);
    }
    if (busy) continue;  // one migration (or eviction) at a time per host
    if (left.empty()) {
      h.draining = false;
      if (h.drain_action_id) (void)store_.endAction(h.drain_action_id);
      h.drain_action_id = 0;
      setHostState(h, HostState::kMaintenance, "drained");
      continue;
    }
    // Next VM in tier order that has not failed to migrate.
    VmRecord* next = nullptr;
    for (const TierSpec* t : policy_.tiersInOrder()) {
      for (VmRecord* vm : left) {
        if (vm->tier == t->name && !h.drain_failed.count(vm->name)) {
          next = vm;
          break;
        }
      }
      if (next) break;
    }
    if (!next) {
      h.draining = false;
      if (h.drain_action_id) (void)store_.endAction(h.drain_action_id);
      h.drain_action_id = 0;
      std::string names;
      for (VmRecord* vm : left) names += (names.empty() ? "'" : ", '") + vm->name + "'";
      emit("error", "host.drain_failed", "host/" + name,
           "drain of host '" + name + "' stopped: " + names + " could not be moved; the host stays in service");
      h.drain_failed.clear();
      dirty_ = true;
      continue;
    }
    // Where would placement put it if this host took nothing?
    PlacementInput in = placementInput(policy_);
    in.current.erase(next->name);
    for (auto& hv : in.hosts)
      if (hv.name == name) hv.accepts_new = false;
    PlacementResult placed = place(in);
    const VmPlacement* p = placed.find(next->name);
    if (!p || p->host.empty()) {
      h.drain_failed.insert(next->name);
      emit("warn", "host.drain_blocked", "vm/" + next->name,
           "cannot drain vm '" + next->name + "' off host '" + name + "': " +
               (p ? p->reason : std::string("not placeable")));
      continue;
    }
    if (next->state == VmState::kRunning) {
      startMigration(*next, p->host, "draining host '" + name + "'");
    } else {
      // Not running: nothing to migrate. But its agent may start it again at
      // any moment (a crash's restart back-off, a restart on its way), and
      // the host may be out of our reach: placing it elsewhere now could run
      // it twice. It leaves the host's set first; confirmEvictions() places
      // it elsewhere once the host reports that set and no running copy.
      // Only while the host heartbeats: a silent host's view of the VM is
      // unknown (it may run it at an epoch we have not heard of); when it
      // answers again, a running VM is migrated instead.
      // Who can make this destroy by accident: the host's agent, when it
      // restarts the VM after its last heartbeat and before the set without
      // it arrives — that restart is then undone by the agent and the VM
      // starts elsewhere (a cold move of a VM that had just crashed;
      // HealingTest.DrainEvictsAStoppedVmBeforePlacingItElsewhere).
      if (h.rec.state != HostState::kOnline) continue;
      auto& rt = vm_runtime_[next->name];
      rt.evict_from = name;
      evicting_.insert(next->name);
      rt.evict_version = 0;  // set by publishAssignments()
      assignmentsTouched(next->name, false);
      rt.evict_confirmed = false;
      emit("info", "vm.evicting", "vm/" + next->name,
           "vm '" + next->name + "' is " + toString(next->state) + ": removing it from host '" +
               name + "' before placing it elsewhere (waiting for the host to confirm)");
    }
  }
}

void Controller::cancelEvictions(const std::string& host) {
  for (auto& [vm_name, rt] : vm_runtime_) {
    if (rt.evict_from != host) continue;
    rt.evict_from.clear();
    assignmentsTouched(vm_name, false);
    rt.evict_version = 0;
    rt.evict_confirmed = false;
  }
}

void Controller::confirmEvictions(const Heartbeat& hb) {
  if (hb.assignments_controller != controller_id_) return;  // a set of another process
  // Only the VMs being evicted (evicting_, in name order), not every VM: this
  // runs on every heartbeat.
  for (auto it = evicting_.begin(); it != evicting_.end();) {
    const std::string& vm_name = *it;
    auto found = vm_runtime_.find(vm_name);
    if (found == vm_runtime_.end() || found->second.evict_from.empty()) {
      it = evicting_.erase(it);
      continue;
    }
    ++it;
    VmRuntime& rt = found->second;
    if (rt.evict_from != hb.host || rt.evict_version == 0 || rt.evict_confirmed) continue;
    if (hb.assignments_version < rt.evict_version) continue;  // has not applied it yet
    bool running = false;
    for (const auto& d : hb.domains)
      if (d.vm == vm_name && isActive(d.state)) running = true;
    if (running) continue;  // its agent removes it: a later heartbeat confirms
    // Out of the host's set still: reconcile() places it elsewhere and ends
    // the eviction.
    rt.evict_confirmed = true;
    rt.avoid.insert(hb.host);
    placement_index_.touch(vm_name);
    dirty_ = true;
    log::info("host '{}' confirmed that vm '{}' is gone: placing it elsewhere", hb.host, vm_name);
  }
}

// ------------------------------------------------------------ incidents ---

void Controller::saveIncident(IncidentRecord& incident) {
  auto id = store_.putIncident(incident);
  if (id.isOk()) {
    incident.id = *id;
  } else {
    log::error("cannot store incident of '{}': {}", incident.subject, id.status().toString());
  }
}

IncidentRecord& Controller::openIncident(const std::string& subject, const std::string& kind,
                                         const std::string& summary, const std::string& detail) {
  auto it = open_incidents_.find(subject);
  if (it != open_incidents_.end()) return it->second;
  IncidentRecord inc;
  inc.subject = subject;
  inc.kind = kind;
  inc.summary = summary;
  inc.opened_ms = clock_.nowMs();
  inc.steps.push_back(IncidentStep{"detected", inc.opened_ms, detail});
  saveIncident(inc);
  emit("warn", "incident.opened", subject, "incident opened: " + summary + ": " + detail);
  return open_incidents_[subject] = inc;
}

void Controller::incidentStep(const std::string& subject, const std::string& step,
                              const std::string& detail) {
  auto it = open_incidents_.find(subject);
  if (it == open_incidents_.end()) return;
  for (const auto& s : it->second.steps)
    if (s.step == step && step != "relocating") return;  // each step once
  it->second.steps.push_back(IncidentStep{step, clock_.nowMs(), detail});
  saveIncident(it->second);
}

void Controller::closeIncident(const std::string& subject, const std::string& detail) {
  auto it = open_incidents_.find(subject);
  if (it == open_incidents_.end()) return;
  IncidentRecord& inc = it->second;
  inc.closed_ms = clock_.nowMs();
  saveIncident(inc);
  emit("info", "incident.closed", subject,
       "incident closed after " + secs(inc.closed_ms - inc.opened_ms) + ": " + inc.summary +
           (detail.empty() ? "" : " (" + detail + ")"));
  open_incidents_.erase(it);
}

// Moves open incidents along as their subjects recover.
void Controller::trackIncidents() {
  std::vector<std::string> subjects;
  for (const auto& [subject, _] : open_incidents_) subjects.push_back(subject);
  for (const auto& subject : subjects) {
    if (subject.rfind("vm/", 0) == 0) {
      auto it = vms_.find(subject.substr(3));
      if (it == vms_.end()) {
        closeIncident(subject, "vm no longer desired");
        continue;
      }
      const VmRecord& vm = it->second;
      if (vm.state == VmState::kRunning) {
        incidentStep(subject, "started", "running on host '" + vm.host + "'");
        if (vm.health == Health::kHealthy) {
          incidentStep(subject, "healthy", "healthy on host '" + vm.host + "'");
          closeIncident(subject, "");
        }
      }
    } else if (subject.rfind("host/", 0) == 0) {
      auto h = hosts_.find(subject.substr(5));
      if (h == hosts_.end()) {
        closeIncident(subject, "host no longer declared");
        continue;
      }
      if (h->second.rec.state != HostState::kFenced) continue;
      const auto& vms = h->second.recovering_vms;
      bool placed = true, started = true, healthy = true;
      for (const auto& name : vms) {
        auto v = vms_.find(name);
        if (v == vms_.end()) continue;
        placed &= !v->second.host.empty() && v->second.host != h->first;
        started &= placed && v->second.state == VmState::kRunning;
        healthy &= started && v->second.health == Health::kHealthy;
      }
      if (placed) incidentStep(subject, "placed", std::to_string(vms.size()) + " VMs placed elsewhere");
      if (started) incidentStep(subject, "started", "its VMs run elsewhere");
      if (healthy) {
        incidentStep(subject, "healthy", "its VMs are healthy elsewhere");
        closeIncident(subject, "");
      }
    }
  }
}

}  // namespace tw
