#include "tw/capacity_index.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "tw/model.h"
#include "tw/placement.h"

namespace tw {
namespace {

// The order of tw/placement.h rule 4 (no preferred hosts), host by host: the
// reference the index must agree with.
int bruteBest(const CapacityIndex& index, const std::vector<bool>& eligible, const std::vector<bool>& spare,
              const std::vector<Capacity>& capacity, int tier, const Capacity& size, SpreadMode spread,
              bool stand_in) {
  int best = -1;
  std::tuple<int, int, int64_t, int> best_key;
  for (int h = 0; h < index.hostCount(); ++h) {
    if (!eligible[static_cast<size_t>(h)]) continue;
    const Capacity& used = index.used(h);
    const Capacity& cap = capacity[static_cast<size_t>(h)];
    if (used.cpus + size.cpus > cap.cpus || used.memory_mib + size.memory_mib > cap.memory_mib) continue;
    const int replicas = index.replicas(h, tier);
    if (spread == SpreadMode::kRequired && replicas > 0) continue;
    const int same = spread == SpreadMode::kPreferred ? replicas : 0;
    const int role = spare[static_cast<size_t>(h)] ? 1 : 0;
    const int64_t neg_free = -(cap.memory_mib - used.memory_mib);
    auto key = stand_in ? std::make_tuple(same, role, neg_free, h) : std::make_tuple(role, same, neg_free, h);
    if (best < 0 || key < best_key) {
      best = h;
      best_key = key;
    }
  }
  return best;
}

// Pins: the index picks the same host as ranking every host would, for
// every spread mode, with and without spares standing in, as VMs are added
// (its buckets follow every add, including adds of tiers not queried yet).
TEST(CapacityIndexTest, AgreesWithRankingEveryHost) {
  std::mt19937 rng(16);
  for (int round = 0; round < 40; ++round) {
    const bool stand_in = round % 2 == 1;
    const int tiers = 3;
    CapacityIndex index(tiers, stand_in);
    std::vector<bool> eligible, spare;
    std::vector<Capacity> capacity;
    const int hosts = 5 + static_cast<int>(rng() % 20);
    for (int h = 0; h < hosts; ++h) {
      eligible.push_back(rng() % 5 != 0);
      spare.push_back(rng() % 4 == 0);
      capacity.push_back({static_cast<int>(2 + rng() % 8), static_cast<int64_t>(1024 * (1 + rng() % 8))});
      Capacity used{static_cast<int>(rng() % 2), static_cast<int64_t>(256 * (rng() % 3))};
      index.addHost(eligible.back(), spare.back(), capacity.back(), used);
      for (int t = 0; t < tiers; ++t) index.setReplicas(h, t, static_cast<int>(rng() % 2));
    }
    const SpreadMode spreads[] = {SpreadMode::kPreferred, SpreadMode::kRequired, SpreadMode::kNone};
    for (int step = 0; step < 60; ++step) {
      const int t = static_cast<int>(rng() % tiers);
      const Capacity size{static_cast<int>(1 + rng() % 2), static_cast<int64_t>(256 * (1 + rng() % 4))};
      const int expected = bruteBest(index, eligible, spare, capacity, t, size, spreads[t], stand_in);
      const int got = index.best(t, size, spreads[t]);
      ASSERT_EQ(got, expected) << "round " << round << " step " << step;
      // Place it there, or (sometimes) somewhere else, as placement's scan
      // path for VMs with preferences may do.
      int on = got >= 0 ? got : static_cast<int>(rng() % hosts);
      if (rng() % 5 == 0) on = static_cast<int>(rng() % hosts);
      index.add(on, t, size);
    }
  }
}

// Pins: used capacity and replica counts follow add(); a host that is not
// eligible (draining, offline, capacity unknown) is never chosen, and a
// full index answers -1.
TEST(CapacityIndexTest, TracksUsageAndSkipsIneligibleHosts) {
  CapacityIndex index(1, false);
  index.addHost(false, false, {64, 65536}, {});  // e.g. draining: the most room
  index.addHost(true, false, {2, 1024}, {});
  EXPECT_EQ(index.best(0, {1, 512}, SpreadMode::kNone), 1);
  index.add(1, 0, {1, 512});
  EXPECT_EQ(index.used(1).cpus, 1);
  EXPECT_EQ(index.used(1).memory_mib, 512);
  EXPECT_EQ(index.replicas(1, 0), 1);
  EXPECT_EQ(index.best(0, {1, 512}, SpreadMode::kNone), 1);
  index.add(1, 0, {1, 512});
  EXPECT_EQ(index.best(0, {1, 512}, SpreadMode::kNone), -1);
}

// Pins: place() answers the same through the index as through ranking every
// host. A tier whose required_hosts name every host allows the same hosts
// but is placed by the scan; both policies must place every VM alike.
TEST(CapacityIndexTest, PlaceAgreesWithScan) {
  std::mt19937 rng(1616);
  for (int round = 0; round < 30; ++round) {
    Policy indexed, scanned;
    std::vector<HostView> hosts;
    std::vector<std::string> names;
    const int n = 3 + static_cast<int>(rng() % 12);
    for (int h = 0; h < n; ++h) {
      HostView v;
      v.name = "h" + std::to_string(h);
      v.role = rng() % 4 == 0 ? HostRole::kSpare : HostRole::kActive;
      v.capacity = {static_cast<int>(4 + rng() % 8), static_cast<int64_t>(1024 * (2 + rng() % 6))};
      v.schedulable = rng() % 8 != 0;
      v.accepts_new = rng() % 8 != 0;
      hosts.push_back(v);
      names.push_back(v.name);
    }
    const SpreadMode spreads[] = {SpreadMode::kPreferred, SpreadMode::kRequired, SpreadMode::kNone};
    for (int t = 0; t < 3; ++t) {
      TierSpec spec;
      spec.name = "t" + std::to_string(t);
      spec.image = "x.qcow2";
      spec.replicas = 1 + static_cast<int>(rng() % 10);
      spec.vcpus = 1 + static_cast<int>(rng() % 2);
      spec.memory_mib = 256 * (1 + static_cast<int>(rng() % 4));
      spec.placement.spread = spreads[rng() % 3];
      indexed.tiers.push_back(spec);
      spec.placement.required_hosts = names;
      scanned.tiers.push_back(spec);
    }
    PlacementInput a;
    a.policy = &indexed;
    a.hosts = hosts;
    // Some VMs run already (rule 1), on random hosts.
    for (const auto& t : indexed.tiers)
      for (const auto& vm : vmNamesOf(t))
        if (rng() % 3 == 0) a.current[vm] = names[rng() % names.size()];
    PlacementInput b = a;
    b.policy = &scanned;
    PlacementResult ra = place(a);
    PlacementResult rb = place(b);
    ASSERT_EQ(ra.vms.size(), rb.vms.size());
    for (size_t i = 0; i < ra.vms.size(); ++i) {
      EXPECT_EQ(ra.vms[i].host, rb.vms[i].host) << "round " << round << " vm " << ra.vms[i].vm;
    }
  }
}

}  // namespace
}  // namespace tw
