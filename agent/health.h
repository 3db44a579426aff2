// The seam for health checks of running VMs (TCP or HTTP, HealthCheckSpec).
// A tier without a check is healthy while its domain runs (the Agent decides
// that itself); a tier with a tcp/http check is judged by a HealthProber:
//  - NoopHealthProber: probes nothing, Health::kUnknown (the Agent's default);
//  - DomainRunningProber: healthy while the domain runs (libvirt's test driver);
//  - ScheduledHealthProber and NetworkHealthProber (agent/health_prober.h): real
//    probes on the check's schedule, the Agent reboots a VM they call unhealthy.
#pragma once

#include <string>

#include "tw/clock.h"
#include "tw/model.h"

namespace tw {

class HealthProber {
 public:
  virtual ~HealthProber() = default;

  // The health of the running VM `vm`, whose tier declares `check` (kind tcp or
  // http, never none). `running_since_ms` is when the agent started it (or first
  // saw it running), for the check's grace period; a new value means a new run
  // (a restart), whose verdict starts afresh.
  // Called on the agent's loop thread, at every report: must not block (a real
  // prober probes on its own schedule and answers from what it last saw).
  virtual Health health(const std::string& vm, const HealthCheckSpec& check,
                        Millis running_since_ms) = 0;

  // Why `vm`'s last counted check failed ("connecting to 127.0.0.1:20001:
  // Connection refused"); empty when it did not. Must not block.
  virtual std::string lastFailure(const std::string& /*vm*/) { return std::string(); }

  // `vm` stopped or left this host: drop what is kept about it.
  virtual void forget(const std::string& vm) = 0;
};

// Probes nothing: every checked VM is Health::kUnknown.
class NoopHealthProber final : public HealthProber {
 public:
  Health health(const std::string&, const HealthCheckSpec&, Millis) override {
    return Health::kUnknown;
  }
  void forget(const std::string&) override {}
};

// For hypervisors whose guests have no reachable service (libvirt's test
// driver): the check passes while the domain runs, so that tier order and tier
// health work end to end there. Never used with a real QEMU driver.
class DomainRunningProber final : public HealthProber {
 public:
  Health health(const std::string&, const HealthCheckSpec&, Millis) override {
    return Health::kHealthy;
  }
  void forget(const std::string&) override {}
};

}  // namespace tw
