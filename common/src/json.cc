#include "tw/json.h"

#include <charconv>
#include <vector>

#include "tw/text.h"

namespace tw {

namespace {

// Reads j[key] into out when present (absent keys keep the default).
template <typename T>
void opt(const Json& j, const char* key, T& out) {
  auto it = j.find(key);
  if (it != j.end() && !it->is_null()) it->get_to(out);
}

template <typename E, typename Parse>
void optEnum(const Json& j, const char* key, E& out, Parse parse) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return;
  auto v = parse(it->template get<std::string>());
  if (!v) throw nlohmann::json::type_error::create(302, std::string("bad value for '") + key + "'", &j);
  out = *v;
}

std::optional<HealthKind> healthKindFrom(const std::string& s) {
  if (s == "none") return HealthKind::kNone;
  if (s == "tcp") return HealthKind::kTcp;
  if (s == "http") return HealthKind::kHttp;
  return std::nullopt;
}

std::optional<StorageKind> storageKindFrom(const std::string& s) {
  if (s == "ephemeral") return StorageKind::kEphemeral;
  if (s == "shared") return StorageKind::kShared;
  return std::nullopt;
}

std::optional<DomainState> domainStateFrom(const std::string& s) {
  static const DomainState all[] = {DomainState::kNoState, DomainState::kRunning,
                                    DomainState::kBlocked, DomainState::kPaused,
                                    DomainState::kShutdown, DomainState::kShutoff,
                                    DomainState::kCrashed, DomainState::kPmSuspended};
  for (auto d : all)
    if (s == toString(d)) return d;
  return std::nullopt;
}

}  // namespace

void to_json(Json& j, const Capacity& v) { j = Json{{"cpus", v.cpus}, {"memory_mib", v.memory_mib}}; }
void from_json(const Json& j, Capacity& v) {
  opt(j, "cpus", v.cpus);
  opt(j, "memory_mib", v.memory_mib);
}

void to_json(Json& j, const HealthCheckSpec& v) {
  // "expect" came later: an agent that predates it ignores the key (and checks
  // that the port is open); a newer one reading an older controller gets "".
  j = Json{{"type", toString(v.kind)},      {"port", v.port},
           {"path", v.path},                {"expect_status", v.expect_status},
           {"expect", v.expect},            {"interval_ms", v.interval_ms},
           {"timeout_ms", v.timeout_ms},    {"failures", v.failures},
           {"grace_ms", v.grace_ms}};
}
void from_json(const Json& j, HealthCheckSpec& v) {
  optEnum(j, "type", v.kind, healthKindFrom);
  opt(j, "port", v.port);
  opt(j, "path", v.path);
  opt(j, "expect_status", v.expect_status);
  opt(j, "expect", v.expect);
  opt(j, "interval_ms", v.interval_ms);
  opt(j, "timeout_ms", v.timeout_ms);
  opt(j, "failures", v.failures);
  opt(j, "grace_ms", v.grace_ms);
}

void to_json(Json& j, const RestartBudget& v) {
  j = Json{{"restarts", v.restarts},
           {"window_ms", v.window_ms},
           {"relocations", v.relocations},
           {"backoff_initial_ms", v.backoff_initial_ms},
           {"backoff_max_ms", v.backoff_max_ms}};
}
void from_json(const Json& j, RestartBudget& v) {
  opt(j, "restarts", v.restarts);
  opt(j, "window_ms", v.window_ms);
  opt(j, "relocations", v.relocations);
  opt(j, "backoff_initial_ms", v.backoff_initial_ms);
  opt(j, "backoff_max_ms", v.backoff_max_ms);
}

void to_json(Json& j, const ServicePort& v) {
  j = Json{{"name", v.name}, {"port", v.port}, {"protocol", v.protocol}};
}
void from_json(const Json& j, ServicePort& v) {
  opt(j, "name", v.name);
  opt(j, "port", v.port);
  opt(j, "protocol", v.protocol);
}

void to_json(Json& j, const StorageSpec& v) {
  j = Json{{"type", toString(v.kind)}, {"path", v.path}};
  if (!v.pool.empty()) j["pool"] = v.pool;  // absent when unused: older agents and digests unchanged
}
void from_json(const Json& j, StorageSpec& v) {
  optEnum(j, "type", v.kind, storageKindFrom);
  opt(j, "path", v.path);
  opt(j, "pool", v.pool);
}

