#include "controller/leader_lease.h"

#include <algorithm>
#include <utility>

#include "tw/log.h"

namespace tw {

LeaderLease::LeaderLease(EtcdClient& client, const Clock& clock, LeaderLeaseOptions options)
    : client_(client),
      clock_(clock),
      options_(std::move(options)),
      renew_every_ms_(options_.renew_every_ms > 0 ? options_.renew_every_ms
                                                  : std::max<Millis>(options_.ttl_ms / 3, 1)) {}

Millis LeaderLease::ttlRoundedMs() const { return (options_.ttl_ms + 999) / 1000 * 1000; }

bool LeaderLease::isLeader() const {
  std::lock_guard<std::mutex> lock(mu_);
  return leading_ && clock_.nowMs() < deadline_;
}

int64_t LeaderLease::term() const {
  std::lock_guard<std::mutex> lock(mu_);
  return term_;
}

int64_t LeaderLease::losses() const {
  std::lock_guard<std::mutex> lock(mu_);
  return losses_;
}

Millis LeaderLease::deadline() const {
  std::lock_guard<std::mutex> lock(mu_);
  return deadline_;
}

std::string LeaderLease::leaderIdentity() const {
  std::lock_guard<std::mutex> lock(mu_);
  return leader_identity_;
}

Result<EtcdWriteGuard> LeaderLease::guard() const {
  std::lock_guard<std::mutex> lock(mu_);
  const Millis now = clock_.nowMs();
  if (!leading_) {
    return failedPrecondition(term_ == 0 ? std::string("this replica has not won a term")
                                         : "this replica's term " + std::to_string(term_) + " is over");
  }
  if (now >= deadline_) {
    return failedPrecondition("this replica's lease on term " + std::to_string(term_) + " ran out " +
                              std::to_string(now - deadline_) + " ms ago (not renewed in time)");
  }
  return EtcdWriteGuard{options_.key, term_};
}

void LeaderLease::loseLocked(const std::string& why) {
  if (!leading_) return;
  log::warn("leadership of term {} lost: {}", term_, why);
  leading_ = false;
  ++losses_;
}

Millis LeaderLease::runOnce() {
  const Millis now = clock_.nowMs();
  bool leading = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (leading_ && now >= deadline_) {
      loseLocked("the renewal deadline passed (" + std::string(last_error_.empty() ? "no answer" : last_error_) + ")");
    }
    if (now < next_step_) return next_step_;
    leading = leading_;
  }
  if (leading) {
    renew(now);
  } else {
    campaign(now);
  }
  std::lock_guard<std::mutex> lock(mu_);
  // Never sleep past the deadline: the loss must be seen when it happens.
  if (leading_) return std::min(next_step_, deadline_);
  return next_step_;
}

void LeaderLease::campaign(Millis now) {
  int64_t stale_lease = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stale_lease = lease_id_;
    lease_id_ = 0;
    next_step_ = now + std::max<Millis>(options_.campaign_every_ms, 1);
  }
  // A lease left from a lost term: give it up (its key, if still there, goes
  // with it), so that the next campaign is not blocked by our own old key.
  if (stale_lease != 0) (void)client_.leaseRevoke(stale_lease);

  // Someone leads: a look at the key is all this step costs (a campaign
  // would grant and revoke a lease for nothing).
  Result<EtcdRangeResult> held = client_.range(options_.key, "");
  if (!held.isOk()) {
    log::debug("campaign: {}", held.status().toString());
    return;
  }
  if (!held->kvs.empty()) {
    std::lock_guard<std::mutex> lock(mu_);
    leader_identity_ = held->kvs[0].value;
    return;
  }

  const Millis sent = clock_.nowMs();
  Result<EtcdLease> lease = client_.leaseGrant(ttlRoundedMs() / 1000);
  if (!lease.isOk()) {
    log::debug("campaign: {}", lease.status().toString());
    return;
  }
  Result<EtcdTxnResult> txn =
      client_.txn({EtcdCompare::createRevisionIs(options_.key, 0)},
                  {EtcdOp::put(options_.key, options_.identity, lease->id)}, {EtcdOp::range(options_.key)});
  if (!txn.isOk() || !txn->succeeded) {
    (void)client_.leaseRevoke(lease->id);
    std::lock_guard<std::mutex> lock(mu_);
    if (!txn.isOk()) {
      log::debug("campaign: {}", txn.status().toString());
    } else if (!txn->ranges.empty() && !txn->ranges[0].kvs.empty()) {
      leader_identity_ = txn->ranges[0].kvs[0].value;
    }
    return;
  }
  std::lock_guard<std::mutex> lock(mu_);
  leading_ = true;
  lease_id_ = lease->id;
  term_ = txn->revision;  // the put's revision is the key's create revision
  deadline_ = sent + lease->ttl_s * 1000 - options_.margin_ms;
  next_step_ = sent + renew_every_ms_;
  leader_identity_ = options_.identity;
  last_error_.clear();
  log::info("leading as term {} ('{}', lease TTL {} s)", term_, options_.identity, lease->ttl_s);
}

