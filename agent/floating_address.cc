#include "agent/floating_address.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <fstream>

#include "agent/domain_builder.h"  // runProgram
#include "tw/log.h"

extern "C" char** environ;

namespace tw {

namespace {

int maskBits(const uint8_t* bytes, size_t n) {
  int bits = 0;
  for (size_t i = 0; i < n; ++i) bits += std::popcount(static_cast<unsigned>(bytes[i]));
  return bits;
}

std::string family(const IpPrefix& a) { return a.v6 ? "-6" : "-4"; }

}  // namespace

// ------------------------------------------------------------ the host ---

Result<std::vector<InterfaceAddress>> CommandHostNetwork::addresses() {
  struct ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) return internalError(std::string("getifaddrs: ") + std::strerror(errno));
  std::vector<InterfaceAddress> out;
  for (struct ifaddrs* i = list; i != nullptr; i = i->ifa_next) {
    if (i->ifa_addr == nullptr || i->ifa_netmask == nullptr) continue;
    InterfaceAddress a;
    a.interface = i->ifa_name;
    if (i->ifa_addr->sa_family == AF_INET) {
      const auto* in = reinterpret_cast<const sockaddr_in*>(i->ifa_addr);
      const auto* mask = reinterpret_cast<const sockaddr_in*>(i->ifa_netmask);
      std::memcpy(a.address.bytes.data(), &in->sin_addr, 4);
      a.address.prefix = maskBits(reinterpret_cast<const uint8_t*>(&mask->sin_addr), 4);
    } else if (i->ifa_addr->sa_family == AF_INET6) {
      const auto* in = reinterpret_cast<const sockaddr_in6*>(i->ifa_addr);
      const auto* mask = reinterpret_cast<const sockaddr_in6*>(i->ifa_netmask);
      a.address.v6 = true;
      std::memcpy(a.address.bytes.data(), &in->sin6_addr, 16);
      a.address.prefix = maskBits(reinterpret_cast<const uint8_t*>(&mask->sin6_addr), 16);
    } else {
      continue;
    }
    out.push_back(std::move(a));
  }
  ::freeifaddrs(list);
  return out;
}

Status CommandHostNetwork::add(const IpPrefix& a, const std::string& interface) {
  if (a.v6) {
    // The kernel announces the address itself (unsolicited neighbour
    // advertisement) when ndisc_notify is on; nodad: usable at once.
    std::ofstream("/proc/sys/net/ipv6/conf/" + interface + "/ndisc_notify") << "1\n";
    return runProgram({"ip", "-6", "addr", "add", a.str(), "dev", interface, "nodad"});
  }
  return runProgram({"ip", "-4", "addr", "add", a.str(), "dev", interface});
}

Status CommandHostNetwork::remove(const IpPrefix& a, const std::string& interface) {
  return runProgram({"ip", family(a), "addr", "del", a.str(), "dev", interface});
}

Status CommandHostNetwork::announce(const IpPrefix& a, const std::string& interface) {
  if (a.v6) return Status::ok();  // the kernel did (add)
  reap();
  // Three unsolicited ARPs, one second apart: arping waits between them, so
  // it runs on its own and is reaped later; the loop goes on at once.
  const std::vector<std::string> argv = {"arping", "-q", "-U", "-c", "3", "-I", interface, a.ip()};
  std::vector<char*> args;
  for (const std::string& s : argv) args.push_back(const_cast<char*>(s.c_str()));
  args.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  pid_t pid = 0;
  const int rc = posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) return internalError("running arping: " + std::string(std::strerror(rc)));
  children_.push_back(pid);
  return Status::ok();
}

void CommandHostNetwork::reap() {
  std::erase_if(children_, [](pid_t pid) {
    int status = 0;
    return ::waitpid(pid, &status, WNOHANG) != 0;
  });
}

