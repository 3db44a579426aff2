#include "tw/placement.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "placement_fixture.h"
#include "tw/model.h"

namespace tw {
namespace {

using testing_placement::dump;
using testing_placement::host;
using testing_placement::tier;

PlacementInput inputFor(const Policy& policy, std::vector<HostView> hosts) {
  PlacementInput in;
  in.policy = &policy;
  in.hosts = std::move(hosts);
  return in;
}

std::string hostOf(const PlacementResult& r, const std::string& vm) {
  const VmPlacement* p = r.find(vm);
  return p == nullptr ? "<missing>" : p->host;
}

std::map<std::string, std::string> asCurrent(const PlacementResult& r) {
  std::map<std::string, std::string> current;
  for (const auto& p : r.vms)
    if (!p.host.empty()) current[p.vm] = p.host;
  return current;
}

// Pins: vmNamesOf names replicas "<tier>-1".."<tier>-<replicas>", 1-based.
TEST(PlacementTest, VmNamesAreOneBasedOrdinals) {
  EXPECT_EQ(vmNamesOf(tier("web", 3, 1, 128)),
            (std::vector<std::string>{"web-1", "web-2", "web-3"}));
  EXPECT_TRUE(vmNamesOf(tier("web", 0, 1, 128)).empty());
}

// Pins: spread: required puts every replica on its own host.
TEST(PlacementTest, SpreadRequiredUsesDistinctHosts) {
  Policy p;
  p.tiers = {tier("db", 3, 1, 256, SpreadMode::kRequired)};
  auto r = place(inputFor(p, {host("h1", 8, 8192), host("h2", 8, 8192), host("h3", 8, 8192)}));
  ASSERT_TRUE(r.allPlaced());
  std::set<std::string> used_hosts{hostOf(r, "db-1"), hostOf(r, "db-2"), hostOf(r, "db-3")};
  EXPECT_EQ(used_hosts.size(), 3u);
}

// Pins: spread: required leaves a replica pending, with the spread reason, rather
// than doubling up when the tier has more replicas than hosts.
TEST(PlacementTest, SpreadRequiredRefusesToDoubleUp) {
  Policy p;
  p.tiers = {tier("web", 3, 1, 256, SpreadMode::kRequired)};
  auto r = place(inputFor(p, {host("h1", 8, 8192), host("h2", 8, 8192)}));
  EXPECT_NE(hostOf(r, "web-1"), hostOf(r, "web-2"));
  EXPECT_EQ(hostOf(r, "web-3"), "");
  EXPECT_EQ(r.find("web-3")->reason,
            "spread: required and every allowed host already runs a replica of 'web'");
  EXPECT_FALSE(r.allPlaced());
}

// Pins: spread: preferred spreads first and doubles up only when it must.
TEST(PlacementTest, SpreadPreferredSpreadsThenDoublesUp) {
  Policy p;
  p.tiers = {tier("web", 3, 1, 256, SpreadMode::kPreferred)};
  // h2 has much more free memory: without spread it would take everything.
  auto r = place(inputFor(p, {host("h1", 8, 2048), host("h2", 8, 16384)}));
  ASSERT_TRUE(r.allPlaced());
  EXPECT_EQ(hostOf(r, "web-1"), "h2");
  EXPECT_EQ(hostOf(r, "web-2"), "h1");
  EXPECT_EQ(hostOf(r, "web-3"), "h2");
}

// Pins: spread: none ignores replicas already on a host and goes by free memory.
TEST(PlacementTest, SpreadNoneGoesByFreeMemory) {
  Policy p;
  p.tiers = {tier("batch", 3, 1, 256, SpreadMode::kNone)};
  auto r = place(inputFor(p, {host("h1", 8, 2048), host("h2", 8, 16384)}));
  ASSERT_TRUE(r.allPlaced());
  EXPECT_EQ(hostOf(r, "batch-1"), "h2");
  EXPECT_EQ(hostOf(r, "batch-2"), "h2");
  EXPECT_EQ(hostOf(r, "batch-3"), "h2");
}

// Pins: a VM fits exactly up to capacity, and a host is never overcommitted by
// placement; the pending reason names each host's shortfall.
TEST(PlacementTest, CapacityFitAndOvercommitRefused) {
  Policy p;
  p.tiers = {tier("db", 3, 1, 512, SpreadMode::kNone)};
  auto r = place(inputFor(p, {host("h1", 2, 1024)}));
  EXPECT_EQ(hostOf(r, "db-1"), "h1");
  EXPECT_EQ(hostOf(r, "db-2"), "h1");
  EXPECT_EQ(hostOf(r, "db-3"), "");
  EXPECT_EQ(r.find("db-3")->reason,
            "no schedulable host has 1 vCPU and 512 MiB free (h1: 0 vCPUs and 0 MiB free)");
  EXPECT_EQ(r.used.at("h1").cpus, 2);
  EXPECT_EQ(r.used.at("h1").memory_mib, 1024);
}

// Pins: CPU is checked as well as memory, and the reason says which is short.
TEST(PlacementTest, CpuShortageIsNamed) {
  Policy p;
  p.tiers = {tier("cpu", 1, 4, 256)};
  auto r = place(inputFor(p, {host("h1", 2, 8192), host("h2", 8, 128)}));
  EXPECT_EQ(hostOf(r, "cpu-1"), "");
  EXPECT_EQ(
      r.find("cpu-1")->reason,
      "no schedulable host has 4 vCPUs and 256 MiB free (h1: 2 vCPUs free, h2: 128 MiB free)");
}

// Pins: the example reason format: memory short on one host, another unschedulable.
TEST(PlacementTest, PendingReasonListsEveryHost) {
  Policy p;
  p.tiers = {tier("web", 2, 1, 512, SpreadMode::kNone)};
  HostView h2 = host("h2", 8, 8192);
  h2.schedulable = false;
  auto r = place(inputFor(p, {host("h1", 8, 768), h2}));
  EXPECT_EQ(hostOf(r, "web-1"), "h1");
  EXPECT_EQ(
      r.find("web-2")->reason,
      "no schedulable host has 1 vCPU and 512 MiB free (h1: 256 MiB free, h2: not schedulable)");
}

// Pins: a pending reason names at most 8 hosts and counts the rest (at 1,000
// hosts a reason naming every host, copied into 20,000 pending VMs, was most
// of an apply's time); a spread block among the unnamed still counts.
TEST(PlacementTest, PendingReasonNamesEightHostsAndCountsTheRest) {
  Policy p;
  p.tiers = {tier("web", 1, 4, 256)};
  std::vector<HostView> hosts;
  for (int i = 10; i < 22; ++i) hosts.push_back(host("h" + std::to_string(i), 2, 8192));
  auto r = place(inputFor(p, hosts));
  EXPECT_EQ(r.find("web-1")->reason,
            "no schedulable host has 4 vCPUs and 256 MiB free (h10: 2 vCPUs free, h11: 2 vCPUs free, "
            "h12: 2 vCPUs free, h13: 2 vCPUs free, h14: 2 vCPUs free, h15: 2 vCPUs free, h16: 2 vCPUs "
            "free, h17: 2 vCPUs free, and 4 more hosts)");

  Policy q;
  q.tiers = {tier("db", 13, 1, 256, SpreadMode::kRequired)};
  std::vector<HostView> twelve;
  for (int i = 10; i < 22; ++i) twelve.push_back(host("h" + std::to_string(i), 8, 8192));
  auto spread = place(inputFor(q, twelve));
  EXPECT_EQ(spread.find("db-13")->reason,
            "spread: required and every allowed host already runs a replica of 'db'");
}

// Pins: active hosts are used before spares, even when the spare has more room,
// and spares take what the actives cannot.
TEST(PlacementTest, ActiveBeforeSpare) {
  Policy p;
  p.tiers = {tier("web", 2, 1, 512, SpreadMode::kNone)};
  auto r = place(inputFor(p, {host("spare", 16, 65536, HostRole::kSpare), host("h1", 2, 512)}));
  EXPECT_EQ(hostOf(r, "web-1"), "h1");
  EXPECT_EQ(hostOf(r, "web-2"), "spare");
}

// Pins: preferred_hosts are tried in their order, before more free memory, and
// a full preferred host falls through to the next one.
TEST(PlacementTest, PreferredHostsInOrder) {
  Policy p;
  TierSpec t = tier("db", 2, 1, 512, SpreadMode::kNone);
  t.placement.preferred_hosts = {"h3", "h2"};
  p.tiers = {t};
  auto r = place(inputFor(p, {host("h1", 8, 65536), host("h2", 8, 4096), host("h3", 8, 512)}));
  EXPECT_EQ(hostOf(r, "db-1"), "h3");
  EXPECT_EQ(hostOf(r, "db-2"), "h2");
}

// Pins: active before spare outranks preferred_hosts (rule 4's order).
TEST(PlacementTest, PreferredSpareStillAfterActive) {
  Policy p;
  TierSpec t = tier("db", 1, 1, 512);
  t.placement.preferred_hosts = {"s1"};
  p.tiers = {t};
  auto r = place(inputFor(p, {host("s1", 8, 8192, HostRole::kSpare), host("h1", 8, 1024)}));
  EXPECT_EQ(hostOf(r, "db-1"), "h1");
}

// Pins: required_hosts restricts placement to those hosts only.
TEST(PlacementTest, RequiredHostsOnly) {
  Policy p;
  TierSpec t = tier("db", 2, 1, 512, SpreadMode::kNone);
  t.placement.required_hosts = {"h2"};
  p.tiers = {t};
  auto r = place(inputFor(p, {host("h1", 8, 65536), host("h2", 8, 1024)}));
  EXPECT_EQ(hostOf(r, "db-1"), "h2");
  EXPECT_EQ(hostOf(r, "db-2"), "h2");
  EXPECT_EQ(r.used.at("h1").memory_mib, 0);
}

// Pins: when no required host is schedulable, the reason says so by name.
TEST(PlacementTest, RequiredHostsUnschedulableReason) {
  Policy p;
  TierSpec t = tier("db", 1, 1, 512);
  t.placement.required_hosts = {"h3"};
  p.tiers = {t};
  HostView h3 = host("h3", 8, 8192);
  h3.schedulable = false;
  auto r = place(inputFor(p, {host("h1", 8, 8192), h3}));
  EXPECT_EQ(hostOf(r, "db-1"), "");
  EXPECT_EQ(r.find("db-1")->reason, "required_hosts [h3] are not schedulable");
}

// Pins: a VM's avoid set keeps it off those hosts, and displaces it from one it runs on.
TEST(PlacementTest, AvoidSetIsHonoured) {
  Policy p;
  p.tiers = {tier("web", 1, 1, 512)};
  PlacementInput in = inputFor(p, {host("h1", 8, 65536), host("h2", 8, 2048)});
  in.current = {{"web-1", "h1"}};
  in.avoid = {{"web-1", {"h1"}}};
  auto r = place(in);
  EXPECT_EQ(hostOf(r, "web-1"), "h2");
  EXPECT_TRUE(r.find("web-1")->moved);

  in.avoid = {{"web-1", {"h1", "h2"}}};
  r = place(in);
  EXPECT_EQ(hostOf(r, "web-1"), "");
  EXPECT_EQ(r.find("web-1")->reason,
            "no schedulable host has 1 vCPU and 512 MiB free (h1: avoided for web-1, h2: avoided "
            "for web-1)");
}

// Pins: re-running with the previous result as current moves nothing, even when
// a roomier host appears that a fresh placement would prefer.
TEST(PlacementTest, StableWhenRerun) {
  Policy p;
  p.tiers = {tier("db", 2, 1, 512, SpreadMode::kRequired), tier("web", 4, 1, 256)};
  PlacementInput in = inputFor(p, {host("h1", 8, 4096), host("h2", 8, 4096), host("h3", 8, 2048)});
  auto first = place(in);
  ASSERT_TRUE(first.allPlaced());
  for (const auto& v : first.vms) EXPECT_TRUE(v.moved) << v.vm;

  in.current = asCurrent(first);
  in.hosts.push_back(host("h0", 64, 1 << 20));
  auto second = place(in);
  for (const auto& v : second.vms) {
    EXPECT_FALSE(v.moved) << v.vm;
    EXPECT_EQ(v.host, hostOf(first, v.vm));
  }
  EXPECT_EQ(second.used.at("h0").memory_mib, 0);
}

// Pins: a tier 'after' another is placed after it even when declared first, so
// the earlier tier gets scarce capacity; results list tiers in that order.
TEST(PlacementTest, TierOrderFollowsAfter) {
  Policy p;
  TierSpec web = tier("web", 1, 1, 1024);
  web.after = {"db"};
  p.tiers = {web, tier("db", 1, 1, 1024)};
  auto r = place(inputFor(p, {host("h1", 8, 1024)}));
  EXPECT_EQ(hostOf(r, "db-1"), "h1");
  EXPECT_EQ(hostOf(r, "web-1"), "");
  ASSERT_EQ(r.vms.size(), 2u);
  EXPECT_EQ(r.vms[0].vm, "db-1");
  EXPECT_EQ(r.vms[1].vm, "web-1");
}

// Pins: scaling down lists the surplus VMs as removed; they hold no capacity and
// the remaining replicas stay put.
TEST(PlacementTest, ScaleDownRemoves) {
  Policy p;
  p.tiers = {tier("web", 1, 1, 512, SpreadMode::kNone)};
  PlacementInput in = inputFor(p, {host("h1", 2, 1024)});
  in.current = {{"web-1", "h1"}, {"web-2", "h1"}, {"gone-1", "h1"}};
  auto r = place(in);
  EXPECT_EQ(r.removed, (std::vector<std::string>{"gone-1", "web-2"}));
  ASSERT_EQ(r.vms.size(), 1u);
  EXPECT_EQ(hostOf(r, "web-1"), "h1");
  EXPECT_FALSE(r.find("web-1")->moved);
  EXPECT_EQ(r.used.at("h1").memory_mib, 512);
  EXPECT_EQ(r.find("web-2"), nullptr);
}

// Pins: a host going unschedulable displaces only its own VMs; the others stay.
TEST(PlacementTest, UnschedulableHostDisplacesOnlyItsVms) {
  Policy p;
  p.tiers = {tier("web", 3, 1, 512, SpreadMode::kRequired)};
  PlacementInput in = inputFor(
      p, {host("h1", 8, 8192), host("h2", 8, 8192), host("h3", 8, 8192), host("h4", 8, 8192)});
  in.current = {{"web-1", "h1"}, {"web-2", "h2"}, {"web-3", "h3"}};
  in.hosts[1].schedulable = false;  // h2
  auto r = place(in);
  EXPECT_EQ(hostOf(r, "web-1"), "h1");
  EXPECT_FALSE(r.find("web-1")->moved);
  EXPECT_EQ(hostOf(r, "web-2"), "h4");
  EXPECT_TRUE(r.find("web-2")->moved);
  EXPECT_EQ(hostOf(r, "web-3"), "h3");
  EXPECT_FALSE(r.find("web-3")->moved);
  EXPECT_EQ(r.used.at("h2").memory_mib, 0);
}

// Pins: a VM whose host left the input is not kept there; left without a host
// it is pending and counted as moved (it must leave its old host).
TEST(PlacementTest, DisplacedToPendingIsMoved) {
  Policy p;
  p.tiers = {tier("web", 1, 1, 512)};
  PlacementInput in = inputFor(p, {host("h1", 1, 256)});
  in.current = {{"web-1", "h9"}};
  auto r = place(in);
  EXPECT_EQ(hostOf(r, "web-1"), "");
  EXPECT_TRUE(r.find("web-1")->moved);
  EXPECT_EQ(r.used.count("h9"), 0u);
}

// Pins: a host with unknown capacity is never a candidate, but a VM already on
// it stays there.
TEST(PlacementTest, UnknownCapacityNeverCandidate) {
  Policy p;
  p.tiers = {tier("web", 2, 1, 256, SpreadMode::kNone)};
  HostView h1 = host("h1", 0, 0);
  h1.capacity_known = false;
  PlacementInput in = inputFor(p, {h1});
  auto r = place(in);
  EXPECT_EQ(hostOf(r, "web-1"), "");
  EXPECT_EQ(r.find("web-1")->reason,
            "no schedulable host has 1 vCPU and 256 MiB free (h1: capacity unknown)");

  in.current = {{"web-1", "h1"}};
  r = place(in);
  EXPECT_EQ(hostOf(r, "web-1"), "h1");
  EXPECT_FALSE(r.find("web-1")->moved);
  EXPECT_EQ(hostOf(r, "web-2"), "");
}

// Pins: a host with accepts_new=false keeps the VMs it holds (no move) but takes
// neither new nor displaced VMs, and the reason says so.
TEST(PlacementTest, HostNotAcceptingNewKeepsItsVms) {
  Policy p;
  p.tiers = {tier("web", 3, 1, 512, SpreadMode::kNone)};
  HostView h2 = host("h2", 8, 65536);
  h2.accepts_new = false;
  PlacementInput in = inputFor(p, {host("h1", 1, 512), h2});
  in.current = {{"web-1", "h2"}};
  auto r = place(in);
  EXPECT_EQ(hostOf(r, "web-1"), "h2");
  EXPECT_FALSE(r.find("web-1")->moved);
  EXPECT_EQ(hostOf(r, "web-2"), "h1");
  EXPECT_EQ(hostOf(r, "web-3"), "");
  EXPECT_EQ(r.find("web-3")->reason,
            "no schedulable host has 1 vCPU and 512 MiB free (h1: 0 vCPUs and 0 MiB free, h2: "
            "accepts no new VMs)");
  EXPECT_EQ(r.used.at("h2").memory_mib, 512);
}

// Pins: a host whose capacity shrank keeps what runs on it (overcommitted, no
// move reported) but takes nothing new.
TEST(PlacementTest, ShrunkHostKeepsItsVms) {
  Policy p;
  p.tiers = {tier("web", 3, 1, 512, SpreadMode::kNone)};
  PlacementInput in = inputFor(p, {host("h1", 1, 512), host("h2", 8, 8192)});
  in.current = {{"web-1", "h1"}, {"web-2", "h1"}};
  auto r = place(in);
  EXPECT_EQ(hostOf(r, "web-1"), "h1");
  EXPECT_EQ(hostOf(r, "web-2"), "h1");
  EXPECT_FALSE(r.find("web-2")->moved);
  EXPECT_EQ(hostOf(r, "web-3"), "h2");
  EXPECT_EQ(r.used.at("h1").cpus, 2);
  EXPECT_EQ(r.used.at("h1").memory_mib, 1024);
}

// Pins: two replicas of a spread: required tier on one host: the lower ordinal
// keeps it, the other moves.
TEST(PlacementTest, SpreadRequiredConflictLowerOrdinalKeeps) {
  Policy p;
  p.tiers = {tier("db", 2, 1, 512, SpreadMode::kRequired)};
  PlacementInput in = inputFor(p, {host("h1", 8, 8192), host("h2", 8, 1024)});
  in.current = {{"db-2", "h1"}, {"db-1", "h1"}};
  auto r = place(in);
  EXPECT_EQ(hostOf(r, "db-1"), "h1");
  EXPECT_FALSE(r.find("db-1")->moved);
  EXPECT_EQ(hostOf(r, "db-2"), "h2");
  EXPECT_TRUE(r.find("db-2")->moved);
}

// Pins: used lists every input host, with zero for idle ones, and sums what each holds.
TEST(PlacementTest, UsedCoversEveryHost) {
  Policy p;
  p.tiers = {tier("a", 1, 2, 300), tier("b", 1, 1, 200)};
  p.tiers[1].placement.required_hosts = {"h1"};
  p.tiers[0].placement.required_hosts = {"h1"};
  HostView idle = host("idle", 1, 1);
  idle.schedulable = false;
  auto r = place(inputFor(p, {host("h1", 8, 8192), idle}));
  ASSERT_EQ(r.used.size(), 2u);
  EXPECT_EQ(r.used.at("h1").cpus, 3);
  EXPECT_EQ(r.used.at("h1").memory_mib, 500);
  EXPECT_EQ(r.used.at("idle").cpus, 0);
  EXPECT_EQ(r.used.at("idle").memory_mib, 0);
}

// Pins: the same input gives the same output, whatever the order of hosts.
TEST(PlacementTest, Deterministic) {
  Policy p;
  p.tiers = {tier("db", 3, 2, 1024, SpreadMode::kRequired), tier("web", 5, 1, 512),
             tier("cache", 4, 1, 256, SpreadMode::kNone)};
  std::vector<HostView> hosts = {host("a", 8, 4096), host("b", 8, 4096), host("c", 8, 4096),
                                 host("d", 4, 4096, HostRole::kSpare)};
  auto first = place(inputFor(p, hosts));
  EXPECT_EQ(dump(first), dump(place(inputFor(p, hosts))));
  std::reverse(hosts.begin(), hosts.end());
  EXPECT_EQ(dump(first), dump(place(inputFor(p, hosts))));
}

// Pins: a cluster with room to absorb any one host's VMs is N+1 safe.
TEST(PlacementTest, NPlusOneSafe) {
  Policy p;
  p.tiers = {tier("web", 2, 1, 512, SpreadMode::kRequired)};
  PlacementInput in = inputFor(p, {host("h1", 4, 2048), host("h2", 4, 2048), host("h3", 4, 2048)});
  auto placed = place(in);
  ASSERT_TRUE(placed.allPlaced());
  auto report = checkNPlusOne(in, placed);
  EXPECT_TRUE(report.safe);
  EXPECT_TRUE(report.breaking.empty());
  EXPECT_EQ(report.summary(), "N+1 safe: any single host can fail");
}

// Pins: the report names the host whose loss strands VMs, and which VMs; a host
// holding no VM is not simulated.
TEST(PlacementTest, NPlusOneUnsafeNamesBreakingHost) {
  Policy p;
  TierSpec db = tier("db", 2, 1, 1024, SpreadMode::kNone);
  db.placement.required_hosts = {"big"};
  p.tiers = {tier("web", 1, 1, 512), db};
  // big holds db-1 and db-2 (required there); small holds web-1; empty holds nothing
  // it could lose and has no room for anything.
  PlacementInput in =
      inputFor(p, {host("big", 8, 4096), host("small", 1, 512), host("empty", 1, 64)});
  in.current = {{"web-1", "small"}};
  auto placed = place(in);
  ASSERT_TRUE(placed.allPlaced());
  ASSERT_EQ(hostOf(placed, "web-1"), "small");
  auto report = checkNPlusOne(in, placed);
  EXPECT_FALSE(report.safe);
  ASSERT_EQ(report.breaking.size(), 1u);
  EXPECT_EQ(report.breaking.at("big"), (std::vector<std::string>{"db-1", "db-2"}));
  EXPECT_EQ(report.summary(), "not N+1 safe: losing host 'big' leaves db-1, db-2 unplaced");
}

// Pins: the summary lists every breaking host, VMs by tier then ordinal.
TEST(PlacementTest, NPlusOneSummaryListsAllBreakingHosts) {
  Policy p;
  p.tiers = {tier("web", 2, 1, 512, SpreadMode::kRequired), tier("db", 1, 1, 512)};
  // Two hosts, each just big enough for what it holds.
  PlacementInput in = inputFor(p, {host("h1", 2, 1024), host("h2", 1, 512)});
  in.current = {{"web-1", "h1"}, {"db-1", "h1"}, {"web-2", "h2"}};
  auto placed = place(in);
  ASSERT_TRUE(placed.allPlaced());
  auto report = checkNPlusOne(in, placed);
  EXPECT_EQ(report.summary(),
            "not N+1 safe: losing host 'h1' leaves db-1, web-1 unplaced; losing host 'h2' leaves "
            "web-2 unplaced");
}

// Pins: only hosts that hold VMs are simulated, and a VM pending after the loss
// is listed even if it was pending before (the question is "does every VM have a host").
TEST(PlacementTest, NPlusOneSkipsIdleHostsAndCountsAllPending) {
  Policy p;
  p.tiers = {tier("web", 1, 1, 512), tier("huge", 1, 1, 1 << 20)};
  PlacementInput in = inputFor(p, {host("h1", 4, 2048), host("h2", 4, 2048)});
  in.current = {{"web-1", "h1"}};
  auto placed = place(in);
  ASSERT_EQ(hostOf(placed, "web-1"), "h1");
  ASSERT_EQ(hostOf(placed, "huge-1"), "");
  auto report = checkNPlusOne(in, placed);
  EXPECT_FALSE(report.safe);
  ASSERT_EQ(report.breaking.size(), 1u);
  EXPECT_EQ(report.breaking.at("h1"), (std::vector<std::string>{"huge-1"}));
}

// Pins: on a larger random cluster (seeded), placement never overcommits, never
// breaks spread: required or required_hosts, uses only schedulable hosts with
// known capacity, and keeps every VM whose host stays usable on the next round.
TEST(PlacementTest, RandomizedClusterInvariants) {
  std::mt19937 rng(20240601);
  auto roll = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };

