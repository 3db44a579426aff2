// A follower replica's answer to a heartbeat that could not reach the leader
// (docs/ha.md, "Agents renew their leases with any replica"): the agent
// sends its heartbeat again with ?any_replica=1 when the leader did not
// answer, and a follower then takes it itself instead of redirecting it.
//
// It records the renewal (LeaseRenewals::record: one etcd txn that holds
// only while no fence intent of the host exists) and, when recorded, answers
// with the set the leader last published for the host (Store::publishSets),
// marked renewed_by. It never makes a set of its own and takes nothing else
// from the heartbeat (events and reports wait for the leader). When the
// leader intends to fence the host, the answer is an error: the agent does
// not count its lease as renewed.
//
// Threads: any (HTTP handler threads); the LeaseRenewals' client and the
// store serialize their own calls.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

#include "controller/lease_renewals.h"
#include "tw/clock.h"
#include "tw/protocol.h"
#include "tw/status.h"
#include "tw/store.h"

namespace tw {

class FollowerHeartbeats {
 public:
  // REQUIRES: renewals, store and wall outlive this. `identity`: this
  // replica's (the record's "by", the answer's renewed_by).
  FollowerHeartbeats(LeaseRenewals& renewals, Store& store, const Clock& wall, std::string identity);

  // Errors: kFailedPrecondition when a fence intent of the host exists
  // (nothing written); kUnavailable when the leader published no set for the
  // host yet (nothing written: an empty set would tell the agent to drop its
  // VMs) or etcd cannot be reached; kInvalidArgument for a bad host name.
  Result<AssignmentSet> handle(const Heartbeat& hb);

  int64_t renewed() const { return renewed_.load(); }
  int64_t refused() const { return refused_.load(); }

 private:
  LeaseRenewals& renewals_;
  Store& store_;
  const Clock& wall_;
  const std::string identity_;
  std::atomic<int64_t> renewed_{0};
  std::atomic<int64_t> refused_{0};
};

}  // namespace tw
