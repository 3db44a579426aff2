// What an agent reports about its host (agent/host_report.h) and how it
// travels: looked at when the controller's checks change or every
// kRecheckMs, a new digest only when the content changed, and carried in a
// heartbeat only while the controller does not hold that digest.
#include "agent/host_report.h"

#include <gtest/gtest.h>

#include "agent/agent.h"
#include "tw/fake_hypervisor.h"

namespace tw {
namespace {

// Pins: an interface address becomes its network prefix (host bits cleared).
TEST(HostReport, SubnetOfClearsHostBits) {
  EXPECT_EQ(subnetOf(*parseIpPrefix("10.213.0.7/24")), "10.213.0.0/24");
  EXPECT_EQ(subnetOf(*parseIpPrefix("10.213.7.200/20")), "10.213.0.0/20");
  EXPECT_EQ(subnetOf(*parseIpPrefix("fd00:1:2:3::42/64")), "fd00:1:2:3::/64");
}

// Pins: the report names the checked paths and pools with what the host
// has; the digest stays while nothing changed (and the host is not looked at
// again within kRecheckMs), and changes when a share appears.
TEST(HostReport, DigestChangesOnlyWithContent) {
  FakeHostInspector fake;
  fake.subnet_list = {"10.213.0.0/24"};
  fake.directories = {"/srv/shared"};
  HostReporter reporter(fake, "", "a1");
  HostChecks checks{{"/srv/dr", "/srv/shared"}, {"nfs-db"}};
  HostReport first = reporter.refresh(checks, 0);
  EXPECT_FALSE(first.digest.empty());
  EXPECT_EQ(first.subnets, std::vector<std::string>{"10.213.0.0/24"});
  EXPECT_TRUE(first.paths.at("/srv/shared"));
  EXPECT_FALSE(first.paths.at("/srv/dr"));
  EXPECT_FALSE(first.pools.at("nfs-db"));
  const int looks = fake.looks;
  EXPECT_EQ(reporter.refresh(checks, 1000).digest, first.digest);
  EXPECT_EQ(fake.looks, looks);  // not looked at again yet
  EXPECT_EQ(reporter.refresh(checks, HostReporter::kRecheckMs).digest, first.digest);
  EXPECT_GT(fake.looks, looks);  // looked at again, same content
  fake.directories.push_back("/srv/dr");
  HostReport second = reporter.refresh(checks, HostReporter::kRecheckMs + 1000);
  EXPECT_EQ(second.digest, first.digest);  // within kRecheckMs of the last look
  second = reporter.refresh(checks, 2 * HostReporter::kRecheckMs);
  EXPECT_NE(second.digest, first.digest);
  EXPECT_TRUE(second.paths.at("/srv/dr"));
  // New checks are looked at at once.
  HostReport third = reporter.refresh(HostChecks{{"/srv/other"}, {}}, 2 * HostReporter::kRecheckMs + 1);
  EXPECT_FALSE(third.paths.at("/srv/other"));
  EXPECT_EQ(third.paths.count("/srv/dr"), 0u);
}

// Pins: a host without floating addresses reports no subnets (they say
// nothing about where an address can go).
TEST(HostReport, AddressesOffReportsNoSubnets) {
  FakeHostInspector fake;
  fake.subnet_list = {"10.213.0.0/24"};
  HostReporter reporter(fake, "", "a1", true);
  const HostReport& r = reporter.refresh({}, 0);
  EXPECT_TRUE(r.addresses_off);
  EXPECT_TRUE(r.subnets.empty());
}

class RecordingLink final : public ControllerLink {
 public:
  Result<AssignmentSet> heartbeat(const Heartbeat& hb) override {
    heartbeats.push_back(hb);
    return set;
  }
  Status sendEvent(const AgentEvent&) override { return Status::ok(); }
  AssignmentSet set;
  std::vector<Heartbeat> heartbeats;
};

// Pins: the heartbeat carries the report until the controller answers with
// its digest, then no more (heartbeats stay small); a controller that lost
// it (answers another digest, e.g. after a restart) gets it again; the
// checks of the set are what the agent looks at.
TEST(HostReport, HeartbeatCarriesTheReportOnlyWhenTheControllerLacksIt) {
  ManualClock clock{0};
  FakeHypervisor hv;
  RecordingLink link;
  link.set.host = "h1";
  link.set.version = 1;
  link.set.lease_ms = 5000;
  link.set.checks = HostChecks{{"/srv/shared"}, {}};
  FakeHostInspector fake;
  fake.subnet_list = {"10.213.0.0/24"};
  HostReporter reporter(fake, "", "a1");
  AgentOptions options;
  options.host = "h1";
  options.agent_id = "a1";
  Agent agent(options, hv, link, clock, nullptr, nullptr, nullptr);
  agent.setHostReporter(&reporter);
  ASSERT_TRUE(agent.start().isOk());
  agent.runOnce();
  ASSERT_EQ(link.heartbeats.size(), 1u);
  const std::string first = link.heartbeats[0].host_report.digest;
  EXPECT_FALSE(first.empty());
  EXPECT_EQ(link.heartbeats[0].host_report.paths.size(), 0u);  // no set yet: no checks
  // The set's checks are looked at; the controller does not hold this yet.
  clock.advance(1000);
  agent.runOnce();
  ASSERT_EQ(link.heartbeats.size(), 2u);
  const HostReport sent = link.heartbeats[1].host_report;
  ASSERT_FALSE(sent.digest.empty());
  EXPECT_FALSE(sent.paths.at("/srv/shared"));
  // The controller holds it now: not carried again.
  link.set.host_report_digest = sent.digest;
  clock.advance(1000);
  agent.runOnce();
  clock.advance(1000);
  agent.runOnce();
  ASSERT_GE(link.heartbeats.size(), 4u);
  EXPECT_TRUE(link.heartbeats.back().host_report.digest.empty());
  // A controller that lost it gets it again.
  link.set.host_report_digest = "";
  clock.advance(1000);
  agent.runOnce();
  clock.advance(1000);
  agent.runOnce();
  EXPECT_EQ(link.heartbeats.back().host_report.digest, sent.digest);
}

// Pins (issue #15, controller/path_probes.h): paths the controller asks
// about beyond the policy in force (an apply waiting for them) are looked at
// as soon as an answer brings them, and the new report goes out in the next
// heartbeat at once, not an interval later; once sent, it does not make
// heartbeats go out again by itself.
TEST(HostReport, ExtraPathsAreProbedAndReportedAtOnce) {
  ManualClock clock{0};
  FakeHypervisor hv;
  RecordingLink link;
  link.set.host = "h1";
  link.set.version = 1;
  link.set.lease_ms = 5000;
  link.set.checks = HostChecks{{"/srv/shared"}, {}};
  FakeHostInspector fake;
  fake.directories = {"/srv/shared", "/srv/dr"};
  HostReporter reporter(fake, "", "a1");
  AgentOptions options;
  options.host = "h1";
  options.agent_id = "a1";
  Agent agent(options, hv, link, clock, nullptr, nullptr, nullptr);
  agent.setHostReporter(&reporter);
  ASSERT_TRUE(agent.start().isOk());
  agent.runOnce();
  clock.advance(1000);
  agent.runOnce();
  agent.runOnce();
  const size_t settled = link.heartbeats.size();
  link.set.host_report_digest = link.heartbeats.back().host_report.digest.empty()
                                    ? link.heartbeats[settled - 2].host_report.digest
                                    : link.heartbeats.back().host_report.digest;
  clock.advance(1000);
  agent.runOnce();  // answered with the digest: the controller holds the report
  agent.runOnce();
  const size_t before = link.heartbeats.size();
  // An apply waits for /srv/dr and /srv/typo: the answer asks about them.
  link.set.checks = HostChecks{{"/srv/dr", "/srv/shared", "/srv/typo"}, {}};
  clock.advance(1000);
  agent.runOnce();  // the answer with the new checks
  ASSERT_EQ(link.heartbeats.size(), before + 1);
  agent.runOnce();  // no time passed: the new report goes out now
  ASSERT_EQ(link.heartbeats.size(), before + 2);
  const HostReport& sent = link.heartbeats.back().host_report;
  ASSERT_FALSE(sent.digest.empty());
  EXPECT_TRUE(sent.paths.at("/srv/dr"));
  EXPECT_FALSE(sent.paths.at("/srv/typo"));
  EXPECT_TRUE(sent.paths.at("/srv/shared"));
  agent.runOnce();  // sent once: no heartbeat storm while the controller lacks it
  agent.runOnce();
  EXPECT_EQ(link.heartbeats.size(), before + 2);
}

}  // namespace
}  // namespace tw
