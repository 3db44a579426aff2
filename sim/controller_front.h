// The controller daemon's agent-facing side in the simulator: what
// ControllerService (controller/service.h) does with heartbeats and events,
// without threads, on the virtual clock.
//
//  - Normally a heartbeat or an event reaches Controller::handleHeartbeat /
//    handleAgentEvent at once (the loop answers well within 250 ms).
//  - While the controller's loop is stalled (`controller stall`), the HTTP
//    side still answers: a heartbeat gets the host's last published
//    assignment set (the one the assignment listener last saw; when none was
//    published yet, the daemon's HTTP thread would wait for the loop: here it
//    fails, kUnavailable) and is queued for the loop; an event is queued and
//    acknowledged; operator commands are queued too. When the stall ends the
//    queue is worked through in arrival order, before the loop's next tick.
//  - While the controller is down every call is kUnavailable.
//
// Connectivity (networks, links) is the InProcessLink's business, not this one's.
#pragma once

#include <deque>
#include <functional>
#include <map>
#include <string>

#include "controller/controller.h"
#include "sim/in_process_link.h"
#include "tw/clock.h"

namespace tw::sim {

class ControllerFront final : public ControllerEndpoint {
 public:
  // The controller in service (null while it is down). A new controller
  // process starts with nothing published, nothing queued, no stall.
  void setController(Controller* controller);
  Controller* controller() const { return controller_; }

  // The controller's assignment listener: `host`'s set changed. Keeps a copy
  // of the set, as ControllerService does for its HTTP threads.
  void published(const std::string& host);
  // The set last published for `host` (version 0: none yet).
  AssignmentSet lastPublished(const std::string& host) const {
    auto it = published_.find(host);
    return it == published_.end() ? AssignmentSet{} : it->second;
  }

  // The loop is blocked until `until` (extends a stall under way). No-op
  // while the controller is down.
  void stall(Millis until);
  bool stalled() const { return controller_ != nullptr && stalled_until_ > 0; }
  Millis stalledUntil() const { return stalled_until_; }
  size_t queued() const { return queue_.size(); }
  // The stall is over: runs what was queued, in order. Returns how many items.
  size_t endStall();

  // Runs `work` on the controller now, or queues it while the loop is
  // stalled. Returns false when queued. REQUIRES: the controller is up.
  bool run(std::function<void(Controller&)> work);

  // ControllerEndpoint
  Result<AssignmentSet> heartbeat(const Heartbeat& hb) override;
  Status agentEvent(const AgentEvent& event) override;

 private:
  Controller* controller_ = nullptr;
  Millis stalled_until_ = 0;
  std::deque<std::function<void(Controller&)>> queue_;
  std::map<std::string, AssignmentSet> published_;  // host -> last published set
};

}  // namespace tw::sim
