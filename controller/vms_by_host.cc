#include "controller/vms_by_host.h"

namespace tw {

void VmsByHost::rebuild(const Placement& placement) {
  by_host_.clear();
  by_vm_.clear();
  for (const auto& [vm, host] : placement) {
    if (host.empty()) continue;
    by_host_[host].insert(vm);
    by_vm_[vm].insert(host);
  }
  stale_ = false;
}

void VmsByHost::set(const std::string& vm, const std::vector<std::string>& hosts) {
  auto old = by_vm_.find(vm);
  if (old != by_vm_.end()) {
    for (const std::string& host : old->second) {
      auto h = by_host_.find(host);
      if (h == by_host_.end()) continue;
      h->second.erase(vm);
      if (h->second.empty()) by_host_.erase(h);  // as rebuild() leaves it: no empty lists
    }
    by_vm_.erase(old);
  }
  for (const std::string& host : hosts) {
    if (host.empty()) continue;
    by_host_[host].insert(vm);
    by_vm_[vm].insert(host);
  }
}

const std::set<std::string>& VmsByHost::of(const std::string& host) const {
  static const std::set<std::string> kNone;
  auto it = by_host_.find(host);
  return it == by_host_.end() ? kNone : it->second;
}

const std::set<std::string>& VmsByHost::hostsOf(const std::string& vm) const {
  static const std::set<std::string> kNone;
  auto it = by_vm_.find(vm);
  return it == by_vm_.end() ? kNone : it->second;
}

}  // namespace tw
