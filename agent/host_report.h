// What this host offers the policy in force (tw::HostReport, sent in
// heartbeats): the subnets of its interfaces, and whether each storage path,
// pool and backup.to the controller asks about (AssignmentSet::checks) is
// there. The controller refuses a policy that a reporting host could not
// run: an address in no host's subnet, shared storage or a DR place missing
// on a host (controller/apply_checks.h, docs/policy.md "What is refused").
#pragma once

#include <string>
#include <vector>

#include "agent/floating_address.h"
#include "tw/clock.h"
#include "tw/hypervisor.h"
#include "tw/protocol.h"

namespace tw {

// Looks at the host. The agent's loop thread calls it (stat, getifaddrs, one
// libvirt pool lookup per pool): at most every HostReporter::kRecheckMs.
class HostInspector {
 public:
  virtual ~HostInspector() = default;
  // Canonical network prefixes of the host's interfaces ("10.213.0.0/24"),
  // loopback and IPv6 link-local left out, sorted, no duplicates.
  virtual std::vector<std::string> subnets() = 0;
  // Whether `path` is a directory this process may create files in.
  virtual bool writableDirectory(const std::string& path) = 0;
  // Whether a storage pool `pool` is defined and active (and its volumes are
  // files: Hypervisor::storagePoolDir answers).
  virtual bool poolActive(const std::string& pool) = 0;
};

// The real host: HostNetwork::addresses(), stat + access(W_OK | X_OK),
// Hypervisor::storagePoolDir.
class SystemHostInspector : public HostInspector {
 public:
  // REQUIRES: `net` and `hv` outlive this; `hv` is the loop thread's.
  SystemHostInspector(HostNetwork& net, Hypervisor& hv) : net_(net), hv_(hv) {}
  std::vector<std::string> subnets() override;
  bool writableDirectory(const std::string& path) override;
  bool poolActive(const std::string& pool) override;

 private:
  HostNetwork& net_;
  Hypervisor& hv_;
};

// In memory, for tests.
class FakeHostInspector : public HostInspector {
 public:
  std::vector<std::string> subnets() override { return subnet_list; }
  bool writableDirectory(const std::string& path) override;
  bool poolActive(const std::string& pool) override;
  std::vector<std::string> subnet_list;
  std::vector<std::string> directories;  // writable ones
  std::vector<std::string> pools;        // active ones
  int looks = 0;                         // writableDirectory + poolActive calls
};

// The network prefix of an interface address: host bits cleared,
// "10.213.0.7/24" -> "10.213.0.0/24".
std::string subnetOf(const IpPrefix& address);

class HostReporter {
 public:
  // How often the host is looked at again while the checks stay the same: a
  // share mounted (or lost) later shows within this time.
  static constexpr Millis kRecheckMs = 30000;

  // `address_interface`: the agent's --address-interface ("" = none).
  // `agent_id`: this agent process (digests differ between processes).
  // `addresses_off`: the host holds no floating addresses (HostReport).
  HostReporter(HostInspector& inspector, std::string address_interface, std::string agent_id,
               bool addresses_off = false);

  // Looks at the host when `checks` differ from the last look's or
  // kRecheckMs passed, and returns the report. Its digest changes only
  // when its content does.
  const HostReport& refresh(const HostChecks& checks, Millis now);

 private:
  HostInspector& inspector_;
  HostReport report_;
  HostChecks checked_;
  bool looked_ = false;
  Millis looked_ms_ = 0;
  const std::string agent_id_;
  int64_t serial_ = 0;
};

}  // namespace tw
