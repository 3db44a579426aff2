// PlacementIndex: see tw/placement_index.h.
//
// Rule 1 (keep a VM where it runs) depends only on the VM, its current host
// and the VMs kept on that host before it in slot order. So the index keeps,
// per host, the VMs whose current host it is (kept or not), and judges rule 1
// again, whole, for a host whose schedulability changed or whose VMs' inputs
// changed: rekeep(). What rule 1 does not keep goes to rules 2-4
// (placeRest()), in slot order, on the hosts as rule 1 left them: place()'s
// second phase, with the same input.
#include "tw/placement_index.h"

#include <unordered_map>
#include <utility>

#include "placement_engine.h"

namespace tw {

using placement_detail::HostLoad;
using placement_detail::HostMap;
using placement_detail::Slot;

struct PlacementIndex::State {
  struct Vm {
    std::string current;  // "" = none
    std::set<std::string> avoid;
    bool kept = false;
  };

  Policy policy;                 // slots point into it
  std::vector<HostView> views;   // hosts point into it; never resized
  HostMap hosts;
  std::vector<Slot> slots;       // slot order; point into vms (never resized)
  std::vector<Vm> vms;           // by slot
  std::unordered_map<std::string, int> slot_of;  // vm name -> slot
  std::map<std::string, std::set<int>> here;     // current host -> its VMs' slots
  std::set<int> unkept;   // slots rule 1 does not keep (no current host included)
  std::set<int> touched;  // slots whose input is to be read again
  bool stale = false;     // an undesired VM was touched: a full run is needed