void LeaderLease::renew(Millis now) {
  int64_t lease_id = 0;
  int64_t term = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    lease_id = lease_id_;
    term = term_;
    // Retry soon after a failure, well inside the remaining time.
    next_step_ = now + std::max<Millis>(renew_every_ms_ / 4, 1);
  }
  const Millis sent = clock_.nowMs();
  Result<int64_t> ttl_s = client_.leaseKeepAlive(lease_id);
  if (!ttl_s.isOk()) {
    std::lock_guard<std::mutex> lock(mu_);
    if (last_error_ != ttl_s.status().message()) {
      log::warn("cannot renew the leader lease of term {}: {}", term, ttl_s.status().toString());
    }
    last_error_ = ttl_s.status().message();
    if (clock_.nowMs() >= deadline_) loseLocked("cannot renew: " + last_error_);
    return;
  }
  if (*ttl_s <= 0) {
    std::lock_guard<std::mutex> lock(mu_);
    loseLocked("etcd says the lease is gone (expired or revoked)");
    next_step_ = clock_.nowMs();
    return;
  }
  // The key is still ours? (Deleted by hand, or replaced after a loss we
  // did not see.) The guard would fail our writes anyway; this makes it
  // visible and ends the term.
  Result<EtcdRangeResult> key = client_.range(options_.key, "");
  std::lock_guard<std::mutex> lock(mu_);
  if (!leading_ || lease_id_ != lease_id) return;
  if (key.isOk() && (key->kvs.empty() || key->kvs[0].create_revision != term)) {
    loseLocked(key->kvs.empty() ? "the leader key was deleted"
                                : "the leader key now belongs to term " + std::to_string(key->kvs[0].create_revision));
    if (!key->kvs.empty()) leader_identity_ = key->kvs[0].value;
    next_step_ = clock_.nowMs();
    return;
  }
  if (clock_.nowMs() >= deadline_) {
    // Renewed, but too late: we stopped acting already; a term is never
    // resumed (memory may lag the store). Campaign afresh.
    loseLocked("renewed only after the deadline");
    next_step_ = clock_.nowMs();
    return;
  }
  if (!last_error_.empty()) log::info("leader lease of term {} renewed again", term);
  last_error_.clear();
  deadline_ = sent + *ttl_s * 1000 - options_.margin_ms;
  next_step_ = sent + renew_every_ms_;
}

void LeaderLease::depose(const std::string& why) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!leading_) return;
  loseLocked("etcd refused a write: " + why);
  next_step_ = clock_.nowMs();
}

void LeaderLease::resign() {
  int64_t lease_id = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    lease_id = lease_id_;
    lease_id_ = 0;
    if (leading_) loseLocked("resigned");
  }
  if (lease_id != 0) (void)client_.leaseRevoke(lease_id);
}

}  // namespace tw
