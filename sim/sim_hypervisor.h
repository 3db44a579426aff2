// The Hypervisor an agent sees on a simulated host: the host's FakeHypervisor,
// with two additions:
//  - start failures injected per VM for the whole cluster (`vm V fail-start
//    N`: the next N starts of V fail, on whichever host they happen).
//    FakeHypervisor::failStarts counts per host, hence this wrapper.
//  - a count of the libvirt calls made through it (`host H libvirt slow MS`:
//    the simulator blocks the agent's loop for calls x MS after each pass).
//    startAll counts as one call per 4 VMs: LibvirtHypervisor starts them in
//    parallel on up to 4 connections.
// Everything else is passed through unchanged.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "tw/fake_hypervisor.h"

namespace tw::sim {

class SimHypervisor final : public Hypervisor {
 public:
  // `fail_starts` (vm -> starts left to fail) is shared by every host.
  // REQUIRES: both outlive this object.
  SimHypervisor(FakeHypervisor& hv, std::map<std::string, int>& fail_starts)
      : hv_(hv), fail_starts_(fail_starts) {}

  // Calls made since the last takeCalls().
  int64_t takeCalls() {
    const int64_t n = calls_;
    calls_ = 0;
    return n;
  }

  Status ping() override {
    ++calls_;
    return hv_.ping();
  }
  Result<Capacity> capacity() override {
    ++calls_;
    return hv_.capacity();
  }
  Status define(const DomainSpec& spec) override {
    ++calls_;
    return hv_.define(spec);
  }
  Status start(const std::string& vm) override;
  std::vector<Status> startAll(const std::vector<std::string>& vms) override;
  Status destroy(const std::string& vm) override {
    ++calls_;
    return hv_.destroy(vm);
  }
  Status undefine(const std::string& vm) override {
    ++calls_;
    return hv_.undefine(vm);
  }
  Result<std::vector<DomainStatus>> listManaged() override {
    ++calls_;
    return hv_.listManaged();
  }
  Result<DomainStatus> domainState(const std::string& vm) override {
    ++calls_;
    return hv_.domainState(vm);
  }
  Status subscribe(DomainEventHandler handler) override {
    return hv_.subscribe(std::move(handler));
  }
  Status migrate(const std::string& vm, const std::string& dest_uri,
                 const MigrateOptions& options) override {
    ++calls_;
    return hv_.migrate(vm, dest_uri, options);
  }
  Status addPortForward(const std::string& vm, const PortForward& forward) override {
    ++calls_;
    return hv_.addPortForward(vm, forward);
  }
  Result<std::vector<PortForward>> portForwards(const std::string& vm) override {
    ++calls_;
    return hv_.portForwards(vm);
  }

 private:
  Status startOne(const std::string& vm);

  FakeHypervisor& hv_;
  std::map<std::string, int>& fail_starts_;
  int64_t calls_ = 0;
};

}  // namespace tw::sim
