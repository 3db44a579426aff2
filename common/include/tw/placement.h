// Placement: which VM runs on which host. Pure functions of their inputs, so
// the controller, the dry-run planner, the N+1 check and the tests share them.
//
// Rules, in order:
//  1. A VM keeps the host it has while that host is schedulable and still
//     allowed for it (no needless moves, no ping-pong).
//  2. New or displaced VMs are placed tier by tier in Policy::tiersInOrder(),
//     replicas in ordinal order.
//  3. A candidate host must be schedulable, have known capacity with room for
//     the VM's vcpus and memory, be in required_hosts (when given), not be in
//     the VM's avoid set, and, with spread: required, hold no other replica
//     of the same tier.
//  4. Among candidates: active before spare; preferred_hosts first (in their
//     order); fewer replicas of the same tier first (spread: preferred);
//     most free memory first; then host name. Deterministic.
//     While an active host is lost (known, but not schedulable or not taking
//     new VMs: dead, fenced, draining, in maintenance) the spares stand in for
//     it: spread then ranks before "active before spare", so that recovered
//     replicas go to the spare rather than join their siblings.
#pragma once

#include <map>
#include <set>
#include <string>
#include <vector>

#include "tw/model.h"

namespace tw {

struct HostView {
  std::string name;
  HostRole role = HostRole::kActive;
  bool schedulable = true;       // online and not in maintenance / fenced
  // false: keeps the VMs it holds (rule 1) but is never a candidate for new
  // or displaced VMs (an offline host not yet fenced, a host being drained).
  bool accepts_new = true;
  bool capacity_known = true;    // false: agent never reported and no override
  Capacity capacity;             // total
};

struct PlacementInput {
  const Policy* policy = nullptr;
  std::vector<HostView> hosts;
  // Current host of each VM that has one (vm name -> host name). VMs absent
  // here are to be placed.
  std::map<std::string, std::string> current;
  // Hosts a VM must not be placed on (e.g. the host it just exhausted its
  // restart budget on). vm name -> hosts.
  std::map<std::string, std::set<std::string>> avoid;
};

struct VmPlacement {
  std::string vm;       // "<tier>-<ordinal>"
  std::string tier;
  int ordinal = 0;
  std::string host;     // empty = pending
  bool moved = false;   // host differs from PlacementInput::current (or new)
  std::string reason;   // pending: why ("no host has 512 MiB and 1 vCPU free for tier 'db'")
};

struct PlacementResult {
  // Every desired VM, tier order then ordinal; when `partial`
  // (PlacementIndex::placeChanged()), only those not kept where they are:
  // every other desired VM stays on its current host.
  std::vector<VmPlacement> vms;
  bool partial = false;
  std::vector<std::string> removed;      // VMs in `current` no longer desired
  std::map<std::string, Capacity> used;  // per host, after placement

  const VmPlacement* find(const std::string& vm) const;
  bool allPlaced() const;
};

// The names of a tier's VMs: "<tier>-1" .. "<tier>-<replicas>".
std::vector<std::string> vmNamesOf(const TierSpec& tier);

PlacementResult place(const PlacementInput& input);

struct NPlusOneReport {
  bool safe = true;
  // Hosts whose loss leaves some VM unplaceable, with those VMs.
  std::map<std::string, std::vector<std::string>> breaking;
  std::string summary() const;  // "N+1 safe" or "losing host 'h1' leaves web-2 unplaced; ..."
};

// Would every VM still have a host if any single host (spares included) failed?
// Simulates the loss of each host that holds VMs in `placed` and re-places them.
NPlusOneReport checkNPlusOne(const PlacementInput& input, const PlacementResult& placed);

}  // namespace tw
