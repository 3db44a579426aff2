#include "controller/controller.h"
#include "controller/leader_renewals.h"
#include "controller/hex64.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <limits>
#include <random>
#include <sstream>
#include <string_view>
#include <unordered_set>

#include "tw/keyed_assign.h"
#include "tw/log.h"
#include "tw/policy.h"
#include "tw/text.h"

namespace tw {

namespace {

VmState vmStateOf(DomainState s) {
  switch (s) {
    case DomainState::kRunning:
    case DomainState::kBlocked:
      return VmState::kRunning;
    case DomainState::kPaused:
    case DomainState::kPmSuspended:
    case DomainState::kShutdown:
    case DomainState::kShutoff:
      return VmState::kStopped;
    case DomainState::kCrashed:
      return VmState::kCrashed;
    case DomainState::kNoState:
      return VmState::kStarting;
  }
  return VmState::kStarting;
}

// Every known VM that the placement no longer wants. PlacementResult::removed
// lists only VMs that have a host (PlacementInput::current); a VM still pending
// (no host has reported yet) or in error must go too when its tier shrinks or
// goes away, or it stays pending for good.
std::vector<std::string> vmsToRemove(const PlacementResult& placed,
                                     const std::map<std::string, VmRecord>& vms) {
  std::unordered_set<std::string_view> desired;  // views into `placed`
  desired.reserve(placed.vms.size());
  for (const auto& p : placed.vms) desired.insert(p.vm);
  std::vector<std::string> out;
  for (const auto& [name, _] : vms)
    if (desired.count(name) == 0) out.push_back(name);
  return out;
}

std::string seconds(Millis ms) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1fs", static_cast<double>(ms) / 1000.0);
  return buf;
}

std::string newControllerId() {
  std::random_device rd;
  std::uniform_int_distribution<uint64_t> dist;
  return hex64(dist(rd));
}

}  // namespace

Controller::Controller(Store& store, Clock& clock, HostConnector* hosts, FenceAgents fence_agents)
    : guarded_store_(store, term_guard_),
      store_(guarded_store_),
      clock_(clock),
      host_connector_(hosts ? *hosts : null_hosts_),
      fence_agents_(std::move(fence_agents)),
      controller_id_(newControllerId()),
      retention_(store, clock) {
  // Versions must grow across controller restarts: start from the clock.
  version_counter_ = clock_.nowMs() * 1000;
}

// ------------------------------------------------------------------ state ---

Status Controller::recover() {
  if (renewals_ != nullptr) {
    // Before the hosts' grace starts: renewals read here are older than it.
    TW_RETURN_IF_ERROR(renewals_->baseline().withContext("reading the lease renewals of follower replicas"));
  }
  auto latest = store_.latestPolicy();
  if (!latest.isOk()) return latest.status().withContext("loading the policy in force");
  if (latest->has_value()) {
    TW_RETURN_IF_ERROR(loadPolicy(**latest).withContext(
        "the stored policy version " + std::to_string((*latest)->version) + " no longer parses"));
  }
  auto hosts = store_.hosts();
  if (!hosts.isOk()) return hosts.status().withContext("loading hosts");
  Millis now = clock_.nowMs();
  std::vector<std::string> was_offline;
  for (const auto& rec : *hosts) {
    auto& h = hosts_[rec.name];
    h.rec = rec;
    h.reported = rec.capacity;
    // One dead_after of grace: a host that was online is not declared dead
    // just because this controller was down.
    h.last_heartbeat_ms = now;
    if (rec.state == HostState::kOffline) was_offline.push_back(rec.name);
  }
  auto vms = store_.vms();
  if (!vms.isOk()) return vms.status().withContext("loading vms");
  for (const auto& rec : *vms) {
    vms_[rec.name] = rec;
    auto& rt = vm_runtime_[rec.name];
    // A VM that was assigned keeps running where it is: no tier-order gate.
    rt.released = !rec.host.empty() && rec.state != VmState::kPending;
    if (!rt.released) gated_.insert(rec.name);
    // An error (budgets spent) survives a restart: it waits for a reset.
    rt.error = rec.state == VmState::kError;
  }
  for (const auto& spec : policy_.hosts) ensureHost(spec.name);
  if (view_only_) {  // read only: the backup catalogue, incidents, the journal as shown
    TW_RETURN_IF_ERROR(loadBackups());
    return loadIncidentsAndJournal(/*resume=*/false);
  }
  // A host declared dead but not fenced before the restart gets the same
  // grace: it may have come back while this controller was down (its agent
  // held its lease with its peers), and what was known then (silence, no
  // libvirt, a quorum) is stale. It is judged afresh: a heartbeat within
  // dead_after makes it online; else checkLiveness() declares it dead again
  // only when libvirt and a quorum agree now. None of its VMs was moved.
  for (const auto& name : was_offline) {
    auto it = hosts_.find(name);
    if (it == hosts_.end()) continue;
    setHostState(it->second, HostState::kSuspect,
                 "declared dead before the controller restarted; waiting " +
                     seconds(policy_.settings.dead_after_ms) + " for a heartbeat");
  }
  // The policy in force was accepted by an earlier controller: what this
  // one's configuration cannot do for it is said, not refused (an apply
  // that fixes it needs a running controller).
  for (const auto& spec : policy_.hosts) {
    if (spec.fence_legacy_command) {
      emit("error", "host.fence_unusable", "host/" + spec.name,
           "host '" + spec.name + "': the policy in force says fence: command, which is no "
           "longer run (a policy cannot carry commands); it is fenced " +
               (spec.fence == FenceMethod::kLibvirt ? std::string("through its libvirt or ") : "") +
               "by lease expiry until a policy naming a fence agent of the controller's "
               "configuration (fence: { agent: NAME }) is applied");
    }
    Status agent = checkFenceAgent(spec);
    if (!agent.isOk()) {
      emit("error", "host.fence_unusable", "host/" + spec.name,
           agent.message() + "; fencing it falls back to lease expiry until this is fixed");
    }
  }
  TW_RETURN_IF_ERROR(loadBackups());
  TW_RETURN_IF_ERROR(loadIncidentsAndJournal(/*resume=*/true));
  host_connector_.setHosts(policy_.hosts);
  dirty_ = true;
  assignmentsTouched(true);
  log::info("recovered: policy version {}, {} hosts, {} vms", policy_record_.version,
            hosts_.size(), vms_.size());
  return Status::ok();
}

