// The controller's logic: desired state (the applied policy), the cluster's
// memory (SQLite), placement, and the assignments agents converge to.
//
// Single-threaded: one thread (the daemon's loop, or the simulator) owns a
// Controller and makes every call. Time comes from the injected Clock; the
// daemon calls runOnce() every tick, the simulator steps it on a virtual clock.
#pragma once

#include <algorithm>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "tw/clock.h"
#include "tw/json.h"
#include "tw/model.h"
#include "tw/placement.h"
#include "tw/placement_index.h"
#include "tw/protocol.h"
#include "tw/status.h"
#include "tw/store.h"
#include "controller/apply_checks.h"
#include "controller/backup_book.h"
#include "controller/event_retention.h"
#include "controller/fence_agents.h"
#include "controller/host_connector.h"
#include "controller/path_probes.h"
#include "controller/term_guard.h"
#include "controller/assignment_changes.h"
#include "controller/vms_by_host.h"

namespace tw {

class LeaderRenewals;  // controller/leader_renewals.h

struct PlanItem {
  std::string vm;
  std::string tier;
  std::string host;    // target host (empty for pending / delete)
  std::string action;  // create | keep | move | delete | pending
  std::string reason;
};

// One page of a list (GET /api/v1/vms and /hosts ?limit=&after=): at most
// `limit` items (0: all of them) after the item named `after` (empty: from
// the first), in the list's order. The answer names the last item in "next"
// when more follow.
struct PageRequest {
  int limit = 0;
  std::string after;
  // Only these (GET /api/v1/vms?names=a,b): the dashboard re-reads the VMs
  // an event named, not all of them. Names that do not exist are left out.
  std::vector<std::string> names;
};

struct ApplyResult {
  bool dry_run = false;
  bool applied = false;  // a new policy version was written
  bool changed = false;  // the file set differs from the one in force
  int64_t version = 0;   // policy version in force after the call
  std::vector<PlanItem> plan;
  NPlusOneReport n_plus_one;
  std::vector<std::string> warnings;
  // ProbeMode::kWait (path_probes.h): the apply waits for the online hosts
  // in `pending_hosts` to report its new paths; nothing was decided, call
  // again. `unchecked_hosts`: online hosts that did not report them in time
  // (the apply went on; a warning says so).
  bool pending = false;
  std::vector<std::string> pending_hosts;
  std::vector<std::string> unchecked_hosts;
};

// How an apply treats paths and pools (storage.path, storage.pool,
// backup.to) that online hosts have not reported yet (path_probes.h).
enum class ProbeMode {
  kDecideNow,    // on the reports held now (a host that has not reported proves nothing)
  kWait,         // ask the hosts; ApplyResult::pending until they answered or the wait ended
  kStopWaiting,  // the caller waits no longer: hosts still unreported are unchecked
};

class Controller {
 public:
  // REQUIRES: store, clock and hosts outlive the controller. Without a
  // HostConnector, no second liveness signal exists and fencing relies on
  // fence agents failing and lease expiry. `fence_agents`: the controller's
  // configuration (--fence-agents); a policy may name only these.
  Controller(Store& store, Clock& clock, HostConnector* hosts = nullptr,
             FenceAgents fence_agents = {});

  // Loads the policy in force, hosts and VMs from the store. Call once, first.
  // Hosts are given one dead_after of grace to heartbeat again; one declared
  // dead but not fenced before the restart becomes suspect (its fence is not
  // resumed: it is judged afresh).
  Status recover();
  // A follower replica's read-only view (controller/replica.h): loads what
  // recover() loads and nothing else. It writes nothing, emits no event and
  // judges no host (no grace, no resumed journal); the view answers reads and
  // is replaced by a fresh one at the next refresh. Call once, on a new
  // Controller, instead of recover(); never call runOnce() on it.
  Status loadView();

  // Validates `files` on top of the files in force, plans, and (unless
  // dry_run) applies in one transaction. Errors: kInvalidArgument (with
  // file:line:column) for a bad policy or one naming a fence agent that the
  // controller's configuration does not define, kFailedPrecondition when it cannot be
  // placed or is not N+1 safe under n_plus_one: refuse. Nothing changes on error.
  // With ProbeMode::kWait, an apply naming a path or pool that an online
  // host has not reported yet returns ApplyResult::pending (nothing
  // changed) and the hosts are asked to check it; the caller calls again
  // with the same files until it is decided (ControllerService::applyPolicy).
  Result<ApplyResult> applyPolicy(const std::vector<PolicyFile>& files, bool dry_run,
                                  ProbeMode probe = ProbeMode::kDecideNow);

