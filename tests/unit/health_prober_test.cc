// ScheduledHealthProber (when to probe, what results mean) on a ManualClock
// with a scripted probe, and the PortMap it reads host ports from. Hermetic:
// no sockets, no threads, no sleeps.
#include "agent/health_prober.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include "agent/port_map.h"

namespace tw {
namespace {

HealthCheckSpec tcpCheck(int failures = 3, Millis grace_ms = 0) {
  HealthCheckSpec c;
  c.kind = HealthKind::kTcp;
  c.port = 80;
  c.interval_ms = 1000;
  c.timeout_ms = 500;
  c.failures = failures;
  c.grace_ms = grace_ms;
  return c;
}

class ScheduledHealthProberTest : public ::testing::Test {
 protected:
  ScheduledHealthProberTest()
      : prober_(clock_, ports_, [this](const std::string& vm, const HealthCheckSpec&, int port) {
          probes.push_back({vm, port, clock_.nowMs()});
          if (during_probe) during_probe();
          auto it = fail.find(vm);
          if (it != fail.end() && it->second) {
            return unavailable("connecting to 127.0.0.1:" + std::to_string(port) +
                               ": Connection refused");
          }
          return Status::ok();
        }) {
    prober_.setOnVerdictChange([this] { ++verdict_changes; });
    EXPECT_TRUE(ports_.assign("web-1", {80}).isOk());
    EXPECT_TRUE(ports_.assign("web-2", {80}).isOk());
  }

  // Advances to t, running every probe due on the way.
  void runUntil(Millis t) {
    for (;;) {
      const Millis next = prober_.nextDueMs();
      if (next > t) break;
      clock_.set(std::max(clock_.nowMs(), next));
      prober_.runDue();
    }
    clock_.set(t);
  }

  struct Probe {
    std::string vm;
    int port;
    Millis at;
  };
  std::vector<Probe> probes;
  std::map<std::string, bool> fail;
  std::function<void()> during_probe;
  int verdict_changes = 0;