Status Controller::loadView() {
  view_only_ = true;
  return recover();
}

// The open incidents and the action journal. resume (a controller that acts):
// migrations and drains go on, a fence restarts from its host's state and
// other actions end. Otherwise (loadView): shown as they are; no event, no
// write.
Status Controller::loadIncidentsAndJournal(bool resume) {
  auto incidents = store_.incidents(0);
  if (!incidents.isOk()) return incidents.status().withContext("loading incidents");
  for (const auto& inc : *incidents)
    if (inc.closed_ms == 0) open_incidents_[inc.subject] = inc;
  auto actions = store_.openActions();
  if (!actions.isOk()) return actions.status().withContext("loading the action journal");
  for (const auto& a : *actions) {
    auto data = parseJson(a.data_json);
    if (a.kind == "migrate" && data.isOk()) {
      auto vm = vms_.find((*data).value("vm", ""));
      if (vm != vms_.end()) {
        auto& rt = vm_runtime_[vm->first];
        rt.migrate_to = (*data).value("to", "");
        if (!resume) continue;
        rt.migrate_epoch = rt.last_migrate_epoch = (*data).value("epoch", int64_t{0});
        rt.migrate_action_id = a.id;
        log::info("resuming migration of vm '{}' to host '{}'", vm->first, rt.migrate_to);
        continue;
      }
    } else if (a.kind == "drain" && a.subject.rfind("host/", 0) == 0) {
      auto h = hosts_.find(a.subject.substr(5));
      if (h != hosts_.end()) {
        h->second.draining = true;
        if (!resume) continue;
        h->second.drain_action_id = a.id;
        log::info("resuming drain of host '{}'", h->first);
        continue;
      }
    }
    if (resume) (void)store_.endAction(a.id);  // fence (restarts from host state) or obsolete
  }
  return Status::ok();
}

Status Controller::loadPolicy(const PolicyRecord& record) {
  // A stored policy may predate fence agents (fence: command); an apply may not.
  auto parsed = parsePolicy(record.files, PolicyParseOptions{.legacy_fence_command = true});
  if (!parsed.isOk()) return parsed.status();
  policy_ = std::move(parsed).value();
  policy_record_ = record;
  for (const auto& spec : policy_.hosts) ensureHost(spec.name);
  return Status::ok();
}

Controller::HostRuntime& Controller::ensureHost(const std::string& name) {
  auto [it, inserted] = hosts_.try_emplace(name);
  if (inserted) {
    it->second.rec.name = name;
    it->second.declared_ms = clock_.nowMs();
    assignmentsTouched(false);
  }
  return it->second;
}

std::vector<std::string> Controller::settlingHosts() const {
  std::vector<std::string> out;
  Millis now = clock_.nowMs();
  for (const auto& spec : policy_.hosts) {
    auto it = hosts_.find(spec.name);
    if (it == hosts_.end()) continue;
    const HostRuntime& h = it->second;
    if (h.rec.state == HostState::kUnknown && now - h.declared_ms < policy_.settings.dead_after_ms)
      out.push_back(spec.name);
  }
  return out;
}

