// New paths checked on the hosts before the apply that brings them is
// accepted (controller/path_probes.h, issue #15): the apply waits (pending)
// for the online hosts' reports, then a missing path refuses it whole, all
// present accepts it, and a silent host lets it through after
// PathProbes::kWaitMs with a warning naming the host, which is then not
// waited for again until it reports.
#include "controller/path_probes.h"

#include <gtest/gtest.h>

#include "controller/controller.h"
#include "controller_fixture.h"
#include "tw/store.h"

namespace tw {
namespace {

// Pins: a probe waits while something is unreported and its deadline has
// not passed; its checks go out until it is closed, or kWaitMs after its
// deadline when its caller left; a late host stays late until it reports.
TEST(PathProbes, WaitsUntilReportedOrTheDeadline) {
  PathProbes probes;
  EXPECT_FALSE(probes.waiting("k", {}, 0));  // nothing to ask: no probe
  EXPECT_TRUE(probes.empty());
  EXPECT_TRUE(probes.waiting("k", {{"h1", HostChecks{{"/srv/dr"}, {}}}}, 1000));
  EXPECT_TRUE(probes.waiting("k", {{"h2", HostChecks{{}, {"nfs"}}}}, 3999));
  EXPECT_EQ(probes.checks(3999), (HostChecks{{"/srv/dr"}, {"nfs"}}));
  EXPECT_FALSE(probes.waiting("k", {{"h2", HostChecks{{}, {"nfs"}}}}, 4000));  // deadline
  probes.close("k", {"h2"});
  EXPECT_TRUE(probes.empty());
  EXPECT_TRUE(probes.late("h2"));
  probes.noteReport("h2");
  EXPECT_FALSE(probes.late("h2"));
  // A probe whose caller left ends kWaitMs after its deadline.
  EXPECT_TRUE(probes.waiting("left", {{"h1", HostChecks{{"/a"}, {}}}}, 0));
  EXPECT_EQ(probes.checks(5999).paths, std::vector<std::string>{"/a"});
  EXPECT_TRUE(probes.checks(6000).paths.empty());
  probes.prune(6000);
  EXPECT_TRUE(probes.empty());
}

class NewPathTest : public testing_controller::ControllerFixture {
 protected:
  NewPathTest() : ControllerFixture(1000000) {}

  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(openController());
    ASSERT_TRUE(controller_->applyPolicy({{"hosts.yaml", kHosts}}, false).isOk());
    beat("h1", {});
    beat("h2", {});
  }

  // A heartbeat of `host` with a report naming `paths` and /srv/shared (a
  // new digest when they differ from the last one sent).
  void beat(const std::string& host, std::map<std::string, bool> paths) {
    paths.emplace("/srv/shared", true);
    HostReport& r = reports_[host];
    if (r.digest.empty() || r.paths != paths) {
      r.paths = std::move(paths);
      r.digest = host + "-" + std::to_string(++serial_);
    }
    Heartbeat hb = testing_controller::agentHeartbeat(host);
    hb.host_report = r;
    ASSERT_TRUE(controller_->handleHeartbeat(hb).isOk());
  }

  Result<ApplyResult> apply(const std::string& name, const std::string& text,
                            bool dry_run = false) {
    return controller_->applyPolicy({{name, text}}, dry_run, ProbeMode::kWait);
  }

  std::string events() { return testing_controller::eventLines(*store_); }

  static constexpr const char* kHosts = "hosts: [{ name: h1 }, { name: h2 }]\n";
  static constexpr const char* kDb =
      "tiers:\n  - name: db\n    image: i\n    storage: { type: shared, path: /srv/shared }\n"
      "    backup: { every: 1h, to: /srv/dr-typo }\n";

