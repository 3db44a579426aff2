// Which hosts' assignment sets may have changed since the last publish
// (issue #16: "an assignment set is rebuilt only for a host whose
// assignments changed").
//
// The controller names what changed where it changes it: one VM (its host,
// epoch, release, eviction, migration, backup or restore request, the
// address it holds), one host (a new host, an address it gives back), or
// everything (a policy, a recovery: the tiers' specs and the hosts may all
// have changed). A VM stands for every host the VmsByHost index lists it
// under, before and after the change: sync() reads the hosts it was listed
// under, moves a VM touched as `moved` to where it is now, and reads them
// again. So a call site needs to name only the VM, never the hosts, and may
// name it before or after its change, as long as that change is made by
// the time of the next sync().
//
// The controller's check mode (TW_CHECK_INCREMENTAL=1, on in the unit and
// scenario tests) rebuilds every set after each publish and aborts when a
// host that was not marked has a different set: a call site that names the
// wrong VM, or none, fails every test that reaches it.
//
// Not thread-safe: the controller's loop thread, like the rest of its state.
#pragma once

#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "controller/vms_by_host.h"

namespace tw {

class AssignmentChanges {
 public:
  // Every host's set may have changed.
  void touchAll() { all_ = true; }
  // `vm`'s set may have changed; `moved`: its host or migration target
  // changed, or it came or went.
  void touchVm(const std::string& vm, bool moved);
  // `host`'s set may have changed (not through one of its VMs).
  void touchHost(const std::string& host) { hosts_.insert(host); }
  // Anything touched since the last clear().
  bool any() const { return all_ || !vms_.empty() || !hosts_.empty(); }

  // Where a VM is listed now (its host and its migration's destination).
  using HostsNow = std::function<std::vector<std::string>(const std::string& vm)>;
  // Called with every host whose set the touched VMs may have changed.
  using OnHost = std::function<void(const std::string& host)>;
  // Marks the hosts of every VM touched since the last sync (before and
  // after its move) and moves the VMs touched as moved in `index`. When
  // `index` is stale it is left to the caller's rebuild: the VMs touched are
  // forgotten, every host being marked then (all()).
  // REQUIRES: index.stale() implies all().
  void sync(VmsByHost& index, const HostsNow& now, const OnHost& on_host);

  // After sync(): every host, or only these.
  bool all() const { return all_; }
  const std::set<std::string>& hosts() const { return hosts_; }
  // A publish looked at the hosts marked.
  void clear();

 private:
  bool all_ = true;                 // nothing published yet: every host
  std::map<std::string, bool> vms_;  // touched since the last sync -> moved
  std::set<std::string> hosts_;     // marked since the last clear()
};

}  // namespace tw
