#include "sim/simulation.h"

#include <stdlib.h>

#include <algorithm>
#include <filesystem>

namespace tw::sim {

namespace fs = std::filesystem;

namespace {

// Probe failures of a VM whose service the scenario broke.
Status brokenService(const std::string& vm) {
  return unavailable("connection refused: the scenario broke the service of vm '" + vm + "'");
}

int64_t numberOr(const Json& j, const char* key, int64_t fallback) {
  if (!j.is_object() || !j.contains(key) || !j[key].is_number_integer()) return fallback;
  return j[key].get<int64_t>();
}

std::string textOr(const Json& j, const char* key) {
  if (!j.is_object() || !j.contains(key) || !j[key].is_string()) return "";
  return j[key].get<std::string>();
}

// The controller's incidents, in the simulator's shape:
// {"subject", "kind", "opened_ms", "closed_ms" (null while open), "steps": [{"step", "t_ms"}]}.
Json mapIncidents(const Json& src) {
  Json out = Json::array();
  if (!src.is_object() || !src.contains("incidents") || !src["incidents"].is_array()) return out;
  for (const Json& inc : src["incidents"]) {
    if (!inc.is_object()) continue;
    Json steps = Json::array();
    if (inc.contains("steps") && inc["steps"].is_array()) {
      for (const Json& s : inc["steps"]) {
        steps.push_back(Json{{"step", textOr(s, "step")}, {"t_ms", numberOr(s, "t_ms", 0)}});
      }
    }
    int64_t closed = numberOr(inc, "closed_ms", 0);
    const bool open =
        inc.contains("open") && inc["open"].is_boolean() ? inc["open"].get<bool>() : closed <= 0;
    out.push_back(Json{{"subject", textOr(inc, "subject")},
                       {"kind", textOr(inc, "kind")},
                       {"opened_ms", numberOr(inc, "opened_ms", 0)},
                       {"closed_ms", open ? Json(nullptr) : Json(closed)},
                       {"steps", steps}});
  }
  return out;
}

std::string joined(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

}  // namespace

std::string formatEvent(const SimEvent& e) {
  return std::to_string(e.t_ms) + " " + e.level + " " + e.component + " " + e.message;
}

Simulation::Simulation(const Scenario& scenario, EventSink sink)
    : scenario_(scenario), sink_(std::move(sink)) {
  if (scenario_.script.controllers > 0) {
    ReplicaWiring wiring;
    wiring.make_connector = [this]() -> std::unique_ptr<HostConnector> {
      return std::make_unique<SimHostConnector>(static_cast<SimWorld&>(*this));
    };
    wiring.wire = [this](const std::string& replica, Controller& controller, ControllerFront& front) {
      controller.setEventListener([this, replica](const EventRecord& e) {
        ++events_;
        // An event the store refused (a deposed term's write, etcd out of
        // reach) has no id: the log says so.
        sink_(SimEvent{e.t_ms, e.level, replica, e.id > 0 ? e.message : e.message + " [not stored]"});
      });
      ControllerFront* f = &front;
      controller.setAssignmentListener([this, f](const std::string& host, int64_t /*version*/) {
        f->published(host);
        auto it = hosts_.find(host);
        if (it != hosts_.end()) {
          it->second.push = true;
          wake(it->second);
        }
      });
    };
    wiring.log = [this](const std::string& level, const std::string& message) { log(level, message); };
    replicas_ = std::make_unique<ControllerReplicas>(scenario_.script.controllers, clock_, std::move(wiring));
  }
  for (const SimHostDef& def : scenario_.hosts) {
    const std::string name = def.spec.name;
    Host& h = hosts_[name];
    h.def = def;
    h.state = std::make_unique<MemoryAgentStateStore>();
    h.hv = std::make_unique<FakeHypervisor>(def.capacity);
    h.agent_hv = std::make_unique<SimHypervisor>(*h.hv, fail_starts_);
    ControllerEndpoint& endpoint =
        replicas_ ? static_cast<ControllerEndpoint&>(*replicas_) : static_cast<ControllerEndpoint&>(front_);
    h.link = std::make_unique<InProcessLink>(endpoint, [this, name] { return reachesController(name); });
    // FakeHypervisor delivers events from inside the call that caused them:
    // only record them here.
    h.hv->subscribe([this, name](const DomainEvent& e) {
      Host& host = hosts_.at(name);
      host.touched = true;
      if (e.kind == DomainEventKind::kStarted && e.detail != "migrated") ++run_serial_[e.vm];
      if (host.agent) {
        host.events.push_back(e);
        wake(host);
      }
    });
  }
  for (auto& [name, h] : hosts_) {
    h.index = host_by_index_.size();
    host_index_[name] = h.index;
    host_by_index_.push_back(&h);
  }
  wakes_ = WakeQueue(host_by_index_.size());
  reach_up_.assign(host_by_index_.size() * host_by_index_.size(), 0);
  reach_last_ms_.assign(reach_up_.size(), -1);
  rewirePeers();
}

Simulation::~Simulation() {
  for (auto& [name, h] : hosts_) stopAgent(h);
  stopController();
  replicas_.reset();
  if (!temp_dir_.empty()) {
    std::error_code ec;
    fs::remove_all(temp_dir_, ec);
  }
}

// ------------------------------------------------------------ the world ---

bool Simulation::libvirtAnswers(const std::string& host) {
  auto it = hosts_.find(host);
  return it != hosts_.end() && it->second.powered && reachesController(host);
}

bool Simulation::reachesController(const std::string& host) const {
  auto it = hosts_.find(host);
  return it != hosts_.end() && it->second.network && controller_network_ &&
         linkUp(host, kControllerNode) && linkUp(kControllerNode, host);
}

bool Simulation::fenceDeviceReachable(const std::string& /*host*/) { return controller_network_; }

void Simulation::destroyedByFence(const std::string& host, int vms) {
  auto it = hosts_.find(host);
  if (it == hosts_.end() || vms <= 0 || it->second.cut_off) return;
  collateral("fencing host " + host + " through libvirt destroyed " + std::to_string(vms) +
                 " running VMs, but " + host + " is not cut off (it reaches " +
                 std::to_string(it->second.reached) + " of its " +
                 std::to_string(hosts_.size() - 1) + " peers)",
             vms);
}

void Simulation::collateral(const std::string& message, int vms) {
  collateral_ += vms;
  log("error", "collateral: " + message);
}

FakeHypervisor* Simulation::hypervisorOf(const std::string& host) {
  auto it = hosts_.find(host);
  return it == hosts_.end() ? nullptr : it->second.hv.get();
}

void Simulation::powerOffByFence(const std::string& host) {
  auto it = hosts_.find(host);
  if (it == hosts_.end() || !it->second.powered) return;
  log("info", "host " + host + " powered off by its fence agent");
  const int running = it->second.hv->runningCount();
  if (running > 0 && !it->second.cut_off) {
    collateral("fence agent of host " + host + " powered it off with " + std::to_string(running) +
                   " running VMs, but " + host + " is not cut off (it reaches " +
                   std::to_string(it->second.reached) + " of its " +
                   std::to_string(hosts_.size() - 1) + " peers)",
               running);
  }
  powerOff(it->second);
}

void Simulation::powerOff(Host& h) {
  h.hv->powerOff();
  h.powered = false;
  h.wd_armed = false;
  h.reboot_at = 0;
  h.touched = true;
  stopAgent(h);
  wake(h);
}

void Simulation::rewirePeers() {
  for (auto& [a_name, a] : hosts_) {
    for (auto& [b_name, b] : hosts_) {
      if (a_name == b_name) continue;
      const bool up = a.network && b.network && linkUp(a_name, b_name) && linkUp(b_name, a_name);
      a.hv->connectPeer(simUri(b_name), up ? b.hv.get() : nullptr);
    }
  }
}

Status Simulation::startController() {
  Result<std::unique_ptr<Store>> store = Store::open(db_path_);
  if (!store) return store.status().withContext("opening " + db_path_);
  store_ = std::move(store).value();
  connector_ = std::make_unique<SimHostConnector>(static_cast<SimWorld&>(*this));
  controller_ = std::make_unique<Controller>(*store_, clock_, connector_.get(), simFenceAgents());
  controller_->setEventListener([this](const EventRecord& e) {
    ++events_;
    sink_(SimEvent{e.t_ms, e.level, "controller", e.message});
  });
  front_.setController(controller_.get());
  controller_->setAssignmentListener([this](const std::string& host, int64_t /*version*/) {
    front_.published(host);
    auto it = hosts_.find(host);
    if (it != hosts_.end()) {
      it->second.push = true;
      wake(it->second);
    }
  });
  Status recovered = controller_->recover();
  if (!recovered.isOk()) {
    log("error", "the controller cannot recover: " + recovered.toString());
    stopController();
  }
  return Status::ok();
}

void Simulation::stopController() {
  front_.setController(nullptr);
  controller_.reset();
  connector_.reset();
  store_.reset();
}

namespace {

// A host's view of its peers in the simulator: the simulation's record of
// which agent reached which (Simulation::updateReach), as PeerView says.
class SimPeerView final : public PeerView {
 public:
  SimPeerView(const Simulation& sim, std::string self)
      : sim_(sim), self_(std::move(self)), self_index_(sim.hostIndex(self_)) {}
  void setPeers(const std::vector<PeerInfo>& peers, Millis timeout_ms) override {
    if (!watching_) {
      watching_ = true;
      watch_start_ = sim_.nowMs();
    }
    timeout_ms_ = timeout_ms;
    // Every answer carries the list: names are looked up only when it changed.
    bool same = peers.size() == peers_.size();
    for (size_t i = 0; same && i < peers.size(); ++i) same = peers[i].host == peers_[i];
    if (same) return;
    peers_.clear();
    peer_index_.clear();
    peers_known_ = true;
    peer_pos_.clear();
    for (const auto& p : peers) {
      peers_.push_back(p.host);
      peer_index_.push_back(sim_.hostIndex(p.host));
      const size_t index = peer_index_.back();
      if (index == Simulation::kNoHost || index == self_index_) {
        peers_known_ = false;
        continue;
      }
      if (index >= peer_pos_.size()) peer_pos_.resize(index + 1, -1);
      peer_pos_[index] = static_cast<int>(peers_.size() - 1);  // the last of duplicates
    }
  }
  std::set<std::string> reachable(Millis now) const override {
    std::set<std::string> out;
    for (size_t i = 0; i < peers_.size(); ++i) {
      Millis mine = sim_.lastReach(self_index_, peer_index_[i]);
      Millis theirs = sim_.lastReach(peer_index_[i], self_index_);
      if (mine >= 0 && theirs >= 0 && now - mine < timeout_ms_ && now - theirs < timeout_ms_) {
        out.insert(peers_[i]);
      }
    }
    return out;
  }
  std::map<std::string, Millis> unreachable(Millis now) const override {
    // This host reaches every other one (the common case): each peer was
    // reached at the last update, so none is late (issue #16: the loop
    // below was 5 % of the 1,000-host hour, on every heartbeat).
    if (peers_known_ && sim_.reachesAll(self_index_) && now - sim_.reachUpdatedMs() < timeout_ms_) {
      return {};
    }
    std::map<std::string, Millis> out;
    if (peers_known_ && now - sim_.reachUpdatedMs() < timeout_ms_) {
      // Only the hosts not reached at the last update may be late (a host
      // reached then is not): O(those), not O(peers).
      for (size_t host : sim_.notReachedFrom(self_index_)) {
        const int i = host < peer_pos_.size() ? peer_pos_[host] : -1;
        if (i < 0) continue;
        Millis since = std::max(sim_.lastReach(self_index_, host), watch_start_);
        if (now - since >= timeout_ms_) out[peers_[static_cast<size_t>(i)]] = now - since;
      }
      return out;
    }
    for (size_t i = 0; i < peers_.size(); ++i) {
      Millis since = std::max(sim_.lastReach(self_index_, peer_index_[i]), watch_start_);
      if (now - since >= timeout_ms_) out[peers_[i]] = now - since;
    }
    return out;
  }

