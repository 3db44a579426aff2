#include "tw/model.h"

#include <algorithm>
#include <map>
#include <set>

#include "tw/hypervisor.h"

namespace tw {

const TierSpec* Policy::findTier(const std::string& name) const {
  for (const auto& t : tiers)
    if (t.name == name) return &t;
  return nullptr;
}

const HostSpec* Policy::findHost(const std::string& name) const {
  for (const auto& h : hosts)
    if (h.name == name) return &h;
  return nullptr;
}

std::vector<const TierSpec*> Policy::tiersInOrder() const {
  // Kahn's algorithm; among ready tiers: higher priority, then declaration order.
  std::map<std::string, int> index;
  for (size_t i = 0; i < tiers.size(); ++i) index[tiers[i].name] = static_cast<int>(i);
  std::vector<int> pending_deps(tiers.size(), 0);
  std::vector<std::vector<int>> dependents(tiers.size());
  for (size_t i = 0; i < tiers.size(); ++i) {
    for (const auto& dep : tiers[i].after) {
      auto it = index.find(dep);
      if (it == index.end()) continue;
      ++pending_deps[i];
      dependents[it->second].push_back(static_cast<int>(i));
    }
  }
  auto before = [&](int a, int b) {
    if (tiers[a].priority != tiers[b].priority) return tiers[a].priority > tiers[b].priority;
    return a < b;
  };
  std::vector<int> ready;
  for (size_t i = 0; i < tiers.size(); ++i)
    if (pending_deps[i] == 0) ready.push_back(static_cast<int>(i));
  std::vector<const TierSpec*> out;
  while (!ready.empty()) {
    auto it = std::min_element(ready.begin(), ready.end(), before);
    int cur = *it;
    ready.erase(it);
    out.push_back(&tiers[cur]);
    for (int d : dependents[cur])
      if (--pending_deps[d] == 0) ready.push_back(d);
  }
  // A cycle (refused by the parser) would leave tiers out: append them.
  for (size_t i = 0; i < tiers.size(); ++i)
    if (std::find(out.begin(), out.end(), &tiers[i]) == out.end()) out.push_back(&tiers[i]);
  return out;
}

const char* toString(VmState s) {
  switch (s) {
    case VmState::kPending: return "pending";
    case VmState::kStarting: return "starting";
    case VmState::kRunning: return "running";
    case VmState::kStopped: return "stopped";
    case VmState::kCrashed: return "crashed";
    case VmState::kRestarting: return "restarting";
    case VmState::kMigrating: return "migrating";
    case VmState::kFencing: return "fencing";
    case VmState::kRecovering: return "recovering";
    case VmState::kError: return "error";
  }
  return "unknown";
}

const char* toString(HostState s) {
  switch (s) {
    case HostState::kUnknown: return "unknown";
    case HostState::kOnline: return "online";
    case HostState::kSuspect: return "suspect";
    case HostState::kOffline: return "offline";
    case HostState::kFenced: return "fenced";
    case HostState::kMaintenance: return "maintenance";
  }
  return "unknown";
}

const char* toString(Health h) {
  switch (h) {
    case Health::kUnknown: return "unknown";
    case Health::kHealthy: return "healthy";
    case Health::kUnhealthy: return "unhealthy";
  }
  return "unknown";
}

const char* toString(HostRole r) { return r == HostRole::kSpare ? "spare" : "active"; }

const char* toString(FenceMethod f) {
  switch (f) {
    case FenceMethod::kNone: return "none";
    case FenceMethod::kLibvirt: return "libvirt";
    case FenceMethod::kAgent: return "agent";
  }
  return "none";
}

const char* toString(NPlusOneMode m) {
  switch (m) {
    case NPlusOneMode::kRefuse: return "refuse";
    case NPlusOneMode::kWarn: return "warn";
    case NPlusOneMode::kOff: return "off";
  }
  return "off";
}

const char* toString(SpreadMode m) {
  switch (m) {
    case SpreadMode::kRequired: return "required";
    case SpreadMode::kPreferred: return "preferred";
    case SpreadMode::kNone: return "none";
  }
  return "none";
}

const char* toString(HealthKind k) {
  switch (k) {
    case HealthKind::kNone: return "none";
    case HealthKind::kTcp: return "tcp";
    case HealthKind::kHttp: return "http";
  }
  return "none";
}

const char* toString(StorageKind k) { return k == StorageKind::kShared ? "shared" : "ephemeral"; }

const char* toString(DomainState s) {
  switch (s) {
    case DomainState::kNoState: return "nostate";
    case DomainState::kRunning: return "running";
    case DomainState::kBlocked: return "blocked";
    case DomainState::kPaused: return "paused";
    case DomainState::kShutdown: return "shutdown";
    case DomainState::kShutoff: return "shutoff";
    case DomainState::kCrashed: return "crashed";
    case DomainState::kPmSuspended: return "pmsuspended";
  }
  return "nostate";
}

bool isActive(DomainState s) {
  return s == DomainState::kRunning || s == DomainState::kBlocked || s == DomainState::kPaused ||
         s == DomainState::kShutdown || s == DomainState::kPmSuspended;
}

const char* toString(DomainEventKind k) {
  switch (k) {
    case DomainEventKind::kDefined: return "defined";
    case DomainEventKind::kUndefined: return "undefined";
    case DomainEventKind::kStarted: return "started";
    case DomainEventKind::kSuspended: return "suspended";
    case DomainEventKind::kResumed: return "resumed";
    case DomainEventKind::kStopped: return "stopped";
    case DomainEventKind::kCrashed: return "crashed";
    case DomainEventKind::kMigrated: return "migrated";
  }
  return "stopped";
}

namespace {
template <typename E, size_t N>
std::optional<E> parseEnum(const std::string& s, const E (&all)[N]) {
  for (E e : all)
    if (s == toString(e)) return e;
  return std::nullopt;
}
}  // namespace

std::optional<VmState> vmStateFromString(const std::string& s) {
  static const VmState all[] = {VmState::kPending, VmState::kStarting, VmState::kRunning,
                                VmState::kStopped, VmState::kCrashed, VmState::kRestarting,
                                VmState::kMigrating, VmState::kFencing, VmState::kRecovering,
                                VmState::kError};
  return parseEnum(s, all);
}

std::optional<HostState> hostStateFromString(const std::string& s) {
  static const HostState all[] = {HostState::kUnknown, HostState::kOnline, HostState::kSuspect,
                                  HostState::kOffline, HostState::kFenced, HostState::kMaintenance};
  return parseEnum(s, all);
}

std::optional<Health> healthFromString(const std::string& s) {
  static const Health all[] = {Health::kUnknown, Health::kHealthy, Health::kUnhealthy};
  return parseEnum(s, all);
}

}  // namespace tw
