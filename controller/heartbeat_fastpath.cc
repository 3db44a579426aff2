#include "controller/heartbeat_fastpath.h"

#include <algorithm>
#include <utility>

#include "tw/compact_heartbeats.h"
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
  return heartbeatDigest(hb);  // the agent's digest of a compact heartbeat (tw/compact_heartbeats.h)
}

const std::string& HeartbeatFastPath::Answer::json() const {
  std::call_once(once_, [this] { json_ = jsonText(Json(*set_)); });
  return json_;
}

std::optional<AssignmentSet> HeartbeatFastPath::tryAnswer(const Heartbeat& hb) {
  std::shared_ptr<const Answer> answer = tryAnswerShared(hb);
  if (!answer) return std::nullopt;
  return answer->set();
}

std::shared_ptr<const HeartbeatFastPath::Answer> HeartbeatFastPath::tryAnswerShared(const Heartbeat& hb) {
  if (!hb.events.empty() || !hb.host_report.digest.empty() || hb.peers_digest.empty()) return miss(Miss::kReport);
  if (hb.compact && hb.report_digest.empty()) return miss(Miss::kReport);
  std::shared_ptr<const Snapshot> snap;
  bool same_peers = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = hosts_.find(hb.host);
    if (it == hosts_.end()) return miss(Miss::kUnknown);
    snap = it->second;
    // Compared here rather than copied out: a copy was a malloc per heartbeat.
    same_peers = hb.peers_digest == peers_digest_ && snap->answer->set().peers_digest == peers_digest_;
  }
  const AssignmentSet& set = snap->answer->set();
  if (!snap->online) return miss(Miss::kNotOnline);
  if (clock_.nowMs() > snap->fresh_until_ms) return miss(Miss::kStale);
  if (hb.assignments_version != set.version || hb.assignments_controller != set.controller_id) {
    return miss(Miss::kSetChanged);
  }
  if (!same_peers) return miss(Miss::kPeers);
  // A compact heartbeat names its report by digest; a full one is hashed
  // here, O(its VMs), outside the lock.
  if ((hb.compact ? hb.report_digest : digestOf(hb)) != snap->hb_digest) return miss(Miss::kDigest);
  std::lock_guard<std::mutex> lock(mu_);
  auto it = hosts_.find(hb.host);
  if (it == hosts_.end() || it->second != snap) return miss(Miss::kRaced);  // the loop changed it meanwhile
  renewed_.push_back(Renewal{hb.host, hb.peers_unreachable});
  ++answered_;
  return snap->answer;
}

void HeartbeatFastPath::store(const std::string& host, Snapshot snap) {
  hosts_[host] = std::make_shared<const Snapshot>(std::move(snap));
}

void HeartbeatFastPath::noteTaken(const Heartbeat& hb, const AssignmentSet& answer, bool online, Millis fresh_ms) {
  Snapshot snap;
  snap.hb_digest = digestOf(hb);
  snap.online = online;
  snap.fresh_until_ms = clock_.nowMs() + fresh_ms;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = hosts_.find(hb.host);
  if (it != hosts_.end() && it->second->answer->set().controller_id == answer.controller_id &&
      it->second->answer->set().version > answer.version) {
    snap.answer = it->second->answer;  // published after this answer was made
  } else {
    snap.answer = std::make_shared<const Answer>(withoutPeers(answer));
  }
  store(hb.host, std::move(snap));
}

void HeartbeatFastPath::notePublished(const AssignmentSet& set) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = hosts_.find(set.host);
  if (it == hosts_.end()) return;  // nothing taken from the host yet: the loop answers
  Snapshot snap = *it->second;
  snap.answer = std::make_shared<const Answer>(withoutPeers(set));
  store(set.host, std::move(snap));
}

void HeartbeatFastPath::notePublished(std::shared_ptr<const AssignmentSet> set) {
  if (!set->peers.empty() || !set->peers_omitted || !set->renewed_by.empty()) return notePublished(*set);
  const std::string host = set->host;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = hosts_.find(host);
  if (it == hosts_.end()) return;  // nothing taken from the host yet: the loop answers
  Snapshot snap = *it->second;
  snap.answer = std::make_shared<const Answer>(std::move(set));
  store(host, std::move(snap));
}

void HeartbeatFastPath::notePeersDigest(const std::string& digest) {
  std::lock_guard<std::mutex> lock(mu_);
  peers_digest_ = digest;
}

std::vector<HeartbeatFastPath::Renewal> HeartbeatFastPath::takeRenewals() {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<Renewal> out;
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

bool HeartbeatFastPath::close(const std::string& host) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = hosts_.find(host);
  if (it != hosts_.end() && it->second->online) {
    // A new snapshot: an answer being compared against the old one is
    // refused when it takes the lock (kRaced), so none slips in after this.
    Snapshot snap = *it->second;
    snap.online = false;
    store(host, std::move(snap));
  }
  return std::any_of(renewed_.begin(), renewed_.end(), [&](const Renewal& r) { return r.host == host; });
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

std::string HeartbeatFastPath::metricsText() const {
  static constexpr std::array<const char*, kMisses> kReasons = {
      "report", "unknown", "not_online", "stale", "set_changed", "peers", "digest", "raced"};
  std::string out =
      "# HELP tierwarden_heartbeat_fastpath_misses_total Heartbeats the fast path left to the loop (or "
      "refused as report wanted), by the rule that sent them there.\n"
      "# TYPE tierwarden_heartbeat_fastpath_misses_total counter\n";
  for (size_t i = 0; i < kMisses; ++i) {
    out += "tierwarden_heartbeat_fastpath_misses_total{reason=\"";
    out += kReasons[i];
    out += "\"} " + std::to_string(misses_[i].load(std::memory_order_relaxed)) + "\n";
  }
  return out;
}

}  // namespace tw
