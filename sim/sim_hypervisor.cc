#include "sim/sim_hypervisor.h"

namespace tw::sim {

Status SimHypervisor::start(const std::string& vm) {
  auto it = fail_starts_.find(vm);
  // Fail only a start that would have happened: a reachable hypervisor, a
  // defined managed domain that is not running yet.
  if (it != fail_starts_.end() && it->second > 0 && hv_.ping().isOk() && hv_.spec(vm) != nullptr &&
      !hv_.isRunning(vm)) {
    --it->second;
    return internalError("starting vm '" + vm + "': injected start failure");
  }
  return hv_.start(vm);
}

}  // namespace tw::sim
