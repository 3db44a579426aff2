#include "controller/controller.h"
#include "controller/controller_util.h"
#include "controller/leader_renewals.h"

#include <cstdio>
#include <cstdlib>
#include <random>
#include <string_view>
#include <unordered_set>

#include "tw/hex64.h"
#include "tw/log.h"
#include "tw/policy.h"

namespace tw {

namespace controller_detail {

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

std::vector<std::string> vmsToRemove(const PlacementResult& placed,
                                     const std::map<std::string, VmRecord>& vms) {
  // A partial result (PlacementIndex) comes only while the policy is the
  // same: every VM in `vms` is still desired.
  if (placed.partial) return {};
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

}  // namespace controller_detail

namespace {

std::string newControllerId() {
  std::random_device rd;
  std::uniform_int_distribution<uint64_t> dist;
  return hex64(dist(rd));
}

}  // namespace

using controller_detail::seconds;

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
  // Placement's check mode (setPlacementCheck()): the test binaries and the
  // simulator set it in their environment.
  const char* check = std::getenv("TW_PLACEMENT_CHECK");
  check_placement_ = check != nullptr && *check != '\0' && std::string_view(check) != "0";
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
    hostAssignmentsTouched(name);
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

}  // namespace tw