void to_json(Json& j, const BackupSpec& v) {
  j = Json{{"every_ms", v.every_ms}, {"keep", v.keep}, {"to", v.to}};
}
void from_json(const Json& j, BackupSpec& v) {
  opt(j, "every_ms", v.every_ms);
  opt(j, "keep", v.keep);
  opt(j, "to", v.to);
}

void to_json(Json& j, const PlacementSpec& v) {
  j = Json{{"spread", toString(v.spread)},
           {"preferred_hosts", v.preferred_hosts},
           {"required_hosts", v.required_hosts}};
}

void to_json(Json& j, const TierSpec& v) {
  j = Json{{"name", v.name},         {"image", v.image},         {"replicas", v.replicas},
           {"vcpus", v.vcpus},       {"memory_mib", v.memory_mib}, {"after", v.after},
           {"priority", v.priority}, {"min_healthy", v.min_healthy}, {"placement", v.placement},
           {"restart", v.restart},   {"health", v.health},       {"ports", v.ports},
           {"storage", v.storage}};
  if (v.backup.enabled()) j["backup"] = v.backup;  // absent when unused: stored tiers unchanged
  if (v.address.set()) j["address"] = Json{{"ip", v.address.cidr}, {"interface", v.address.interface}};
}

void to_json(Json& j, const HostSpec& v) {
  j = Json{{"name", v.name},
           {"uri", v.uri},
           {"role", toString(v.role)},
           {"capacity_override", Json{{"cpus", v.cpus}, {"memory_mib", v.memory_mib}}},
           {"fence", toString(v.fence)},
           {"fence_agent", v.fence_agent}};
}

void to_json(Json& j, const ClusterSettings& v) {
  j = Json{{"heartbeat_interval_ms", v.heartbeat_interval_ms},
           {"suspect_after_missed", v.suspect_after_missed},
           {"dead_after_ms", v.dead_after_ms},
           {"lease_ms", v.lease_ms},
           {"fence_margin_ms", v.fence_margin_ms},
           {"tier_order_timeout_ms", v.tier_order_timeout_ms},
           {"n_plus_one", toString(v.n_plus_one)},
           {"event_retention_ms", v.event_retention_ms},
           {"event_retention_rows", v.event_retention_rows}};
}

void to_json(Json& j, const PolicyFile& v) { j = Json{{"name", v.name}, {"content", v.content}}; }
void from_json(const Json& j, PolicyFile& v) {
  j.at("name").get_to(v.name);
  j.at("content").get_to(v.content);
}

void to_json(Json& j, const VmRecord& v) {
  j = Json{{"name", v.name},
           {"tier", v.tier},
           {"ordinal", v.ordinal},
           {"host", v.host},
           {"epoch", v.epoch},
           {"state", toString(v.state)},
           {"health", toString(v.health)},
           {"restarts", v.restarts},
           {"relocations", v.relocations},
           {"reason", v.reason},
           {"updated_ms", v.updated_ms}};
}

void to_json(Json& j, const HostRecord& v) {
  j = Json{{"name", v.name},
           {"state", toString(v.state)},
           {"state_since_ms", v.state_since_ms},
           {"capacity", v.capacity},
           {"reason", v.reason}};
  if (v.watchdog_ms >= 0) j["watchdog_ms"] = v.watchdog_ms;  // -1 (never heard) left out
}

void to_json(Json& j, const EventRecord& v) {
  j = Json{{"id", v.id},           {"t_ms", v.t_ms},         {"level", v.level},
           {"kind", v.kind},       {"subject", v.subject},   {"message", v.message}};
}
void from_json(const Json& j, EventRecord& v) {
  opt(j, "id", v.id);
  opt(j, "t_ms", v.t_ms);
  opt(j, "level", v.level);
  opt(j, "kind", v.kind);
  opt(j, "subject", v.subject);
  opt(j, "message", v.message);
}

void to_json(Json& j, const FloatingAddressSpec& v) {
  j = Json{{"ip", v.cidr}, {"interface", v.interface}};
}
void from_json(const Json& j, FloatingAddressSpec& v) {
  opt(j, "ip", v.cidr);
  opt(j, "interface", v.interface);
}

