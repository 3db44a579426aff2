// The agent's logic: one per hypervisor host. It keeps the host's managed
// domains as the controller's AssignmentSet says (define, start, restart within
// a budget, destroy what is not assigned), reports them in heartbeats, and
// holds a lease that it must renew: when it cannot, it self-fences.
//
// The core is single-threaded and driven by calls, so that the daemon
// (agent/main.cc, with an event thread and a long-poll thread posting to one
// loop thread) and the simulator (virtual clock, no threads) run the same code:
//
//   agent.start();
//   loop: wait until agent.nextWakeMs() or until an event/assignment arrives;
//         agent.onDomainEvent(e) / agent.onAssignments(set); agent.runOnce();
//
// Threads: none of its own. Every method is called from one thread (the owner).
// onDomainEvent may be called re-entrantly from inside a Hypervisor call that
// the agent makes (FakeHypervisor delivers events synchronously): it only
// records the event and never calls the Hypervisor.
//
// Safety rules it keeps (DESIGN.md, invariant 1):
//  - It converges only with a valid lease and only after the controller's first
//    answer in this process: a restarted agent leaves running VMs alone until
//    then, and keeps them when their epoch is still assigned.
//  - It runs a VM only with its assigned epoch; anything else managed is
//    destroyed and undefined.
//  - When the lease expires it destroys every managed domain (definitions kept)
//    and starts nothing until a heartbeat is answered again.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "agent/health.h"
#include "tw/clock.h"
#include "tw/hypervisor.h"
#include "tw/protocol.h"
#include "tw/status.h"

namespace tw {

struct AgentOptions {
  std::string host;
  std::string agent_id;                 // random per process start (newAgentId())
  Millis heartbeat_interval_ms = 1000;  // until the controller says otherwise
  std::string disk_dir;                 // where overlays would go; unused for now
  // The lease a freshly started agent assumes it holds, from start(), until the
  // controller first answers. The previous agent process may have held a lease
  // that the controller counts as expiring at most this long after it last
  // heartbeated, and the controller may then place our VMs elsewhere: so when
  // no answer comes in this time, the agent self-fences. The cluster default
  // (ClusterSettings::lease_ms); after the first answer, AssignmentSet::lease_ms
  // rules (and this again when an answer carries lease_ms <= 0).
  Millis initial_lease_ms = 5000;
};

enum class LeaseState {
  kNone,     // no answer from the controller yet in this process
  kValid,    // renewed by the last answered heartbeat, not expired
  kExpired,  // not renewed in time: self-fenced, starting nothing
};
const char* toString(LeaseState s);

class Agent {
 public:
  // `prober` answers health for tiers with a tcp/http check; null = a
  // NoopHealthProber (Health::kUnknown). The references must outlive the Agent.
  Agent(AgentOptions options, Hypervisor& hv, ControllerLink& link, Clock& clock,
        HealthProber* prober = nullptr);
  Agent(const Agent&) = delete;
  Agent& operator=(const Agent&) = delete;

  // Rebuilds the agent's view from hv.listManaged() (libvirt metadata alone; no
  // database). Running domains are adopted as they are. The first heartbeat is
  // due at once. Errors: the hypervisor's (kUnavailable: retry later).
  // REQUIRES: called once, before the other calls below.
  Status start();

  // A lifecycle event of a managed domain. Recorded only; acted on by the next
  // runOnce(), which the caller runs at once (nextWakeMs() says "now").
  void onDomainEvent(const DomainEvent& e);

  // An AssignmentSet pushed by the controller (long poll, in-process call).
  // Ignored when it is older than the set in force or names another host.
  // Does not renew the lease (only answered heartbeats do).
  void onAssignments(const AssignmentSet& set);

  // Does what is due: self-fences when the lease expired, converges toward
  // the assignments (restarts whose back-off is over included), heartbeats
  // when due or when what it reports changed, sends queued events.
  // Blocks for as long as the Hypervisor and ControllerLink calls take.
  void runOnce();

  // When runOnce() has something to do next (clock time; <= now: at once).
  Millis nextWakeMs() const;