  void setCurrent(int i, std::string host) {
    Vm& vm = vms[static_cast<size_t>(i)];
    vm.current = std::move(host);
    slots[static_cast<size_t>(i)].current = vm.current.empty() ? nullptr : &vm.current;
  }
};

PlacementIndex::PlacementIndex() = default;
PlacementIndex::~PlacementIndex() = default;

PlacementResult PlacementIndex::placeAll(const PlacementInput& input, const std::string& policy_key) {
  PlacementResult result = place(input);

  auto st = std::make_unique<State>();
  st->policy = *input.policy;
  st->views = input.hosts;
  st->hosts = placement_detail::hostLoadsOf(st->views);
  st->slots = placement_detail::slotsOf(&st->policy);
  st->vms.resize(st->slots.size());
  st->slot_of.reserve(st->slots.size());
  for (size_t i = 0; i < st->slots.size(); ++i) {
    const int slot = static_cast<int>(i);
    Slot& s = st->slots[i];
    st->slot_of.emplace(s.name, slot);
    s.avoid = &st->vms[i].avoid;
    auto avoid = input.avoid.find(s.name);
    if (avoid != input.avoid.end()) st->vms[i].avoid = avoid->second;
    auto cur = input.current.find(s.name);
    if (cur != input.current.end()) st->setCurrent(slot, cur->second);
    st->unkept.insert(slot);  // until rekeep() keeps it
    if (!st->vms[i].current.empty()) st->here[st->vms[i].current].insert(slot);
  }
  state_ = std::move(st);
  built_ = true;
  key_ = policy_key;
  std::vector<std::string> hosts;
  for (const auto& [host, _] : state_->here) hosts.push_back(host);
  for (const auto& host : hosts) rekeep(host);
  // The caller may move what was not kept: read it again next run.
  state_->touched = state_->unkept;
  return result;
}

void PlacementIndex::touch(const std::string& vm) {
  if (!built_) return;
  auto it = state_->slot_of.find(vm);
  if (it == state_->slot_of.end()) {
    state_->stale = true;
    return;
  }
  state_->touched.insert(it->second);
}

void PlacementIndex::rekeep(const std::string& host) {
  State& st = *state_;
  auto h = st.hosts.find(host);
  HostLoad* load = h == st.hosts.end() ? nullptr : &h->second;  // null: an unknown host keeps nothing
  if (load != nullptr) {
    load->used = Capacity{};
    load->replicas.clear();
  }
  auto vms = st.here.find(host);
  if (vms == st.here.end()) return;
  for (int i : vms->second) {  // slot order, as place()'s first phase
    const Slot& s = st.slots[static_cast<size_t>(i)];
    const bool keep = load != nullptr && placement_detail::mayKeep(s, *load);
    if (keep) {
      load->add(*s.tier, s.name);
      st.unkept.erase(i);
    } else {
      st.unkept.insert(i);
    }
    st.vms[static_cast<size_t>(i)].kept = keep;
  }
}

std::optional<PlacementResult> PlacementIndex::placeChanged(const std::string& policy_key,
                                                            const std::vector<HostView>& hosts,
                                                            const ReadVm& read) {
  if (!built_ || policy_key != key_ || state_->stale) return std::nullopt;
  State& st = *state_;
  if (hosts.size() != st.views.size()) return std::nullopt;
  for (size_t k = 0; k < hosts.size(); ++k) {
    if (hosts[k].name != st.views[k].name) return std::nullopt;
  }

  // What rule 1 must judge again: hosts whose schedulability changed, and
  // the old and new hosts of VMs whose input changed.
  std::set<std::string> rekeep_hosts;
  for (size_t k = 0; k < hosts.size(); ++k) {
    if (hosts[k].schedulable != st.views[k].schedulable) rekeep_hosts.insert(hosts[k].name);
    st.views[k] = hosts[k];  // in place: the HostMap points into views
  }
  for (int i : st.touched) {
    VmInput in = read(st.slots[static_cast<size_t>(i)].name);
    State::Vm& vm = st.vms[static_cast<size_t>(i)];
    if (in.host != vm.current) {
      if (!vm.current.empty()) {
        auto here = st.here.find(vm.current);
        here->second.erase(i);
        if (here->second.empty()) st.here.erase(here);
        rekeep_hosts.insert(vm.current);
      }
      st.setCurrent(i, std::move(in.host));
      vm.kept = false;
      st.unkept.insert(i);
      if (!vm.current.empty()) {
        st.here[vm.current].insert(i);
        rekeep_hosts.insert(vm.current);
      }
    }
    if (in.avoid != vm.avoid) {
      vm.avoid = std::move(in.avoid);
      if (!vm.current.empty()) rekeep_hosts.insert(vm.current);
    }
  }
  st.touched.clear();
  for (const auto& host : rekeep_hosts) rekeep(host);

  // Rules 2-4 for what rule 1 did not keep, in slot order.
  PlacementResult result;
  result.partial = true;
  result.vms.resize(st.unkept.size());
  std::vector<std::pair<const Slot*, VmPlacement*>> todo;
  todo.reserve(st.unkept.size());
  size_t k = 0;
  for (int i : st.unkept) todo.emplace_back(&st.slots[static_cast<size_t>(i)], &result.vms[k++]);
  placement_detail::placeRest(&st.policy, st.hosts, placement_detail::sparesStandIn(st.views), todo);
  for (const auto& [name, h] : st.hosts) result.used[name] = h.used;

  // The hosts hold the kept VMs only again; the VMs just decided are read
  // again next run (the caller may move them).
  std::set<std::string> placed_on;
  for (const auto& p : result.vms)
    if (!p.host.empty()) placed_on.insert(p.host);
  for (const auto& host : placed_on) rekeep(host);
  st.touched = st.unkept;
  return result;
}

std::string PlacementIndex::differenceFrom(const PlacementResult& partial, const PlacementResult& full) const {
  if (!built_) return "no full run was made";
  const State& st = *state_;
  auto quoted = [](const std::string& s) { return s.empty() ? std::string("none") : "'" + s + "'"; };
  if (!full.removed.empty()) return "place() removes vm '" + full.removed.front() + "'";
  if (full.vms.size() != st.slots.size()) {
    return "place() decides " + std::to_string(full.vms.size()) + " VMs, the index knows " +
           std::to_string(st.slots.size());
  }
  size_t k = 0;
  for (const VmPlacement& f : full.vms) {
    VmPlacement mine;
    if (k < partial.vms.size() && partial.vms[k].vm == f.vm) {
      mine = partial.vms[k++];
    } else {
      // Not decided: kept where it is.
      auto slot = st.slot_of.find(f.vm);
      if (slot == st.slot_of.end()) return "vm '" + f.vm + "' is unknown to the index";
      const State::Vm& vm = st.vms[static_cast<size_t>(slot->second)];
      mine.vm = f.vm;
      mine.tier = f.tier;
      mine.ordinal = f.ordinal;
      mine.host = vm.current;
      if (!vm.kept) return "vm '" + f.vm + "' is neither kept nor decided by the index";
    }
    const std::string what = "vm '" + f.vm + "': ";
    if (mine.host != f.host) return what + "host " + quoted(mine.host) + " here, " + quoted(f.host) + " by place()";
    if (mine.moved != f.moved) return what + "moved " + std::to_string(mine.moved) + " here, not by place()";
    if (mine.reason != f.reason) return what + "reason '" + mine.reason + "' here, '" + f.reason + "' by place()";
    if (mine.tier != f.tier || mine.ordinal != f.ordinal) return what + "tier or ordinal differs";
  }
  if (k != partial.vms.size()) return "vm '" + partial.vms[k].vm + "' decided here is not where place() has it";
  for (const auto& [host, used] : full.used) {
    auto it = partial.used.find(host);
    if (it == partial.used.end() || it->second.cpus != used.cpus || it->second.memory_mib != used.memory_mib) {
      return "host '" + host + "': used capacity differs from place()'s";
    }
  }
  if (partial.used.size() != full.used.size()) return "the hosts differ from place()'s";
  return "";
}

std::vector<std::string> PlacementIndex::unkept() const {
  std::vector<std::string> out;
  if (!built_) return out;
  for (int i : state_->unkept) out.push_back(state_->slots[static_cast<size_t>(i)].name);
  return out;
}

Capacity PlacementIndex::keptUsed(const std::string& host) const {
  if (!built_) return Capacity{};
  auto it = state_->hosts.find(host);
  return it == state_->hosts.end() ? Capacity{} : it->second.used;
}

int PlacementIndex::keptReplicas(const std::string& host, const std::string& tier) const {
  if (!built_) return 0;
  auto it = state_->hosts.find(host);
  return it == state_->hosts.end() ? 0 : it->second.replicasOf(tier);
}

}  // namespace tw