void to_json(Json& j, const Assignment& v) {
  j = Json{{"vm", v.vm},
           {"tier", v.tier},
           {"epoch", v.epoch},
           {"policy_version", v.policy_version},
           {"spec_digest", v.spec_digest},
           {"image", v.image},
           {"vcpus", v.vcpus},
           {"memory_mib", v.memory_mib},
           {"health", v.health},
           {"restart", v.restart},
           {"ports", v.ports},
           {"storage", v.storage},
           {"after", v.after},
           {"migrate_to_host", v.migrate_to_host},
           {"migrate_to_uri", v.migrate_to_uri},
           {"migrate_epoch", v.migrate_epoch},
           {"incoming", v.incoming}};
  // Absent when unused: older agents and the scenario logs see no change.
  if (v.backup.enabled()) j["backup"] = v.backup;
  if (v.backup_request > 0) j["backup_request"] = v.backup_request;
  if (v.restore_id > 0) {
    j["restore_id"] = v.restore_id;
    j["restore_from"] = v.restore_from;
  }
  if (v.address.set()) j["address"] = v.address;
}
void from_json(const Json& j, Assignment& v) {
  j.at("vm").get_to(v.vm);
  opt(j, "tier", v.tier);
  j.at("epoch").get_to(v.epoch);
  opt(j, "policy_version", v.policy_version);
  opt(j, "spec_digest", v.spec_digest);
  opt(j, "image", v.image);
  opt(j, "vcpus", v.vcpus);
  opt(j, "memory_mib", v.memory_mib);
  opt(j, "health", v.health);
  opt(j, "restart", v.restart);
  opt(j, "ports", v.ports);
  opt(j, "storage", v.storage);
  opt(j, "after", v.after);
  opt(j, "migrate_to_host", v.migrate_to_host);
  opt(j, "migrate_to_uri", v.migrate_to_uri);
  opt(j, "migrate_epoch", v.migrate_epoch);
  opt(j, "incoming", v.incoming);
  opt(j, "backup", v.backup);
  opt(j, "backup_request", v.backup_request);
  opt(j, "restore_id", v.restore_id);
  opt(j, "restore_from", v.restore_from);
  opt(j, "address", v.address);
}

void to_json(Json& j, const PeerInfo& v) { j = Json{{"host", v.host}, {"address", v.address}}; }
void from_json(const Json& j, PeerInfo& v) {
  j.at("host").get_to(v.host);
  opt(j, "address", v.address);
}

void to_json(Json& j, const HostReport& v) {
  j = Json{{"digest", v.digest}, {"subnets", v.subnets}, {"paths", v.paths}, {"pools", v.pools}};
  if (!v.address_interface.empty()) j["address_interface"] = v.address_interface;
  if (v.addresses_off) j["addresses_off"] = true;
}
void from_json(const Json& j, HostReport& v) {
  j.at("digest").get_to(v.digest);
  opt(j, "subnets", v.subnets);
  opt(j, "paths", v.paths);
  opt(j, "pools", v.pools);
  opt(j, "address_interface", v.address_interface);
  opt(j, "addresses_off", v.addresses_off);
}

void to_json(Json& j, const HostChecks& v) { j = Json{{"paths", v.paths}, {"pools", v.pools}}; }
void from_json(const Json& j, HostChecks& v) {
  opt(j, "paths", v.paths);
  opt(j, "pools", v.pools);
}