const VmRecord* Controller::vm(const std::string& name) const {
  auto it = vms_.find(name);
  return it == vms_.end() ? nullptr : &it->second;
}

const HostRecord* Controller::host(const std::string& name) const {
  auto it = hosts_.find(name);
  return it == hosts_.end() ? nullptr : &it->second.rec;
}

std::vector<VmRecord> Controller::vms() const {
  std::vector<VmRecord> out;
  for (const auto& [_, v] : vms_) out.push_back(v);
  return out;
}

std::vector<HostRecord> Controller::hosts() const {
  std::vector<HostRecord> out;
  for (const auto& [_, h] : hosts_) out.push_back(h.rec);
  return out;
}

void Controller::emit(const std::string& level, const std::string& kind,
                      const std::string& subject, const std::string& message) {
  EventRecord e;
  e.t_ms = clock_.nowMs();
  e.level = level;
  e.kind = kind;
  e.subject = subject;
  e.message = message;
  auto stored = store_.appendEvent(e);
  if (!stored.isOk()) {
    log::error("cannot store event '{}' ({}): {}", kind, message, stored.status().toString());
  } else {
    e = *stored;
  }
  log::at(level, message);
  if (event_listener_) event_listener_(e);
}

void Controller::saveVm(const VmRecord& vm) {
  Status s = store_.putVm(vm);
  if (!s.isOk()) log::error("cannot store vm '{}': {}", vm.name, s.toString());
}

void Controller::saveHost(const HostRecord& host) {
  Status s = store_.putHost(host);
  if (!s.isOk()) log::error("cannot store host '{}': {}", host.name, s.toString());
}

void Controller::setHostState(HostRuntime& h, HostState state, const std::string& reason) {
  if (h.rec.state == state) return;
  HostState old = h.rec.state;
  h.rec.state = state;
  h.rec.state_since_ms = clock_.nowMs();
  h.rec.reason = reason;
  saveHost(h.rec);
  std::string level = (state == HostState::kOffline || state == HostState::kSuspect) ? "warn" : "info";
  emit(level, std::string("host.") + toString(state), "host/" + h.rec.name,
       "host '" + h.rec.name + "' " + toString(old) + " -> " + toString(state) +
           (reason.empty() ? "" : ": " + reason));
  // Online and suspect look the same to placement (hostViews()): a flap
  // between them places nothing anew. At 1,000 hosts, placing again on each
  // flap slowed the loop, which made more hosts late and flap (issue #16).
  auto onlineLike = [](HostState s) { return s == HostState::kOnline || s == HostState::kSuspect; };
  if (!(onlineLike(old) && onlineLike(state))) dirty_ = true;
}

void Controller::setVmState(VmRecord& vm, VmState state, const std::string& reason) {
  if (vm.state == state && vm.reason == reason) return;
  VmState old = vm.state;
  vm.state = state;
  vm.reason = reason;
  vm.updated_ms = clock_.nowMs();
  saveVm(vm);
  if (old == state) return;  // reason only: stored, not an event
  std::string level = (state == VmState::kCrashed || state == VmState::kError) ? "warn" : "info";
  if (state == VmState::kError) level = "error";
  std::string where = vm.host.empty() ? "" : " on host '" + vm.host + "'";
  emit(level, std::string("vm.") + toString(state), "vm/" + vm.name,
       "vm '" + vm.name + "'" + where + " " + toString(old) + " -> " + toString(state) +
           (reason.empty() ? "" : ": " + reason));
}

// --------------------------------------------------------------- placement ---

std::vector<HostView> Controller::hostViews(const Policy& policy) const {
  std::vector<HostView> out;
  for (const auto& spec : policy.hosts) {
    HostView v;
    v.name = spec.name;
    v.role = spec.role;
    auto it = hosts_.find(spec.name);
    HostState state = it == hosts_.end() ? HostState::kUnknown : it->second.rec.state;
    Capacity reported = it == hosts_.end() ? Capacity{} : it->second.rec.capacity;
    v.capacity.cpus = spec.cpus > 0 ? spec.cpus : reported.cpus;
    v.capacity.memory_mib = spec.memory_mib > 0 ? spec.memory_mib : reported.memory_mib;
    v.capacity_known = v.capacity.cpus > 0 && v.capacity.memory_mib > 0;
    switch (state) {
      case HostState::kOnline:
      case HostState::kSuspect:
        v.schedulable = true;
        v.accepts_new = !(it != hosts_.end() && it->second.draining);
        break;
      case HostState::kOffline:
      case HostState::kUnknown:
        // Not fenced: what it runs may still run. Keep its VMs where they
        // are (never two copies) and give it nothing new.
        v.schedulable = true;
        v.accepts_new = false;
        break;
      case HostState::kFenced:
      case HostState::kMaintenance:
        v.schedulable = false;
        break;
    }
    out.push_back(v);
  }
  return out;
}

