// Value types shared by controller, agent, CLI and simulator: the declared
// policy (tiers, hosts, cluster settings), the states of VMs and hosts, and
// what agents report. Plain structs; JSON codecs live in tw/json.h.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "tw/clock.h"
#include "tw/status.h"

namespace tw {

// ---------------------------------------------------------------- policy ---

enum class HealthKind { kNone, kTcp, kHttp };

struct HealthCheckSpec {
  HealthKind kind = HealthKind::kNone;
  int port = 0;
  std::string path = "/health";  // http only
  int expect_status = 200;       // http only
  // tcp only: the check passes only when the server speaks first and what it
  // sends contains this (empty = an open connection is enough). A port forward
  // of QEMU's user network accepts for the guest before its service is up.
  std::string expect;
  Millis interval_ms = 2000;
  Millis timeout_ms = 1000;
  int failures = 3;          // consecutive failed checks before unhealthy
  Millis grace_ms = 10000;   // after a start, failures do not count for this long

  bool operator==(const HealthCheckSpec&) const = default;
};

struct RestartBudget {
  int restarts = 3;            // restarts in place allowed within window_ms
  Millis window_ms = 600000;   // 10 min
  int relocations = 2;         // then moves to another host allowed within window_ms
  Millis backoff_initial_ms = 0;   // first restart at once
  Millis backoff_max_ms = 30000;   // doubling from 1 s after the first, capped
};

enum class SpreadMode { kRequired, kPreferred, kNone };

struct PlacementSpec {
  SpreadMode spread = SpreadMode::kPreferred;  // replicas on distinct hosts
  std::vector<std::string> preferred_hosts;    // tried first, in order
  std::vector<std::string> required_hosts;     // only these (empty = any)
};

struct ServicePort {
  std::string name;        // "http", "mysql"
  int port = 0;            // guest port
  std::string protocol = "tcp";
};

enum class StorageKind { kEphemeral, kShared };

struct StorageSpec {
  StorageKind kind = StorageKind::kEphemeral;  // copy-on-write overlay of the image
  std::string path;                            // kShared: a path every host sees
  std::string pool;  // kShared, instead of path: a libvirt storage pool (dir, fs or netfs) of that
                     // name on every host; the disk goes into its target directory
};

// Backups of a tier's disks to a DR place (docs/backups.md). Only tiers on
// shared storage have them: an ephemeral disk is rebuilt from the image.
struct BackupSpec {
  Millis every_ms = 0;  // 0 = no backups
  int keep = 0;         // newest backups kept per VM (>= 1 when every_ms > 0)
  std::string to;       // absolute directory every host that may run the VM sees
  bool enabled() const { return every_ms > 0; }
  bool operator==(const BackupSpec&) const = default;
};

// One backup of a VM's disk: what the agent reports ("backup.done" /
// "backup.failed", AgentEvent::backup) and the controller's catalogue keeps
// (the done ones; docs/backups.md).
struct BackupRecord {
  std::string id;         // "20261206T180000Z-1a2b3c4d": <UTC start>-<8 hex>
  std::string vm;
  std::string tier;
  std::string host;       // whose agent took it
  std::string path;       // <backup.to>/<vm>/<id>.qcow2
  Millis taken_ms = 0;    // start, clock time (ms since the epoch)
  Millis duration_ms = 0;
  int64_t bytes = 0;
  std::string method;     // "backup-api" | "snapshot-commit"
  int64_t request = 0;    // the Assignment::backup_request it answers (0 = the schedule)
  std::string error;      // "backup.failed": why
  bool operator==(const BackupRecord&) const = default;
};

// A tier's floating address (policy `address:`): one address, held by the
// host of one running replica at a time, with the tier's ports forwarded on
// it to that replica (docs/policy.md, "Floating address").
struct FloatingAddressSpec {
  std::string cidr;       // canonical "10.213.0.100/24" (tw/ip_prefix.h); "" = none
  std::string interface;  // host interface; "" = the one whose subnet holds the address
  bool set() const { return !cidr.empty(); }
};

struct TierSpec {
  std::string name;
  std::string image;
  int replicas = 1;
  int vcpus = 1;
  int memory_mib = 128;
  std::vector<std::string> after;  // tiers that must be healthy first
  int priority = 0;                // higher restarts/recovers first within a tier rank
  int min_healthy = 0;             // replicas that must pass for the tier to be healthy (0 = all)
  PlacementSpec placement;
  RestartBudget restart;
  HealthCheckSpec health;
  std::vector<ServicePort> ports;
  StorageSpec storage;
  BackupSpec backup;
  FloatingAddressSpec address;
  SourceLocation address_at;  // where `address:` is written (cross-tier checks)
  SourceLocation storage_at;    // where `storage.path` / `storage.pool` is written
  SourceLocation backup_to_at;  // where `backup.to` is written
  SourceLocation where;  // where the tier was declared
};

enum class HostRole { kActive, kSpare };
// kAgent: a fence agent of the controller's own configuration (--fence-agents),
// named by the policy. A policy never holds a command.
enum class FenceMethod { kNone, kLibvirt, kAgent };

struct HostSpec {
  std::string name;
  std::string uri;               // libvirt URI the controller may use to reach the host
  HostRole role = HostRole::kActive;
  int cpus = 0;                  // capacity override; 0 = as the agent reports
  int64_t memory_mib = 0;        // capacity override; 0 = as the agent reports
  FenceMethod fence = FenceMethod::kLibvirt;
  std::string fence_agent;       // kAgent: its name in the controller's configuration
  SourceLocation fence_agent_at; // kAgent: where the policy names it
  // Read from a policy stored before fence agents existed (fence: command):
  // its command is dropped and never run; fence is libvirt or none.
  bool fence_legacy_command = false;
  SourceLocation where;
};

enum class NPlusOneMode { kRefuse, kWarn, kOff };

struct ClusterSettings {
  Millis heartbeat_interval_ms = 1000;
  int suspect_after_missed = 1;       // missed heartbeats before 'suspect'
  Millis dead_after_ms = 3000;        // no heartbeat for this long (+ libvirt silent) = dead
  Millis lease_ms = 5000;             // agent self-fences when it cannot renew in time
  Millis fence_margin_ms = 1000;      // safety margin after lease expiry
  Millis tier_order_timeout_ms = 60000;
  NPlusOneMode n_plus_one = NPlusOneMode::kWarn;
  // Event log retention: events older than this are pruned in the
  // background, and the oldest beyond event_retention_rows (issue #16).
  Millis event_retention_ms = 7 * 24 * 3600 * 1000LL;
  int64_t event_retention_rows = 1000000;
};

struct PolicyFile {
  std::string name;     // base name, "demo.yaml"; the key an apply replaces
  std::string content;  // YAML text as applied
};

// The merged, validated desired state of all applied files.
struct Policy {
  ClusterSettings settings;
  std::vector<HostSpec> hosts;   // in declaration order
  std::vector<TierSpec> tiers;   // in declaration order

