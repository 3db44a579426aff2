// What an agent knows of its peers' answers, and which peer to check next
// (docs/fencing.md "Peer checks"). HttpPeerMonitor's checking threads take
// checks from here and hand the outcomes back; the agent reads reachable()
// and unreachable() through it. Not thread-safe: HttpPeerMonitor holds its
// mutex around every call; unit tests step it with their own times.
//
// Two lanes, each worked by its own few threads (workersPerLane()):
//   - live: peers whose latest check got an answer, and peers never checked.
//     A check here gives the TCP connect only a short time
//     (PeerCheckTuning::live_connect_ms): on a LAN a host that is up
//     completes it within a millisecond, whatever its load (its kernel does
//     it), so a peer that just went silent costs a live thread that long, not
//     the whole check timeout. A peer that fails here moves to the silent
//     lane, ahead of all peers waiting there: most likely it only missed the
//     short connect (a lost SYN, a full accept queue) and answers the full
//     check at once.
//   - silent: peers whose latest check got no answer, checked with the full
//     check timeout for every step. A peer that answers moves back to live.
// So peers known to be silent never hold up the checks of peers that answer:
// each lane's threads only ever wait for their own lane's peers.
//
// Both lanes check a peer once per interval() (a third of the peer timeout,
// 200-2000 ms), from the start of its previous check (a peer the live lane
// lost is retried at once, above); with enough
// answering peers and threads every peer is checked every interval, as when
// each round had a thread per peer. What an outcome means does not depend
// on how late the check ran: an answer counts at the time it came in, and a
// peer's unreachable duration runs from its last answer whether or not it
// was checked since, so a lane that falls behind delays news, never falsifies
// it.
//
// Two time bases: `now` is the Clock's (answer times, the peer timeout, what
// reachable()/unreachable() judge); `steady` is a monotonic time for when the
// next check is due, so that a wall clock stepped back by NTP does not stop
// the checks.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "tw/clock.h"
#include "tw/protocol.h"

namespace tw {

enum class PeerLane { kLive = 0, kSilent = 1 };

struct PeerCheckTuning {
  // Threads per lane to start with (fewer with fewer peers).
  size_t workers_per_lane = 16;
  // The live lane's TCP connect timeout (capped by the check timeout).
  Millis live_connect_ms = 25;
  // Threads per lane at most, when its checks fall behind (wantsWorker()).
  size_t max_workers_per_lane = 128;
};

// One check to make: GET the peer's status at `address` within these timeouts.
struct PeerCheck {
  std::string host;
  std::string address;
  PeerLane lane = PeerLane::kLive;
  Millis connect_timeout_ms = 0;
  Millis timeout_ms = 0;  // reading and writing; connecting too in the silent lane
  Millis started = 0;     // steady time it was taken
};

class PeerChecks {
 public:
  explicit PeerChecks(std::string self, PeerCheckTuning tuning = {});

  // Replaces the peers (this host left out); what is known of a peer that
  // stays is kept. A new peer is due at once, in the live lane. A peer with
  // no address yet is not checked (it stays unreachable).
  void setPeers(const std::vector<PeerInfo>& peers, Millis timeout_ms, Millis now, Millis steady);

  // A third of the peer timeout, 200-2000 ms: how often a peer is checked,
  // and the check timeout.
  Millis interval() const;
  size_t workersPerLane() const;
  // Whether a lane worked by `workers` threads should get one more: its
  // earliest waiting check is overdue by more than a quarter interval (each
  // check waits on the network and on the peer, not on this host's CPU: on a
  // loaded site 16 threads can take longer than an interval for 1,000
  // peers), and it has fewer than the most allowed.
  bool wantsWorker(PeerLane lane, size_t workers, Millis steady) const;

  // The lane's next check that is due at `steady` (taking it: the peer is in
  // flight until finish()), or nothing.
  std::optional<PeerCheck> take(PeerLane lane, Millis steady);
  // When the lane's earliest waiting check is due; nothing when none waits.
  std::optional<Millis> nextDue(PeerLane lane) const;
  // The outcome of a check taken here: `mutual` empty = no (valid) answer,
  // else whether the peer's answer said it reaches this host. Returns the
  // lane the peer waits in now when it is due earlier than that lane's
  // earliest check was (its threads may sleep past it: wake them), else
  // nothing.
  std::optional<PeerLane> finish(const PeerCheck& check, std::optional<bool> mutual, Millis now);

  // PeerView (agent/peer_view.h).
  std::set<std::string> reachable(Millis now) const;
  std::map<std::string, Millis> unreachable(Millis now) const;
  // Whether this host had an answer from `host` within the peer timeout:
  // what it answers `host` (compact: sees_you) ...
  bool hears(const std::string& host, Millis now) const;
  // ... and every such peer (the full answer's `sees`).
  std::vector<std::string> heard(Millis now) const;

 private:
  struct Peer {
    std::string address;
    Millis last_answer = -1;   // last answer received (now)
    Millis last_mutual = -1;   // last answer that named this host (now)
    bool checked = false;      // a check of it finished
    bool answered_last = false;  // the latest finished check got an answer
    bool in_flight = false;
    Millis due = 0;  // steady
  };
  PeerLane laneOf(const Peer& p) const;
  void enqueue(const std::string& host, const Peer& p);
  bool heardWithin(const Peer& p, Millis now) const;

  const std::string self_;
  const PeerCheckTuning tuning_;
  std::map<std::string, Peer> peers_;
  // Per lane: the peers waiting (not in flight, with an address), by due time.
  std::set<std::pair<Millis, std::string>> waiting_[2];
  Millis timeout_ms_ = 3000;
  Millis watch_start_ = -1;
};

}  // namespace tw
