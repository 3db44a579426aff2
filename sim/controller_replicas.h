// Several controller replicas in the simulator (issue 14, docs/ha.md): the
// script's `controllers N` runs N real Controllers, c1..cN, each a replica
// with its own LeaderLease and EtcdStore over one in-memory etcd (FakeEtcd,
// tw/fake_etcd.h: the semantics the conformance suites pin against a real
// etcd), on the simulator's virtual clock. What each replica does is what
// controller/main.cc and controller/replica.h make the daemon do:
//
//  - Its lease thread (LeaderLease::runOnce) runs when it asks to, in the
//    simulator's step. Every write of its EtcdStore is one txn guarded by the
//    leader key's create revision (its term), through LeaderLease::guard().
//  - A replica that wins a term builds the Controller it acts with and
//    recover()s it from the store (nothing a follower held is trusted) before
//    it acts. Followers hold no Controller: they answer no heartbeat, only
//    redirect (307) to the leader their lease last read in the leader key.
//  - A replica whose term ends (its own deadline passed, etcd says the lease
//    or the key is gone, or etcd refused one of its writes for an older term:
//    EtcdStoreOptions::on_deposed -> LeaderLease::depose) stops acting and
//    exits (status 75); systemd starts it again as a follower: here, at the
//    next step. A deposed replica takes no heartbeat, pushes no assignment
//    and runs no tick meanwhile.
//  - Agents talk to the replica that answered them last (ApiClient): one that
//    acts answers; a follower redirects to the leader it knows (one 307);
//    one that is down, or a follower that knows no acting leader, sends the
//    agent to the next replica of its list (c1..cN).
//  - Operator commands (`apply`, `drain`, ...) go to the acting replica of
//    the newest term (twctl follows the 307 too).
//
// Faults (sim/script.h): `controller C kill|start|restart` (a crash: no
// resign, its etcd lease runs out), `controller C store off|on` (cut off from
// etcd, not from the agents: its lease cannot renew and its writes fail), and
// `controller C overstay` (its lease thread and clock stop: it acts on with
// its old term's guard after another replica won a new term: two replicas
// believe they lead; its first write fails etcd's txn compare and ends it,
// else it ends one controller tick after the other replica acted).
//
// Every replica's machine shares the simulator's one controller network
// (`controller network`, `link ... controller`): a partition between one
// replica and the agents is not modelled.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "controller/controller.h"
#include "controller/host_connector.h"
#include "controller/leader_lease.h"
#include "sim/controller_front.h"
#include "sim/in_process_link.h"
#include "sim/script.h"
#include "tw/clock.h"
#include "tw/fake_etcd.h"
#include "tw/store.h"

namespace tw::sim {

// How the Simulation plugs a replica's Controller into its world.
struct ReplicaWiring {
  // A host connector of the replica's own (fence results are per controller).
  std::function<std::unique_ptr<HostConnector>()> make_connector;
  // Sets the event and assignment listeners of `controller`, which replica
  // `replica` acts with (its front is `front`).
  std::function<void(const std::string& replica, Controller& controller, ControllerFront& front)> wire;
  // The simulator's own log lines ("sim" component).
  std::function<void(const std::string& level, const std::string& message)> log;
};

class ControllerReplicas final : public ControllerEndpoint {
 public:
  // The daemon's defaults: --leader-ttl-ms 3000, a 1 s margin, renewals every
  // TTL/3, a follower reads the leader key every 250 ms.
  static constexpr Millis kLeaderTtlMs = 3000;
  static constexpr Millis kLeaderMarginMs = 1000;
  // A replica that cannot open its store (etcd out of reach) tries again.
  static constexpr Millis kRetryOpenMs = 1000;
  static constexpr Millis kTickMs = 100;  // Simulation::kControllerTickMs

  // REQUIRES: clock outlives the replicas.
  ControllerReplicas(int replicas, ManualClock& clock, ReplicaWiring wiring);
  ~ControllerReplicas() override;
  ControllerReplicas(const ControllerReplicas&) = delete;
  ControllerReplicas& operator=(const ControllerReplicas&) = delete;

  // Starts every replica (c1 first: it campaigns first and wins) and lets the
  // winner recover and act, at the clock's now.
  void start();
  // Every running replica's lease thread (when due), then role changes.
  void step();
  // The controller tick: runOnce() on every acting replica, by name.
  void tick();
  // `controller C ...` (Op::kReplica).
  void execute(const Command& c);

  // The acting replica of the newest term (operators reach it), or null.
  Controller* leader();
  ControllerFront* leaderFront();
  std::string leaderName();
  // The Controller host's agent talks to now (its long poll), or null.
  Controller* controllerFor(const std::string& host) const;
  // When host's agent talks to a replica that etcd deposed and whose window
  // is not hidden (`overstay window`): true, and `set` is what its long
  // poll gets, the set that replica last published (as the daemon's
  // ControllerService answers; version 0: none), not its memory.
  bool windowPush(const std::string& host, AssignmentSet& set) const;
  // Each time a replica acted: for which term, from when until when (to =
  // -1 while it still acts), and whether it overstayed (`overstay`).
  struct Acting {
    std::string replica;
    int64_t term = 0;
    Millis from_ms = 0;
    Millis to_ms = -1;
    bool overstayed = false;
  };
  const std::vector<Acting>& history() const { return history_; }
  // Instants at which two replicas acted whose acting did not involve an
  // overstay (a replica past its own deadline): must stay 0.
  int64_t unforcedOverlaps() const;
  // Times a replica began to act (the first included).
  int64_t termsActed() const { return terms_acted_; }
  // Instants at which two or more replicas acted (ran a tick) together.
  int64_t overlappingTicks() const { return overlapping_ticks_; }
  // Writes of acting replicas that etcd refused for a deposed term.
  int64_t fencedWrites() const { return fenced_writes_; }

  // A read-only view of the store (Controller::loadView()) for the final
  // state when no replica acts. Null when it cannot be loaded.
  struct View {
    std::unique_ptr<Store> store;
    std::unique_ptr<Controller> controller;
  };
  View view();

  // ControllerEndpoint: the agents' side.
  Result<AssignmentSet> heartbeat(const Heartbeat& hb) override;
  Status agentEvent(const AgentEvent& event) override;

 private:
  struct Replica;

  void startReplica(Replica& r);
  void stopReplica(Replica& r);
  bool openStore(Replica& r);
  void act(Replica& r);
  void endTerm(Replica& r, const std::string& why);
  Replica* find(const std::string& name);
  Replica* resolve(const std::string& target);
  // The replica `host`'s agent reaches now (following one redirect), or null.
  Replica* route(const std::string& host);
  void log(const std::string& level, const std::string& message);

  ManualClock& clock_;
  ReplicaWiring wiring_;
  FakeEtcd etcd_;
  std::vector<std::unique_ptr<Replica>> replicas_;  // c1..cN
  std::map<std::string, size_t> sticky_;           // host -> replica it talks to
  std::vector<Acting> history_;
  int64_t terms_acted_ = 0;
  int64_t overlapping_ticks_ = 0;
  int64_t fenced_writes_ = 0;
};

// The etcd cluster prefix of the simulator's replicas.
inline constexpr const char* kSimEtcdPrefix = "/tierwarden/sim";

}  // namespace tw::sim
