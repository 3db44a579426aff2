// Floating addresses (policy `address:`, issue #15 part 3): which host holds
// each tier's address, and when it may be given to another.
//
// Rules (docs/policy.md, "Floating address"; DESIGN.md invariant 1):
// - The holder is the host of one running replica of the tier: the first
//   running one (by ordinal) when nobody holds it. It is sticky: it stays
//   while that VM stays assigned to that host (restarts in place included),
//   so that a replica coming back does not pull the address around.
// - Never two holders. The address is given to a new host only after the
//   old holder (a) was fenced, or (b) applied a set of this controller
//   without it and no longer reports it in its heartbeat. A drain or a
//   migration therefore moves it after the VM moved.
// - After a controller restart the holders are learnt from heartbeats:
//   nobody is given an address until every host that is not fenced has
//   reported under a set of this controller.
#include <algorithm>

#include "controller/controller.h"
#include "tw/log.h"

namespace tw {

void Controller::noteAddressesHeld(HostRuntime& h, const Heartbeat& hb) {
  const bool ours = hb.assignments_controller == controller_id_ && hb.assignments_version > 0;
  std::set<std::string> held(hb.addresses_held.begin(), hb.addresses_held.end());
  if (ours != h.addresses_reported || held != h.addresses_held ||
      (ours && hb.assignments_version != h.addresses_applied_version)) {
    h.addresses_reported = ours;
    h.addresses_held = std::move(held);
    h.addresses_applied_version = ours ? hb.assignments_version : 0;
  }
}

const VmRecord* Controller::addressCandidate(const std::string& tier) const {
  const VmRecord* best = nullptr;
  for (const auto& [name, vm] : vms_) {
    if (vm.tier != tier || vm.host.empty() || vm.state != VmState::kRunning) continue;
    auto h = hosts_.find(vm.host);
    if (h == hosts_.end() || h->second.rec.state != HostState::kOnline) continue;
    auto rt = vm_runtime_.find(name);
    if (rt != vm_runtime_.end() && (!rt->second.migrate_to.empty() || rt->second.error)) continue;
    if (best == nullptr || vm.ordinal < best->ordinal) best = &vm;
  }
  return best;
}

void Controller::driveAddresses() {
  // Tiers that lost their address (or changed it) give the old one back first.
  for (auto& [tier, hold] : address_holds_) {
    const TierSpec* t = policy_.findTier(tier);
    const bool current = t != nullptr && t->address.cidr == hold.cidr;
    if (!current && !hold.host.empty()) startAddressRelease(tier, hold, "the policy changed it");
  }
  for (const TierSpec& t : policy_.tiers) {
    if (!t.address.set()) continue;
    AddressHold& hold = address_holds_[t.name];
    if (hold.cidr.empty()) hold.cidr = t.address.cidr;
    if (hold.cidr != t.address.cidr) {
      if (!hold.releasing.empty() || !hold.host.empty()) continue;  // the old one is going
      hold.cidr = t.address.cidr;
    }
    finishAddressRelease(t.name, hold);
    if (!hold.releasing.empty()) continue;
    // The holder keeps it while its VM stays assigned to its host.
    if (!hold.host.empty()) {
      auto vm = vms_.find(hold.vm);
      auto h = hosts_.find(hold.host);
      const bool keeps = vm != vms_.end() && vm->second.host == hold.host &&
                         h != hosts_.end() && h->second.rec.state != HostState::kFenced;
      if (keeps) continue;
      startAddressRelease(
          t.name, hold,
          vm == vms_.end() ? "vm '" + hold.vm + "' is gone"
          : h != hosts_.end() && h->second.rec.state == HostState::kFenced
              ? "host '" + hold.host + "' was fenced"
              : "vm '" + hold.vm + "' moved to host '" + vm->second.host + "'");
      finishAddressRelease(t.name, hold);  // a fenced holder releases at once
      if (!hold.releasing.empty()) continue;
    }
    claimAddress(t, hold);
  }
}

void Controller::claimAddress(const TierSpec& t, AddressHold& hold) {
  const VmRecord* vm = addressCandidate(t.name);
  if (vm == nullptr) return;
  // Somebody else may have it still (a host that reports it, e.g. after a
  // controller restart): it must give it back, or be fenced, first.
  for (const auto& [name, h] : hosts_) {
    if (!policy_.findHost(name) || h.rec.state == HostState::kFenced) continue;
    if (!h.addresses_reported) {
      if (!address_wait_said_.count(t.name + "/" + name)) {
        address_wait_said_.insert(t.name + "/" + name);
        log::info("address {} of tier '{}': waiting for host '{}' to report under this controller "
                  "(or to be fenced) before anyone holds it",
                  hold.cidr, t.name, name);
      }
      return;
    }
    if (name != vm->host && h.addresses_held.count(hold.cidr)) {
      hold.host = name;  // it holds it: take it back the regular way
      startAddressRelease(t.name, hold, "host '" + vm->host + "' is to hold it");
      return;
    }
  }
  // Every declared host reported: nobody waits any more.
  address_wait_said_.clear();
  // The address leaves the set of the host that held it (if any) and joins
  // its new host's set (addressHeldFor).
  if (!hold.host.empty()) hostAssignmentsTouched(hold.host);
  hold.host = vm->host;
  hold.vm = vm->name;
  hostAssignmentsTouched(hold.host);
  emit("info", "address.claimed", "tier/" + t.name,
       "address " + hold.cidr + " of tier '" + t.name + "' is held by host '" + hold.host +
           "' for vm '" + hold.vm + "'");
}

void Controller::startAddressRelease(const std::string& tier, AddressHold& hold,
                                     const std::string& why) {
  hold.releasing = hold.host;
  hold.release_why = why;
  hold.release_version = 0;  // set by publishAssignments()
  hold.host.clear();
  hold.vm.clear();
  hostAssignmentsTouched(hold.releasing);  // its set goes out without the address
  log::info("address {} of tier '{}': host '{}' gives it back ({})", hold.cidr, tier,
            hold.releasing, why);
}

void Controller::finishAddressRelease(const std::string& tier, AddressHold& hold) {
  if (hold.releasing.empty()) return;
  auto h = hosts_.find(hold.releasing);
  std::string how;
  if (h == hosts_.end() || !policy_.findHost(hold.releasing)) {
    how = "host '" + hold.releasing + "' left the policy";
  } else if (h->second.rec.state == HostState::kFenced) {
    how = "host '" + hold.releasing + "' was fenced";
  } else if (hold.release_version != 0 && h->second.addresses_reported &&
             h->second.addresses_applied_version >= hold.release_version &&
             h->second.addresses_held.count(hold.cidr) == 0) {
    how = "host '" + hold.releasing + "' removed it";
  } else {
    return;
  }
  emit("info", "address.released", "tier/" + tier,
       "address " + hold.cidr + " of tier '" + tier + "' released: " + how + " (" +
           hold.release_why + ")");
  hold.releasing.clear();
  hold.release_why.clear();
  hold.release_version = 0;
}

void Controller::noteAddressReleaseVersions() {
  for (auto& [tier, hold] : address_holds_) {
    if (hold.releasing.empty() || hold.release_version != 0) continue;
    auto h = hosts_.find(hold.releasing);
    if (h != hosts_.end()) hold.release_version = h->second.assignments_version;
  }
}

const FloatingAddressSpec* Controller::addressHeldFor(const VmRecord& vm,
                                                      const std::string& host) const {
  auto hold = address_holds_.find(vm.tier);
  if (hold == address_holds_.end() || hold->second.host != host || hold->second.vm != vm.name)
    return nullptr;
  const TierSpec* t = policy_.findTier(vm.tier);
  if (t == nullptr || t->address.cidr != hold->second.cidr) return nullptr;
  return &t->address;
}

std::string Controller::addressHolder(const std::string& tier) const {
  auto hold = address_holds_.find(tier);
  return hold == address_holds_.end() ? "" : hold->second.host;
}

}  // namespace tw
