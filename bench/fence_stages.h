// bench/fence_stages.h: where the time goes from one host's fence to its VMs
// running elsewhere (bench/scale, issue #16).
//
// bench/scale follows each VM of the fenced host through the stages below and
// notes when it reached each, on the wall clock (ms since the epoch: the
// controller's event times, t_ms, are on the same clock of the same machine):
//
//   placed     the controller's vm.placed event (a new host written)
//   assigned   its vm.starting event: released into its new host's set, which
//              the same tick publishes (the "placed and assigned" of issue #16)
//   polled     the destination's long poll was answered with a set naming it
//   at agent   the destination's agent was handed a set naming it (a pushed
//              set from the poll, or a heartbeat's answer)
//   started    the destination's FakeHypervisor started the domain
//   reported   a heartbeat reporting it running was answered
//   running    the controller's vm.running event
//
// Only the first time counts, and only on another host than the fenced one.
// The notes come from the load generator's threads (poller, agent workers:
// what they do anyway, no polling) and from the events the bench reads;
// nothing here asks the controller or a hypervisor for anything.
//
// Thread-safe: one mutex; note*() return at once while nothing is watched.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <set>
#include <string>

#include "tw/protocol.h"

namespace twbench {

class FenceStages {
 public:
  enum Stage { kPlaced, kAssigned, kPolled, kAtAgent, kStarted, kReported, kRunning, kStageCount };
  static const char* name(Stage s);

  // From now on the VMs `vms` of host `victim` are followed (earlier notes
  // are forgotten).
  void watch(const std::string& victim, const std::set<std::string>& vms);
  // `vm` reached `s` at `ms` on `host` ("" = the host is not known: an event).
  void note(Stage s, const std::string& host, const std::string& vm, int64_t ms);
  // Every watched VM that `set` names reached `s`.
  void noteSet(Stage s, const tw::AssignmentSet& set, int64_t ms);
  // A heartbeat answered at `ms`: its running domains reached kReported.
  void noteReport(const tw::Heartbeat& hb, int64_t ms);
  // Every watched VM reached `s`.
  bool all(Stage s) const;

  struct Summary {
    // Per stage: the time from the fence to the last watched VM reaching it
    // (s; -1 when some VM did not).
    std::array<double, kStageCount> to_stage_s{};
    // ... and to the first VM reaching it (-1 when none did).
    std::array<double, kStageCount> first_s{};
    // The longest single step of any VM: from the stage before (the fence
    // for kPlaced) to this one.
    Stage slowest = kPlaced;
    double slowest_s = -1;
    std::string slowest_vm, slowest_host;
  };
  Summary summarize(int64_t fence_ms) const;
  // "placed 0.010-0.012, assigned ..." (first-last VM, s) and the slowest step.
  static std::string describe(const Summary& s);

 private:
  struct Vm {
    std::string host;  // where it was seen after the fence
    std::array<int64_t, kStageCount> at;
    Vm() { at.fill(-1); }
  };
  std::atomic<bool> watching_{false};
  mutable std::mutex mu_;  // guards below
  std::string victim_;
  std::map<std::string, Vm> vms_;
};

}  // namespace twbench