  for (int round = 0; round < 5; ++round) {
    std::vector<HostView> hosts;
    for (int i = 0; i < 20; ++i) {
      HostView h = host("h" + std::to_string(i), roll(4, 32), 1024L * roll(4, 64),
                        roll(0, 4) == 0 ? HostRole::kSpare : HostRole::kActive);
      h.schedulable = roll(0, 9) != 0;
      h.capacity_known = roll(0, 19) != 0;
      hosts.push_back(h);
    }
    Policy p;
    int total = 0;
    for (int t = 0; total < 200; ++t) {
      int replicas = std::min(200 - total, roll(1, 25));
      auto spread = static_cast<SpreadMode>(roll(0, 2));
      TierSpec ts = tier("t" + std::to_string(t), replicas, roll(1, 4), 128 * roll(1, 16), spread);
      if (roll(0, 4) == 0) ts.placement.preferred_hosts = {"h" + std::to_string(roll(0, 19))};
      if (roll(0, 5) == 0) {
        for (int k = 0; k < 5; ++k)
          ts.placement.required_hosts.push_back("h" + std::to_string(roll(0, 19)));
      }
      if (t > 0 && roll(0, 2) == 0) ts.after = {"t" + std::to_string(roll(0, t - 1))};
      p.tiers.push_back(ts);
      total += replicas;
    }
    PlacementInput in = inputFor(p, hosts);

    auto check = [&](const PlacementInput& input, const PlacementResult& r) {
      ASSERT_EQ(r.vms.size(), 200u);
      std::map<std::string, const HostView*> by_name;
      for (const auto& h : input.hosts) by_name[h.name] = &h;
      std::map<std::string, Capacity> sum;
      std::set<std::pair<std::string, std::string>> tier_on_host;
      for (const auto& v : r.vms) {
        const TierSpec* t = p.findTier(v.tier);
        ASSERT_NE(t, nullptr);
        if (v.host.empty()) {
          EXPECT_FALSE(v.reason.empty()) << v.vm;
          continue;
        }
        ASSERT_EQ(by_name.count(v.host), 1u) << v.vm;
        EXPECT_TRUE(by_name[v.host]->schedulable) << v.vm << " on " << v.host;
        EXPECT_TRUE(by_name[v.host]->capacity_known) << v.vm << " on " << v.host;
        if (!t->placement.required_hosts.empty()) {
          EXPECT_TRUE(std::count(t->placement.required_hosts.begin(),
                                 t->placement.required_hosts.end(), v.host))
              << v.vm;
        }
        if (t->placement.spread == SpreadMode::kRequired) {
          EXPECT_TRUE(tier_on_host.insert({v.tier, v.host}).second)
              << "two replicas of " << v.tier << " on " << v.host;
        }
        sum[v.host].cpus += t->vcpus;
        sum[v.host].memory_mib += t->memory_mib;
      }
      EXPECT_EQ(r.used.size(), input.hosts.size());
      for (const auto& h : input.hosts) {
        EXPECT_EQ(r.used.at(h.name).cpus, sum[h.name].cpus) << h.name;
        EXPECT_EQ(r.used.at(h.name).memory_mib, sum[h.name].memory_mib) << h.name;
        EXPECT_LE(sum[h.name].cpus, h.capacity.cpus) << h.name;
        EXPECT_LE(sum[h.name].memory_mib, h.capacity.memory_mib) << h.name;
      }
    };

    auto first = place(in);
    check(in, first);
    EXPECT_GT(std::count_if(first.vms.begin(), first.vms.end(),
                            [](const VmPlacement& v) { return !v.host.empty(); }),
              50);

    // Next round: two hosts go away; everything else must stay where it was.
    in.current = asCurrent(first);
    std::set<std::string> lost = {"h" + std::to_string(roll(0, 19)),
                                  "h" + std::to_string(roll(0, 19))};
    for (auto& h : in.hosts)
      if (lost.count(h.name)) h.schedulable = false;
    auto second = place(in);
    check(in, second);
    for (const auto& v : second.vms) {
      std::string before = hostOf(first, v.vm);
      if (!before.empty() && lost.count(before) == 0) {
        EXPECT_EQ(v.host, before) << v.vm;
        EXPECT_FALSE(v.moved) << v.vm;
      }
    }

    // The N+1 report only names hosts that hold VMs, and only desired VMs.
    auto report = checkNPlusOne(in, second);
    EXPECT_EQ(report.safe, report.breaking.empty());
    for (const auto& [h, vms] : report.breaking) {
      EXPECT_FALSE(vms.empty());
      EXPECT_TRUE(std::any_of(second.vms.begin(), second.vms.end(), [&](const VmPlacement& v) {
        return v.host == h;
      })) << h;
      for (const auto& vm : vms) EXPECT_NE(second.find(vm), nullptr) << vm;
    }
  }
}

}  // namespace
}  // namespace tw
