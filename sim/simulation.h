// The simulated cluster: the real Controller (with a real SQLite file) and one
// real Agent per simulated host, in one process, on a virtual clock. No
// threads, no sleeping: the same scenario gives the same event log.
//
// Each simulated host has a FakeHypervisor (connected to every other host as a
// migration peer, uri sim://<host>), an agent process (Agent + its PortMap and
// a ScheduledHealthProber whose probes answer from the scenario's `vm V
// health` state), and an InProcessLink to the controller's side (a
// ControllerFront: the daemon's HTTP side, which answers heartbeats while the
// controller's loop is stalled). The controller gets a SimHostConnector for
// libvirt liveness and fencing. Agents run with external heartbeats, as the
// daemon does: Agent::heartbeatTick() (the heartbeat thread) sends heartbeats,
// renews and judges the lease; runOnce() (the loop) only publishes.
//
// One step of virtual time (kStepMs = 10 ms):
//   1. the script's commands due now, in file order;
//   2. stalls that are over end: the controller works through what its HTTP
//      side queued meanwhile (heartbeats, events, operator commands), in order;
//   3. peer checks (updateReach) and the ground truth of who is cut off;
//   4. every host, in name order: its heartbeat thread ticks
//      (heartbeatTick(): a heartbeat when one is due or the published report
//      changed; the lease judged), blocked loop or not; then, unless its loop
//      is blocked (`agent H stall`, `host H libvirt slow`), pushed
//      assignments and queued domain events are delivered, due health probes
//      run, and the agent runs when it was handed something or its
//      nextWakeMs() has come (as the daemon's loop does), followed by the
//      migrations it asked for; heartbeat tick and loop take turns until
//      neither has anything left to do now (settleHost(): the daemon's
//      heartbeat thread sends a changed report within 50 ms, here at once,
//      and the loop takes its answer before anything else happens).
//      Only hosts that may have something to do are looked at (a
//      WakeQueue, sim/wake_queue.h): after its turn a host sleeps until
//      the first of its next heartbeat, lease end (every step while its
//      lease is held), watchdog pet tick, nextWakeMs() and next health
//      probe; a domain event, a push, a verdict, a script command, a
//      change of who reaches whom or the end of a stall wakes it (with
//      `controllers N`, every host every step: an election may change
//      whom an agent talks to). The
//      hosts it skips are exactly those whose turn would do nothing, so
//      the event log is the same as when every host took every turn
//      (issue #16: the scenario golden logs did not change);
//   5. every 100 ms of virtual time, unless its loop is stalled:
//      controller.runOnce() (the daemon's tick);
//   6. what steps 4-5 caused (pushes, events) is delivered in the same
//      instant, host by host as in 4, for at most kSettleRounds rounds;
//   7. the ground truth: which host runs which VM (FakeHypervisor), and the
//      most copies of one VM that ran at once.
// The run stops after the step of the script's `end`.
//
// Collateral destroys (invariant 5). A host is *cut off* at a step when it is
// powered off, its network is off, or it is isolated by the quorum rule
// (agent/peer_view.h isolated(peers, reached)) on the ground truth: it
// reaches a peer when both are powered, both networks are on, both agents run
// (peer checks are the agents') and the links between them are up both ways.
// A VM destroyed by a self-fence is collateral when its host was not cut off
// at the step its agent judged itself isolated (its lease state became
// expired); a VM destroyed by the controller's fencing (libvirt destroy, a
// fence agent's power-off) is collateral when its host is not cut off at that
// step. Each is logged (`sim error collateral: ...`) and counted
// (collateral_destroys). An agent's own view of its peers lags the truth by
// at most the peer timeout and never counts a peer the truth does not reach,
// so an agent that judges itself isolated is cut off by this definition;
// what this catches is judgement without the rule (an agent with no peer list
// yet) and fencing by the controller of a host its peers still reach.
//
// Host watchdogs (agent/host_watchdog.h). Every agent arms its host's
// watchdog (W = the cluster's lease) when it starts, and pets it every W/5
// (a WatchdogPetter over Agent::watchdogEntitled, ticked in the heartbeat
// thread's turn, as the daemon's pet thread) — also while its loop is blocked. A stopped agent (`agent H stop`: the
// process is gone, no clean close) leaves it armed. When no pet came for W
// the host is reset: every domain dies, the agent process is gone, and the
// host boots again kRebootMs later (its agent starts at boot). A reset is
// collateral when the pets stopped while the host was not cut off and its
// agent ran (the pet rule misjudged); a reset because the agent is dead is
// what the watchdog is for (as sbd's) and is counted apart
// (watchdogResets()). Each agent also keeps its state in a
// MemoryAgentStateStore of its host, which survives agent restarts and
// resets (a disk); its lease end counts only in the boot that saved it.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "agent/agent.h"
#include "agent/agent_state.h"
#include "agent/host_watchdog.h"
#include "agent/health_prober.h"
#include "agent/port_map.h"
#include "controller/controller.h"
#include "sim/controller_front.h"
#include "sim/controller_replicas.h"
#include "sim/in_process_link.h"
#include "sim/scenario.h"
#include "sim/sim_host_connector.h"
#include "sim/sim_hypervisor.h"
#include "sim/wake_queue.h"
#include "tw/clock.h"
#include "tw/fake_hypervisor.h"
#include "tw/json.h"
#include "tw/store.h"