 private:
  const Simulation& sim_;
  std::string self_;
  size_t self_index_;
  std::vector<std::string> peers_;
  std::vector<size_t> peer_index_;
  bool peers_known_ = true;  // every peer is another simulated host
  std::vector<int> peer_pos_;  // host index -> its place in peers_ (-1: no peer)
  Millis timeout_ms_ = 3000;
  bool watching_ = false;
  Millis watch_start_ = 0;
};

// A simulated host's watchdog: the host's record (armed, last pet) is the
// device; the Simulation resets the host when it fires (checkWatchdogs).
class SimWatchdog final : public HostWatchdog {
 public:
  SimWatchdog(const Clock& clock, bool& armed, Millis& last_pet, Millis timeout_ms)
      : clock_(clock), armed_(armed), last_pet_(last_pet), timeout_ms_(timeout_ms) {}
  Status open() override {
    armed_ = true;
    last_pet_ = clock_.nowMs();
    return Status::ok();
  }
  Status pet() override {
    last_pet_ = clock_.nowMs();
    return Status::ok();
  }
  void close(bool disarm) override {
    if (disarm) armed_ = false;
  }
  Millis timeoutMs() const override { return timeout_ms_; }
  std::string describe() const override { return "simulated, " + formatDuration(timeout_ms_); }