void to_json(Json& j, const AssignmentSet& v) {
  j = Json{{"host", v.host},
           {"version", v.version},
           {"controller_id", v.controller_id},
           {"lease_ms", v.lease_ms},
           {"heartbeat_interval_ms", v.heartbeat_interval_ms},
           {"assignments", v.assignments},
           {"peers", v.peers},
           {"peer_timeout_ms", v.peer_timeout_ms}};
  if (!v.peers_digest.empty()) j["peers_digest"] = v.peers_digest;
  if (v.peers_omitted) j["peers_omitted"] = true;
  if (!v.addresses.empty()) j["addresses"] = v.addresses;
  if (!v.checks.paths.empty() || !v.checks.pools.empty()) j["checks"] = v.checks;
  if (!v.host_report_digest.empty()) j["host_report_digest"] = v.host_report_digest;
  if (v.term != 0) j["term"] = v.term;  // absent: 0 (SQLite, or an older controller)
  if (!v.renewed_by.empty()) j["renewed_by"] = v.renewed_by;
}
void from_json(const Json& j, AssignmentSet& v) {
  opt(j, "host", v.host);
  j.at("version").get_to(v.version);
  opt(j, "controller_id", v.controller_id);
  opt(j, "term", v.term);
  opt(j, "lease_ms", v.lease_ms);
  opt(j, "heartbeat_interval_ms", v.heartbeat_interval_ms);
  opt(j, "assignments", v.assignments);
  opt(j, "peers", v.peers);
  opt(j, "peer_timeout_ms", v.peer_timeout_ms);
  opt(j, "peers_digest", v.peers_digest);
  opt(j, "peers_omitted", v.peers_omitted);
  opt(j, "addresses", v.addresses);
  opt(j, "checks", v.checks);
  opt(j, "host_report_digest", v.host_report_digest);
  opt(j, "renewed_by", v.renewed_by);
}

void to_json(Json& j, const DomainReport& v) {
  j = Json{{"vm", v.vm},       {"tier", v.tier},         {"epoch", v.epoch},
           {"state", toString(v.state)}, {"health", toString(v.health)},
           {"restarts", v.restarts},     {"reason", v.reason}};
  // Object keys are strings: {"80": 20001}.
  Json ports = Json::object();
  for (const auto& [guest, host] : v.ports) ports[std::to_string(guest)] = host;
  j["ports"] = std::move(ports);
}
void from_json(const Json& j, DomainReport& v) {
  j.at("vm").get_to(v.vm);
  opt(j, "tier", v.tier);
  opt(j, "epoch", v.epoch);
  optEnum(j, "state", v.state, domainStateFrom);
  optEnum(j, "health", v.health, healthFromString);
  opt(j, "restarts", v.restarts);
  opt(j, "reason", v.reason);
  auto ports = j.find("ports");
  if (ports != j.end() && !ports->is_null()) {
    if (!ports->is_object()) {
      throw nlohmann::json::type_error::create(302, "'ports' must be an object", &j);
    }
    v.ports.clear();
    for (const auto& [guest, host] : ports->items()) {
      int guest_port = 0;
      auto [end, ec] = std::from_chars(guest.data(), guest.data() + guest.size(), guest_port);
      if (ec != std::errc() || end != guest.data() + guest.size()) {
        throw nlohmann::json::type_error::create(302, "bad guest port '" + guest + "' in 'ports'",
                                                 &j);
      }
      v.ports[guest_port] = host.get<int>();
    }
  }
}

void to_json(Json& j, const Heartbeat& v) {
  j = Json{{"host", v.host},
           {"agent_id", v.agent_id},
           {"seq", v.seq},
           {"capacity", v.capacity},
           {"assignments_version", v.assignments_version},
           {"assignments_controller", v.assignments_controller},
           {"service_address", v.service_address},
           {"domains", v.domains},
           {"peer_address", v.peer_address},
           {"peers_unreachable", v.peers_unreachable},
           {"self_fence_reason", v.self_fence_reason}};
  if (v.watchdog_ms > 0) j["watchdog_ms"] = v.watchdog_ms;
  if (!v.peers_digest.empty()) j["peers_digest"] = v.peers_digest;
  if (!v.events.empty()) j["events"] = v.events;
  if (!v.addresses_held.empty()) j["addresses_held"] = v.addresses_held;
  if (!v.host_report.digest.empty()) j["host_report"] = v.host_report;
  if (v.compact) j["compact"] = true;
  if (!v.report_digest.empty()) j["report_digest"] = v.report_digest;
}
void from_json(const Json& j, Heartbeat& v) {
  j.at("host").get_to(v.host);
  opt(j, "agent_id", v.agent_id);
  opt(j, "seq", v.seq);
  opt(j, "capacity", v.capacity);
  opt(j, "assignments_version", v.assignments_version);
  opt(j, "assignments_controller", v.assignments_controller);
  opt(j, "service_address", v.service_address);
  opt(j, "domains", v.domains);
  opt(j, "peer_address", v.peer_address);
  opt(j, "peers_unreachable", v.peers_unreachable);
  opt(j, "self_fence_reason", v.self_fence_reason);
  opt(j, "watchdog_ms", v.watchdog_ms);
  opt(j, "peers_digest", v.peers_digest);
  opt(j, "events", v.events);
  opt(j, "addresses_held", v.addresses_held);
  opt(j, "host_report", v.host_report);
  opt(j, "compact", v.compact);
  opt(j, "report_digest", v.report_digest);
}

