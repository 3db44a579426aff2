#include "sim/controller_replicas.h"

#include <utility>

#include "controller/follower_heartbeats.h"
#include "controller/leader_renewals.h"
#include "controller/lease_renewals.h"
#include "sim/sim_host_connector.h"
#include "tw/store_etcd.h"

namespace tw::sim {

namespace {

// One replica's connection to the in-memory etcd: a FakeEtcdClient (which a
// store partition cuts off) that also counts the txns etcd refused because
// their leader guard named a term that is over (a deposed leader's writes).
class ReplicaEtcdClient final : public EtcdClient {
 public:
  ReplicaEtcdClient(FakeEtcd& etcd, std::string leader_key, int64_t& fenced_writes)
      : inner_(etcd), probe_(etcd), leader_key_(std::move(leader_key)), fenced_writes_(fenced_writes) {}

  void setCutOff(bool cut_off) { inner_.setCutOff(cut_off); }

  Result<EtcdRangeResult> range(const std::string& key, const std::string& range_end, int64_t limit,
                                bool count_only) override {
    return inner_.range(key, range_end, limit, count_only);
  }
  Result<int64_t> put(const std::string& key, const std::string& value, int64_t lease) override {
    return inner_.put(key, value, lease);
  }
  Result<int64_t> deleteRange(const std::string& key, const std::string& range_end) override {
    return inner_.deleteRange(key, range_end);
  }
  Result<EtcdTxnResult> txn(const std::vector<EtcdCompare>& compares, const std::vector<EtcdOp>& success,
                            const std::vector<EtcdOp>& failure) override {
    Result<EtcdTxnResult> r = inner_.txn(compares, success, failure);
    if (r.isOk() && !r->succeeded) {
      for (const EtcdCompare& c : compares) {
        if (c.key != leader_key_ || c.target != EtcdCompare::Target::kCreate || c.number == 0) continue;
        Result<EtcdRangeResult> now = probe_.range(leader_key_, "");
        if (now.isOk() && (now->kvs.empty() || now->kvs[0].create_revision != c.number)) ++fenced_writes_;
      }
    }
    return r;
  }
  Result<EtcdLease> leaseGrant(int64_t ttl_s) override { return inner_.leaseGrant(ttl_s); }
  Result<int64_t> leaseKeepAlive(int64_t id) override { return inner_.leaseKeepAlive(id); }
  Status leaseRevoke(int64_t id) override { return inner_.leaseRevoke(id); }

