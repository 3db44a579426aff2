#include "sim/in_process_link.h"

namespace tw::sim {

Result<AssignmentSet> InProcessLink::heartbeat(const Heartbeat& hb) {
  if (!connected_()) return unavailable("network unreachable");
  return endpoint_.heartbeat(hb);
}

Status InProcessLink::sendEvent(const AgentEvent& event) {
  if (!connected_()) return unavailable("network unreachable");
  return endpoint_.agentEvent(event);
}

}  // namespace tw::sim
