// The controller's own line to the simulated hosts (HostConnector): liveness
// of each host's libvirt and the fencing methods, answered from the simulated
// world, synchronously, on the virtual clock.
//
//  - libvirtAlive(h): the host is powered on and its network is on.
//  - fenceByLibvirt(h): when alive, destroys every managed domain on the
//    host's FakeHypervisor ("destroyed N domains"); else not confirmed
//    ("libvirt not answering").
//  - fenceByCommand(h, ...): the scenario's fence for the host: ok powers the
//    host off ("command exited 0"), fail confirms nothing ("command exited 1").
// Each outcome is handed out by the next takeResults().
#pragma once

#include <set>
#include <string>
#include <vector>

#include "controller/host_connector.h"
#include "tw/fake_hypervisor.h"

namespace tw::sim {

// What the connector needs from the simulated world.
class SimWorld {
 public:
  virtual ~SimWorld() = default;
  // Powered on and its network on.
  virtual bool libvirtAnswers(const std::string& host) = 0;
  // Null for a host the world does not have.
  virtual FakeHypervisor* hypervisorOf(const std::string& host) = 0;
  // The scenario says the host's fence command fails.
  virtual bool fenceCommandFails(const std::string& host) = 0;
  // A fence command powers the host off (and with it its agent).
  virtual void powerOffByFence(const std::string& host) = 0;
};

class SimHostConnector final : public HostConnector {
 public:
  // REQUIRES: world outlives the connector.
  explicit SimHostConnector(SimWorld& world) : world_(world) {}

  void setHosts(const std::vector<HostSpec>& hosts) override;
  bool libvirtAlive(const std::string& host) override;
  void fenceByLibvirt(const std::string& host) override;
  void fenceByCommand(const std::string& host, const std::string& command,
                      Millis timeout_ms) override;
  std::vector<FenceResult> takeResults() override;

 private:
  SimWorld& world_;
  std::set<std::string> watched_;
  std::vector<FenceResult> results_;
};

}  // namespace tw::sim
