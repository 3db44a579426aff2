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
//  - Sets are ordered by version within one controller process
//    (AssignmentSet::controller_id): an answer that waited for the loop never
//    replaces a newer pushed set of the same process; an answer of another
//    process is applied whatever its version; pushes of another process than
//    the one in force are ignored until its answer comes.
//  - It runs a VM only with its assigned epoch; anything else managed is
//    destroyed and undefined (a domain that appears while unassigned, once a
//    heartbeat sent after it appeared has been answered: it may be a migrated
//    VM whose assignment is on its way).
//  - When the lease expires it destroys every managed domain (definitions kept)
//    and starts nothing until a heartbeat is answered again. (Also an incoming
//    VM's: self-fencing comes before the "never destroy incoming" rule.)
//  - It never starts a VM whose assignment asks to migrate it away, nor one
//    that left by migration at the assigned epoch, nor an incoming one.
//
// Live migration (Assignment::migrate_to_uri): the core does not call
// Hypervisor::migrate itself, because the call blocks for about a second and
// must not hold up heartbeats. It hands out a MigrationRequest
// (takeMigrations(), once per VM and migrate_epoch); the caller runs it — on a
// worker thread with its own hypervisor connection in the daemon, at once in
// tests and the simulator (runMigrations()) — and posts the outcome back
// (onMigrationDone()). While a migration is under way the agent leaves that VM
// alone (its disappearance is no crash).
//
// Starts: launch() queues a VM's start, converge() begins the pass's starts
// together (StartRunner over Hypervisor::beginStarts) and the loop goes on;
// later passes report those that returned. One that has not returned after
// AgentOptions::start_timeout_ms is given up: vm.start_failed, its domain
// destroyed, a restart within the budget (docs/fencing.md, "A start that
// never returns"). While a VM's start is under way the agent leaves it alone.
// On a hypervisor whose starts return at once (FakeHypervisor, the
// simulator's) every start is reported in the pass that began it.
//
// Health: for a tier with a tcp/http check, a VM that the prober calls
// unhealthy is rebooted (destroy + start, "vm.unhealthy" then
// "vm.restarted"), counting against the restart budget exactly like a crash.
//
// Service ports: the agent gives every assigned VM a host port per guest port
// (its tier's ports and its check's port) in a PortMap, adds a forward for each
// (Hypervisor::addPortForward) after every start and every arrival by
// migration, reports the forwarded ones (DomainReport::ports) and releases them
// when the VM leaves the host. A restarted agent takes over the forwards its
// running VMs already have. A hypervisor without forwards (the test driver)
// reports no ports.
//
// Domains: a DomainBuilder turns an assignment into the DomainSpec to define
// (the tier's image: kernel, command line, disk); it is told when a VM leaves
// the host so that its disk goes, and prepares an incoming VM's disk.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "agent/agent_state.h"
#include "agent/domain_builder.h"
#include "agent/floating_address.h"
#include "agent/health.h"
#include "agent/host_report.h"
#include "agent/peer_view.h"
#include "agent/port_map.h"
#include "agent/start_runner.h"
#include "agent/term_watch.h"
#include "tw/clock.h"
#include "tw/hypervisor.h"
#include "tw/protocol.h"
#include "tw/status.h"

