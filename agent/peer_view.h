// Which peers (the cluster's other hosts) this host reaches: the input of the
// agent's quorum rule (docs/fencing.md). An agent whose lease ran out keeps
// its VMs while the hosts it reaches, itself included, cannot be outvoted by
// the rest (the controller's witness vote among them); else it self-fences.
//
// "Reached" is mutual: the peer answered a check within the peer timeout AND
// said that it reaches this host too. So a host that another host reports as
// unreachable to the controller is never counted by that host as reaching it
// (the safety argument needs that, also when a link fails one way).
//
// Thread-safe: checks run on their own thread (HttpPeerMonitor) or in the
// simulator's step; the agent core and its heartbeat thread read.
#pragma once

#include <map>
#include <set>
#include <string>
#include <vector>

#include "tw/clock.h"
#include "tw/protocol.h"

namespace tw {

class PeerView {
 public:
  virtual ~PeerView() = default;
  // The peers to check (the assignment set's), and the timeout after which
  // an unanswered peer counts as unreachable. Replaces the previous list.
  virtual void setPeers(const std::vector<PeerInfo>& peers, Millis timeout_ms) = 0;
  // Peers reached mutually within the timeout, as of `now`.
  virtual std::set<std::string> reachable(Millis now) const = 0;
  // Peers in the list not reached (directly) for at least the timeout:
  // host -> for how long (ms). Reported in heartbeats for the controller.
  virtual std::map<std::string, Millis> unreachable(Millis now) const = 0;
};

// No peer checks: nobody is reachable and nobody is reported (unit tests,
// a single host).
class NoPeerView final : public PeerView {
 public:
  void setPeers(const std::vector<PeerInfo>&, Millis) override {}
  std::set<std::string> reachable(Millis) const override { return {}; }
  std::map<std::string, Millis> unreachable(Millis) const override { return {}; }
};

// The quorum rule. `peers` is the number of other declared hosts; `reached`
// the number of them this host reaches. The votes are the hosts plus the
// controller's witness: peers + 2. The rest of the votes could fence this
// host only if they were a majority, i.e. when 2 * (reached + 1) < peers + 2.
inline bool isolated(size_t peers, size_t reached) { return 2 * (reached + 1) < peers + 2; }

}  // namespace tw