PlacementInput Controller::placementInput(const Policy& policy) const {
  PlacementInput in;
  in.policy = &policy;
  in.hosts = hostViews(policy);
  for (const auto& [name, vm] : vms_) {
    auto rt = vm_runtime_.find(name);
    bool error = rt != vm_runtime_.end() && rt->second.error;
    if (error) {
      // Budgets spent: it runs nowhere until an operator resets it.
      for (const auto& h : policy.hosts) in.avoid[name].insert(h.name);
      continue;
    }
    if (!vm.host.empty()) in.current.emplace_hint(in.current.end(), name, vm.host);  // name order
    if (rt != vm_runtime_.end() && !rt->second.avoid.empty()) in.avoid[name] = rt->second.avoid;
  }
  return in;
}

std::vector<PlanItem> Controller::planItems(const PlacementResult& placed) const {
  std::vector<PlanItem> items;
  for (const auto& p : placed.vms) {
    PlanItem item{p.vm, p.tier, p.host, "", p.reason};
    auto it = vms_.find(p.vm);
    if (p.host.empty()) {
      item.action = "pending";
    } else if (it == vms_.end() || it->second.host.empty()) {
      item.action = "create";
    } else if (it->second.host == p.host) {
      item.action = "keep";
    } else {
      item.action = "move";
      if (item.reason.empty()) item.reason = "from host '" + it->second.host + "'";
    }
    items.push_back(item);
  }
  for (const auto& name : vmsToRemove(placed, vms_)) {
    auto it = vms_.find(name);
    items.push_back(PlanItem{name, it == vms_.end() ? "" : it->second.tier, "", "delete",
                             "no longer desired"});
  }
  return items;
}