namespace tw {

struct AgentOptions {
  std::string host;
  std::string agent_id;                 // random per process start (newAgentId())
  Millis heartbeat_interval_ms = 1000;  // until the controller says otherwise
  // Where this host's service port forwards listen (PortForward::address),
  // reported in heartbeats for the tier endpoints.
  std::string service_address = "127.0.0.1";
  // Where this agent answers its peers' checks ("HOST:PORT"; "" = nowhere),
  // reported in heartbeats so that the controller tells the other hosts.
  std::string peer_address;
  // The lease a freshly started agent assumes it holds, from start(), until the
  // controller first answers. The previous agent process may have held a lease
  // that the controller counts as expiring at most this long after it last
  // heartbeated, and the controller may then place our VMs elsewhere: so when
  // no answer comes in this time, the agent self-fences. The cluster default
  // (ClusterSettings::lease_ms); after the first answer, AssignmentSet::lease_ms
  // rules (and this again when an answer carries lease_ms <= 0).
  Millis initial_lease_ms = 5000;
  // Host ports for service port forwards: [port_base, port_base + port_count).
  // Used when the Agent builds its own PortMap (none given to it).
  int port_base = 20000;
  int port_count = 1000;
  // The host watchdog's timeout W (HostWatchdog::timeoutMs(); 0 = none),
  // reported in heartbeats: the controller's lease fence waits for it.
  Millis watchdog_ms = 0;
  // This boot's id (currentBootId()): a saved lease end counts only in the
  // boot that saved it.
  std::string boot_id;
  // How long a domain start may take before the agent gives it up: reported
  // as vm.start_failed, what it began destroyed, a restart within the budget
  // (agent/start_runner.h, docs/fencing.md). QEMU starts in 0.15-2 s here, a
  // few seconds when several boot on a loaded host; libvirt gives up by
  // itself on a start that waits 30 s for a domain's job lock, and its own
  // error should come first. So 60 s: twice that wait, far above any healthy
  // start, and a minute instead of forever when one never returns.
  Millis start_timeout_ms = 60000;
};

// A live migration the controller asked for (Assignment::migrate_to_uri), for
// the caller to run: hv.migrate(vm, dest_uri, options).
struct MigrationRequest {
  std::string vm;
  int64_t epoch = 0;          // the epoch it runs with here
  int64_t migrate_epoch = 0;  // the epoch it carries on arrival (options.dest_meta)
  std::string dest_host;      // for messages
  std::string dest_uri;       // libvirt URI of the destination
  MigrateOptions options;     // live; unsafe for shared storage; dest_meta
};

enum class LeaseState {
  kNone,     // no answer from the controller yet in this process
  kValid,    // renewed by the last answered heartbeat, not expired
  kHeld,     // not renewed in time, but this host is not isolated (it reaches
             // enough peers that nobody can fence it): keeps its VMs, restarts
             // crashed ones in place, starts nothing new (docs/fencing.md)
  kExpired,  // not renewed in time and isolated: self-fenced, starting nothing
             // until the controller answers a heartbeat sent after the fence
};
const char* toString(LeaseState s);

class Agent {
 public:
  // `prober` answers health for tiers with a tcp/http check; null = a
  // NoopHealthProber (Health::kUnknown). `ports` is where the agent keeps the
  // host ports of its VMs (the prober reads them there); null = a PortMap of
  // its own over options.port_base/port_count. The references must outlive
  // the Agent.
  // `builder`: null = a PlainDomainBuilder.
  Agent(AgentOptions options, Hypervisor& hv, ControllerLink& link, Clock& clock,
        HealthProber* prober = nullptr, PortMap* ports = nullptr,
        DomainBuilder* builder = nullptr);
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
  // Ignored when it is older than the set in force (same controller process),
  // comes from another controller process than the set in force (the next
  // heartbeat's answer decides), or names another host.
  // Does not renew the lease (only answered heartbeats do).
  void onAssignments(const AssignmentSet& set);

  // Does what is due: self-fences when the lease expired, converges toward
  // the assignments (restarts whose back-off is over included), heartbeats
  // when due or when what it reports changed (unless heartbeats are
  // external), sends queued events.
  // Blocks for as long as the Hypervisor and ControllerLink calls take.
  void runOnce();

  // ---- heartbeats on a thread of their own (the daemon, the simulator) ----
  // Lease renewal must never wait for libvirt, a VM start or a health probe:
  // with external heartbeats, runOnce() only publishes what a heartbeat
  // carries, and heartbeatTick() — called by another thread — sends it,
  // renews the lease and judges an expired one (quorum). REQUIRES: before start().
  void setExternalHeartbeats(bool on) { external_heartbeats_ = on; }
  // Where the agent learns which peers it reaches; null = NoPeerView.
  // REQUIRES: outlives the agent; before start().
  void setPeerView(PeerView* peers) { peers_ = peers != nullptr ? peers : &no_peers_; }
  // Where the agent keeps what a restarted agent needs to decide alone
  // (agent/agent_state.h); null = nothing kept. Loaded by start(), saved by
  // runOnce(). REQUIRES: outlives the agent; before start().
  void setStateStore(AgentStateStore* store) { state_store_ = store; }
  // Floating addresses (agent/floating_address.h); none when not set.
  void setFloatingAddresses(FloatingAddresses* addresses) { addresses_ = addresses; }
  // What heartbeats report about the host (agent/host_report.h): subnets,
  // and the storage paths, pools and DR places the controller asks about.
  // None when not set. REQUIRES: outlives the agent; before start().
  void setHostReporter(HostReporter* reporter) { host_reporter_ = reporter; }
  // Called (from heartbeatTick()'s thread) when the core has new work: an
  // answered set, or a lease judged expired. The daemon wakes its loop.
  void setWakeCallback(std::function<void()> wake) { wake_ = std::move(wake); }
  // Thread-safe; never calls the Hypervisor. Sends a heartbeat when one is
  // due (interval, or the published reports changed), renews the lease from
  // its answer, and judges the lease. Returns when the next one is due.
  Millis heartbeatTick();