  const TierSpec* findTier(const std::string& name) const;
  const HostSpec* findHost(const std::string& name) const;
  // Tiers sorted so that every tier comes after the tiers in its `after:`
  // (ties: higher priority first, then declaration order). REQUIRES: acyclic.
  std::vector<const TierSpec*> tiersInOrder() const;
};

// ------------------------------------------------------------ runtime state ---

enum class VmState {
  kPending,     // desired, not placed (reason says why)
  kStarting,    // assigned, agent is defining/starting it
  kRunning,     // domain running (health separately)
  kStopped,     // shut off on purpose
  kCrashed,     // domain died
  kRestarting,  // agent restarts it in place
  kMigrating,
  kFencing,     // its host is being fenced
  kRecovering,  // being rebuilt elsewhere
  kError,       // budget exhausted; a person must look
};

enum class HostState { kUnknown, kOnline, kSuspect, kOffline, kFenced, kMaintenance };

enum class Health { kUnknown, kHealthy, kUnhealthy };

const char* toString(VmState s);
const char* toString(HostState s);
const char* toString(Health h);
const char* toString(HostRole r);
const char* toString(FenceMethod f);
const char* toString(NPlusOneMode m);
const char* toString(SpreadMode m);
const char* toString(HealthKind k);
const char* toString(StorageKind k);
std::optional<VmState> vmStateFromString(const std::string& s);
std::optional<HostState> hostStateFromString(const std::string& s);
std::optional<Health> healthFromString(const std::string& s);

struct Capacity {
  int cpus = 0;
  int64_t memory_mib = 0;
};

// What the controller keeps about one VM (one row of the vms table).
struct VmRecord {
  std::string name;       // "<tier>-<ordinal>", e.g. "apache-1"
  std::string tier;
  int ordinal = 0;        // 1-based
  std::string host;       // empty = not placed
  int64_t epoch = 0;      // bumped on every (re)assignment
  VmState state = VmState::kPending;
  Health health = Health::kUnknown;
  int restarts = 0;       // restarts reported in the current budget window
  int relocations = 0;
  std::string reason;     // why it is in its state ("no host has 512 MiB free")
  Millis updated_ms = 0;
};

// What the controller keeps about one host (one row of the hosts table).
struct HostRecord {
  std::string name;
  HostState state = HostState::kUnknown;
  Millis state_since_ms = 0;
  Capacity capacity;      // as last reported by the agent
  std::string reason;
  // Its agent's host watchdog timeout as a leader last heard it in a
  // heartbeat (Heartbeat::watchdog_ms; 0 = the agent arms none); -1 = never
  // heard (schema v4, docs/ha.md "What a new leader finds in the store"). A
  // controller that has not heard the host yet waits this long for its
  // watchdog before a lease fence instead of at least a whole lease.
  Millis watchdog_ms = -1;
};

struct EventRecord {
  int64_t id = 0;         // assigned by the store, increasing
  Millis t_ms = 0;
  std::string level;      // "info", "warn", "error"
  std::string kind;       // "vm.placed", "vm.restarted", "host.online", "policy.applied", ...
  std::string subject;    // "vm/apache-1", "host/h1", "policy/3"
  std::string message;
};

// A failure and what the system did about it, step by step
// (detected -> fenced -> placed -> started -> healthy).
struct IncidentStep {
  std::string step;
  Millis t_ms = 0;
  std::string detail;
};

struct IncidentRecord {
  int64_t id = 0;          // assigned by the store
  std::string subject;     // "vm/web-1", "host/h1"
  std::string kind;        // "vm.crashed", "vm.unhealthy", "host.failed", ...
  Millis opened_ms = 0;
  Millis closed_ms = 0;    // 0 = open
  std::string summary;
  std::vector<IncidentStep> steps;
};

// A multi-step action journaled before it starts (migration, fencing), so
// that a restarted controller resumes it.
struct ActionRecord {
  int64_t id = 0;          // assigned by the store
  std::string kind;        // "migrate", "fence"
  std::string subject;     // "vm/web-1", "host/h1"
  std::string data_json;   // what the action needs to resume
  Millis started_ms = 0;
};

struct PolicyRecord {
  int64_t version = 0;    // assigned by the store, increasing
  Millis applied_ms = 0;
  std::string digest;     // sha-like digest of the files, to see "nothing changed"
  std::vector<PolicyFile> files;  // every file in force (the merged set)
};

}  // namespace tw
