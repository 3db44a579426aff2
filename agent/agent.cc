#include "agent/agent.h"

#include <algorithm>
#include <cstdio>
#include <random>
#include <utility>

#include "tw/keyed_assign.h"
#include "tw/log.h"

namespace tw {

namespace {

// Delay before restart number k (0-based) within the budget window: the first
// after backoff_initial_ms, then 1 s, 2 s, 4 s, ... capped at backoff_max_ms.
Millis backoffFor(size_t k, const RestartBudget& budget) {
  if (k == 0) return budget.backoff_initial_ms;
  Millis delay = 1000;
  for (size_t i = 1; i < k && delay < budget.backoff_max_ms; ++i) delay *= 2;
  return std::min(delay, budget.backoff_max_ms);
}

bool isDown(DomainState s) { return !isActive(s); }

// Running or blocked: a service inside may answer (paused ones cannot).
bool isExecuting(DomainState s) { return s == DomainState::kRunning || s == DomainState::kBlocked; }

std::string vmId(const std::string& vm, int64_t epoch) {
  return fmt::format("vm '{}' (epoch {})", vm, epoch);
}

bool sameReport(const DomainReport& a, const DomainReport& b) {
  return a.vm == b.vm && a.tier == b.tier && a.epoch == b.epoch && a.state == b.state &&
         a.health == b.health && a.restarts == b.restarts && a.reason == b.reason &&
         a.ports == b.ports;
}

// The guest ports of an assignment that need a host port: its service ports
// and its check's port.
std::vector<int> guestPortsOf(const Assignment& a) {
  std::vector<int> out;
  for (const ServicePort& p : a.ports) {
    if (p.port > 0) out.push_back(p.port);
  }
  if (a.health.kind != HealthKind::kNone && a.health.port > 0) out.push_back(a.health.port);
  return out;
}

// "0.84s"
std::string seconds(Millis ms) { return fmt::format("{:.2f}s", static_cast<double>(ms) / 1000.0); }

bool sameReports(const std::vector<DomainReport>& a, const std::vector<DomainReport>& b) {
  return std::equal(a.begin(), a.end(), b.begin(), b.end(), sameReport);
}

}  // namespace

const char* toString(LeaseState s) {
  switch (s) {
    case LeaseState::kNone:
      return "none";
    case LeaseState::kValid:
      return "valid";
    case LeaseState::kHeld:
      return "held";
    case LeaseState::kExpired:
      return "expired";
  }
  return "none";
}

std::string newAgentId() {
  std::random_device rd;
  std::uniform_int_distribution<uint64_t> dist;
  return fmt::format("{:016x}", dist(rd));
}

std::string formatDuration(Millis ms) {
  if (ms > 0 && ms % 3600000 == 0) return fmt::format("{}h", ms / 3600000);
  if (ms > 0 && ms % 60000 == 0) return fmt::format("{}m", ms / 60000);
  if (ms > 0 && ms % 1000 == 0) return fmt::format("{}s", ms / 1000);
  return fmt::format("{}ms", ms);
}

Agent::Agent(AgentOptions options, Hypervisor& hv, ControllerLink& link, Clock& clock,
             HealthProber* prober, PortMap* ports, DomainBuilder* builder)
    : options_(std::move(options)),
      hv_(hv),
      link_(link),
      clock_(clock),
      prober_(prober != nullptr ? *prober : noop_prober_),
      own_ports_(ports == nullptr
                     ? std::make_unique<PortMap>(options_.port_base, options_.port_count)
                     : nullptr),
      ports_(ports != nullptr ? *ports : *own_ports_),
      builder_(builder != nullptr ? *builder : plain_builder_),
      interval_ms_(options_.heartbeat_interval_ms) {}

Status Agent::start() {
  const Millis now = clock_.nowMs();
  Result<std::vector<DomainStatus>> listed = hv_.listManaged();
  if (!listed) return listed.status().withContext("listing managed domains");
  int running = 0;
  for (const DomainStatus& d : *listed) {
    view_[d.meta.vm] = d;
    first_seen_seq_[d.meta.vm] = 0;
    VmTrack& t = tracks_[d.meta.vm];
    t.epoch = d.meta.epoch;
    t.expect_running = isActive(d.state);
    t.running_since_ms = now;
    if (t.expect_running) {
      ++running;
      adoptForwards(d.meta.vm);
    }
  }
  view_ok_ = true;
  Result<Capacity> cap = hv_.capacity();
  if (cap) capacity_ = *cap;
  {
    std::lock_guard<std::mutex> lock(lease_mu_);
    lease_until_ms_ = now + options_.initial_lease_ms;
    next_heartbeat_ms_ = now;
  }
  loadState(now);
  started_ = true;
  publish(now);
  log::info(
      "agent '{}' on host '{}': found {} managed domains ({} active); leaving them as they "
      "are until the controller answers",
      options_.agent_id, options_.host, view_.size(), running);
  return Status::ok();
}

void Agent::onDomainEvent(const DomainEvent& e) {
  // Re-entrant from inside hv_ calls: record only (no container we iterate).
  pending_events_.push_back(e);
  dirty_ = true;
}

void Agent::onAssignments(const AssignmentSet& set) {
  if (leaseState() == LeaseState::kExpired) {
    // Self-fenced: only the answer to a heartbeat sent after the fence counts.
    log::debug("ignoring pushed assignments version {}: self-fenced", set.version);
    return;
  }
  if (set.host != options_.host) {
    log::warn("ignoring assignments for host '{}' (this is host '{}')", set.host, options_.host);
    return;
  }
  if (!admitTerm(set)) {  // a deposed leader's push: agent/term_watch.h
    link_.refusedAnswer(/*pushed=*/true);
    return;
  }
  if (has_set_ && set.controller_id != set_.controller_id) {
    // Versions are ordered within one controller process only. A push from
    // another one (a restarted controller, or a late push of a dead one)
    // waits: the answer to our next heartbeat brings the current set.
    log::debug("ignoring pushed assignments version {} of controller '{}': the set in force "
               "is from controller '{}'",
               set.version, set.controller_id, set_.controller_id);
    return;
  }
  if (has_set_ && set.version < set_.version) {
    log::debug("ignoring assignments version {}: version {} is in force", set.version,
               set_.version);
    return;
  }
  applySet(set);
  dirty_ = true;
}

void Agent::applySet(AssignmentSet set_in) {
  if (!has_set_ || set_in.version != set_.version) {
    log::info("assignments version {} for host '{}': {} vms", set_in.version, options_.host,
              set_in.assignments.size());
  }
  // An answer that leaves the peer list out (the heartbeat said we hold the
  // current one) keeps ours.
  const Millis old_peer_timeout = set_.peer_timeout_ms;
  std::vector<PeerInfo> kept_peers;
  if (set_in.peers_omitted) kept_peers = std::move(set_.peers);
  set_ = std::move(set_in);
  const AssignmentSet& set = set_;  // all but its peers as handed in
  if (set.peers_omitted) {
    set_.peers = std::move(kept_peers);
  } else {
    ++set_peers_gen_;
  }
  has_set_ = true;
  assignKeyed(assigned_, set_.assignments,
              [](const Assignment& a) -> const std::string& { return a.vm; });
  if (!set.peers_omitted || set.peer_timeout_ms != old_peer_timeout) {
    peers_->setPeers(set_.peers, set.peer_timeout_ms);
  }
  std::lock_guard<std::mutex> lock(lease_mu_);
  peer_count_ = set_.peers.size();
  has_peer_list_ = true;
  // Omitted with another digest: a push with a newer list came in between;
  // ours is kept, and the next heartbeat asks for the list again.
  peers_digest_ = set.peers_omitted && set.peers_digest != peers_digest_ ? "" : set.peers_digest;
  if (set.heartbeat_interval_ms > 0 && set.heartbeat_interval_ms != interval_ms_) {
    log::info("heartbeat interval now {} ms", set.heartbeat_interval_ms);
    interval_ms_ = set.heartbeat_interval_ms;
    next_heartbeat_ms_ = last_heartbeat_ms_ + interval_ms_;
  }
}

void Agent::runOnce() {
  if (!started_) return;
  const Millis now = clock_.nowMs();
  // An answer waiting for the loop is taken first and this pass acts on it:
  // it asks for no pass after this one (issue #16: a second pass, with its
  // libvirt listing, after every heartbeat answer found nothing new to do).
  takeAnswer();
  dirty_ = false;
  absorbEvents();
  refreshView();
  LeaseState state = checkLease(now);
  if (state == LeaseState::kExpired) {
    fence();
  } else if ((state == LeaseState::kValid || state == LeaseState::kHeld) && has_set_) {
    converge(now, state == LeaseState::kHeld);
  }
  convergeAddresses(state);
  publish(now);
  saveState();
  if (!external_heartbeats_) {
    bool due;
    {
      std::lock_guard<std::mutex> lock(lease_mu_);
      due = now >= next_heartbeat_ms_ || reportDueLocked();
    }
    if (due) {
      sendHeartbeat(now);
      if (takeAnswer() && leaseState() == LeaseState::kValid) {
        converge(now);
        convergeAddresses(LeaseState::kValid);
      }
      publish(now);
    }
  }
  flushEvents();
}

Millis Agent::heartbeatTick() {
  const Millis now = clock_.nowMs();
  bool due;
  {
    std::lock_guard<std::mutex> lock(lease_mu_);
    due = started_ && (now >= next_heartbeat_ms_ || reportDueLocked());
  }
  if (due) sendHeartbeat(now);
  LeaseState before, after;
  Millis next;
  {
    std::lock_guard<std::mutex> lock(lease_mu_);
    before = lease_state_;
    after = judgeLeaseLocked(now);
    next = next_heartbeat_ms_;
  }
  if (after != before && wake_) wake_();  // held or fenced: the core acts
  return next;
}

void Agent::publish(Millis now) {
  reports_ = buildReports(now);
  std::lock_guard<std::mutex> lock(lease_mu_);
  published_.host = options_.host;
  published_.agent_id = options_.agent_id;
  published_.capacity = capacity_;
  published_.assignments_version = assignmentsVersion();
  published_.assignments_controller = has_set_ ? set_.controller_id : "";
  published_.domains = reports_;
  published_.service_address = options_.service_address;
  published_.addresses_held = addresses_ != nullptr ? addresses_->held() : std::vector<std::string>{};
  if (host_reporter_ != nullptr)
    published_.host_report = host_reporter_->refresh(has_set_ ? set_.checks : HostChecks{}, now);
  published_events_ = emitted_;
  ++published_gen_;
  running_managed_ = 0;
  for (const auto& [vm, d] : view_) {
    if (isActive(d.state)) ++running_managed_;
  }
}

bool Agent::takeAnswer() {
  std::optional<AssignmentSet> answer;
  {
    std::lock_guard<std::mutex> lock(lease_mu_);
    answer.swap(answer_);
  }
  if (!answer) return false;
  // An answer waits here for the loop; a set pushed meanwhile by the same
  // controller process may be newer (a slow loop: a drain's push overtook
  // the answer to a heartbeat sent before it). The older one never wins.
  if (has_set_ && answer->controller_id == set_.controller_id && answer->version < set_.version) {
    log::debug("dropping the answer with assignments version {}: version {} of the same "
               "controller is in force",
               answer->version, set_.version);
    return false;
  }
  // Else it is the controller's current set: applied even when its version is
  // lower than ours if another controller process made ours (a controller
  // that lost its state, or whose clock stepped back).
  applySet(std::move(*answer));
  dirty_ = true;
  return true;
}

Millis Agent::nextWakeMs() const {
  const Millis now = clock_.nowMs();
  std::lock_guard<std::mutex> lock(lease_mu_);
  if (!started_) return now + interval_ms_;
  if (dirty_ || answer_ || (!external_heartbeats_ && reportDueLocked())) return now;
  if (events_deferred_) return now + 20;
  Millis next = external_heartbeats_ ? now + 1000 : next_heartbeat_ms_;
  if (lease_state_ != LeaseState::kExpired) {
    next = std::min(next, lease_state_ == LeaseState::kHeld ? now + 250 : lease_until_ms_);
  }
  if ((lease_state_ == LeaseState::kValid || lease_state_ == LeaseState::kHeld) && has_set_ &&
      view_ok_) {
    for (const auto& [vm, t] : tracks_) {
      if (t.down && !t.exhausted && assigned_.count(vm) != 0) {
        next = std::min(next, t.next_restart_ms);
      }
    }
  }
  return next;
}

void Agent::absorbEvents() {
  std::vector<DomainEvent> events;
  events.swap(pending_events_);
  for (const DomainEvent& e : events) {
    log::debug("domain event: vm '{}' {} ({})", e.vm, toString(e.kind), e.detail);
    auto it = tracks_.find(e.vm);
    if (it == tracks_.end()) continue;
    if (e.kind == DomainEventKind::kStarted) it->second.forwarded = false;  // a new QEMU: check
    if (e.kind != DomainEventKind::kCrashed && e.kind != DomainEventKind::kStopped &&
        e.kind != DomainEventKind::kMigrated) {
      continue;
    }
    it->second.forwarded = false;  // its QEMU is gone, and its forwards with it
    it->second.forwards.clear();
    if (e.kind == DomainEventKind::kMigrated) continue;
    it->second.stop_detail = e.detail.empty() ? toString(e.kind) : e.detail;
  }
}

void Agent::refreshView() {
  Result<std::vector<DomainStatus>> listed = hv_.listManaged();
  if (!listed) {
    view_ok_ = false;
    logFailureOnce("hypervisor", "cannot list managed domains: " + listed.status().toString() +
                                     " (acting on the last view)");
    return;
  }
  clearFailure("hypervisor");
  view_ok_ = true;
  // The same domains as last time (most passes): refreshed in place, and
  // first_seen_seq_ (keyed alike) stays as it is.
  const bool same_names = assignKeyed(view_, std::move(*listed),
                                      [](const DomainStatus& d) -> const std::string& {
                                        return d.meta.vm;
                                      });
  if (!same_names || !sameKeys(first_seen_seq_, view_)) {
    std::map<std::string, int64_t> first_seen;
    for (const auto& [vm, d] : view_) {
      auto seen = first_seen_seq_.find(vm);
      // Not in any heartbeat yet: the next publication carries it.
      first_seen[vm] = seen != first_seen_seq_.end() ? seen->second : publishedGen();
    }
    first_seen_seq_.swap(first_seen);
  }
  Result<Capacity> cap = hv_.capacity();
  if (cap) capacity_ = *cap;
}

LeaseState Agent::judgeLeaseLocked(Millis now) {
  if (lease_state_ == LeaseState::kExpired) return lease_state_;
  if (now < lease_until_ms_) return lease_state_;
  if (lease_state_ == LeaseState::kNone && now < judge_from_ms_) return lease_state_;
  // The lease ran out. Fence only when the votes this host cannot reach
  // (the controller's among them) could be a majority: then, and only then,
  // the controller may give its VMs away (docs/fencing.md). Without a peer
  // list (no answer yet in this process) nothing says it is not isolated.
  const std::set<std::string> reached = peers_->reachable(now);
  if (has_peer_list_ && !isolated(peer_count_, reached.size())) {
    if (lease_state_ != LeaseState::kHeld) {
      held_said_ = false;
      lease_state_ = LeaseState::kHeld;
    }
    if (!held_said_) {
      held_said_ = true;
      log::warn("no heartbeat of host '{}' answered {}, but it reaches {} of its {} peers: "
                "not isolated, keeping its VMs (restarting crashed ones in place, starting "
                "nothing new) until the controller answers",
                options_.host,
                answered_ ? "for " + formatDuration(now - last_answered_ms_)
                          : std::string("since this agent started"),
                reached.size(), peer_count_);
    }
    return lease_state_;
  }
  std::string why =
      lease_state_ == LeaseState::kNone && !has_peer_list_
          ? fmt::format("the controller did not answer in the {} after start",
                        formatDuration(options_.initial_lease_ms))
      : !answered_
          ? std::string("no heartbeat answered since this agent started")
          : fmt::format("no heartbeat answered for {}", formatDuration(now - last_answered_ms_));
  if (has_peer_list_) {
    why += fmt::format(" and it reaches {} of its {} peers (isolated: {} of {} votes)",
                       reached.size(), peer_count_, reached.size() + 1, peer_count_ + 2);
  }
  lease_state_ = LeaseState::kExpired;
  self_fence_reason_ = "lease expired (" + why + ")";
  fence_unacked_ = true;
  return lease_state_;
}

LeaseState Agent::checkLease(Millis now) {
  LeaseState state;
  std::string reason;
  {
    std::lock_guard<std::mutex> lock(lease_mu_);
    state = judgeLeaseLocked(now);
    reason = self_fence_reason_;
  }
  if (state != LeaseState::kExpired) {
    fence_announced_ = false;
    return state;
  }
  if (!fence_announced_) {
    fence_announced_ = true;
    // The set in force came before the fence: it does not count any more.
    has_set_ = false;
    assigned_.clear();
    emit("error", "host.self_fenced", "", 0,
         fmt::format("host '{}' self-fenced: {}; destroying every managed domain and starting "
                     "nothing until the controller answers",
                     options_.host, reason));
  }
  return state;
}

// Runs at every runOnce() while the lease is expired, so that a destroy that
// failed (hypervisor not answering) is tried again.
void Agent::fence() {
  bool acted = false;
  const std::map<std::string, DomainStatus> view = view_;
  for (const auto& [vm, d] : view) {
    if (!isActive(d.state)) continue;
    auto it = tracks_.find(vm);
    if (it != tracks_.end()) {
      it->second.expect_running = false;
      it->second.fenced = true;
      it->second.down = false;
      it->second.forwarded = false;
      it->second.forwards.clear();
    }
    Status st = hv_.destroy(vm);
    if (!st.isOk()) {
      logFailureOnce(vm, fmt::format("self-fence: destroying {} failed: {}", vmId(vm, d.meta.epoch),
                                     st.toString()));
      continue;
    }
    clearFailure(vm);
    acted = true;
    prober_.forget(vm);
    emit("warn", "vm.destroyed", vm, d.meta.epoch,
         fmt::format("destroyed {}: self-fence, lease expired", vmId(vm, d.meta.epoch)));
  }
  if (acted) refreshView();
}

void Agent::converge(Millis now, bool held) {
  if (!view_ok_) return;  // act only on what the hypervisor just told us
  if (held) {
    // The controller is away and this host is not isolated: the VMs it runs
    // stay, a crashed one is restarted in place within its budget, and
    // nothing is created, removed or migrated on a set that may be stale.
    bool acted = false;
    for (const auto& [vm, a] : assigned_) {
      auto d = view_.find(vm);
      if (d == view_.end() || d->second.meta.epoch != a.epoch || a.incoming || migrating(vm)) continue;
      if (!a.migrate_to_uri.empty()) continue;
      acted |= convergeOne(a, now);
    }
    runStarts();
    if (acted) refreshView();
    return;
  }
  releasePorts();         // first, so that new VMs can reuse them
  bool acted = false;
  // Managed domains that are not ours to run: not assigned, or a newer epoch
  // than assigned (a stale view somewhere; the controller's assignment wins).
  // The view is copied (removing a domain may refresh it) only when some
  // domain is such a one: most passes find none.
  const bool any_stray = std::any_of(view_.begin(), view_.end(), [this](const auto& entry) {
    auto a = assigned_.find(entry.first);
    return a == assigned_.end() || entry.second.meta.epoch > a->second.epoch;
  });
  const std::map<std::string, DomainStatus> view =
      any_stray ? view_ : std::map<std::string, DomainStatus>{};
  for (const auto& [vm, d] : view) {
    if (migrating(vm)) continue;  // hands off until the outcome is back
    auto a = assigned_.find(vm);
    const bool unassigned = a == assigned_.end();
    if ((unassigned || d.meta.epoch > a->second.epoch) && !confirmedByController(vm)) {
      log::debug("{} appeared unassigned: waiting for the controller's answer",
                 vmId(vm, d.meta.epoch));
      continue;
    }
    if (unassigned) {
      acted |= removeDomain(d, "not assigned to this host");
    } else if (d.meta.epoch > a->second.epoch) {
      log::warn("{} is newer than its assignment (epoch {}): the assignment wins",
                vmId(vm, d.meta.epoch), a->second.epoch);
      acted |= removeDomain(d, fmt::format("epoch {} is assigned", a->second.epoch));
    }
  }
  if (acted) refreshView();
  if (!view_ok_) return;
  bool acted_assigned = false;
  for (const auto& [vm, a] : assigned_) acted_assigned |= convergeOne(a, now);
  runStarts();
  if (acted_assigned) refreshView();
  // Forget VMs that are neither assigned nor on the host any more.
  for (auto it = tracks_.begin(); it != tracks_.end();) {
    if (assigned_.count(it->first) == 0 && view_.count(it->first) == 0 && !migrating(it->first)) {
      it = tracks_.erase(it);
    } else {
      ++it;
    }
  }
}

// A domain appeared here while the set in force does not name it (a
// migration's destination may see the domain before its own assignment
// arrives): it is removed only once a heartbeat sent after it appeared was
// answered (the answer is the controller's current set), so that no arriving
// VM is destroyed on an old set.
bool Agent::confirmedByController(const std::string& vm) const {
  auto seen = first_seen_seq_.find(vm);
  std::lock_guard<std::mutex> lock(lease_mu_);
  return seen == first_seen_seq_.end() || seen->second < last_answered_gen_;
}

bool Agent::removeDomain(const DomainStatus& d, const std::string& why) {
  tracks_.erase(d.meta.vm);  // ours to stop: a stop event for it is no crash
  prober_.forget(d.meta.vm);
  return destroyAndUndefine(d, why, "info", /*announce_undefine=*/true);
}

bool Agent::destroyAndUndefine(const DomainStatus& d, const std::string& why,
                               const std::string& destroy_level, bool announce_undefine) {
  const std::string& vm = d.meta.vm;
  if (isActive(d.state)) {
    Status st = hv_.destroy(vm);
    if (!st.isOk()) {
      logFailureOnce(
          vm, fmt::format("destroying {} failed: {}", vmId(vm, d.meta.epoch), st.toString()));
      return false;
    }
    emit(destroy_level, "vm.destroyed", vm, d.meta.epoch,
         fmt::format("destroyed {}: {}", vmId(vm, d.meta.epoch), why));
  }
  Status st = hv_.undefine(vm);
  if (!st.isOk()) {
    logFailureOnce(vm,
                   fmt::format("undefining {} failed: {}", vmId(vm, d.meta.epoch), st.toString()));
    return true;
  }
  clearFailure(vm);
  builder_.release(vm);
  if (announce_undefine) {
    emit("info", "vm.undefined", vm, d.meta.epoch,
         fmt::format("undefined {}: {}", vmId(vm, d.meta.epoch), why));
  } else {
    log::info("undefined the leftover of {}: {}", vmId(vm, d.meta.epoch), why);
  }
  return true;
}

Agent::VmTrack& Agent::trackFor(const std::string& vm, int64_t epoch) {
  VmTrack& t = tracks_[vm];
  if (t.epoch != epoch) {
    // A new assignment: a new identity with a fresh budget. The domain found
    // under the old epoch (if any) is not "ours running" any more.
    t = VmTrack();
    t.epoch = epoch;
  }
  return t;
}

int Agent::attemptsInWindow(const VmTrack& t, const std::string& vm, Millis now) const {
  auto a = assigned_.find(vm);
  if (a == assigned_.end()) return static_cast<int>(t.attempts.size());
  const Millis window = a->second.restart.window_ms;
  return static_cast<int>(std::count_if(t.attempts.begin(), t.attempts.end(),
                                        [&](Millis at) { return at > now - window; }));
}

// Brings one assignment's domain to "running at the assigned epoch and digest".
// Returns whether it changed anything on the host or in what is reported.
bool Agent::convergeOne(const Assignment& a, Millis now) {
  VmTrack& t = trackFor(a.vm, a.epoch);
  if (migrating(a.vm)) return false;  // hands off until the outcome is back
  if (t.migrated_away) return convergeMigratedAway(a);
  assignPorts(a);
  if (a.incoming) return convergeIncoming(a, t, now);
  // Asked to migrate it away: it may run on here, but it is never started here.
  const bool may_start = a.migrate_to_uri.empty();
  auto it = view_.find(a.vm);
  bool present = it != view_.end();

  if (present &&
      (it->second.meta.epoch != a.epoch || it->second.meta.spec_digest != a.spec_digest)) {
    if (!may_start) {
      return refuseMigration(
          a, t, fmt::format("it runs here as epoch {}, not {}", it->second.meta.epoch, a.epoch));
    }
    // An older epoch or another definition: replace it.
    const DomainStatus& d = it->second;
    t.expect_running = false;
    if (isActive(d.state)) {
      Status st = hv_.destroy(a.vm);
      if (!st.isOk()) {
        logFailureOnce(a.vm, fmt::format("destroying {} to redefine it failed: {}",
                                         vmId(a.vm, d.meta.epoch), st.toString()));
        return false;
      }
      prober_.forget(a.vm);
      t.forwarded = false;
      t.forwards.clear();
      emit("info", "vm.destroyed", a.vm, d.meta.epoch,
           fmt::format("destroyed {} to redefine it at epoch {}", vmId(a.vm, d.meta.epoch),
                       a.epoch));
    }
    t.down = false;
    t.fenced = false;
    t.exhausted = false;  // a new definition gets its chance
    return launch(a, t, /*defined=*/false, /*restart=*/false, now);
  }

  if (present && !isDown(it->second.state)) {
    if (!t.expect_running) {  // adopted, or started by someone else
      t.expect_running = true;
      t.running_since_ms = now;
    }
    t.down = false;
    t.fenced = false;
    const bool forwarded = ensureForwards(a, t);
    if (!may_start) {
      if (t.migrate_tried != a.migrate_epoch) requestMigration(a, t);
      return forwarded;
    }
    return rebootIfUnhealthy(a, t, it->second, now) || forwarded;
  }

  // Not there, or there and stopped.
  if (t.exhausted) {
    return may_start ? false : refuseMigration(a, t, "it is stopped here: " + t.reason);
  }
  if (!t.down) {
    if (t.fenced || (!present && !t.launched)) {
      if (!may_start) return refuseMigration(a, t, "it does not run here");
      return launch(a, t, present, /*restart=*/false, now);
    }
    t.down = true;
    t.down_since_ms = now;
    if (t.expect_running) {
      std::string detail = !t.stop_detail.empty() ? t.stop_detail
                           : present              ? toString(it->second.state)
                                                  : "domain vanished";
      t.reason = "crashed: " + detail;
      prober_.forget(a.vm);
      emit("warn", "vm.crashed", a.vm, a.epoch,
           fmt::format("{} crashed: {}", vmId(a.vm, a.epoch), detail));
    } else if (present) {
      t.reason = fmt::format("found {}", toString(it->second.state));
    }
    t.expect_running = false;
  }
  if (!may_start) {
    refuseMigration(a, t, "it is down here: " + t.reason);
    return true;  // reported as down
  }
  return restartOrExhaust(a, t, present, now);
}

// A restart in place of a VM that is down, within the budget (or the budget
// spent: left stopped). Returns whether it changed anything (always: the VM is
// reported down at least).
bool Agent::restartOrExhaust(const Assignment& a, VmTrack& t, bool present, Millis now) {
  const RestartBudget& budget = a.restart;
  while (!t.attempts.empty() && t.attempts.front() <= now - budget.window_ms) {
    t.attempts.pop_front();
  }
  if (static_cast<int>(t.attempts.size()) >= budget.restarts) {
    t.exhausted = true;
    t.down = false;
    t.reason = fmt::format("restart budget spent ({} restarts in {})", budget.restarts,
                           formatDuration(budget.window_ms));
    emit("error", "vm.budget_exhausted", a.vm, a.epoch,
         fmt::format("{} left stopped: {}", vmId(a.vm, a.epoch), t.reason));
    return true;
  }
  t.next_restart_ms = t.down_since_ms + backoffFor(t.attempts.size(), budget);
  if (now < t.next_restart_ms) return true;  // reported as down meanwhile
  return launch(a, t, present, /*restart=*/true, now);
}

// A running VM whose check the prober calls failed: destroyed and restarted
// in place like after a crash (same budget, same back-off).
bool Agent::rebootIfUnhealthy(const Assignment& a, VmTrack& t, const DomainStatus& d, Millis now) {
  if (a.health.kind == HealthKind::kNone || !isExecuting(d.state)) return false;
  if (prober_.health(a.vm, a.health, t.running_since_ms) != Health::kUnhealthy) return false;
  std::string failure = prober_.lastFailure(a.vm);
  if (failure.empty()) failure = "health check failed";
  const std::string checks =
      fmt::format("{} {} checks failed", a.health.failures, toString(a.health.kind));
  Status st = hv_.destroy(a.vm);
  if (!st.isOk()) {
    logFailureOnce(a.vm, fmt::format("rebooting unhealthy {}: destroying it failed: {}",
                                     vmId(a.vm, a.epoch), st.toString()));
    return false;
  }
  clearFailure(a.vm);
  prober_.forget(a.vm);
  t.forwarded = false;
  t.forwards.clear();
  t.expect_running = false;  // our own stop
  t.down = true;
  t.down_since_ms = now;
  t.reason = fmt::format("unhealthy: {}", failure);
  emit("warn", "vm.unhealthy", a.vm, a.epoch,
       fmt::format("{} is unhealthy ({}; the last: {}): rebooting it", vmId(a.vm, a.epoch), checks,
                   failure));
  restartOrExhaust(a, t, /*present=*/true, now);
  return true;
}

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

void Agent::assignPorts(const Assignment& a) {
  Result<std::map<int, int>> assigned = ports_.assign(a.vm, guestPortsOf(a));
  if (!assigned.isOk()) {
    logFailureOnce("ports of " + a.vm, assigned.status().toString());
  } else if (!failures_.empty()) {  // else there is nothing to clear
    clearFailure("ports of " + a.vm);
  }
}

// Host ports of VMs that are not assigned here any more, or left by migration.
void Agent::releasePorts() {
  for (const std::string& vm : ports_.vms()) {
    auto t = tracks_.find(vm);
    if (assigned_.count(vm) == 0 || (t != tracks_.end() && t->second.migrated_away)) {
      ports_.release(vm);
    }
  }
}

// Defines (unless `defined`) the assignment's domain and queues its start. A
// restart, and any failed attempt, counts against the budget.
bool Agent::launch(const Assignment& a, VmTrack& t, bool defined, bool restart, Millis now) {
  t.launched = true;
  t.fenced = false;
  if (restart) t.attempts.push_back(now);
  Status st;
  t.forwarded = false;
  t.forwards.clear();
  if (!defined) {
    Result<DomainSpec> spec = builder_.build(a);
    st = spec.isOk() ? hv_.define(*spec) : spec.status().withContext("building its domain");
    if (st.isOk()) {
      emit("info", "vm.defined", a.vm, a.epoch, fmt::format("defined {}", vmId(a.vm, a.epoch)));
    } else {
      st = st.withContext("define");
    }
  }
  if (!st.isOk()) {
    launchFailed(a, t, restart, now, st);
    return true;
  }
  t.stop_detail.clear();
  starts_.push_back(PendingStart{a.vm, restart, now});
  return true;
}

// A host taking over a dead host's VMs starts them together: one after
// another, QEMU's start (0.4-2 s each under libvirt) adds up.
void Agent::runStarts() {
  if (starts_.empty()) return;
  std::vector<PendingStart> batch;
  batch.swap(starts_);
  std::vector<std::string> vms;
  vms.reserve(batch.size());
  for (const PendingStart& p : batch) vms.push_back(p.vm);
  std::vector<Status> results = hv_.startAll(vms);
  for (size_t i = 0; i < batch.size(); ++i) {
    const PendingStart& p = batch[i];
    auto a_it = assigned_.find(p.vm);
    auto t_it = tracks_.find(p.vm);
    if (a_it == assigned_.end() || t_it == tracks_.end()) continue;  // cannot happen: same pass
    const Assignment& a = a_it->second;
    VmTrack& t = t_it->second;
    const Status st = i < results.size() ? results[i] : internalError("startAll returned no status");
    if (!st.isOk()) {
      launchFailed(a, t, p.restart, p.at, st);
      continue;
    }
    t.down = false;
    t.expect_running = true;
    t.running_since_ms = p.at;
    if (p.restart) {
      emit("info", "vm.restarted", a.vm, a.epoch,
           fmt::format("restarted {}: restart {} of {} in {}", vmId(a.vm, a.epoch),
                       t.attempts.size(), a.restart.restarts,
                       formatDuration(a.restart.window_ms)));
    } else {
      emit("info", "vm.started", a.vm, a.epoch, fmt::format("started {}", vmId(a.vm, a.epoch)));
    }
    ensureForwards(a, t);
  }
}

void Agent::launchFailed(const Assignment& a, VmTrack& t, bool restart, Millis now,
                         const Status& st) {
  if (!restart) t.attempts.push_back(now);
  t.down = true;
  t.down_since_ms = now;
  t.expect_running = false;
  t.reason = "start failed: " + st.toString();
  emit("warn", "vm.start_failed", a.vm, a.epoch,
       fmt::format("starting {} failed: {}", vmId(a.vm, a.epoch), st.toString()));
}

bool Agent::ensureForwards(const Assignment& a, VmTrack& t) {
  if (t.forwarded || forwards_unsupported_) return false;
  const std::map<int, int> want = ports_.ports(a.vm);
  const std::string key = "forwards of " + a.vm;
  std::map<int, int> now;
  bool failed = false;
  if (!want.empty()) {
    Result<std::vector<PortForward>> have = hv_.portForwards(a.vm);
    if (!have.isOk()) {
      if (have.status().code() == Code::kUnimplemented) {
        forwards_unsupported_ = true;
        log::info("host '{}': no port forwards on this hypervisor ({}); reporting no service ports",
                  options_.host, have.status().message());
        return false;
      }
      logFailureOnce(key, fmt::format("listing the port forwards of {}: {}", vmId(a.vm, a.epoch),
                                      have.status().toString()));
      return false;
    }
    for (const PortForward& f : *have) {
      auto w = want.find(f.guest_port);
      if (f.address == options_.service_address && w != want.end() && w->second == f.host_port) {
        now[f.guest_port] = f.host_port;
      }
    }
    std::vector<std::string> added;
    for (const auto& [guest, host] : want) {
      if (now.count(guest) != 0) continue;
      PortForward f{options_.service_address, host, guest};
      Status st = hv_.addPortForward(a.vm, f);
      if (!st.isOk()) {
        logFailureOnce(key, fmt::format("forwarding {}:{} to guest port {} of {}: {}", f.address,
                                        host, guest, vmId(a.vm, a.epoch), st.toString()));
        failed = true;
        continue;
      }
      now[guest] = host;
      added.push_back(fmt::format("{}:{}->{}", f.address, host, guest));
    }
    if (!added.empty()) {
      log::info("{}: port forwards {}", vmId(a.vm, a.epoch), fmt::join(added, ", "));
    }
  }
  if (!failed) {
    clearFailure(key);
    t.forwarded = true;
  }
  const bool changed = now != t.forwards;
  t.forwards = std::move(now);
  return changed;
}

void Agent::adoptForwards(const std::string& vm) {
  Result<std::vector<PortForward>> have = hv_.portForwards(vm);
  if (!have.isOk()) {
    if (have.status().code() != Code::kUnimplemented) {
      log::warn("vm '{}': cannot read its port forwards: {}", vm, have.status().toString());
    }
    return;
  }
  for (const PortForward& f : *have) {
    if (f.address != options_.service_address) continue;
    if (!ports_.adopt(vm, f.guest_port, f.host_port)) {
      log::warn("vm '{}': its forward {}:{}->{} is outside this agent's ports or taken", vm,
                f.address, f.host_port, f.guest_port);
    }
  }
}

std::vector<DomainReport> Agent::buildReports(Millis now) const {
  std::vector<DomainReport> out;
  out.reserve(view_.size());
  for (const auto& [vm, d] : view_) {
    DomainReport r;
    r.vm = vm;
    r.tier = d.meta.tier;
    r.epoch = d.meta.epoch;
    r.state = d.state;
    auto a = assigned_.find(vm);
    auto t = tracks_.find(vm);
    if (isExecuting(d.state)) {
      if (a == assigned_.end()) {
        r.health = Health::kUnknown;  // on its way out, or not yet judged
      } else if (a->second.health.kind == HealthKind::kNone) {
        r.health = Health::kHealthy;
      } else {
        r.health = prober_.health(vm, a->second.health,
                                  t != tracks_.end() ? t->second.running_since_ms : now);
      }
    }
    if (t != tracks_.end() && t->second.epoch == d.meta.epoch) {
      // attemptsInWindow(), with the assignment already looked up.
      const auto& attempts = t->second.attempts;
      r.restarts =
          a == assigned_.end()
              ? static_cast<int>(attempts.size())
              : static_cast<int>(std::count_if(attempts.begin(), attempts.end(), [&](Millis at) {
                  return at > now - a->second.restart.window_ms;
                }));
      r.reason = t->second.reason;
    }
    if (a != assigned_.end() && t != tracks_.end() && t->second.epoch == d.meta.epoch) {
      r.ports = t->second.forwards;
    }
    out.push_back(std::move(r));
  }
  return out;
}

bool Agent::reportDue() const {
  std::lock_guard<std::mutex> lock(lease_mu_);
  return reportDueLocked();
}

bool Agent::reportDueLocked() const {
  if (!link_up_) return false;  // retried at the next interval
  if (published_.assignments_version != last_sent_version_) return true;
  if (published_.addresses_held != last_sent_addresses_) return true;
  // A new host report (the controller asked about new paths: an apply waits
  // for it, controller/path_probes.h) goes out at once, once.
  const std::string& report = published_.host_report.digest;
  if (!report.empty() && report != last_sent_report_digest_ && report != controller_report_digest_)
    return true;
  // Compared once per publication and answer, not on every tick of the
  // heartbeat thread (issue #16: the simulator ticks it every 10 ms).
  if (same_checked_gen_ != published_gen_ || same_checked_sent_ != sent_serial_) {
    same_checked_gen_ = published_gen_;
    same_checked_sent_ = sent_serial_;
    same_as_sent_ = sameReports(published_.domains, last_sent_);
  }
  return !same_as_sent_;
}

void Agent::sendHeartbeat(Millis now) {
  std::lock_guard<std::mutex> sending(send_mu_);
  Heartbeat hb;
  int64_t gen = 0;
  int64_t events_before = 0;
  std::string report_digest;
  {
    std::lock_guard<std::mutex> lock(lease_mu_);
    hb = published_;
    report_digest = published_.host_report.digest;
    hb.seq = ++seq_;
    hb.peers_digest = peers_digest_;
    // The host report rides along only when the controller lacks it.
    if (hb.host_report.digest == controller_report_digest_) hb.host_report = HostReport{};
    gen = published_gen_;
    events_before = published_events_;
    if (fence_unacked_) hb.self_fence_reason = self_fence_reason_;
    last_heartbeat_ms_ = now;
    next_heartbeat_ms_ = now + interval_ms_;
  }
  hb.peer_address = options_.peer_address;
  hb.watchdog_ms = options_.watchdog_ms;
  hb.peers_unreachable = peers_->unreachable(now);

  // The undelivered events this snapshot already reflects ride along, oldest
  // first: the controller handles "crashed, restarted" before the report of
  // the new run, never after it (a late "crashed" would undo a newer report).
  // One request, so that a backlog never delays the lease.
  int64_t carried = 0;
  {
    std::lock_guard<std::mutex> lock(outbox_mu_);
    for (const Outgoing& o : outbox_) {
      if (o.seq > events_before || hb.events.size() >= kEventsPerHeartbeat) break;
      hb.events.push_back(o.event);
      carried = o.seq;
    }
  }
  // No lock while the controller answers (or not).
  Result<AssignmentSet> answer = link_.heartbeat(hb);
  // A set of a deposed leader's term: no answer at all (no lease renewal,
  // events kept for the leader): agent/term_watch.h.
  if (answer && !admitTerm(*answer)) {
    link_.refusedAnswer(/*pushed=*/false);  // the next heartbeat tries the next replica
    answer = unavailable("the answer carries term " + std::to_string(answer->term) + ", older than term " +
                         std::to_string(term_watch_.highest()) + " (a deposed controller leader)");
  }
  if (answer && carried > 0 && answer->renewed_by.empty()) {  // a follower takes no event
    std::lock_guard<std::mutex> lock(outbox_mu_);
    while (!outbox_.empty() && outbox_.front().seq <= carried) outbox_.pop_front();
  }

  std::lock_guard<std::mutex> lock(lease_mu_);
  noteLinkResultLocked(answer.status());
  if (!answer) {
    link_up_ = false;
    return;
  }
  link_up_ = true;
  controller_report_digest_ = answer->host_report_digest;
  last_sent_report_digest_ = report_digest;
  last_sent_ = hb.domains;
  last_sent_addresses_ = hb.addresses_held;
  ++sent_serial_;
  last_sent_version_ = hb.assignments_version;
  if (lease_state_ == LeaseState::kExpired && hb.self_fence_reason.empty()) {
    // Sent before the fence, answered after it: an old set, and no lease.
    return;
  }
  if (answered_ && now - last_answered_ms_ > 2 * interval_ms_) {
    // A renewal gap, for the HA proofs (tests/integration/ha_real_agents_test.cc).
    log::info("renewal gap of host '{}': {} ms from the last answered heartbeat{}", options_.host,
              now - last_answered_ms_,
              answer->renewed_by.empty() ? "" : " (renewed by replica '" + answer->renewed_by + "')");
  }
  last_answered_ms_ = now;
  answered_ = true;
  last_answered_gen_ = gen;
  const Millis lease_ms = answer->lease_ms > 0 ? answer->lease_ms : options_.initial_lease_ms;
  if (lease_state_ != LeaseState::kValid) {
    log::info("lease of host '{}' {} ({}, renewed by every answered heartbeat)", options_.host,
              lease_state_ == LeaseState::kExpired ? "renewed after self-fence"
              : lease_state_ == LeaseState::kHeld  ? "renewed: the controller answers again"
                                                   : "granted",
              formatDuration(lease_ms));
  }
  lease_state_ = LeaseState::kValid;
  lease_until_ms_ = now + lease_ms;
  fence_unacked_ = false;
  if (answer->host != options_.host) {
    log::warn("controller answered with assignments for host '{}' (this is host '{}'): ignored",
              answer->host, options_.host);
    return;
  }
  answer_ = std::move(*answer);
  if (wake_) wake_();
}

void Agent::noteLinkResultLocked(const Status& st) {
  const Code code = st.code();
  if (link_condition_ == code) return;
  const bool first = !link_condition_.has_value();
  link_condition_ = code;
  switch (code) {
    case Code::kOk:
      log::info("controller {}", first ? "answered" : "answers again");
      break;
    case Code::kNotFound:
      log::error(
          "the controller does not know host '{}' (declare it in a policy): {}; "
          "retrying every {} ms",
          options_.host, st.toString(), interval_ms_);
      break;
    case Code::kPermissionDenied:
    case Code::kForbidden:
      log::error("the controller refused this agent's token: {}; retrying every {} ms",
                 st.toString(), interval_ms_);
      break;
    case Code::kUnavailable:
      log::warn("cannot reach the controller: {}; retrying every {} ms", st.toString(),
                interval_ms_);
      break;
    default:
      log::error("heartbeat to the controller failed: {}; retrying every {} ms", st.toString(),
                 interval_ms_);
      break;
  }
}

void Agent::flushEvents() {
  std::unique_lock<std::mutex> sending(send_mu_, std::try_to_lock);
  if (!sending.owns_lock()) {  // a heartbeat is on its way (maybe with them): after it
    std::lock_guard<std::mutex> lock(outbox_mu_);
    events_deferred_ = !outbox_.empty();
    return;
  }
  events_deferred_ = false;
  for (;;) {
    {
      std::lock_guard<std::mutex> lock(lease_mu_);
      if (!link_up_) return;
    }
    Outgoing next;
    {
      std::lock_guard<std::mutex> lock(outbox_mu_);
      if (outbox_.empty()) return;
      next = outbox_.front();
    }
    Status st = link_.sendEvent(next.event);
    if (!st.isOk() && (st.code() == Code::kUnavailable || st.code() == Code::kPermissionDenied ||
                       st.code() == Code::kForbidden)) {
      log::debug("sending event failed, kept for later: {}", st.toString());
      return;
    }
    if (!st.isOk()) {  // the controller refuses this event: retrying cannot help
      log::warn("controller refused event '{}' for '{}': {}", next.event.kind, next.event.vm,
                st.toString());
    }
    std::lock_guard<std::mutex> lock(outbox_mu_);
    // emit() may have dropped it meanwhile (queue full): pop only that one.
    if (!outbox_.empty() && outbox_.front().seq == next.seq) outbox_.pop_front();
  }
}

size_t Agent::pendingEvents() const {
  std::lock_guard<std::mutex> lock(outbox_mu_);
  return outbox_.size();
}

void Agent::emit(const std::string& level, const std::string& kind, const std::string& vm,
                 int64_t epoch, const std::string& message) {
  log::at(level, message);
  AgentEvent e;
  e.vm = vm;
  e.epoch = epoch;
  e.kind = kind;
  e.level = level;
  e.message = message;
  report(std::move(e));
}

bool Agent::admitTerm(const AssignmentSet& set) {
  const TermWatch::Verdict v =
      term_watch_.check(set.term, clock_.nowMs(), set.lease_ms > 0 ? set.lease_ms : options_.initial_lease_ms);
  if (!v.say.empty()) emit(v.level, v.accept ? "agent.term" : "agent.stale_term", "", 0, v.say);
  return v.accept;
}

void Agent::report(AgentEvent e) {
  e.host = options_.host;
  std::lock_guard<std::mutex> lock(outbox_mu_);
  if (outbox_.size() >= kMaxPendingEvents) {
    log::warn("event queue full ({} events): dropping the oldest, '{}'", outbox_.size(),
              outbox_.front().event.kind);
    outbox_.pop_front();
  }
  outbox_.push_back(Outgoing{++emitted_, std::move(e)});
}

void Agent::logFailureOnce(const std::string& key, const std::string& message) {
  auto it = failures_.find(key);
  if (it != failures_.end() && it->second == message) return;
  failures_[key] = message;
  log::warn("{}", message);
}

void Agent::clearFailure(const std::string& key) { failures_.erase(key); }

int Agent::restarts(const std::string& vm) const {
  auto t = tracks_.find(vm);
  return t == tracks_.end() ? 0 : attemptsInWindow(t->second, vm, clock_.nowMs());
}

bool Agent::budgetExhausted(const std::string& vm) const {
  auto t = tracks_.find(vm);
  return t != tracks_.end() && t->second.exhausted;
}

}  // namespace tw
