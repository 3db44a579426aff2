// The agent's side of floating addresses (agent/floating_address.h): which
// addresses this host is to hold now, from its assignment set and its VMs.
#include "agent/agent.h"
#include "agent/floating_address.h"

#include <algorithm>

namespace tw {

void Agent::convergeAddresses(LeaseState state) {
  if (addresses_ == nullptr) return;
  std::vector<AddressChange> changes;
  if (state == LeaseState::kExpired) {
    // Self-fenced: the address goes with the VMs (docs/fencing.md).
    addresses_wanted_.clear();
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
    // A VM live-migrating away keeps its address here until the migration
    // is over: the controller may count the migration done (the destination
    // reported the domain, paused) while this copy still serves. The
    // controller gives the address to the destination only once this host
    // reports it gone, so this only shortens the gap (never two holders).
    for (const WantedAddress& before : addresses_wanted_) {
      const bool kept = std::any_of(wanted.begin(), wanted.end(), [&](const WantedAddress& w) {
        return w.spec.cidr == before.spec.cidr;
      });
      auto d = view_.find(before.vm);
      if (!kept && migrating(before.vm) && d != view_.end() &&
          d->second.state == DomainState::kRunning) {
        wanted.push_back(before);
      }
    }
    addresses_wanted_ = wanted;
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
