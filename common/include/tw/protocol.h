// The agent <-> controller protocol, as one interface with two
// implementations: HTTP+JSON (the daemons; tw/http_link.h) and in-process
// (the simulator; it calls the controller directly). The same agent and
// controller code runs over both.
//
// Flow: the agent sends a Heartbeat every heartbeat interval (and at once after
// a change it must report); the answer is the host's full AssignmentSet and
// renews the agent's lease for lease_ms from the moment the heartbeat was sent.
// A new assignment reaches the agent without waiting for the next heartbeat:
// over HTTP by a long poll (waitAssignments), in-process by a direct call.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "tw/hypervisor.h"
#include "tw/model.h"
#include "tw/status.h"

namespace tw {

// What one VM on one host should be. The agent runs a VM only with the
// epoch of its current assignment (invariant 1).
struct Assignment {
  std::string vm;
  std::string tier;
  int64_t epoch = 0;
  int64_t policy_version = 0;
  std::string spec_digest;  // changes when the definition must change
  std::string image;
  int vcpus = 1;
  int memory_mib = 128;
  HealthCheckSpec health;
  RestartBudget restart;
  std::vector<ServicePort> ports;
  StorageSpec storage;
  std::vector<std::string> after;  // the tier's `after:` (a balancer's backend tier)
  // Set on one VM of a tier with a floating address, on the host that holds
  // it (docs/policy.md, "Floating address"): add the address to the host
  // and forward the tier's ports on it to this VM while it runs here.
  FloatingAddressSpec address;

  // Backups (docs/backups.md). The agent of the VM's host runs the tier's
  // schedule itself (backup.every, counted from the newest file in
  // <backup.to>/<vm>/), and takes one more at once whenever backup_request
  // grows (`twctl backup vm`): it reports each outcome as an AgentEvent
  // "backup.done" / "backup.failed" carrying `backup`.
  BackupSpec backup;
  int64_t backup_request = 0;  // 0 = none asked for
  // A restore (`twctl restore vm`): destroy the VM, replace its disk with the
  // file restore_from (a backup the catalogue holds), start it again; report
  // "backup.restored" / "backup.restore_failed" with restore_id. Done once per
  // restore_id.
  int64_t restore_id = 0;
  std::string restore_from;