  ManualClock clock_{0};
  PortMap ports_{20000, 10};
  ScheduledHealthProber prober_;
};

// Pins: a VM is probed at once when first asked about, then every interval,
// at the host port the PortMap gives its check's guest port; one success
// makes it healthy.
TEST_F(ScheduledHealthProberTest, ProbesAtOnceThenEveryInterval) {
  EXPECT_EQ(prober_.nextDueMs(), ScheduledHealthProber::kNever);
  EXPECT_EQ(prober_.health("web-2", tcpCheck(), 0), Health::kUnknown);
  EXPECT_EQ(prober_.nextDueMs(), 0);
  runUntil(3500);

  ASSERT_EQ(probes.size(), 4u);
  for (size_t i = 0; i < probes.size(); ++i) {
    EXPECT_EQ(probes[i].at, static_cast<Millis>(i) * 1000);
    EXPECT_EQ(probes[i].vm, "web-2");
    EXPECT_EQ(probes[i].port, 20001);  // web-1 holds 20000
  }
  EXPECT_EQ(prober_.health("web-2", tcpCheck(), 0), Health::kHealthy);
  EXPECT_EQ(prober_.nextDueMs(), 4000);
  EXPECT_EQ(verdict_changes, 1);
}

// Pins: kUnhealthy after exactly `failures` consecutive failures (not one
// before), with the last failure's message; one success heals and restarts
// the count.
TEST_F(ScheduledHealthProberTest, UnhealthyAfterNConsecutiveFailures) {
  prober_.health("web-1", tcpCheck(3), 0);
  runUntil(0);
  ASSERT_EQ(prober_.health("web-1", tcpCheck(3), 0), Health::kHealthy);

  fail["web-1"] = true;
  runUntil(2000);  // failures at 1000 and 2000
  EXPECT_EQ(prober_.health("web-1", tcpCheck(3), 0), Health::kHealthy);
  runUntil(3000);  // the third
  EXPECT_EQ(prober_.health("web-1", tcpCheck(3), 0), Health::kUnhealthy);
  EXPECT_EQ(prober_.lastFailure("web-1"), "connecting to 127.0.0.1:20000: Connection refused");

  fail["web-1"] = false;
  runUntil(4000);
  EXPECT_EQ(prober_.health("web-1", tcpCheck(3), 0), Health::kHealthy);
  EXPECT_EQ(prober_.lastFailure("web-1"), "");
  fail["web-1"] = true;
  runUntil(6000);  // two failures after the success: not yet
  EXPECT_EQ(prober_.health("web-1", tcpCheck(3), 0), Health::kHealthy);
  EXPECT_EQ(verdict_changes, 3);
}

// Pins: failures of probes that start within grace_ms after the VM started do
// not count; the first after the grace does, and from then on the VM is
// probed every interval again.
TEST_F(ScheduledHealthProberTest, FailuresInTheGracePeriodDoNotCount) {
  fail["web-1"] = true;
  const Millis started = 1000;
  clock_.set(1000);
  prober_.health("web-1", tcpCheck(/*failures=*/2, /*grace_ms=*/3000), started);
  runUntil(3999);  // probes at 1000, 1250, ..., 3750: in the grace
  EXPECT_EQ(probes.size(), 12u);
  EXPECT_EQ(prober_.health("web-1", tcpCheck(2, 3000), started), Health::kUnknown);
  EXPECT_EQ(prober_.lastFailure("web-1"), "");
  runUntil(4000);  // 4000 = started + grace: counts
  EXPECT_EQ(prober_.lastFailure("web-1"), "connecting to 127.0.0.1:20000: Connection refused");
  EXPECT_EQ(prober_.nextDueMs(), 5000);
  runUntil(5000);  // the second counted failure, an interval later
  EXPECT_EQ(prober_.health("web-1", tcpCheck(2, 3000), started), Health::kUnhealthy);
  EXPECT_EQ(probes.size(), 14u);
}

// Pins: a booting VM (in its grace, no pass yet) is probed every
// kStartupIntervalMs, so its first pass is seen within that of its service
// answering; after the pass, every interval. No grace: every interval.
TEST_F(ScheduledHealthProberTest, ProbesABootingVmOftenUntilItsFirstPass) {
  fail["web-1"] = true;
  prober_.health("web-1", tcpCheck(3, /*grace_ms=*/30000), 0);
  prober_.health("web-2", tcpCheck(3, /*grace_ms=*/0), 0);
  runUntil(1100);
  EXPECT_EQ(std::count_if(probes.begin(), probes.end(), [](const Probe& p) { return p.vm == "web-1"; }),
            5);  // 0, 250, 500, 750, 1000
  EXPECT_EQ(std::count_if(probes.begin(), probes.end(), [](const Probe& p) { return p.vm == "web-2"; }),
            2);  // 0, 1000
  fail["web-1"] = false;  // its service answers from 1100 on
  runUntil(1250);
  EXPECT_EQ(prober_.health("web-1", tcpCheck(3, 30000), 0), Health::kHealthy);
  probes.clear();
  runUntil(3300);  // web-1: the probe planned at the pass (1500), then every interval
  ASSERT_EQ(probes.size(), 4u);
  EXPECT_EQ(probes[0].vm, "web-1");
  EXPECT_EQ(probes[0].at, 1500);
  EXPECT_EQ(probes[1].vm, "web-2");
  EXPECT_EQ(probes[1].at, 2000);
  EXPECT_EQ(probes[2].vm, "web-1");
  EXPECT_EQ(probes[2].at, 2500);
  EXPECT_EQ(probes[3].at, 3000);
}

// Pins: takeDue() hands out each due VM once until its result is complete()d
// (a runner may probe several VMs at once), and results complete in any order.
TEST_F(ScheduledHealthProberTest, TakenProbesAreInFlightUntilCompleted) {
  prober_.health("web-1", tcpCheck(1), 0);
  prober_.health("web-2", tcpCheck(1), 0);
  std::vector<ScheduledHealthProber::ProbeJob> jobs = prober_.takeDue();
  ASSERT_EQ(jobs.size(), 2u);
  clock_.set(5000);  // long overdue, but both still in flight
  EXPECT_TRUE(prober_.takeDue().empty());
  EXPECT_EQ(prober_.nextDueMs(), ScheduledHealthProber::kNever);
  prober_.complete(jobs[1], unavailable("refused"));
  EXPECT_EQ(prober_.health(jobs[1].vm, tcpCheck(1), 0), Health::kUnhealthy);
  EXPECT_EQ(prober_.health(jobs[0].vm, tcpCheck(1), 0), Health::kUnknown);
  std::vector<ScheduledHealthProber::ProbeJob> again = prober_.takeDue();
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].vm, jobs[1].vm);
  prober_.complete(jobs[0], prober_.probe(jobs[0]));
  EXPECT_EQ(prober_.health(jobs[0].vm, tcpCheck(1), 0), Health::kHealthy);
  EXPECT_EQ(verdict_changes, 2);
}

