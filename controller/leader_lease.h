// LeaderLease: one controller replica's campaign for, and hold on, the leader
// key of its cluster in etcd (tw/store_etcd.h: P/leader).
//
// Campaign: while the leader key exists, read it every campaign_every_ms (one
// range: who leads); once it is gone, grant an etcd lease of ttl_ms, then one
// txn "create the leader key on that lease if it does not exist" (compare
// create_revision == 0). The
// winner's term is the key's create revision; EtcdStore puts "the leader key
// still has this create revision" into every write (guard()), so a deposed
// leader's write fails in etcd itself.
//
// Hold: a keepalive every renew_every_ms. This replica leads only until its
// OWN deadline, measured on its own monotonic clock:
//     deadline = (time the last successful keepalive/grant was SENT) + TTL - margin
// etcd starts the TTL when it receives the request, which is after we sent
// it, so our deadline falls before etcd can expire the lease and let another
// replica in, whatever etcd answers late or not at all. Once the deadline
// passes, or etcd says the lease or the key is gone, leadership is lost for
// good (isLeader() false at once, the term is over); a later campaign is a
// new term, with a new create revision.
//
// Threads: runOnce() on one thread of its own (it blocks on etcd);
// isLeader(), term(), guard() and the rest from any thread.
#pragma once

#include <cstdint>
#include <mutex>
#include <string>

#include "tw/clock.h"
#include "tw/etcd_client.h"
#include "tw/status.h"
#include "tw/store_etcd.h"

namespace tw {

struct LeaderLeaseOptions {
  std::string key;       // etcdLeaderKey(prefix)
  std::string identity;  // the key's value: who leads ("host:port pid N")
  // The etcd lease's TTL, rounded up to whole seconds (etcd's unit). At most
  // the policy's dead_after: a dead leader is replaced no later than a dead
  // host is noticed.
  Millis ttl_ms = 5000;
  // Leadership ends this long before the TTL would run out counted from the
  // send time: room for clock rate differences and for a write sent just
  // before the deadline to reach etcd.
  Millis margin_ms = 1000;
  Millis renew_every_ms = 0;  // 0 = a third of the TTL
  // A follower reads the leader key this often (one range request) and
  // campaigns (grant + txn) only once the key is gone: a dead leader's
  // successor acts at most this long after etcd expired the old lease.
  Millis campaign_every_ms = 250;
};

class LeaderLease {
 public:
  // REQUIRES: client and clock outlive the lease; clock is monotonic
  // (SteadyClock, or ManualClock in tests); options.key and identity set,
  // margin_ms < ttl_ms.
  LeaderLease(EtcdClient& client, const Clock& clock, LeaderLeaseOptions options);

  // One step: campaign when not leading and a campaign is due, renew when
  // leading and a renewal is due. Blocks for at most the etcd requests of the
  // step. Returns when the next step is due (a time on the clock).
  Millis runOnce();

  // Leading now: won a term, lost nothing since, and the clock is before the
  // deadline. Never blocks on etcd.
  bool isLeader() const;
  // The term this replica leads or last led (the leader key's create
  // revision); 0 = never led.
  int64_t term() const;
  // How many times leadership was lost (deadline passed, lease or key gone,
  // resigned).
  int64_t losses() const;
  // The current deadline (a time on the clock); meaningful while leading.
  Millis deadline() const;
  // The identity in the leader key when last seen ("" = none seen).
  std::string leaderIdentity() const;

  // What EtcdStore's writes are guarded by. Errors: kFailedPrecondition
  // ("this replica does not lead ...") when !isLeader().
  Result<EtcdWriteGuard> guard() const;

  // Ends the term now: etcd refused one of our writes because the leader key
  // is gone or newer (EtcdStoreOptions::on_deposed). isLeader() is false at
  // once and guard() fails, so no later write is even sent, whatever our own
  // deadline still says. A no-op when not leading. Any thread.
  void depose(const std::string& why);

  // Gives leadership up: revokes the lease (deleting the key) so another
  // replica can take over at once. Best effort; blocks for one request.
  void resign();

 private:
  Millis ttlRoundedMs() const;
  void campaign(Millis now);
  void renew(Millis now);
  // REQUIRES: mu_ held.
  void loseLocked(const std::string& why);

  EtcdClient& client_;
  const Clock& clock_;
  const LeaderLeaseOptions options_;
  const Millis renew_every_ms_;

  mutable std::mutex mu_;  // guards everything below
  bool leading_ = false;
  int64_t lease_id_ = 0;   // while leading
  int64_t term_ = 0;
  int64_t losses_ = 0;
  Millis deadline_ = 0;
  Millis next_step_ = 0;
  std::string leader_identity_;
  std::string last_error_;  // of renewals, logged once per kind
};

}  // namespace tw
