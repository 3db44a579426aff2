#include "sim/sim_hypervisor.h"

namespace tw::sim {

Status SimHypervisor::start(const std::string& vm) {
  ++calls_;
  return startOne(vm);
}

std::vector<Status> SimHypervisor::startAll(const std::vector<std::string>& vms) {
  calls_ += (static_cast<int64_t>(vms.size()) + 3) / 4;
  std::vector<Status> out;
  out.reserve(vms.size());
  for (const auto& vm : vms) out.push_back(startOne(vm));
  return out;
}

Status SimHypervisor::startOne(const std::string& vm) {
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
