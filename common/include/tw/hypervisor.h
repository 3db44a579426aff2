// The Hypervisor: what an agent (and the controller, for fencing) needs from a
// host's virtualization layer. Implementations: LibvirtHypervisor (the only
// place that includes libvirt headers) and FakeHypervisor (tests, simulator).
//
// Managed domains carry our metadata in their own XML namespace
// (kMetadataNamespace): vm name, tier, epoch, policy version, spec digest.
// Domains without it are never touched: every call on a name that belongs to
// an unmanaged domain fails with kFailedPrecondition, and listManaged() skips
// them. The libvirt domain name is the VM name; the UUID is derived from it
// (uuidForVm), so a VM has one identity on every host.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "tw/model.h"
#include "tw/status.h"

namespace tw {

inline constexpr const char* kMetadataNamespace = "https://tierwarden.dev/xmlns/domain/1";
inline constexpr const char* kMetadataPrefix = "tw";

// Our identity of a domain, stored in its libvirt metadata.
struct DomainMeta {
  std::string vm;           // "apache-1"
  std::string tier;         // "apache"
  int64_t epoch = 0;
  int64_t policy_version = 0;
  std::string spec_digest;  // changes when the VM's definition must change
};

struct DomainSpec {
  DomainMeta meta;
  int vcpus = 1;
  int memory_mib = 128;
  // "test", "qemu" or "kvm"; empty = what the connection's driver runs
  // ("test" on the test driver, "qemu" elsewhere).
  std::string domain_type;
  // Direct kernel boot (empty = none): tiny tier images.
  std::string kernel;
  std::string initrd;
  std::string cmdline;
  std::string disk_path;    // qcow2 disk (overlay or shared); empty = diskless
  bool user_network = false;  // QEMU user networking (slirp), for service ports
  // Where the serial console is written (a file on the host); empty =
  // "<disk dir or /tmp>/<vm>.console.log".
  std::string console_path;
};

// A QEMU user-network port forward: address:host_port on the host reaches
// guest_port of the guest (TCP).
struct PortForward {
  std::string address = "127.0.0.1";
  int host_port = 0;
  int guest_port = 0;
  bool operator==(const PortForward&) const = default;
};

enum class DomainState { kNoState, kRunning, kBlocked, kPaused, kShutdown, kShutoff, kCrashed, kPmSuspended };
const char* toString(DomainState s);
// Running, blocked or paused: a copy of the VM exists and may run.
bool isActive(DomainState s);
// Running or blocked: the guest executes, and a service inside may answer
// (a paused one cannot: e.g. a live migration's destination before the
// switch-over).
inline bool isExecuting(DomainState s) { return s == DomainState::kRunning || s == DomainState::kBlocked; }

struct DomainStatus {
  DomainMeta meta;
  DomainState state = DomainState::kNoState;
};

enum class DomainEventKind {
  kDefined, kUndefined, kStarted, kSuspended, kResumed,
  kStopped,   // shut off by us or on purpose (destroy, shutdown)
  kCrashed,   // died: QEMU killed, guest crash, failed
  kMigrated,  // left this host by migration
};
const char* toString(DomainEventKind k);

struct DomainEvent {
  std::string vm;           // our VM name (libvirt domain name)
  DomainEventKind kind = DomainEventKind::kStopped;
  std::string detail;       // libvirt's detail, e.g. "failed", "destroyed"
};

struct MigrateOptions {
  bool live = true;
  bool unsafe = false;      // shared disk without cache=none
  // Copy the domain's disks to the destination (VIR_MIGRATE_NON_SHARED_INC:
  // the top overlay only; the destination has the same path prepared as an
  // overlay of the same base image).
  bool copy_storage = false;
  std::string migrate_uri;  // VIR_MIGRATE_PARAM_URI, e.g. unix://<socket>; empty = default
  // When set (epoch > 0), the domain arrives with this metadata
  // (VIR_MIGRATE_PARAM_DEST_XML): a migrated VM carries its new epoch.
  DomainMeta dest_meta;
};

// What Hypervisor::backupDisk did.
struct DiskBackup {
  int64_t bytes = 0;     // size of the target file
  std::string method;    // "backup-api" or "snapshot-commit" (the fallback)
};

using DomainEventHandler = std::function<void(const DomainEvent&)>;

class Hypervisor {
 public:
  virtual ~Hypervisor() = default;

  // Is the hypervisor reachable? (cheap; for liveness checks)
  virtual Status ping() = 0;
  virtual Result<Capacity> capacity() = 0;

