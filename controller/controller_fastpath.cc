// The loop's side of heartbeats answered off the loop (issue #16,
// controller/heartbeat_fastpath.h): a renewal heard on an HTTP thread.
#include "controller/controller.h"

namespace tw {

bool Controller::renewOffLoop(const std::string& host, const std::map<std::string, Millis>* peers_unreachable) {
  auto it = hosts_.find(host);
  if (it == hosts_.end() || !policy_.findHost(host)) return false;
  HostRuntime& h = it->second;
  const HostState s = h.rec.state;
  // The fast path answers only while the loop had the host online and heard
  // it within an interval: a host that went suspect meanwhile comes back as
  // by a heartbeat; no other state can be reached that fast.
  if (s != HostState::kOnline && s != HostState::kSuspect) return false;
  h.last_heartbeat_ms = std::max(h.last_heartbeat_ms, clock_.nowMs());
  // How long its unreachable peers have been so, as by the loop: the votes
  // and windows of the quorum (controller_quorum.cc) read them with
  // last_heartbeat_ms. Taken as of now, not of when the agent measured
  // them (a little earlier): a window [now - D + 2 PT, now] then starts no
  // earlier than the truth. Only for the peers the loop holds: the fast path
  // answers a report that names the same ones.
  if (peers_unreachable != nullptr && peers_unreachable->size() == h.peers_unreachable.size()) {
    for (const auto& [peer, ms] : *peers_unreachable) {
      auto it = h.peers_unreachable.find(peer);
      if (it != h.peers_unreachable.end()) it->second = ms;
    }
  }
  h.quorum_since_ms = 0;
  h.no_quorum_said = false;
  h.libvirt_lost_ms = 0;
  if (s == HostState::kSuspect) {
    h.agent_warned = false;
    setHostState(h, HostState::kOnline, "heartbeat received");
  }
  return true;
}

const std::string& Controller::peersDigest() const {
  (void)allPeers();  // kept until the policy or a peer's address changes
  return all_peers_digest_;
}

}  // namespace tw
