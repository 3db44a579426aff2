// The policy parser's first pass over `tiers:`: each tier and its sections
// (placement, restart, health, ports, storage, backup, address).
// common/src/policy_parser.h says how the parser is split.
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "policy_parser.h"
#include "tw/ip_prefix.h"
#include "tw/text.h"

namespace tw::policy_parser {

Status FileParser::parseTier(const YAML::Node& item) {
  TierSpec t;
  TierRefs refs;
  t.where = at(item);
  std::string label = itemLabel(item, "tier", ++tier_ordinal_);
  if (!item.IsMap())
    return fail(t.where, "expected a mapping for " + label +
                             " (name, image, replicas, ...), "
                             "got " +
                             describe(item));
  std::vector<Field> fields;
  TW_RETURN_IF_ERROR(
      mapFields(item, t.where, label, label,
                {"name", "image", "replicas", "vcpus", "memory", "after", "priority", "min_healthy",
                 "placement", "restart", "health", "ports", "storage", "backup", "address"},
                &fields));
  std::optional<SourceLocation> min_healthy_at;
  std::optional<SourceLocation> backup_at;
  bool has_image = false;
  for (const auto& f : fields) {
    if (f.key == "name") {
      refs.name_at = at(f);
      TW_RETURN_IF_ERROR(readName(f.value, refs.name_at, "'name'", &t.name));
    } else if (f.key == "image") {
      has_image = true;
      if (!f.value.IsScalar() || !isValidImage(f.value.Scalar()))
        return fail(at(f),
                    "expected an image name for 'image' (lowercase letters, digits, "
                    "'.', '_' or '-'), got " +
                        describe(f.value));
      t.image = f.value.Scalar();
    } else if (f.key == "replicas") {
      TW_RETURN_IF_ERROR(readInt(f, "replicas", 0, kMaxReplicas, &t.replicas));
    } else if (f.key == "vcpus") {
      TW_RETURN_IF_ERROR(readInt(f, "vcpus", 1, kMaxVcpus, &t.vcpus));
    } else if (f.key == "memory") {
      int64_t mib = 0;
      TW_RETURN_IF_ERROR(readSize(f, "memory", kMinTierMemoryMib, &mib));
      t.memory_mib = static_cast<int>(mib);
    } else if (f.key == "after") {
      TW_RETURN_IF_ERROR(readNameList(f, "after", &t.after, &refs.after_at));
    } else if (f.key == "priority") {
      TW_RETURN_IF_ERROR(readInt(f, "priority", -1000, 1000, &t.priority));
    } else if (f.key == "min_healthy") {
      min_healthy_at = at(f);
      TW_RETURN_IF_ERROR(readInt(f, "min_healthy", 0, kMaxReplicas, &t.min_healthy));
    } else if (f.key == "placement") {
      TW_RETURN_IF_ERROR(parsePlacement(f, label, &t.placement, &refs));
    } else if (f.key == "restart") {
      TW_RETURN_IF_ERROR(parseRestart(f, label, &t.restart));
    } else if (f.key == "health") {
      TW_RETURN_IF_ERROR(parseHealth(f, label, &t.health));
    } else if (f.key == "ports") {
      TW_RETURN_IF_ERROR(parsePorts(f, label, &t.ports));
    } else if (f.key == "storage") {
      TW_RETURN_IF_ERROR(parseStorage(f, label, &t.storage, &t.storage_at));
    } else if (f.key == "backup") {
      backup_at = at(f);
      TW_RETURN_IF_ERROR(parseBackup(f, label, &t.backup, &t.backup_to_at));
    } else if (f.key == "address") {
      t.address_at = at(f);
      TW_RETURN_IF_ERROR(parseAddress(f, label, &t.address));
    }
  }
  if (backup_at && t.storage.kind != StorageKind::kShared)
    return fail(*backup_at, "'backup' of " + label +
                                " needs shared storage (storage: { type: shared, ... }): an "
                                "ephemeral disk is rebuilt from the image and holds nothing to "
                                "back up");
  if (t.name.empty()) return fail(t.where, label + " has no 'name'");
  if (!has_image) return fail(t.where, "tier '" + t.name + "' has no 'image'");
  if (min_healthy_at && t.min_healthy > t.replicas)
    return fail(*min_healthy_at, "'min_healthy' (" + std::to_string(t.min_healthy) + ") of tier '" +
                                     t.name + "' must not exceed 'replicas' (" +
                                     std::to_string(t.replicas) + ")");
  if (t.address.set() && t.ports.empty())
    return fail(t.address_at,
                "tier '" + t.name + "' has an 'address' but no 'ports' to forward on it");
  draft_->policy.tiers.push_back(std::move(t));
  draft_->tier_refs.push_back(std::move(refs));
  return Status::ok();
}

Status FileParser::parsePlacement(const Field& placement, const std::string& label,
                                  PlacementSpec* p, TierRefs* refs) const {
  std::vector<Field> fields;
  TW_RETURN_IF_ERROR(mapFields(placement.value, at(placement), "'placement'",
                               "placement of " + label,
                               {"spread", "preferred_hosts", "required_hosts"}, &fields));
  for (const auto& f : fields) {
    if (f.key == "spread") {
      refs->spread_at = at(f);
      TW_RETURN_IF_ERROR(readEnum<SpreadMode>(f, "placement.spread",
                                              {{"required", SpreadMode::kRequired},
                                               {"preferred", SpreadMode::kPreferred},
                                               {"none", SpreadMode::kNone}},
                                              &p->spread));
    } else if (f.key == "preferred_hosts") {
      TW_RETURN_IF_ERROR(
          readNameList(f, "placement.preferred_hosts", &p->preferred_hosts, &refs->preferred_at));
    } else if (f.key == "required_hosts") {
      TW_RETURN_IF_ERROR(
          readNameList(f, "placement.required_hosts", &p->required_hosts, &refs->required_at));
    }
  }
  return Status::ok();
}

Status FileParser::parseRestart(const Field& restart, const std::string& label,
                                RestartBudget* r) const {
  std::vector<Field> fields;
  TW_RETURN_IF_ERROR(mapFields(restart.value, at(restart), "'restart'", "restart of " + label,
                               {"restarts", "window", "relocations", "backoff", "backoff_max"},
                               &fields));
  std::map<std::string, SourceLocation> seen;
  for (const auto& f : fields) {
    seen[f.key] = at(f);
    const std::string path = "restart." + f.key;
    if (f.key == "restarts") {
      TW_RETURN_IF_ERROR(readInt(f, path, 0, 1000, &r->restarts));
    } else if (f.key == "window") {
      TW_RETURN_IF_ERROR(readDuration(f, path, true, &r->window_ms));
    } else if (f.key == "relocations") {
      TW_RETURN_IF_ERROR(readInt(f, path, 0, 1000, &r->relocations));
    } else if (f.key == "backoff") {
      TW_RETURN_IF_ERROR(readDuration(f, path, false, &r->backoff_initial_ms));
    } else if (f.key == "backoff_max") {
      TW_RETURN_IF_ERROR(readDuration(f, path, false, &r->backoff_max_ms));
    }
  }
  if (r->backoff_max_ms < r->backoff_initial_ms)
    return fail(seen.count("backoff_max") ? seen["backoff_max"] : seen["backoff"],
                "'restart.backoff_max' (" + formatDuration(r->backoff_max_ms) +
                    ") must not be shorter than 'restart.backoff' (" +
                    formatDuration(r->backoff_initial_ms) + ")");
  return Status::ok();
}

Status FileParser::parseHealth(const Field& health, const std::string& label,
                               HealthCheckSpec* h) const {
  std::vector<Field> fields;
  TW_RETURN_IF_ERROR(mapFields(health.value, at(health), "'health'", "health of " + label,
                               {"type", "port", "path", "expect_status", "expect", "interval",
                                "timeout", "failures", "grace"},
                               &fields));
  std::map<std::string, SourceLocation> seen;
  for (const auto& f : fields) {
    seen[f.key] = at(f);
    const std::string path = "health." + f.key;
    if (f.key == "type") {
      TW_RETURN_IF_ERROR(readEnum<HealthKind>(
          f, path,
          {{"none", HealthKind::kNone}, {"tcp", HealthKind::kTcp}, {"http", HealthKind::kHttp}},
          &h->kind));
    } else if (f.key == "port") {
      TW_RETURN_IF_ERROR(readInt(f, path, 1, 65535, &h->port));
    } else if (f.key == "path") {
      TW_RETURN_IF_ERROR(readString(f, path, &h->path));
      if (h->path.empty() || h->path[0] != '/')
        return fail(at(f), "'health.path' must start with '/', got " + describe(f.value));
    } else if (f.key == "expect_status") {
      TW_RETURN_IF_ERROR(readInt(f, path, 100, 599, &h->expect_status));
    } else if (f.key == "expect") {
      TW_RETURN_IF_ERROR(readString(f, path, &h->expect));
      // Empty would pass on any open connection: say so rather than accept it.
      if (h->expect.empty())
        return fail(at(f),
                    "'health.expect' must not be empty (leave it out to accept any "
                    "open connection)");
      if (h->expect.size() > kMaxHealthExpect)
        return fail(at(f), "'health.expect' must be at most " + std::to_string(kMaxHealthExpect) +
                               " bytes, got " + std::to_string(h->expect.size()));
    } else if (f.key == "interval") {
      TW_RETURN_IF_ERROR(readDuration(f, path, true, &h->interval_ms));
    } else if (f.key == "timeout") {
      TW_RETURN_IF_ERROR(readDuration(f, path, true, &h->timeout_ms));
    } else if (f.key == "failures") {
      TW_RETURN_IF_ERROR(readInt(f, path, 1, 1000, &h->failures));
    } else if (f.key == "grace") {
      TW_RETURN_IF_ERROR(readDuration(f, path, false, &h->grace_ms));
    }
  }
  if (fields.empty()) return Status::ok();
  const char* kind = toString(h->kind);
  SourceLocation kind_at = seen.count("type") ? seen["type"] : at(health);
  if (h->kind != HealthKind::kNone && !seen.count("port"))
    return fail(kind_at, std::string("health type ") + kind + " of " + label + " needs a port");
  if (h->kind == HealthKind::kNone) {
    for (const char* key : {"port", "path", "expect_status"}) {
      if (seen.count(key))
        return fail(seen[key], std::string("'health.") + key + "' of " + label +
                                   " is only used with type tcp or http (type is none)");
    }
  }
  if (h->kind != HealthKind::kTcp && seen.count("expect"))
    return fail(seen["expect"], std::string("'health.expect' of ") + label +
                                    " is only used with type tcp (type is " + kind + ")");
  if (h->kind == HealthKind::kTcp) {
    for (const char* key : {"path", "expect_status"}) {
      if (seen.count(key))
        return fail(seen[key], std::string("'health.") + key + "' of " + label +
                                   " is only used with type http (type is tcp)");
    }
  }
  if (h->timeout_ms > h->interval_ms)
    return fail(seen.count("timeout") ? seen["timeout"] : seen["interval"],
                "'health.timeout' (" + formatDuration(h->timeout_ms) + ") of " + label +
                    " must not exceed 'health.interval' (" + formatDuration(h->interval_ms) + ")");
  return Status::ok();
}

Status FileParser::parsePorts(const Field& ports, const std::string& label,
                              std::vector<ServicePort>* out) const {
  std::vector<YAML::Node> items;
  TW_RETURN_IF_ERROR(listItems(ports, "ports", &items));
  std::map<std::string, SourceLocation> by_name, by_port;
  for (const auto& item : items) {
    ServicePort p;
    SourceLocation item_at = at(item);
    if (!item.IsMap())
      return fail(item_at, "expected a mapping for a port of " + label +
                               " ({ name: http, port: 80 }), got " + describe(item));
    std::vector<Field> fields;
    TW_RETURN_IF_ERROR(mapFields(item, item_at, "a port", "a port of " + label,
                                 {"name", "port", "protocol"}, &fields));
    SourceLocation name_at, port_at;
    for (const auto& f : fields) {
      if (f.key == "name") {
        name_at = at(f);
        TW_RETURN_IF_ERROR(readName(f.value, name_at, "'ports.name'", &p.name));
      } else if (f.key == "port") {
        port_at = at(f);
        TW_RETURN_IF_ERROR(readInt(f, "ports.port", 1, 65535, &p.port));
      } else if (f.key == "protocol") {
        TW_RETURN_IF_ERROR(readEnum<std::string>(f, "ports.protocol",
                                                 {{"tcp", "tcp"}, {"udp", "udp"}}, &p.protocol));
      }
    }
    if (p.name.empty()) return fail(item_at, "a port of " + label + " has no 'name'");
    if (p.port == 0) return fail(item_at, "port '" + p.name + "' of " + label + " has no 'port'");
    auto [prev_name, name_new] = by_name.emplace(p.name, name_at);
    if (!name_new)
      return fail(name_at, "duplicate port name '" + p.name + "' in " + label + " (first at " +
                               prev_name->second.str() + ")");
    std::string key = std::to_string(p.port) + "/" + p.protocol;
    auto [prev_port, port_new] = by_port.emplace(key, port_at);
    if (!port_new)
      return fail(port_at, "duplicate port " + key + " in " + label + " (first at " +
                               prev_port->second.str() + ")");
    out->push_back(std::move(p));
  }
  return Status::ok();
}

Status FileParser::parseStorage(const Field& storage, const std::string& label, StorageSpec* s,
                                SourceLocation* where) const {
  std::vector<Field> fields;
  TW_RETURN_IF_ERROR(mapFields(storage.value, at(storage), "'storage'", "storage of " + label,
                               {"type", "path", "pool"}, &fields));
  std::optional<SourceLocation> path_at;
  std::optional<SourceLocation> pool_at;
  for (const auto& f : fields) {
    if (f.key == "type") {
      TW_RETURN_IF_ERROR(readEnum<StorageKind>(
          f, "storage.type",
          {{"ephemeral", StorageKind::kEphemeral}, {"shared", StorageKind::kShared}}, &s->kind));
    } else if (f.key == "path") {
      path_at = *where = at(f);
      TW_RETURN_IF_ERROR(readString(f, "storage.path", &s->path));
    } else if (f.key == "pool") {
      pool_at = *where = at(f);
      TW_RETURN_IF_ERROR(readString(f, "storage.pool", &s->pool));
    }
  }
  if (s->kind == StorageKind::kEphemeral && path_at)
    return fail(*path_at, "'storage.path' of " + label + " is only used with type: shared");
  if (s->kind == StorageKind::kEphemeral && pool_at)
    return fail(*pool_at, "'storage.pool' of " + label + " is only used with type: shared");
  if (path_at && pool_at)
    return fail(*pool_at, "shared storage of " + label + " takes a 'path' or a 'pool', not both");
  if (pool_at) {
    const bool name_ok = !s->pool.empty() && s->pool.size() <= 64 &&
                         s->pool.find_first_not_of(
                             "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                             "0123456789_.-") == std::string::npos &&
                         s->pool[0] != '.' && s->pool[0] != '-';
    if (!name_ok)
      return fail(*pool_at, "'storage.pool' of " + label +
                                " must be a libvirt pool name (letters, digits, '_', '.', '-'; at "
                                "most 64), got '" +
                                s->pool + "'");
    return Status::ok();
  }
  if (s->kind == StorageKind::kShared && (s->path.empty() || s->path[0] != '/'))
    return fail(path_at ? *path_at : at(storage), "shared storage of " + label +
                                                      " needs an absolute 'path' (a directory "
                                                      "every host sees) or a 'pool', got " +
                                                      (path_at ? "'" + s->path + "'" : "none"));
  return Status::ok();
}

Status FileParser::parseBackup(const Field& backup, const std::string& label, BackupSpec* b,
                               SourceLocation* where) const {
  std::vector<Field> fields;
  TW_RETURN_IF_ERROR(mapFields(backup.value, at(backup), "'backup'", "backup of " + label,
                               {"every", "keep", "to"}, &fields));
  std::optional<SourceLocation> to_at;
  bool has_every = false;
  b->keep = 24;
  for (const auto& f : fields) {
    if (f.key == "every") {
      has_every = true;
      TW_RETURN_IF_ERROR(readDuration(f, "backup.every", true, &b->every_ms));
      if (b->every_ms < kMinBackupEveryMs)
        return fail(
            at(f), "'backup.every' of " + label + " must be at least 1m, got " + describe(f.value));
    } else if (f.key == "keep") {
      TW_RETURN_IF_ERROR(readInt(f, "backup.keep", 1, 10000, &b->keep));
    } else if (f.key == "to") {
      to_at = *where = at(f);
      TW_RETURN_IF_ERROR(readString(f, "backup.to", &b->to));
    }
  }
  if (!has_every) return fail(at(backup), "'backup' of " + label + " has no 'every'");
  if (!to_at) return fail(at(backup), "'backup' of " + label + " has no 'to'");
  if (b->to.empty() || b->to[0] != '/' || b->to.find("/../") != std::string::npos ||
      b->to.ends_with("/.."))
    return fail(*to_at, "'backup.to' of " + label +
                            " must be an absolute directory path (a DR place every host "
                            "sees), got '" +
                            b->to + "'");
  while (b->to.size() > 1 && b->to.back() == '/') b->to.pop_back();
  return Status::ok();
}

Status FileParser::parseAddress(const Field& address, const std::string& label,
                                FloatingAddressSpec* a) const {
  std::string text;
  if (address.value.IsScalar()) {
    TW_RETURN_IF_ERROR(readString(address, "address", &text));
    return setAddress(at(address), text, label, a);
  }
  std::vector<Field> fields;
  TW_RETURN_IF_ERROR(mapFields(address.value, at(address), "'address'", "address of " + label,
                               {"ip", "interface"}, &fields));
  bool has_ip = false;
  for (const auto& f : fields) {
    if (f.key == "ip") {
      has_ip = true;
      TW_RETURN_IF_ERROR(readString(f, "address.ip", &text));
      TW_RETURN_IF_ERROR(setAddress(at(f), text, label, a));
    } else if (f.key == "interface") {
      TW_RETURN_IF_ERROR(readString(f, "address.interface", &a->interface));
      if (!isValidInterfaceName(a->interface))
        return fail(at(f), "expected a network interface name for 'address.interface' of " + label +
                               " (1 to 15 characters, no '/', ':' or spaces), got " +
                               quoteForMessage(a->interface));
    }
  }
  if (!has_ip) return fail(at(address), "the address of " + label + " has no 'ip'");
  return Status::ok();
}

Status FileParser::setAddress(const SourceLocation& where, const std::string& text,
                              const std::string& label, FloatingAddressSpec* a) const {
  std::optional<IpPrefix> p = parseIpPrefix(text);
  if (!p)
    return fail(where, "expected an IPv4 or IPv6 address with a prefix length for the address of " +
                           label + " (like 10.213.0.100/24 or fd00::100/64), got " +
                           quoteForMessage(text));
  bool unicast = true;
  if (!p->v6) {
    const uint32_t v = (uint32_t{p->bytes[0]} << 24) | (uint32_t{p->bytes[1]} << 16) |
                       (uint32_t{p->bytes[2]} << 8) | p->bytes[3];
    const uint32_t host_mask = p->prefix == 0 ? 0xffffffffu : (0xffffffffu >> p->prefix);
    unicast = v != 0 && p->bytes[0] != 127 && p->bytes[0] < 224 &&
              (p->prefix >= 31 || ((v & host_mask) != 0 && (v & host_mask) != host_mask));
  } else {
    unicast = p->ip() != "::" && p->ip() != "::1" && p->bytes[0] != 0xff;
  }
  if (!unicast)
    return fail(where, "the address of " + label +
                           " must be a unicast host address (not a network, broadcast, loopback "
                           "or multicast address), got " +
                           quoteForMessage(text));
  a->cidr = p->str();
  return Status::ok();
}

}  // namespace tw::policy_parser