namespace tw::sim {

// One line of the event log.
struct SimEvent {
  Millis t_ms = 0;
  std::string level;      // info | warn | error
  std::string component;  // "controller" (its events, agents' included) | "sim" (the script)
  std::string message;
};

// "<t_ms> <level> <component> <message>"
std::string formatEvent(const SimEvent& e);

class Simulation final : private SimWorld {
 public:
  using EventSink = std::function<void(const SimEvent&)>;

  static constexpr Millis kControllerTickMs = 100;
  static constexpr int kSettleRounds = 10;

  // REQUIRES: scenario outlives the simulation.
  Simulation(const Scenario& scenario, EventSink sink);
  ~Simulation() override;
  Simulation(const Simulation&) = delete;
  Simulation& operator=(const Simulation&) = delete;

  // Runs the script to its `end`. Errors only when the world cannot be built
  // (no temp dir, the SQLite file cannot be opened): whatever the cluster
  // does is a result, not an error.
  Status run();

  // The final state (see tests/scenarios/README.md for its fields).
  Json stateJson();

  Millis nowMs() const { return clock_.nowMs(); }
  // When `from`'s agent last reached `to`'s agent directly (a peer check
  // answered); -1 = never.
  Millis lastReach(const std::string& from, const std::string& to) const;
  // The same by host index (hostIndex(); kNoHost: never reached).
  static constexpr size_t kNoHost = static_cast<size_t>(-1);
  size_t hostIndex(const std::string& host) const;
  Millis lastReach(size_t from, size_t to) const;
  // `from` reached every other host at the last update (made at
  // reachUpdatedMs()): lastReach(from, h) is reachUpdatedMs() for every h.
  bool reachesAll(size_t from) const;
  Millis reachUpdatedMs() const { return reach_now_ms_; }
  // The other hosts `from` did not reach at the last update (by index).
  const std::vector<size_t>& notReachedFrom(size_t from) const;
  int maxRunningCopies() const { return max_copies_; }
  // Times a VM came to run on a second (third...) host at once.
  int64_t doubleCopies() const { return double_copies_; }
  // VMs destroyed by fencing on a host that was not cut off (see above).
  int64_t collateralDestroys() const { return collateral_; }
  // Hosts reset by their watchdog, and of those, how many because their
  // agent was dead (not running) for W.
  int64_t watchdogResets() const { return watchdog_resets_; }
  int64_t watchdogResetsDeadAgent() const { return watchdog_resets_dead_; }

  // A reset host boots again this long after its watchdog fired.
  static constexpr Millis kRebootMs = 20000;
  int64_t steps() const { return steps_; }
  // With `controllers N`: the replicas (null with one controller on SQLite).
  const ControllerReplicas* replicas() const { return replicas_.get(); }
  int64_t eventCount() const { return events_; }