Result<ApplyResult> Controller::applyPolicy(const std::vector<PolicyFile>& files, bool dry_run,
                                            ProbeMode probe) {
  if (files.empty()) return invalidArgument("no policy files given");
  std::vector<PolicyFile> merged = mergePolicyFiles(policy_record_.files, files);
  auto parsed = parsePolicy(merged);
  if (!parsed.isOk()) return parsed.status();
  Policy next = std::move(parsed).value();
  TW_RETURN_IF_ERROR(checkFenceAgents(next));
  std::string digest = digestOf(merged);
  // New paths are checked on the online hosts first (path_probes.h).
  std::map<std::string, HostChecks> unchecked;
  if (probePaths(next, digest, probe, &unchecked)) {
    ApplyResult waiting;
    waiting.dry_run = dry_run;
    waiting.pending = true;
    waiting.version = policy_record_.version;
    for (const auto& [host, _] : unreportedChecksOf(next)) waiting.pending_hosts.push_back(host);
    return waiting;
  }
  TW_RETURN_IF_ERROR(checkSiteFacts(next));  // what the hosts reported (apply_checks.h)

  ApplyResult result;
  result.dry_run = dry_run;
  std::string unchecked_said;  // the warning about `unchecked`, also an event
  for (const auto& [host, c] : unchecked) {
    result.unchecked_hosts.push_back(host);
    unchecked_said += (unchecked_said.empty() ? "'" : "; '") + host + "' (" + checksList(c) + ")";
  }
  if (!unchecked.empty()) {
    unchecked_said = "not checked on host" + std::string(unchecked.size() > 1 ? "s " : " ") +
                     unchecked_said + ": no report within " +
                     std::to_string(PathProbes::kWaitMs / 1000) +
                     " s; checked when the host reports (a problem then is a policy.site_warning)";
    result.warnings.push_back(unchecked_said);
  }
  result.changed = digest != policy_record_.digest;
  result.version = policy_record_.version;

  // Plan against the hosts as they are now.
  std::map<std::string, HostRuntime> saved_hosts = hosts_;
  for (const auto& spec : next.hosts) ensureHost(spec.name);
  PlacementInput input = placementInput(next);
  PlacementResult placed = place(input);
  result.plan = planItems(placed);
  result.n_plus_one = checkNPlusOne(input, placed);
  hosts_ = saved_hosts;

  std::vector<std::string> waiting_for;  // hosts that have not reported yet
  for (const auto& h : input.hosts) {
    auto rt = hosts_.find(h.name);
    bool never_reported = rt == hosts_.end() || rt->second.rec.state == HostState::kUnknown;
    if (!h.capacity_known || never_reported) waiting_for.push_back(h.name);
  }
  std::vector<std::string> unplaced;
  for (const auto& p : placed.vms) {
    if (p.host.empty()) unplaced.push_back("vm '" + p.vm + "': " + p.reason);
  }
  if (!unplaced.empty()) {
    std::string list;
    for (const auto& u : unplaced) list += (list.empty() ? "" : "; ") + u;
    if (waiting_for.empty()) {
      return failedPrecondition("policy cannot be placed: " + list);
    }
    std::string hosts;
    for (const auto& h : waiting_for) hosts += (hosts.empty() ? "'" : ", '") + h + "'";
    result.warnings.push_back(std::to_string(unplaced.size()) +
                              " VMs wait for hosts that have not reported yet (" +
                              hosts + ")");
  }
  if (!result.n_plus_one.safe) {
    if (next.settings.n_plus_one == NPlusOneMode::kRefuse) {
      return failedPrecondition("refused by n_plus_one: refuse: " + result.n_plus_one.summary());
    }
    if (next.settings.n_plus_one == NPlusOneMode::kWarn) {
      result.warnings.push_back(result.n_plus_one.summary());
    }
  }
  if (dry_run || !result.changed) return result;

  // One apply = one transaction: policy, tiers and the VMs it places. Memory
  // is restored if the transaction fails.
  Policy old_policy = policy_;
  PolicyRecord old_record = policy_record_;
  auto old_vms = vms_;
  auto old_runtime = vm_runtime_;
  auto old_hosts = hosts_;
  PolicyRecord record;
  record.applied_ms = clock_.nowMs();
  record.digest = digest;
  record.files = merged;
  Status s = store_.transaction([&]() -> Status {
    auto version = store_.insertPolicy(record);
    if (!version.isOk()) return version.status();
    record.version = *version;
    TW_RETURN_IF_ERROR(store_.replaceTiers(record.version, next.tiers));
    policy_ = next;
    policy_record_ = record;
    for (auto it = hosts_.begin(); it != hosts_.end();) {
      if (!policy_.findHost(it->first)) {
        TW_RETURN_IF_ERROR(store_.deleteHost(it->first));
        it = hosts_.erase(it);
      } else {
        ++it;
      }
    }
    for (const auto& spec : policy_.hosts) ensureHost(spec.name);
    std::string names;
    for (const auto& f : files) names += (names.empty() ? "" : ", ") + f.name;
    emit("info", "policy.applied", "policy/" + std::to_string(record.version),
         "applied policy version " + std::to_string(record.version) + " (" + names + ")");
    if (!unchecked_said.empty())
      emit("warn", "policy.unchecked", "policy/" + std::to_string(record.version), unchecked_said);
    dirty_ = true;
    assignmentsTouched(true);  // the tiers' specs may have changed
    reconcile();
    return Status::ok();
  });
  if (!s.isOk()) {
    assignmentsTouched(true);
    ++peers_gen_;
    gated_.clear();
    for (const auto& [name, _] : old_vms) gated_.insert(name);  // sorted out by releaseGated()
    for (const auto& [name, rt] : old_runtime)
      if (!rt.evict_from.empty()) evicting_.insert(name);
    policy_ = old_policy;
    policy_record_ = old_record;
    vms_ = old_vms;
    vm_runtime_ = old_runtime;
    hosts_ = old_hosts;
    return s.withContext("applying policy");
  }
  result.applied = true;
  result.version = record.version;
  noteSiteFindings();
  host_connector_.setHosts(policy_.hosts);
  releaseGated();
  publishAssignments();
  return result;
}

