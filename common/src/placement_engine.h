// The rules of tw/placement.h as steps that place() and PlacementIndex share,
// so that the incremental path decides exactly what place() decides: one
// implementation of rule 1 (mayKeep) and of rules 2-4 (placeRest), two
// callers. Internal to twcommon.
#pragma once

#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "tw/placement.h"

namespace tw::placement_detail {

// One desired VM while placement runs.
struct Slot {
  const TierSpec* tier = nullptr;
  int ordinal = 0;
  std::string name;
  // Its current host (null: none) and the hosts it must avoid (null or
  // empty: none), as PlacementInput gives them.
  const std::string* current = nullptr;
  const std::set<std::string>* avoid = nullptr;

  bool avoids(const std::string& host) const { return avoid != nullptr && avoid->count(host) > 0; }
  bool hasAvoid() const { return avoid != nullptr && !avoid->empty(); }
};

// Placement state of one input host.
struct HostLoad {
  const HostView* view = nullptr;
  int index = 0;  // in the CapacityIndex of one placeRest(): name order
  Capacity used;
  std::map<std::string, std::vector<std::string>> replicas;  // tier -> VMs here, in order placed

  int64_t freeMemory() const { return view->capacity.memory_mib - used.memory_mib; }
  int freeCpus() const { return view->capacity.cpus - used.cpus; }
  bool fits(const TierSpec& t) const {
    return used.cpus + t.vcpus <= view->capacity.cpus &&
           used.memory_mib + t.memory_mib <= view->capacity.memory_mib;
  }
  int replicasOf(const std::string& tier) const {
    auto it = replicas.find(tier);
    return it == replicas.end() ? 0 : static_cast<int>(it->second.size());
  }
  void add(const TierSpec& t, const std::string& vm) {
    used.cpus += t.vcpus;
    used.memory_mib += t.memory_mib;
    replicas[t.name].push_back(vm);
  }
};

using HostMap = std::map<std::string, HostLoad>;

// The hosts of `views` by name, nothing on them. A duplicate name keeps the
// first view. REQUIRES: `views` outlives the map.
HostMap hostLoadsOf(const std::vector<HostView>& views);

// The desired VMs of `policy` (null: none), tier order then ordinal, with no
// current host and no avoid set.
std::vector<Slot> slotsOf(const Policy* policy);

// Rule 1: may `s`, on host `h` now, stay there? `h` holds the VMs kept
// before `s` in slot order (spread: required keeps the lower ordinal).
bool mayKeep(const Slot& s, const HostLoad& h);

// Rule 4's exception: an active host is lost, the spares stand in for it.
bool sparesStandIn(const std::vector<HostView>& views);

// Rules 2-4: places `todo` (slots not kept, in slot order) on `hosts`, which
// hold the kept VMs; each placed VM is added to its host. Fills each
// VmPlacement whole (vm, tier, ordinal, host, moved, reason).
void placeRest(const Policy* policy, HostMap& hosts, bool spares_stand_in,
               const std::vector<std::pair<const Slot*, VmPlacement*>>& todo);

}  // namespace tw::placement_detail
