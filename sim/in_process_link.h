// The agent's ControllerLink inside the simulator: a direct call into the
// Controller, in the same thread and the same virtual instant. A host whose
// network is off, or a controller that is down, answers kUnavailable
// ("network unreachable"), as the HTTP link does when it cannot connect.
#pragma once

#include <functional>

#include "controller/controller.h"
#include "tw/protocol.h"

namespace tw::sim {

class InProcessLink final : public ControllerLink {
 public:
  // `controller` returns the controller in service (null while it is down);
  // `connected` says whether this host's network reaches it now.
  InProcessLink(std::function<Controller*()> controller, std::function<bool()> connected)
      : controller_(std::move(controller)), connected_(std::move(connected)) {}

  Result<AssignmentSet> heartbeat(const Heartbeat& hb) override;
  Status sendEvent(const AgentEvent& event) override;

 private:
  // The controller when this host reaches it, else null.
  Controller* reachable() const;

  std::function<Controller*()> controller_;
  std::function<bool()> connected_;
};

}  // namespace tw::sim
