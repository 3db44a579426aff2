// The controller's assignment sets: what each host's agent is to run.
//
// Work follows change (issue #16): a set is built from the VMs that the
// VmsByHost index lists under its host, never by a scan of every VM; a tick
// in which nothing that a set holds changed publishes nothing and costs
// nothing; a change rebuilds only the sets of the hosts it marked
// (assignmentsTouched(vm, moved) marks the hosts the VM was and is listed
// under: controller/assignment_changes.h); the spec digest of each tier and
// the peer list are kept until the policy or a peer's address changes.
#include <cstdio>
#include <cstdlib>
#include <sstream>

#include "controller/controller.h"
#include "tw/hex64.h"
#include "tw/log.h"

namespace tw {

void Controller::assignmentsTouched(bool moved) {
  assignment_changes_.touchAll();
  assignments_cache_.clear();
  if (moved) vms_by_host_.invalidate();
}

void Controller::assignmentsTouched(const std::string& vm, bool moved) {
  assignment_changes_.touchVm(vm, moved);
}

void Controller::hostAssignmentsTouched(const std::string& host) {
  assignment_changes_.touchHost(host);
  assignments_cache_.erase(host);
}

std::vector<std::string> Controller::vmHostsNow(const std::string& vm) const {
  std::vector<std::string> hosts;
  auto v = vms_.find(vm);
  if (v != vms_.end() && !v->second.host.empty()) hosts.push_back(v->second.host);
  auto rt = vm_runtime_.find(vm);
  if (rt != vm_runtime_.end() && !rt->second.migrate_to.empty()) hosts.push_back(rt->second.migrate_to);
  return hosts;
}

const VmsByHost& Controller::vmsByHost() const {
  // The VMs touched since the last look first: their hosts' cached sets go.
  assignment_changes_.sync(
      vms_by_host_, [this](const std::string& vm) { return vmHostsNow(vm); },
      [this](const std::string& host) { assignments_cache_.erase(host); });
  if (vms_by_host_.stale()) vms_by_host_.rebuild(placementNow());
  return vms_by_host_;
}

VmsByHost::Placement Controller::placementNow() const {
  VmsByHost::Placement placement;
  placement.reserve(vms_.size());
  for (const auto& [name, vm] : vms_) placement.emplace_back(name, vm.host);
  for (const auto& [name, rt] : vm_runtime_) {
    if (!rt.migrate_to.empty()) placement.emplace_back(name, rt.migrate_to);
  }
  return placement;
}

std::string Controller::specDigest(const TierSpec& t) const {
  std::ostringstream s;
  s << t.image << '|' << t.vcpus << '|' << t.memory_mib << '|' << toString(t.storage.kind) << '|'
    << t.storage.path;
  for (const auto& p : t.ports) s << '|' << p.name << ':' << p.port << '/' << p.protocol;
  return hex64(fnv1a(s.str()));
}

const std::string& Controller::cachedSpecDigest(const TierSpec& t) const {
  if (spec_digests_of_ != policy_record_.digest) {
    spec_digests_.clear();
    spec_digests_of_ = policy_record_.digest;
  }
  auto it = spec_digests_.find(t.name);
  if (it == spec_digests_.end()) it = spec_digests_.emplace(t.name, specDigest(t)).first;
  return it->second;
}

Assignment Controller::assignmentOf(const VmRecord& vm) const {
  Assignment a;
  a.vm = vm.name;
  a.tier = vm.tier;
  a.epoch = vm.epoch;
  a.policy_version = policy_record_.version;
  if (const TierSpec* t = policy_.findTier(vm.tier)) {
    a.spec_digest = cachedSpecDigest(*t);
    a.image = t->image;
    a.vcpus = t->vcpus;
    a.memory_mib = t->memory_mib;
    a.health = t->health;
    a.restart = t->restart;
    a.ports = t->ports;
    a.storage = t->storage;
    a.backup = t->backup;
    a.after = t->after;
  }
  addBackupFields(a);
  return a;
}

const std::vector<PeerInfo>& Controller::allPeers() const {
  if (peers_of_gen_ != peers_gen_ || peers_of_policy_ != policy_record_.digest) {
    all_peers_.clear();
    all_peers_.reserve(policy_.hosts.size());
    for (const auto& spec : policy_.hosts) {
      auto p = hosts_.find(spec.name);
      all_peers_.push_back(PeerInfo{spec.name, p != hosts_.end() ? p->second.peer_address : ""});
    }
    std::string text;
    for (const PeerInfo& p : all_peers_) text += p.host + '=' + p.address + '\n';
    all_peers_digest_ = hex64(fnv1a(text));
    peers_of_gen_ = peers_gen_;
    peers_of_policy_ = policy_record_.digest;
  }
  return all_peers_;
}

const std::vector<Assignment>& Controller::assignmentsOn(const std::string& host) const {
  // Kept until something this host's set holds changes: a heartbeat that
  // changes nothing gets its answer without building it.
  const VmsByHost& index = vmsByHost();  // drops the entries of hosts touched since
  auto [cached, inserted] = assignments_cache_.try_emplace(host);
  if (inserted) cached->second = buildAssignmentsOn(host, index);
  return cached->second;
}

std::vector<Assignment> Controller::buildAssignmentsOn(const std::string& host,
                                                       const VmsByHost& index) const {
  std::vector<Assignment> out;
  for (const std::string& name : index.of(host)) {  // by name
    auto it = vms_.find(name);
    if (it == vms_.end()) continue;
    const VmRecord& vm = it->second;
    auto rt = vm_runtime_.find(name);
    if (rt == vm_runtime_.end()) continue;
    const std::string& to = rt->second.migrate_to;
    if (vm.host == host && rt->second.released && rt->second.evict_from != host) {
      Assignment a = assignmentOf(vm);
      if (const FloatingAddressSpec* addr = addressHeldFor(vm, host)) a.address = *addr;
      if (!to.empty()) {
        const HostSpec* dest = policy_.findHost(to);
        a.migrate_to_host = to;
        a.migrate_to_uri = dest ? dest->uri : "";
        a.migrate_epoch = rt->second.migrate_epoch;
      }
      out.push_back(std::move(a));
    } else if (!to.empty() && to == host) {
      Assignment a = assignmentOf(vm);
      a.epoch = rt->second.migrate_epoch;
      a.incoming = true;
      out.push_back(std::move(a));
    }
  }
  return out;
}

AssignmentSet Controller::assignmentsFor(const std::string& host,
                                         const std::string& agent_peers_digest) const {
  AssignmentSet set;
  set.host = host;
  set.controller_id = controller_id_;
  set.term = term_guard_.term();
  set.lease_ms = policy_.settings.lease_ms;
  set.heartbeat_interval_ms = policy_.settings.heartbeat_interval_ms;
  set.peer_timeout_ms = peerTimeoutMs();
  const std::vector<PeerInfo>& peers = allPeers();
  set.peers_digest = all_peers_digest_;
  if (!agent_peers_digest.empty() && agent_peers_digest == all_peers_digest_) {
    set.peers_omitted = true;  // the agent holds this list: O(its VMs), not O(cluster)
  } else {
    set.peers.reserve(peers.size());
    for (const auto& p : peers) {
      if (p.host != host) set.peers.push_back(p);
    }
  }
  auto h = hosts_.find(host);
  if (h != hosts_.end()) set.version = h->second.assignments_version;
  set.assignments = assignmentsOn(host);
  for (const TierSpec& t : policy_.tiers) {
    if (t.address.set()) set.addresses.push_back(t.address);
  }
  // ... and the new paths of applies under way (path_probes.h).
  set.checks = probes_.empty() ? hostChecks() : mergeChecks(hostChecks(), probes_.checks(clock_.nowMs()));
  if (h != hosts_.end()) set.host_report_digest = h->second.report.digest;
  return set;
}

namespace {

// What a host's agent acts on in its assignments: a set whose digest did not
// change keeps its version (no new version, nothing sent).
std::string assignmentsDigest(const std::vector<Assignment>& assignments) {
  std::string digest;
  for (const auto& a : assignments)
    digest += a.vm + ":" + std::to_string(a.epoch) + ":" + a.spec_digest + ":" + a.migrate_to_host + ":" +
              std::to_string(a.migrate_epoch) + (a.incoming ? ":in" : "") + ":" + a.address.cidr + ":b" +
              std::to_string(a.backup_request) + ":r" + std::to_string(a.restore_id) + ";";
  return digest;
}

bool checkIncremental() {
  static const bool on = [] {
    const char* v = std::getenv("TW_CHECK_INCREMENTAL");
    return v != nullptr && std::string(v) == "1";
  }();
  return on;
}

}  // namespace

void Controller::publishAssignments() {
  // Sets a step withheld (controller/term_guard.h) go out with the next
  // step that may act.
  if (term_guard_.hasWithheld() && assignment_listener_ && term_guard_.mayAct("assignment sets")) {
    for (const auto& [name, version] : term_guard_.takeWithheld()) assignment_listener_(name, version);
  }
  if (!assignment_changes_.any()) {  // nothing a set holds changed
    if (checkIncremental()) checkPublished();  // ... nor changed unnamed
    return;
  }
  vmsByHost();  // marks the hosts of the VMs touched
  std::vector<std::pair<std::string, int64_t>> changed_hosts;
  // Only the hosts marked (all of them after a policy or a recovery), in
  // name order as hosts_: the versions come out as a walk of every host
  // would give them.
  auto look = [&](const std::string& name, HostRuntime& h) {
    ++assignment_set_builds_;
    std::string digest = assignmentsDigest(assignmentsOn(name));
    const bool changed = h.assignments_version == 0 || digest != h.assignments_digest;
    if (changed) {
      h.assignments_digest = std::move(digest);
      h.assignments_version = nextVersion();
      changed_hosts.emplace_back(name, h.assignments_version);
    }
  };
  if (assignment_changes_.all()) {
    for (auto& [name, h] : hosts_) look(name, h);
  } else {
    for (const std::string& name : assignment_changes_.hosts()) {
      auto h = hosts_.find(name);
      if (h != hosts_.end()) look(name, h->second);
    }
  }
  assignment_changes_.clear();
  if (checkIncremental()) checkPublished();
  noteAddressReleaseVersions();  // ... and the first without an address given back
  // The set published now is the first without the VMs being evicted.
  // Only the VMs being evicted (evicting_ lists every VM with an evict_from).
  for (const std::string& vm_name : evicting_) {
    auto found = vm_runtime_.find(vm_name);
    if (found == vm_runtime_.end()) continue;
    VmRuntime& rt = found->second;
    if (rt.evict_from.empty() || rt.evict_version != 0) continue;
    auto h = hosts_.find(rt.evict_from);
    if (h != hosts_.end()) rt.evict_version = h->second.assignments_version;
  }
  if (store_.wantsPublishedSets() && !changed_hosts.empty() && !view_only_) {
    // For followers (docs/ha.md): one write for the tick's changed sets,
    // without the peer list (O(cluster) per host; an agent keeps its own).
    std::map<std::string, Store::PublishedSet> sets;
    for (const auto& [name, version] : changed_hosts) {
      Store::PublishedSet& p = sets[name];
      p.set_json = Json(assignmentsFor(name, all_peers_digest_)).dump();
      p.digest = hosts_.at(name).assignments_digest;
    }
    Status s = store_.publishSets(sets);
    if (!s.isOk()) log::warn("followers keep older assignment sets: {}", s.toString());
  }
  if (assignment_listener_) {
    if (!term_guard_.mayAct("assignment sets")) {
      for (const auto& [name, version] : changed_hosts) term_guard_.withhold(name, version);
      return;
    }
    for (const auto& [name, version] : changed_hosts) assignment_listener_(name, version);
  }
}

void Controller::checkPublished() const {
  auto fail = [](const std::string& what) {
    log::error("TW_CHECK_INCREMENTAL: {}", what);
    std::fprintf(stderr, "TW_CHECK_INCREMENTAL: %s\n", what.c_str());
    std::abort();
  };
  VmsByHost full;
  full.rebuild(placementNow());
  if (!(full == vms_by_host_)) fail("the VmsByHost index differs from a rebuild (a VM moved unnamed)");
  for (const auto& [name, h] : hosts_) {
    std::vector<Assignment> fresh = buildAssignmentsOn(name, full);
    std::string digest = assignmentsDigest(fresh);
    if (h.assignments_version == 0) fail("host '" + name + "' was never published (not marked when added)");
    if (digest != h.assignments_digest)
      fail("host '" + name + "': its set changed but it was not marked (published '" + h.assignments_digest +
           "', now '" + digest + "')");
    auto cached = assignments_cache_.find(name);
    if (cached != assignments_cache_.end() && assignmentsDigest(cached->second) != digest)
      fail("host '" + name + "': its cached assignments differ from a rebuild");
  }
}

}  // namespace tw