// ----------------------------------------------------------- the loop ---

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
      assignmentsTouched(false);
      setVmState(vm, VmState::kStarting, "assigned to host '" + vm.host + "'");
    } else if (now - rt.waiting_since_ms >= policy_.settings.tier_order_timeout_ms) {
      rt.released = true;
      assignmentsTouched(false);
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
  PlacementInput input = placementInput(policy_);
  std::vector<std::string> settling = settlingHosts();
  std::string settling_reason;
  if (!settling.empty()) {
    // Give every declared host a chance to report before placing anything new.
    for (auto& h : input.hosts) h.accepts_new = false;
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
  PlacementResult placed = place(input);
  Millis now = clock_.nowMs();
  for (const auto& name : vmsToRemove(placed, vms_)) {
    auto it = vms_.find(name);
    if (it == vms_.end()) continue;
    std::string where = it->second.host.empty() ? "" : " from host '" + it->second.host + "'";
    Status s = store_.deleteVm(name);
    if (!s.isOk()) log::error("cannot delete vm '{}': {}", name, s.toString());
    vms_.erase(it);
    vm_runtime_.erase(name);
    assignmentsTouched(true);
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
      assignmentsTouched(true);
    }
    auto& rt = vm_runtime_[p.vm];
    if (rt.error) {
      if (!vm.host.empty()) {
        vm.host.clear();
        assignmentsTouched(true);
        saveVm(vm);
      }
      continue;
    }
    if (!rt.migrate_to.empty()) continue;  // stays on its source until the migration ends
    if (p.host.empty() || vm.host != p.host) {
      // Placed elsewhere (or nowhere): an eviction from its old host is over.
      if (!rt.evict_from.empty()) assignmentsTouched(false);
      rt.evict_from.clear();
      rt.evict_version = 0;
      rt.evict_confirmed = false;
    }
    if (p.host.empty()) {
      const std::string& reason = settling_reason.empty() ? p.reason : settling_reason;
      bool changed = !vm.host.empty();
      vm.host.clear();
      if (changed || rt.released) assignmentsTouched(changed);
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
      assignmentsTouched(true);
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

// ---------------------------------------------------------------- agents ---

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
    if (!rt.migrate_to.empty() && rt.migrate_to == hb.host && d.epoch == rt.migrate_epoch &&
        isActive(d.state)) {
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
    assignmentsTouched(false);
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
    rt.relocations.clear();
    rt.relocated_epoch = -1;
    vm.relocations = 0;
    vm.restarts = 0;
    if (!vm.host.empty()) ++vm.epoch;  // a new epoch resets the agent's restart budget too
    assignmentsTouched(false);
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

// ------------------------------------------------------------- read side ---

Json Controller::incidentsJson() const {
  Json list = Json::array();
  auto stored = store_.incidents(100);
  if (!stored.isOk()) return Json{{"incidents", list}, {"error", stored.status().message()}};
  for (const auto& inc : *stored) {
    Json steps = Json::array();
    for (const auto& st : inc.steps)
      steps.push_back(Json{{"step", st.step}, {"t_ms", st.t_ms}, {"detail", st.detail}});
    list.push_back(Json{{"id", inc.id},
                        {"subject", inc.subject},
                        {"kind", inc.kind},
                        {"summary", inc.summary},
                        {"opened_ms", inc.opened_ms},
                        {"closed_ms", inc.closed_ms},
                        {"open", inc.closed_ms == 0},
                        {"steps", steps}});
  }
  return Json{{"incidents", list}};
}


Json Controller::clusterJson() const {
  Json hosts_by_state = Json::object();
  for (const auto& [_, h] : hosts_) {
    std::string k = toString(h.rec.state);
    hosts_by_state[k] = hosts_by_state.value(k, 0) + 1;
  }
  Json vms_by_state = Json::object();
  for (const auto& [_, v] : vms_) {
    std::string k = toString(v.state);
    vms_by_state[k] = vms_by_state.value(k, 0) + 1;
  }
  PlacementInput input = placementInput(policy_);
  PlacementResult placed = place(input);
  NPlusOneReport n1 = checkNPlusOne(input, placed);
  Json breaking = Json::object();
  for (const auto& [h, list] : n1.breaking) breaking[h] = list;
  return Json{{"time_ms", clock_.nowMs()},
              {"policy_version", policy_record_.version},
              {"policy_digest", policy_record_.digest},
              {"settings", policy_.settings},
              {"hosts_by_state", hosts_by_state},
              {"vms_by_state", vms_by_state},
              {"n_plus_one", Json{{"safe", n1.safe}, {"summary", n1.summary()}, {"breaking", breaking}}}};
}

Result<Json> Controller::hostsJson(const PageRequest& page) const {
  Json list = Json::array();
  size_t first = 0;
  if (!page.after.empty()) {
    while (first < policy_.hosts.size() && policy_.hosts[first].name != page.after) ++first;
    if (first == policy_.hosts.size()) {
      return invalidArgument("after: no host named " + quoteForMessage(page.after) +
                             " is declared (pages follow the policy's host order)");
    }
    ++first;
  }
  std::string next;
  for (size_t i = first; i < policy_.hosts.size(); ++i) {
    const HostSpec& spec = policy_.hosts[i];
    if (page.limit > 0 && static_cast<int>(list.size()) == page.limit) {
      next = policy_.hosts[i - 1].name;
      break;
    }
    auto it = hosts_.find(spec.name);
    if (it == hosts_.end()) continue;
    const auto& h = it->second;
    Capacity used;
    Json names = Json::array();
    for (const auto& name : vmsByHost().of(spec.name)) {  // by name
      auto v = vms_.find(name);
      if (v == vms_.end() || v->second.host != spec.name) continue;
      const VmRecord& vm = v->second;
      names.push_back(name);
      if (const TierSpec* t = policy_.findTier(vm.tier)) {
        used.cpus += t->vcpus;
        used.memory_mib += t->memory_mib;
      }
    }
    Capacity cap{spec.cpus > 0 ? spec.cpus : h.rec.capacity.cpus,
                 spec.memory_mib > 0 ? spec.memory_mib : h.rec.capacity.memory_mib};
    list.push_back(Json{{"name", spec.name},
                        {"role", toString(spec.role)},
                        {"uri", spec.uri},
                        {"fence", toString(spec.fence)},
                        {"fence_agent", spec.fence_agent},  // its name only: the command is the controller's
                        {"state", toString(h.rec.state)},
                        {"state_since_ms", h.rec.state_since_ms},
                        {"reason", h.rec.reason},
                        {"capacity", cap},
                        {"used", used},
                        {"vms", names},
                        {"service_address", h.service_address},
                        {"last_heartbeat_ms", h.seen ? h.last_heartbeat_ms : 0},
                        {"peers_unreachable", h.peers_unreachable},
                        {"self_fence_reason", h.self_fence_reason},
                        {"self_fenced_ms", h.self_fenced_ms}});
  }
  Json out{{"hosts", list}};
  if (!next.empty()) out["next"] = next;
  return out;
}

Json Controller::tiersJson() const {
  Json list = Json::array();
  int order = 0;
  for (const TierSpec* t : policy_.tiersInOrder()) {
    int running = 0, healthy = 0;
    for (const auto& [_, vm] : vms_) {
      if (vm.tier != t->name || vm.state != VmState::kRunning) continue;
      ++running;
      if (vm.health == Health::kHealthy) ++healthy;
    }
    Json j = *t;
    j["order"] = ++order;
    j["running"] = running;
    j["healthy"] = healthy;
    j["is_healthy"] = tierHealthy(t->name);
    if (t->backup.enabled()) j["backup_warnings"] = backupWarnings(*t);
    // What the hosts reported against the tier (controller_site.cc).
    if (auto w = siteWarnings(t->name); !w.empty()) j["site_warnings"] = w;
    // The floating address (docs/policy.md): "ip" and who holds it now.
    if (t->address.set()) j["address"]["holder"] = addressHolder(t->name);
    list.push_back(j);
  }
  return Json{{"tiers", list}};
}

Result<Json> Controller::endpointsJson(const std::string& tier_name) const {
  const TierSpec* tier = policy_.findTier(tier_name);
  if (!tier) return notFound("no tier named '" + tier_name + "'");
  std::vector<ServicePort> ports = tier->ports;
  if (ports.empty() && tier->health.kind != HealthKind::kNone && tier->health.port > 0) {
    ports.push_back(ServicePort{"health", tier->health.port, "tcp"});
  }
  Json list = Json::array();
  for (const auto& [name, vm] : vms_) {  // by name
    if (vm.tier != tier_name || vm.host.empty()) continue;
    // Fencing, crashed, restarting...: not a place to send clients, whatever
    // the last heartbeat said. A migrating VM still serves from its source.
    if (vm.state != VmState::kRunning && vm.state != VmState::kMigrating) continue;
    auto h = hosts_.find(vm.host);
    if (h == hosts_.end()) continue;
    auto d = h->second.domains.find(name);
    if (d == h->second.domains.end()) continue;
    const DomainReport& report = d->second;
    if (report.epoch != vm.epoch || vmStateOf(report.state) != VmState::kRunning) continue;
    std::vector<Json> entries;
    for (const auto& p : ports) {
      auto fwd = report.ports.find(p.port);
      if (fwd == report.ports.end() || fwd->second <= 0) continue;
      entries.push_back(Json{{"vm", name},
                             {"host", h->second.service_address},
                             {"port", fwd->second},
                             {"hypervisor", vm.host},
                             {"name", p.name},
                             {"guest_port", p.port},
                             {"healthy", report.health == Health::kHealthy}});
    }
    std::sort(entries.begin(), entries.end(), [](const Json& a, const Json& b) {
      return a["port"].get<int>() < b["port"].get<int>();
    });
    for (auto& e : entries) list.push_back(std::move(e));
  }
  return Json{{"tier", tier_name}, {"endpoints", list}};
}

Json Controller::vmsJson(const PageRequest& page) const {
  Json list = Json::array();
  if (!page.names.empty()) {
    for (const std::string& name : page.names) {
      auto it = vms_.find(name);
      if (it != vms_.end()) list.push_back(it->second);
    }
    return Json{{"vms", list}};
  }
  auto it = page.after.empty() ? vms_.begin() : vms_.upper_bound(page.after);
  std::string next;
  for (; it != vms_.end(); ++it) {
    if (page.limit > 0 && static_cast<int>(list.size()) == page.limit) {
      next = std::prev(it)->first;
      break;
    }
    list.push_back(it->second);
  }
  Json out{{"vms", list}};
  if (!next.empty()) out["next"] = next;
  return out;
}

Result<Json> Controller::vmJson(const std::string& name) {
  auto it = vms_.find(name);
  if (it == vms_.end()) return notFound("no vm named '" + name + "'");
  Json j = it->second;
  // The VM's latest events: scan the log backwards in pages.
  auto last = store_.lastEventId();  // ids go on growing when old events are pruned
  Json events = Json::array();
  if (last.isOk()) {
    auto all = store_.eventsSince(std::max<int64_t>(0, *last - 2000), 2000);
    if (all.isOk()) {
      std::vector<EventRecord> mine;
      for (const auto& e : *all)
        if (e.subject == "vm/" + name) mine.push_back(e);
      size_t from = mine.size() > 50 ? mine.size() - 50 : 0;
      for (size_t i = from; i < mine.size(); ++i) events.push_back(mine[i]);
    }
  }
  j["events"] = events;
  if (const TierSpec* t = policy_.findTier(it->second.tier)) j["spec"] = *t;
  return j;
}

Result<Json> Controller::eventsTailJson(int n) {
  auto last = store_.lastEventId();
  if (!last.isOk()) return last.status();
  auto j = eventsJson(std::max<int64_t>(0, *last - n), n);
  if (j.isOk()) (*j)["last_id"] = std::max<int64_t>((*j)["last_id"].get<int64_t>(), *last);
  return j;
}

Result<Json> Controller::eventsJson(int64_t since, int limit) {
  auto events = store_.eventsSince(since, limit);
  if (!events.isOk()) return events.status();
  int64_t last = since;
  Json list = Json::array();
  for (const auto& e : *events) {
    list.push_back(e);
    last = e.id;
  }
  return Json{{"events", list}, {"last_id", last}};
}

std::string Controller::metricsText() {
  std::ostringstream out;
  out << "# HELP tierwarden_hosts Hosts by state.\n# TYPE tierwarden_hosts gauge\n";
  std::map<std::string, int> by_state;
  for (const auto& [_, h] : hosts_) by_state[toString(h.rec.state)]++;
  for (HostState s : {HostState::kUnknown, HostState::kOnline, HostState::kSuspect,
                      HostState::kOffline, HostState::kFenced, HostState::kMaintenance}) {
    out << "tierwarden_hosts{state=\"" << toString(s) << "\"} " << by_state[toString(s)] << "\n";
  }
  out << "# HELP tierwarden_vms VMs by state and tier.\n# TYPE tierwarden_vms gauge\n";
  std::map<std::pair<std::string, std::string>, int> vms;
  for (const auto& [_, v] : vms_) vms[{toString(v.state), v.tier}]++;
  for (const auto& [k, n] : vms) {
    out << "tierwarden_vms{state=\"" << k.first << "\",tier=\"" << k.second << "\"} " << n << "\n";
  }
  out << "# HELP tierwarden_reconcile_duration_seconds Time spent in one reconcile pass.\n"
      << "# TYPE tierwarden_reconcile_duration_seconds summary\n"
      << "tierwarden_reconcile_duration_seconds_sum " << reconcile_seconds_sum_ << "\n"
      << "tierwarden_reconcile_duration_seconds_count " << reconcile_count_ << "\n"
      << "# HELP tierwarden_assignment_set_builds_total Hosts' assignment sets built to look for a change.\n"
      << "# TYPE tierwarden_assignment_set_builds_total counter\n"
      << "tierwarden_assignment_set_builds_total " << assignment_set_builds_ << "\n";
  auto count = store_.lastEventId();  // a counter: pruning does not lower it
  out << "# HELP tierwarden_events_total Events recorded.\n# TYPE tierwarden_events_total counter\n"
      << "tierwarden_events_total " << (count.isOk() ? *count : 0) << "\n";
  out << "# HELP tierwarden_events_pruned_total Events removed by the event log retention.\n"
      << "# TYPE tierwarden_events_pruned_total counter\n"
      << "tierwarden_events_pruned_total " << retention_.prunedTotal() << "\n";
  auto bytes = store_.eventLogBytes();
  if (bytes.isOk() && *bytes >= 0) {
    out << "# HELP tierwarden_event_log_bytes What the event log takes on disk.\n"
        << "# TYPE tierwarden_event_log_bytes gauge\n"
        << "tierwarden_event_log_bytes " << *bytes << "\n";
  }
  return out.str();
}

}  // namespace tw