  // ---- inspection (tests, simulator, status) ----
  LeaseState leaseState() const { return lease_state_; }
  // End of the current lease (or of the start-up assumption, see AgentOptions).
  Millis leaseUntilMs() const { return lease_until_ms_; }
  // Version of the AssignmentSet in force; 0 before the first one.
  int64_t assignmentsVersion() const { return has_set_ ? set_.version : 0; }
  bool hasAssignments() const { return has_set_; }
  // Restarts (and failed start attempts) of `vm` in its current budget window.
  int restarts(const std::string& vm) const;
  // `vm` spent its restart budget and is left stopped (until a new epoch).
  bool budgetExhausted(const std::string& vm) const;
  // The domains as the last runOnce() saw them (what a heartbeat would carry).
  const std::vector<DomainReport>& domains() const { return reports_; }
  int64_t heartbeatSeq() const { return seq_; }
  Millis heartbeatIntervalMs() const { return interval_ms_; }
  // Agent events not yet delivered to the controller.
  size_t pendingEvents() const { return outbox_.size(); }
  const std::string& agentId() const { return options_.agent_id; }

  // At most this many undelivered events are kept (oldest dropped first).
  static constexpr size_t kMaxPendingEvents = 1000;

 private:
  // What the agent remembers about one VM, for the assignment epoch `epoch`.
  struct VmTrack {
    int64_t epoch = 0;
    bool launched = false;        // this process tried to start it at this epoch
    bool expect_running = false;  // we run it: a stop we did not make is a crash
    bool fenced = false;          // stopped by a self-fence: start again, not a restart
    bool down = false;            // should run but does not: a restart is pending
    bool exhausted = false;       // budget spent: left stopped
    Millis down_since_ms = 0;
    Millis next_restart_ms = 0;  // when the pending restart is due
    Millis running_since_ms = 0;
    std::deque<Millis> attempts;  // restart attempts (and failed starts) in the window
    std::string stop_detail;      // from the last stop/crash event since the last start
    std::string reason;           // last failure, reported
  };

  void refreshView();
  void absorbEvents();
  void checkLease(Millis now);
  void fence();
  void converge(Millis now);
  bool convergeOne(const Assignment& a, Millis now);
  bool launch(const Assignment& a, VmTrack& t, bool defined, bool restart, Millis now);
  bool removeDomain(const DomainStatus& d, const std::string& why);
  void heartbeat(Millis now);
  void applySet(const AssignmentSet& set);
  void noteLinkResult(const Status& st);
  void flushEvents();
  std::vector<DomainReport> buildReports(Millis now) const;
  bool reportDue() const;
  VmTrack& trackFor(const std::string& vm, int64_t epoch);
  int attemptsInWindow(const VmTrack& t, const std::string& vm, Millis now) const;
  void emit(const std::string& level, const std::string& kind, const std::string& vm, int64_t epoch,
            const std::string& message);
  // Logs a failure of `key` (a vm or "hypervisor") once until it changes or clears.
  void logFailureOnce(const std::string& key, const std::string& message);
  void clearFailure(const std::string& key);

  AgentOptions options_;
  Hypervisor& hv_;
  ControllerLink& link_;
  Clock& clock_;
  NoopHealthProber noop_prober_;
  HealthProber& prober_;

  bool started_ = false;
  bool dirty_ = false;  // an event or assignment arrived: runOnce at once

  AssignmentSet set_;
  bool has_set_ = false;
  std::map<std::string, Assignment> assigned_;  // set_'s assignments by vm

  std::map<std::string, DomainStatus> view_;  // managed domains, as last listed
  bool view_ok_ = false;                      // the last listing succeeded
  Capacity capacity_;
  std::map<std::string, VmTrack> tracks_;
  std::vector<DomainEvent> pending_events_;

  Millis interval_ms_;
  Millis last_heartbeat_ms_ = 0;
  Millis next_heartbeat_ms_ = 0;
  int64_t seq_ = 0;
  bool link_up_ = false;                 // the last heartbeat was answered
  std::optional<Code> link_condition_;   // last heartbeat outcome; logged on change
  std::vector<DomainReport> reports_;    // built at the end of runOnce()
  std::vector<DomainReport> last_sent_;  // carried by the last answered heartbeat
  int64_t last_sent_version_ = -1;

  LeaseState lease_state_ = LeaseState::kNone;
  Millis lease_until_ms_ = 0;
  Millis last_answered_ms_ = 0;  // send time of the last answered heartbeat

  std::deque<AgentEvent> outbox_;
  std::map<std::string, std::string> failures_;  // key -> last logged failure
};

// A random id for one agent process ("a3f09c1e5b7d2e44").
std::string newAgentId();

// "10m", "90s", "1h", "1500ms": a duration as the budget reason quotes it.
std::string formatDuration(Millis ms);

}  // namespace tw
