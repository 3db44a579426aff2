// Floating addresses on this host (policy `address:`, issue #15 part 3).
//
// The controller names, per tier, the one host that holds the tier's address
// and the VM its ports go to (Assignment::address). This unit makes the host
// match: it adds the address to an interface, announces it (gratuitous ARP
// for IPv4; for IPv6 the kernel's unsolicited neighbour advertisement), and
// forwards each of the tier's TCP ports on it to the same port of the VM
// through the VM's QEMU user network (hostfwd, as the service ports on
// 127.0.0.1; tw/hypervisor.h PortForward). It removes every address of the
// policy that it should not hold: when the VM stops or moves, when the
// controller gives it to another host, at agent start, and at a self-fence.
//
// The host side goes through HostNetwork: CommandHostNetwork runs `ip` and
// `arping` (argv, no shell); tests and the simulator use FakeHostNetwork.
//
// Threads: the agent's loop only.
#pragma once

#include <sys/types.h>

#include <map>
#include <set>
#include <string>
#include <vector>

#include "tw/hypervisor.h"
#include "tw/ip_prefix.h"
#include "tw/model.h"
#include "tw/status.h"

namespace tw {

// One address on one of the host's interfaces.
struct InterfaceAddress {
  std::string interface;
  IpPrefix address;  // address and its subnet's prefix length
};

class HostNetwork {
 public:
  virtual ~HostNetwork() = default;
  // Every address on the host's interfaces.
  virtual Result<std::vector<InterfaceAddress>> addresses() = 0;
  // Adds / removes `a` on `interface`. Errors: kInternal (the command failed).
  virtual Status add(const IpPrefix& a, const std::string& interface) = 0;
  virtual Status remove(const IpPrefix& a, const std::string& interface) = 0;
  // Tells the link's neighbours that `a` is here now.
  virtual Status announce(const IpPrefix& a, const std::string& interface) = 0;
};

// `ip -4|-6 addr add|del A/N dev IF` (IPv6 with nodad, after setting the
// interface's ndisc_notify so that the kernel sends the unsolicited neighbour
// advertisement), `arping -U -c 3 -I IF A` for IPv4; getifaddrs to list.
class CommandHostNetwork : public HostNetwork {
 public:
  CommandHostNetwork() = default;
  CommandHostNetwork(const CommandHostNetwork&) = delete;
  CommandHostNetwork& operator=(const CommandHostNetwork&) = delete;
  ~CommandHostNetwork() override;  // waits for the arpings still running
  Result<std::vector<InterfaceAddress>> addresses() override;
  Status add(const IpPrefix& a, const std::string& interface) override;
  Status remove(const IpPrefix& a, const std::string& interface) override;
  Status announce(const IpPrefix& a, const std::string& interface) override;

 private:
  void reap();
  std::vector<pid_t> children_;  // arpings still running
};

// In memory: a list of interfaces and their addresses, and what was done.
class FakeHostNetwork : public HostNetwork {
 public:
  // REQUIRES: `subnet` parses (tw/ip_prefix.h).
  void addInterface(const std::string& interface, const std::string& subnet);
  Result<std::vector<InterfaceAddress>> addresses() override;
  Status add(const IpPrefix& a, const std::string& interface) override;
  Status remove(const IpPrefix& a, const std::string& interface) override;
  Status announce(const IpPrefix& a, const std::string& interface) override;
  bool has(const std::string& cidr) const;
  std::vector<std::string> log;  // "add A/N IF", "del A/N IF", "announce A IF"
  bool fail_add = false;

 private:
  std::vector<InterfaceAddress> addrs_;
};

// An address this host is to hold now: the VM runs here.
struct WantedAddress {
  FloatingAddressSpec spec;
  std::string vm;
  std::vector<int> ports;  // the tier's TCP guest ports
  int64_t run = 0;         // changes when the VM's QEMU is a new one (forwards lost)
};

// Something to report as an agent event.
struct AddressChange {
  std::string kind;   // "address.added", "address.removed", "address.failed"
  std::string level;  // "info", "warn"
  std::string vm;
  std::string message;
};

class FloatingAddresses {
 public:
  // `default_interface`: for an address whose policy names no interface and
  // that no interface's subnet holds ("" = such an address fails).
  FloatingAddresses(HostNetwork& net, Hypervisor& hv, std::string default_interface = "");

  // Makes the host hold exactly `wanted` among `known` (every floating
  // address of the policy) and the addresses this process added: adds,
  // announces and forwards the wanted ones, removes the others. Failed steps
  // are tried again at the next call.
  std::vector<AddressChange> converge(const std::vector<WantedAddress>& wanted,
                                      const std::vector<FloatingAddressSpec>& known);
  // Self-fence: removes every address of `known` and every one it added.
  std::vector<AddressChange> dropAll(const std::vector<FloatingAddressSpec>& known);
  // The addresses of `known` (and added ones) on the host as last seen
  // ("A/N"), for the heartbeat (Heartbeat::addresses_held).
  std::vector<std::string> held() const { return {held_.begin(), held_.end()}; }

 private:
  std::string interfaceFor(const FloatingAddressSpec& spec, const IpPrefix& a,
                           const std::vector<InterfaceAddress>& on_host) const;
  bool forward(const WantedAddress& w, const IpPrefix& a, std::vector<AddressChange>& out);

  HostNetwork& net_;
  Hypervisor& hv_;
  const std::string default_interface_;
  std::map<std::string, std::string> added_;      // "A/N" -> interface, added by this process
  std::map<std::string, std::string> forwarded_;  // "A/N" -> "vm#run" whose forwards are in place
  std::set<std::string> held_;                    // "A/N" on the host, as last seen
  std::set<std::string> failed_said_;             // "A/N" whose failure was reported
};

}  // namespace tw