  // An agent's heartbeat: host liveness, capacity, observed domains.
  // Errors: kNotFound when the host is not declared in the policy in force.
  Result<AssignmentSet> handleHeartbeat(const Heartbeat& hb);
  Status handleAgentEvent(const AgentEvent& event);

  // Restarts a VM where it runs (a new epoch on the same host).
  Status restartVm(const std::string& name);
  // Demo: kills the VM's domain behind its agent's back (the agent sees a
  // crash and heals it). Errors: kNotFound, kFailedPrecondition.
  Status killVm(const std::string& name);
  // Clears a VM's error and budgets and retries placement at once.
  Status resetVm(const std::string& name);
  // Live-migrates a VM to `to_host` (the source agent runs the migration).
  // Errors: kNotFound, kFailedPrecondition (not running, target cannot take it).
  Status migrateVm(const std::string& name, const std::string& to_host);
  // Live-migrates every VM off the host (tier order), then marks it maintenance.
  Status drainHost(const std::string& host);
  // Returns a host in maintenance to service (it gets no VM back by itself).
  Status undrainHost(const std::string& host);

  // ---- backups (controller/controller_backups.cc, docs/backups.md) ----
  // Asks the VM's agent for a backup now; returns the request id.
  // Errors: kNotFound, kFailedPrecondition (its tier has no backup, not running).
  Result<int64_t> backupVm(const std::string& name);
  // Stops the VM, replaces its disk from backup `backup_id` and starts it
  // again (a new epoch on the same host); returns the restore id.
  // Errors: kInvalidArgument (malformed id), kNotFound (vm, backup),
  // kFailedPrecondition (a migration, recovery or restore of it under way).
  Result<int64_t> restoreVm(const std::string& name, const std::string& backup_id);
  // The catalogue: one VM's backups ("" = all), by vm then id.
  Result<Json> backupsJson(const std::string& vm);

  // Liveness, placement, assignments; writes state changes to the store.
  void runOnce();

  // An etcd replica: this controller acts for `term` while `leads()` says
  // so (controller/term_guard.h). Once it does not, or once a store write
  // of the current step failed, nothing this step decided leaves the
  // process: no set is published, no heartbeat answered, no fence run.
  // Without a call: the single controller on SQLite (term 0).
  void actForTerm(int64_t term, std::function<bool()> leads) { term_guard_.setTerm(term, std::move(leads)); }
  const TermGuard& termGuard() const { return term_guard_; }
  // Store writes that failed and wait to be written again (tests).
  const PendingWrites& pendingWrites() const { return guarded_store_.pending(); }

  // With several replicas (etcd, docs/ha.md): the lease renewals that
  // followers record count as heartbeats, and a lease-expiry fence first
  // commits its fence intent (controller/controller_renewals.cc). Null (the
  // default, SQLite): heartbeats alone renew. REQUIRES: outlives its use.
  void setLeaseRenewals(LeaderRenewals* renewals) { renewals_ = renewals; }

  // A heartbeat that reported no change was answered without the loop
  // (controller/heartbeat_fastpath.h): the host was heard now, as by
  // handleHeartbeat() with the same report. `peers_unreachable` (null:
  // unchanged): the report's durations of the peers it names unreachable,
  // the same peers as the report the loop took last. Returns whether the
  // host is online after it (controller_fastpath.cc).
  bool renewOffLoop(const std::string& host, const std::map<std::string, Millis>* peers_unreachable = nullptr);
  // The digest of the peer list agents are to hold (AssignmentSet::peers_digest).
  const std::string& peersDigest() const;

