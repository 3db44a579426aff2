// The controller's checks of a policy against what the agents reported about
// their hosts (controller/apply_checks.h, controller/controller_site.cc): an
// apply is refused with file:line:column by what a report proves, and changes
// nothing; without reports nothing is refused, and what the reports later
// contradict becomes a warning (event + GET /api/v1/tiers "site_warnings").
#include "controller/apply_checks.h"

#include <gtest/gtest.h>

#include "controller/controller.h"
#include "controller_fixture.h"
#include "tw/policy.h"
#include "tw/store.h"

namespace tw {
namespace {

Policy parse(const std::string& text) {
  auto p = parsePolicy({{"p.yaml", text}});
  EXPECT_TRUE(p.isOk()) << p.status().toString();
  return p.isOk() ? *p : Policy{};
}

HostReport report(std::vector<std::string> subnets, std::map<std::string, bool> paths = {},
                  std::map<std::string, bool> pools = {}) {
  HostReport r;
  r.digest = "d";
  r.subnets = std::move(subnets);
  r.paths = std::move(paths);
  r.pools = std::move(pools);
  return r;
}

const char* kLb = R"(hosts: [{ name: h1 }, { name: h2 }]
tiers:
  - name: lb
    image: tiny-lb
    ports: [{ name: http, port: 80 }]
    address: 10.9.0.100/24
)";

// Pins: an address in no subnet of any host is found once every host has
// reported, at the address's position, naming the hosts checked and their
// subnets; an address in one host's subnet is fine.
TEST(ApplyChecks, AddressInNoHostSubnet) {
  Policy p = parse(kLb);
  HostReport r1 = report({"10.213.0.0/24"}), r2 = report({"10.213.0.0/24", "192.168.1.0/24"});
  auto found = checkSite(p, {{"h1", false, &r1}, {"h2", false, &r2}});
  ASSERT_EQ(found.size(), 1u);
  EXPECT_EQ(siteRefusal(found).toString(),
            "p.yaml:6:14: address 10.9.0.100/24 of tier 'lb' lies in no subnet of the hosts that "
            "may hold it (checked 'h1' (10.213.0.0/24); 'h2' (10.213.0.0/24, 192.168.1.0/24)): "
            "give it an address in one of these subnets, or name the interface (address: { ip: "
            "..., interface: IF }) for a routed address");
  r2.subnets.push_back("10.9.0.0/16");
  EXPECT_TRUE(checkSite(p, {{"h1", false, &r1}, {"h2", false, &r2}}).empty());
}

// Pins: no refusal while an unfenced host has not reported (a fenced one is
// not waited for); none for a host with --address-interface, none for an
// address that names its interface (routed), hosts without floating
// addresses do not count.
TEST(ApplyChecks, AddressJudgedOnlyWhenEveryHostReported) {
  Policy p = parse(kLb);
  HostReport r1 = report({"10.213.0.0/24"});
  EXPECT_TRUE(checkSite(p, {{"h1", false, &r1}, {"h2", false, nullptr}}).empty());
  EXPECT_EQ(checkSite(p, {{"h1", false, &r1}, {"h2", true, nullptr}}).size(), 1u);
  HostReport with_if = r1;
  with_if.address_interface = "br0";
  EXPECT_TRUE(checkSite(p, {{"h1", false, &r1}, {"h2", false, &with_if}}).empty());
  HostReport off = report({});
  off.addresses_off = true;
  EXPECT_TRUE(checkSite(p, {{"h1", false, &off}, {"h2", false, &off}}).empty());
  Policy routed = parse(R"(hosts: [{ name: h1 }]
tiers:
  - { name: lb, image: i, ports: [{ name: http, port: 80 }], address: { ip: 10.9.0.100/24, interface: lo } }
)");
  EXPECT_TRUE(checkSite(routed, {{"h1", false, &r1}}).empty());
}

const char* kDb = R"(hosts: [{ name: h1 }, { name: h2 }, { name: h3 }]
tiers:
  - name: db
    image: tiny-db
    placement: { required_hosts: [h1, h2] }
    storage: { type: shared, path: /srv/shared }
    backup: { every: 1h, to: /srv/dr }
  - name: db2
    image: tiny-db
    storage: { type: shared, pool: nfs-db }
)";