  // ---- the host watchdog (agent/host_watchdog.h) ----
  // Whether the host may keep running its VMs now, so that its watchdog is
  // petted: the lease is valid (or the start-up lease runs), or it ran out
  // but this host is not isolated (held), or no managed domain runs (as the
  // core last saw them: a self-fence that completed). Not while a self-fence
  // is due and VMs still run (a loop stuck in libvirt): the watchdog then
  // resets the host. Thread-safe, read-only; never calls the Hypervisor.
  bool watchdogEntitled(Millis now) const;
  // Active managed domains as the core last saw them (-1: not started).
  int runningManaged() const {
    std::lock_guard<std::mutex> lock(lease_mu_);
    return running_managed_;
  }
  // The watchdog's timeout that heartbeats report (AgentOptions::watchdog_ms).
  // REQUIRES: before start().
  void setWatchdogMs(Millis ms) { options_.watchdog_ms = ms; }

  // When runOnce() has something to do next (clock time; <= now: at once).
  Millis nextWakeMs() const;

  // Migrations that runOnce() decided and nobody has taken yet; each is
  // handed out once. The caller runs each (hv.migrate(r.vm, r.dest_uri,
  // r.options)) and reports it with onMigrationDone(). Call after runOnce().
  std::vector<MigrationRequest> takeMigrations();
  // The outcome of a taken migration. Ok: the VM left this host ("vm.migrated",
  // epoch = migrate_epoch, with the time since it was taken); it is forgotten
  // here without a crash, a destroy or a restart. Not ok: "vm.migrate_failed"
  // (warn, epoch = migrate_epoch, the hypervisor's message); the VM keeps
  // running here and is not migrated again for this migrate_epoch.
  // Ignored when no such migration is under way. The next runOnce() is due at once.
  void onMigrationDone(const std::string& vm, int64_t migrate_epoch, const Status& outcome);
  // For callers without threads (tests, the simulator): takes every migration
  // and runs it at once on the agent's own Hypervisor, reporting each outcome.
  void runMigrations();

  // ---- backups (agent/agent_backups.cc; the schedule: agent/backup_runner.h) ----
  // The assignments in force whose VM runs here at its assigned epoch (as
  // the last runOnce() saw it), and that no migration takes away.
  std::vector<Assignment> runningAssignments() const;
  // Queues `e` (host set to this one) for the controller, like the agent's
  // own events: a backup's outcome.
  void report(AgentEvent e);

  // ---- inspection (tests, simulator, status) ----
  LeaseState leaseState() const {
    std::lock_guard<std::mutex> lock(lease_mu_);
    return lease_state_;
  }
  // End of the current lease (or of the start-up assumption, see AgentOptions).
  Millis leaseUntilMs() const {
    std::lock_guard<std::mutex> lock(lease_mu_);
    return lease_until_ms_;
  }
  // Why the host fenced itself last ("" = never in this process).
  std::string selfFenceReason() const {
    std::lock_guard<std::mutex> lock(lease_mu_);
    return self_fence_reason_;
  }
  // Version of the AssignmentSet in force; 0 before the first one.
  int64_t assignmentsVersion() const { return has_set_ ? set_.version : 0; }
  bool hasAssignments() const { return has_set_; }
  // Restarts (and failed start attempts) of `vm` in its current budget window.
  int restarts(const std::string& vm) const;
  // `vm` spent its restart budget and is left stopped (until a new epoch).
  bool budgetExhausted(const std::string& vm) const;
  // The domains as the last runOnce() saw them (what a heartbeat would carry).
  const std::vector<DomainReport>& domains() const { return reports_; }
  int64_t heartbeatSeq() const {
    std::lock_guard<std::mutex> lock(lease_mu_);
    return seq_;
  }
  Millis heartbeatIntervalMs() const {
    std::lock_guard<std::mutex> lock(lease_mu_);
    return interval_ms_;
  }
  // Agent events not yet delivered to the controller.
  size_t pendingEvents() const;
  // A migration of `vm` was decided and its outcome has not come back.
  bool migrating(const std::string& vm) const { return migrations_.count(vm) != 0; }
  const PortMap& portMap() const { return ports_; }
  const std::string& agentId() const { return options_.agent_id; }

