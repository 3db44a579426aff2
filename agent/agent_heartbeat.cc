// What the agent tells the controller: its heartbeat (reports of its VMs,
// peers unreachable, its lease's renewal), the answer's bookkeeping, and
// its events.
#include "agent/agent.h"
#include "agent/agent_util.h"

#include <algorithm>
#include <utility>

#include "tw/log.h"

namespace tw {

using agent_detail::isExecuting;
using agent_detail::sameReports;

std::vector<DomainReport> Agent::buildReports(Millis now) const {
  std::vector<DomainReport> out;
  out.reserve(view_.size());
  for (const auto& [vm, d] : view_) {
    DomainReport r;
    r.vm = vm;
    r.tier = d.meta.tier;
    r.epoch = d.meta.epoch;
    r.state = d.state;
    auto a = assigned_.find(vm);
    auto t = tracks_.find(vm);
    if (isExecuting(d.state)) {
      if (a == assigned_.end()) {
        r.health = Health::kUnknown;  // on its way out, or not yet judged
      } else if (a->second.health.kind == HealthKind::kNone) {
        r.health = Health::kHealthy;
      } else {
        r.health = prober_.health(vm, a->second.health,
                                  t != tracks_.end() ? t->second.running_since_ms : now);
      }
    }
    if (t != tracks_.end() && t->second.epoch == d.meta.epoch) {
      // attemptsInWindow(), with the assignment already looked up.
      const auto& attempts = t->second.attempts;
      r.restarts =
          a == assigned_.end()
              ? static_cast<int>(attempts.size())
              : static_cast<int>(std::count_if(attempts.begin(), attempts.end(), [&](Millis at) {
                  return at > now - a->second.restart.window_ms;
                }));
      r.reason = t->second.reason;
    }
    if (a != assigned_.end() && t != tracks_.end() && t->second.epoch == d.meta.epoch) {
      r.ports = t->second.forwards;
    }
    out.push_back(std::move(r));
  }
  return out;
}

bool Agent::reportDue() const {
  std::lock_guard<std::mutex> lock(lease_mu_);
  return reportDueLocked();
}

bool Agent::reportDueLocked() const {
  if (!link_up_) return false;  // retried at the next interval
  if (published_.assignments_version != last_sent_version_) return true;
  if (published_.addresses_held != last_sent_addresses_) return true;
  // A new host report (the controller asked about new paths: an apply waits
  // for it, controller/path_probes.h) goes out at once, once.
  const std::string& report = published_.host_report.digest;
  if (!report.empty() && report != last_sent_report_digest_ && report != controller_report_digest_)
    return true;
  // Compared once per publication and answer, not on every tick of the
  // heartbeat thread (issue #16: the simulator ticks it every 10 ms).
  if (same_checked_gen_ != published_gen_ || same_checked_sent_ != sent_serial_) {
    same_checked_gen_ = published_gen_;
    same_checked_sent_ = sent_serial_;
    same_as_sent_ = sameReports(published_.domains, last_sent_);
  }
  return !same_as_sent_;
}

void Agent::sendHeartbeat(Millis now) {
  std::lock_guard<std::mutex> sending(send_mu_);
  Heartbeat hb;
  int64_t gen = 0;
  int64_t events_before = 0;
  std::string report_digest;
  Millis late_ms = 0, interval = 0;
  {
    std::lock_guard<std::mutex> lock(lease_mu_);
    hb = published_;
    report_digest = published_.host_report.digest;
    hb.seq = ++seq_;
    hb.peers_digest = peers_digest_;
    // The host report rides along only when the controller lacks it.
    if (hb.host_report.digest == controller_report_digest_) hb.host_report = HostReport{};
    gen = published_gen_;
    events_before = published_events_;
    if (fence_unacked_) hb.self_fence_reason = self_fence_reason_;
    late_ms = next_heartbeat_ms_ > 0 ? now - next_heartbeat_ms_ : 0;
    interval = interval_ms_;
    last_heartbeat_ms_ = now;
    next_heartbeat_ms_ = now + interval_ms_;
  }
  hb.peer_address = options_.peer_address;
  hb.watchdog_ms = options_.watchdog_ms;
  hb.peers_unreachable = peers_->unreachable(now);

  // The undelivered events this snapshot already reflects ride along, oldest
  // first: the controller handles "crashed, restarted" before the report of
  // the new run, never after it (a late "crashed" would undo a newer report).
  // One request, so that a backlog never delays the lease.
  int64_t carried = 0;
  {
    std::lock_guard<std::mutex> lock(outbox_mu_);
    for (const Outgoing& o : outbox_) {
      if (o.seq > events_before || hb.events.size() >= kEventsPerHeartbeat) break;
      hb.events.push_back(o.event);
      carried = o.seq;
    }
  }
  // No lock while the controller answers (or not).
  Result<AssignmentSet> answer = link_.heartbeat(hb);
  // A failed one is the link's condition (noteLinkResultLocked), not slowness.
  noteSlowHeartbeat(late_ms, answer.isOk() ? clock_.nowMs() - now : 0, interval);
  // A set of a deposed leader's term: no answer at all (no lease renewal,
  // events kept for the leader): agent/term_watch.h.
  if (answer && !admitTerm(*answer)) {
    link_.refusedAnswer(/*pushed=*/false);  // the next heartbeat tries the next replica
    answer = unavailable("the answer carries term " + std::to_string(answer->term) + ", older than term " +
                         std::to_string(term_watch_.highest()) + " (a deposed controller leader)");
  }
  if (answer && carried > 0 && answer->renewed_by.empty()) {  // a follower takes no event
    std::lock_guard<std::mutex> lock(outbox_mu_);
    while (!outbox_.empty() && outbox_.front().seq <= carried) outbox_.pop_front();
  }

  std::lock_guard<std::mutex> lock(lease_mu_);
  noteLinkResultLocked(answer.status());
  if (!answer) {
    link_up_ = false;
    return;
  }
  link_up_ = true;
  controller_report_digest_ = answer->host_report_digest;
  last_sent_report_digest_ = report_digest;
  last_sent_ = hb.domains;
  last_sent_addresses_ = hb.addresses_held;
  ++sent_serial_;
  last_sent_version_ = hb.assignments_version;
  if (lease_state_ == LeaseState::kExpired && hb.self_fence_reason.empty()) {
    // Sent before the fence, answered after it: an old set, and no lease.
    return;
  }
  if (answered_ && now - last_answered_ms_ > 2 * interval_ms_) {
    // A renewal gap, for the HA proofs (tests/integration/ha_real_agents_test.cc).
    log::info("renewal gap of host '{}': {} ms from the last answered heartbeat{}", options_.host,
              now - last_answered_ms_,
              answer->renewed_by.empty() ? "" : " (renewed by replica '" + answer->renewed_by + "')");
  }
  last_answered_ms_ = now;
  answered_ = true;
  last_answered_gen_ = gen;
  const Millis lease_ms = answer->lease_ms > 0 ? answer->lease_ms : options_.initial_lease_ms;
  if (lease_state_ != LeaseState::kValid) {
    log::info("lease of host '{}' {} ({}, renewed by every answered heartbeat)", options_.host,
              lease_state_ == LeaseState::kExpired ? "renewed after self-fence"
              : lease_state_ == LeaseState::kHeld  ? "renewed: the controller answers again"
                                                   : "granted",
              formatDuration(lease_ms));
  }
  lease_state_ = LeaseState::kValid;
  lease_until_ms_ = now + lease_ms;
  fence_unacked_ = false;
  if (answer->host != options_.host) {
    log::warn("controller answered with assignments for host '{}' (this is host '{}'): ignored",
              answer->host, options_.host);
    return;
  }
  answer_ = std::move(*answer);
  if (wake_) wake_();
}

void Agent::noteSlowHeartbeat(Millis late_ms, Millis took_ms, Millis interval_ms) {
  const Millis limit = std::max<Millis>(interval_ms / 2, 1);
  if (late_ms <= limit && took_ms <= limit) return;
  const Millis now = clock_.nowMs();
  if (slow_logged_ms_ > 0 && now - slow_logged_ms_ < 10000) {
    ++slow_unlogged_;
    return;
  }
  log::warn("heartbeat of host '{}' sent {} ms after it was due, answered {} ms after it went out "
            "(late: this process got no CPU in time; slow answer: the controller or the network){}",
            options_.host, std::max<Millis>(late_ms, 0), took_ms,
            slow_unlogged_ > 0 ? "; " + std::to_string(slow_unlogged_) + " more since the last such line" : "");
  slow_logged_ms_ = now;
  slow_unlogged_ = 0;
}

void Agent::noteLinkResultLocked(const Status& st) {
  const Code code = st.code();
  if (link_condition_ == code) return;
  const bool first = !link_condition_.has_value();
  link_condition_ = code;
  switch (code) {
    case Code::kOk:
      log::info("controller {}", first ? "answered" : "answers again");
      break;
    case Code::kNotFound:
      log::error(
          "the controller does not know host '{}' (declare it in a policy): {}; "
          "retrying every {} ms",
          options_.host, st.toString(), interval_ms_);
      break;
    case Code::kPermissionDenied:
    case Code::kForbidden:
      log::error("the controller refused this agent's token: {}; retrying every {} ms",
                 st.toString(), interval_ms_);
      break;
    case Code::kUnavailable:
      log::warn("cannot reach the controller: {}; retrying every {} ms", st.toString(),
                interval_ms_);
      break;
    default:
      log::error("heartbeat to the controller failed: {}; retrying every {} ms", st.toString(),
                 interval_ms_);
      break;
  }
}

void Agent::flushEvents() {
  std::unique_lock<std::mutex> sending(send_mu_, std::try_to_lock);
  if (!sending.owns_lock()) {  // a heartbeat is on its way (maybe with them): after it
    std::lock_guard<std::mutex> lock(outbox_mu_);
    events_deferred_ = !outbox_.empty();
    return;
  }
  events_deferred_ = false;
  for (;;) {
    {
      std::lock_guard<std::mutex> lock(lease_mu_);
      if (!link_up_) return;
    }
    Outgoing next;
    {
      std::lock_guard<std::mutex> lock(outbox_mu_);
      if (outbox_.empty()) return;
      next = outbox_.front();
    }
    Status st = link_.sendEvent(next.event);
    if (!st.isOk() && (st.code() == Code::kUnavailable || st.code() == Code::kPermissionDenied ||
                       st.code() == Code::kForbidden)) {
      log::debug("sending event failed, kept for later: {}", st.toString());
      return;
    }
    if (!st.isOk()) {  // the controller refuses this event: retrying cannot help
      log::warn("controller refused event '{}' for '{}': {}", next.event.kind, next.event.vm,
                st.toString());
    }
    std::lock_guard<std::mutex> lock(outbox_mu_);
    // emit() may have dropped it meanwhile (queue full): pop only that one.
    if (!outbox_.empty() && outbox_.front().seq == next.seq) outbox_.pop_front();
  }
}

size_t Agent::pendingEvents() const {
  std::lock_guard<std::mutex> lock(outbox_mu_);
  return outbox_.size();
}

}  // namespace tw