  // Live migration, set by the controller while one is under way.
  // Source host: live-migrate the running domain to migrate_to_uri (libvirt
  // URI of the destination), giving it epoch migrate_epoch on arrival; report
  // AgentEvent "vm.migrated" (epoch = migrate_epoch) or "vm.migrate_failed"
  // (the domain keeps running here). Destination host: `incoming` = the
  // domain arrives by migration with this assignment's epoch: neither define
  // nor start it, and do not destroy it when it appears.
  std::string migrate_to_host;
  std::string migrate_to_uri;
  int64_t migrate_epoch = 0;
  bool incoming = false;
};

// What a host offers the policy in force (agent/host_report.h): the subnets of
// its interfaces, and whether the shared storage and DR places the policy
// names are there. The controller refuses a policy that a reporting host
// could not run (controller/apply_checks.h). Sent in a heartbeat only when it
// changed or the controller does not hold it (AssignmentSet::host_report_digest).
struct HostReport {
  std::string digest;                 // names this content ("" = no report)
  std::vector<std::string> subnets;   // canonical "10.213.0.0/24", "fd00::/64"
  // Path (storage.path, backup.to) -> a writable directory here.
  std::map<std::string, bool> paths;
  // storage.pool -> a pool of that name is defined and active here.
  std::map<std::string, bool> pools;
  // The agent's --address-interface ("" = none): an address in no subnet
  // goes there, so such a host takes any address.
  std::string address_interface;
  // This host never holds floating addresses (--no-floating-addresses, the
  // libvirt test driver): its subnets say nothing about where one can go.
  bool addresses_off = false;
  bool operator==(const HostReport&) const = default;
};

// What the controller asks every agent to check (HostReport::paths, pools):
// the storage paths, pools and backup.to of the policy in force.
struct HostChecks {
  std::vector<std::string> paths;
  std::vector<std::string> pools;
  bool operator==(const HostChecks&) const = default;
};

// Another host of the cluster, as an agent checks it (docs/fencing.md).
struct PeerInfo {
  std::string host;
  std::string address;  // "HOST:PORT" of its agent's peer listener; "" = not known yet
};

struct AssignmentSet {
  std::string host;
  int64_t version = 0;      // increases whenever this host's set changes
  // The controller process that made the set (random per process start).
  // Versions are ordered only within one process: a controller that lost
  // its state, or whose clock stepped back, may start lower.
  std::string controller_id;
  // The term of the leader that made the set: the etcd leader key's create
  // revision (controller/leader_lease.h); 0 from the single controller on
  // SQLite. An agent refuses a set of a term older than the newest it
  // accepted (agent/term_watch.h).
  int64_t term = 0;
  Millis lease_ms = 0;      // lease granted, from the heartbeat's send time
  Millis heartbeat_interval_ms = 1000;
  std::vector<Assignment> assignments;
  // Every other host declared in the policy in force. With this host and the
  // controller's witness vote they are the votes of the quorum: an agent
  // whose lease ran out self-fences only when the hosts it reaches, itself
  // included, could be outvoted (2 * reached < peers + 2).
  std::vector<PeerInfo> peers;
  // Names the whole peer list (every declared host with its address) as the
  // controller holds it. A heartbeat answer leaves `peers` out, and sets
  // peers_omitted, when the heartbeat said the agent holds this list already
  // (Heartbeat::peers_digest): at 1,000 hosts the list is most of an answer.
  std::string peers_digest;
  bool peers_omitted = false;
  // How long a peer may go unanswered before it counts as unreachable.
  Millis peer_timeout_ms = 3000;
  // Every floating address of the policy in force. An agent removes those
  // it finds on its host that no assignment of this set tells it to hold.
  std::vector<FloatingAddressSpec> addresses;
  // What this host is to check and report (HostReport), and the digest of
  // the report the controller holds for it ("" = none): the agent sends its
  // report again when its own digest differs.
  HostChecks checks;
  std::string host_report_digest;
  // "" = the leader took the heartbeat. Else the follower replica that
  // renewed the lease while the leader could not be reached (docs/ha.md,
  // "Agents renew their leases with any replica"): the set is the one the
  // leader last published; the heartbeat's events and reports were not taken.
  std::string renewed_by;
};

struct DomainReport {
  std::string vm;
  std::string tier;
  int64_t epoch = 0;
  DomainState state = DomainState::kNoState;
  Health health = Health::kUnknown;
  int restarts = 0;         // restarts in the current budget window
  std::string reason;       // last failure, if any
  std::map<int, int> ports;  // guest port -> host port on this host
};

// Something an agent saw or did ("vm.crashed", "vm.restarted", "vm.started",
// "vm.start_failed", "vm.destroyed", "host.self_fenced", ...).
struct AgentEvent {
  std::string host;
  std::string vm;           // may be empty for host events
  int64_t epoch = 0;
  std::string kind;
  std::string level = "info";
  std::string message;
  // "backup.done" / "backup.failed": the backup (id empty otherwise).
  // "backup.done" also names the backups of that VM pruned beyond `keep`.
  BackupRecord backup;
  std::vector<std::string> pruned;  // backup ids
};

struct Heartbeat {
  std::string host;
  std::string agent_id;     // random per agent process start
  int64_t seq = 0;
  Capacity capacity;
  int64_t assignments_version = 0;  // the version the agent has applied
  std::string assignments_controller;  // ... made by this controller process
  // Where this host's service port forwards listen (DomainReport::ports):
  // the address clients use to reach the VMs' services on this host.
  std::string service_address = "127.0.0.1";
  std::vector<DomainReport> domains;  // every managed domain on the host
  // Where this agent answers peer checks ("HOST:PORT"; "" = it does not).
  std::string peer_address;
  // The AssignmentSet::peers_digest of the peer list this agent holds ("" =
  // none yet): the answer carries the list only when it differs.
  std::string peers_digest;
  // Peers this agent has not reached (answered, and seeing it) for at least
  // peer_timeout_ms: host -> for how long (ms). The controller's quorum.
  std::map<std::string, Millis> peers_unreachable;
  // Set while the agent is self-fenced, or after a self-fence until its
  // first set from the controller: why it fenced itself.
  std::string self_fence_reason;
  // The host watchdog this agent arms and pets (agent/host_watchdog.h): it
  // resets the host at most this long after the agent stopped being
  // entitled to run its VMs (lease out and isolated, or the agent dead).
  // 0 = none. The controller's lease fence waits this long on top
  // (docs/fencing.md, "Host watchdog").
  Millis watchdog_ms = 0;
  // The floating addresses (AssignmentSet::addresses, "A/N") this host has
  // on its interfaces now. The controller gives an address to another host
  // only when the holder no longer reports it, or was fenced.
  std::vector<std::string> addresses_held;
  // Carried only when host_report.digest differs from the digest the
  // controller last answered (empty digest = not carried).
  HostReport host_report;
  // A compact heartbeat (tw/compact_heartbeats.h): it carries only host,
  // agent_id, seq, assignments_version, assignments_controller, peers_digest
  // and report_digest, the heartbeatDigest() of the full heartbeat it stands
  // for, which is the one the agent sent last and the controller answered.
  // It goes to its own route (POST .../heartbeat/compact). The controller
  // answers it as that full heartbeat when the digest is the one its fast
  // path holds for the host (controller/heartbeat_fastpath.h), else with 409
  // (report wanted); on any error the agent sends the full heartbeat at once.
  // A controller without the route answers 404, so an agent works with old
  // controllers and old agents never send one (docs/api.md).
  bool compact = false;
  std::string report_digest;
  // Agent events that this snapshot already reflects and that have not
  // been delivered yet, oldest first. The controller handles them before the
  // domains, so that a "crashed" never arrives after the report of the run
  // that followed it.
  std::vector<AgentEvent> events;
};

// The agent's side of the protocol.
class ControllerLink {
 public:
  virtual ~ControllerLink() = default;
  // Errors: kUnavailable (controller unreachable: retry), kPermissionDenied
  // (bad token), kNotFound (host not declared in any applied policy).
  virtual Result<AssignmentSet> heartbeat(const Heartbeat& hb) = 0;
  virtual Status sendEvent(const AgentEvent& event) = 0;
  // The agent refused the set the controller replica answered its last
  // heartbeat with (`pushed`: pushed to its long poll): a set of an older
  // term (agent/term_watch.h), from a deposed leader. A link to several
  // replicas sends the next one elsewhere; nothing is sent now. Default:
  // nothing (one controller).
  virtual void refusedAnswer(bool pushed) { (void)pushed; }
};

}  // namespace tw
