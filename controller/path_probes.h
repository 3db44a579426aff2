// New paths and pools checked on the hosts before the apply that brings them
// is accepted (issue #15, docs/policy.md "What is refused").
//
// The agents report (tw::HostReport) the paths and pools the controller asks
// about (AssignmentSet::checks). Those of the policy in force are asked all
// the time; an apply whose candidate policy names a path or pool that an
// online host has not reported yet opens a probe here: its checks go out in
// every heartbeat answer (Controller::assignmentsFor), and the apply is
// decided when every online host reported them, or when kWaitMs passed on the
// controller's clock. A host that did not answer in time is "late": it is
// named in the apply's warning and not waited for again until it reports
// something new, so one slow or stuck host (an agent whose loop hangs on a
// dead NFS mount, an agent older than this check) costs one apply kWaitMs,
// not every apply. Pure: no clock of its own, no store; the controller's
// loop thread owns it.
#pragma once

#include <map>
#include <set>
#include <string>
#include <vector>

#include "tw/clock.h"
#include "tw/protocol.h"

namespace tw {

// `a` and `b` together, sorted, no duplicates.
HostChecks mergeChecks(const HostChecks& a, const HostChecks& b);

class PathProbes {
 public:
  // How long an apply waits for the online hosts' reports of its new paths.
  static constexpr Millis kWaitMs = 3000;

  // What the apply of candidate `key` (the digest of its files) still waits
  // for: `unreported` = online, not late host -> its checks not reported
  // yet. Opens the probe on first call (deadline now + kWaitMs). Returns
  // true while it must wait: something is unreported and the deadline has
  // not passed.
  bool waiting(const std::string& key, const std::map<std::string, HostChecks>& unreported,
               Millis now);
  // The apply of `key` is decided (accepted or refused): its probe ends.
  // `late`: hosts that did not answer within the wait; they are not waited
  // for again until noteReport().
  void close(const std::string& key, const std::vector<std::string>& late);
  // A host sent a new report: it is waited for again.
  void noteReport(const std::string& host) { late_.erase(host); }
  bool late(const std::string& host) const { return late_.count(host) > 0; }

  // Every open probe's checks (for the heartbeat answers). Probes whose
  // apply was given up (its caller left) end kWaitMs after their deadline.
  HostChecks checks(Millis now) const;
  // Ends probes given up (see checks()).
  void prune(Millis now);
  bool empty() const { return probes_.empty(); }

 private:
  struct Probe {
    Millis deadline_ms = 0;
    HostChecks checks;
  };
  std::map<std::string, Probe> probes_;  // by candidate digest
  std::set<std::string> late_;
};

}  // namespace tw
