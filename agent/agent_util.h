// Small helpers that the agent's units share (agent.cc, agent_*.cc).
#pragma once

#include <algorithm>
#include <string>
#include <vector>

#include "tw/log.h"
#include "tw/model.h"
#include "tw/protocol.h"

namespace tw {
namespace agent_detail {

// Delay before restart number k (0-based) within the budget window: the first
// after backoff_initial_ms, then 1 s, 2 s, 4 s, ... capped at backoff_max_ms.
inline Millis backoffFor(size_t k, const RestartBudget& budget) {
  if (k == 0) return budget.backoff_initial_ms;
  Millis delay = 1000;
  for (size_t i = 1; i < k && delay < budget.backoff_max_ms; ++i) delay *= 2;
  return std::min(delay, budget.backoff_max_ms);
}

inline bool isDown(DomainState s) { return !isActive(s); }

using ::tw::isExecuting;  // tw/hypervisor.h

inline std::string vmId(const std::string& vm, int64_t epoch) {
  return fmt::format("vm '{}' (epoch {})", vm, epoch);
}

inline bool sameReport(const DomainReport& a, const DomainReport& b) {
  return a.vm == b.vm && a.tier == b.tier && a.epoch == b.epoch && a.state == b.state &&
         a.health == b.health && a.restarts == b.restarts && a.reason == b.reason &&
         a.ports == b.ports;
}

// The guest ports of an assignment that need a host port: its service ports
// and its check's port.
inline std::vector<int> guestPortsOf(const Assignment& a) {
  std::vector<int> out;
  for (const ServicePort& p : a.ports) {
    if (p.port > 0) out.push_back(p.port);
  }
  if (a.health.kind != HealthKind::kNone && a.health.port > 0) out.push_back(a.health.port);
  return out;
}

// "0.84s"
inline std::string seconds(Millis ms) { return fmt::format("{:.2f}s", static_cast<double>(ms) / 1000.0); }

inline bool sameReports(const std::vector<DomainReport>& a, const std::vector<DomainReport>& b) {
  return std::equal(a.begin(), a.end(), b.begin(), b.end(), sameReport);
}

}  // namespace agent_detail
}  // namespace tw
