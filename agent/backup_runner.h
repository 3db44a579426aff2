// Backups of the VMs an agent runs (docs/backups.md): when each is due, how
// one is taken, pruned and reported.
//
// The schedule is the agent's own, from the tier's spec in the assignment
// (Assignment::backup): a VM is due when the newest backup file in
// <backup.to>/<vm>/ (whoever wrote it: the VM may have run on another host
// before) is `every` old, and at once when the controller asks for one
// (Assignment::backup_request, `twctl backup vm`), once per request id. The
// catalogue stays in the controller's store: the agent reports each outcome as
// an AgentEvent ("backup.done" / "backup.failed") carrying a BackupRecord.
//
// Split for threads: due() and finished() run on the agent's loop thread and
// never touch the disk or the hypervisor; run() blocks for the copy (libvirt's
// backup job) and the prune, and runs on a worker with a hypervisor
// connection of its own in the daemon (at once in tests). A VM has at most one
// backup under way. A failed backup is tried again after kRetryMs (or the
// next request), not in a loop.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "tw/clock.h"
#include "tw/hypervisor.h"
#include "tw/model.h"
#include "tw/protocol.h"
#include "tw/status.h"

namespace tw {

// One backup to take: run() fills in the rest of `record`.
struct BackupJob {
  BackupRecord record;    // id, vm, tier, host, path, taken_ms, request set
  std::string dir;        // <backup.to>/<vm>
  int keep = 24;
  int64_t epoch = 0;
};

// What run() did.
struct BackupOutcome {
  BackupJob job;          // record completed (bytes, duration, method) or error set
  Status status;
  std::vector<std::string> pruned;  // ids removed beyond `keep`
};

class BackupRunner {
 public:
  // A failed backup of a VM is tried again this long after (unless asked).
  static constexpr Millis kRetryMs = 5 * 60 * 1000;

  BackupRunner(const Clock& clock, std::string host) : clock_(clock), host_(std::move(host)) {}

  // The backups due now among `running` (assignments of VMs that run here,
  // healthy or not), each handed out once until finished() hears of it.
  // `newest_taken_ms(vm, dir)` tells when the newest backup in `dir` was
  // taken (0 = none); it is asked once per VM and `to`, the first time the VM
  // is seen (the daemon: newestBackupMs(), a directory listing).
  std::vector<BackupJob> due(const std::vector<Assignment>& running,
                             const std::function<Millis(const std::string& dir)>& newest_taken_ms);

  // Back on the loop: the event to report, and the VM's schedule moves on.
  AgentEvent finished(const BackupOutcome& outcome);

  // VMs with a backup under way.
  size_t inFlight() const { return in_flight_.size(); }

  // Takes `job` (blocking): makes the VM's directory, hv.backupDisk() into
  // <id>.qcow2.part, renames it to <id>.qcow2, then prunes the oldest backups
  // of the directory beyond job.keep. `clock` measures the duration.
  static BackupOutcome run(Hypervisor& hv, const Clock& clock, BackupJob job);

  // When the newest backup file in `dir` was taken, from its name (0 = none
  // or no directory).
  static Millis newestBackupMs(const std::string& dir);
  // The backup ids in `dir` (file names <id>.qcow2), oldest first.
  static std::vector<std::string> listBackups(const std::string& dir);

  // Whether `to` can take backups on this host: an existing, writable
  // directory. kFailedPrecondition saying what is wrong otherwise.
  static Status checkTarget(const std::string& to);

  // "20261206T180000Z" for a clock time; and back (nullopt when malformed).
  static std::string stamp(Millis ms);
  static std::optional<Millis> parseStamp(const std::string& id);

 private:
  struct VmSchedule {
    std::string to;             // the backup.to this schedule is for
    Millis last_ms = 0;         // newest backup taken (0 = none known)
    Millis retry_at_ms = 0;     // after a failure
    int64_t request_done = 0;   // newest backup_request handled
  };

  const Clock& clock_;
  const std::string host_;
  std::map<std::string, VmSchedule> schedule_;   // by vm
  std::map<std::string, BackupJob> in_flight_;   // by vm
  uint64_t seq_ = 0;
};

}  // namespace tw
