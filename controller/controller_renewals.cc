// Lease renewals through follower replicas, on the leader (docs/ha.md,
// "Agents renew their leases with any replica"; controller/leader_renewals.h):
// a host that renewed its lease through a follower is alive, as after a
// heartbeat; a lease-expiry fence goes on only after its fence intent
// committed, which it cannot once a renewal the leader has not read came in.
#include "controller/controller.h"
#include "controller/leader_renewals.h"
#include "tw/log.h"

namespace tw {

void Controller::noteRenewals() {
  if (renewals_ == nullptr) return;
  const Millis now = clock_.nowMs();
  // A host whose heartbeats reach this leader renews through it; a follower
  // takes a heartbeat only when the leader did not answer, so the records
  // are read only while some host is silent for more than an interval.
  const Millis late = policy_.settings.heartbeat_interval_ms + policy_.settings.heartbeat_interval_ms / 2;
  bool silent = false;
  for (const auto& [name, h] : hosts_) {
    const HostState s = h.rec.state;
    if ((s == HostState::kOnline || s == HostState::kSuspect || (s == HostState::kOffline && h.fencing)) &&
        now - h.last_heartbeat_ms > late) {
      silent = true;
      break;
    }
  }
  if (!silent) return;
  Result<std::vector<LeaderRenewals::Renewal>> renewed = renewals_->poll(now);
  if (!renewed.isOk()) {
    log::warn("cannot read the lease renewals of follower replicas: {}", renewed.status().toString());
    return;
  }
  for (const LeaderRenewals::Renewal& r : *renewed) {
    auto it = hosts_.find(r.host);
    if (it != hosts_.end()) renewedThrough(it->second, r.by);
  }
}

void Controller::renewedThrough(HostRuntime& h, const std::string& by) {
  const HostState s = h.rec.state;
  if (s == HostState::kFenced || s == HostState::kMaintenance || !policy_.findHost(h.rec.name)) return;
  // Heard now: the follower recorded it before this read (its own clock is
  // not compared with ours).
  h.last_heartbeat_ms = std::max(h.last_heartbeat_ms, clock_.nowMs());
  h.quorum_since_ms = 0;
  h.no_quorum_said = false;
  h.libvirt_lost_ms = 0;
  const std::string why = "lease renewed through controller replica '" + by + "'";
  if (s == HostState::kOffline) {
    // Renewed before its fence intent: nothing was moved, nothing runs twice.
    cancelFencing(h, "host '" + h.rec.name + "' " + why + " before it was fenced");
    setHostState(h, HostState::kOnline, why);
  } else if (s == HostState::kSuspect || s == HostState::kUnknown) {
    h.agent_warned = false;
    setHostState(h, HostState::kOnline, why);
  }
}

bool Controller::leaseFenceIntended(HostRuntime& h) {
  if (renewals_ == nullptr) return true;
  const Millis now = clock_.nowMs();
  Result<bool> intended = renewals_->intendFence(h.rec.name, now);
  if (!intended.isOk()) {
    log::warn("not fencing host '{}' by lease yet: its fence intent could not be written: {}", h.rec.name,
              intended.status().toString());
    return false;
  }
  if (*intended) return true;
  // A renewal came in since the last read: read again, the host is alive.
  Result<std::vector<LeaderRenewals::Renewal>> renewed = renewals_->poll(now, /*force=*/true);
  std::string by = "a follower";
  if (renewed.isOk()) {
    for (const LeaderRenewals::Renewal& r : *renewed) {
      if (r.host == h.rec.name) {
        by = r.by;
      } else if (auto it = hosts_.find(r.host); it != hosts_.end()) {
        renewedThrough(it->second, r.by);
      }
    }
  }
  renewedThrough(h, by);
  return false;
}

void Controller::clearFenceIntent(const HostRuntime& h) {
  if (renewals_ == nullptr) return;
  // An intent of an earlier leader can exist only for a host it fenced.
  Status s = renewals_->clearIntent(h.rec.name, /*unknown=*/h.rec.state == HostState::kFenced);
  if (!s.isOk()) log::warn("the fence intent of host '{}' stays: {}", h.rec.name, s.toString());
}

}  // namespace tw