// Pins: the checks asked of every host are the policy's paths and pools.
TEST(ApplyChecks, HostChecksOfThePolicy) {
  HostChecks c = hostChecksOf(parse(kDb));
  EXPECT_EQ(c.paths, (std::vector<std::string>{"/srv/dr", "/srv/shared"}));
  EXPECT_EQ(c.pools, std::vector<std::string>{"nfs-db"});
}

// Pins: a shared path, a pool or backup.to that a host which may run the
// tier reports missing is found at its value's position, naming the hosts;
// a host outside required_hosts, a fenced host, and a report that does not
// name the path yet prove nothing.
TEST(ApplyChecks, SharedStorageAndBackupToMissing) {
  Policy p = parse(kDb);
  HostReport good = report({}, {{"/srv/shared", true}, {"/srv/dr", true}}, {{"nfs-db", true}});
  HostReport no_share = report({}, {{"/srv/shared", false}, {"/srv/dr", true}}, {{"nfs-db", true}});
  HostReport no_dr = report({}, {{"/srv/shared", true}, {"/srv/dr", false}}, {{"nfs-db", true}});
  HostReport no_pool = report({}, {{"/srv/shared", true}, {"/srv/dr", true}}, {{"nfs-db", false}});
  HostReport unasked = report({});
  EXPECT_TRUE(checkSite(p, {{"h1", false, &good}, {"h2", false, &unasked}, {"h3", false, &no_dr}})
                  .empty());
  auto f = checkSite(p, {{"h1", false, &good}, {"h2", false, &no_share}, {"h3", false, &good}});
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(siteRefusal(f).toString(),
            "p.yaml:6:36: shared storage path /srv/shared of tier 'db' is no writable directory "
            "on host 'h2' (mount the share at this path on every host)");
  f = checkSite(p, {{"h1", false, &no_dr}, {"h2", false, &no_dr}, {"h3", false, &good}});
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(f[0].where.str(), "p.yaml:7:30");
  EXPECT_EQ(f[0].message,
            "backup.to /srv/dr of tier 'db' is no writable directory on hosts 'h1', 'h2' (mount "
            "the DR place at this path on every host that may run the tier, writable by the "
            "agent)");
  EXPECT_TRUE(checkSite(p, {{"h1", false, &good}, {"h2", true, &no_dr}, {"h3", false, &good}})
                  .empty());
  f = checkSite(p, {{"h1", false, &good}, {"h2", false, &good}, {"h3", false, &no_pool}});
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(siteRefusal(f).toString(),
            "p.yaml:10:36: storage pool 'nfs-db' of tier 'db2' is missing or inactive on host "
            "'h3' (define it of type dir, fs or netfs and start it on every host: virsh "
            "pool-define-as, pool-start, pool-autostart)");
}

// ---- in the controller ----

class SiteTest : public testing_controller::ControllerFixture {
 protected:
  SiteTest() : ControllerFixture(1000000) {}

  void SetUp() override { ASSERT_NO_FATAL_FAILURE(openController()); }

  void beat(const std::string& host, const HostReport* r) {
    Heartbeat hb = testing_controller::agentHeartbeat(host);
    if (r != nullptr) hb.host_report = *r;
    ASSERT_TRUE(controller_->handleHeartbeat(hb).isOk());
  }

  std::string events() { return testing_controller::eventLines(*store_); }

  Json tier(const std::string& name) {
    const Json all = controller_->tiersJson();
    for (const auto& t : all["tiers"])
      if (t["name"] == name) return t;
    return Json{};
  }
};

const char* kHosts = "hosts: [{ name: h1 }, { name: h2 }]\n";

