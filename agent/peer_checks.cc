#include "agent/peer_checks.h"

#include <algorithm>
#include <limits>

namespace tw {

namespace {

// The due time of a peer the live lane lost: ahead of every peer waiting in
// the silent lane (and far from overflowing when a time is subtracted).
constexpr Millis kAtOnce = std::numeric_limits<Millis>::min() / 4;

}  // namespace

PeerChecks::PeerChecks(std::string self, PeerCheckTuning tuning)
    : self_(std::move(self)), tuning_(tuning) {}

Millis PeerChecks::interval() const { return std::clamp<Millis>(timeout_ms_ / 3, 200, 2000); }

size_t PeerChecks::workersPerLane() const {
  return std::clamp<size_t>(peers_.size(), 1, std::max<size_t>(tuning_.workers_per_lane, 1));
}

bool PeerChecks::wantsWorker(PeerLane lane, size_t workers, Millis steady) const {
  if (workers >= std::min(peers_.size(), tuning_.max_workers_per_lane)) return false;
  const std::optional<Millis> due = nextDue(lane);
  return due.has_value() && *due < steady - interval() / 4;
}

PeerLane PeerChecks::laneOf(const Peer& p) const {
  return !p.checked || p.answered_last ? PeerLane::kLive : PeerLane::kSilent;
}

void PeerChecks::enqueue(const std::string& host, const Peer& p) {
  if (p.address.empty() || p.in_flight) return;
  waiting_[static_cast<int>(laneOf(p))].emplace(p.due, host);
}

void PeerChecks::setPeers(const std::vector<PeerInfo>& peers, Millis timeout_ms, Millis now,
                          Millis steady) {
  if (watch_start_ < 0) watch_start_ = now;
  timeout_ms_ = timeout_ms > 0 ? timeout_ms : 3000;
  std::map<std::string, Peer> next;
  for (const auto& p : peers) {
    if (p.host == self_) continue;
    Peer peer;
    peer.due = steady;
    auto old = peers_.find(p.host);
    if (old != peers_.end()) peer = old->second;
    peer.address = p.address;
    next[p.host] = peer;
  }
  peers_.swap(next);
  waiting_[0].clear();
  waiting_[1].clear();
  for (const auto& [host, p] : peers_) enqueue(host, p);
}

std::optional<PeerCheck> PeerChecks::take(PeerLane lane, Millis steady) {
  auto& waiting = waiting_[static_cast<int>(lane)];
  if (waiting.empty() || waiting.begin()->first > steady) return std::nullopt;
  auto node = waiting.extract(waiting.begin());
  Peer& p = peers_.at(node.value().second);
  p.in_flight = true;
  PeerCheck check;
  check.host = std::move(node.value().second);
  check.address = p.address;
  check.lane = lane;
  check.timeout_ms = interval();
  check.connect_timeout_ms =
      lane == PeerLane::kLive ? std::min(tuning_.live_connect_ms, check.timeout_ms) : check.timeout_ms;
  check.started = steady;
  return check;
}

std::optional<Millis> PeerChecks::nextDue(PeerLane lane) const {
  const auto& waiting = waiting_[static_cast<int>(lane)];
  if (waiting.empty()) return std::nullopt;
  return waiting.begin()->first;
}

std::optional<PeerLane> PeerChecks::finish(const PeerCheck& check, std::optional<bool> mutual,
                                           Millis now) {
  auto it = peers_.find(check.host);
  if (it == peers_.end()) return std::nullopt;  // left the list meanwhile
  Peer& p = it->second;
  if (mutual.has_value()) {
    p.last_answer = now;
    if (*mutual) p.last_mutual = now;
  }
  // Dropped and listed again while in flight: it waits already.
  if (!p.in_flight) return std::nullopt;
  p.in_flight = false;
  p.checked = true;
  p.answered_last = mutual.has_value();
  // Once per interval from the check's start, however long it took.
  p.due = check.started + interval();
  if (!mutual.has_value() && check.lane == PeerLane::kLive) p.due = kAtOnce;
  const PeerLane lane = laneOf(p);
  const auto head = nextDue(lane);
  enqueue(check.host, p);
  if (p.address.empty()) return std::nullopt;
  if (!head.has_value() || p.due < *head) return lane;
  return std::nullopt;
}

bool PeerChecks::heardWithin(const Peer& p, Millis now) const {
  return p.last_answer >= 0 && now - p.last_answer < timeout_ms_;
}

bool PeerChecks::hears(const std::string& host, Millis now) const {
  auto it = peers_.find(host);
  return it != peers_.end() && heardWithin(it->second, now);
}

std::vector<std::string> PeerChecks::heard(Millis now) const {
  std::vector<std::string> out;
  for (const auto& [host, p] : peers_) {
    if (heardWithin(p, now)) out.push_back(host);
  }
  return out;
}

std::set<std::string> PeerChecks::reachable(Millis now) const {
  std::set<std::string> out;
  for (const auto& [host, p] : peers_) {
    // Strictly within the timeout: at timeout_ms the peer is unreachable(),
    // and never both.
    if (p.last_mutual >= 0 && now - p.last_mutual < timeout_ms_) out.insert(host);
  }
  return out;
}

std::map<std::string, Millis> PeerChecks::unreachable(Millis now) const {
  std::map<std::string, Millis> out;
  if (watch_start_ < 0) return out;
  for (const auto& [host, p] : peers_) {
    Millis since = std::max(p.last_answer, watch_start_);
    if (now - since >= timeout_ms_) out[host] = now - since;
  }
  return out;
}

}  // namespace tw