CommandHostNetwork::~CommandHostNetwork() {
  for (pid_t pid : children_) {
    int status = 0;
    ::waitpid(pid, &status, 0);
  }
}

void FakeHostNetwork::addInterface(const std::string& interface, const std::string& subnet) {
  addrs_.push_back(InterfaceAddress{interface, *parseIpPrefix(subnet)});
}

Result<std::vector<InterfaceAddress>> FakeHostNetwork::addresses() { return addrs_; }

Status FakeHostNetwork::add(const IpPrefix& a, const std::string& interface) {
  if (fail_add) return internalError("ip failed (exit 2): RTNETLINK answers: Operation not permitted");
  if (has(a.str())) return internalError("ip failed (exit 2): RTNETLINK answers: File exists");
  addrs_.push_back(InterfaceAddress{interface, a});
  log.push_back("add " + a.str() + " " + interface);
  return Status::ok();
}

Status FakeHostNetwork::remove(const IpPrefix& a, const std::string& interface) {
  auto it = std::find_if(addrs_.begin(), addrs_.end(), [&](const InterfaceAddress& x) {
    return x.interface == interface && x.address == a;
  });
  if (it == addrs_.end()) return internalError("ip failed (exit 2): RTNETLINK answers: Cannot assign requested address");
  addrs_.erase(it);
  log.push_back("del " + a.str() + " " + interface);
  return Status::ok();
}

Status FakeHostNetwork::announce(const IpPrefix& a, const std::string& interface) {
  log.push_back("announce " + a.ip() + " " + interface);
  return Status::ok();
}

bool FakeHostNetwork::has(const std::string& cidr) const {
  return std::any_of(addrs_.begin(), addrs_.end(),
                     [&](const InterfaceAddress& x) { return x.address.str() == cidr; });
}

// ------------------------------------------------------- the addresses ---

FloatingAddresses::FloatingAddresses(HostNetwork& net, Hypervisor& hv, std::string default_interface)
    : net_(net), hv_(hv), default_interface_(std::move(default_interface)) {}

std::string FloatingAddresses::interfaceFor(const FloatingAddressSpec& spec, const IpPrefix& a,
                                            const std::vector<InterfaceAddress>& on_host) const {
  if (!spec.interface.empty()) return spec.interface;
  for (const InterfaceAddress& i : on_host) {
    if (i.address == a) continue;  // the floating address itself
    IpPrefix subnet = i.address;
    subnet.prefix = a.prefix;
    if (i.address.prefix == a.prefix && subnet.contains(a)) return i.interface;
  }
  return default_interface_;
}

bool FloatingAddresses::forward(const WantedAddress& w, const IpPrefix& a,
                                std::vector<AddressChange>& out) {
  const std::string key = w.vm + "#" + std::to_string(w.run);
  if (forwarded_[a.str()] == key) return true;
  auto fail = [&](const std::string& what) {
    if (failed_said_.insert(a.str() + " forward").second) {
      out.push_back({"address.failed", "warn", w.vm,
                     "forwarding the ports of address " + a.str() + " to vm '" + w.vm + "': " + what});
    }
    return false;
  };
  if (a.v6) return fail("IPv6 forwards are not supported by QEMU's user network (hostfwd) here");
  Result<std::vector<PortForward>> have = hv_.portForwards(w.vm);
  if (!have.isOk()) return fail(have.status().toString());
  for (int port : w.ports) {
    const PortForward f{a.ip(), port, port};
    if (std::find(have->begin(), have->end(), f) != have->end()) continue;
    Status st = hv_.addPortForward(w.vm, f);
    if (!st.isOk()) return fail(st.toString());
  }
  forwarded_[a.str()] = key;
  failed_said_.erase(a.str() + " forward");
  log::info("address {}: ports {} forwarded to vm '{}'", a.str(), fmt::join(w.ports, ","), w.vm);
  return true;
}

