#include "sim/in_process_link.h"

namespace tw::sim {

Controller* InProcessLink::reachable() const {
  if (!connected_()) return nullptr;
  return controller_();
}

Result<AssignmentSet> InProcessLink::heartbeat(const Heartbeat& hb) {
  Controller* c = reachable();
  if (c == nullptr) return unavailable("network unreachable");
  return c->handleHeartbeat(hb);
}

Status InProcessLink::sendEvent(const AgentEvent& event) {
  Controller* c = reachable();
  if (c == nullptr) return unavailable("network unreachable");
  return c->handleAgentEvent(event);
}

}  // namespace tw::sim
