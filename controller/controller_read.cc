// The read side: the JSON of the API (cluster, hosts, tiers, endpoints, VMs, events, incidents) and /metrics.
#include "controller/controller.h"
#include "controller/controller_util.h"

#include <algorithm>
#include <sstream>

#include "tw/policy.h"
#include "tw/text.h"

namespace tw {

using controller_detail::vmStateOf;

Json Controller::incidentsJson() const {
  Json list = Json::array();
  auto stored = store_.incidents(100);
  if (!stored.isOk()) return Json{{"incidents", list}, {"error", stored.status().message()}};
  for (const auto& inc : *stored) {
    Json steps = Json::array();
    for (const auto& st : inc.steps)
      steps.push_back(Json{{"step", st.step}, {"t_ms", st.t_ms}, {"detail", st.detail}});
    list.push_back(Json{{"id", inc.id},
                        {"subject", inc.subject},
                        {"kind", inc.kind},
                        {"summary", inc.summary},
                        {"opened_ms", inc.opened_ms},
                        {"closed_ms", inc.closed_ms},
                        {"open", inc.closed_ms == 0},
                        {"steps", steps}});
  }
  return Json{{"incidents", list}};
}

Json Controller::clusterJson() const {
  Json hosts_by_state = Json::object();
  for (const auto& [_, h] : hosts_) {
    std::string k = toString(h.rec.state);
    hosts_by_state[k] = hosts_by_state.value(k, 0) + 1;
  }
  Json vms_by_state = Json::object();
  for (const auto& [_, v] : vms_) {
    std::string k = toString(v.state);
    vms_by_state[k] = vms_by_state.value(k, 0) + 1;
  }
  PlacementInput input = placementInput(policy_);
  PlacementResult placed = place(input);
  NPlusOneReport n1 = checkNPlusOne(input, placed);
  Json breaking = Json::object();
  for (const auto& [h, list] : n1.breaking) breaking[h] = list;
  return Json{{"time_ms", clock_.nowMs()},
              {"policy_version", policy_record_.version},
              {"policy_digest", policy_record_.digest},
              {"settings", policy_.settings},
              {"hosts_by_state", hosts_by_state},
              {"vms_by_state", vms_by_state},
              {"n_plus_one", Json{{"safe", n1.safe}, {"summary", n1.summary()}, {"breaking", breaking}}}};
}

Result<Json> Controller::hostsJson(const PageRequest& page) const {
  Json list = Json::array();
  size_t first = 0;
  if (!page.after.empty()) {
    while (first < policy_.hosts.size() && policy_.hosts[first].name != page.after) ++first;
    if (first == policy_.hosts.size()) {
      return invalidArgument("after: no host named " + quoteForMessage(page.after) +
                             " is declared (pages follow the policy's host order)");
    }
    ++first;
  }
  std::string next;
  for (size_t i = first; i < policy_.hosts.size(); ++i) {
    const HostSpec& spec = policy_.hosts[i];
    if (page.limit > 0 && static_cast<int>(list.size()) == page.limit) {
      next = policy_.hosts[i - 1].name;
      break;
    }
    auto it = hosts_.find(spec.name);
    if (it == hosts_.end()) continue;
    const auto& h = it->second;
    Capacity used;
    Json names = Json::array();
    for (const auto& name : vmsByHost().of(spec.name)) {  // by name
      auto v = vms_.find(name);
      if (v == vms_.end() || v->second.host != spec.name) continue;
      const VmRecord& vm = v->second;
      names.push_back(name);
      if (const TierSpec* t = policy_.findTier(vm.tier)) {
        used.cpus += t->vcpus;
        used.memory_mib += t->memory_mib;
      }
    }
    Capacity cap{spec.cpus > 0 ? spec.cpus : h.rec.capacity.cpus,
                 spec.memory_mib > 0 ? spec.memory_mib : h.rec.capacity.memory_mib};
    list.push_back(Json{{"name", spec.name},
                        {"role", toString(spec.role)},
                        {"uri", spec.uri},
                        {"fence", toString(spec.fence)},
                        {"fence_agent", spec.fence_agent},  // its name only: the command is the controller's
                        {"state", toString(h.rec.state)},
                        {"state_since_ms", h.rec.state_since_ms},
                        {"reason", h.rec.reason},
                        {"capacity", cap},
                        {"used", used},
                        {"vms", names},
                        {"service_address", h.service_address},
                        {"last_heartbeat_ms", h.seen ? h.last_heartbeat_ms : 0},
                        {"peers_unreachable", h.peers_unreachable},
                        {"self_fence_reason", h.self_fence_reason},
                        {"self_fenced_ms", h.self_fenced_ms}});
  }
  Json out{{"hosts", list}};
  if (!next.empty()) out["next"] = next;
  return out;
}

Json Controller::tiersJson() const {
  Json list = Json::array();
  int order = 0;
  for (const TierSpec* t : policy_.tiersInOrder()) {
    int running = 0, healthy = 0;
    for (const auto& [_, vm] : vms_) {
      if (vm.tier != t->name || vm.state != VmState::kRunning) continue;
      ++running;
      if (vm.health == Health::kHealthy) ++healthy;
    }
    Json j = *t;
    j["order"] = ++order;
    j["running"] = running;
    j["healthy"] = healthy;
    j["is_healthy"] = tierHealthy(t->name);
    if (t->backup.enabled()) j["backup_warnings"] = backupWarnings(*t);
    // What the hosts reported against the tier (controller_site.cc).
    if (auto w = siteWarnings(t->name); !w.empty()) j["site_warnings"] = w;
    // The floating address (docs/policy.md): "ip" and who holds it now.
    if (t->address.set()) j["address"]["holder"] = addressHolder(t->name);
    list.push_back(j);
  }
  return Json{{"tiers", list}};
}

Result<Json> Controller::endpointsJson(const std::string& tier_name) const {
  const TierSpec* tier = policy_.findTier(tier_name);
  if (!tier) return notFound("no tier named '" + tier_name + "'");
  std::vector<ServicePort> ports = tier->ports;
  if (ports.empty() && tier->health.kind != HealthKind::kNone && tier->health.port > 0) {
    ports.push_back(ServicePort{"health", tier->health.port, "tcp"});
  }
  Json list = Json::array();
  for (const auto& [name, vm] : vms_) {  // by name
    if (vm.tier != tier_name || vm.host.empty()) continue;
    // Fencing, crashed, restarting...: not a place to send clients, whatever
    // the last heartbeat said. A migrating VM still serves from its source.
    if (vm.state != VmState::kRunning && vm.state != VmState::kMigrating) continue;
    auto h = hosts_.find(vm.host);
    if (h == hosts_.end()) continue;
    auto d = h->second.domains.find(name);
    if (d == h->second.domains.end()) continue;
    const DomainReport& report = d->second;
    if (report.epoch != vm.epoch || vmStateOf(report.state) != VmState::kRunning) continue;
    std::vector<Json> entries;
    for (const auto& p : ports) {
      auto fwd = report.ports.find(p.port);
      if (fwd == report.ports.end() || fwd->second <= 0) continue;
      entries.push_back(Json{{"vm", name},
                             {"host", h->second.service_address},
                             {"port", fwd->second},
                             {"hypervisor", vm.host},
                             {"name", p.name},
                             {"guest_port", p.port},
                             {"healthy", report.health == Health::kHealthy}});
    }
    std::sort(entries.begin(), entries.end(), [](const Json& a, const Json& b) {
      return a["port"].get<int>() < b["port"].get<int>();
    });
    for (auto& e : entries) list.push_back(std::move(e));
  }
  return Json{{"tier", tier_name}, {"endpoints", list}};
}

Json Controller::vmsJson(const PageRequest& page) const {
  Json list = Json::array();
  if (!page.names.empty()) {
    for (const std::string& name : page.names) {
      auto it = vms_.find(name);
      if (it != vms_.end()) list.push_back(it->second);
    }
    return Json{{"vms", list}};
  }
  auto it = page.after.empty() ? vms_.begin() : vms_.upper_bound(page.after);
  std::string next;
  for (; it != vms_.end(); ++it) {
    if (page.limit > 0 && static_cast<int>(list.size()) == page.limit) {
      next = std::prev(it)->first;
      break;
    }
    list.push_back(it->second);
  }
  Json out{{"vms", list}};
  if (!next.empty()) out["next"] = next;
  return out;
}

Result<Json> Controller::vmJson(const std::string& name) {
  auto it = vms_.find(name);
  if (it == vms_.end()) return notFound("no vm named '" + name + "'");
  Json j = it->second;
  // The VM's latest events: scan the log backwards in pages.
  auto last = store_.lastEventId();  // ids go on growing when old events are pruned
  Json events = Json::array();
  if (last.isOk()) {
    auto all = store_.eventsSince(std::max<int64_t>(0, *last - 2000), 2000);
    if (all.isOk()) {
      std::vector<EventRecord> mine;
      for (const auto& e : *all)
        if (e.subject == "vm/" + name) mine.push_back(e);
      size_t from = mine.size() > 50 ? mine.size() - 50 : 0;
      for (size_t i = from; i < mine.size(); ++i) events.push_back(mine[i]);
    }
  }
  j["events"] = events;
  if (const TierSpec* t = policy_.findTier(it->second.tier)) j["spec"] = *t;
  return j;
}

Result<Json> Controller::eventsTailJson(int n) {
  auto last = store_.lastEventId();
  if (!last.isOk()) return last.status();
  auto j = eventsJson(std::max<int64_t>(0, *last - n), n);
  if (j.isOk()) (*j)["last_id"] = std::max<int64_t>((*j)["last_id"].get<int64_t>(), *last);
  return j;
}

Result<Json> Controller::eventsJson(int64_t since, int limit) {
  auto events = store_.eventsSince(since, limit);
  if (!events.isOk()) return events.status();
  int64_t last = since;
  Json list = Json::array();
  for (const auto& e : *events) {
    list.push_back(e);
    last = e.id;
  }
  return Json{{"events", list}, {"last_id", last}};
}

std::string Controller::metricsText() {
  std::ostringstream out;
  out << "# HELP tierwarden_hosts Hosts by state.\n# TYPE tierwarden_hosts gauge\n";
  std::map<std::string, int> by_state;
  for (const auto& [_, h] : hosts_) by_state[toString(h.rec.state)]++;
  for (HostState s : {HostState::kUnknown, HostState::kOnline, HostState::kSuspect,
                      HostState::kOffline, HostState::kFenced, HostState::kMaintenance}) {
    out << "tierwarden_hosts{state=\"" << toString(s) << "\"} " << by_state[toString(s)] << "\n";
  }
  out << "# HELP tierwarden_vms VMs by state and tier.\n# TYPE tierwarden_vms gauge\n";
  std::map<std::pair<std::string, std::string>, int> vms;
  for (const auto& [_, v] : vms_) vms[{toString(v.state), v.tier}]++;
  for (const auto& [k, n] : vms) {
    out << "tierwarden_vms{state=\"" << k.first << "\",tier=\"" << k.second << "\"} " << n << "\n";
  }
  out << "# HELP tierwarden_reconcile_duration_seconds Time spent in one reconcile pass.\n"
      << "# TYPE tierwarden_reconcile_duration_seconds summary\n"
      << "tierwarden_reconcile_duration_seconds_sum " << reconcile_seconds_sum_ << "\n"
      << "tierwarden_reconcile_duration_seconds_count " << reconcile_count_ << "\n"
      << "# HELP tierwarden_assignment_set_builds_total Hosts' assignment sets built to look for a change.\n"
      << "# TYPE tierwarden_assignment_set_builds_total counter\n"
      << "tierwarden_assignment_set_builds_total " << assignment_set_builds_ << "\n";
  auto count = store_.lastEventId();  // a counter: pruning does not lower it
  out << "# HELP tierwarden_events_total Events recorded.\n# TYPE tierwarden_events_total counter\n"
      << "tierwarden_events_total " << (count.isOk() ? *count : 0) << "\n";
  out << "# HELP tierwarden_events_pruned_total Events removed by the event log retention.\n"
      << "# TYPE tierwarden_events_pruned_total counter\n"
      << "tierwarden_events_pruned_total " << retention_.prunedTotal() << "\n";
  auto bytes = store_.eventLogBytes();
  if (bytes.isOk() && *bytes >= 0) {
    out << "# HELP tierwarden_event_log_bytes What the event log takes on disk.\n"
        << "# TYPE tierwarden_event_log_bytes gauge\n"
        << "tierwarden_event_log_bytes " << *bytes << "\n";
  }
  return out.str();
}

}  // namespace tw