std::vector<AddressChange> FloatingAddresses::converge(const std::vector<WantedAddress>& wanted,
                                                       const std::vector<FloatingAddressSpec>& known) {
  std::vector<AddressChange> out;
  Result<std::vector<InterfaceAddress>> on_host = net_.addresses();
  if (!on_host.isOk()) {
    log::warn("listing the host's addresses: {}", on_host.status().toString());
    return out;
  }
  // What is on the host now, of the addresses this unit looks after.
  std::map<std::string, std::string> present;  // "A/N" -> interface
  std::set<std::string> ours;
  for (const auto& k : known) ours.insert(k.cidr);
  for (const auto& [cidr, iface] : added_) ours.insert(cidr);
  for (const auto& w : wanted) ours.insert(w.spec.cidr);
  for (const InterfaceAddress& i : *on_host) {
    // Same address with any prefix length counts: the policy may have changed it.
    for (const std::string& cidr : ours) {
      if (parseIpPrefix(cidr)->ip() == i.address.ip()) present[i.address.str()] = i.interface;
    }
  }
  std::set<std::string> wanted_cidrs;
  for (const auto& w : wanted) wanted_cidrs.insert(w.spec.cidr);
  // Remove first: an address may have changed its prefix.
  std::vector<std::string> removed;
  for (const auto& [cidr, iface] : present) {
    if (wanted_cidrs.count(cidr) != 0) continue;
    const IpPrefix a = *parseIpPrefix(cidr);
    Status st = net_.remove(a, iface);
    if (!st.isOk()) {
      if (failed_said_.insert(cidr + " remove").second)
        out.push_back({"address.failed", "warn", "",
                       "removing address " + cidr + " from " + iface + ": " + st.toString()});
      continue;
    }
    failed_said_.erase(cidr + " remove");
    removed.push_back(cidr);
    added_.erase(cidr);
    forwarded_.erase(cidr);
    out.push_back({"address.removed", "info", "", "removed address " + cidr + " from " + iface});
  }
  for (const std::string& cidr : removed) present.erase(cidr);
  // Added by this process, gone from the host since (removed by hand): forgotten.
  std::erase_if(added_, [&](const auto& e) {
    const bool gone = wanted_cidrs.count(e.first) == 0 && present.count(e.first) == 0;
    if (gone) forwarded_.erase(e.first);
    return gone;
  });
  for (const WantedAddress& w : wanted) {
    const IpPrefix a = *parseIpPrefix(w.spec.cidr);
    if (present.count(w.spec.cidr) == 0) {
      const std::string iface = interfaceFor(w.spec, a, *on_host);
      Status st = iface.empty() ? failedPrecondition("no interface of this host is in the subnet of " +
                                                     w.spec.cidr + " and none is named")
                                : net_.add(a, iface);
      if (!st.isOk()) {
        if (failed_said_.insert(w.spec.cidr + " add").second)
          out.push_back({"address.failed", "warn", w.vm,
                         "adding address " + w.spec.cidr + (iface.empty() ? "" : " to " + iface) +
                             " for vm '" + w.vm + "': " + st.toString()});
        continue;
      }
      failed_said_.erase(w.spec.cidr + " add");
      added_[w.spec.cidr] = iface;
      present[w.spec.cidr] = iface;
      forwarded_.erase(w.spec.cidr);
      Status an = net_.announce(a, iface);
      if (!an.isOk()) log::warn("announcing address {} on {}: {}", w.spec.cidr, iface, an.toString());
      out.push_back({"address.added", "info", w.vm,
                     "added address " + w.spec.cidr + " to " + iface + " for vm '" + w.vm + "'"});
    }
    forward(w, a, out);
  }
  held_.clear();
  for (const auto& [cidr, iface] : present) held_.insert(cidr);
  return out;
}

std::vector<AddressChange> FloatingAddresses::dropAll(const std::vector<FloatingAddressSpec>& known) {
  return converge({}, known);
}

}  // namespace tw