  // The assignments of one host (version increases on every change).
  // `agent_peers_digest`: the peer list the asking agent holds
  // (Heartbeat::peers_digest); when it is the current one the set leaves
  // the list out (AssignmentSet::peers_omitted).
  AssignmentSet assignmentsFor(const std::string& host, const std::string& agent_peers_digest = "") const;
  // Called (from inside the controller's thread) when a host's set changed.
  using AssignmentListener = std::function<void(const std::string& host, int64_t version)>;
  void setAssignmentListener(AssignmentListener listener) { assignment_listener_ = std::move(listener); }
  // Called for every event appended to the log.
  using EventListener = std::function<void(const EventRecord&)>;
  void setEventListener(EventListener listener) { event_listener_ = std::move(listener); }
  // Called on the loop thread just before a host silent for dead_after is
  // declared dead (offline, then fenced): heartbeats are no longer answered
  // off the loop for it (HeartbeatFastPath::close), and it returns true when
  // some were answered that the loop has not applied yet. The host is then
  // not declared dead: it was heard, and the renewals are applied at the
  // next step. Set by ControllerService; unset, nothing is answered off the
  // loop (controller/heartbeat_fastpath.h: why this, not a clock, keeps an
  // answer off the loop from outliving the lease fence's wait).
  using OffLoopCloser = std::function<bool(const std::string& host)>;
  void setOffLoopCloser(OffLoopCloser close) { off_loop_closer_ = std::move(close); }

  // ---- read side (JSON as in docs/api.md) ----
  Json clusterJson() const;
  // Hosts in policy order. Errors: kInvalidArgument when `after` names no
  // declared host.
  Result<Json> hostsJson(const PageRequest& page) const;
  Json hostsJson() const { return *hostsJson(PageRequest{}); }
  Json tiersJson() const;
  // VMs by name; `after` need not exist (the page starts after it in name order).
  Json vmsJson(const PageRequest& page) const;
  Json vmsJson() const { return vmsJson(PageRequest{}); }
  Result<Json> vmJson(const std::string& name);
  Result<Json> eventsJson(int64_t since, int limit);
  // The newest `n` events, oldest first; last_id is the newest id (the
  // dashboard's start: ?tail=N, not a walk through the whole log).
  Result<Json> eventsTailJson(int n);
  Json incidentsJson() const;
  // Where clients reach a tier's services: one entry per service port (the
  // tier's `ports:`, else its health check port) of every VM that its current
  // host last reported running at its current epoch with a host port for that
  // guest port; sorted by vm, then port. Errors: kNotFound (unknown tier).
  Result<Json> endpointsJson(const std::string& tier) const;
  std::string metricsText();

  // ---- inspection (tests, simulator) ----
  const Policy& policy() const { return policy_; }
  int64_t policyVersion() const { return policy_record_.version; }
  const VmRecord* vm(const std::string& name) const;
  const HostRecord* host(const std::string& name) const;
  // Assignment sets built to see whether they changed, since the start (a
  // tick in which nothing changed builds none).
  int64_t assignmentSetBuilds() const { return assignment_set_builds_; }
  // Placement passes (reconcile()) since the start: they run only when
  // placement's input may have changed.
  int64_t placementRuns() const { return placement_runs_; }
  // Of those, the ones that placed every VM (place()): the first, and those
  // after a policy change; the others decided only what changed
  // (tw/placement_index.h).
  int64_t placementFullRuns() const { return placement_full_runs_; }
  // Check mode (tests, the simulator): after each incremental placement run,
  // place() runs on the same input too, and a difference aborts the process
  // with both decisions logged. Default: the environment variable
  // TW_PLACEMENT_CHECK set to anything but "" or "0" (docs/placement.md).
  void setPlacementCheck(bool on) { check_placement_ = on; }
  // Off: every placement run is place() on every VM, as before
  // PlacementIndex (bench/fence_tick compares the two). Default on.
  void setIncrementalPlacement(bool on) { incremental_placement_ = on; }
  std::vector<VmRecord> vms() const;
  std::vector<HostRecord> hosts() const;
  // The host that holds `tier`'s floating address now ("" = nobody).
  std::string addressHolder(const std::string& tier) const;

