// The agent's core (agent.h): its start, the sets it takes, one pass
// (runOnce) and when the next is due, its view of the host, and what it logs
// and reports as events. The rest, by concern: agent_lease.cc (the lease and
// fencing), agent_converge.cc (VMs to their assignments), agent_migration.cc,
// agent_ports.cc, agent_heartbeat.cc (what goes to the controller),
// agent_kept_state.cc (the watchdog, kept state), agent_addresses.cc,
// agent_backups.cc.
#include "agent/agent.h"

#include <algorithm>
#include <random>
#include <utility>

#include "tw/keyed_assign.h"
#include "tw/log.h"

namespace tw {

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
      interval_ms_(options_.heartbeat_interval_ms),
      start_runner_(hv, options_.start_timeout_ms) {}

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
  // Starts that returned (or ran past their deadline) since the last pass,
  // before the view is listed: it then shows what they did.
  collectStarts(now);
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

bool Agent::startOutlivesItsAssignment() const {
  for (const StartRunner::Start& s : start_runner_.underWay()) {
    auto a = assigned_.find(s.vm);
    if (!has_set_ || a == assigned_.end() || a->second.epoch != s.epoch || a->second.incoming) return true;
  }
  return false;
}

void Agent::publish(Millis now) {
  reports_ = buildReports(now);
  std::lock_guard<std::mutex> lock(lease_mu_);
  published_.host = options_.host;
  published_.agent_id = options_.agent_id;
  published_.capacity = capacity_;
  // The set's version tells the controller which set this host runs; an
  // eviction is confirmed by a heartbeat at the evicting version that shows
  // the VM not active (Controller::confirmEvictions), and the VM then starts
  // elsewhere. A start still under way for a VM that the set no longer
  // assigns (at that epoch) may yet bring it up here: libvirt shows the
  // domain inactive until QEMU is launched. So the version of the set in
  // force before stays published until that start returned or was given up
  // and converge() removed what it brought up.
  if (!startOutlivesItsAssignment()) {
    published_.assignments_version = assignmentsVersion();
    published_.assignments_controller = has_set_ ? set_.controller_id : "";
  }
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
      if (t.down && !t.exhausted && assigned_.count(vm) != 0 && !start_runner_.running(vm)) {
        next = std::min(next, t.next_restart_ms);
      }
    }
  }
  // Starts under way: looked at every kStartPollMs (a start that returned
  // says so by no event when it failed) and at the first deadline.
  if (std::optional<Millis> deadline = start_runner_.nextDeadlineMs()) {
    next = std::min({next, *deadline, now + kStartPollMs});
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

}  // namespace tw
