// PlacementIndex: placement that follows change (issue #16). Between two
// placement runs it keeps what place() would rebuild: each desired VM's
// input (current host, avoid set), whether rule 1 keeps it, and each host's
// used capacity and per-tier replicas of the VMs kept there. A run then
// decides only the VMs that rule 1 does not keep, against that state, so one
// failed host costs O(hosts + its VMs), not O(VMs).
//
// Its decisions are place()'s, by construction: both run the same steps
// (common/src/placement_engine.h), and rule 1 is judged per host, so judging
// again only the hosts whose schedulability or VMs changed gives what
// place() gets by judging all. differenceFrom() compares a run with place()
// (the controller's check mode, docs/placement.md).
//
// What it is told:
//   - placeAll(): a full run (place()), after which the index holds the
//     input's state. Needed first, and whenever the policy changes (its
//     key); the VMs' sizes, tiers and rules come from the policy.
//   - touch(vm): the VM's current host or avoid set (error) may have
//     changed since the run that last read it. The caller touches every VM
//     it changes outside placement; the VMs a run decides (not kept) are
//     touched by the run itself (its caller may move them).
//   - placeChanged(): the hosts as they are now (any field may change; the
//     names must not), and a reader for the touched VMs' inputs.
//
// Not thread-safe; one owner (the controller's loop).
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "tw/model.h"
#include "tw/placement.h"

namespace tw {

class PlacementIndex {
 public:
  // One VM's placement input, as PlacementInput holds it: its current host
  // ("" = none) and the hosts it must avoid.
  struct VmInput {
    std::string host;
    std::set<std::string> avoid;
  };
  using ReadVm = std::function<VmInput(const std::string& vm)>;

  PlacementIndex();
  ~PlacementIndex();
  PlacementIndex(const PlacementIndex&) = delete;
  PlacementIndex& operator=(const PlacementIndex&) = delete;

  // The next run must be a full one.
  void invalidate() { built_ = false; }

  // place(input), and the index rebuilt from `input` (O(VMs)). REQUIRES:
  // input.policy non-null. The policy is copied: the index does not point
  // into the caller's.
  PlacementResult placeAll(const PlacementInput& input, const std::string& policy_key);

  // `vm`'s input may have changed. A name the policy does not desire makes
  // the next run a full one (placeChanged() says nullopt).
  void touch(const std::string& vm);

  // Rules 2-4 for the VMs that rule 1 does not keep, with `hosts` as they
  // are now and the touched VMs read again through `read`. The result holds
  // only those VMs (PlacementResult::partial), each as place() decides it;
  // `removed` is empty, `used` is every host's. nullopt, and nothing
  // changed, when a full run is needed: none was made yet, or not for
  // `policy_key` (any string that changes with the policy, e.g. its digest),
  // or invalidate() was called, or the host names differ from the full
  // run's, or a VM the policy does not desire was touched.
  std::optional<PlacementResult> placeChanged(const std::string& policy_key,
                                              const std::vector<HostView>& hosts, const ReadVm& read);

  // "" when `partial` (the last placeChanged()'s result, with this index as
  // it left it) and `full` (place() on the same input) decide alike; else the
  // first difference, e.g. "vm 'web-3': host 'h2' here, 'h4' by place()".
  std::string differenceFrom(const PlacementResult& partial, const PlacementResult& full) const;

  // Inspection (tests): the VMs rule 1 did not keep in the last run, in
  // slot order, and a host's used capacity and replicas of `tier` kept there.
  std::vector<std::string> unkept() const;
  Capacity keptUsed(const std::string& host) const;
  int keptReplicas(const std::string& host, const std::string& tier) const;

 private:
  struct State;  // placement_index.cc: the slots, hosts and their loads
  // Judges rule 1 again for every VM whose current host is `host`.
  void rekeep(const std::string& host);

  bool built_ = false;
  std::string key_;
  std::unique_ptr<State> state_;
};

}  // namespace tw
