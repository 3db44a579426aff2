// TermWatch: the agent's second guard against a deposed controller leader
// (issue 14, docs/ha.md "A deposed leader's step ends at the refused write").
//
// Every assignment set carries the term of the leader that made it
// (AssignmentSet::term: the etcd leader key's create revision; 0 from the
// single controller on SQLite). The agent remembers the highest term it has
// accepted and refuses a set of an older term: it keeps the set in force,
// takes no lease renewal from it, and says so once (a log line and an
// "agent.stale_term" event) per run of refusals.
//
// In memory only, never persisted: an etcd cluster rebuilt from scratch
// starts its revisions low, and a remembered term would make every agent
// refuse the new leader forever. A restarted agent accepts the first set it
// gets (it runs nothing before the controller's first answer anyway).
//
// Not stuck on a dead term: when for longer than `give_up_ms` (the lease of
// the last set accepted, at least kMinGiveUpMs) no set of the highest term
// came and sets of an older term keep coming, the older term is accepted as
// the newest (logged, and an event). A deposed leader cannot keep sending
// that long: it stops acting at its own deadline (at most the leader lease's
// TTL, which is at most dead_after, after its last renewal) and at its first
// write etcd refuses; by then the agent's own lease, not renewed by the
// refused answers, has run out too and it has judged itself (self-fenced
// only if isolated). What this rule gives up: a leader whose clock stopped
// for longer than that and that writes nothing can still reach the agent.
//
// Threads: any (the heartbeat thread and the agent's core); one mutex.
#pragma once

#include <cstdint>
#include <mutex>
#include <string>

#include "tw/clock.h"

namespace tw {

class TermWatch {
 public:
  static constexpr Millis kMinGiveUpMs = 5000;

  struct Verdict {
    bool accept = true;
    // A line to log and report as an event ("" = nothing new to say).
    std::string say;
    std::string level = "info";  // of `say`
  };

  // A set of `term` arrived at `now`. `lease_ms`: the lease that set grants
  // (kept as the give-up time when it is accepted).
  Verdict check(int64_t term, Millis now, Millis lease_ms);

  // The highest term accepted (-1: none yet in this process).
  int64_t highest() const;
  // Sets refused so far.
  int64_t refused() const;

 private:
  mutable std::mutex mu_;  // guards everything below
  int64_t highest_ = -1;
  Millis last_accepted_ms_ = 0;  // last set of highest_ accepted
  Millis give_up_ms_ = kMinGiveUpMs;
  bool refusing_ = false;  // in a run of refusals (said once)
  int64_t refused_ = 0;
};

}  // namespace tw
