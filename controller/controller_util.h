// Helpers that controller.cc and its section files (controller_placement.cc,
// controller_loop.cc, controller_agents.cc, controller_read.cc) share; defined
// in controller.cc. Internal to the controller library.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "tw/clock.h"
#include "tw/hypervisor.h"
#include "tw/model.h"
#include "tw/placement.h"

namespace tw::controller_detail {

// The VM state a domain state stands for.
VmState vmStateOf(DomainState s);

// Every known VM that the placement no longer wants. PlacementResult::removed
// lists only VMs that have a host (PlacementInput::current); a VM still pending
// (no host has reported yet) or in error must go too when its tier shrinks or
// goes away, or it stays pending for good.
std::vector<std::string> vmsToRemove(const PlacementResult& placed,
                                     const std::map<std::string, VmRecord>& vms);

// "1.5s": a duration for a message.
std::string seconds(Millis ms);

}  // namespace tw::controller_detail
