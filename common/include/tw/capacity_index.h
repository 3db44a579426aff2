// CapacityIndex: the candidate hosts of one placement run, ordered the way
// placement ranks them, so that placing a VM looks at the few hosts in front
// instead of ranking every host (issue #16: 20,000 pending VMs x 1,000 hosts
// ranked one by one did not finish a tick in seconds).
//
// It answers rule 4 of tw/placement.h for a VM that has no preferred_hosts,
// no required_hosts and no avoid set (placement ranks those by a scan):
//   normal:          active before spare, fewer replicas of the tier, most
//                    free memory, host index;
//   spares stand in: fewer replicas of the tier, active before spare, most
//                    free memory, host index.
// Fewer replicas counts only under spread: preferred; under spread: required
// a host with a replica is no candidate; under spread: none it does not count.
//
// Hosts are numbered 0..N-1 by addHost(), in name order (the index is the
// last tie-break). Tiers are numbered 0..T-1 by the caller. Per tier, the
// eligible hosts sit in buckets by (role, replica count), each ordered by
// free memory; a tier's buckets are built on its first query and kept up to
// date by add() afterwards (O(built tiers x log N) per add).
//
// Not thread-safe; one placement run owns one index.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <utility>
#include <vector>

#include "tw/model.h"

namespace tw {

class CapacityIndex {
 public:
  CapacityIndex(int tier_count, bool spares_stand_in);

  // Adds the next host (index = the number added before). `eligible`: it may
  // take new VMs (schedulable, accepting new VMs, capacity known). `used`:
  // what it holds already. REQUIRES: no query has been made yet.
  int addHost(bool eligible, bool spare, const Capacity& capacity, const Capacity& used);
  // Sets the replicas of `tier` that `host` holds already. REQUIRES: no query yet.
  void setReplicas(int host, int tier, int replicas);

  // A VM of `tier` with `size` was placed on `host`: its used capacity and
  // replica count grow.
  void add(int host, int tier, const Capacity& size);

  // The best eligible host for a VM of `tier` with `size` under `spread`
  // (the order above), or -1 when no eligible host has room. A tier must be
  // queried with one spread mode throughout.
  int best(int tier, const Capacity& size, SpreadMode spread);

  const Capacity& used(int host) const { return hosts_[static_cast<size_t>(host)].used; }
  int replicas(int host, int tier) const;
  int hostCount() const { return static_cast<int>(hosts_.size()); }

 private:
  struct Host {
    bool eligible = false;
    bool spare = false;
    Capacity capacity;
    Capacity used;
  };
  // (free memory, negated, so most free first; host index)
  using Entry = std::pair<int64_t, int>;
  // Bucket key: (role, count) normally, (count, role) while spares stand in.
  using Key = std::pair<int, int>;
  struct TierBuckets {
    bool built = false;
    SpreadMode spread = SpreadMode::kPreferred;
    std::map<Key, std::set<Entry>> buckets;
  };

  int countKey(SpreadMode spread, int replicas) const;
  Key keyOf(const TierBuckets& t, int host, int tier) const;
  Entry entryOf(int host) const;
  void build(int tier, SpreadMode spread);

  const bool spares_stand_in_;
  std::vector<Host> hosts_;
  std::vector<std::vector<int>> replicas_;  // [tier][host]
  std::vector<TierBuckets> tiers_;
  std::vector<int> built_tiers_;
};

}  // namespace tw