 private:
  const Clock& clock_;
  bool& armed_;
  Millis& last_pet_;
  Millis timeout_ms_;
};

}  // namespace

Millis Simulation::lastReach(const std::string& from, const std::string& to) const {
  return lastReach(hostIndex(from), hostIndex(to));
}

size_t Simulation::hostIndex(const std::string& host) const {
  auto it = host_index_.find(host);
  return it == host_index_.end() ? kNoHost : it->second;
}

const std::vector<size_t>& Simulation::notReachedFrom(size_t from) const {
  static const std::vector<size_t> kNone;
  return from < not_reached_.size() ? not_reached_[from] : kNone;
}

bool Simulation::reachesAll(size_t from) const {
  return from < host_by_index_.size() &&
         static_cast<size_t>(host_by_index_[from]->reached) + 1 == host_by_index_.size();
}

Millis Simulation::lastReach(size_t from, size_t to) const {
  if (from == kNoHost || to == kNoHost) return -1;
  const size_t k = from * host_by_index_.size() + to;
  return reach_up_[k] ? reach_now_ms_ : reach_last_ms_[k];
}

bool Simulation::linkUp(const std::string& from, const std::string& to) const {
  return cut_links_.empty() || cut_links_.count({from, to}) == 0;
}

void Simulation::updateReach(Millis now) {
  const size_t n = host_by_index_.size();
  const size_t peers = n == 0 ? 0 : n - 1;
  std::vector<char> key;
  key.reserve(n * 3 + sizeof cut_links_gen_);
  for (const Host* h : host_by_index_) {
    key.push_back(h->agent != nullptr);
    key.push_back(h->powered);
    key.push_back(h->network);
  }
  for (size_t i = 0; i < sizeof cut_links_gen_; ++i) {
    key.push_back(static_cast<char>((cut_links_gen_ >> (8 * i)) & 0xff));
  }
  if (key != reach_key_) {
    wakes_.wakeAll();  // a peer check's answer may change a lease judgement
    // Who reaches whom changed: pairs that go down keep the last update at
    // which they were up (reach_now_ms_, before this one).
    reach_key_ = std::move(key);
    not_reached_.assign(n, {});
    for (size_t a = 0; a < n; ++a) {
      Host& ha = *host_by_index_[a];
      const std::string& a_name = ha.def.spec.name;
      ha.reached = 0;
      const bool a_on = ha.agent && ha.powered && ha.network;
      for (size_t b = 0; b < n; ++b) {
        const Host& hb = *host_by_index_[b];
        const std::string& b_name = hb.def.spec.name;
        const bool up = a_on && a != b && hb.agent && hb.powered && hb.network &&
                        linkUp(a_name, b_name) && linkUp(b_name, a_name);
        const size_t k = a * n + b;
        if (reach_up_[k] && !up) reach_last_ms_[k] = reach_now_ms_;
        reach_up_[k] = up;
        if (up) ++ha.reached;
        if (!up && a != b) not_reached_[a].push_back(b);
      }
    }
  }
  reach_now_ms_ = now;
  for (Host* h : host_by_index_) {
    h->cut_off = !h->powered || !h->network || isolated(peers, static_cast<size_t>(h->reached));
  }
}

void Simulation::startAgent(Host& h) {
  const std::string name = h.def.spec.name;
  ++h.generation;
  h.ports = std::make_unique<PortMap>(20000, 1000);
  h.prober = std::make_unique<ScheduledHealthProber>(
      clock_, *h.ports,
      [this, name](const std::string& vm, const HealthCheckSpec& /*check*/, int /*host_port*/) {
        return probe(name, vm);
      });
  Host* host = &h;
  h.prober->setOnVerdictChange([this, host] {
    host->wake = true;
    wake(*host);
  });
  AgentOptions options;
  options.host = name;
  options.agent_id = name + "-" + std::to_string(h.generation);
  options.heartbeat_interval_ms = scenario_.settings.heartbeat_interval_ms;
  options.initial_lease_ms = scenario_.settings.lease_ms;
  options.watchdog_ms = watchdogMs();
  options.boot_id = name + "#" + std::to_string(h.boot);
  h.events.clear();
  h.agent =
      std::make_unique<Agent>(options, *h.agent_hv, *h.link, clock_, h.prober.get(), h.ports.get());
  h.agent->setStateStore(h.state.get());
  h.peers = std::make_unique<SimPeerView>(*this, name);
  h.agent->setPeerView(h.peers.get());
  // Heartbeats on "a thread of their own", as in the daemon: beat().
  h.agent->setExternalHeartbeats(true);
  h.agent->setWakeCallback([this, host] {
    host->wake = true;
    wake(*host);
  });
  h.lease_seen = LeaseState::kNone;
  h.stalled_until = h.stall_cmd_until = 0;
  Status started = h.agent->start();
  // An agent whose predecessor self-fenced (kept state) starts fenced: that
  // judgement, and whether the host was cut off then, are the predecessor's
  // (recorded when it made it), not this start's.
  if (started.isOk()) h.lease_seen = h.agent->leaseState();
  (void)h.agent_hv->takeCalls();
  if (!started.isOk()) {
    log("warn", "agent " + options.agent_id + " cannot start: " + started.toString() +
                    "; trying again in 1s");
    stopAgent(h);
    h.agent_retry_ms = clock_.nowMs() + 1000;
    return;
  }
  // The daemon opens its watchdog once the agent started, and pets it from
  // a thread of its own, every W/5 (here: in the heartbeat tick, see beat()).
  h.watchdog = std::make_unique<SimWatchdog>(clock_, h.wd_armed, h.wd_last_pet, watchdogMs());
  (void)h.watchdog->open();
  Agent* agent = h.agent.get();
  h.next_pet_tick = 0;
  h.petter = std::make_unique<WatchdogPetter>(
      *h.watchdog, clock_, [agent](Millis now) { return agent->watchdogEntitled(now); });
  h.push = true;  // its long poll fetches the current set at once
  h.touched = true;
  wake(h);
}

void Simulation::stopAgent(Host& h) {
  h.stalled_until = h.stall_cmd_until = 0;  // the stall was the process's
  // Gone without a clean close: the watchdog keeps counting.
  h.petter.reset();
  h.watchdog.reset();
  h.agent.reset();
  h.peers.reset();
  h.prober.reset();
  h.ports.reset();
  h.events.clear();
  h.push = false;
  h.wake = false;
}

void Simulation::ensureAgent(Host& h) {
  if (!h.agent && h.powered && h.agent_enabled && clock_.nowMs() >= h.agent_retry_ms) {
    startAgent(h);
  }
}

Status Simulation::probe(const std::string& host, const std::string& vm) {
  auto it = faults_.find(vm);
  if (it == faults_.end()) return Status::ok();
  const HealthFault& f = it->second;
  if (f.always) return brokenService(vm);
  auto serial = run_serial_.find(vm);
  const int64_t now_serial = serial == run_serial_.end() ? 0 : serial->second;
  if (f.host == host && f.run_serial == now_serial) return brokenService(vm);
  return Status::ok();
}

// ------------------------------------------------------------- the loop ---

Status Simulation::run() {
  if (built_) return failedPrecondition("a Simulation runs once");
  built_ = true;
  std::error_code ec;
  std::string pattern = (fs::temp_directory_path(ec) / "tierwarden-sim-XXXXXX").string();
  if (mkdtemp(pattern.data()) == nullptr) {
    return unavailable("cannot create a temp dir for the controller's SQLite file");
  }
  temp_dir_ = pattern;
  db_path_ = (fs::path(temp_dir_) / "controller.db").string();
  clock_.set(0);
  if (replicas_) {
    // Started by the script's first command, `controllers N` (at 0s).
  } else {
    TW_RETURN_IF_ERROR(startController());
    if (!controller_) return internalError("the controller did not start");
  }

  const std::vector<Command>& commands = scenario_.script.commands;
  size_t next = 0;
  for (Millis t = 0;; t += kStepMs) {
    clock_.set(t);
    bool end = false;
    while (next < commands.size() && commands[next].t_ms == t) {
      const Command& c = commands[next++];
      if (c.op == Op::kEnd) {
        log("info", "end");
        end = true;
      } else {
        execute(c);
      }
    }
    step(t);
    if (end || next >= commands.size()) break;
  }
  return Status::ok();
}

void Simulation::step(Millis t) {
  ++steps_;
  endStalls(t);
  // Replicas: which controller a host's agent talks to may change at any
  // step (an election): every host is looked at, as before the wake queue.
  if (replicas_) {
    replicas_->step();
    wakes_.wakeAll();
  }
  checkWatchdogs(t);
  for (auto& [name, h] : hosts_) ensureAgent(h);
  updateReach(t);
  wakes_.advance(t);
  settlePass();
  if (controller_ && !front_.stalled() && t % kControllerTickMs == 0) controller_->runOnce();
  if (replicas_ && t % kControllerTickMs == 0) replicas_->tick();
  for (int round = 0; round < kSettleRounds; ++round) {
    if (!settlePass()) break;
  }
  countCopies();
}

bool Simulation::settlePass() {
  const Millis now = clock_.nowMs();
  bool any = false;
  for (size_t i = wakes_.nextReady(0); i != WakeQueue::kNone; i = wakes_.nextReady(i + 1)) {
    Host& h = *host_by_index_[i];
    any |= settleHost(h);
    wakes_.schedule(i, nextWake(h), now);
  }
  return any;
}

Millis Simulation::nextWake(const Host& h) const {
  if (!h.agent) return WakeQueue::kNever;  // ensureAgent() and startAgent() wake it
  const Millis now = clock_.nowMs();
  // Passes ran out with work left, or a push waits for a way to the controller.
  if (!h.settled || h.push) return now;
  // beat(): a heartbeat (a changed report was sent by the last beat, which
  // came after the last loop pass), the lease judged once it runs out (every
  // step while held: the peers reached decide), the watchdog petter's tick.
  Millis at = std::min(h.next_beat, h.next_pet_tick);
  switch (h.agent->leaseState()) {
    case LeaseState::kExpired:
      break;
    case LeaseState::kHeld:
      return now + 1;
    default:
      at = std::min(at, h.agent->leaseUntilMs());
  }
  // hasWork(): blocked until the stall ends; else events and verdicts (they
  // wake the host), the loop's own wake and the next health probe.
  if (now < h.stalled_until) return std::min(at, h.stalled_until);
  if (!h.events.empty() || h.wake) return now;
  return std::min({at, h.agent->nextWakeMs(), h.prober->nextDueMs()});
}

void Simulation::endStalls(Millis t) {
  if (front_.stalled() && t >= front_.stalledUntil()) {
    wakes_.wakeAll();
    log("info", "controller: its loop runs again; it takes " + std::to_string(front_.queued()) +
                    " queued heartbeats, events and commands first");
    front_.endStall();
  }
  for (auto& [name, h] : hosts_) {
    if (h.stall_cmd_until > 0 && t >= h.stall_cmd_until) {
      h.stall_cmd_until = 0;
      wake(h);
      log("info", "agent " + name + ": its loop runs again");
    }
  }
}

bool Simulation::settleHost(Host& h) {
  bool ran = false;
  h.settled = false;
  for (int pass = 0; pass < kSettleRounds; ++pass) {
    beat(h);
    if (!hasWork(h) || !stepHost(h)) {
      h.settled = true;
      break;
    }
    ran = true;
  }
  return ran;
}

void Simulation::beat(Host& h) {
  if (!h.agent) return;
  h.next_beat = h.agent->heartbeatTick();
  observeLease(h);
  // The daemon's pet thread ticks every W/5 (WatchdogPetter::tick()).
  if (clock_.nowMs() < h.next_pet_tick) return;
  const bool petting = h.petter->petting();
  h.next_pet_tick = h.petter->tick();
  if (petting && !h.petter->petting()) {
    h.pets_stopped_cut_off = h.cut_off;
    h.pets_stopped_reached = h.reached;
  }
}

void Simulation::checkWatchdogs(Millis now) {
  for (auto& [name, h] : hosts_) {
    if (!h.powered && h.reboot_at > 0 && now >= h.reboot_at) {
      log("info", "host " + name + " boots again after its watchdog reset");
      h.hv->powerOn();
      h.powered = true;
      h.agent_enabled = true;  // the agent starts at boot
      h.agent_retry_ms = 0;
      h.reboot_at = 0;
      h.touched = true;
      wake(h);
      continue;
    }
    if (h.powered && h.wd_armed && now - h.wd_last_pet >= watchdogMs()) resetByWatchdog(h, now);
  }
}

void Simulation::resetByWatchdog(Host& h, Millis now) {
  const std::string& name = h.def.spec.name;
  const int running = h.hv->runningCount();
  const bool dead_agent = !h.agent;
  ++watchdog_resets_;
  if (dead_agent) ++watchdog_resets_dead_;
  log("warn", "host " + name + " reset by its watchdog: no pet for " +
                  formatDuration(now - h.wd_last_pet) +
                  (dead_agent ? " (its agent is not running)"
                              : " (its agent stopped petting: a self-fence is due)") +
                  "; " + std::to_string(running) + " running VMs gone; it boots again in " +
                  formatDuration(kRebootMs));
  if (!dead_agent && running > 0 && !h.pets_stopped_cut_off) {
    collateral("host " + name + "'s watchdog reset it with " + std::to_string(running) +
                   " running VMs, but " + name +
                   " was not cut off when its agent stopped petting (it reached " +
                   std::to_string(h.pets_stopped_reached) + " of its " +
                   std::to_string(hosts_.size() - 1) + " peers)",
               running);
  }
  powerOff(h);
  ++h.boot;
  h.reboot_at = now + kRebootMs;
}

void Simulation::observeLease(Host& h) {
  const LeaseState state = h.agent->leaseState();
  if (state == h.lease_seen) return;
  if (h.lease_seen == LeaseState::kValid) ++lease_lapses_;
  if (state == LeaseState::kExpired) {
    h.fence_cut_off = h.cut_off;
    h.fence_reached = h.reached;
  }
  h.lease_seen = state;
}

bool Simulation::hasWork(const Host& h) const {
  if (!h.agent) return false;
  const Millis now = clock_.nowMs();
  if (now < h.stalled_until) return false;
  return !h.events.empty() ||
         (h.push && agentController(h.def.spec.name) != nullptr &&
          reachesController(h.def.spec.name)) ||
         h.wake || h.agent->nextWakeMs() <= now || h.prober->nextDueMs() <= now;
}

bool Simulation::stepHost(Host& h) {
  if (!h.agent) {
    h.events.clear();
    return false;
  }
  const Millis now = clock_.nowMs();
  if (now < h.stalled_until) return false;  // blocked: events and pushes wait
  bool handed = false;
  if (!h.events.empty()) {
    std::vector<DomainEvent> events;
    events.swap(h.events);
    for (const DomainEvent& e : events) h.agent->onDomainEvent(e);
    handed = true;
  }
  Controller* pusher = agentController(h.def.spec.name);
  if (h.push && pusher != nullptr && reachesController(h.def.spec.name)) {
    h.push = false;
    AssignmentSet set;
    if (!replicas_ || !replicas_->windowPush(h.def.spec.name, set)) set = pusher->assignmentsFor(h.def.spec.name);
    if (set.version > 0) {
      h.agent->onAssignments(set);
      handed = true;
    }
  }
  if (h.prober->nextDueMs() <= now) h.prober->runDue();
  if (!handed && !h.wake && h.agent->nextWakeMs() > now) return false;
  h.wake = false;
  // A self-fence destroys in this pass only when the lease is not valid now.
  std::vector<std::string> before;
  const bool may_fence =
      h.agent->leaseState() != LeaseState::kValid || h.agent->leaseUntilMs() <= now;
  if (may_fence) {
    Result<std::vector<DomainStatus>> listed = h.hv->listManaged();
    if (listed) {
      for (const DomainStatus& d : *listed) {
        if (isActive(d.state)) before.push_back(d.meta.vm);
      }
    }
  }
  (void)h.agent_hv->takeCalls();
  h.agent->runOnce();
  const int64_t calls = h.agent_hv->takeCalls();
  observeLease(h);
  if (may_fence && h.agent->leaseState() == LeaseState::kExpired && !h.fence_cut_off) {
    std::vector<std::string> destroyed;
    for (const auto& vm : before) {
      if (!h.hv->isRunning(vm)) destroyed.push_back(vm);
    }
    if (!destroyed.empty()) {
      collateral("host " + h.def.spec.name + "'s self-fence destroyed " + joined(destroyed) +
                     ", but " + h.def.spec.name +
                     " was not cut off when its agent judged itself isolated (it reached " +
                     std::to_string(h.fence_reached) + " of its " +
                     std::to_string(hosts_.size() - 1) + " peers)",
                 static_cast<int>(destroyed.size()));
    }
  }
  // Migrations run on a worker thread with its own connection in the daemon:
  // they do not block the loop.
  h.agent->runMigrations();
  (void)h.agent_hv->takeCalls();
  if (h.libvirt_slow_ms > 0 && calls > 0) h.stalled_until = now + calls * h.libvirt_slow_ms;
  h.touched = true;
  return true;
}

bool Simulation::runsSame(const Host& h) const {
  // As countCopies() counts: a host whose libvirt does not answer (off,
  // hung) runs nothing it can list.
  if (!h.powered || !h.hv->ping().isOk()) return h.running.empty();
  return h.hv->runsExactly(h.running);
}

void Simulation::countCopies() {
  // All losses first, then all gains: a VM that moved between two hosts in
  // this step is never counted twice.
  std::vector<std::pair<Host*, std::set<std::string>>> now_running;
  for (auto& [name, h] : hosts_) {
    if (!h.touched) continue;
    h.touched = false;
    if (runsSame(h)) continue;  // most passes change nothing (issue #16)
    std::set<std::string> running;
    if (h.powered) {
      Result<std::vector<DomainStatus>> listed = h.hv->listManaged();
      if (listed) {
        for (const DomainStatus& d : *listed) {
          if (isActive(d.state)) running.insert(d.meta.vm);
        }
      }
    }
    for (const auto& vm : h.running) {
      if (running.count(vm) == 0) --copies_[vm];
    }
    now_running.emplace_back(&h, std::move(running));
  }
  std::set<std::string> grew;
  for (auto& [h, running] : now_running) {
    for (const auto& vm : running) {
      if (h->running.count(vm) == 0) {
        ++copies_[vm];
        grew.insert(vm);
      }
    }
    h->running = std::move(running);
  }
  for (const auto& vm : grew) {
    const int n = copies_[vm];
    if (n > max_copies_) max_copies_ = n;
    if (n >= 2) {
      const std::vector<std::string> where = hostsRunning(vm);
      ++double_copies_;
      log("error", "vm '" + vm + "' runs on " + std::to_string(n) + " hosts at once: " +
                       joined(where));
    }
  }
}

std::vector<std::string> Simulation::hostsRunning(const std::string& vm) const {
  std::vector<std::string> out;
  for (const auto& [name, h] : hosts_) {
    if (h.powered && h.hv->isRunning(vm)) out.push_back(name);
  }
  return out;
}

// ------------------------------------------------------------- commands ---

void Simulation::log(const std::string& level, const std::string& message) {
  sink_(SimEvent{clock_.nowMs(), level, "sim", message});
}

void Simulation::logResult(const Command& c, const Status& s) {
  if (s.isOk()) {
    log("info", c.text + ": ok");
  } else {
    log("warn", c.text + ": " + codeName(s.code()) + ": " + s.toString());
  }
}

void Simulation::execute(const Command& c) {
  wakes_.wakeAll();  // a command may reach any host's agent (links, faults, stalls)
  auto host = hosts_.find(c.target);
  const bool is_host_command = c.op == Op::kHostPower || c.op == Op::kHostNetwork ||
                               c.op == Op::kHostFailMigrations || c.op == Op::kAgent ||
                               c.op == Op::kHostLibvirtSlow;
  if (is_host_command && host == hosts_.end()) {
    log("warn", c.text + ": no such host");  // parseScript checks names: not reached
    return;
  }
  switch (c.op) {
    case Op::kApply: {
      if (!operatorController()) {
        log("warn", c.text + (replicas_ ? ": no controller replica leads now" : ": the controller is down"));
        return;
      }
      if (!operatorFront()->run([this, &c](Controller& ctl) { applyNow(c, ctl); })) {
        log("info", c.text + ": queued (the controller's loop is stalled)");
      }
      return;
    }
    case Op::kHostPower: {
      Host& h = host->second;
      h.reboot_at = 0;  // the script decides: a reset host's pending reboot is off
      if ((c.arg == "on") == h.powered) {
        log("info", c.text + ": already " + c.arg);
        return;
      }
      log("info", c.text);
      if (c.arg == "off") {
        powerOff(h);
      } else {
        h.hv->powerOn();
        h.powered = true;
        h.agent_enabled = true;  // the agent starts at boot
        h.agent_retry_ms = 0;
        h.touched = true;
      }
      return;
    }
    case Op::kHostNetwork: {
      Host& h = host->second;
      if ((c.arg == "on") == h.network) {
        log("info", c.text + ": already " + c.arg);
        return;
      }
      log("info", c.text);
      h.network = c.arg == "on";
      rewirePeers();
      return;
    }
    case Op::kHostFailMigrations:
      log("info", c.text);
      host->second.hv->failMigrations(c.count);
      return;
    case Op::kHostLibvirtSlow:
      log("info", c.text);
      host->second.libvirt_slow_ms = c.duration;
      return;
    case Op::kLink: {
      const std::pair<std::string, std::string> link{c.target, c.other};
      if ((c.arg == "on") == (cut_links_.count(link) == 0)) {
        log("info", c.text + ": already " + c.arg);
        return;
      }
      log("info", c.text);
      if (c.arg == "off") {
        cut_links_.insert(link);
        ++cut_links_gen_;
      } else {
        cut_links_.erase(link);
        ++cut_links_gen_;
      }
      rewirePeers();
      return;
    }
    case Op::kControllerNetwork:
      if ((c.arg == "on") == controller_network_) {
        log("info", c.text + ": already " + c.arg);
        return;
      }
      log("info", c.text);
      controller_network_ = c.arg == "on";
      return;
    case Op::kAgent: {
      Host& h = host->second;
      if (c.arg == "stall") {
        if (!h.agent) {
          log("info", c.text + ": not running: no effect");
          return;
        }
        log("info", c.text);
        const Millis until = clock_.nowMs() + c.duration;
        h.stalled_until = std::max(h.stalled_until, until);
        h.stall_cmd_until = std::max(h.stall_cmd_until, until);
        return;
      }
      if (c.arg == "stop") {
        h.agent_enabled = false;
        if (!h.agent) {
          log("info", c.text + ": not running");
          return;
        }
        log("info", c.text);
        stopAgent(h);
        return;
      }
      h.agent_enabled = true;
      h.agent_retry_ms = 0;
      if (!h.powered) {
        log("warn", c.text + ": the host is powered off");
      } else if (h.agent) {
        log("info", c.text + ": already running");
      } else {
        log("info", c.text);
        startAgent(h);
      }
      return;
    }
    case Op::kVmCrash: {
      std::vector<std::string> where = hostsRunning(c.target);
      if (where.empty()) {
        log("warn", c.text + ": not running anywhere");
        return;
      }
      log("info", c.text + " (on " + joined(where) + ")");
      for (const auto& name : where) hosts_.at(name).hv->crash(c.target);
      return;
    }
    case Op::kVmHealth: {
      std::string note;
      if (Controller* ctl = operatorController()) {
        const VmRecord* vm = ctl->vm(c.target);
        const TierSpec* tier = vm ? ctl->policy().findTier(vm->tier) : nullptr;
        if (tier && tier->health.kind == HealthKind::kNone) {
          note = " (tier '" + tier->name + "' has no health check: no effect)";
        }
      }
      if (c.arg == "ok") {
        faults_.erase(c.target);
      } else if (c.arg == "fail-always") {
        faults_[c.target] = HealthFault{true, "", 0};
      } else {
        std::vector<std::string> where = hostsRunning(c.target);
        if (where.empty()) {
          log("warn", c.text + ": not running anywhere: no effect");
          return;
        }
        faults_[c.target] = HealthFault{false, where.front(), run_serial_[c.target]};
        note += " (its run on " + where.front() + ")";
      }
      log("info", c.text + note);
      return;
    }
    case Op::kVmFailStart:
      log("info", c.text);
      fail_starts_[c.target] = c.count;
      return;
    case Op::kController:
      if (c.arg == "stall") {
        if (!controller_) {
          log("info", c.text + ": the controller is down: no effect");
          return;
        }
        log("info", c.text);
        front_.stall(clock_.nowMs() + c.duration);
        return;
      }
      if (c.arg == "stop" || c.arg == "restart") {
        if (!controller_ && c.arg == "stop") {
          log("info", c.text + ": already down");
          return;
        }
        stopController();
      } else if (controller_) {
        log("info", c.text + ": already up");
        return;
      }
      log("info", c.text);
      if (c.arg != "stop") {
        Status s = startController();
        if (!s.isOk()) log("error", c.text + ": " + s.toString());
      }
      return;
    case Op::kDrain:
    case Op::kUndrain:
    case Op::kMigrate:
    case Op::kReset:
    case Op::kRestart: {
      if (!operatorController()) {
        logResult(c, unavailable(replicas_ ? "no controller replica leads now" : "the controller is down"));
        return;
      }
      if (!operatorFront()->run([this, &c](Controller& ctl) { operatorNow(c, ctl); })) {
        log("info", c.text + ": queued (the controller's loop is stalled)");
      }
      return;
    }
    case Op::kControllers:
      log("info", c.text + ": replicas c1..c" + std::to_string(c.count) + " on an in-memory etcd");
      if (replicas_) replicas_->start();
      return;
    case Op::kReplica:
      if (replicas_) replicas_->execute(c);
      return;
    case Op::kEnd:
      return;
  }
}

Controller* Simulation::agentController(const std::string& host) const {
  if (replicas_) return replicas_->controllerFor(host);
  return front_.controller();
}

Controller* Simulation::operatorController() {
  if (replicas_) return replicas_->leader();
  return controller_.get();
}

ControllerFront* Simulation::operatorFront() {
  if (replicas_) return replicas_->leaderFront();
  return &front_;
}

void Simulation::applyNow(const Command& c, Controller& controller) {
  std::vector<PolicyFile> files;
  if (!hosts_applied_) files.push_back(scenario_.hosts_policy);
  for (const auto& path : c.files) files.push_back(scenario_.files.at(path));
  Result<ApplyResult> r = controller.applyPolicy(files, /*dry_run=*/false);
  if (!r) {
    log("warn", c.text + ": refused: " + r.status().toString());
    return;
  }
  hosts_applied_ = true;
  log("info", c.text + ": " + (r->applied ? "applied" : "unchanged") + ", policy version " +
                  std::to_string(r->version));
  for (const auto& w : r->warnings) log("warn", c.text + ": " + w);
}

void Simulation::operatorNow(const Command& c, Controller& controller) {
  Status s;
  if (c.op == Op::kDrain) s = controller.drainHost(c.target);
  if (c.op == Op::kUndrain) s = controller.undrainHost(c.target);
  if (c.op == Op::kMigrate) s = controller.migrateVm(c.target, c.arg);
  if (c.op == Op::kReset) s = controller.resetVm(c.target);
  if (c.op == Op::kRestart) s = controller.restartVm(c.target);
  logResult(c, s);
}

// ---------------------------------------------------------------- state ---

Json Simulation::stateJson() {
  // A controller that is down at the end: read what a restarted one would see.
  std::unique_ptr<Store> temp_store;
  std::unique_ptr<Controller> temp_controller;
  Controller* c = operatorController();
  ControllerReplicas::View view;
  if (c == nullptr && replicas_) {
    view = replicas_->view();
    c = view.controller.get();
  }
  if (c == nullptr && !replicas_ && !db_path_.empty()) {
    Result<std::unique_ptr<Store>> store = Store::open(db_path_);
    if (store) {
      temp_store = std::move(store).value();
      temp_controller = std::make_unique<Controller>(*temp_store, clock_);
      if (temp_controller->recover().isOk()) c = temp_controller.get();
    }
  }
  Json hosts = Json::array();
  for (const auto& [name, h] : hosts_) {
    const HostRecord* rec = c ? c->host(name) : nullptr;
    hosts.push_back(Json{{"name", name},
                         {"state", rec ? toString(rec->state) : "unknown"},
                         {"power", h.powered ? "on" : "off"},
                         {"network", h.network ? "on" : "off"},
                         {"agent", h.agent ? "running" : "stopped"}});
  }
  Json vms = Json::array();
  if (c != nullptr) {
    // hostsRunning() of every vm in one pass over the hosts (in name order),
    // not one pass per vm: O(hosts x vms) at 1,000 x 20,000 (issue #16).
    std::map<std::string, std::vector<std::string>> running_on;
    for (const auto& [name, h] : hosts_) {
      if (!h.powered) continue;
      for (const std::string& vm : h.hv->runningVms()) running_on[vm].push_back(name);
    }
    for (const VmRecord& vm : c->vms()) {
      auto where = running_on.find(vm.name);
      vms.push_back(Json{{"name", vm.name},
                         {"tier", vm.tier},
                         {"host", vm.host},
                         {"state", toString(vm.state)},
                         {"health", toString(vm.health)},
                         {"healthy", vm.health == Health::kHealthy},
                         {"restarts", vm.restarts},
                         {"relocations", vm.relocations},
                         {"running_on", where == running_on.end()
                                            ? std::vector<std::string>{}
                                            : where->second}});
    }
  }
  Json out{{"time_ms", clock_.nowMs()},
              {"hosts", hosts},
              {"vms", vms},
              {"max_running_copies", max_copies_},
              {"collateral_destroys", collateral_},
              {"lease_lapses", lease_lapses_},
              {"incidents", c ? mapIncidents(c->incidentsJson()) : Json::array()},
              {"events", events_}};
  if (replicas_) {
    Json terms = Json::array();
    for (const auto& a : replicas_->history()) {
      terms.push_back(Json{{"replica", a.replica},
                           {"term", a.term},
                           {"from_ms", a.from_ms},
                           {"to_ms", a.to_ms < 0 ? Json(nullptr) : Json(a.to_ms)},
                           {"overstayed", a.overstayed}});
    }
    const std::string leader = replicas_->leaderName();
    out["controllers"] = Json{{"leader", leader.empty() ? Json(nullptr) : Json(leader)},
                              {"terms", terms},
                              {"overlapping_ticks", replicas_->overlappingTicks()},
                              {"unforced_overlaps", replicas_->unforcedOverlaps()},
                              {"fenced_writes", replicas_->fencedWrites()}};
  }
  return out;
}

}  // namespace tw::sim