  std::map<std::string, HostReport> reports_;
  int serial_ = 0;
};

// Pins: an apply naming a backup.to no online host has reported waits
// (pending, nothing stored, the path asked of every host in its heartbeat
// answer); when one host reports it missing the same apply is refused with
// the file:line:column of the value and the host's name, nothing stored, no
// event, and the path is no longer asked.
TEST_F(NewPathTest, NewPathMissingOnOneHostIsRefusedAndNothingStored) {
  const int64_t version = controller_->policyVersion();
  const std::string before = events();
  auto first = apply("db.yaml", kDb);
  ASSERT_TRUE(first.isOk()) << first.status().toString();
  EXPECT_TRUE(first->pending);
  EXPECT_FALSE(first->applied);
  EXPECT_EQ(first->pending_hosts, (std::vector<std::string>{"h1", "h2"}));
  EXPECT_EQ(controller_->policyVersion(), version);
  EXPECT_EQ(controller_->assignmentsFor("h2").checks.paths,
            std::vector<std::string>{"/srv/dr-typo"});
  beat("h1", {{"/srv/dr-typo", true}});
  clock_.advance(500);
  auto second = apply("db.yaml", kDb);
  ASSERT_TRUE(second.isOk());
  EXPECT_TRUE(second->pending);
  EXPECT_EQ(second->pending_hosts, std::vector<std::string>{"h2"});
  beat("h2", {{"/srv/dr-typo", false}});
  auto refused = apply("db.yaml", kDb);
  ASSERT_FALSE(refused.isOk());
  EXPECT_EQ(refused.status().code(), Code::kInvalidArgument);
  EXPECT_EQ(refused.status().toString(),
            "db.yaml:5:30: backup.to /srv/dr-typo of tier 'db' is no writable directory on host "
            "'h2' (mount the DR place at this path on every host that may run the tier, writable "
            "by the agent)");
  EXPECT_EQ(controller_->policyVersion(), version);
  EXPECT_TRUE(controller_->policy().tiers.empty());
  EXPECT_TRUE(controller_->vms().empty());
  EXPECT_EQ(events(), before);
  EXPECT_EQ(controller_->assignmentsFor("h2").checks.paths, std::vector<std::string>{});
}

// Pins: when every online host reports the new path writable the apply is
// accepted without a warning; a dry run waits and decides the same way and
// stores nothing.
TEST_F(NewPathTest, AllHostsReportOkIsAccepted) {
  auto dry = apply("db.yaml", kDb, true);
  ASSERT_TRUE(dry.isOk());
  EXPECT_TRUE(dry->pending);
  beat("h1", {{"/srv/dr-typo", true}});
  beat("h2", {{"/srv/dr-typo", true}});
  dry = apply("db.yaml", kDb, true);
  ASSERT_TRUE(dry.isOk());
  EXPECT_FALSE(dry->pending);
  EXPECT_FALSE(dry->applied);
  auto applied = apply("db.yaml", kDb);
  ASSERT_TRUE(applied.isOk()) << applied.status().toString();
  EXPECT_FALSE(applied->pending);
  EXPECT_TRUE(applied->applied);
  EXPECT_TRUE(applied->warnings.empty());
  EXPECT_TRUE(applied->unchecked_hosts.empty());
  EXPECT_EQ(controller_->policy().tiers.size(), 1u);
  // In force now: asked of the hosts as part of the policy.
  EXPECT_EQ(controller_->assignmentsFor("h1").checks.paths,
            (std::vector<std::string>{"/srv/dr-typo", "/srv/shared"}));
}

// Pins: a host that stays silent (heartbeats, but its report never names the
// path) holds the apply PathProbes::kWaitMs on the controller's clock, then
// the apply is accepted with a warning naming the host and the path (in the
// answer and as a policy.unchecked event). The silent host is late: the next
// apply with another new path does not wait for it; once it reports again it
// is waited for again. Who can trigger the wait by accident is bounded this
// way: one slow host costs one apply kWaitMs, not every apply.
TEST_F(NewPathTest, SilentHostIsUncheckedAfterTheBoundAndNotWaitedForAgain) {
  beat("h1", {{"/srv/dr-typo", true}});
  auto r = apply("db.yaml", kDb);
  ASSERT_TRUE(r.isOk());
  EXPECT_TRUE(r->pending);
  clock_.advance(PathProbes::kWaitMs - 1);
  beat("h2", {});  // alive, but it does not answer the question
  r = apply("db.yaml", kDb);
  ASSERT_TRUE(r.isOk());
  EXPECT_TRUE(r->pending);
  clock_.advance(1);
  r = apply("db.yaml", kDb);
  ASSERT_TRUE(r.isOk()) << r.status().toString();
  EXPECT_FALSE(r->pending);
  EXPECT_TRUE(r->applied);
  EXPECT_EQ(r->unchecked_hosts, std::vector<std::string>{"h2"});
  const std::string warning =
      "not checked on host 'h2' (/srv/dr-typo): no report within 3 s; checked when the host "
      "reports (a problem then is a policy.site_warning)";
  ASSERT_EQ(r->warnings.size(), 1u);
  EXPECT_EQ(r->warnings[0], warning);
  EXPECT_NE(events().find("policy.unchecked " + warning), std::string::npos) << events();
  // Late: another new path is not waited for on h2 (h1 answers at once), but
  // h2 is named as not checked.
  const std::string more = std::string(kDb) +
                           "  - name: db2\n    image: i\n    storage: { type: shared, path: "
                           "/srv/shared2 }\n";
  beat("h1", {{"/srv/dr-typo", true}, {"/srv/shared2", true}});
  r = apply("db.yaml", more);
  ASSERT_TRUE(r.isOk());
  EXPECT_FALSE(r->pending);
  EXPECT_TRUE(r->applied);
  EXPECT_EQ(r->unchecked_hosts, std::vector<std::string>{"h2"});
  ASSERT_EQ(r->warnings.size(), 1u);
  EXPECT_NE(r->warnings[0].find("not checked on host 'h2' (/srv/dr-typo, /srv/shared2)"), std::string::npos)
      << r->warnings[0];
  // h2 reports again: waited for again.
  beat("h2", {{"/srv/dr-typo", true}, {"/srv/shared2", true}});
  r = apply("db.yaml", more + "    backup: { every: 1h, to: /srv/dr2 }\n");
  ASSERT_TRUE(r.isOk());
  EXPECT_TRUE(r->pending);
  EXPECT_EQ(r->pending_hosts, (std::vector<std::string>{"h1", "h2"}));
}

// Pins: hosts that do not heartbeat now (never seen, offline) are not waited
// for (they are judged when they report, as before); ProbeMode::kStopWaiting
// decides at once, naming the online hosts still unreported; kDecideNow (the
// default: --policy-dir at start) never waits.
TEST_F(NewPathTest, OnlyOnlineHostsAreWaitedForAndTheCallerMayStopWaiting) {
  auto r = controller_->applyPolicy({{"hosts.yaml", "hosts: [{ name: h1 }, { name: h2 }, { name: h3 }]\n"}},
                                    false, ProbeMode::kWait);
  ASSERT_TRUE(r.isOk());
  r = apply("db.yaml", kDb);
  ASSERT_TRUE(r.isOk());
  EXPECT_EQ(r->pending_hosts, (std::vector<std::string>{"h1", "h2"}));  // not h3
  r = controller_->applyPolicy({{"db.yaml", kDb}}, false, ProbeMode::kStopWaiting);
  ASSERT_TRUE(r.isOk());
  EXPECT_TRUE(r->applied);
  EXPECT_EQ(r->unchecked_hosts, (std::vector<std::string>{"h1", "h2"}));
  auto now = controller_->applyPolicy(
      {{"db.yaml", std::string(kDb) + "  - name: web\n    image: i\n"
                   "    storage: { type: shared, path: /x }\n"}},
      false);
  ASSERT_TRUE(now.isOk());
  EXPECT_FALSE(now->pending);
  EXPECT_TRUE(now->applied);
}

}  // namespace
}  // namespace tw
