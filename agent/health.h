// The seam for health checks of running VMs (TCP or HTTP, HealthCheckSpec).
// This issue ships only NoopHealthProber: a tier without a check is healthy
// while its domain runs (the Agent decides that itself), and a tier with a
// tcp/http check stays Health::kUnknown until a real prober is plugged in.
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
  // saw it running), for the check's grace period.
  // Called on the agent's loop thread, at every report: must not block (a real
  // prober probes on its own schedule and answers from what it last saw).
  virtual Health health(const std::string& vm, const HealthCheckSpec& check,
                        Millis running_since_ms) = 0;

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
