// Which host port reaches which guest port of which VM on this host.
//
// Service ports reach guests through QEMU user-network port forwards
// (127.0.0.1:<host port> -> guest:<guest port>). The agent decides the host
// ports here and reports them (DomainReport::ports); the health prober asks
// here where to probe; the code that adds the forwards after a start or a
// migration reads them from here too.
//
// Allocation: the lowest host port of the range that no VM holds. It is not
// stable across agent restarts (the agent keeps no database): a restarted
// agent allocates anew, in the order it meets its VMs.
//
// Threads: safe to use from several threads (the agent's loop writes, the
// prober thread reads); mu_ guards the map.
#pragma once

#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "tw/status.h"

namespace tw {

class PortMap {
 public:
  // Host ports [base, base + count).
  // REQUIRES: 0 < base, 0 < count, base + count - 1 <= 65535.
  PortMap(int base, int count);
  PortMap(const PortMap&) = delete;
  PortMap& operator=(const PortMap&) = delete;

  // Gives `vm` a host port for every guest port in `guest_ports` (duplicates
  // are one), keeping the host ports it holds already and releasing those of
  // guest ports no longer listed. Returns guest port -> host port.
  // Errors: kUnavailable when the range has no free port left; the guest ports
  // that did get one keep it.
  Result<std::map<int, int>> assign(const std::string& vm, const std::vector<int>& guest_ports);

  // The host port that reaches `guest_port` of `vm`, if one is assigned.
  std::optional<int> hostPort(const std::string& vm, int guest_port) const;
  // guest port -> host port of `vm` (empty when none).
  std::map<int, int> ports(const std::string& vm) const;
  // Every VM that holds ports.
  std::vector<std::string> vms() const;
  // `vm` holds `host_port` for `guest_port` (a forward found on a running
  // domain). False, changing nothing, when the port is outside the range or
  // another VM holds it, or `vm` holds another host port for that guest port.
  bool adopt(const std::string& vm, int guest_port, int host_port);
  // `vm` left this host: its host ports become free.
  void release(const std::string& vm);

  int base() const { return base_; }
  int count() const { return count_; }

 private:
  const int base_;
  const int count_;
  mutable std::mutex mu_;
  std::map<std::string, std::map<int, int>> by_vm_;  // guarded by mu_
  std::set<int> used_;                               // host ports held; guarded by mu_
};

}  // namespace tw
