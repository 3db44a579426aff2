// The agent's health checks: an unhealthy VM is rebooted like a crash, after
// its grace period, within the restart budget (agent_fixture.h).
#include "agent/agent.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "agent_fixture.h"

namespace tw {
namespace {

using namespace testing_agent;  // agent_fixture.h

// ------------------------------------------------------------------ health ---

// An HTTP check on guest port 80 of a tier that serves port 80.
Assignment checkedAssignment(const std::string& vm, int64_t epoch, int failures, Millis grace_ms) {
  Assignment a = assignment(vm, epoch);
  a.ports = {ServicePort{"http", 80, "tcp"}};
  a.health.kind = HealthKind::kHttp;
  a.health.port = 80;
  a.health.interval_ms = 1000;
  a.health.failures = failures;
  a.health.grace_ms = grace_ms;
  return a;
}

// The agent with a ScheduledHealthProber whose probe answers as `service_up`
// says, stepped on the same ManualClock.
class AgentHealthTest : public AgentTest {
 protected:
  AgentHealthTest()
      : checker_(clock_, ports_, [this](const std::string&, const HealthCheckSpec&, int port) {
          probed_ports.push_back(port);
          if (service_up) return Status::ok();
          return unavailable(fmt::format("connecting to 127.0.0.1:{}: Connection refused", port));
        }) {
    prober_ = &checker_;
    scheduled_ = &checker_;
  }

  size_t indexOf(const std::string& kind, size_t from = 0) const {
    for (size_t i = from; i < link_.events.size(); ++i) {
      if (link_.events[i].kind == kind) return i;
    }
    return link_.events.size();
  }

  bool service_up = true;
  std::vector<int> probed_ports;
  ScheduledHealthProber checker_;
};

// Pins: a checked VM is probed at its host port and reported healthy; after
// `failures` failed checks it is rebooted at once (destroy + start), with
// vm.unhealthy then vm.restarted, counted as a restart, and no vm.crashed.
TEST_F(AgentHealthTest, RebootsAnUnhealthyVmLikeACrash) {
  startWith({checkedAssignment("web-1", 3, /*failures=*/3, /*grace_ms=*/0)});
  runUntil(10000);
  ASSERT_NE(link_.lastReport("web-1"), nullptr);
  EXPECT_EQ(link_.lastReport("web-1")->health, Health::kHealthy);
  ASSERT_FALSE(probed_ports.empty());
  EXPECT_EQ(probed_ports.back(), 20000);

  service_up = false;  // failed checks at 11000, 12000, 13000
  runUntil(12999);
  EXPECT_EQ(fake_.startCount("web-1"), 1);
  EXPECT_EQ(link_.countEvents("vm.unhealthy"), 0);
  hv_.calls.clear();
  runUntil(13000);

  EXPECT_EQ(hv_.calls, (std::vector<std::string>{"destroy web-1", "start web-1"}));
  EXPECT_TRUE(fake_.isRunning("web-1"));
  const size_t unhealthy = indexOf("vm.unhealthy");
  ASSERT_LT(unhealthy, link_.events.size());
  EXPECT_EQ(link_.events[unhealthy].level, "warn");
  EXPECT_EQ(link_.events[unhealthy].epoch, 3);
  EXPECT_EQ(link_.events[unhealthy].message,
            "vm 'web-1' (epoch 3) is unhealthy (3 http checks failed; the last: connecting to "
            "127.0.0.1:20000: Connection refused): rebooting it");
  EXPECT_LT(indexOf("vm.restarted", unhealthy), link_.events.size());
  EXPECT_EQ(link_.countEvents("vm.crashed"), 0);
  EXPECT_EQ(agent_->restarts("web-1"), 1);
  EXPECT_EQ(link_.lastReport("web-1")->restarts, 1);

  service_up = true;  // the new run was probed at 13000 (failed, counts 1); heals at 14000
  runUntil(13999);
  EXPECT_EQ(link_.lastReport("web-1")->health, Health::kUnknown);
  runUntil(14000);
  EXPECT_EQ(link_.lastReport("web-1")->health, Health::kHealthy);
  EXPECT_EQ(link_.lastReport("web-1")->state, DomainState::kRunning);
}

// Pins: failed checks in the grace period after a start do not count: with a
// 5 s grace and 2 failures, a VM whose service never answers is rebooted at
// 6 s, not before.
TEST_F(AgentHealthTest, GracePeriodDelaysTheVerdict) {
  service_up = false;
  startWith({checkedAssignment("web-1", 1, /*failures=*/2, /*grace_ms=*/5000)});
  runUntil(5999);
  EXPECT_EQ(fake_.startCount("web-1"), 1);
  EXPECT_EQ(link_.countEvents("vm.unhealthy"), 0);
  EXPECT_EQ(link_.lastReport("web-1")->health, Health::kUnknown);
  runUntil(6000);
  EXPECT_EQ(fake_.startCount("web-1"), 2);
  EXPECT_EQ(link_.countEvents("vm.unhealthy"), 1);
}

// Pins: health reboots spend the restart budget with the crash back-off (at
// once, then after 1 s); once spent the VM is left down with vm.budget_exhausted
// and the budget reason, as after crashes.
TEST_F(AgentHealthTest, RepeatedHealthFailuresExhaustTheBudget) {
  Assignment a = checkedAssignment("web-1", 1, /*failures=*/2, /*grace_ms=*/0);
  a.restart.restarts = 2;
  service_up = false;
  startWith({a});

  runUntil(1000);  // failed at 0 and 1000: first reboot at once
  EXPECT_EQ(fake_.startCount("web-1"), 2);
  runUntil(2000);  // failed at 1000 and 2000 (new run): second reboot after 1 s
  EXPECT_FALSE(fake_.isRunning("web-1"));
  runUntil(3000);
  EXPECT_EQ(fake_.startCount("web-1"), 3);
  runUntil(60000);  // failed at 3000 and 4000: the budget is spent

  EXPECT_FALSE(fake_.isRunning("web-1"));
  EXPECT_EQ(fake_.startCount("web-1"), 3);
  EXPECT_TRUE(agent_->budgetExhausted("web-1"));
  EXPECT_EQ(link_.countEvents("vm.unhealthy"), 3);
  EXPECT_EQ(link_.countEvents("vm.restarted"), 2);
  EXPECT_EQ(link_.countEvents("vm.crashed"), 0);
  const AgentEvent* e = link_.findEvent("vm.budget_exhausted", "web-1");
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->level, "error");
  EXPECT_EQ(link_.lastReport("web-1")->reason, "restart budget spent (2 restarts in 10m)");
  EXPECT_EQ(link_.lastReport("web-1")->state, DomainState::kShutoff);
}

}  // namespace
}  // namespace tw
