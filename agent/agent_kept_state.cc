// The agent's side of the host watchdog and of the state it keeps on its
// host (docs/fencing.md, "Host watchdog" and "A restarted agent decides from
// what its predecessor kept"): whether the host may keep running its VMs now
// (what the watchdog's pets rest on), and the kept state loaded at start and
// saved after each pass. Apart from agent.cc, which is about convergence.
#include <algorithm>
#include <map>
#include <string>
#include <vector>

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

namespace {

bool samePeers(const std::vector<PeerInfo>& a, const std::vector<PeerInfo>& b) {
  return std::equal(a.begin(), a.end(), b.begin(), b.end(), [](const PeerInfo& x, const PeerInfo& y) {
    return x.host == y.host && x.address == y.address;
  });
}

bool sameVms(const std::vector<std::string>& saved, const std::map<std::string, Assignment>& assigned) {
  return std::equal(saved.begin(), saved.end(), assigned.begin(), assigned.end(),
                    [](const std::string& vm, const auto& entry) { return vm == entry.first; });
}

}  // namespace

bool Agent::savedStateCurrent(Millis* lease_until) const {
  // What saveState() below would write, field by field, against what it
  // saved, without building (copying) a PersistedAgentState: it runs after
  // every pass of the loop, and the peer list is every other host
  // (issue #16). Stricter than the comparison below, never looser.
  const PersistedAgentState& o = *saved_;
  *lease_until = o.lease_until_ms;
  {
    std::lock_guard<std::mutex> lock(lease_mu_);
    if (lease_state_ == LeaseState::kValid) *lease_until = lease_until_ms_;
    if (fence_unacked_ ? o.self_fence_reason != self_fence_reason_ : !o.self_fence_reason.empty()) {
      return false;
    }
  }
  if (o.boot_id != options_.boot_id) return false;
  if (!has_set_) return true;
  return o.has_peers && o.peer_timeout_ms == set_.peer_timeout_ms &&
         o.assignments_version == set_.version && o.controller_id == set_.controller_id &&
         sameVms(o.vms, assigned_) &&
         (saved_peers_gen_ == set_peers_gen_ || samePeers(o.peers, set_.peers));
}

void Agent::saveState() {
  if (state_store_ == nullptr) return;
  Millis lease_until = 0;
  if (saved_ && savedStateCurrent(&lease_until)) {
    // Only the lease end may have moved: saved in place when it moved by
    // kLeaseSaveStepMs (an older one is safe: see PersistedAgentState).
    const Millis saved_lease = saved_->lease_until_ms;
    if (lease_until - saved_lease < kLeaseSaveStepMs) return;
    saved_->lease_until_ms = lease_until;
    Status st = state_store_->saveLeaseEnd(*saved_);  // saved_ is what the store holds
    if (!st.isOk()) {
      saved_->lease_until_ms = saved_lease;
      logFailureOnce("agent-state", "cannot keep the agent's state: " + st.toString());
      return;
    }
    clearFailure("agent-state");
    if (has_set_) saved_peers_gen_ = set_peers_gen_;  // equal to set_'s
    return;
  }
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
  if (has_set_) saved_peers_gen_ = set_peers_gen_;  // s.peers came from set_
}

bool Agent::watchdogEntitled(Millis now) const {
  std::lock_guard<std::mutex> lock(lease_mu_);
  if (running_managed_ == 0) return true;  // nothing to give up
  if (lease_state_ == LeaseState::kExpired) return false;  // a self-fence is due
  if (now < lease_until_ms_) return true;
  return has_peer_list_ && !isolated(peer_count_, peers_->reachable(now).size());
}

}  // namespace tw
