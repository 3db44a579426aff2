// StartRunner: the agent's domain starts under way, each with a deadline.
//
// A libvirt start that never returns (virDomainCreate stuck in libvirtd or in
// an early QEMU start, seen in CI on a loaded machine) used to hold the
// agent's loop for good: no health checks, no restarts of other VMs, no
// assignment changes. Now the starts run on their own (Hypervisor::
// beginStarts: on libvirt, worker threads on connections of their own) and
// the loop only looks at them: collect() hands back the starts that returned
// and those whose deadline passed. A start given up is cancelled (when its
// call has not begun, it never does) and forgotten here: its late result is
// never collected, so it changes nothing (the batch logs it). What to do
// about a domain whose start was given up is the agent's call (it destroys
// it: agent_converge.cc).
//
// With a hypervisor whose beginStarts() returns every result at once (the
// default: FakeHypervisor, the simulator) collect() right after begin() finds
// them all, and the agent behaves as when it waited for startAll().
//
// Threads: none of its own; called from the agent's loop only. The workers
// share each batch with it (shared_ptr), never the runner itself.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "tw/clock.h"
#include "tw/hypervisor.h"
#include "tw/status.h"

namespace tw {

class StartRunner {
 public:
  // One start the agent asked for.
  struct Start {
    std::string vm;
    int64_t epoch = 0;
    bool restart = false;  // a restart in place (counted when launched)
    Millis at = 0;         // when it was launched (the budget's time)
  };
  // A start that returned (`status`), or that was given up at its deadline
  // (`timed_out`; `status` says so).
  struct Outcome {
    Start start;
    Status status;
    bool timed_out = false;
  };

  // `timeout_ms`: how long a start may take before it is given up (> 0).
  // REQUIRES: `hv` outlives the runner.
  StartRunner(Hypervisor& hv, Millis timeout_ms) : hv_(hv), timeout_ms_(timeout_ms) {}
  StartRunner(const StartRunner&) = delete;
  StartRunner& operator=(const StartRunner&) = delete;

  // Begins `starts` together (one Hypervisor::beginStarts) at `now`; each
  // must return by now + timeoutMs(). REQUIRES: none of them is running().
  void begin(std::vector<Start> starts, Millis now);
  // The starts that returned since the last call, then those whose deadline
  // is <= now (given up and cancelled), each in the order begun. A start
  // that returned is a returned start even when the deadline passed while
  // nobody looked (a loop that was busy).
  std::vector<Outcome> collect(Millis now);
  // Gives up every start under way without an outcome (a self-fence takes
  // over their domains). Returns them.
  std::vector<Start> abandonAll();

  // A start of `vm` is under way.
  bool running(const std::string& vm) const;
  // The starts under way, in the order begun.
  std::vector<Start> underWay() const;
  bool empty() const { return running_.empty(); }
  // The earliest deadline of a start under way (none: nothing runs).
  std::optional<Millis> nextDeadlineMs() const;
  Millis timeoutMs() const { return timeout_ms_; }

 private:
  struct Running {
    Start start;
    std::shared_ptr<Hypervisor::StartCalls> calls;  // shared with the batch's workers
    size_t index = 0;                               // in its batch
    Millis deadline_ms = 0;
  };

  Hypervisor& hv_;
  const Millis timeout_ms_;
  std::vector<Running> running_;  // in the order begun
};

}  // namespace tw
