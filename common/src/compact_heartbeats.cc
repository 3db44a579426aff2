#include "tw/compact_heartbeats.h"

#include "tw/hex64.h"

namespace tw {

std::string heartbeatDigest(const Heartbeat& hb) {
  Json j = hb;
  j.erase("seq");
  j.erase("events");
  j.erase("compact");
  j.erase("report_digest");
  // Which peers are unreachable is part of the report; for how long is not:
  // it grows every beat while a peer is down, and at 1,000 hosts one dead
  // host then sent every survivor's heartbeat to the controller's loop each
  // second (issue #16). The durations travel with every heartbeat, compact
  // ones too, and the controller takes them on its fast path.
  if (auto it = j.find("peers_unreachable"); it != j.end()) {
    for (auto& d : *it) d = 0;
  }
  return hex64(fnv1a(j.dump()));
}

Heartbeat compactOf(const Heartbeat& hb, const std::string& digest) {
  Heartbeat c;
  c.host = hb.host;
  c.agent_id = hb.agent_id;
  c.seq = hb.seq;
  c.assignments_version = hb.assignments_version;
  c.assignments_controller = hb.assignments_controller;
  c.peers_digest = hb.peers_digest;
  c.peers_unreachable = hb.peers_unreachable;  // their durations: not in the digest
  c.compact = true;
  c.report_digest = digest;
  return c;
}

Heartbeat CompactHeartbeats::next(const Heartbeat& hb, std::string* digest) const {
  *digest = heartbeatDigest(hb);
  std::lock_guard<std::mutex> lock(mu_);
  const bool compact = enabled_ && hb.events.empty() && hb.host_report.digest.empty() && !hb.peers_digest.empty() &&
                       !last_digest_.empty() && *digest == last_digest_;
  if (compact && full_left_ > 0) {
    --full_left_;
    return hb;
  }
  return compact ? compactOf(hb, *digest) : hb;
}

void CompactHeartbeats::refused() {
  std::lock_guard<std::mutex> lock(mu_);
  full_left_ = kFullAfterRefusal;
}

void CompactHeartbeats::answered(const std::string& digest, bool ok) {
  std::lock_guard<std::mutex> lock(mu_);
  last_digest_ = ok ? digest : std::string();
}

void CompactHeartbeats::setEnabled(bool on) {
  std::lock_guard<std::mutex> lock(mu_);
  enabled_ = on;
}

}  // namespace tw
