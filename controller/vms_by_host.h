// Which VMs each host's assignment set may hold, so that building one host's
// set (a heartbeat's answer, a publish) costs O(that host's VMs), not
// O(cluster) (issue #16).
//
// A VM is listed under its current host and under the destination of its
// live migration. The index is a candidate list only: the controller still
// applies its own filters (released, evicted, ...) to every VM it lists.
// It is rebuilt whole, in O(VMs), on the first look after invalidate() (a
// policy or a recovery); a VM whose host or migration target changed, or
// that came or went, is moved in it with set(), in O(log VMs)
// (controller/assignment_changes.h says which).
//
// Not thread-safe: owned by the controller's loop thread, like the rest of
// its state.
#pragma once

#include <map>
#include <set>
#include <string>
#include <vector>

namespace tw {

class VmsByHost {
 public:
  // Where each VM may appear: (vm, host) pairs; a VM may be named under
  // several hosts. An empty host is ignored.
  using Placement = std::vector<std::pair<std::string, std::string>>;

  void invalidate() { stale_ = true; }
  bool stale() const { return stale_; }

  // Replaces the index with `placement`.
  void rebuild(const Placement& placement);

  // Lists `vm` under `hosts` only (none: the VM is gone). Empty hosts are
  // ignored. REQUIRES: !stale().
  void set(const std::string& vm, const std::vector<std::string>& hosts);

  // The VMs listed under `host`, by name. Empty for an unknown host.
  // REQUIRES: !stale().
  const std::set<std::string>& of(const std::string& host) const;
  // The hosts `vm` is listed under, by name. Empty for an unknown VM.
  // REQUIRES: !stale().
  const std::set<std::string>& hostsOf(const std::string& vm) const;

  // Same listing (a check that the index kept by set() equals a rebuild).
  bool operator==(const VmsByHost& other) const {
    return stale_ == other.stale_ && by_host_ == other.by_host_ && by_vm_ == other.by_vm_;
  }

 private:
  bool stale_ = true;
  std::map<std::string, std::set<std::string>> by_host_;
  std::map<std::string, std::set<std::string>> by_vm_;  // the same pairs, by VM
};

}  // namespace tw