  // At most this many undelivered events are kept (oldest dropped first).
  static constexpr size_t kMaxPendingEvents = 1000;
  // At most this many ride along with one heartbeat (Heartbeat::events).
  static constexpr size_t kEventsPerHeartbeat = 64;
  // The saved lease end is rewritten when it moved by this much.
  static constexpr Millis kLeaseSaveStepMs = 1000;
  // While a start is under way, the loop looks at it this often. (A start
  // that succeeded also wakes it by its domain event.)
  static constexpr Millis kStartPollMs = 250;

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
    int64_t migrate_tried = 0;    // the migrate_epoch last acted on (requested or refused)
    bool migrated_away = false;   // left this host by migration at this epoch
    bool forwarded = false;       // the running QEMU has its port forwards
    bool prepared = false;        // incoming: the builder prepared it
    std::map<int, int> forwards;  // guest port -> host port, forwarded now
  };

  // A migration handed out (or about to be) and its outcome not yet back.
  struct Migration {
    MigrationRequest request;
    bool taken = false;
    Millis taken_ms = 0;
  };

  void refreshView();
  void absorbEvents();
  // Judges the lease at `now` (REQUIRES: lease_mu_ held): an expired lease
  // becomes kHeld when this host is not isolated, else kExpired (self-fence).
  LeaseState judgeLeaseLocked(Millis now);
  // Core side of the lease: announces a self-fence, drops the set in force.
  LeaseState checkLease(Millis now);
  void fence();
  void convergeAddresses(LeaseState state);  // agent_addresses.cc
  // `held`: the lease ran out while peers still reach this host: restart
  // crashed VMs in place only (nothing new, nothing removed, no migration).
  void converge(Millis now, bool held = false);
  // Publishes what a heartbeat carries (reports_, capacity, version).
  void publish(Millis now);
  // Loads what the previous agent process kept (start()).
  void loadState(Millis now);
  // Saves what a restarted agent needs when it changed (runOnce()).
  void saveState();
  // REQUIRES: saved_. What saveState() would write equals saved_ but for
  // the lease end, which it sets in *lease_until.
  bool savedStateCurrent(Millis* lease_until) const;
  // Applies the set of the last answered heartbeat, if any. Returns whether one came.
  bool takeAnswer();
  // Whether `set`'s term may be acted on (agent/term_watch.h); says so
  // (log and event) when that changes. Any thread.
  bool admitTerm(const AssignmentSet& set);
  // Sends one heartbeat with the published state and records the answer.
  void sendHeartbeat(Millis now);
  bool convergeOne(const Assignment& a, Millis now);
  bool convergeIncoming(const Assignment& a, VmTrack& t, Millis now);
  bool convergeMigratedAway(const Assignment& a);
  // Destroys (if active) and undefines a domain, reporting vm.destroyed at
  // destroy_level and the undefine as an event or only in the log. Returns
  // whether anything changed; a failed destroy changes nothing. Leaves the
  // VM's track alone (removeDomain() also drops it).
  bool destroyAndUndefine(const DomainStatus& d, const std::string& why,
                          const std::string& destroy_level, bool announce_undefine);
  bool restartOrExhaust(const Assignment& a, VmTrack& t, bool present, Millis now);
  bool rebootIfUnhealthy(const Assignment& a, VmTrack& t, const DomainStatus& d, Millis now);
  void requestMigration(const Assignment& a, VmTrack& t);
  bool refuseMigration(const Assignment& a, VmTrack& t, const std::string& why);
  void assignPorts(const Assignment& a);
  // Adds the forwards that the running domain of `a` lacks. Returns whether
  // what is reported changed.
  bool ensureForwards(const Assignment& a, VmTrack& t);
  // Takes over the forwards of a running domain found at start.
  void adoptForwards(const std::string& vm);
  void releasePorts();
  // Defines the assignment's domain (unless `defined`) and queues its start
  // for runStarts(). Always returns true (something was reported or tried).
  bool launch(const Assignment& a, VmTrack& t, bool defined, bool restart, Millis now);
  // Begins the queued starts together (StartRunner, Hypervisor::beginStarts)
  // and reports those that returned (collectStarts()).
  void runStarts();
  // Reports the starts that returned, and gives up (destroying what they
  // began) those past their deadline. Returns whether the host changed.
  bool collectStarts(Millis now);
  // A start's outcome for the VM's track, when the start is still the one
  // its track waits for (same assignment, same epoch), seen at `now`: a
  // failure is down since then (the back-off counts from it), a success
  // running since then (the health grace too). False when it is not (the VM
  // was unassigned, or has another epoch, while it started): the caller
  // lists the view again.
  bool startReturned(const StartRunner::Outcome& o, Millis now);
  void launchFailed(const Assignment& a, VmTrack& t, bool restart, Millis now, const Status& st);
  // A start under way is for a VM the set in force no longer assigns at that
  // epoch: publish() keeps the version of the set before it (agent.cc).
  bool startOutlivesItsAssignment() const;
  bool confirmedByController(const std::string& vm) const;
  bool removeDomain(const DomainStatus& d, const std::string& why);
  void applySet(AssignmentSet set);
  void noteLinkResultLocked(const Status& st);
  // Logs (at most every 10 s) a heartbeat sent more than half an interval
  // after it was due, or answered more than half an interval after it went
  // out (took_ms: 0 for one that failed): a host that goes 'suspect' under
  // load shows which side was slow.
  // REQUIRES: send_mu_ held (sendHeartbeat).
  void noteSlowHeartbeat(Millis late_ms, Millis took_ms, Millis interval_ms);
  void flushEvents();
  std::vector<DomainReport> buildReports(Millis now) const;
  bool reportDue() const;
  bool reportDueLocked() const;
  int64_t publishedGen() const {
    std::lock_guard<std::mutex> lock(lease_mu_);
    return published_gen_;
  }
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
  std::unique_ptr<PortMap> own_ports_;  // when none was given
  PortMap& ports_;
  PlainDomainBuilder plain_builder_;
  DomainBuilder& builder_;
  bool forwards_unsupported_ = false;  // the hypervisor said kUnimplemented

