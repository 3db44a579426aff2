// The controller's side of the quorum (docs/fencing.md, "Controller: fence
// only with a quorum"): the votes against a silent host now, and whether a
// lease-expiry fence rests on an instant at which the host, its lease run
// out, was outvoted by reports that were true at that instant.
#include <algorithm>
#include <vector>

#include "controller/controller.h"

namespace tw {

int Controller::votesAgainst(const HostRuntime& target, std::string& detail) const {
  const Millis now = clock_.nowMs();
  const auto& st = policy_.settings;
  int votes = 1;  // the controller: it hears nothing from the host
  std::vector<std::string> against;
  // Only hosts that reported some peer unreachable can vote (in name order,
  // as hosts_): at 1,000 hosts, walking every host for each silent one was a
  // quarter of the controller's CPU while many were late (issue #16).
  for (const auto& name : unreachable_reporters_) {
    auto found = hosts_.find(name);
    if (found == hosts_.end()) continue;
    const HostRuntime& h = found->second;
    // Every other host with a fresh heartbeat votes, whatever its state: a
    // drained host (maintenance) still checks its peers, and totalVotes()
    // counts every declared host.
    if (name == target.rec.name || !h.seen) continue;
    if (now - h.last_heartbeat_ms > st.dead_after_ms) continue;  // not heard from: no vote
    auto it = h.peers_unreachable.find(target.rec.name);
    if (it != h.peers_unreachable.end() && it->second >= peerTimeoutMs()) {
      ++votes;
      against.push_back(name);
    }
  }
  detail = std::to_string(votes) + " of " + std::to_string(totalVotes()) + " votes: the controller";
  for (const auto& n : against) detail += ", '" + n + "'";
  return votes;
}

// A report of host v, received at s, that has had no answer from X for D
// (>= the peer timeout PT) says: v had no answer from X in [s - D, s]. v's own
// answers name X for at most PT after its last answer from X, and X counts
// such an answer for at most PT more: so X did not count v at any instant of
// [s - D + 2 PT, s]. Nothing is known about v after s: it may reach X again
// right after its report (then its heartbeats may not reach us: a report is
// never "fresh" evidence, only evidence about its own past).
//
// X fenced itself if, at some instant t after its lease ran out (last
// heartbeat + lease: it renews at most at its send time), the hosts whose
// windows contain t plus the controller are a majority: X then reached at
// most the rest, was isolated, and destroyed its VMs by t + fence_margin.
bool Controller::leaseFenceWitnessed(const HostRuntime& target, std::string& detail) const {
  const Millis now = clock_.nowMs();
  const auto& st = policy_.settings;
  const Millis pt = peerTimeoutMs();
  const Millis lease_end = target.last_heartbeat_ms + st.lease_ms;
  // The fence needs the margin after t, and the host watchdog's timeout: an
  // agent that stopped petting at t (isolated, or dead before it) has its
  // host reset by t + W even when its loop cannot destroy anything.
  const Millis latest = now - st.fence_margin_ms - watchdogWaitMs(target);
  struct Window {
    std::string host;
    Millis from, to;
  };
  std::vector<Window> windows;
  for (const auto& [name, h] : hosts_) {
    if (name == target.rec.name || !h.seen) continue;
    auto it = h.peers_unreachable.find(target.rec.name);
    if (it == h.peers_unreachable.end() || it->second < pt) continue;
    windows.push_back({name, h.last_heartbeat_ms - it->second + 2 * pt, h.last_heartbeat_ms});
  }
  std::vector<Millis> candidates{lease_end};
  for (const auto& w : windows) candidates.push_back(w.from);
  int best = 1;
  for (Millis t : candidates) {
    if (t < lease_end || t > latest) continue;
    int votes = 1;
    std::string names;
    for (const auto& w : windows) {
      if (w.from <= t && t <= w.to) {
        ++votes;
        names += ", '" + w.host + "'";
      }
    }
    if (votes > best) best = votes;
    if (votes * 2 > totalVotes()) {
      detail = std::to_string(votes) + " of " + std::to_string(totalVotes()) +
               " votes: the controller" + names;
      return true;
    }
  }
  detail = "at most " + std::to_string(best) + " of " + std::to_string(totalVotes()) +
           " votes since its lease ran out";
  return false;
}

Millis Controller::watchdogWaitMs(const HostRuntime& target) const {
  if (target.seen) return target.watchdog_ms;
  // Not heard in this process (a new leader, a restarted controller): the
  // timeout its agent last reported to a controller that stored it before
  // answering (docs/ha.md, "What a new leader finds in the store"). Who
  // could make this shorter than the host's real watchdog: an agent that
  // restarted with a longer one and was answered by no leader since; its
  // first answered heartbeat stores the longer one first (noteWatchdog).
  if (target.rec.watchdog_ms >= 0) return target.rec.watchdog_ms;
  return std::max(target.watchdog_ms, policy_.settings.lease_ms);
}

bool Controller::noteWatchdog(HostRuntime& h, Millis watchdog_ms) {
  h.watchdog_ms = watchdog_ms;
  if (h.rec.watchdog_ms == watchdog_ms) return false;
  // What the agent says now, shorter or longer: it re-armed its host's
  // watchdog with this timeout when it started.
  h.rec.watchdog_ms = watchdog_ms;
  return true;
}

}  // namespace tw
