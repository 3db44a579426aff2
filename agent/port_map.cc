#include "agent/port_map.h"

#include <cassert>

#include "tw/log.h"

namespace tw {

PortMap::PortMap(int base, int count) : base_(base), count_(count) {
  assert(base > 0 && count > 0 && base + count - 1 <= 65535);
}

Result<std::map<int, int>> PortMap::assign(const std::string& vm,
                                           const std::vector<int>& guest_ports) {
  std::lock_guard<std::mutex> lock(mu_);
  // No ports wanted and none held (most VMs, on every pass): nothing to do,
  // and no entry made only to be erased below.
  if (guest_ports.empty() && by_vm_.find(vm) == by_vm_.end()) return std::map<int, int>();
  const std::set<int> wanted(guest_ports.begin(), guest_ports.end());
  std::map<int, int>& held = by_vm_[vm];
  for (auto it = held.begin(); it != held.end();) {
    if (wanted.count(it->first) == 0) {
      used_.erase(it->second);
      it = held.erase(it);
    } else {
      ++it;
    }
  }
  int next = base_;
  std::vector<int> missing;
  for (int guest : wanted) {
    if (held.count(guest) != 0) continue;
    while (next < base_ + count_ && used_.count(next) != 0) ++next;
    if (next >= base_ + count_) {
      missing.push_back(guest);
      continue;
    }
    held[guest] = next;
    used_.insert(next);
  }
  if (held.empty()) by_vm_.erase(vm);
  if (!missing.empty()) {
    return unavailable(fmt::format("no free host port in {}-{} for guest port {} of vm '{}'", base_,
                                   base_ + count_ - 1, missing.front(), vm));
  }
  auto it = by_vm_.find(vm);
  return it == by_vm_.end() ? std::map<int, int>() : it->second;
}

std::optional<int> PortMap::hostPort(const std::string& vm, int guest_port) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = by_vm_.find(vm);
  if (it == by_vm_.end()) return std::nullopt;
  auto port = it->second.find(guest_port);
  if (port == it->second.end()) return std::nullopt;
  return port->second;
}

std::map<int, int> PortMap::ports(const std::string& vm) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = by_vm_.find(vm);
  return it == by_vm_.end() ? std::map<int, int>() : it->second;
}

std::vector<std::string> PortMap::vms() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::string> out;
  out.reserve(by_vm_.size());
  for (const auto& [vm, ports] : by_vm_) out.push_back(vm);
  return out;
}

bool PortMap::adopt(const std::string& vm, int guest_port, int host_port) {
  std::lock_guard<std::mutex> lock(mu_);
  if (host_port < base_ || host_port >= base_ + count_) return false;
  auto it = by_vm_.find(vm);
  if (it != by_vm_.end()) {
    auto held = it->second.find(guest_port);
    if (held != it->second.end()) return held->second == host_port;
  }
  if (used_.count(host_port) != 0) return false;
  by_vm_[vm][guest_port] = host_port;
  used_.insert(host_port);
  return true;
}

void PortMap::release(const std::string& vm) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = by_vm_.find(vm);
  if (it == by_vm_.end()) return;
  for (const auto& [guest, host] : it->second) used_.erase(host);
  by_vm_.erase(it);
}

}  // namespace tw