 private:
  FakeEtcdClient inner_;
  FakeEtcdClient probe_;  // the simulator's own look, never cut off
  const std::string leader_key_;
  int64_t& fenced_writes_;
};

}  // namespace

struct ControllerReplicas::Replica {
  std::string name;
  bool up = false;         // its process runs
  bool store_cut = false;  // `controller C store off`
  bool overstay = false;   // `controller C overstay`: its lease thread and clock stopped
  // `controller C overstay window`: once deposed, it still takes heartbeats
  // and events, ticks, and its pushes reach agents until it exits at the
  // next step, as the daemon does; only its TermGuard keeps its acts in.
  bool window = false;
  std::string deposed;     // why etcd refused one of its writes (its term is over)
  Millis overstay_until = -1;  // set once another replica acts: one tick more
  Millis retry_open_ms = 0;
  bool open_warned = false;  // its store could not be opened (logged once)
  Millis next_lease_ms = 0;
  size_t acting_entry = 0;  // its entry in history_ while acting
  int64_t term = 0;  // the term its Controller acts for
  std::unique_ptr<ReplicaEtcdClient> lease_client;
  ReplicaEtcdClient* store_client = nullptr;  // owned by store
  std::unique_ptr<LeaderLease> lease;
  std::unique_ptr<Store> store;
  std::unique_ptr<HostConnector> connector;
  std::unique_ptr<Controller> controller;  // while acting
  // Lease renewal by any replica (docs/ha.md): a connection of its own.
  std::unique_ptr<ReplicaEtcdClient> renewals_client;
  std::unique_ptr<LeaseRenewals> renewals;
  std::unique_ptr<LeaderRenewals> leader_renewals;  // while acting
  std::unique_ptr<FollowerHeartbeats> follower;
  ControllerFront front;
};

ControllerReplicas::ControllerReplicas(int replicas, ManualClock& clock, ReplicaWiring wiring)
    : clock_(clock), wiring_(std::move(wiring)), etcd_(clock) {
  for (int i = 1; i <= replicas; ++i) {
    auto r = std::make_unique<Replica>();
    r->name = "c" + std::to_string(i);
    replicas_.push_back(std::move(r));
  }
}

ControllerReplicas::~ControllerReplicas() {
  for (auto& r : replicas_) stopReplica(*r);
}

void ControllerReplicas::log(const std::string& level, const std::string& message) {
  if (wiring_.log) wiring_.log(level, message);
}

void ControllerReplicas::start() {
  for (auto& r : replicas_) startReplica(*r);
  step();
}

void ControllerReplicas::startReplica(Replica& r) {
  r.up = true;
  r.overstay = false;
  r.window = false;
  r.overstay_until = -1;
  r.term = 0;
  const std::string key = etcdLeaderKey(kSimEtcdPrefix);
  r.lease_client = std::make_unique<ReplicaEtcdClient>(etcd_, key, fenced_writes_);
  r.lease_client->setCutOff(r.store_cut);
  LeaderLeaseOptions options;
  options.key = key;
  options.identity = r.name;
  options.ttl_ms = kLeaderTtlMs;
  options.margin_ms = kLeaderMarginMs;
  r.lease = std::make_unique<LeaderLease>(*r.lease_client, clock_, options);
  r.next_lease_ms = clock_.nowMs();
  r.retry_open_ms = clock_.nowMs();
  r.front.setController(nullptr);
  (void)openStore(r);
}

bool ControllerReplicas::openStore(Replica& r) {
  if (r.store) return true;
  if (clock_.nowMs() < r.retry_open_ms) return false;
  const std::string key = etcdLeaderKey(kSimEtcdPrefix);
  auto client = std::make_unique<ReplicaEtcdClient>(etcd_, key, fenced_writes_);
  client->setCutOff(r.store_cut);
  ReplicaEtcdClient* raw = client.get();
  EtcdStoreOptions options;
  options.prefix = kSimEtcdPrefix;
  Replica* self = &r;
  options.guard = [self, key]() -> Result<EtcdWriteGuard> {
    // A replica that overstays believes its term goes on: it sends its old
    // guard, and etcd's compare is what stops it.
    if (self->overstay && self->term > 0 && self->deposed.empty()) return EtcdWriteGuard{key, self->term};
    return self->lease->guard();
  };
  // What controller/main.cc does: a write refused for an older term ends
  // this one at once (here: the replica stops at the next step; until then
  // it takes no heartbeat, pushes nothing and runs no tick).
  options.on_deposed = [self](const std::string& why) {
    if (self->deposed.empty()) self->deposed = why;
    if (self->lease) self->lease->depose(why);
  };
  Result<std::unique_ptr<Store>> store = openEtcdStore(std::move(client), std::move(options));
  if (!store.isOk()) {
    if (!r.open_warned) {
      log("warn", "controller " + r.name + " cannot open its store: " + store.status().toString() +
                      "; it tries again every " + std::to_string(kRetryOpenMs) + " ms");
    }
    r.open_warned = true;
    r.retry_open_ms = clock_.nowMs() + kRetryOpenMs;
    return false;
  }
  r.store = std::move(store).value();
  r.store_client = raw;
  r.renewals_client = std::make_unique<ReplicaEtcdClient>(etcd_, key, fenced_writes_);
  r.renewals_client->setCutOff(r.store_cut);
  r.renewals = std::make_unique<LeaseRenewals>(*r.renewals_client, kSimEtcdPrefix);
  r.follower = std::make_unique<FollowerHeartbeats>(*r.renewals, *r.store, clock_, r.name);
  r.open_warned = false;
  return true;
}

void ControllerReplicas::stopReplica(Replica& r) {
  // A crash or an exit: no resign, the etcd lease (if any) runs out by itself.
  if (r.controller && r.acting_entry < history_.size()) history_[r.acting_entry].to_ms = clock_.nowMs();
  r.front.setController(nullptr);
  r.controller.reset();
  r.leader_renewals.reset();
  r.follower.reset();
  r.renewals.reset();
  r.renewals_client.reset();
  r.connector.reset();
  r.store.reset();
  r.store_client = nullptr;
  r.lease.reset();
  r.lease_client.reset();
  r.up = false;
  r.deposed.clear();
  r.overstay = false;
  r.window = false;
  r.overstay_until = -1;
  r.term = 0;
}

void ControllerReplicas::act(Replica& r) {
  r.connector = wiring_.make_connector ? wiring_.make_connector() : nullptr;
  r.controller = std::make_unique<Controller>(*r.store, clock_, r.connector.get(), simFenceAgents());
  if (wiring_.wire) wiring_.wire(r.name, *r.controller, r.front);
  r.term = r.lease->term();
  // What controller/replica.cc does: the controller sends nothing once its
  // term is over (controller/term_guard.h). An overstaying replica believes
  // it leads until etcd refuses one of its writes.
  Replica* self = &r;
  r.controller->actForTerm(r.term, [self] {
    return self->deposed.empty() &&
           (self->overstay || (self->lease && self->lease->isLeader() && self->lease->term() == self->term));
  });
  const std::string key = etcdLeaderKey(kSimEtcdPrefix);
  r.leader_renewals = std::make_unique<LeaderRenewals>(*r.renewals, [self, key]() -> Result<EtcdWriteGuard> {
    if (self->overstay && self->term > 0 && self->deposed.empty()) return EtcdWriteGuard{key, self->term};
    return self->lease->guard();
  });
  r.controller->setLeaseRenewals(r.leader_renewals.get());
  log("info", "controller " + r.name + " leads (term " + std::to_string(r.term) +
                  "): it recovers from the store and acts");
  Status recovered = r.controller->recover();
  if (!recovered.isOk()) {
    // The daemon exits; systemd starts it again (as a follower).
    log("error", "controller " + r.name + " won term " + std::to_string(r.term) +
                     " but cannot recover from the store: " + recovered.toString() + "; it restarts");
    stopReplica(r);
    startReplica(r);
    return;
  }
  ++terms_acted_;
  r.front.setController(r.controller.get());
  r.acting_entry = history_.size();
  history_.push_back(Acting{r.name, r.term, clock_.nowMs(), -1, false});
}

void ControllerReplicas::endTerm(Replica& r, const std::string& why) {
  log("warn", "controller " + r.name + " stops acting: " + why +
                  "; it exits (status 75) and starts again as a follower");
  stopReplica(r);
  startReplica(r);
}

void ControllerReplicas::step() {
  const Millis now = clock_.nowMs();
  // The newest term that acts: an overstaying replica's last tick counts from it.
  int64_t newest = 0;
  for (auto& r : replicas_) {
    if (r->controller && !r->overstay && r->term > newest) newest = r->term;
  }
  for (auto& rp : replicas_) {
    Replica& r = *rp;
    if (!r.up) continue;
    if (!openStore(r)) continue;
    if (r.controller && !r.deposed.empty()) {
      endTerm(r, "etcd refused its write of term " + std::to_string(r.term) + " (" + r.deposed + ")");
      continue;
    }
    if (r.overstay) {
      if (r.overstay_until < 0 && newest > r.term) {
        r.overstay_until = now + kTickMs;
        log("warn", "controller " + r.name + " still believes it leads term " + std::to_string(r.term) +
                        " while term " + std::to_string(newest) + " acts");
      }
      if (r.overstay_until >= 0 && now >= r.overstay_until) {
        r.overstay = false;
        endTerm(r, "its clock runs again: term " + std::to_string(r.term) + " ended long ago");
      }
      continue;
    }
    if (now >= r.next_lease_ms) r.next_lease_ms = r.lease->runOnce();
    const bool leads = r.lease->isLeader();
    if (r.controller && (!leads || r.lease->term() != r.term)) {
      endTerm(r, "its term " + std::to_string(r.term) + " is over (" +
                     (r.lease->losses() > 0 ? "leadership lost" : "not renewed in time") + ")");
      continue;
    }
    if (!r.controller && leads) act(r);
  }
}

void ControllerReplicas::tick() {
  int acting = 0;
  for (auto& r : replicas_) {
    if (!r->controller || (!r->deposed.empty() && !r->window) || r->front.stalled()) continue;
    ++acting;
    r->controller->runOnce();
  }
  if (acting > 1) ++overlapping_ticks_;
}

ControllerReplicas::Replica* ControllerReplicas::find(const std::string& name) {
  for (auto& r : replicas_) {
    if (r->name == name) return r.get();
  }
  return nullptr;
}

ControllerReplicas::Replica* ControllerReplicas::resolve(const std::string& target) {
  if (target != "leader") return find(target);
  Replica* best = nullptr;
  for (auto& r : replicas_) {
    if (r->controller && r->deposed.empty() && (best == nullptr || r->term > best->term)) best = r.get();
  }
  return best;
}

void ControllerReplicas::execute(const Command& c) {
  Replica* r = resolve(c.target);
  if (r == nullptr) {
    log("warn", c.text + ": no replica leads now: no effect");
    return;
  }
  const std::string who = c.target == "leader" ? " (" + r->name + ")" : "";
  if (c.arg == "kill" || c.arg == "restart") {
    if (!r->up && c.arg == "kill") {
      log("info", c.text + who + ": already down");
      return;
    }
    log("info", c.text + who);
    stopReplica(*r);
    if (c.arg == "restart") startReplica(*r);
    return;
  }
  if (c.arg == "start") {
    if (r->up) {
      log("info", c.text + who + ": already up");
      return;
    }
    log("info", c.text + who);
    startReplica(*r);
    return;
  }
  if (c.arg == "store-off" || c.arg == "store-on") {
    const bool cut = c.arg == "store-off";
    log("info", c.text + who + (r->store_cut == cut ? ": already " + c.arg.substr(6) : ""));
    r->store_cut = cut;
    if (r->lease_client) r->lease_client->setCutOff(cut);
    if (r->store_client) r->store_client->setCutOff(cut);
    if (r->renewals_client) r->renewals_client->setCutOff(cut);
    return;
  }
  if (c.arg == "overstay" || c.arg == "overstay-window") {
    if (!r->controller) {
      log("info", c.text + who + ": it does not act: no effect");
      return;
    }
    log("info", c.text + who + ": its lease thread and clock stop; it acts on as term " +
                    std::to_string(r->term));
    r->overstay = true;
    r->window = c.arg == "overstay-window";
    r->overstay_until = -1;
    history_[r->acting_entry].overstayed = true;
    return;
  }
}

int64_t ControllerReplicas::unforcedOverlaps() const {
  int64_t n = 0;
  for (size_t i = 0; i < history_.size(); ++i) {
    for (size_t j = i + 1; j < history_.size(); ++j) {
      const Acting& a = history_[i];
      const Acting& b = history_[j];
      if (a.overstayed || b.overstayed) continue;
      const Millis a_to = a.to_ms < 0 ? clock_.nowMs() + 1 : a.to_ms;
      const Millis b_to = b.to_ms < 0 ? clock_.nowMs() + 1 : b.to_ms;
      if (a.from_ms < b_to && b.from_ms < a_to) ++n;
    }
  }
  return n;
}

Controller* ControllerReplicas::leader() {
  Replica* r = resolve("leader");
  return r ? r->controller.get() : nullptr;
}

ControllerFront* ControllerReplicas::leaderFront() {
  Replica* r = resolve("leader");
  return r ? &r->front : nullptr;
}

std::string ControllerReplicas::leaderName() {
  Replica* r = resolve("leader");
  return r ? r->name : "";
}

ControllerReplicas::Replica* ControllerReplicas::route(const std::string& host) {
  const size_t n = replicas_.size();
  size_t& at = sticky_[host];
  for (size_t k = 0; k < n; ++k) {
    const size_t i = (at + k) % n;
    Replica& r = *replicas_[i];
    if (!r.up || !r.store) continue;  // refused: the next URL
    if (r.controller && (r.deposed.empty() || r.window)) {
      at = i;
      return &r;
    }
    // A follower: 307 to the leader it knows, followed once.
    Replica* l = r.lease ? find(r.lease->leaderIdentity()) : nullptr;
    if (l != nullptr && l->up && l->controller && l->deposed.empty()) {
      for (size_t j = 0; j < n; ++j) {
        if (replicas_[j].get() == l) at = j;
      }
      return l;
    }
    // 503 (no leader known) or a redirect that failed: the next URL.
  }
  return nullptr;
}

Controller* ControllerReplicas::controllerFor(const std::string& host) const {
  auto it = sticky_.find(host);
  if (it == sticky_.end()) return nullptr;
  Replica& r = *replicas_[it->second];
  return r.up && (r.deposed.empty() || r.window) ? r.controller.get() : nullptr;
}

bool ControllerReplicas::windowPush(const std::string& host, AssignmentSet& set) const {
  auto it = sticky_.find(host);
  if (it == sticky_.end()) return false;
  const Replica& r = *replicas_[it->second];
  if (!r.up || !r.window || r.deposed.empty() || !r.controller) return false;
  set = r.front.lastPublished(host);
  return true;
}

Result<AssignmentSet> ControllerReplicas::heartbeat(const Heartbeat& hb) {
  Replica* r = route(hb.host);
  if (r != nullptr) return r->front.heartbeat(hb);
  // No leader answered: the agent's link sends it again with ?any_replica=1
  // (HttpControllerLink), and the first replica of its list that is up
  // renews the lease itself (FollowerHeartbeats, docs/ha.md).
  const size_t n = replicas_.size();
  const size_t at = sticky_[hb.host];
  for (size_t k = 0; k < n; ++k) {
    Replica& f = *replicas_[(at + k) % n];
    if (!f.up || !f.store || !f.follower || f.controller) continue;
    Heartbeat renew = hb;
    renew.events.clear();
    Result<AssignmentSet> set = f.follower->handle(renew);
    if (set.isOk()) {
      sticky_[hb.host] = (at + k) % n;
      return set;
    }
    if (set.status().code() != Code::kUnavailable) return set;  // a fence intent: not renewed
  }
  return unavailable("no controller replica leads now (503 from every replica)");
}

Status ControllerReplicas::agentEvent(const AgentEvent& event) {
  Replica* r = route(event.host);
  if (r == nullptr) return unavailable("no controller replica leads now (503 from every replica)");
  return r->front.agentEvent(event);
}

ControllerReplicas::View ControllerReplicas::view() {
  View v;
  auto client = std::make_unique<FakeEtcdClient>(etcd_);
  EtcdStoreOptions options;
  options.prefix = kSimEtcdPrefix;
  Result<std::unique_ptr<Store>> store = openEtcdStore(std::move(client), std::move(options));
  if (!store.isOk()) return v;
  v.store = std::move(store).value();
  v.controller = std::make_unique<Controller>(*v.store, clock_);
  if (!v.controller->loadView().isOk()) v.controller.reset();
  return v;
}

}  // namespace tw::sim
