// CapacityIndex: see tw/capacity_index.h.
#include "tw/capacity_index.h"

#include <algorithm>

namespace tw {

CapacityIndex::CapacityIndex(int tier_count, bool spares_stand_in)
    : spares_stand_in_(spares_stand_in),
      replicas_(static_cast<size_t>(std::max(0, tier_count))),
      tiers_(static_cast<size_t>(std::max(0, tier_count))) {}

int CapacityIndex::addHost(bool eligible, bool spare, const Capacity& capacity, const Capacity& used) {
  hosts_.push_back(Host{eligible, spare, capacity, used});
  for (auto& per_host : replicas_) per_host.push_back(0);
  return static_cast<int>(hosts_.size()) - 1;
}

void CapacityIndex::setReplicas(int host, int tier, int replicas) {
  replicas_[static_cast<size_t>(tier)][static_cast<size_t>(host)] = replicas;
}

int CapacityIndex::replicas(int host, int tier) const {
  return replicas_[static_cast<size_t>(tier)][static_cast<size_t>(host)];
}

int CapacityIndex::countKey(SpreadMode spread, int replicas) const {
  switch (spread) {
    case SpreadMode::kPreferred:
      return replicas;
    case SpreadMode::kRequired:
      return replicas > 0 ? 1 : 0;  // 1: no candidate
    case SpreadMode::kNone:
      return 0;
  }
  return 0;
}

CapacityIndex::Key CapacityIndex::keyOf(const TierBuckets& t, int host, int tier) const {
  const int role = hosts_[static_cast<size_t>(host)].spare ? 1 : 0;
  const int count = countKey(t.spread, replicas(host, tier));
  return spares_stand_in_ ? Key{count, role} : Key{role, count};
}

CapacityIndex::Entry CapacityIndex::entryOf(int host) const {
  const Host& h = hosts_[static_cast<size_t>(host)];
  return {-(h.capacity.memory_mib - h.used.memory_mib), host};
}

void CapacityIndex::build(int tier, SpreadMode spread) {
  TierBuckets& t = tiers_[static_cast<size_t>(tier)];
  t.built = true;
  t.spread = spread;
  for (int h = 0; h < hostCount(); ++h) {
    if (!hosts_[static_cast<size_t>(h)].eligible) continue;
    t.buckets[keyOf(t, h, tier)].insert(entryOf(h));
  }
  built_tiers_.push_back(tier);
}

void CapacityIndex::add(int host, int tier, const Capacity& size) {
  Host& h = hosts_[static_cast<size_t>(host)];
  // Out of every built tier's buckets under the old figures, back in under the new.
  if (h.eligible) {
    const Entry old_entry = entryOf(host);
    for (int b : built_tiers_) {
      TierBuckets& t = tiers_[static_cast<size_t>(b)];
      auto bucket = t.buckets.find(keyOf(t, host, b));
      if (bucket == t.buckets.end()) continue;
      bucket->second.erase(old_entry);
      if (bucket->second.empty()) t.buckets.erase(bucket);
    }
  }
  h.used.cpus += size.cpus;
  h.used.memory_mib += size.memory_mib;
  ++replicas_[static_cast<size_t>(tier)][static_cast<size_t>(host)];
  if (h.eligible) {
    const Entry new_entry = entryOf(host);
    for (int b : built_tiers_) {
      TierBuckets& t = tiers_[static_cast<size_t>(b)];
      t.buckets[keyOf(t, host, b)].insert(new_entry);
    }
  }
}

int CapacityIndex::best(int tier, const Capacity& size, SpreadMode spread) {
  TierBuckets& t = tiers_[static_cast<size_t>(tier)];
  if (!t.built) build(tier, spread);
  for (const auto& [key, entries] : t.buckets) {
    const int count = spares_stand_in_ ? key.first : key.second;
    if (t.spread == SpreadMode::kRequired && count > 0) continue;
    for (const auto& [neg_free, host] : entries) {
      if (-neg_free < size.memory_mib) break;  // the rest of the bucket has less
      const Host& h = hosts_[static_cast<size_t>(host)];
      if (h.used.cpus + size.cpus <= h.capacity.cpus) return host;
    }
  }
  return -1;
}

}  // namespace tw
