#include "agent/host_report.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <set>

#include "tw/log.h"

namespace tw {

std::string subnetOf(const IpPrefix& address) {
  IpPrefix net = address;
  const int bytes = net.v6 ? 16 : 4;
  for (int i = 0; i < bytes; ++i) {
    const int keep = std::clamp(net.prefix - 8 * i, 0, 8);
    net.bytes[i] &= static_cast<uint8_t>(keep == 0 ? 0 : 0xff << (8 - keep));
  }
  return net.str();
}

std::vector<std::string> SystemHostInspector::subnets() {
  auto addrs = net_.addresses();
  if (!addrs.isOk()) {
    log::warn("cannot list the host's addresses: {}", addrs.status().toString());
    return {};
  }
  std::set<std::string> out;
  for (const InterfaceAddress& a : *addrs) {
    const IpPrefix& p = a.address;
    if (!p.v6 && p.bytes[0] == 127) continue;                               // loopback
    if (p.v6 && p.bytes[0] == 0xfe && (p.bytes[1] & 0xc0) == 0x80) continue;  // link-local
    if (p.v6 && p.prefix == 128 && p.bytes[15] == 1 &&
        std::all_of(p.bytes.begin(), p.bytes.begin() + 15, [](uint8_t b) { return b == 0; }))
      continue;  // ::1
    out.insert(subnetOf(p));
  }
  return {out.begin(), out.end()};
}

bool SystemHostInspector::writableDirectory(const std::string& path) {
  struct stat st{};
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode) &&
         ::access(path.c_str(), W_OK | X_OK) == 0;
}

bool SystemHostInspector::poolActive(const std::string& pool) {
  return hv_.storagePoolDir(pool).isOk();
}

bool FakeHostInspector::writableDirectory(const std::string& path) {
  ++looks;
  return std::find(directories.begin(), directories.end(), path) != directories.end();
}

bool FakeHostInspector::poolActive(const std::string& pool) {
  ++looks;
  return std::find(pools.begin(), pools.end(), pool) != pools.end();
}

HostReporter::HostReporter(HostInspector& inspector, std::string address_interface,
                           std::string agent_id, bool addresses_off)
    : inspector_(inspector), agent_id_(std::move(agent_id)) {
  report_.address_interface = std::move(address_interface);
  report_.addresses_off = addresses_off;
}

const HostReport& HostReporter::refresh(const HostChecks& checks, Millis now) {
  if (looked_ && checks == checked_ && now - looked_ms_ < kRecheckMs) return report_;
  looked_ = true;
  looked_ms_ = now;
  checked_ = checks;
  HostReport next;
  next.address_interface = report_.address_interface;
  next.addresses_off = report_.addresses_off;
  if (!next.addresses_off) next.subnets = inspector_.subnets();
  for (const auto& p : checks.paths) next.paths[p] = inspector_.writableDirectory(p);
  for (const auto& p : checks.pools) next.pools[p] = inspector_.poolActive(p);
  next.digest = report_.digest;
  if (report_.digest.empty() || !(next == report_)) {
    next.digest = agent_id_ + "-" + std::to_string(++serial_);
    for (const auto& [path, ok] : next.paths)
      if (!ok) log::warn("'{}' is no writable directory on this host (the policy names it)", path);
    for (const auto& [pool, ok] : next.pools)
      if (!ok) log::warn("storage pool '{}' is not active on this host (the policy names it)", pool);
    report_ = std::move(next);
  }
  return report_;
}

}  // namespace tw
