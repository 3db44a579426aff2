// The agent's lease (docs/fencing.md): whether the last answer still holds,
// the quorum rule when it ran out, and fencing itself (destroying its VMs).
#include "agent/agent.h"
#include "agent/agent_util.h"

#include "tw/log.h"

namespace tw {

using agent_detail::vmId;

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
  // Then the starts under way are given up (their results never looked at),
  // and what they began is destroyed. After the running domains, not before:
  // a start stuck in libvirt holds its domain's job, and a destroy of it may
  // wait up to libvirt's 30 s job timeout, while the running VMs must be gone
  // before the lease the controller waits out has run out. A start that returns later
  // anyway shows up as an active domain, destroyed by the next pass here
  // (its domain event wakes the loop).
  for (const StartRunner::Start& s : start_runner_.abandonAll()) {
    auto it = tracks_.find(s.vm);
    if (it != tracks_.end() && it->second.epoch == s.epoch) {
      it->second.expect_running = false;
      it->second.fenced = true;  // started again (not restarted) once the lease is back
      it->second.down = false;
    }
    Status st = hv_.destroy(s.vm);
    if (!st.isOk()) {
      logFailureOnce(s.vm, fmt::format("self-fence: destroying {} while it started failed: {}",
                                       vmId(s.vm, s.epoch), st.toString()));
    }
    log::warn("self-fence: gave up the start of {}", vmId(s.vm, s.epoch));
    acted = true;
  }
  if (acted) refreshView();
}

}  // namespace tw
