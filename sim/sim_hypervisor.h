// The Hypervisor an agent sees on a simulated host: the host's FakeHypervisor,
// with one addition — start failures injected per VM for the whole cluster
// (`vm V fail-start N`: the next N starts of V fail, on whichever host they
// happen). FakeHypervisor::failStarts counts per host, hence this wrapper.
// Everything else is passed through unchanged.
#pragma once

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

  Status ping() override { return hv_.ping(); }
  Result<Capacity> capacity() override { return hv_.capacity(); }
  Status define(const DomainSpec& spec) override { return hv_.define(spec); }
  Status start(const std::string& vm) override;
  Status destroy(const std::string& vm) override { return hv_.destroy(vm); }
  Status undefine(const std::string& vm) override { return hv_.undefine(vm); }
  Result<std::vector<DomainStatus>> listManaged() override { return hv_.listManaged(); }
  Result<DomainStatus> domainState(const std::string& vm) override { return hv_.domainState(vm); }
  Status subscribe(DomainEventHandler handler) override {
    return hv_.subscribe(std::move(handler));
  }
  Status migrate(const std::string& vm, const std::string& dest_uri,
                 const MigrateOptions& options) override {
    return hv_.migrate(vm, dest_uri, options);
  }
  Status addPortForward(const std::string& vm, const PortForward& forward) override {
    return hv_.addPortForward(vm, forward);
  }
  Result<std::vector<PortForward>> portForwards(const std::string& vm) override {
    return hv_.portForwards(vm);
  }

 private:
  FakeHypervisor& hv_;
  std::map<std::string, int>& fail_starts_;
};

}  // namespace tw::sim