  std::atomic<bool> started_{false};
  bool dirty_ = false;  // an event or assignment arrived: runOnce at once

  AssignmentSet set_;
  bool has_set_ = false;
  std::map<std::string, Assignment> assigned_;  // set_'s assignments by vm

  std::map<std::string, DomainStatus> view_;  // managed domains, as last listed
  // heartbeatSeq() when each domain in view_ was first listed
  std::map<std::string, int64_t> first_seen_seq_;
  bool view_ok_ = false;  // the last listing succeeded
  Capacity capacity_;
  std::map<std::string, VmTrack> tracks_;
  std::vector<DomainEvent> pending_events_;

  std::vector<DomainReport> reports_;    // built at the end of runOnce()
  AgentStateStore* state_store_ = nullptr;
  std::optional<PersistedAgentState> saved_;  // as last saved or loaded
  // set_.peers changes (applySet() with a peer list) and the one saved_
  // holds: saveState() compares the peer lists only when they differ.
  int64_t set_peers_gen_ = 0;
  int64_t saved_peers_gen_ = -1;
  NoPeerView no_peers_;
  PeerView* peers_ = &no_peers_;
  bool external_heartbeats_ = false;
  std::function<void()> wake_;
  bool fence_announced_ = false;  // core: the current self-fence was announced

