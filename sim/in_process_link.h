// The agent's ControllerLink inside the simulator: a direct call into the
// controller's side (a ControllerEndpoint: the simulator's ControllerFront),
// in the same thread and the same virtual instant. A host that does not reach
// the controller now (its network, the controller's network, a cut link)
// gets kUnavailable ("network unreachable"), as the HTTP link does when it
// cannot connect; so does every host while the controller is down (the
// endpoint says so).
#pragma once

#include <functional>

#include "tw/protocol.h"

namespace tw::sim {

// What the link reaches: the controller daemon's agent-facing side.
class ControllerEndpoint {
 public:
  virtual ~ControllerEndpoint() = default;
  virtual Result<AssignmentSet> heartbeat(const Heartbeat& hb) = 0;
  virtual Status agentEvent(const AgentEvent& event) = 0;
};

class InProcessLink final : public ControllerLink {
 public:
  // `connected` says whether this host reaches the controller now.
  // REQUIRES: endpoint outlives the link.
  InProcessLink(ControllerEndpoint& endpoint, std::function<bool()> connected)
      : endpoint_(endpoint), connected_(std::move(connected)) {}

  Result<AssignmentSet> heartbeat(const Heartbeat& hb) override;
  Status sendEvent(const AgentEvent& event) override;

 private:
  ControllerEndpoint& endpoint_;
  std::function<bool()> connected_;
};

}  // namespace tw::sim
