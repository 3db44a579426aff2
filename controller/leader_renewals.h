// The leader's side of lease renewal by any replica (docs/ha.md, "Agents
// renew their leases with any replica"): the renewal records that followers
// write (LeaseRenewals, controller/lease_renewals.h) as part of host
// liveness, and the fence intent committed before a lease-expiry fence.
//
//  - poll(): the renewals recorded since the last read. The controller reads
//    them only while some host is silent (a host whose heartbeats reach the
//    leader renews through it, and a follower takes a heartbeat only when the
//    leader could not be reached), at most every read_every_ms.
//  - intendFence(): before a lease-expiry fence, the intent guarded by the
//    leader's term AND the renewal's mod revision last read. false = a
//    renewal came in since: the records are read again, the host is alive.
//  - An intent is cleared when the fenced host's agent heartbeats the leader
//    again (its set after the fence is published by then): from then on
//    followers may renew its lease again.
//
// Loop thread only (the Controller's). Time: the controller's clock; a
// record's t_ms (a follower's clock) is only shown, never compared: a
// renewal counts as heard when the leader first reads it, which is after
// etcd recorded it.
#pragma once

#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "controller/lease_renewals.h"
#include "tw/clock.h"
#include "tw/status.h"
#include "tw/store_etcd.h"

namespace tw {

class LeaderRenewals {
 public:
  struct Renewal {
    std::string host;
    std::string by;  // the replica that took the heartbeat
  };
  // REQUIRES: records outlives this. `guard`: the leader's write guard (its
  // term), as the EtcdStore's.
  LeaderRenewals(LeaseRenewals& records, std::function<Result<EtcdWriteGuard>()> guard,
                 Millis read_every_ms = 250);

  // The records as they are now, none reported: Controller::recover() takes
  // it before it gives every host its grace (which starts after any renewal
  // read here), so that the first poll() reports only later renewals.
  Status baseline();

  // The renewals recorded since the last read (every record at the first
  // read, when no baseline() was taken). Reads the store when `force` or read_every_ms passed since the
  // last read, else returns none. Errors: etcd's (nothing changes).
  Result<std::vector<Renewal>> poll(Millis now, bool force = false);

  // Writes the fence intent of `host`. true = committed: the lease fence may
  // go on; false = renewed since the last read (the next poll(force) says
  // by whom). Errors: kFailedPrecondition "not the leader", etcd's.
  Result<bool> intendFence(const std::string& host, Millis now);

  // Clears `host`'s intent when this leader wrote one, or `unknown` (an
  // intent of an earlier leader may exist) and it was not cleared by this
  // one yet. Errors: etcd's; the intent stays and is tried again next time.
  Status clearIntent(const std::string& host, bool unknown);

  // Reads of the records since the start (tests, metrics).
  int64_t reads() const { return reads_; }

 private:
  LeaseRenewals& records_;
  std::function<Result<EtcdWriteGuard>()> guard_;
  const Millis read_every_ms_;
  Millis last_read_ms_ = -1;
  int64_t reads_ = 0;
  std::map<std::string, int64_t> seen_;  // host -> mod revision last read
  std::set<std::string> intents_;        // written by this leader, not cleared
  std::set<std::string> cleared_;        // cleared (or found absent) by this leader
};

}  // namespace tw
