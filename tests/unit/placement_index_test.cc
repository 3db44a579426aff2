#include "tw/placement_index.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "placement_fixture.h"
#include "tw/model.h"
#include "tw/placement.h"

namespace tw {
namespace {

// Every Controller of this test binary checks its incremental placement
// against place() (Controller::setPlacementCheck()): set before main(),
// so before any test builds one. TW_PLACEMENT_CHECK=0 still turns it off.
[[maybe_unused]] const bool kPlacementCheck = setenv("TW_PLACEMENT_CHECK", "1", /*overwrite=*/0) == 0;

using testing_placement::dump;
using testing_placement::host;
using testing_placement::tier;

// What the controller does around the index: it holds each VM's current
// host and avoid set, applies each result (a placed VM moves, a pending one
// loses its host) and touches what it changes by itself.
struct Cluster {
  Policy policy;
  std::vector<HostView> hosts;
  std::map<std::string, std::string> current;
  std::map<std::string, std::set<std::string>> avoid;
  PlacementIndex index;
  std::string key = "policy-1";

  PlacementInput input() const {
    PlacementInput in;
    in.policy = &policy;
    in.hosts = hosts;
    in.current = current;
    in.avoid = avoid;
    return in;
  }
  PlacementIndex::VmInput read(const std::string& vm) const {
    PlacementIndex::VmInput in;
    auto c = current.find(vm);
    if (c != current.end()) in.host = c->second;
    auto a = avoid.find(vm);
    if (a != avoid.end()) in.avoid = a->second;
    return in;
  }
  void apply(const PlacementResult& r) {
    for (const auto& p : r.vms) {
      if (p.host.empty()) {
        current.erase(p.vm);
      } else {
        current[p.vm] = p.host;
      }
    }
  }
  PlacementResult full() {
    PlacementResult r = index.placeAll(input(), key);
    apply(r);
    return r;
  }
  // An incremental run; fails the test when it cannot run or differs from
  // place() on the same input (compared both ways: the index's own check
  // and the whole decision, VM by VM, built here).
  PlacementResult step() {
    const PlacementResult reference = place(input());
    auto r = index.placeChanged(key, hosts, [this](const std::string& vm) { return read(vm); });
    EXPECT_TRUE(r.has_value());
    if (!r) return {};
    EXPECT_TRUE(r->partial);
    EXPECT_EQ(index.differenceFrom(*r, reference), "");
    EXPECT_EQ(whole(*r), dump(reference));
    apply(*r);
    return *r;
  }
  // A partial result with every VM that is not in it kept where it is.
  std::string whole(const PlacementResult& r) const {
    std::map<std::string, const VmPlacement*> decided;
    for (const auto& p : r.vms) decided[p.vm] = &p;
    PlacementResult out;
    for (const TierSpec* t : policy.tiersInOrder()) {
      for (int i = 1; i <= t->replicas; ++i) {
        const std::string vm = t->name + "-" + std::to_string(i);
        auto d = decided.find(vm);
        if (d != decided.end()) {
          out.vms.push_back(*d->second);
          continue;
        }
        VmPlacement kept;
        kept.vm = vm;
        kept.tier = t->name;
        kept.ordinal = i;
        auto c = current.find(vm);
        kept.host = c == current.end() ? "" : c->second;
        out.vms.push_back(kept);
      }
    }
    out.used = r.used;
    return dump(out);
  }
  HostView& hostNamed(const std::string& name) {
    for (auto& h : hosts)
      if (h.name == name) return h;
    ADD_FAILURE() << "no host " << name;
    return hosts.front();
  }
  // Three hosts of 8 vCPUs and 4 GiB and `t`: a full run, then a step
  // (the VMs it placed read again, kept).
  void startOnThreeHosts(const TierSpec& t) {
    policy.tiers = {t};
    hosts = {host("h1", 8, 4096), host("h2", 8, 4096), host("h3", 8, 4096)};
    full();
    step();
  }
  std::vector<std::string> vmsOn(const std::string& h) const {
    std::vector<std::string> out;
    for (const auto& [vm, on] : current)
      if (on == h) out.push_back(vm);
    return out;
  }
};

// Pins: after a full run nothing changed decides nothing: the next run's
// result is empty, and the index's kept capacity is what place() counts.
TEST(PlacementIndexTest, NothingChangedDecidesNothing) {
  Cluster c;
  c.policy.tiers = {tier("db", 2, 1, 512, SpreadMode::kRequired), tier("web", 4, 1, 256)};
  c.hosts = {host("h1", 4, 2048), host("h2", 4, 2048), host("h3", 4, 2048)};
  const PlacementResult first = c.full();
  ASSERT_TRUE(first.allPlaced());
  EXPECT_FALSE(first.partial);
  EXPECT_TRUE(c.step().vms.empty());  // the full run's VMs, read again: kept
  EXPECT_TRUE(c.step().vms.empty());
  EXPECT_TRUE(c.index.unkept().empty());
  for (const auto& [h, used] : first.used) {
    EXPECT_EQ(c.index.keptUsed(h).cpus, used.cpus) << h;
    EXPECT_EQ(c.index.keptUsed(h).memory_mib, used.memory_mib) << h;
  }
}

// Pins: a host that is no longer schedulable has its VMs (and only those)
// decided again; the capacity they held is freed and the hosts they go to
// count them after the caller moved them.
TEST(PlacementIndexTest, LostHostMovesOnlyItsVmsAndCapacityFollows) {
  Cluster c;
  c.startOnThreeHosts(tier("web", 6, 1, 256));
  const std::vector<std::string> on_h2 = c.vmsOn("h2");
  ASSERT_EQ(on_h2.size(), 2u);
  c.hostNamed("h2").schedulable = false;
  const PlacementResult r = c.step();
  ASSERT_EQ(r.vms.size(), 2u);
  for (const auto& p : r.vms) {
    EXPECT_TRUE(p.moved) << p.vm;
    EXPECT_NE(p.host, "h2") << p.vm;
  }
  EXPECT_TRUE(c.step().vms.empty());
  EXPECT_EQ(c.index.keptUsed("h2").memory_mib, 0);
  EXPECT_EQ(c.index.keptUsed("h1").memory_mib + c.index.keptUsed("h3").memory_mib, 6 * 256);
  EXPECT_EQ(c.index.keptReplicas("h1", "web") + c.index.keptReplicas("h3", "web"), 6);
}

// Pins: a VM moved by the caller (a migration) and touched leaves its old
// host's capacity and joins the new one's; one the caller forgets to touch
// is not looked at (the controller touches every such change).
TEST(PlacementIndexTest, TouchedMoveUpdatesCapacity) {
  Cluster c;
  c.policy.tiers = {tier("web", 2, 1, 256, SpreadMode::kNone)};
  c.hosts = {host("h1", 8, 4096), host("h2", 8, 1024)};
  c.full();
  c.step();
  ASSERT_EQ(c.vmsOn("h1").size(), 2u);
  c.current["web-1"] = "h2";
  c.index.touch("web-1");
  EXPECT_TRUE(c.step().vms.empty());  // kept where it now is
  EXPECT_EQ(c.index.keptUsed("h1").memory_mib, 256);
  EXPECT_EQ(c.index.keptUsed("h2").memory_mib, 256);
  EXPECT_EQ(c.index.keptReplicas("h2", "web"), 1);
}

// Pins: a VM that loses its host (pending) or gains an avoid set for its
// host is decided again; the error case (every host avoided) stays pending
// with place()'s reason, run after run.
TEST(PlacementIndexTest, AvoidAndErrorAreDecidedAgain) {
  Cluster c;
  c.startOnThreeHosts(tier("web", 3, 1, 256));
  const std::string was = c.current.at("web-2");
  c.avoid["web-2"] = {was};
  c.index.touch("web-2");
  PlacementResult r = c.step();
  ASSERT_EQ(r.vms.size(), 1u);
  EXPECT_NE(r.vms[0].host, was);
  c.avoid["web-3"] = {"h1", "h2", "h3"};
  c.current.erase("web-3");
  c.index.touch("web-3");
  r = c.step();
  ASSERT_EQ(r.vms.size(), 1u);
  EXPECT_EQ(r.vms[0].vm, "web-3");
  EXPECT_TRUE(r.vms[0].host.empty());
  EXPECT_NE(r.vms[0].reason.find("avoided for web-3"), std::string::npos) << r.vms[0].reason;
  EXPECT_EQ(c.step().vms.size(), 1u);  // pending: decided again each run
  c.avoid.erase("web-3");
  c.index.touch("web-3");
  r = c.step();
  ASSERT_EQ(r.vms.size(), 1u);
  EXPECT_FALSE(r.vms[0].host.empty());
}

// Pins: while an active host is lost, its VMs go to the spare (spares stand
// in), and when it rejoins nothing moves back.
TEST(PlacementIndexTest, SparesStandInForALostActiveHost) {
  Cluster c;
  c.policy.tiers = {tier("web", 4, 1, 256, SpreadMode::kPreferred)};
  c.hosts = {host("h1", 8, 4096), host("h2", 8, 4096), host("s1", 8, 4096, HostRole::kSpare)};
  c.full();
  c.step();
  EXPECT_TRUE(c.vmsOn("s1").empty());
  c.hostNamed("h1").schedulable = false;
  const PlacementResult r = c.step();
  ASSERT_EQ(r.vms.size(), 2u);
  for (const auto& p : r.vms) EXPECT_EQ(p.host, "s1") << p.vm;
  c.hostNamed("h1").schedulable = true;
  EXPECT_TRUE(c.step().vms.empty());
  EXPECT_EQ(c.index.keptReplicas("s1", "web"), 2);
}

// Pins: spread: required with two replicas on one host (a migration put
// them there): the lower ordinal keeps it, the other is placed elsewhere.
TEST(PlacementIndexTest, SpreadRequiredConflictLowerOrdinalKeeps) {
  Cluster c;
  c.startOnThreeHosts(tier("db", 2, 1, 256, SpreadMode::kRequired));
  const std::string db1 = c.current.at("db-1");
  c.current["db-2"] = db1;
  c.index.touch("db-2");
  const PlacementResult r = c.step();
  ASSERT_EQ(r.vms.size(), 1u);
  EXPECT_EQ(r.vms[0].vm, "db-2");
  EXPECT_NE(r.vms[0].host, db1);
  EXPECT_EQ(c.index.keptReplicas(db1, "db"), 1);
}

// Pins: the index refuses (nullopt, a full run is needed) for another
// policy, after invalidate(), for other host names, and after a touch of a
// VM the policy does not desire.
TEST(PlacementIndexTest, RefusesWhatNeedsAFullRun) {
  Cluster c;
  c.policy.tiers = {tier("web", 2, 1, 256)};
  c.hosts = {host("h1", 8, 4096), host("h2", 8, 4096)};
  auto read = [&c](const std::string& vm) { return c.read(vm); };
  EXPECT_FALSE(c.index.placeChanged(c.key, c.hosts, read).has_value());  // no full run yet
  c.full();
  EXPECT_FALSE(c.index.placeChanged("policy-2", c.hosts, read).has_value());
  std::vector<HostView> renamed = c.hosts;
  renamed[1].name = "h9";
  EXPECT_FALSE(c.index.placeChanged(c.key, renamed, read).has_value());
  EXPECT_TRUE(c.index.placeChanged(c.key, c.hosts, read).has_value());
  c.index.touch("web-7");
  EXPECT_FALSE(c.index.placeChanged(c.key, c.hosts, read).has_value());
  c.full();
  c.index.invalidate();
  EXPECT_FALSE(c.index.placeChanged(c.key, c.hosts, read).has_value());
}

// Pins: differenceFrom() names a decision that is not place()'s.
TEST(PlacementIndexTest, DifferenceFromNamesAWrongDecision) {
  Cluster c;
  c.policy.tiers = {tier("web", 2, 1, 256)};
  c.hosts = {host("h1", 8, 4096), host("h2", 8, 4096)};
  c.full();
  c.hostNamed("h1").schedulable = false;
  const PlacementResult reference = place(c.input());
  auto r = c.index.placeChanged(c.key, c.hosts, [&c](const std::string& vm) { return c.read(vm); });
  ASSERT_TRUE(r.has_value());
  ASSERT_FALSE(r->vms.empty());
  EXPECT_EQ(c.index.differenceFrom(*r, reference), "");
  PlacementResult wrong = *r;
  wrong.vms[0].host = "h1";
  EXPECT_NE(c.index.differenceFrom(wrong, reference).find("vm '" + wrong.vms[0].vm + "': host 'h1' here"),
            std::string::npos)
      << c.index.differenceFrom(wrong, reference);
}

// Pins: on random clusters and random changes (hosts lost, back, draining,
// resized, capacity unknown; VMs migrated, avoided, in error and reset) every
// incremental run decides what place() decides on the same input.
TEST(PlacementIndexTest, RandomChangesMatchPlace) {
  for (uint32_t seed = 1; seed <= 60; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::mt19937 rng(seed);
    auto pick = [&rng](int n) { return static_cast<int>(rng() % static_cast<uint32_t>(n)); };
    Cluster c;
    const int n_hosts = 3 + pick(8);
    for (int i = 0; i < n_hosts; ++i) {
      c.hosts.push_back(host("h" + std::to_string(i), 2 + pick(8), 512 * (1 + pick(8)),
                             pick(4) == 0 ? HostRole::kSpare : HostRole::kActive));
    }
    const SpreadMode spreads[] = {SpreadMode::kRequired, SpreadMode::kPreferred, SpreadMode::kNone};
    const int n_tiers = 1 + pick(4);
    for (int t = 0; t < n_tiers; ++t) {
      TierSpec spec = tier("t" + std::to_string(t), 1 + pick(8), 1 + pick(2), 128 * (1 + pick(4)), spreads[pick(3)]);
      if (pick(4) == 0) spec.placement.preferred_hosts = {"h" + std::to_string(pick(n_hosts))};
      if (pick(5) == 0) spec.placement.required_hosts = {"h0", "h" + std::to_string(pick(n_hosts))};
      if (t > 0 && pick(2) == 0) spec.after = {"t0"};
      c.policy.tiers.push_back(spec);
    }
    c.full();
    for (int round = 0; round < 40; ++round) {
      const int changes = 1 + pick(3);
      for (int k = 0; k < changes; ++k) {
        HostView& h = c.hosts[static_cast<size_t>(pick(n_hosts))];
        std::vector<std::string> vms;
        for (const auto& t : c.policy.tiers)
          for (const auto& vm : vmNamesOf(t)) vms.push_back(vm);
        const std::string& vm = vms[static_cast<size_t>(pick(static_cast<int>(vms.size())))];
        switch (pick(9)) {
          case 0: h.schedulable = !h.schedulable; break;
          case 1: h.accepts_new = !h.accepts_new; break;
          case 2: h.capacity.memory_mib = 512 * (1 + pick(8)); break;
          case 3: h.capacity_known = !h.capacity_known; break;
          case 4:  // a migration (or an adoption) the caller made
            c.current[vm] = c.hosts[static_cast<size_t>(pick(n_hosts))].name;
            c.index.touch(vm);
            break;
          case 5:
            c.avoid[vm].insert(c.hosts[static_cast<size_t>(pick(n_hosts))].name);
            c.index.touch(vm);
            break;
          case 6:  // error: no host, every host avoided
            c.current.erase(vm);
            for (const auto& hv : c.hosts) c.avoid[vm].insert(hv.name);
            c.index.touch(vm);
            break;
          case 7:  // reset
            c.avoid.erase(vm);
            c.index.touch(vm);
            break;
          default:
            break;  // nothing: a run with no change
        }
      }
      c.step();
      if (::testing::Test::HasFailure()) return;
    }
  }
}

}  // namespace
}  // namespace tw
