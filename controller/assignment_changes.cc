#include "controller/assignment_changes.h"

namespace tw {

void AssignmentChanges::touchVm(const std::string& vm, bool moved) {
  auto [it, inserted] = vms_.try_emplace(vm, moved);
  if (!inserted && moved) it->second = true;
}

void AssignmentChanges::sync(VmsByHost& index, const HostsNow& now, const OnHost& on_host) {
  if (index.stale()) {
    vms_.clear();  // the rebuild lists them where they are; all_ marks every host
    return;
  }
  for (const auto& [vm, moved] : vms_) {
    for (const std::string& host : index.hostsOf(vm)) {
      hosts_.insert(host);
      on_host(host);
    }
    if (!moved) continue;
    index.set(vm, now(vm));
    for (const std::string& host : index.hostsOf(vm)) {
      hosts_.insert(host);
      on_host(host);
    }
  }
  vms_.clear();
}

void AssignmentChanges::clear() {
  all_ = false;
  vms_.clear();
  hosts_.clear();
}

}  // namespace tw
