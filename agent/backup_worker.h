// Runs the agent's backups (BackupRunner::run) one after another on a thread
// of its own with a libvirt connection of its own, so that a backup — which
// blocks for the whole copy — never holds up the agent's loop, its
// heartbeats or its lease. Each outcome goes to `done` (from the worker
// thread: the daemon posts it to its loop, which calls
// BackupRunner::finished() and Agent::report()).
//
// Shared with its thread, which may outlive main's scope (a copy cannot be
// interrupted): it holds what it uses. Threads: post() and stop() from any.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include "agent/backup_runner.h"
#include "tw/clock.h"
#include "tw/hypervisor.h"

namespace tw {

class BackupWorker {
 public:
  using Done = std::function<void(BackupOutcome)>;
  BackupWorker(std::string libvirt_uri, Done done)
      : uri_(std::move(libvirt_uri)), done_(std::move(done)) {}

  void post(BackupJob job);
  void stop();
  // The thread's body: run(worker) until stop().
  static void run(std::shared_ptr<BackupWorker> self);

 private:
  BackupOutcome take(BackupJob job);

  const std::string uri_;
  const Done done_;
  std::unique_ptr<Hypervisor> hv_;  // the worker thread's only
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<BackupJob> todo_;  // guarded by mu_
  bool stop_ = false;           // guarded by mu_
};

}  // namespace tw