  // Held while a heartbeat is built and sent, and while events are sent, so
  // that the controller learns things in the order they happened: an event
  // (vm.crashed) never overtakes a heartbeat built before it, and the events
  // a heartbeat's snapshot reflects travel inside it (Heartbeat::events).
  // Taken before lease_mu_. The core only try-locks it and sends later.
  FloatingAddresses* addresses_ = nullptr;
  HostReporter* host_reporter_ = nullptr;
  std::vector<FloatingAddressSpec> address_known_;  // the last set's addresses
  std::vector<WantedAddress> addresses_wanted_;     // as the last pass wanted them

  std::mutex send_mu_;
  bool events_deferred_ = false;  // core: a flush found a heartbeat in flight

  // ---- shared by the core and the heartbeat thread ----
  mutable std::mutex lease_mu_;  // guards everything below
  Millis interval_ms_;
  Millis last_heartbeat_ms_ = 0;
  Millis next_heartbeat_ms_ = 0;
  int64_t seq_ = 0;
  bool link_up_ = false;                 // the last heartbeat was answered
  std::optional<Code> link_condition_;   // last heartbeat outcome; logged on change
  Heartbeat published_;                  // what the next heartbeat carries
  int64_t published_gen_ = 0;            // runOnce() publications so far
  int64_t published_events_ = 0;         // events emitted before that publication
  std::vector<DomainReport> last_sent_;  // carried by the last answered heartbeat
  std::vector<std::string> last_sent_addresses_;  // ditto
  int64_t last_sent_version_ = -1;
  int64_t sent_serial_ = 0;  // bumped when last_sent_ changes
  // reportDueLocked()'s last comparison of published_.domains and last_sent_.
  mutable int64_t same_checked_gen_ = -1;
  mutable int64_t same_checked_sent_ = -1;
  mutable bool same_as_sent_ = false;
  std::optional<AssignmentSet> answer_;  // answered set not yet applied by the core
  LeaseState lease_state_ = LeaseState::kNone;
  Millis lease_until_ms_ = 0;
  Millis last_answered_ms_ = 0;  // send time of the last answered heartbeat
  // Heartbeats that went out late or were answered slowly (noteSlowHeartbeat):
  // when the last line about them was logged, and how many came since.
  // Guarded by send_mu_.
  Millis slow_logged_ms_ = 0;
  int slow_unlogged_ = 0;
  bool answered_ = false;        // a heartbeat of this process was answered
  int64_t last_answered_gen_ = 0;  // publication the last answered heartbeat carried
  Millis judge_from_ms_ = 0;       // a restarted agent's peer checks had their time
  int running_managed_ = -1;       // active managed domains the core last saw (-1: none yet)
  size_t peer_count_ = 0;          // other declared hosts (the set's peers)
  bool has_peer_list_ = false;     // a set with the peer list arrived in this process
  std::string peers_digest_;       // AssignmentSet::peers_digest of the list held ("" = none)
  std::string controller_report_digest_;  // AssignmentSet::host_report_digest last answered
  std::string last_sent_report_digest_;   // HostReport::digest of the last answered heartbeat
  bool held_said_ = false;         // "keeping VMs while the controller is away" logged
  std::string self_fence_reason_;  // last self-fence
  bool fence_unacked_ = false;     // self-fenced; no answer to a heartbeat carrying it yet

  TermWatch term_watch_;  // the highest leader term accepted (its own lock)

  std::map<std::string, Migration> migrations_;  // by vm
  std::vector<StartRunner::Start> starts_;  // queued by launch(), begun at the end of converge()
  StartRunner start_runner_;                // starts under way
  // Events not yet delivered, numbered by emit(); the core adds, senders (the
  // core's flushEvents(), the heartbeat) remove. Taken alone or with send_mu_
  // held, never together with lease_mu_.
  struct Outgoing {
    int64_t seq = 0;
    AgentEvent event;
  };
  mutable std::mutex outbox_mu_;
  std::deque<Outgoing> outbox_;  // guarded by outbox_mu_
  int64_t emitted_ = 0;          // core: events emitted so far
  std::map<std::string, std::string> failures_;  // key -> last logged failure
};

// A random id for one agent process ("a3f09c1e5b7d2e44").
std::string newAgentId();

// "10m", "90s", "1h", "1500ms": a duration as the budget reason quotes it.
std::string formatDuration(Millis ms);

}  // namespace tw
