// The controller's own line to every host's hypervisor, independent of the
// agents: the second liveness signal ("does its libvirt still answer?") and
// the fencing methods. Implementations: LibvirtHostConnector (the daemon: one
// keepalive'd connection per host, each on its own thread, so a dead host
// never blocks the loop) and the simulator's connector (synchronous, virtual
// time). Every method is called on the controller's thread and never blocks.
#pragma once

#include <string>
#include <vector>

#include "tw/clock.h"
#include "tw/model.h"
#include "tw/status.h"

namespace tw {

struct FenceResult {
  std::string host;
  std::string method;   // "libvirt" | "agent"
  bool confirmed = false;
  // "destroyed 3 domains", "libvirt not answering", "exited 0", "timed out
  // after 30.0s", ... Shown in events: never a command or its arguments.
  std::string detail;
  std::string agent = {};  // method "agent": the fence agent's name
};

class HostConnector {
 public:
  virtual ~HostConnector() = default;

  // The hosts to watch (from the policy in force); connects to new ones,
  // drops removed ones.
  virtual void setHosts(const std::vector<HostSpec>& hosts) = 0;

  // Latest knowledge: does the host's libvirt answer (connection up, keepalive
  // ok)? False for a host never reached.
  virtual bool libvirtAlive(const std::string& host) = 0;

  // Fencing. Each starts an action whose outcome arrives through takeResults():
  // by libvirt = destroy every managed domain on the host and confirm none runs;
  // by agent = run the fence agent `agent` as `argv` (its command with the
  // host's placeholders filled in, controller/fence_agents.h) without a
  // shell, with a timeout; exit 0 confirms. argv may hold secrets: it is
  // never logged nor put into a result; `agent` names it there.
  virtual void fenceByLibvirt(const std::string& host) = 0;
  virtual void fenceByAgent(const std::string& host, const std::string& agent,
                            const std::vector<std::string>& argv, Millis timeout_ms) = 0;
  virtual std::vector<FenceResult> takeResults() = 0;

  // Demo and drills: kills one VM's domain on its host behind the agent's
  // back (libvirt destroy = QEMU killed), so that the agent sees a crash.
  // Starts the action; errors only when it cannot even be tried.
  virtual Status killVm(const std::string& host, const std::string& vm) {
    (void)vm;
    return failedPrecondition("no connection to host '" + host + "' to kill a VM through");
  }
};

// Never reaches anything (no second signal; every fence action fails). For
// tests and for a controller run without host connections.
class NullHostConnector final : public HostConnector {
 public:
  void setHosts(const std::vector<HostSpec>&) override {}
  bool libvirtAlive(const std::string&) override { return false; }
  void fenceByLibvirt(const std::string& host) override {
    results_.push_back({host, "libvirt", false, "no connection to the host's libvirt"});
  }
  void fenceByAgent(const std::string& host, const std::string& agent,
                    const std::vector<std::string>&, Millis) override {
    results_.push_back({host, "agent", false, "fence agents are not run here", agent});
  }
  std::vector<FenceResult> takeResults() override {
    std::vector<FenceResult> out;
    out.swap(results_);
    return out;
  }

 private:
  std::vector<FenceResult> results_;
};

}  // namespace tw
