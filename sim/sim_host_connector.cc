#include "sim/sim_host_connector.h"

namespace tw::sim {

FenceAgents simFenceAgents() {
  // The commands are never run: SimHostConnector answers by the agent's name.
  auto agents =
      parseFenceAgents("ok = sim-fence {host}\nfail = sim-fence --fail {host}\n", "simulator");
  return agents.isOk() ? *agents : FenceAgents{};
}

void SimHostConnector::setHosts(const std::vector<HostSpec>& hosts) {
  watched_.clear();
  for (const auto& h : hosts) watched_.insert(h.name);
}

bool SimHostConnector::libvirtAlive(const std::string& host) {
  return watched_.count(host) != 0 && world_.libvirtAnswers(host);
}

void SimHostConnector::fenceByLibvirt(const std::string& host) {
  FakeHypervisor* hv = world_.hypervisorOf(host);
  if (!libvirtAlive(host) || hv == nullptr) {
    results_.push_back({host, "libvirt", false, "libvirt not answering"});
    return;
  }
  Result<std::vector<DomainStatus>> listed = hv->listManaged();
  if (!listed) {
    results_.push_back({host, "libvirt", false, listed.status().message()});
    return;
  }
  int destroyed = 0;
  for (const DomainStatus& d : *listed) {
    if (!isActive(d.state)) continue;
    Status st = hv->destroy(d.meta.vm);
    if (!st.isOk()) {
      if (destroyed > 0) world_.destroyedByFence(host, destroyed);
      results_.push_back({host, "libvirt", false, st.message()});
      return;
    }
    ++destroyed;
  }
  world_.destroyedByFence(host, destroyed);
  results_.push_back(
      {host, "libvirt", true, "destroyed " + std::to_string(destroyed) + " domains"});
}

void SimHostConnector::fenceByAgent(const std::string& host, const std::string& agent,
                                    const std::vector<std::string>& /*argv*/,
                                    Millis /*timeout_ms*/) {
  if (world_.hypervisorOf(host) == nullptr) {
    results_.push_back({host, "agent", false, "no such host in the simulation", agent});
    return;
  }
  if (agent == "fail") {
    results_.push_back({host, "agent", false, "exited 1", agent});
    return;
  }
  if (!world_.fenceDeviceReachable(host)) {
    results_.push_back({host, "agent", false, "exited 1: fence device unreachable", agent});
    return;
  }
  world_.powerOffByFence(host);
  results_.push_back({host, "agent", true, "exited 0", agent});
}

std::vector<FenceResult> SimHostConnector::takeResults() {
  std::vector<FenceResult> out;
  out.swap(results_);
  return out;
}

}  // namespace tw::sim