  // Defines (or redefines, replacing the old definition) a managed domain.
  virtual Status define(const DomainSpec& spec) = 0;
  virtual Status start(const std::string& vm) = 0;
  // Starts several defined domains, one status per vm in the same order.
  // Independent starts may run at once: QEMU's start takes 0.4-2 s under
  // libvirt, and a host taking over a dead host's VMs starts them together.
  // The default starts them one after another. Blocks until every start
  // returned: the agent uses beginStarts() instead.
  virtual std::vector<Status> startAll(const std::vector<std::string>& vms) {
    std::vector<Status> out;
    out.reserve(vms.size());
    for (const std::string& vm : vms) out.push_back(start(vm));
    return out;
  }
  // Starts that run on their own (beginStarts): the caller polls them and
  // may walk away from one that never returns. Thread-safe; the object is
  // shared by the caller and the calls, so that a call still stuck in the
  // hypervisor after the caller let go touches nothing freed.
  class StartCalls {
   public:
    virtual ~StartCalls() = default;
    // The status of the start of vms[i] once its call returned; none while
    // it runs or waits for its turn.
    virtual std::optional<Status> result(size_t i) = 0;
    // The caller gave up on vms[i]: when its call has not begun, it never
    // does (kUnavailable, "given up"); a call under way runs on (its result is
    // kept, for the log).
    virtual void cancel(size_t i) = 0;
  };
  // Begins starting several defined domains and returns at once. A start
  // that may hang must not hold anything the caller needs (LibvirtHypervisor:
  // each runs on a connection of its own, never on the shared one). The
  // default runs startAll() before it returns (every result there at once):
  // in-process hypervisors, whose starts cannot hang.
  virtual std::shared_ptr<StartCalls> beginStarts(const std::vector<std::string>& vms);
  // Hard stop. Ok when the domain is not running.
  virtual Status destroy(const std::string& vm) = 0;
  // Removes the definition. Ok when absent. REQUIRES: not running.
  virtual Status undefine(const std::string& vm) = 0;

  // Every managed domain (ours by metadata), with its state. Sorted by vm.
  virtual Result<std::vector<DomainStatus>> listManaged() = 0;
  // kNotFound when there is no managed domain of that name.
  virtual Result<DomainStatus> domainState(const std::string& vm) = 0;

  // Lifecycle events of managed domains. The handler runs on the
  // implementation's event thread (LibvirtHypervisor) or synchronously inside
  // the call that caused the event (FakeHypervisor): it must be quick and must
  // not call back into the Hypervisor. One handler; a second call replaces it.
  virtual Status subscribe(DomainEventHandler handler) = 0;

  // Live-migrates a running managed domain to the host at dest_uri (libvirt
  // URI). On failure the domain keeps running here.
  virtual Status migrate(const std::string& vm, const std::string& dest_uri,
                         const MigrateOptions& options) = 0;

  // Service ports of a running domain with user networking (QEMU monitor:
  // HMP hostfwd_add / info usernet). Forwards live as long as the QEMU process:
  // after every start and every migration they must be added again.
  // Errors: kUnimplemented (the driver has no QEMU monitor: the test driver),
  // kNotFound (no such managed domain), kFailedPrecondition (not running, or
  // QEMU refused, e.g. the host port is taken).
  virtual Status addPortForward(const std::string& vm, const PortForward& forward) = 0;
  // The TCP forwards the domain's QEMU has now.
  virtual Result<std::vector<PortForward>> portForwards(const std::string& vm) = 0;
  // The target directory of storage pool `pool` (policy: storage.pool), which
  // must be defined and active on this host and keep its volumes as files
  // (types dir, fs, netfs). Errors: kNotFound (no such pool), kFailedPrecondition
  // (inactive, or volumes that are no files), kUnimplemented here.
  virtual Result<std::string> storagePoolDir(const std::string& pool) {
    return unimplemented("storage pools are not supported on this hypervisor (pool '" + pool + "')");
  }
  // A crash-consistent copy of the first disk of running managed domain `vm`
  // into `target_path` (a new, self-contained qcow2 file: no backing file),
  // while the VM keeps running. libvirt: the backup API in push mode
  // (virDomainBackupBegin), waiting for the job to finish; where libvirt or
  // QEMU refuse it (VIR_ERR_NO_SUPPORT, VIR_ERR_OPERATION_UNSUPPORTED), an
  // external disk-only snapshot, a copy of the then quiet disk, and a shallow
  // active block commit back into it. Blocks for the copy (about 0.1 s per
  // 64 MiB here): call it off the agent's loop. On failure no target is left.
  // Errors: kNotFound (no such managed domain), kFailedPrecondition (not
  // running, no disk, the target exists), kUnimplemented (the test driver),
  // kInternal/kUnavailable with libvirt's message.
  // `snapshot_commit_only`: skip the backup API (tests of the fallback).
  virtual Result<DiskBackup> backupDisk(const std::string& vm, const std::string& target_path,
                                        bool snapshot_commit_only = false) {
    (void)snapshot_commit_only;
    return unimplemented("disk backups are not supported on this hypervisor (vm '" + vm +
                         "' to '" + target_path + "')");
  }
};

// A stable UUID ("xxxxxxxx-xxxx-....") derived from the VM name.
std::string uuidForVm(const std::string& vm);

// Connects to a libvirt URI ("test:///default", "qemu:///system",
// "qemu+unix:///system?socket=..."). Keepalive (interval 1 s, count 2) is
// enabled where the driver supports it. Errors carry libvirt's message.
Result<std::unique_ptr<Hypervisor>> connectLibvirt(const std::string& uri);

}  // namespace tw
