// Compact heartbeats, the agent's side (issue #16): a heartbeat that reports
// what the previous one reported is sent as its digest, not as the report.
//
// At 1,000 hosts the controller spent most of a heartbeat's CPU on the
// report's JSON: parsing it, building the structs, and writing it out again
// to hash it. An agent's report rarely changes between two heartbeats, so the
// agent sends the digest of its report instead (Heartbeat::compact,
// report_digest; docs/api.md, "Compact heartbeats"), to its own route
// POST /api/v1/agents/{host}/heartbeat/compact. The controller answers it as
// the full heartbeat when it holds that digest for the host (its fast path,
// controller/heartbeat_fastpath.h); otherwise it answers 409 (a controller
// that restarted, a new leader, a host it does not hold as online and
// fresh) or 404 (a controller without the route), and the agent sends the
// full heartbeat at once. Nothing is lost: a compact heartbeat is only ever
// answered as the very report it names.
//
// When a heartbeat goes out compact: it carries no events and no host
// report, the agent holds a peer list, its digest is the one of the last
// heartbeat the controller answered with a set, and no compact one was
// refused in the last kFullAfterRefusal heartbeats (a host the fast path
// never answers, e.g. one in maintenance, does not pay two requests a beat).
//
// Threads: thread-safe (one mutex), so a link may share it between calls.
#pragma once

#include <mutex>
#include <string>

#include "tw/json.h"
#include "tw/protocol.h"

namespace tw {

// The digest of what a heartbeat reports: a hash of its JSON without seq,
// events, compact and report_digest, and with the durations of
// peers_unreachable left out (the peers named stay in). The controller's fast
// path compares the same digest (HeartbeatFastPath::digestOf).
std::string heartbeatDigest(const Heartbeat& hb);

// The compact form of `hb` (its report_digest set, compact = true, the rest
// of the report left out but for peers_unreachable: the durations).
Heartbeat compactOf(const Heartbeat& hb, const std::string& digest);

class CompactHeartbeats {
 public:
  // What to send for `hb`: its compact form when that may go out (above),
  // else `hb` itself. `digest` receives hb's digest, for answered().
  Heartbeat next(const Heartbeat& hb, std::string* digest) const;
  // The controller answered the heartbeat of `digest` (sent full, or compact
  // and accepted) with a set (`ok`), or not: then the next one goes out full.
  void answered(const std::string& digest, bool ok);
  // A compact heartbeat was not answered (409, 404, no answer): the next
  // kFullAfterRefusal heartbeats go out full.
  void refused();
  // Compact heartbeats off (bench/scale --no-compact); on by default.
  void setEnabled(bool on);

  static constexpr int kFullAfterRefusal = 8;

 private:
  mutable std::mutex mu_;  // guards everything below
  bool enabled_ = true;
  mutable int full_left_ = 0;  // heartbeats still to go out full
  std::string last_digest_;  // of the last heartbeat answered with a set; "" = none
};

}  // namespace tw
