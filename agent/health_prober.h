// Health probers that probe: ScheduledHealthProber (the logic: when to probe,
// what results mean) and NetworkHealthProber (the daemon's: socket probes of
// 127.0.0.1:<host port> on a thread of its own).
//
// The verdict of one VM, for its check (HealthCheckSpec):
//  - a probe is due at once when the VM is first asked about, then every
//    interval_ms (counted from the start of the previous probe);
//  - one success: kHealthy (and the count of failures starts again);
//  - `failures` consecutive failures: kUnhealthy. A failure of a probe that
//    started within grace_ms after the VM started does not count;
//  - before that: what it was (kUnknown until the first verdict).
// A new run of the VM (another running_since_ms) or a changed check starts
// the verdict afresh, and so does forget().
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <mutex>
#include <string>
#include <thread>

#include "agent/health.h"
#include "agent/port_map.h"
#include "tw/clock.h"
#include "tw/model.h"
#include "tw/status.h"

namespace tw {

// The scheduling and counting of health checks around a pluggable probe.
// Deterministic: it probes only inside runDue(), at the clock's time. Unit
// tests drive it with a ManualClock and a scripted probe; NetworkHealthProber
// runs it on its thread.
//
// Threads: health(), lastFailure() and forget() may be called on one thread
// (the agent's loop) while runDue() runs on another; mu_ guards the targets
// and is never held while a probe runs, so health() never waits for a probe.
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

  // Runs every probe that is due at the clock's time, one after another;
  // blocks for as long as they take. A result that arrives after its VM was
  // forgotten or restarted meanwhile is dropped.
  void runDue();
  // When the next probe is due (kNever when nothing is registered).
  Millis nextDueMs() const;

  // Called after a verdict changed (from runDue's thread), and after a VM was
  // registered anew (from health()'s thread): say, to wake a loop. Called
  // without locks held; must be quick. REQUIRES: set before concurrent use.
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
// Probes of several VMs run one after another, so a probe that hangs delays
// the others by at most its timeout.
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
  void loop();

  const std::string host_;
  ScheduledHealthProber core_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;    // guarded by mu_
  bool replan_ = false;  // a target was added: look at the schedule again; guarded by mu_
  std::thread thread_;
};

}  // namespace tw