 private:
  struct HostRuntime {
    HostRecord rec;
    bool seen = false;            // heartbeated since this controller started
    Millis declared_ms = 0;       // when this controller first knew the host
    Millis last_heartbeat_ms = 0;
    std::string agent_id;
    Capacity reported;
    // From its latest heartbeat (memory only: the next heartbeat after a
    // controller restart brings them back). Read by endpointsJson().
    std::string service_address = "127.0.0.1";   // where its port forwards listen
    std::map<std::string, DomainReport> domains;  // by vm
    // Peer checks (docs/fencing.md): where its agent answers them, and the
    // peers it reported unreachable (host -> for how long, ms).
    std::string peer_address;
    std::map<std::string, Millis> peers_unreachable;
    // Its last self-fence, as its agent reported it.
    std::string self_fence_reason;
    Millis self_fenced_ms = 0;
    // Its agent's host watchdog (Heartbeat::watchdog_ms; 0 = none).
    Millis watchdog_ms = 0;
    // Quorum against it: since when the votes that cannot reach it are a
    // majority (0 = not now), and whether "no quorum" was said.
    Millis quorum_since_ms = 0;
    bool no_quorum_said = false;
    bool lease_wait_said = false;  // "not fencing by lease: no quorum" said
    // When its libvirt was first seen not answering after it went silent (0:
    // not yet): tells a dead agent (libvirt answered long after) from a host
    // that lost power or its network (both at once).
    Millis libvirt_lost_ms = 0;
    int64_t assignments_version = 0;  // version of the set last published
    std::string assignments_digest;   // to tell whether the set changed
    // Failure handling.
    bool agent_warned = false;        // "agent silent, libvirt answers" said once
    // Its agent was seen dead (silent while libvirt answered) before the host
    // went dark: nobody enforces its lease, so lease expiry fences nothing.
    bool lease_unenforced = false;
    bool unfenceable_said = false;
    bool fencing = false;             // declared dead, fence under way
    bool fence_libvirt_pending = false;
    bool fence_agent_pending = false;
    bool fence_agent_tried = false;
    int64_t fence_action_id = 0;
    std::set<std::string> recovering_vms;  // VMs displaced by its failure
    // Drain.
    bool draining = false;
    int64_t drain_action_id = 0;
    // Floating addresses (controller_address.cc), from its last heartbeat.
    bool addresses_reported = false;          // under a set of this controller
    int64_t addresses_applied_version = 0;    // the set version it had applied
    std::set<std::string> addresses_held;     // "A/N"
    std::set<std::string> drain_failed;    // VMs whose migration failed
    // What its agent reported about the host (controller_site.cc); digest ""
    // = nothing yet. Memory only: agents send it again to a new controller.
    HostReport report;
  };
  struct VmRuntime {
    Millis waiting_since_ms = 0;      // tier-order gate start
    bool released = false;            // tier-order gate passed
    std::set<std::string> avoid;      // hosts it must not be placed on
    std::vector<Millis> relocations;  // times of budget relocations (window)
    int64_t relocated_epoch = -1;     // epoch whose exhausted budget was handled
    bool error = false;               // budgets spent: runs nowhere until reset
    // Live migration under way.
    std::string migrate_to;
    int64_t migrate_epoch = 0;
    int64_t migrate_action_id = 0;
    int64_t last_migrate_epoch = 0;
    // A drain moves a VM that is not running (crashed, restarting, ...) in
    // two steps: it leaves the host's set first (evict_from), and is placed
    // elsewhere only once that host's agent reported a set from this
    // controller of at least evict_version (the first without it) and no
    // running copy. Its agent may restart it at any moment until then.
    // It stays out of that host's set until it is placed elsewhere (or
    // the eviction is cancelled): a heartbeat answer in between must not
    // hand it back.
    std::string evict_from;
    int64_t evict_version = 0;  // 0: the set without it is not published yet
    bool evict_confirmed = false;
  };

  // A tier's floating address: who holds it (controller_address.cc).
  struct AddressHold {
    std::string cidr;             // the address this hold is about
    std::string host, vm;         // the holder; "" = nobody
    std::string releasing;        // a host that must drop it before anyone gets it
    std::string release_why;
    int64_t release_version = 0;  // 0: the set without it is not published yet
  };
  void noteAddressesHeld(HostRuntime& h, const Heartbeat& hb);
  const VmRecord* addressCandidate(const std::string& tier) const;
  void driveAddresses();
  void claimAddress(const TierSpec& t, AddressHold& hold);
  void startAddressRelease(const std::string& tier, AddressHold& hold, const std::string& why);
  void finishAddressRelease(const std::string& tier, AddressHold& hold);
  void noteAddressReleaseVersions();
  const FloatingAddressSpec* addressHeldFor(const VmRecord& vm, const std::string& host) const;

