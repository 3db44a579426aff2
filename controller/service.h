// The controller daemon's threading shell: one loop thread owns the
// Controller; HTTP handler threads post work to it and wait for the answer.
// This is the real-time edge of the controller (it waits on std::chrono time);
// the logic inside Controller takes time only from its Clock.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <map>
#include <set>
#include <memory>
#include <mutex>
#include <thread>
#include <type_traits>

#include "controller/controller.h"
#include "controller/heartbeat_counters.h"
#include "controller/heartbeat_fastpath.h"

namespace tw {

class ControllerService {
 public:
  // REQUIRES: controller outlives the service; recover() already called.
  // `clock`: the Controller's (the fast path's freshness).
  ControllerService(Controller& controller, Millis tick_ms, const Clock& clock = SystemClock::instance());
  ~ControllerService();

  // With several replicas (the etcd store): `may_act` is asked before every
  // reconcile step, which is skipped while it returns false (this replica
  // does not lead, or its lease ran out). Calls on the queue still run; their
  // writes are refused by the store's leader guard. Set before start().
  void setMayAct(std::function<bool()> may_act) { may_act_ = std::move(may_act); }

  // Loop thread only (from may_act or a call()): from now on calls and
  // reconcile steps go to `next` (a follower's refreshed view, or the
  // controller a replica acts with once it leads: controller/replica.h).
  // REQUIRES: next outlives its use; the previous one may be destroyed after.
  void swapController(Controller& next);
  // Loop thread only: the newest event id in the store, when events were
  // written by someone else (the leader, seen by a follower): wakes event
  // waits and streams as a new event of this controller would.
  void noteEventId(int64_t id);

  void start();
  // Releases every long poll and event wait at once (before the HTTP server
  // stops, so that it does not wait for them); the loop keeps serving calls.
  void releaseWaiters();
  void stop();  // joins the loop thread

  // Runs f(controller) on the loop thread and returns its result. Blocks.
  template <typename F>
  auto call(F f) -> std::invoke_result_t<F, Controller&> {
    using R = std::invoke_result_t<F, Controller&>;
    // The declared hosts are refreshed before the caller gets its answer: a
    // heartbeat right after an apply must not find its host undeclared.
    auto task = std::make_shared<std::packaged_task<R()>>([this, f]() mutable {
      if constexpr (std::is_void_v<R>) {
        f(*controller_);
        refreshDeclared();
      } else {
        R result = f(*controller_);
        refreshDeclared();
        return result;
      }
    });
    auto fut = task->get_future();
    post([task] { (*task)(); });
    return fut.get();
  }

  // Controller::applyPolicy with ProbeMode::kWait: called again on the loop
  // every kProbePollMs while the apply waits for the hosts to report its new
  // paths (at most PathProbes::kWaitMs on the controller's clock). Only
  // this HTTP thread waits; the loop goes on. Past kProbeGiveUpMs of real
  // time (a controller clock that stands still) or at shutdown it stops
  // waiting (ProbeMode::kStopWaiting).
  static constexpr Millis kProbePollMs = 50;
  static constexpr Millis kProbeGiveUpMs = 2 * PathProbes::kWaitMs;  // under twctl's 10 s
  Result<ApplyResult> applyPolicy(const std::vector<PolicyFile>& files, bool dry_run);

  // An agent's heartbeat, never held up by a busy loop: it is queued for the
  // loop (in arrival order, before the loop's next liveness check) and
  // answered with the loop's result when that comes within answer_wait_ms,
  // else with the host's last published assignment set. A lease renewed from
  // that set is safe: the controller fences only from the loop, and the loop
  // processes every queued heartbeat before it next judges liveness.
  // A heartbeat that reports no change is answered at once on the calling
  // thread (controller/heartbeat_fastpath.h); its renewal reaches the loop
  // before its next reconcile step.
  // `how` (optional): set to how it was answered (fast, loop or published;
  // controller/heartbeat_counters.h) when the answer is a set.
  // Errors: kNotFound when the host is not declared in the policy in force.
  Result<AssignmentSet> heartbeat(const Heartbeat& hb, Millis answer_wait_ms = 250,
                                  HeartbeatPath* how = nullptr);
  // As heartbeat(), answered as the set's JSON text (what the agents'
  // listener sends): a set from the fast path is written out once, not per
  // heartbeat. A compact heartbeat (Heartbeat::compact) is answered only by
  // the fast path. Errors: as heartbeat(); kFailedPrecondition ("report
  // wanted", how = kReportWanted) for a compact heartbeat that the fast path
  // cannot answer: the agent sends its full report.
  Result<std::string> heartbeatJson(const Heartbeat& hb, Millis answer_wait_ms, HeartbeatPath* how);
  // Runs the queued items in order, each destroyed before the next runs.
  // A heartbeat's item holds its answer (for the loop path at 1,000 hosts:
  // a set with 999 peers, 64 KiB) until it is destroyed; when the HTTP
  // thread stopped waiting for it, nothing else frees it. Kept to the end
  // of a drained batch of thousands (a start of 1,000 agents), they made
  // the controller's peak (heaptrack: 279 MiB) and left its arenas
  // fragmented. Public for tests.
  static void runEach(std::deque<std::function<void()>>* work);
  // Heartbeats answered without the loop since the start.
  int64_t fastHeartbeats() const { return fast_.answered(); }
  // Why heartbeats missed the fast path (HeartbeatFastPath::metricsText).
  std::string fastPathMetricsText() const { return fast_.metricsText(); }
  // An agent's event: checked against the declared hosts, queued for the loop,
  // not waited for. Errors: kNotFound (host not declared).
  Status agentEvent(const AgentEvent& event);
  // True when the host is declared in the policy in force (a snapshot the
  // loop refreshes; no wait for the loop).
  bool hostDeclared(const std::string& host);

