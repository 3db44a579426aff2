// The agent's side of floating addresses (agent/floating_address.h): which
// addresses this host is to hold now, from its assignment set and its VMs.
#include "agent/agent.h"
#include "agent/floating_address.h"

namespace tw {

void Agent::convergeAddresses(LeaseState state) {
  if (addresses_ == nullptr) return;
  std::vector<AddressChange> changes;
  if (state == LeaseState::kExpired) {
    // Self-fenced: the address goes with the VMs (docs/fencing.md).
    changes = addresses_->dropAll(address_known_);
  } else if (has_set_ && (state == LeaseState::kValid || state == LeaseState::kHeld)) {
    address_known_ = set_.addresses;
    std::vector<WantedAddress> wanted;
    for (const auto& [vm, a] : assigned_) {
      if (!a.address.set() || a.incoming) continue;
      auto t = tracks_.find(vm);
      auto d = view_.find(vm);
      if (t == tracks_.end() || d == view_.end()) continue;
      if (t->second.epoch != a.epoch || t->second.migrated_away || !t->second.expect_running) continue;
      if (d->second.state != DomainState::kRunning || d->second.meta.epoch != a.epoch) continue;
      WantedAddress w;
      w.spec = a.address;
      w.vm = vm;
      for (const ServicePort& p : a.ports) {
        if (p.port > 0 && p.protocol == "tcp") w.ports.push_back(p.port);
      }
      w.run = t->second.running_since_ms;
      wanted.push_back(std::move(w));
    }
    changes = addresses_->converge(wanted, address_known_);
  } else {
    return;  // no set yet in this process: it does not know what it holds
  }
  for (const AddressChange& c : changes) {
    auto a = assigned_.find(c.vm);
    emit(c.level, c.kind, c.vm, a != assigned_.end() ? a->second.epoch : 0, c.message);
  }
}

}  // namespace tw
