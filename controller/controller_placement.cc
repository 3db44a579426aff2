// Placement: the hosts and VMs the placer sees, and applying a policy (dry run, plan, store, events).
#include "controller/controller.h"
#include "controller/controller_util.h"

#include <cstdio>
#include <cstdlib>

#include "tw/policy.h"

namespace tw {

using controller_detail::vmsToRemove;

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

PlacementIndex::VmInput Controller::placementInputOf(const Policy& policy, const std::string& vm) const {
  PlacementIndex::VmInput in;
  auto it = vms_.find(vm);
  if (it == vms_.end()) return in;
  auto rt = vm_runtime_.find(vm);
  if (rt != vm_runtime_.end() && rt->second.error) {
    // Budgets spent: it runs nowhere until an operator resets it.
    for (const auto& h : policy.hosts) in.avoid.insert(h.name);
    return in;
  }
  in.host = it->second.host;
  if (rt != vm_runtime_.end()) in.avoid = rt->second.avoid;
  return in;
}

PlacementInput Controller::placementInput(const Policy& policy) const {
  PlacementInput in;
  in.policy = &policy;
  in.hosts = hostViews(policy);
  for (const auto& [name, _] : vms_) {  // name order: appended with a hint
    PlacementIndex::VmInput vm = placementInputOf(policy, name);
    if (!vm.host.empty()) in.current.emplace_hint(in.current.end(), name, std::move(vm.host));
    if (!vm.avoid.empty()) in.avoid.emplace_hint(in.avoid.end(), name, std::move(vm.avoid));
  }
  return in;
}

PlacementResult Controller::placeForReconcile(const std::vector<HostView>& hosts) {
  const std::string& key = policy_record_.digest;
  auto everything = [&] {  // place()'s input: every VM (O(VMs))
    PlacementInput input = placementInput(policy_);
    input.hosts = hosts;
    return input;
  };
  if (!incremental_placement_) {
    ++placement_full_runs_;
    placement_index_.invalidate();
    return place(everything());
  }
  auto partial = placement_index_.placeChanged(
      key, hosts, [this](const std::string& vm) { return placementInputOf(policy_, vm); });
  if (!partial) {
    ++placement_full_runs_;
    return placement_index_.placeAll(everything(), key);
  }
  if (check_placement_) {
    const std::string difference = placement_index_.differenceFrom(*partial, place(everything()));
    if (!difference.empty()) {
      // A wrong placement may put a VM on two hosts: stop here, loudly. To
      // stderr whatever the log level (the simulator runs with logs off).
      std::fprintf(stderr, "placement check: the incremental placement differs from place(): %s\n",
                   difference.c_str());
      std::abort();
    }
  }
  return std::move(*partial);
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
    placement_index_.invalidate();  // it may know the new policy's VMs
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

}  // namespace tw