  // Long poll: the host's assignment set as soon as its version is > after,
  // or the current one after wait_ms. Reads the published snapshot only.
  // Without the peer list (peers_omitted) when `agent_peers_digest` is the
  // current list's digest, as for a heartbeat (Controller::assignmentsFor).
  AssignmentSet waitAssignments(const std::string& host, int64_t after, Millis wait_ms,
                                const std::string& agent_peers_digest = "");
  // True when a long poll with `after` would be answered at once (the host's
  // published version is > after, or waiters are released). No wait.
  bool assignmentsAfter(const std::string& host, int64_t after);
  // Called with the host whose set was published (under the service's lock:
  // it must not call back), or "" when every waiter is released; null to
  // remove. Long polls parked without a thread (long_polls.h) wait on it.
  void setAssignmentNotifier(std::function<void(const std::string& host)> notify);

  // Blocks until an event with id > after exists or wait_ms passes; returns
  // the newest event id known.
  int64_t waitEvents(int64_t after, Millis wait_ms);
  bool stopping();
  // Called (on the loop thread) after every new event; null to remove.
  void setEventNotifier(std::function<void()> notify);

 private:
  void post(std::function<void()> work);
  void loop();
  // Loop thread: runs every queued item (also those queued meanwhile).
  void drainQueue();
  // Loop thread: the declared hosts' snapshot, when the policy changed.
  void refreshDeclared();

  // Loop thread: attaches the listeners to controller_.
  void listen();
  // Loop thread: the renewals answered off the loop, then the peer digest.
  void applyFastRenewals();
  // heartbeat() past the fast path: queued for the loop.
  Result<AssignmentSet> viaLoop(const Heartbeat& hb, Millis answer_wait_ms, HeartbeatPath* how);
  // Loop thread: how long the loop's view of a host stays fresh for the fast path.
  Millis freshMs() const;

  Controller* controller_;  // never null; changed on the loop thread only
  const Millis tick_ms_;
  std::function<bool()> may_act_;  // set before start(); read on the loop thread
  HeartbeatFastPath fast_;          // thread-safe
  std::thread thread_;
  // Loop thread: the Controller's peer list (every declared host with its
  // address) into peers_ when its digest changed; every tick and before a set
  // is published.
  void refreshPeers(const std::string& digest);

  std::mutex mu_;  // guards everything below
  std::condition_variable work_cv_;
  std::condition_variable change_cv_;
  std::deque<std::function<void()>> queue_;
  // The newest peer list the loop has seen, and its digest: written on the
  // loop thread (refreshPeers), read by publishedSet(). Every published set
  // is answered with it.
  std::shared_ptr<const std::vector<PeerInfo>> peers_;
  std::string peers_digest_;
  std::map<std::string, int64_t> versions_;  // host -> assignment version
  // As Controller::assignmentsFor(host, agent_peers_digest) from a published
  // set, with the newest peer list. REQUIRES: mu_ held.
  AssignmentSet publishedSet(const AssignmentSet& stored, const std::string& agent_peers_digest = "") const;
  std::vector<PeerInfo> allPeers() const;  // loop thread: every declared host with its address
  // host -> last published set, kept without its peer list (at 1,000 hosts
  // the lists were 1,000 x 999 entries, ~64 MiB): publishedSet() puts the
  // newest list (peers_) back. The set is the fast path's
  // (HeartbeatFastPath::notePublished): one copy. Never null.
  std::map<std::string, std::shared_ptr<const AssignmentSet>> published_;
  std::set<std::string> declared_;                  // hosts of the policy in force
  int64_t declared_version_ = -1;                   // policy version of declared_
  int64_t last_event_id_ = 0;
  std::function<void()> event_notifier_;
  std::function<void(const std::string&)> assignment_notifier_;
  bool stopping_ = false;
  bool waiters_released_ = false;
};

}  // namespace tw