// Pins: a new run of the VM (another running_since) or a changed check starts
// the verdict afresh and probes at once; forget() stops the probing.
TEST_F(ScheduledHealthProberTest, NewRunOrCheckStartsAfreshAndForgetStops) {
  fail["web-1"] = true;
  prober_.health("web-1", tcpCheck(1), 0);
  runUntil(500);
  ASSERT_EQ(prober_.health("web-1", tcpCheck(1), 0), Health::kUnhealthy);

  clock_.set(600);
  EXPECT_EQ(prober_.health("web-1", tcpCheck(1), 600), Health::kUnknown);  // restarted
  EXPECT_EQ(prober_.nextDueMs(), 600);
  fail["web-1"] = false;
  runUntil(600);
  EXPECT_EQ(prober_.health("web-1", tcpCheck(1), 600), Health::kHealthy);

  HealthCheckSpec other = tcpCheck(1);
  other.port = 8080;  // no host port for it: the probe fails without probing
  EXPECT_EQ(prober_.health("web-1", other, 600), Health::kUnknown);
  const size_t probed = probes.size();
  runUntil(700);
  EXPECT_EQ(probes.size(), probed);
  EXPECT_EQ(prober_.health("web-1", other, 600), Health::kUnhealthy);
  EXPECT_EQ(prober_.lastFailure("web-1"), "no host port for guest port 8080 of vm 'web-1'");

  prober_.forget("web-1");
  EXPECT_EQ(prober_.nextDueMs(), ScheduledHealthProber::kNever);
  runUntil(10000);
  EXPECT_EQ(probes.size(), probed);
}

// Pins: a check that gains an `expect` (a policy change) is a changed check:
// the healthy verdict of the open port is dropped and the VM probed at once.
TEST_F(ScheduledHealthProberTest, AddedExpectIsAChangedCheck) {
  prober_.health("web-1", tcpCheck(1), 0);
  runUntil(500);
  ASSERT_EQ(prober_.health("web-1", tcpCheck(1), 0), Health::kHealthy);
  HealthCheckSpec greeting = tcpCheck(1);
  greeting.expect = "TIERWARDEN-DB";
  EXPECT_EQ(prober_.health("web-1", greeting, 0), Health::kUnknown);
  EXPECT_EQ(prober_.nextDueMs(), 500);
}

// Pins: a result that arrives after its VM was forgotten (or restarted) while
// the probe ran is dropped, so a stale failure never marks the new run.
TEST_F(ScheduledHealthProberTest, DropsResultsOfForgottenRuns) {
  fail["web-1"] = true;
  prober_.health("web-1", tcpCheck(1), 0);
  during_probe = [this] {
    prober_.forget("web-1");
    prober_.health("web-1", tcpCheck(1), 5);  // the agent restarted it meanwhile
  };
  prober_.runDue();
  during_probe = nullptr;
  EXPECT_EQ(probes.size(), 1u);
  EXPECT_EQ(prober_.health("web-1", tcpCheck(1), 5), Health::kUnknown);
  EXPECT_EQ(prober_.nextDueMs(), 0);  // the new run is probed on its own schedule
  EXPECT_EQ(verdict_changes, 0);
}

// Pins: host ports come from the range lowest first, a VM keeps the ones it
// holds, released ports are reused, duplicates are one, and a full range is
// an error that keeps what could be given.
TEST(PortMapTest, AllocatesLowestFreeAndReleases) {
  PortMap ports(30000, 4);
  auto a = ports.assign("a", {80, 443, 80});
  ASSERT_TRUE(a.isOk());
  EXPECT_EQ(*a, (std::map<int, int>{{80, 30000}, {443, 30001}}));
  auto b = ports.assign("b", {3306});
  ASSERT_TRUE(b.isOk());
  EXPECT_EQ(*b, (std::map<int, int>{{3306, 30002}}));

  auto a2 = ports.assign("a", {443, 8080});  // 80 released, 443 kept
  ASSERT_TRUE(a2.isOk());
  EXPECT_EQ(*a2, (std::map<int, int>{{443, 30001}, {8080, 30000}}));
  EXPECT_EQ(ports.hostPort("a", 8080), 30000);
  EXPECT_EQ(ports.hostPort("a", 80), std::nullopt);

  auto c = ports.assign("c", {1, 2, 3});  // only 30003 is left
  ASSERT_FALSE(c.isOk());
  EXPECT_EQ(c.status().code(), Code::kUnavailable);
  EXPECT_EQ(c.status().message(), "no free host port in 30000-30003 for guest port 2 of vm 'c'");
  EXPECT_EQ(ports.ports("c"), (std::map<int, int>{{1, 30003}}));

  ports.release("b");
  EXPECT_EQ(ports.ports("b"), (std::map<int, int>{}));
  auto d = ports.assign("d", {22});
  ASSERT_TRUE(d.isOk());
  EXPECT_EQ(*d, (std::map<int, int>{{22, 30002}}));
  EXPECT_EQ(ports.vms(), (std::vector<std::string>{"a", "c", "d"}));
}

}  // namespace
}  // namespace tw
