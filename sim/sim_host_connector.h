// The controller's own line to the simulated hosts (HostConnector): liveness
// of each host's libvirt and the fencing methods, answered from the simulated
// world, synchronously, on the virtual clock.
//
//  - libvirtAlive(h): the host is powered on, its network is on, and the
//    controller reaches it (SimWorld::libvirtAnswers).
//  - fenceByLibvirt(h): when alive, destroys every managed domain on the
//    host's FakeHypervisor ("destroyed N domains"); else not confirmed
//    ("libvirt not answering").
//  - fenceByAgent(h, agent, ...): the simulator's fence agents
//    (simFenceAgents()): `fail` confirms nothing ("exited 1"), nor does any
//    agent while the controller cannot reach fence devices ("exited 1:
//    fence device unreachable", `controller network off`); any other
//    powers the host off ("exited 0").
// Each outcome is handed out by the next takeResults().
#pragma once

#include <set>
#include <string>
#include <vector>

#include "controller/fence_agents.h"
#include "controller/host_connector.h"
#include "tw/fake_hypervisor.h"

namespace tw::sim {

// The fence agents of the simulated controller's configuration, the ones a
// scenario's cluster.yaml may name: `ok` (powers the host off, exit 0) and
// `fail` (exit 1, the host stays as it is).
FenceAgents simFenceAgents();

// What the connector needs from the simulated world.
class SimWorld {
 public:
  virtual ~SimWorld() = default;
  // Powered on and its network on.
  virtual bool libvirtAnswers(const std::string& host) = 0;
  // Null for a host the world does not have.
  virtual FakeHypervisor* hypervisorOf(const std::string& host) = 0;
  // A fence agent powers the host off (and with it its agent).
  virtual void powerOffByFence(const std::string& host) = 0;
  // Can the controller's fence agents reach the host's fence device now?
  virtual bool fenceDeviceReachable(const std::string& /*host*/) { return true; }
  // A libvirt fence destroyed `vms` running domains on the host.
  virtual void destroyedByFence(const std::string& /*host*/, int /*vms*/) {}
};

class SimHostConnector final : public HostConnector {
 public:
  // REQUIRES: world outlives the connector.
  explicit SimHostConnector(SimWorld& world) : world_(world) {}

  void setHosts(const std::vector<HostSpec>& hosts) override;
  bool libvirtAlive(const std::string& host) override;
  void fenceByLibvirt(const std::string& host) override;
  void fenceByAgent(const std::string& host, const std::string& agent,
                    const std::vector<std::string>& argv, Millis timeout_ms) override;
  std::vector<FenceResult> takeResults() override;

 private:
  SimWorld& world_;
  std::set<std::string> watched_;
  std::vector<FenceResult> results_;
};

}  // namespace tw::sim
