#include "controller/vms_by_host.h"

namespace tw {

void VmsByHost::rebuild(const Placement& placement) {
  by_host_.clear();
  for (const auto& [vm, host] : placement) {
    if (!host.empty()) by_host_[host].insert(vm);
  }
  stale_ = false;
}

const std::set<std::string>& VmsByHost::of(const std::string& host) const {
  static const std::set<std::string> kNone;
  auto it = by_host_.find(host);
  return it == by_host_.end() ? kNone : it->second;
}

}  // namespace tw
