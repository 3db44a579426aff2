// Bringing the host to its assignment set: each VM defined, started and
// restarted within its budget, unhealthy ones rebooted, leftovers removed,
// starts run together.
#include "agent/agent.h"
#include "agent/agent_util.h"

#include <algorithm>

#include "tw/log.h"

namespace tw {

using agent_detail::backoffFor;
using agent_detail::isDown;
using agent_detail::isExecuting;
using agent_detail::vmId;

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
  if (start_runner_.running(a.vm)) return false;  // ditto: its start is under way
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
  starts_.push_back(StartRunner::Start{a.vm, a.epoch, restart, now});
  return true;
}

// A host taking over a dead host's VMs starts them together: one after
// another, QEMU's start (0.4-2 s each under libvirt) adds up. They run on
// their own: the loop goes on while they do (agent/start_runner.h).
void Agent::runStarts() {
  if (!starts_.empty()) {
    std::vector<StartRunner::Start> batch;
    batch.swap(starts_);
    start_runner_.begin(std::move(batch), clock_.nowMs());
  }
  if (collectStarts(clock_.nowMs())) refreshView();
}

bool Agent::collectStarts(Millis now) {
  if (start_runner_.empty()) return false;
  bool destroyed = false;
  for (const StartRunner::Outcome& o : start_runner_.collect(now)) {
    if (!o.timed_out) {
      // A start whose VM the set no longer assigns (at that epoch) may have
      // brought it up: the view is listed again before anything is published,
      // so that the heartbeat shows it active until converge() removes it.
      if (!startReturned(o, now)) destroyed = true;
      continue;
    }
    // Given up. Its domain may be half started (a QEMU process alive): it
    // must not come up unseen later, nor run beside a restart. libvirt's
    // destroy kills the QEMU process before it waits for the domain's job
    // (qemuProcessBeginStopJob), so it also ends a create stuck with it; the
    // stuck call then returns, and its result is never looked at.
    Status st = hv_.destroy(o.start.vm);
    destroyed = true;
    if (!st.isOk()) {
      logFailureOnce(o.start.vm, fmt::format("destroying {} after its start was given up failed: {}",
                                             vmId(o.start.vm, o.start.epoch), st.toString()));
    }
    log::warn("gave up the start of {} after {}: {}", vmId(o.start.vm, o.start.epoch),
              formatDuration(start_runner_.timeoutMs()),
              st.isOk() ? "destroyed what it began" : "destroying it failed");
    startReturned(o, now);
  }
  return destroyed;
}

bool Agent::startReturned(const StartRunner::Outcome& o, Millis now) {
  const StartRunner::Start& p = o.start;
  auto a_it = assigned_.find(p.vm);
  auto t_it = tracks_.find(p.vm);
  if (a_it == assigned_.end() || t_it == tracks_.end() || a_it->second.epoch != p.epoch ||
      t_it->second.epoch != p.epoch) {
    // Unassigned, or another epoch, while it started: converge() deals with
    // the domain as it finds it (a stray is removed, an old epoch replaced).
    log::info("the start of {} returned after its assignment changed: {}", vmId(p.vm, p.epoch),
              o.status.isOk() ? "ok" : o.status.toString());
    return false;
  }
  const Assignment& a = a_it->second;
  VmTrack& t = t_it->second;
  if (!o.status.isOk()) {
    launchFailed(a, t, p.restart, now, o.status);
    return true;
  }
  t.down = false;
  t.expect_running = true;
  // From when it was seen running, not from its launch: a start that took
  // long on a loaded host keeps the tier's whole health grace.
  t.running_since_ms = std::max(p.at, now);
  if (p.restart) {
    emit("info", "vm.restarted", a.vm, a.epoch,
         fmt::format("restarted {}: restart {} of {} in {}", vmId(a.vm, a.epoch),
                     t.attempts.size(), a.restart.restarts, formatDuration(a.restart.window_ms)));
  } else {
    emit("info", "vm.started", a.vm, a.epoch, fmt::format("started {}", vmId(a.vm, a.epoch)));
  }
  ensureForwards(a, t);
  return true;
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

int Agent::restarts(const std::string& vm) const {
  auto t = tracks_.find(vm);
  return t == tracks_.end() ? 0 : attemptsInWindow(t->second, vm, clock_.nowMs());
}

bool Agent::budgetExhausted(const std::string& vm) const {
  auto t = tracks_.find(vm);
  return t != tracks_.end() && t->second.exhausted;
}

}  // namespace tw
