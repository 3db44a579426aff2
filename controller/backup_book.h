// The controller's side of VM backups (docs/backups.md), apart from the
// catalogue rows themselves (Store::putBackup): what is known in memory about
// each VM's backups, the backups operators asked for, and restores under way.
//
// Pure bookkeeping: no store, no clock, no I/O. The Controller owns one and
// calls it from its loop thread (controller/controller_backups.cc); it puts
// pendingRequest() and restore() into each VM's Assignment.
//
// Requests and restores live in memory only: a controller restart forgets a
// request that no agent answered yet (ask again), and a restore whose new
// epoch is already stored still happens, as the agent's disk marker says
// whether it ran (agent/domain_builder.h).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "tw/model.h"

namespace tw {

// A restore under way: at epoch `epoch` the VM's disk is replaced by `from`.
struct PendingRestore {
  int64_t id = 0;
  int64_t epoch = 0;
  BackupRecord from;
};

class BackupBook {
 public:
  // The catalogue as stored (recover()).
  void load(const std::vector<BackupRecord>& all);

  // A "backup.done": the VM's newest good backup may move on; the answered
  // request is no longer pending.
  void onDone(const BackupRecord& r);
  // A "backup.failed": the answered request is no longer pending.
  void onFailed(const BackupRecord& r);

  // `twctl backup vm`: a new request id for `vm` (pending until answered).
  int64_t request(const std::string& vm);
  int64_t pendingRequest(const std::string& vm) const;

  // `twctl restore vm`: records the restore of `vm` at `epoch` from `from`;
  // returns its id. restore() is the one under way (nullptr when none).
  int64_t startRestore(const std::string& vm, int64_t epoch, const BackupRecord& from);
  const PendingRestore* restore(const std::string& vm) const;
  void finishRestore(const std::string& vm);
  // The VMs with a restore under way, by name.
  std::vector<std::string> restoringVms() const;

  // When the newest good backup of `vm` was taken (0 = none known).
  Millis lastGoodMs(const std::string& vm) const;

  // The warning for a VM of a tier with `spec` at `now`: "" when its newest
  // good backup is at most 2 x every old, else what is wrong ("no backup
  // yet" counts only once the VM has been known for 2 x every: `since_ms`).
  std::string staleness(const std::string& vm, const BackupSpec& spec, Millis now,
                        Millis since_ms) const;

 private:
  std::map<std::string, Millis> last_good_ms_;  // by vm
  std::map<std::string, int64_t> requests_;     // by vm: pending request id
  std::map<std::string, PendingRestore> restores_;
  int64_t next_request_ = 0;
  int64_t next_restore_ = 0;
};

// "3h 5m", "42m", "17s": a coarse age for messages.
std::string coarseAge(Millis ms);

}  // namespace tw
