// LeaseRenewals: the etcd records that let agents renew their host leases
// with whichever controller replica answers (docs/ha.md, "Agents renew their
// leases with any replica"), without a follower's renewal and the leader's
// fence of the same host ever both taking effect.
//
// Keys, under the cluster prefix P (tw/store_etcd.h):
//
//   P/renewals/<host>      {"agent_id", "t_ms", "by"}  written by any replica, in one txn
//                          that holds only while P/fence-intent/<host> does not exist
//   P/fence-intent/<host>  {"term", "t_ms"}            written by the leader, in one txn
//                          guarded by its term AND by the renewal's mod revision it last read
//
// Invariant: an agent is told "renewed" only after a record() that etcd
// ordered before the leader's fence intent for its host; the leader fences
// for lease expiry only after its intendFence() committed, which it cannot
// once a renewal it has not read came in. Whichever txn etcd orders first
// wins; the other fails whole.
//
// This is the protocol's store side only: the controller's liveness and a
// follower's heartbeat handler do not use it yet (docs/ha.md says what is
// left). Threads: like the EtcdClient it is given (HttpEtcdClient serializes).
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "tw/clock.h"
#include "tw/etcd_client.h"
#include "tw/status.h"
#include "tw/store_etcd.h"

namespace tw {

struct RenewalRecord {
  std::string agent_id;
  Millis t_ms = 0;
  std::string by;            // the replica that took the heartbeat
  int64_t mod_revision = 0;  // etcd's: what intendFence() compares
};

class LeaseRenewals {
 public:
  // REQUIRES: client outlives this; prefix as etcdClusterPrefix() gives.
  LeaseRenewals(EtcdClient& client, std::string prefix);

  // A replica took a heartbeat of `host`: records the renewal unless a fence
  // intent for the host exists. true = recorded: the agent may be told its
  // lease is renewed; false = the leader decided to fence it: the agent must
  // not be told, and nothing was written. Errors: kInvalidArgument for a bad
  // host name; etcd's (kUnavailable).
  Result<bool> record(const std::string& host, const std::string& agent_id, Millis t_ms,
                      const std::string& by);

  // Every renewal record, by host (the leader reads them every tick).
  Result<std::map<std::string, RenewalRecord>> read();

  // The leader is about to fence `host` for lease expiry. Writes the intent
  // iff `guard` still holds (its term) and the host's renewal record still
  // has `seen_mod_revision` (0: there was none). true = the intent committed:
  // the fence may go on; false = a renewal came in since: re-read, the host
  // is alive. Errors: kFailedPrecondition "not the leader" (nothing written),
  // kInvalidArgument for a bad host name, etcd's.
  Result<bool> intendFence(const EtcdWriteGuard& guard, const std::string& host, int64_t seen_mod_revision,
                           Millis t_ms);

  // The fence is done or abandoned: renewals of the host are recorded again.
  // Errors: kFailedPrecondition "not the leader", etcd's.
  Status clearIntent(const EtcdWriteGuard& guard, const std::string& host);

  // Whether a fence intent for `host` exists now.
  Result<bool> intentExists(const std::string& host);

 private:
  std::string renewalKey(const std::string& host) const;
  std::string intentKey(const std::string& host) const;

  EtcdClient& client_;
  const std::string prefix_;
};

}  // namespace tw
