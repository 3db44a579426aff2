// The controller's state dir survives a bad disk: start-up checks, the lock,
// automatic backups and restore-state. See README.md, "State, backups and
// restore".
//
//   <state-dir>/lock              flock held by the running controller (its pid inside)
//   <state-dir>/tierwarden.db     the SQLite database (+ -wal, -shm)
//   <state-dir>/applied-once      "policy_version N": written after every committed apply
//   <state-dir>/backups/          tierwarden-<UTC time>-v<policy version>.db, newest K kept
//   <state-dir>/damaged-<time>/   what restore-state moved aside
//
// The start refuses (one line, what to do) rather than start empty or on a
// damaged file: the database fails quick_check or its WAL lost committed
// frames; or the state dir shows an earlier life (applied-once, or a token
// file beside a database with no schema) that the database no longer holds.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "tw/status.h"
#include "tw/store.h"

namespace tw {

struct StatePaths {
  explicit StatePaths(std::string state_dir);
  std::string dir;
  std::string db;        // <dir>/tierwarden.db
  std::string lock;      // <dir>/lock
  std::string marker;    // <dir>/applied-once
  std::string backups;   // <dir>/backups
};

// Writes `content` to `path` atomically (mode 0600): temp file `path`.tmp,
// fsync, rename, fsync of the directory. Errors: kUnavailable.
Status writeFileAtomically(const std::string& path, const std::string& content);

// An exclusive flock on <state-dir>/lock, held until destroyed (or the
// process dies: the kernel drops it, so kill -9 leaves no stale lock).
class StateDirLock {
 public:
  // Errors: kFailedPrecondition "state dir '...' is in use by another
  // tierwarden-controller (pid N) ...", kUnavailable for I/O errors.
  static Result<std::unique_ptr<StateDirLock>> acquire(const StatePaths& paths);
  ~StateDirLock();
  StateDirLock(const StateDirLock&) = delete;
  StateDirLock& operator=(const StateDirLock&) = delete;

 private:
  explicit StateDirLock(int fd) : fd_(fd) {}
  int fd_;
};

// Checks the state dir before Store::open (and repairs the one kind of damage
// that loses nothing: index entries out of step with intact rows, by
// REINDEX, with a warning). `token_existed`: the token file
// was there before this start. Returns the database's facts when the start
// may go on. Errors: kFailedPrecondition with one line naming the file and
// what to do (restore-state with the newest backup, or remove the state dir
// on purpose).
Result<DatabaseFacts> checkStateBeforeStart(const StatePaths& paths, bool token_existed);

// The policy version recorded in applied-once (0 when there is none).
// Errors: kFailedPrecondition when the file is unreadable.
Result<int64_t> readAppliedMarker(const StatePaths& paths);
// Writes applied-once atomically (temp file, fsync, rename, fsync of the dir).
Status writeAppliedMarker(const StatePaths& paths, int64_t policy_version);

class BackupWorker;

// Ties the store to the state dir: writes applied-once now when the database
// holds a policy (state dirs from before the marker), then after every
// committed apply (on the committing thread, the loop) writes applied-once
// and asks `backups` for a backup. REQUIRES: backups outlives the store's use.
Status watchApplies(Store& store, const StatePaths& paths, const DatabaseFacts& facts,
                    BackupWorker& backups);

// Backups in <state-dir>/backups, newest first.
std::vector<std::string> listBackups(const StatePaths& paths);

// Writes one backup now (named by `utc_stamp`, e.g. "20261206T092000.123Z")
// and removes all but the newest `keep`. Blocks for the copy; any thread.
Result<BackupInfo> backupNow(const StatePaths& paths, const std::string& utc_stamp, int keep);

// tierwarden-controller restore-state: checks `backup` (quick_check),
// refuses while a controller holds the state dir's lock, moves tierwarden.db,
// -wal and -shm to <state-dir>/damaged-<utc_stamp>/, installs the backup
// (copy, fsync, rename) and sets applied-once to its policy version.
// Returns a one-line summary. Errors: kInvalidArgument (bad backup),
// kFailedPrecondition (controller running), kUnavailable (I/O).
Result<std::string> restoreState(const StatePaths& paths, const std::string& backup,
                                 const std::string& utc_stamp);

// The current UTC time as "YYYYmmddTHHMMSS.mmmZ" (file names). Real time: only
// for names; no logic depends on it.
std::string utcStampNow();

// Backs the database up on its own thread, off the loop: every `interval`
// (0 = never) and whenever requestNow() is called (after every apply). Each
// backup reads the database through its own read-only connection, so the
// loop thread is never blocked by it (WAL: readers do not block the writer).
// Like ControllerService, this is a real-time edge: it waits on std::chrono
// time; the decisions about state are not made here.
class BackupWorker {
 public:
  BackupWorker(StatePaths paths, std::chrono::milliseconds interval, int keep);
  ~BackupWorker();  // stops and joins
  void start();
  // Asks for a backup as soon as possible (merged with one already asked for).
  // Any thread; never blocks on the copy.
  void requestNow();
  void stop();

 private:
  void run();

  const StatePaths paths_;
  const std::chrono::milliseconds interval_;
  const int keep_;
  std::thread thread_;
  std::mutex mu_;  // guards the two flags below
  std::condition_variable cv_;
  bool requested_ = false;
  bool stopping_ = false;
};

}  // namespace tw