 private:
  // One simulated host. The agent process (agent, prober, ports) comes and goes.
  struct Host {
    SimHostDef def;
    std::unique_ptr<FakeHypervisor> hv;
    std::unique_ptr<SimHypervisor> agent_hv;
    std::unique_ptr<InProcessLink> link;
    bool powered = true;
    bool network = true;
    bool agent_enabled = true;   // cleared by `agent H stop`
    Millis stalled_until = 0;    // its agent's loop is blocked until then
    Millis stall_cmd_until = 0;  // ... by `agent H stall` (logged when over)
    Millis libvirt_slow_ms = 0;  // `host H libvirt slow`: per call
    // Ground truth at this step's start (updateReach): peers reached, cut off.
    int reached = 0;
    bool cut_off = false;
    // Its agent's lease state as last looked at, and what held when it last
    // became expired (the agent judged itself isolated).
    LeaseState lease_seen = LeaseState::kNone;
    bool fence_cut_off = true;
    int fence_reached = 0;
    // Its watchdog (armed by an agent, petted by its petter; off when the
    // host is off), and whether the host was cut off when the pets stopped.
    bool wd_armed = false;
    Millis wd_last_pet = 0;
    Millis next_pet_tick = 0;  // its petter's next tick (every W/5, as the daemon's thread)
    bool pets_stopped_cut_off = true;
    int pets_stopped_reached = 0;
    int boot = 1;            // boots so far (a saved lease end counts in its own boot)
    Millis reboot_at = 0;    // a reset host boots again then (0: no reboot pending)
    std::unique_ptr<MemoryAgentStateStore> state;  // the agent's state dir (a disk)
    std::unique_ptr<HostWatchdog> watchdog;        // the agent's handle on it
    std::unique_ptr<WatchdogPetter> petter;
    int generation = 0;         // agent processes started so far
    Millis agent_retry_ms = 0;  // when a failed agent start is tried again
    std::unique_ptr<PortMap> ports;
    std::unique_ptr<ScheduledHealthProber> prober;
    std::unique_ptr<PeerView> peers;
    std::unique_ptr<Agent> agent;
    std::vector<DomainEvent> events;  // for the agent, not yet delivered
    bool push = false;                // a new assignment set waits for delivery
    bool wake = false;                // a health verdict changed
    bool touched = true;              // its domains may have changed this step
    size_t index = 0;                 // in name order (hostIndex(), wakes_)
    Millis next_beat = 0;             // its agent's next heartbeat (heartbeatTick())
    bool settled = true;              // settleHost() ended with nothing left to do now
    std::set<std::string> running;    // ground truth as last counted
  };

  // How a scenario breaks a VM's service (`vm V health ...`).
  struct HealthFault {
    bool always = false;     // every run, until `health ok`
    std::string host;        // else: the run on this host ...
    int64_t run_serial = 0;  // ... that is the VM's run number run_serial only
  };

  // SimWorld
  bool libvirtAnswers(const std::string& host) override;
  FakeHypervisor* hypervisorOf(const std::string& host) override;
  void powerOffByFence(const std::string& host) override;
  bool fenceDeviceReachable(const std::string& host) override;
  void destroyedByFence(const std::string& host, int vms) override;

  Status startController();
  void stopController();
  void startAgent(Host& h);
  void stopAgent(Host& h);
  void ensureAgent(Host& h);
  void rewirePeers();
  void powerOff(Host& h);

  void execute(const Command& c);
  // The Controller `host`'s agent talks to now (its pushes), the one
  // operators reach (the acting leader), and that one's front; null when none.
  Controller* agentController(const std::string& host) const;
  Controller* operatorController();
  ControllerFront* operatorFront();
  // `apply` and the operator commands, on the controller (now or, while its
  // loop is stalled, when the stall ends).
  void applyNow(const Command& c, Controller& controller);
  void operatorNow(const Command& c, Controller& controller);
  void step(Millis t);
  void endStalls(Millis t);
  // Delivers what waits for h's agent and runs it when due (not while its
  // loop is blocked). Returns whether it ran.
  bool stepHost(Host& h);
  // Heartbeat tick and loop pass by turns until h has nothing left to do
  // now (at most kSettleRounds passes). Returns whether the loop ran.
  bool settleHost(Host& h);
  // One pass over the hosts that may have something to do now (wakes_), in
  // name order: settleHost() each, then its next wake time. Returns whether
  // any loop ran.
  bool settlePass();
  // h has something to do now (an event, a push, a command): looked at in
  // this step's next pass that reaches it.
  void wake(Host& h) { wakes_.wake(h.index); }
  // The earliest time at which settleHost(h) could do anything on its own,
  // just after it ran (see step 4 above; a lower bound, now when unsure).
  Millis nextWake(const Host& h) const;
  // h's heartbeat thread: heartbeatTick(), then a look at the lease.
  void beat(Host& h);
  // Notes a change of h's lease state (a self-fence judged: cut off or not).
  void observeLease(Host& h);
  bool hasWork(const Host& h) const;
  // h's agent reaches the controller now (networks, links).
  bool reachesController(const std::string& host) const;
  void collateral(const std::string& message, int vms);
  void countCopies();
  // h's FakeHypervisor runs just what h.running says (no listing, no copies).
  bool runsSame(const Host& h) const;
  // Peer checks: every pair of hosts whose agents run and whose links work
  // both ways reach each other now (a check is a request and its answer).
  // Also the ground truth: reached and cut_off of every host.
  void updateReach(Millis now);
  bool linkUp(const std::string& from, const std::string& to) const;
  Status probe(const std::string& host, const std::string& vm);