void to_json(Json& j, const BackupRecord& v) {
  j = Json{{"id", v.id},
           {"vm", v.vm},
           {"tier", v.tier},
           {"host", v.host},
           {"path", v.path},
           {"taken_ms", v.taken_ms},
           {"duration_ms", v.duration_ms},
           {"bytes", v.bytes},
           {"method", v.method},
           {"request", v.request}};
  if (!v.error.empty()) j["error"] = v.error;
}
void from_json(const Json& j, BackupRecord& v) {
  opt(j, "id", v.id);
  opt(j, "vm", v.vm);
  opt(j, "tier", v.tier);
  opt(j, "host", v.host);
  opt(j, "path", v.path);
  opt(j, "taken_ms", v.taken_ms);
  opt(j, "duration_ms", v.duration_ms);
  opt(j, "bytes", v.bytes);
  opt(j, "method", v.method);
  opt(j, "request", v.request);
  opt(j, "error", v.error);
}

void to_json(Json& j, const AgentEvent& v) {
  j = Json{{"host", v.host},   {"vm", v.vm},       {"epoch", v.epoch},
           {"kind", v.kind},   {"level", v.level}, {"message", v.message}};
  if (!v.backup.id.empty()) j["backup"] = v.backup;  // absent otherwise: older controllers
  if (!v.pruned.empty()) j["pruned"] = v.pruned;
}
void from_json(const Json& j, AgentEvent& v) {
  opt(j, "host", v.host);
  opt(j, "vm", v.vm);
  opt(j, "epoch", v.epoch);
  j.at("kind").get_to(v.kind);
  opt(j, "level", v.level);
  opt(j, "message", v.message);
  opt(j, "backup", v.backup);
  opt(j, "pruned", v.pruned);
}

namespace {

// nlohmann quotes the whole token it stopped in ("last read: '...'"), which
// can be a string of megabytes; a message keeps its first 200 bytes.
std::string shortWhat(const nlohmann::json::exception& e) {
  constexpr size_t kMaxMessageBytes = 200;
  std::string_view what = e.what();
  if (what.size() <= kMaxMessageBytes) return std::string(what);
  return utf8Prefix(what, kMaxMessageBytes) + "...";
}

}  // namespace

Result<Json> parseJson(const std::string& text) {
  try {
    return Json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    // e.byte is the 1-based offset of the error; turn it into line and column.
    size_t byte = e.byte == 0 ? 0 : e.byte - 1;
    int line = 1, column = 1;
    for (size_t i = 0; i < byte && i < text.size(); ++i) {
      if (text[i] == '\n') {
        ++line;
        column = 1;
      } else {
        ++column;
      }
    }
    return Status(Code::kInvalidArgument, "malformed JSON: " + shortWhat(e),
                  SourceLocation{"request body", line, column});
  } catch (const nlohmann::json::exception& e) {
    // out_of_range.406 (a number like 1e400) and whatever else the parser
    // refuses: still bad input, never an exception for the caller.
    return invalidArgument("malformed JSON: " + shortWhat(e));
  }
}

std::string jsonText(const Json& j, int indent) {
  return j.dump(indent, ' ', false, Json::error_handler_t::replace);
}

Status checkNumbersFitIntegers(const Json& j) {
  std::vector<const Json*> todo{&j};
  while (!todo.empty()) {
    const Json* v = todo.back();
    todo.pop_back();
    if (v->is_structured()) {
      for (const auto& child : *v) todo.push_back(&child);
    } else if (v->is_number_float()) {
      double d = v->get<double>();
      // Negated so that NaN fails too.
      if (!(d >= -2147483648.0 && d <= 2147483647.0)) {
        return invalidArgument("bad JSON: number " + jsonText(*v) + " is out of range");
      }
    }
  }
  return Status::ok();
}

}  // namespace tw
