// The agent's side of the host watchdog and of the state it keeps on its
// host (docs/fencing.md, "Host watchdog" and "A restarted agent decides from
// what its predecessor kept"): whether the host may keep running its VMs now
// (what the watchdog's pets rest on), and the kept state loaded at start and
// saved after each pass. Apart from agent.cc, which is about convergence.
#include <algorithm>
#include <string>

#include "agent/agent.h"
#include "tw/log.h"

namespace tw {

void Agent::loadState(Millis now) {
  if (state_store_ == nullptr) return;
  Result<std::optional<PersistedAgentState>> loaded = state_store_->load();
  if (!loaded) {
    log::warn("ignoring the state the previous agent kept: {}; deciding as a fresh agent",
              loaded.status().toString());
    return;
  }
  if (!loaded->has_value()) return;
  const PersistedAgentState& s = **loaded;
  saved_ = s;
  if (s.has_peers) peers_->setPeers(s.peers, s.peer_timeout_ms);
  std::lock_guard<std::mutex> lock(lease_mu_);
  std::string lease = "no lease of this boot";
  if (!s.boot_id.empty() && s.boot_id == options_.boot_id && s.lease_until_ms > 0) {
    // Never longer than the lease the controller counts for the process
    // before us: it renewed at most until then.
    lease_until_ms_ = std::min(lease_until_ms_, s.lease_until_ms);
    lease = lease_until_ms_ > now ? "its lease runs " + formatDuration(lease_until_ms_ - now) + " more"
                                  : "its lease ran out " + formatDuration(now - lease_until_ms_) +
                                        " ago";
  }
  if (s.has_peers) {
    peer_count_ = s.peers.size();
    has_peer_list_ = true;
    // Its peer checks need a moment before they can show anything: the
    // lease is not judged before one peer timeout (the watchdog is petted
    // meanwhile only while the lease runs, or once peers are reached).
    judge_from_ms_ = now + s.peer_timeout_ms;
  }
  if (!s.self_fence_reason.empty()) {
    // The process before us self-fenced and no controller answered since:
    // this one starts nothing either until a fresh set comes.
    lease_state_ = LeaseState::kExpired;
    self_fence_reason_ = s.self_fence_reason;
    fence_unacked_ = true;
  }
  log::info("host '{}': the previous agent kept assignments version {} ({} vms), {} peers; {}{}",
            options_.host, s.assignments_version, s.vms.size(),
            s.has_peers ? std::to_string(s.peers.size()) : "no", lease,
            s.self_fence_reason.empty() ? ""
                                        : "; it had self-fenced (" + s.self_fence_reason +
                                              "): starting nothing until the controller answers");
}

void Agent::saveState() {
  if (state_store_ == nullptr) return;
  PersistedAgentState s = saved_.value_or(PersistedAgentState{});
  s.boot_id = options_.boot_id;
  {
    std::lock_guard<std::mutex> lock(lease_mu_);
    if (lease_state_ == LeaseState::kValid) s.lease_until_ms = lease_until_ms_;
    s.self_fence_reason = fence_unacked_ ? self_fence_reason_ : "";
  }
  if (has_set_) {
    s.has_peers = true;
    s.peers = set_.peers;
    s.peer_timeout_ms = set_.peer_timeout_ms;
    s.assignments_version = set_.version;
    s.controller_id = set_.controller_id;
    s.vms.clear();
    for (const auto& [vm, a] : assigned_) s.vms.push_back(vm);
  }
  if (saved_) {
    // The lease end alone moves with every heartbeat: saved when it moved by
    // kLeaseSaveStepMs (an older one is safe: see PersistedAgentState).
    PersistedAgentState same_lease = s;
    same_lease.lease_until_ms = saved_->lease_until_ms;
    if (same_lease == *saved_ && s.lease_until_ms - saved_->lease_until_ms < kLeaseSaveStepMs) {
      return;
    }
  }
  Status st = state_store_->save(s);
  if (!st.isOk()) {
    logFailureOnce("agent-state", "cannot keep the agent's state: " + st.toString());
    return;
  }
  clearFailure("agent-state");
  saved_ = std::move(s);
}

bool Agent::watchdogEntitled(Millis now) const {
  std::lock_guard<std::mutex> lock(lease_mu_);
  if (running_managed_ == 0) return true;  // nothing to give up
  if (lease_state_ == LeaseState::kExpired) return false;  // a self-fence is due
  if (now < lease_until_ms_) return true;
  return has_peer_list_ && !isolated(peer_count_, peers_->reachable(now).size());
}

}  // namespace tw
