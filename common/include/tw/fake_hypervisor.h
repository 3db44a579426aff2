// An in-memory Hypervisor for unit tests and the simulator, with failure
// injection. Deterministic, single-threaded; events are delivered
// synchronously from the call that caused them.
#pragma once

#include <map>
#include <set>
#include <string>
#include <vector>

#include "tw/hypervisor.h"

namespace tw {

class FakeHypervisor final : public Hypervisor {
 public:
  explicit FakeHypervisor(Capacity capacity = {8, 16384});

  Status ping() override;
  Result<Capacity> capacity() override;
  Status define(const DomainSpec& spec) override;
  Status start(const std::string& vm) override;
  Status destroy(const std::string& vm) override;
  Status undefine(const std::string& vm) override;
  Result<std::vector<DomainStatus>> listManaged() override;
  Result<DomainStatus> domainState(const std::string& vm) override;
  Status subscribe(DomainEventHandler handler) override;
  Status migrate(const std::string& vm, const std::string& dest_uri,
                 const MigrateOptions& options) override;
  // Forwards live until the domain stops, crashes, restarts or migrates; a
  // host port one of this host's domains holds is refused (kFailedPrecondition).
  Status addPortForward(const std::string& vm, const PortForward& forward) override;
  Result<std::vector<PortForward>> portForwards(const std::string& vm) override;
  // Copies the domain's disk file (spec.disk_path) to target_path, or, when
  // it has none on disk, writes a small placeholder naming the VM.
  Result<DiskBackup> backupDisk(const std::string& vm, const std::string& target_path,
                                bool snapshot_commit_only = false) override;

  // --- failure injection and inspection ---
  // The next n start() calls of this VM fail with kInternal.
  void failStarts(const std::string& vm, int n);
  // The domain dies now (state crashed, a kCrashed event).
  void crash(const std::string& vm);
  // While hung, every call fails with kUnavailable ("hypervisor not answering")
  // and no events are delivered.
  void setHung(bool hung);
  // Power loss: every domain is gone from memory (definitions kept, all shut
  // off), no events; calls fail as when hung until powerOn().
  void powerOff();
  void powerOn();
  // Adds a domain without our metadata (must never be touched).
  void addUnmanaged(const std::string& name);
  // Where migrate() delivers: dest_uri -> hypervisor. Unknown uri = failure.
  void connectPeer(const std::string& uri, FakeHypervisor* peer);
  // The next n migrations fail (the domain keeps running here).
  void failMigrations(int n);
  // The next n backupDisk() calls fail with kInternal (no file written).
  void failBackups(int n);
  int backupCount() const { return backups_; }

  int startCount(const std::string& vm) const;
  const DomainSpec* spec(const std::string& vm) const;
  int runningCount() const;
  bool isRunning(const std::string& vm) const;
  // Every vm isRunning() says yes to, by name (also while hung).
  std::vector<std::string> runningVms() const;
  // Whether runningVms() would name exactly `vms`: one walk, no copies (the
  // simulator's copy count asks after every pass of a host's agent).
  bool runsExactly(const std::set<std::string>& vms) const;

 private:
  struct Dom {
    DomainSpec spec;
    DomainState state = DomainState::kShutoff;
    bool managed = true;
    int fail_starts = 0;
    int starts = 0;
    std::vector<PortForward> forwards;  // of the current QEMU process
  };
  Status check() const;
  void emit(const std::string& vm, DomainEventKind kind, const std::string& detail);

  Capacity capacity_;
  std::map<std::string, Dom> doms_;
  std::map<std::string, FakeHypervisor*> peers_;
  DomainEventHandler handler_;
  bool hung_ = false;
  bool powered_ = true;
  int fail_migrations_ = 0;
  int fail_backups_ = 0;
  int backups_ = 0;
  std::map<std::string, int> pending_fail_starts_;  // failStarts() before define()
};

}  // namespace tw