  Status loadPolicy(const PolicyRecord& record);
  Status loadIncidentsAndJournal(bool resume);
  HostRuntime& ensureHost(const std::string& name);
  // Hosts still unknown (never reported) within dead_after of being declared:
  // new VMs wait for them instead of piling onto the first host that reports.
  std::vector<std::string> settlingHosts() const;
  std::vector<HostView> hostViews(const Policy& policy) const;
  PlacementInput placementInput(const Policy& policy) const;
  // One VM's part of placementInput(policy): its current host and avoid set.
  PlacementIndex::VmInput placementInputOf(const Policy& policy, const std::string& vm) const;
  // reconcile()'s placement of the policy in force on `hosts`: through
  // placement_index_ when it can (a partial result), else place() on
  // everything (controller_placement.cc).
  PlacementResult placeForReconcile(const std::vector<HostView>& hosts);
  std::vector<PlanItem> planItems(const PlacementResult& placed) const;
  // runOnce() and handleHeartbeat() without their store batch.
  void tick();
  Result<AssignmentSet> heartbeat(const Heartbeat& hb);
  void checkLiveness();
  // Renewals through followers (controller_renewals.cc): read while some host
  // is silent; a renewed host is alive, as after a heartbeat.
  void noteRenewals();
  void renewedThrough(HostRuntime& h, const std::string& by);
  // Before a lease-expiry fence: true when its fence intent committed; false
  // when it did not (the host renewed since: it is alive again) or the store
  // failed (tried again next pass).
  bool leaseFenceIntended(HostRuntime& h);
  // A heartbeat reached this leader: a fence intent of the host is cleared.
  void clearFenceIntent(const HostRuntime& h);
  // The votes that say `target` is unreachable: the controller's own (it is
  // silent to us) plus each other host with a fresh heartbeat that reported
  // it unreachable for at least the peer timeout. Sets `detail` for messages.
  // Every host with a fresh heartbeat votes, whatever its state
  // (controller_quorum.cc).
  int votesAgainst(const HostRuntime& target, std::string& detail) const;
  // Whether a lease-expiry fence of `target` is safe now: some instant at
  // least fence_margin ago, after its lease ran out, is covered by the
  // reports of enough hosts (each true only up to its own receipt, however
  // fresh) to make a majority with the controller. Sets `detail`.
  bool leaseFenceWitnessed(const HostRuntime& target, std::string& detail) const;
  // How long a lease fence of `target` waits on top of fence_margin for its
  // host watchdog to have fired (docs/fencing.md, "Host watchdog"): its
  // agent's reported timeout; not heard from in this process: the timeout a
  // controller heard last and stored (HostRecord::watchdog_ms), else at
  // least the lease (the agent warns when its watchdog is longer).
  Millis watchdogWaitMs(const HostRuntime& target) const;
  // A heartbeat of `h` reported `watchdog_ms`: kept in memory and in h.rec.
  // True when h.rec changed (the caller stores it before the heartbeat is
  // answered: a failed write withholds the answer, so no agent holds a
  // lease that the store's timeout does not cover).
  bool noteWatchdog(HostRuntime& h, Millis watchdog_ms);
  int totalVotes() const { return static_cast<int>(policy_.hosts.size()) + 1; }
  // How long a peer goes unanswered before it counts as unreachable: half of
  // dead_after (at least one heartbeat interval), so that the hosts' reports
  // are in by the time the controller's own dead_after has passed.
  Millis peerTimeoutMs() const {
    return std::max(policy_.settings.heartbeat_interval_ms, policy_.settings.dead_after_ms / 2);
  }
  void reconcile();
  // Opens the tier-order gate of placed VMs whose `after` tiers are healthy
  // (or whose wait exceeded tier_order_timeout).
  void releaseGated();
  bool tierHealthy(const std::string& tier) const;
  // Assignment sets (controller_assignments.cc). publishAssignments() gives
  // every host whose set changed a new version and tells the listener; it
  // looks only at the hosts marked by the calls below since its last run
  // (controller/assignment_changes.h), and does nothing when none was.
  void publishAssignments();
  // To be called wherever what an assignment set holds may change.
  // Everything (the policy, a recovery: every host's set may change);
  // `moved`: the VmsByHost index is rebuilt whole.
  void assignmentsTouched(bool moved);
  // One VM: its host, epoch, release, eviction, migration, backup or
  // restore request, or address; `moved`: its host or migration target
  // changed, or it came or went. Before or after the change, in the same
  // step (the hosts it was listed under are marked too).
  void assignmentsTouched(const std::string& vm, bool moved);
  // One host's set, not through one of its VMs (a new host).
  void hostAssignmentsTouched(const std::string& host);
  const VmsByHost& vmsByHost() const;
  const std::vector<Assignment>& assignmentsOn(const std::string& host) const;
  // The host's assignments built from the index, no cache (the check mode).
  std::vector<Assignment> buildAssignmentsOn(const std::string& host, const VmsByHost& index) const;
  // Where the index lists `vm` now: its host and its migration's destination.
  std::vector<std::string> vmHostsNow(const std::string& vm) const;
  // Every (vm, host) pair the index holds when rebuilt now (vmHostsNow of all).
  VmsByHost::Placement placementNow() const;
  // Check mode (TW_CHECK_INCREMENTAL=1): after a publish, every set and the
  // index equal a rebuild from scratch; aborts with the host that differs.
  void checkPublished() const;
  std::string specDigest(const TierSpec& tier) const;
  const std::string& cachedSpecDigest(const TierSpec& tier) const;
  // Every declared host with the peer address it last reported, policy order.
  const std::vector<PeerInfo>& allPeers() const;
  Assignment assignmentOf(const VmRecord& vm) const;
  void setHostState(HostRuntime& h, HostState state, const std::string& reason);
  // Failure handling (controller_healing.cc).
  void declareDead(HostRuntime& h, Millis silent);
  void advanceFencing(HostRuntime& h);
  void startFenceAgent(HostRuntime& h, const HostSpec& spec);
  void processFenceResults();
  // The policy's fence agents against the controller's configuration:
  // kInvalidArgument at the `agent:` value of the first that is not defined
  // (or cannot be used for its host).
  Status checkFenceAgents(const Policy& policy) const;
  Status checkFenceAgent(const HostSpec& spec) const;
  void fenced(HostRuntime& h, const std::string& method, const std::string& detail);
  void cancelFencing(HostRuntime& h, const std::string& why);
  void hostHeartbeatState(HostRuntime& h, const Heartbeat& hb);
  void relocate(VmRecord& vm, const std::string& why);
  void startMigration(VmRecord& vm, const std::string& to, const std::string& why);
  void finishMigration(VmRecord& vm, bool ok, const std::string& detail);
  void driveDrains();
  // Ends evictions from `host` (its drain ended, or it was fenced): the VMs
  // are back in its set, or moved by the fence.
  void cancelEvictions(const std::string& host);
  // A heartbeat of `hb.host` confirms the evictions from it that it can.
  void confirmEvictions(const Heartbeat& hb);
  void trackIncidents();
  IncidentRecord& openIncident(const std::string& subject, const std::string& kind,
                               const std::string& summary, const std::string& detail);
  void incidentStep(const std::string& subject, const std::string& step, const std::string& detail);
  void closeIncident(const std::string& subject, const std::string& detail);
  void saveIncident(IncidentRecord& incident);
  const HostSpec* hostSpec(const std::string& name) const { return policy_.findHost(name); }
  void setVmState(VmRecord& vm, VmState state, const std::string& reason);
  void saveVm(const VmRecord& vm);
  void saveHost(const HostRecord& host);
  void emit(const std::string& level, const std::string& kind, const std::string& subject,
            const std::string& message);
  int64_t nextVersion() { return ++version_counter_; }
  // Backups (controller_backups.cc).
  Status loadBackups();
  void handleBackupEvent(const AgentEvent& e);
  void trackRestores();
  void addBackupFields(Assignment& a) const;
  std::vector<std::string> backupWarnings(const TierSpec& t) const;
  // What hosts report about themselves (controller_site.cc, apply_checks.h).
  void noteHostReport(HostRuntime& h, const Heartbeat& hb);
  std::vector<ReportingHost> reportingHosts(const Policy& policy) const;
  Status checkSiteFacts(const Policy& next) const;  // the apply's refusal
  // Online (or maintenance) hosts of `next` that are not late (late: those
  // that are, path_probes.h) -> the checks of `next` their reports do not
  // name yet.
  std::map<std::string, HostChecks> unreportedChecksOf(const Policy& next, bool late = false) const;
  // The probe step of an apply (path_probes.h): true = pending. Else fills
  // `unchecked` (online hosts that did not answer in time, with what).
  bool probePaths(const Policy& next, const std::string& key, ProbeMode probe,
                  std::map<std::string, HostChecks>* unchecked);
  void noteSiteFindings();                          // the policy in force: warnings
  std::vector<std::string> siteWarnings(const std::string& tier) const;