// Pins: with every host reporting, applying a policy whose address lies in no
// host subnet, or whose shared path or backup.to a host lacks, is refused
// (kInvalidArgument, file:line:column), also as a dry run, and nothing
// changes: same policy version, same tiers, no VM, no policy event.
TEST_F(SiteTest, ApplyIsRefusedByWhatHostsReportAndChangesNothing) {
  ASSERT_TRUE(controller_->applyPolicy({{"hosts.yaml", kHosts}}, false).isOk());
  HostReport r = report({"10.213.0.0/24"}, {{"/srv/shared", true}, {"/srv/dr", false}});
  r.digest = "r1";
  beat("h1", &r);
  beat("h2", &r);
  const int64_t version = controller_->policyVersion();
  const std::string before = events();
  auto refused = controller_->applyPolicy(
      {{"lb.yaml", "tiers:\n  - name: lb\n    image: i\n    ports: [{ name: http, port: 80 }]\n"
                   "    address: 10.9.0.100/24\n"}},
      false);
  ASSERT_FALSE(refused.isOk());
  EXPECT_EQ(refused.status().code(), Code::kInvalidArgument);
  EXPECT_EQ(refused.status().where()->str(), "lb.yaml:5:14");
  const char* db =
      "tiers:\n  - name: db\n    image: i\n    storage: { type: shared, path: /srv/shared }\n"
      "    backup: { every: 1h, to: /srv/dr }\n";
  refused = controller_->applyPolicy({{"db.yaml", db}}, true);
  ASSERT_FALSE(refused.isOk());
  EXPECT_EQ(refused.status().toString(),
            "db.yaml:5:30: backup.to /srv/dr of tier 'db' is no writable directory on hosts "
            "'h1', 'h2' (mount the DR place at this path on every host that may run the tier, "
            "writable by the agent)");
  refused = controller_->applyPolicy({{"db.yaml", db}}, false);
  ASSERT_FALSE(refused.isOk());
  EXPECT_EQ(controller_->policyVersion(), version);
  EXPECT_EQ(controller_->policy().tiers.size(), 0u);
  EXPECT_TRUE(controller_->vms().empty());
  EXPECT_EQ(events(), before);
  // With the DR place mounted (a new report), the same apply goes through.
  r.paths["/srv/dr"] = true;
  r.digest = "r2";
  beat("h1", &r);
  beat("h2", &r);
  EXPECT_TRUE(controller_->applyPolicy({{"db.yaml", db}}, false).isOk());
}

// Pins: hosts that have not reported refuse nothing (a controller that just
// started); the sets ask every host for the policy's paths; when the
// reports come and contradict the policy in force, each finding is one
// warn event "policy.site_warning" and a "site_warnings" entry of the tier
// in GET /tiers, gone when a new report no longer shows it. A standing
// finding refuses no later apply; a new one does.
TEST_F(SiteTest, UnreportedHostsGiveWarningsLater) {
  const char* policy =
      "hosts: [{ name: h1 }, { name: h2 }]\ntiers:\n  - name: db\n    image: i\n"
      "    storage: { type: shared, path: /srv/shared }\n";
  ASSERT_TRUE(controller_->applyPolicy({{"p.yaml", policy}}, false).isOk());
  EXPECT_EQ(controller_->assignmentsFor("h1").checks.paths,
            std::vector<std::string>{"/srv/shared"});
  EXPECT_FALSE(tier("db").contains("site_warnings"));
  HostReport r = report({}, {{"/srv/shared", false}});
  r.digest = "r1";
  beat("h2", &r);
  EXPECT_EQ(controller_->assignmentsFor("h2").host_report_digest, "r1");
  const std::string message =
      "shared storage path /srv/shared of tier 'db' is no writable directory on host 'h2' "
      "(mount the share at this path on every host)";
  EXPECT_EQ(tier("db")["site_warnings"], Json::array({message}));
  EXPECT_NE(events().find("policy.site_warning " + message), std::string::npos);
  beat("h2", &r);  // the same report again: no second event
  std::string all = events();
  EXPECT_EQ(all.find("policy.site_warning"), all.rfind("policy.site_warning"));
  // While it stands, a later apply that does not add to it goes through (the
  // warning stays); one that brings a new finding (another tier on the
  // missing share) is refused.
  const std::string more = std::string(policy) + "  - name: web\n    image: i\n";
  EXPECT_TRUE(controller_->applyPolicy({{"p.yaml", more}}, false).isOk());
  EXPECT_EQ(tier("db")["site_warnings"], Json::array({message}));
  auto refused = controller_->applyPolicy(
      {{"p.yaml", more + "  - name: db2\n    image: i\n"
                         "    storage: { type: shared, path: /srv/shared }\n"}},
      false);
  ASSERT_FALSE(refused.isOk());
  EXPECT_NE(refused.status().toString().find("of tier 'db2'"), std::string::npos)
      << refused.status().toString();
  EXPECT_EQ(controller_->policy().tiers.size(), 2u);
  r.paths["/srv/shared"] = true;
  r.digest = "r2";
  beat("h2", &r);
  EXPECT_FALSE(tier("db").contains("site_warnings"));
}

}  // namespace
}  // namespace tw
