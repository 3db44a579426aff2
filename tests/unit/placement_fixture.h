// What the placement tests share (placement_test.cc, placement_index_test.cc):
// a tier and a host as the rules see them, and a result as text to compare
// results whole.
#pragma once

#include <sstream>
#include <string>

#include "tw/model.h"
#include "tw/placement.h"

namespace tw::testing_placement {

inline TierSpec tier(const std::string& name, int replicas, int vcpus, int memory_mib,
                     SpreadMode spread = SpreadMode::kPreferred) {
  TierSpec t;
  t.name = name;
  t.image = name + ".qcow2";
  t.replicas = replicas;
  t.vcpus = vcpus;
  t.memory_mib = memory_mib;
  t.placement.spread = spread;
  return t;
}

inline HostView host(const std::string& name, int cpus, int64_t memory_mib,
                     HostRole role = HostRole::kActive) {
  HostView h;
  h.name = name;
  h.role = role;
  h.capacity = {cpus, memory_mib};
  return h;
}

// Everything in a result, as text.
inline std::string dump(const PlacementResult& r) {
  std::ostringstream os;
  for (const auto& p : r.vms)
    os << p.vm << '|' << p.tier << '|' << p.ordinal << '|' << p.host << '|' << p.moved << '|'
       << p.reason << '\n';
  for (const auto& vm : r.removed) os << "removed " << vm << '\n';
  for (const auto& [h, c] : r.used)
    os << "used " << h << ' ' << c.cpus << ' ' << c.memory_mib << '\n';
  return os.str();
}

}  // namespace tw::testing_placement