  // Findings of checkSite() on the policy in force (controller_site.cc), by
  // tier: shown in GET /tiers, each new one an event.
  std::map<std::string, std::vector<std::string>> site_findings_;
  // hostChecksOf(policy_) for the sets, made for the policy of digest host_checks_of_.
  const HostChecks& hostChecks() const;
  mutable HostChecks host_checks_;
  mutable std::string host_checks_of_ = "-";
  PathProbes probes_;  // new paths of applies under way

  // Every write goes through guarded_store_, which tells term_guard_ of
  // failures (declared before store_: it is built first).
  TermGuard term_guard_;
  GuardedStore guarded_store_;
  Store& store_;
  Clock& clock_;
  NullHostConnector null_hosts_;
  HostConnector& host_connector_;
  const FenceAgents fence_agents_;
  // Fence outcomes known without the connector (an agent that cannot be
  // started), handed to processFenceResults() with the connector's.
  std::vector<FenceResult> local_fence_results_;
  Policy policy_;
  PolicyRecord policy_record_;
  std::map<std::string, HostRuntime> hosts_;
  std::map<std::string, VmRecord> vms_;
  std::map<std::string, VmRuntime> vm_runtime_;
  std::map<std::string, IncidentRecord> open_incidents_;  // by subject
  // Every VM whose tier-order gate may be closed (VmRuntime::released false),
  // and maybe some more: what releaseGated() looks at.
  std::set<std::string> gated_;
  // Every VM whose VmRuntime::evict_from is set, and maybe some more: what
  // confirmEvictions() looks at.
  std::set<std::string> evicting_;
  // Every host whose last heartbeat reported some peer unreachable, and maybe
  // some more (a superset: the rest report none): what votesAgainst() looks at.
  std::set<std::string> unreachable_reporters_;
  bool dirty_ = true;             // placement must run
  // While hosts settle (settlingHosts()): when the first wait ends, and
  // placement must run again (0: none settles).
  Millis settle_recheck_ms_ = 0;
  int64_t placement_runs_ = 0;    // placementRuns()
  int64_t placement_full_runs_ = 0;  // placementFullRuns()
  // What placement kept from its last run (tw/placement_index.h). Every VM
  // whose host or avoid set (error) changes outside reconcile() is touched.
  PlacementIndex placement_index_;
  bool check_placement_ = false;  // setPlacementCheck()
  bool incremental_placement_ = true;  // setIncrementalPlacement()
  bool view_only_ = false;        // loadView(): a follower's read-only view
  int64_t version_counter_ = 0;   // assignment set versions
  const std::string controller_id_;  // random per process: AssignmentSet::controller_id
  AssignmentListener assignment_listener_;
  OffLoopCloser off_loop_closer_;  // setOffLoopCloser()
  // Assignment sets: see assignmentsTouched(). The caches are rebuilt on
  // first use after a change (const readers, one thread).
  mutable AssignmentChanges assignment_changes_;  // hosts marked since the last publish
  mutable VmsByHost vms_by_host_;
  // Each host's assignments as last built; a host's entry is dropped when
  // its set may have changed (assignment_changes_ marks it).
  mutable std::map<std::string, std::vector<Assignment>> assignments_cache_;
  mutable std::map<std::string, std::string> spec_digests_;  // by tier
  mutable std::string spec_digests_of_;                       // policy digest
  uint64_t peers_gen_ = 0;  // bumped when a host's peer address changes
  mutable std::vector<PeerInfo> all_peers_;
  mutable std::string all_peers_digest_;  // of all_peers_
  mutable uint64_t peers_of_gen_ = 0;
  mutable std::string peers_of_policy_ = "-";  // never a policy digest: built on first use
  EventListener event_listener_;
  LeaderRenewals* renewals_ = nullptr;  // setLeaseRenewals()
  // metrics
  double reconcile_seconds_sum_ = 0;
  int64_t reconcile_count_ = 0;
  int64_t assignment_set_builds_ = 0;  // sets built by publishAssignments()
  EventRetention retention_;
  BackupBook backups_;
  Millis backups_since_ms_ = 0;  // when the catalogue was loaded (recover())
  std::map<std::string, AddressHold> address_holds_;  // by tier
  std::set<std::string> address_wait_said_;           // "tier/host" logged once
};

}  // namespace tw
