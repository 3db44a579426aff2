// Health probers that probe: ScheduledHealthProber (the logic: when to probe,
// what results mean) and NetworkHealthProber (the daemon's: socket probes of
// 127.0.0.1:<host port> on a thread of its own).
//
// The verdict of one VM, for its check (HealthCheckSpec):
//  - a probe is due at once when the VM is first asked about, then every
//    interval_ms (counted from the start of the previous probe; until the
//    first success, every kStartupIntervalMs while in the grace period);
//  - one success: kHealthy (and the count of failures starts again);
//  - `failures` consecutive failures: kUnhealthy. A failure of a probe that
//    started within grace_ms after the VM started does not count;
//  - before that: what it was (kUnknown until the first verdict).
// A new run of the VM (another running_since_ms) or a changed check starts
// the verdict afresh, and so does forget().
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <limits>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "agent/health.h"
#include "agent/port_map.h"
#include "tw/clock.h"
#include "tw/model.h"
#include "tw/status.h"

namespace tw {

// The scheduling and counting of health checks around a pluggable probe.
// Deterministic: it probes only inside runDue() (or probe()), at the clock's
// time. Unit tests drive it with a ManualClock and a scripted probe;
// NetworkHealthProber runs it on its threads.
//
// Threads: health(), lastFailure() and forget() may be called on one thread
// (the agent's loop) while takeDue(), probe() and complete() run on others;
// mu_ guards the targets and is never held while a probe runs, so health()
// never waits for a probe.
class ScheduledHealthProber final : public HealthProber {
 public:
  // One probe of `vm`'s service at host port `host_port`: ok = passed, else
  // why it failed. Blocks at most about check.timeout_ms.
  using ProbeFn =
      std::function<Status(const std::string& vm, const HealthCheckSpec& check, int host_port)>;
  static constexpr Millis kNever = std::numeric_limits<Millis>::max();

  // The probe goes to the host port that `ports` maps the check's guest port
  // to; a VM without one fails its probes ("no host port for guest port 80").
  // The references must outlive the prober.
  ScheduledHealthProber(const Clock& clock, const PortMap& ports, ProbeFn probe);

  // Registers `vm` (or refreshes it) and answers the last verdict. Non-blocking.
  Health health(const std::string& vm, const HealthCheckSpec& check,
                Millis running_since_ms) override;
  std::string lastFailure(const std::string& vm) override;
  void forget(const std::string& vm) override;

  // One probe to run: a VM, its check, and which registration it is for.
  struct ProbeJob {
    std::string vm;
    HealthCheckSpec check;
    uint64_t generation = 0;  // a result for an older registration is dropped
    bool counts = false;      // started after the grace period
  };
  // Until its first pass, a VM in its grace period is probed this often (or
  // every interval, if that is shorter).
  static constexpr Millis kStartupIntervalMs = 250;

  // Runs every probe that is due at the clock's time, one after another;
  // blocks for as long as they take: takeDue(), then probe() and complete()
  // for each.
  void runDue();
  // The probes due at the clock's time, marked in flight: none of those VMs
  // is due again until its complete(). Non-blocking.
  std::vector<ProbeJob> takeDue();
  // Runs one probe (blocks up to about check.timeout_ms); no locks held, so
  // several may run at once on different threads.
  Status probe(const ProbeJob& job) const;
  // Counts a probe's result. A result that arrives after its VM was forgotten
  // or restarted meanwhile is dropped.
  void complete(const ProbeJob& job, const Status& result);
  // When the next probe is due (kNever when nothing is registered).
  Millis nextDueMs() const;

  // Called after a verdict changed (from the thread of that complete()), and
  // after a VM was registered anew (from health()'s thread): say, to wake a
  // loop. Called without locks held; must be quick. REQUIRES: set before
  // concurrent use.
  void setOnVerdictChange(std::function<void()> fn) { on_verdict_ = std::move(fn); }
  void setOnNewTarget(std::function<void()> fn) { on_new_target_ = std::move(fn); }

 private:
  struct Target {
    HealthCheckSpec check;
    Millis running_since_ms = 0;
    uint64_t generation = 0;  // which registration a probe result belongs to
    Millis next_due_ms = 0;
    bool in_flight = false;
    int consecutive = 0;  // counted failures since the last success
    Health health = Health::kUnknown;
    std::string failure;  // why the last counted probe failed
  };

  const Clock& clock_;
  const PortMap& ports_;
  const ProbeFn probe_;
  std::function<void()> on_verdict_;
  std::function<void()> on_new_target_;

  mutable std::mutex mu_;
  std::map<std::string, Target> targets_;  // guarded by mu_
  uint64_t next_generation_ = 1;           // guarded by mu_
};

// The daemon's prober: ScheduledHealthProber with socket probes (probeService
// on `host`, 127.0.0.1 by default) on the SystemClock, run by its own thread.
// Probes run on a few worker threads (kWorkers), so that a VM whose probe
// hangs until its timeout (a booting guest behind its port forward) does not
// hold up the probes of the others.
//
// Threads: health(), lastFailure(), forget() from the agent's loop thread;
// start()/stop() from the thread that owns the prober.
class NetworkHealthProber final : public HealthProber {
 public:
  explicit NetworkHealthProber(const PortMap& ports, std::string host = "127.0.0.1");
  ~NetworkHealthProber() override;  // stops
  NetworkHealthProber(const NetworkHealthProber&) = delete;
  NetworkHealthProber& operator=(const NetworkHealthProber&) = delete;

  // `fn` runs on the prober thread whenever a verdict changes (e.g. to wake
  // the agent's loop). REQUIRES: before start().
  void setOnVerdictChange(std::function<void()> fn);
  // Starts the prober thread. REQUIRES: not started.
  void start();
  // Stops and joins the thread; waits at most for the probe under way.
  void stop();

  Health health(const std::string& vm, const HealthCheckSpec& check,
                Millis running_since_ms) override {
    return core_.health(vm, check, running_since_ms);
  }
  std::string lastFailure(const std::string& vm) override { return core_.lastFailure(vm); }
  void forget(const std::string& vm) override { core_.forget(vm); }

 private:
  static constexpr int kWorkers = 4;
  void loop();  // schedules: hands due probes to the workers
  void work();  // a worker: runs probes from queue_

  const std::string host_;
  ScheduledHealthProber core_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;    // guarded by mu_
  bool replan_ = false;  // a target was added or a probe done: plan again; guarded by mu_
  std::condition_variable work_cv_;                   // queue_ gained a job, or stop_
  std::deque<ScheduledHealthProber::ProbeJob> queue_;  // guarded by mu_
  std::thread thread_;
  std::vector<std::thread> workers_;
};

}  // namespace tw