  void log(const std::string& level, const std::string& message);
  void logResult(const Command& c, const Status& s);
  std::vector<std::string> hostsRunning(const std::string& vm) const;
  // Resets the hosts whose watchdog got no pet for W; boots those whose
  // reboot is due.
  void checkWatchdogs(Millis now);
  void resetByWatchdog(Host& h, Millis now);
  // The watchdog's timeout W in the simulator: the cluster's lease.
  Millis watchdogMs() const { return scenario_.settings.lease_ms; }

  const Scenario& scenario_;
  EventSink sink_;
  ManualClock clock_{0};
  std::string temp_dir_;  // holds the SQLite file; removed at the end
  std::string db_path_;

  std::map<std::string, Host> hosts_;       // by name: the order of every pass
  std::map<std::string, int> fail_starts_;  // vm -> starts left to fail
  std::map<std::string, HealthFault> faults_;
  std::map<std::string, int64_t> run_serial_;  // vm -> boots so far, on any host

  std::unique_ptr<Store> store_;
  std::unique_ptr<SimHostConnector> connector_;
  std::unique_ptr<Controller> controller_;
  ControllerFront front_;           // the controller's HTTP side
  // `controllers N`: N replicas on an in-memory etcd instead of the one
  // controller above (which then stays down).
  std::unique_ptr<ControllerReplicas> replicas_;
  bool controller_network_ = true;  // `controller network off` clears it
  bool hosts_applied_ = false;      // sim-hosts.yaml is in the policy in force

  // Which agent reaches which (updateReach), hosts by index in name order:
  // reach_up_[from * n + to] says whether `from` reached `to` at the last
  // update (made at reach_now_ms_); reach_last_ms_ holds, for a pair that
  // is not up, the last update at which it was (-1: never). Recomputed only
  // when what decides it changed (reach_key_): a step with no change costs
  // O(hosts), not O(hosts²) (issue #16).
  std::map<std::string, size_t> host_index_;
  std::vector<Host*> host_by_index_;
  // Which hosts a pass looks at (issue #16): one whose settleHost() would do
  // nothing sleeps until nextWake(); whatever reaches it from outside
  // (events, pushes, commands, a change of who reaches whom) wakes it.
  WakeQueue wakes_{0};
  std::vector<char> reach_up_;
  // Per host a: the hosts b != a with !reach_up_[a * n + b] (notReachedFrom()).
  std::vector<std::vector<size_t>> not_reached_;
  std::vector<Millis> reach_last_ms_;
  Millis reach_now_ms_ = -1;
  std::vector<char> reach_key_;  // per host: agent, powered, network; then cut_links_gen_
  uint64_t cut_links_gen_ = 0;
  // (from, to) cut; ends are host names or kControllerNode
  std::set<std::pair<std::string, std::string>> cut_links_;
  std::map<std::string, int> copies_;  // vm -> hosts running it now
  int max_copies_ = 0;
  // Times an agent's lease stopped being valid (renewed) while it ran: kValid -> kHeld or kExpired.
  int64_t lease_lapses_ = 0;
  int64_t double_copies_ = 0;
  int64_t collateral_ = 0;
  int64_t watchdog_resets_ = 0;
  int64_t watchdog_resets_dead_ = 0;
  int64_t steps_ = 0;
  int64_t events_ = 0;
  bool built_ = false;
};

}  // namespace tw::sim
