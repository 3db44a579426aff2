// Placement: see tw/placement.h for the rules. Pure functions, no I/O, no clock.
//
// Two phases: first every desired VM that may stay where it runs is kept
// (rule 1), then the rest are placed tier by tier (rules 2-4). Keeping first
// means a new replica never takes the room a running one already occupies.
// The phases are steps of placement_engine.h, shared with PlacementIndex
// (tw/placement_index.h), which runs them on what changed only.
#include "tw/placement.h"

#include "placement_engine.h"
#include "tw/capacity_index.h"

#include <algorithm>
#include <cstddef>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <unordered_set>
#include <utility>

namespace tw {

namespace placement_detail {

namespace {

bool contains(const std::vector<std::string>& list, const std::string& s) {
  return std::find(list.begin(), list.end(), s) != list.end();
}

bool allowedByRequired(const TierSpec& t, const std::string& host) {
  return t.placement.required_hosts.empty() || contains(t.placement.required_hosts, host);
}

std::string cpus(int n) { return std::to_string(n) + (n == 1 ? " vCPU" : " vCPUs"); }
std::string mib(int64_t n) { return std::to_string(n) + " MiB"; }

std::string joined(const std::vector<std::string>& items, const char* sep) {
  std::string out;
  for (const auto& item : items) {
    if (!out.empty()) out += sep;
    out += item;
  }
  return out;
}

// Rule 3: may `slot` go to `h` now?
bool isCandidate(const Slot& slot, const HostLoad& h) {
  const TierSpec& t = *slot.tier;
  if (!h.view->schedulable || !h.view->accepts_new || !h.view->capacity_known) return false;
  if (!allowedByRequired(t, h.view->name)) return false;
  if (slot.avoids(h.view->name)) return false;
  if (t.placement.spread == SpreadMode::kRequired && h.replicasOf(t.name) > 0) return false;
  return h.fits(t);
}

// Rule 4 as a sort key: smaller is better.
using RankKey = std::tuple<int, size_t, int, int64_t, std::string>;

RankKey rankOf(const TierSpec& t, const HostLoad& h, bool spares_stand_in) {
  const auto& preferred = t.placement.preferred_hosts;
  auto it = std::find(preferred.begin(), preferred.end(), h.view->name);
  size_t preferred_rank = it == preferred.end() ? std::numeric_limits<size_t>::max()
                                                : static_cast<size_t>(it - preferred.begin());
  int same_tier = t.placement.spread == SpreadMode::kPreferred ? h.replicasOf(t.name) : 0;
  const int spare = h.view->role == HostRole::kSpare ? 1 : 0;
  if (spares_stand_in) return {same_tier, preferred_rank, spare, -h.freeMemory(), h.view->name};
  return {spare, preferred_rank, same_tier, -h.freeMemory(), h.view->name};
}

// Why no host was a candidate for `slot`. Hosts are named in name order.
std::string pendingReason(const Slot& slot, const HostMap& hosts) {
  const TierSpec& t = *slot.tier;
  const auto& required = t.placement.required_hosts;
  if (!required.empty()) {
    bool any_schedulable = false;
    for (const auto& name : required) {
      auto it = hosts.find(name);
      if (it != hosts.end() && it->second.view->schedulable) any_schedulable = true;
    }
    if (!any_schedulable)
      return "required_hosts [" + joined(required, ", ") + "] are not schedulable";
  }
  if (hosts.empty()) return "no hosts are known";

  // At most kNamedHosts hosts are named, the rest counted: at 1,000 hosts a
  // reason naming each of them, for each of 20,000 pending VMs, was most of
  // an apply's time and memory (issue #16).
  constexpr size_t kNamedHosts = 8;
  std::vector<std::string> notes;
  size_t unnamed = 0;
  int eligible = 0;        // schedulable, accepting, allowed, not avoided, capacity known
  int spread_blocked = 0;  // of those, blocked only by spread: required
  for (const auto& [name, h] : hosts) {
    if (!allowedByRequired(t, name)) continue;
    if (notes.size() >= kNamedHosts) {
      ++unnamed;
      if (h.view->schedulable && h.view->accepts_new && h.view->capacity_known && !slot.avoids(name)) {
        ++eligible;
        if (t.placement.spread == SpreadMode::kRequired && h.replicasOf(t.name) > 0) ++spread_blocked;
      }
      continue;
    }
    std::string note;
    if (!h.view->schedulable) {
      note = "not schedulable";
    } else if (!h.view->accepts_new) {
      note = "accepts no new VMs";
    } else if (slot.avoids(name)) {
      note = "avoided for " + slot.name;
    } else if (!h.view->capacity_known) {
      note = "capacity unknown";
    } else {
      ++eligible;
      if (t.placement.spread == SpreadMode::kRequired && h.replicasOf(t.name) > 0) {
        ++spread_blocked;
        note = "runs " + joined(h.replicas.at(t.name), ", ");
      } else {
        bool cpu_short = h.used.cpus + t.vcpus > h.view->capacity.cpus;
        bool mem_short = h.used.memory_mib + t.memory_mib > h.view->capacity.memory_mib;
        int free_cpus = std::max(0, h.freeCpus());
        int64_t free_mem = std::max<int64_t>(0, h.freeMemory());
        if (cpu_short && mem_short) {
          note = cpus(free_cpus) + " and " + mib(free_mem) + " free";
        } else if (cpu_short) {
          note = cpus(free_cpus) + " free";
        } else {
          note = mib(free_mem) + " free";
        }
      }
    }
    notes.push_back(name + ": " + note);
  }
  for (const auto& name : required)
    if (hosts.count(name) == 0) notes.push_back(name + ": unknown host");
  if (unnamed > 0) notes.push_back("and " + std::to_string(unnamed) + " more host" + (unnamed == 1 ? "" : "s"));

  if (eligible > 0 && spread_blocked == eligible) {
    return "spread: required and every allowed host already runs a replica of '" + t.name + "'";
  }
  return "no schedulable host has " + cpus(t.vcpus) + " and " + mib(t.memory_mib) + " free (" +
         joined(notes, ", ") + ")";
}

}  // namespace

HostMap hostLoadsOf(const std::vector<HostView>& views) {
  HostMap hosts;
  for (const auto& view : views) {
    // A duplicate name keeps the first view.
    if (hosts.count(view.name) == 0) hosts[view.name].view = &view;
  }
  return hosts;
}

std::vector<Slot> slotsOf(const Policy* policy) {
  std::vector<Slot> slots;
  if (policy == nullptr) return slots;
  for (const TierSpec* t : policy->tiersInOrder()) {
    for (int i = 1; i <= t->replicas; ++i) slots.push_back({t, i, t->name + "-" + std::to_string(i)});
  }
  return slots;
}

bool mayKeep(const Slot& s, const HostLoad& h) {
  if (!h.view->schedulable || !allowedByRequired(*s.tier, h.view->name) || s.avoids(h.view->name)) {
    return false;
  }
  // Slots run in ordinal order within a tier, so the lower ordinal keeps the host.
  return !(s.tier->placement.spread == SpreadMode::kRequired && h.replicasOf(s.tier->name) > 0);
}

bool sparesStandIn(const std::vector<HostView>& views) {
  for (const HostView& v : views) {
    if (v.role == HostRole::kActive && v.capacity_known && (!v.schedulable || !v.accepts_new)) return true;
  }
  return false;
}

void placeRest(const Policy* policy, HostMap& hosts, bool spares_stand_in,
               const std::vector<std::pair<const Slot*, VmPlacement*>>& todo) {
  // A VM without preferred or required hosts and without an avoid set asks
  // the capacity index (the same order as rankOf(), without ranking every
  // host); others rank every host.
  std::map<std::string, int> tier_index;
  if (policy != nullptr) {
    for (const auto& t : policy->tiers) tier_index.emplace(t.name, static_cast<int>(tier_index.size()));
  }
  std::optional<CapacityIndex> index;
  std::vector<HostLoad*> by_index;
  auto buildIndex = [&] {
    index.emplace(static_cast<int>(tier_index.size()), spares_stand_in);
    for (auto& [name, h] : hosts) {
      const HostView& v = *h.view;
      h.index = index->addHost(v.schedulable && v.accepts_new && v.capacity_known,
                               v.role == HostRole::kSpare, v.capacity, h.used);
      by_index.push_back(&h);
      for (const auto& [tier, vms] : h.replicas) {
        auto ti = tier_index.find(tier);
        if (ti != tier_index.end()) index->setReplicas(h.index, ti->second, static_cast<int>(vms.size()));
      }
    }
  };
  // The last pending reason of a VM without an avoid set, valid until the
  // next VM is placed: the same for every such VM of its tier (at 1,000 hosts
  // and 20,000 pending VMs, each reason walks every host).
  const TierSpec* reason_tier = nullptr;
  std::string reason;
  for (const auto& [slot, placement] : todo) {
    const Slot& s = *slot;
    VmPlacement& out = *placement;
    const TierSpec& t = *s.tier;
    out.vm = s.name;
    out.tier = t.name;
    out.ordinal = s.ordinal;
    out.host.clear();
    out.reason.clear();
    const bool avoided = s.hasAvoid();
    auto ti = tier_index.find(t.name);
    HostLoad* best = nullptr;
    if (!avoided && ti != tier_index.end() && t.placement.preferred_hosts.empty() &&
        t.placement.required_hosts.empty()) {
      if (!index) buildIndex();
      int b = index->best(ti->second, Capacity{t.vcpus, t.memory_mib}, t.placement.spread);
      if (b >= 0) best = by_index[static_cast<size_t>(b)];
    } else {
      RankKey best_key;
      for (auto& [name, h] : hosts) {
        if (!isCandidate(s, h)) continue;
        RankKey key = rankOf(t, h, spares_stand_in);
        if (best == nullptr || key < best_key) {
          best = &h;
          best_key = std::move(key);
        }
      }
    }
    if (best == nullptr) {
      if (avoided) {
        out.reason = pendingReason(s, hosts);
      } else {
        if (reason_tier != &t) {
          reason = pendingReason(s, hosts);
          reason_tier = &t;
        }
        out.reason = reason;
      }
    } else {
      best->add(t, s.name);
      if (index && ti != tier_index.end()) index->add(best->index, ti->second, Capacity{t.vcpus, t.memory_mib});
      reason_tier = nullptr;
      out.host = best->view->name;
    }
    out.moved = s.current == nullptr || *s.current != out.host;
  }
}

}  // namespace placement_detail

using namespace placement_detail;

const VmPlacement* PlacementResult::find(const std::string& vm) const {
  for (const auto& p : vms)
    if (p.vm == vm) return &p;
  return nullptr;
}

bool PlacementResult::allPlaced() const {
  return std::all_of(vms.begin(), vms.end(), [](const VmPlacement& p) { return !p.host.empty(); });
}

std::vector<std::string> vmNamesOf(const TierSpec& tier) {
  std::vector<std::string> names;
  for (int i = 1; i <= tier.replicas; ++i) names.push_back(tier.name + "-" + std::to_string(i));
  return names;
}

PlacementResult place(const PlacementInput& input) {
  PlacementResult result;
  HostMap hosts = hostLoadsOf(input.hosts);
  std::vector<Slot> slots = slotsOf(input.policy);  // tier order, then ordinal
  std::unordered_set<std::string_view> desired;     // views into `slots`
  desired.reserve(slots.size());
  for (auto& s : slots) {
    desired.insert(s.name);
    auto cur = input.current.find(s.name);
    if (cur != input.current.end()) s.current = &cur->second;
    auto avoid = input.avoid.find(s.name);
    if (avoid != input.avoid.end()) s.avoid = &avoid->second;
  }
  for (const auto& [vm, host] : input.current) {
    // Being deleted: it holds no capacity in `used` (its tier may be gone, so
    // its size may be unknown too).
    if (desired.count(vm) == 0) result.removed.push_back(vm);
  }

  // Rule 1: keep what may stay. Kept VMs count even when they overcommit a host
  // whose capacity shrank: what runs is not moved for that.
  std::vector<VmPlacement> out(slots.size());
  std::vector<std::pair<const Slot*, VmPlacement*>> rest;
  for (size_t i = 0; i < slots.size(); ++i) {
    const Slot& s = slots[i];
    out[i].vm = s.name;
    out[i].tier = s.tier->name;
    out[i].ordinal = s.ordinal;
    auto it = s.current == nullptr ? hosts.end() : hosts.find(*s.current);
    if (it != hosts.end() && mayKeep(s, it->second)) {
      it->second.add(*s.tier, s.name);
      out[i].host = it->second.view->name;
    } else {
      rest.emplace_back(&s, &out[i]);
    }
  }

  // Rules 2-4: place the rest.
  placeRest(input.policy, hosts, sparesStandIn(input.hosts), rest);

  result.vms = std::move(out);
  for (const auto& [name, h] : hosts) result.used[name] = h.used;
  return result;
}

std::string NPlusOneReport::summary() const {
  if (safe) return "N+1 safe: any single host can fail";
  std::vector<std::string> parts;
  for (const auto& [host, vms] : breaking) {
    parts.push_back("losing host '" + host + "' leaves " + joined(vms, ", ") + " unplaced");
  }
  return "not N+1 safe: " + joined(parts, "; ");
}

NPlusOneReport checkNPlusOne(const PlacementInput& input, const PlacementResult& placed) {
  NPlusOneReport report;
  std::set<std::string> loaded;
  for (const auto& p : placed.vms)
    if (!p.host.empty()) loaded.insert(p.host);

  for (const auto& lost : loaded) {
    PlacementInput sim;
    sim.policy = input.policy;
    sim.avoid = input.avoid;
    sim.hosts = input.hosts;
    for (auto& h : sim.hosts)
      if (h.name == lost) h.schedulable = false;
    for (const auto& p : placed.vms)
      if (!p.host.empty() && p.host != lost) sim.current[p.vm] = p.host;

    PlacementResult after = place(sim);
    std::vector<const VmPlacement*> pending;
    for (const auto& p : after.vms)
      if (p.host.empty()) pending.push_back(&p);
    if (pending.empty()) continue;
    // Named by tier, then ordinal: "db-2, web-1, web-10".
    std::sort(pending.begin(), pending.end(), [](const VmPlacement* a, const VmPlacement* b) {
      return std::tie(a->tier, a->ordinal) < std::tie(b->tier, b->ordinal);
    });
    auto& names = report.breaking[lost];
    for (const auto* p : pending) names.push_back(p->vm);
    report.safe = false;
  }
  return report;
}

}  // namespace tw
