// Heartbeats that report no change, answered on the HTTP thread (issue #16):
// no hand-off to the controller loop, no set built, O(the host's VMs) for
// the heartbeat's digest.
//
// Per host it keeps a snapshot: the set last answered or published for it
// (without the peer list), the digest of the last heartbeat the loop took,
// whether the loop had it online, and until when that view is fresh. A
// heartbeat is answered here only when it carries no events and no host
// report, its digest (everything but seq, and how long each unreachable peer
// has been unreachable) equals the last one the loop took,
// the agent runs the snapshot's set (version and controller), holds the
// current peer list, the loop had the host online, and the view is fresh
// (the loop heard the host within the window the service gives: dead_after,
// ControllerService::freshMs). Then its renewal
// goes into a table that the loop applies before each reconcile step
// (Controller::renewOffLoop), with the durations of the peers it reports
// unreachable (the quorum's evidence, controller_quorum.cc); anything else
// goes to the loop as before.
//
// Why a renewal here is safe. Its harm would be an answer that renews the
// agent's lease while the loop has already declared the host dead: the loop
// ignores that renewal (an offline host is not renewed off the loop), its
// lease fence waits only for the lease of the last heartbeat it applied,
// and the agent would keep its VMs past that wait while they start
// elsewhere. So the loop, just before it declares a host dead, closes this
// path for it (close(), under the same mutex as the answer): no answer
// after that instant, and any answer before it is still in the table, so
// close() reports it and the host is not declared dead (its renewal comes
// at the next step). This holds whatever the clock, the tick's length or
// the window; the window only sends long-silent hosts to the loop. Who else
// could make an answer here harmful: a new set for the host (published
// first; the agent's old version then misses; an answer racing the publish
// is refused, the snapshot changed), a new peer list (digest), a drain
// (the loop's set moves the VMs; a renewal of a host in maintenance renews
// no fence), an apply (forgetSets()).
//
// Threads: tryAnswer() on HTTP threads; the rest on the loop thread. One
// mutex guards the table (mu_); a snapshot is an immutable shared_ptr.
#pragma once

#include <array>
#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <utility>
#include <string>
#include <vector>

#include "tw/clock.h"
#include "tw/protocol.h"

namespace tw {

class HeartbeatFastPath {
 public:
  // REQUIRES: clock outlives this (the Controller's clock).
  explicit HeartbeatFastPath(const Clock& clock) : clock_(clock) {}

  // An answer of the fast path: the set, and its JSON text, written once
  // per set however many heartbeats it answers (issue #16: writing the set
  // out was the largest cost of a heartbeat at 1,000 hosts).
  class Answer {
   public:
    explicit Answer(AssignmentSet set) : set_(std::make_shared<const AssignmentSet>(std::move(set))) {}
    // Shares `set` (the service keeps the same set as its published one).
    // REQUIRES: set is not null.
    explicit Answer(std::shared_ptr<const AssignmentSet> set) : set_(std::move(set)) {}
    const AssignmentSet& set() const { return *set_; }
    // jsonText(Json(set())), made on first use. Thread-safe.
    const std::string& json() const;

   private:
    const std::shared_ptr<const AssignmentSet> set_;  // never null
    mutable std::once_flag once_;
    mutable std::string json_;
  };

  // HTTP thread: the answer, or nullopt (the loop takes the heartbeat).
  // A compact heartbeat (Heartbeat::compact) is compared by its
  // report_digest; it is answered here or not at all.
  std::optional<AssignmentSet> tryAnswer(const Heartbeat& hb);
  // As tryAnswer, without a copy of the set: null = not answered here.
  std::shared_ptr<const Answer> tryAnswerShared(const Heartbeat& hb);

  // Loop thread: the loop took `hb` and answered `answer`; `online`: the
  // host's state after it; `fresh_ms`: how long the view stays fresh.
  void noteTaken(const Heartbeat& hb, const AssignmentSet& answer, bool online, Millis fresh_ms);
  // Loop thread: the host's set changed (a newer version).
  void notePublished(const AssignmentSet& set);
  // As above, sharing `set` when it has no peer list already (peers_omitted,
  // as Controller::assignmentsFor gives for the current peers digest): one
  // copy of each host's set for the fast path and the service's published
  // sets (issue #16's memory). REQUIRES: set is not null.
  void notePublished(std::shared_ptr<const AssignmentSet> set);
  // Loop thread: the current peer list's digest (AssignmentSet::peers_digest).
  void notePeersDigest(const std::string& digest);
  // A heartbeat answered here, for the loop to apply.
  struct Renewal {
    std::string host;
    // The heartbeat's peers_unreachable: the peers the report the loop took
    // names (the digest leaves only their durations out), for how long each
    // had been unreachable when the agent sent it.
    std::map<std::string, Millis> peers_unreachable;
  };
  // Loop thread: the renewals answered here since the last call, oldest
  // first per host.
  std::vector<Renewal> takeRenewals();
  // Loop thread: the loop applied a renewal of `host`: online or not now.
  void noteRenewed(const std::string& host, bool online, Millis fresh_ms);
  // Loop thread, just before the loop declares `host` dead
  // (Controller::setOffLoopCloser): no heartbeat of it is answered here
  // until the loop takes one again. True when renewals of it answered here
  // wait for the loop (takeRenewals): then it was heard, and is not dead.
  bool close(const std::string& host);
  // Everything is forgotten (the service's Controller changed).
  void reset();
  // Loop thread: no heartbeat is answered here until the loop takes one of
  // the host again (an apply asks hosts to check new paths: the loop's
  // answers carry them). Renewals already answered are kept for the loop.
  void forgetSets();

  int64_t answered() const;  // answered here since the start (metrics, tests)

  // Why a heartbeat was not answered here (metrics: which rule sends
  // heartbeats to the loop at scale, issue #16).
  enum class Miss {
    kReport,      // events, a host report or no peers digest: the loop's work
    kUnknown,     // nothing taken from the host yet (or forgotten after an apply)
    kNotOnline,   // the loop did not have it online
    kStale,       // the loop's view of it is no longer fresh
    kSetChanged,  // the agent runs another set (version or controller)
    kPeers,       // another peer list
    kDigest,      // its report changed
    kRaced,       // the loop changed the host's view while it was compared
  };
  static constexpr size_t kMisses = 8;
  int64_t misses(Miss why) const { return misses_[static_cast<size_t>(why)].load(std::memory_order_relaxed); }
  // tierwarden_heartbeat_fastpath_misses_total{reason}: HELP, TYPE, a line a reason.
  std::string metricsText() const;

  // The digest of what a heartbeat reports (everything but seq and events).
  static std::string digestOf(const Heartbeat& hb);

 private:
  struct Snapshot {
    std::shared_ptr<const Answer> answer;  // the set, peers left out; never null
    std::string hb_digest;
    bool online = false;
    Millis fresh_until_ms = 0;
  };
  void store(const std::string& host, Snapshot snap);  // REQUIRES: mu_ held
  std::shared_ptr<const Answer> miss(Miss why) {
    misses_[static_cast<size_t>(why)].fetch_add(1, std::memory_order_relaxed);
    return nullptr;
  }

  const Clock& clock_;
  mutable std::mutex mu_;  // guards everything below
  std::map<std::string, std::shared_ptr<const Snapshot>> hosts_;
  std::string peers_digest_;
  std::vector<Renewal> renewed_;
  int64_t answered_ = 0;
  std::array<std::atomic<int64_t>, kMisses> misses_{};  // relaxed: counters only
};

}  // namespace tw
