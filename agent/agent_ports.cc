// Host ports of VMs (service and check ports forwarded to the guest): taken,
// forwarded, adopted after a restart, released.
#include "agent/agent.h"
#include "agent/agent_util.h"

#include <utility>

#include "tw/log.h"

namespace tw {

using agent_detail::vmId;
using agent_detail::guestPortsOf;

void Agent::assignPorts(const Assignment& a) {
  Result<std::map<int, int>> assigned = ports_.assign(a.vm, guestPortsOf(a));
  if (!assigned.isOk()) {
    logFailureOnce("ports of " + a.vm, assigned.status().toString());
  } else if (!failures_.empty()) {  // else there is nothing to clear
    clearFailure("ports of " + a.vm);
  }
}

// Host ports of VMs that are not assigned here any more, or left by migration.
void Agent::releasePorts() {
  for (const std::string& vm : ports_.vms()) {
    auto t = tracks_.find(vm);
    if (assigned_.count(vm) == 0 || (t != tracks_.end() && t->second.migrated_away)) {
      ports_.release(vm);
    }
  }
}

bool Agent::ensureForwards(const Assignment& a, VmTrack& t) {
  if (t.forwarded || forwards_unsupported_) return false;
  const std::map<int, int> want = ports_.ports(a.vm);
  const std::string key = "forwards of " + a.vm;
  std::map<int, int> now;
  bool failed = false;
  if (!want.empty()) {
    Result<std::vector<PortForward>> have = hv_.portForwards(a.vm);
    if (!have.isOk()) {
      if (have.status().code() == Code::kUnimplemented) {
        forwards_unsupported_ = true;
        log::info("host '{}': no port forwards on this hypervisor ({}); reporting no service ports",
                  options_.host, have.status().message());
        return false;
      }
      logFailureOnce(key, fmt::format("listing the port forwards of {}: {}", vmId(a.vm, a.epoch),
                                      have.status().toString()));
      return false;
    }
    for (const PortForward& f : *have) {
      auto w = want.find(f.guest_port);
      if (f.address == options_.service_address && w != want.end() && w->second == f.host_port) {
        now[f.guest_port] = f.host_port;
      }
    }
    std::vector<std::string> added;
    for (const auto& [guest, host] : want) {
      if (now.count(guest) != 0) continue;
      PortForward f{options_.service_address, host, guest};
      Status st = hv_.addPortForward(a.vm, f);
      if (!st.isOk()) {
        logFailureOnce(key, fmt::format("forwarding {}:{} to guest port {} of {}: {}", f.address,
                                        host, guest, vmId(a.vm, a.epoch), st.toString()));
        failed = true;
        continue;
      }
      now[guest] = host;
      added.push_back(fmt::format("{}:{}->{}", f.address, host, guest));
    }
    if (!added.empty()) {
      log::info("{}: port forwards {}", vmId(a.vm, a.epoch), fmt::join(added, ", "));
    }
  }
  if (!failed) {
    clearFailure(key);
    t.forwarded = true;
  }
  const bool changed = now != t.forwards;
  t.forwards = std::move(now);
  return changed;
}

void Agent::adoptForwards(const std::string& vm) {
  Result<std::vector<PortForward>> have = hv_.portForwards(vm);
  if (!have.isOk()) {
    if (have.status().code() != Code::kUnimplemented) {
      log::warn("vm '{}': cannot read its port forwards: {}", vm, have.status().toString());
    }
    return;
  }
  for (const PortForward& f : *have) {
    if (f.address != options_.service_address) continue;
    if (!ports_.adopt(vm, f.guest_port, f.host_port)) {
      log::warn("vm '{}': its forward {}:{}->{} is outside this agent's ports or taken", vm,
                f.address, f.host_port, f.guest_port);
    }
  }
}

}  // namespace tw
