// The simulated cluster: the real Controller (with a real SQLite file) and one
// real Agent per simulated host, in one process, on a virtual clock. No
// threads, no sleeping: the same scenario gives the same event log.
//
// Each simulated host has a FakeHypervisor (connected to every other host as a
// migration peer, uri sim://<host>), an agent process (Agent + its PortMap and
// a ScheduledHealthProber whose probes answer from the scenario's `vm V
// health` state), and an InProcessLink to the controller. The controller gets
// a SimHostConnector for libvirt liveness and fencing.
//
// One step of virtual time (kStepMs = 10 ms):
//   1. the script's commands due now, in file order;
//   2. every host, in name order: pushed assignments and queued domain events
//      are delivered, due health probes run, and the agent runs when it was
//      handed something or its nextWakeMs() has come (as the daemon's loop
//      does), followed by the migrations it asked for;
//   3. every 100 ms of virtual time: controller.runOnce() (the daemon's tick);
//   4. what steps 2-3 caused (pushes, events, verdicts) is delivered in the
//      same instant, host by host, for at most kSettleRounds rounds;
//   5. the ground truth: which host runs which VM (FakeHypervisor), and the
//      most copies of one VM that ran at once.
// The run stops after the step of the script's `end`.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "agent/agent.h"
#include "agent/health_prober.h"
#include "agent/port_map.h"
#include "controller/controller.h"
#include "sim/in_process_link.h"
#include "sim/scenario.h"
#include "sim/sim_host_connector.h"
#include "sim/sim_hypervisor.h"
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
  int maxRunningCopies() const { return max_copies_; }
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
    bool agent_enabled = true;  // cleared by `agent H stop`
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

  Status startController();
  void stopController();
  void startAgent(Host& h);
  void stopAgent(Host& h);
  void ensureAgent(Host& h);
  void rewirePeers();
  void powerOff(Host& h);

  void execute(const Command& c);
  void step(Millis t);
  // Delivers what waits for h's agent and runs it when due. Returns whether it ran.
  bool stepHost(Host& h);
  bool hasWork(const Host& h) const;
  void countCopies();
  // Peer checks: every pair of hosts whose agents run and whose links work
  // both ways reach each other now (a check is a request and its answer).
  void updateReach(Millis now);
  bool linkUp(const std::string& from, const std::string& to) const;
  Status probe(const std::string& host, const std::string& vm);

  void log(const std::string& level, const std::string& message);
  void logResult(const Command& c, const Status& s);
  std::vector<std::string> hostsRunning(const std::string& vm) const;

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
  bool hosts_applied_ = false;  // sim-hosts.yaml is in the policy in force

  std::map<std::pair<std::string, std::string>, Millis> last_reach_;  // (from, to) -> time
  std::set<std::pair<std::string, std::string>> cut_links_;           // (from, to) cut
  std::map<std::string, int> copies_;  // vm -> hosts running it now
  int max_copies_ = 0;
  int64_t events_ = 0;
  bool built_ = false;
};

}  // namespace tw::sim
