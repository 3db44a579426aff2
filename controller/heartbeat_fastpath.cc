#include "controller/heartbeat_fastpath.h"

#include <utility>

#include "controller/hex64.h"
#include "tw/json.h"

namespace tw {

namespace {

AssignmentSet withoutPeers(AssignmentSet set) {
  set.peers.clear();
  set.peers_omitted = true;
  set.renewed_by.clear();
  return set;
}

}  // namespace

std::string HeartbeatFastPath::digestOf(const Heartbeat& hb) {
  Json j = hb;
  j.erase("seq");
  j.erase("events");
  return hex64(fnv1a(j.dump()));
}

std::optional<AssignmentSet> HeartbeatFastPath::tryAnswer(const Heartbeat& hb) {
  if (!hb.events.empty() || !hb.host_report.digest.empty() || hb.peers_digest.empty()) return std::nullopt;
  std::shared_ptr<const Snapshot> snap;
  std::string peers_digest;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = hosts_.find(hb.host);
    if (it == hosts_.end()) return std::nullopt;
    snap = it->second;
    peers_digest = peers_digest_;
  }
  if (!snap->online || clock_.nowMs() > snap->fresh_until_ms) return std::nullopt;
  if (hb.assignments_version != snap->set.version || hb.assignments_controller != snap->set.controller_id ||
      hb.peers_digest != peers_digest || snap->set.peers_digest != peers_digest) {
    return std::nullopt;
  }
  if (digestOf(hb) != snap->hb_digest) return std::nullopt;  // O(its VMs), outside the lock
  std::lock_guard<std::mutex> lock(mu_);
  auto it = hosts_.find(hb.host);
  if (it == hosts_.end() || it->second != snap) return std::nullopt;  // the loop changed it meanwhile
  renewed_.push_back(hb.host);
  ++answered_;
  return snap->set;
}

void HeartbeatFastPath::store(const std::string& host, Snapshot snap) {
  hosts_[host] = std::make_shared<const Snapshot>(std::move(snap));
}

void HeartbeatFastPath::noteTaken(const Heartbeat& hb, const AssignmentSet& answer, bool online, Millis fresh_ms) {
  Snapshot snap;
  snap.set = withoutPeers(answer);
  snap.hb_digest = digestOf(hb);
  snap.online = online;
  snap.fresh_until_ms = clock_.nowMs() + fresh_ms;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = hosts_.find(hb.host);
  if (it != hosts_.end() && it->second->set.controller_id == answer.controller_id &&
      it->second->set.version > answer.version) {
    snap.set = it->second->set;  // published after this answer was made
  }
  store(hb.host, std::move(snap));
}

void HeartbeatFastPath::notePublished(const AssignmentSet& set) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = hosts_.find(set.host);
  if (it == hosts_.end()) return;  // nothing taken from the host yet: the loop answers
  Snapshot snap = *it->second;
  snap.set = withoutPeers(set);
  store(set.host, std::move(snap));
}

void HeartbeatFastPath::notePeersDigest(const std::string& digest) {
  std::lock_guard<std::mutex> lock(mu_);
  peers_digest_ = digest;
}

std::vector<std::string> HeartbeatFastPath::takeRenewals() {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::string> out;
  out.swap(renewed_);
  return out;
}

void HeartbeatFastPath::noteRenewed(const std::string& host, bool online, Millis fresh_ms) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = hosts_.find(host);
  if (it == hosts_.end()) return;
  Snapshot snap = *it->second;
  snap.online = online;
  snap.fresh_until_ms = clock_.nowMs() + fresh_ms;
  store(host, std::move(snap));
}

void HeartbeatFastPath::reset() {
  std::lock_guard<std::mutex> lock(mu_);
  hosts_.clear();
  renewed_.clear();
  peers_digest_.clear();
}

void HeartbeatFastPath::forgetSets() {
  std::lock_guard<std::mutex> lock(mu_);
  hosts_.clear();  // renewed_ stays: those answers were given, the loop applies them
}

int64_t HeartbeatFastPath::answered() const {
  std::lock_guard<std::mutex> lock(mu_);
  return answered_;
}

}  // namespace tw
