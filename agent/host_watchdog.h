// The host watchdog: what resets a host whose agent can no longer keep its
// promise to give its VMs up (docs/fencing.md, "Host watchdog").
//
// The controller's lease fence relies on the agent destroying its VMs when
// its lease ran out while it is isolated. Two agents cannot: a dead one (it
// crashed, or was killed, just before its host was cut off) and a stuck one
// (its loop hangs in libvirt while the host is isolated). For both, a
// watchdog that the agent must pet resets the host W after the last pet.
// Like sbd / Proxmox's watchdog-mux: the pets come from a thread of their
// own (WatchdogPetter) that never waits for libvirt, HTTP or the loop, and
// only while the agent is entitled to run its VMs (Agent::watchdogEntitled).
//
// Implementations:
//   DeviceWatchdog — the Linux watchdog device (/dev/watchdog; softdog where
//                    the machine has no hardware one): WDIOC_SETTIMEOUT,
//                    WDIOC_KEEPALIVE, magic close 'V' on a clean stop;
//   LabWatchdog    — `scripts/hosts` lab hosts: the agent touches a file and
//                    a watcher started by scripts/hosts crashes the lab host
//                    (as `scripts/hosts crash`) when the touches stop for W;
//   NoWatchdog     — none (`--watchdog none`): the controller then gets no
//                    watchdog timeout and the old gaps stay (docs/fencing.md);
//   the simulator's (sim/simulation.cc): the host is reset, its domains vanish.
//
// Threads: open() and close() from the daemon's main thread; pet() from the
// petter's thread only.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "tw/clock.h"
#include "tw/status.h"

namespace tw {

class HostWatchdog {
 public:
  virtual ~HostWatchdog() = default;
  // Arms the watchdog with timeoutMs(): from now on the host is reset when no
  // pet() comes for that long. Errors: the device cannot be opened or set.
  virtual Status open() = 0;
  // Restarts the countdown. Must be cheap and never block on anything but
  // the device itself.
  virtual Status pet() = 0;
  // Closes it. `disarm`: a clean stop with nothing to protect (magic close:
  // it will not fire). Else it keeps counting and fires W after the last pet
  // unless a new agent opens it and pets in time (an upgrade, a crash that
  // systemd restarts).
  virtual void close(bool disarm) = 0;
  // W: how long after the last pet the host is reset; 0 = no watchdog.
  virtual Millis timeoutMs() const = 0;
  // "/dev/watchdog (softdog), 5s" — for logs.
  virtual std::string describe() const = 0;
};

class NoWatchdog final : public HostWatchdog {
 public:
  Status open() override { return Status::ok(); }
  Status pet() override { return Status::ok(); }
  void close(bool /*disarm*/) override {}
  Millis timeoutMs() const override { return 0; }
  std::string describe() const override { return "none"; }
};

// The Linux watchdog device. The driver counts in whole seconds: W is
// rounded up, and what the driver then reports (WDIOC_GETTIMEOUT) is W.
class DeviceWatchdog final : public HostWatchdog {
 public:
  DeviceWatchdog(std::string path, Millis timeout_ms)
      : path_(std::move(path)), timeout_ms_(timeout_ms) {}
  ~DeviceWatchdog() override;
  Status open() override;
  Status pet() override;
  void close(bool disarm) override;
  Millis timeoutMs() const override { return timeout_ms_; }
  std::string describe() const override;

 private:
  std::string path_;
  Millis timeout_ms_;
  std::string identity_;  // WDIOC_GETSUPPORT's name ("Software Watchdog")
  int fd_ = -1;
};

// A lab host's watchdog: a file that the agent touches. The file holds
// "armed <W in ms>" while armed and "disarmed" after a clean stop;
// scripts/hosts' watcher (scripts/lab-watchdog) crashes the lab host when
// it is armed and its modification time is older than W.
class LabWatchdog final : public HostWatchdog {
 public:
  LabWatchdog(std::string path, Millis timeout_ms)
      : path_(std::move(path)), timeout_ms_(timeout_ms) {}
  Status open() override;
  Status pet() override;
  void close(bool disarm) override;
  Millis timeoutMs() const override { return timeout_ms_; }
  std::string describe() const override;

 private:
  Status writeState(const std::string& text);
  std::string path_;
  Millis timeout_ms_;
};

// "/dev/watchdog" | "lab:PATH" | "none" (the agent's --watchdog flag).
// Errors: invalid argument for anything else, or a timeout <= 0 with a
// watchdog.
Result<std::unique_ptr<HostWatchdog>> makeHostWatchdog(const std::string& spec, Millis timeout_ms);

// Pets a HostWatchdog while the agent is entitled to run its VMs. One tick
// every interval; the daemon runs it on a thread of its own, the simulator
// at every step.
class WatchdogPetter {
 public:
  // `entitled(now)`: whether the host may keep running its VMs now
  // (Agent::watchdogEntitled). Must not block.
  WatchdogPetter(HostWatchdog& watchdog, Clock& clock, std::function<bool(Millis)> entitled);
  // Pets when entitled; logs once when the pets stop and when they resume.
  // Returns when the next tick is due: a fifth of W (so that a pet thread
  // delayed by up to 4/5 of W still pets in time), at most 1 s, at least 50 ms.
  Millis tick();
  bool petting() const { return petting_; }
  Millis lastPetMs() const { return last_pet_ms_; }

 private:
  HostWatchdog& watchdog_;
  Clock& clock_;
  std::function<bool(Millis)> entitled_;
  bool petting_ = true;
  bool pet_failed_said_ = false;
  Millis last_pet_ms_ = 0;
};

}  // namespace tw
