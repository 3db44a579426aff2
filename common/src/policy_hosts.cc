// The policy parser's first pass over documents, `cluster:` and `hosts:`
// (common/src/policy_parser.h says how the parser is split).
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

Status FileParser::parseDocument(const YAML::Node& doc) {
  if (doc.IsNull()) return Status::ok();  // an empty file or document is fine
  if (!doc.IsMap())
    return fail(at(doc),
                "expected a mapping with cluster, hosts or tiers at the top level, "
                "got " +
                    describe(doc));
  std::vector<Field> fields;
  TW_RETURN_IF_ERROR(mapFields(doc, at(doc), "the top level", "the top level",
                               {"cluster", "hosts", "tiers"}, &fields));
  for (const auto& f : fields) {
    if (f.key == "cluster") {
      TW_RETURN_IF_ERROR(parseCluster(f));
    } else if (f.key == "hosts") {
      std::vector<YAML::Node> items;
      TW_RETURN_IF_ERROR(listItems(f, "hosts", &items));
      for (const auto& item : items) {
        if (draft_->policy.hosts.size() >= static_cast<size_t>(kMaxPolicyHosts))
          return fail(at(item), "too many hosts: a policy declares at most " +
                                    std::to_string(kMaxPolicyHosts) +
                                    " hosts (over all its files)");
        TW_RETURN_IF_ERROR(parseHost(item));
      }
    } else if (f.key == "tiers") {
      std::vector<YAML::Node> items;
      TW_RETURN_IF_ERROR(listItems(f, "tiers", &items));
      for (const auto& item : items) {
        if (draft_->policy.tiers.size() >= static_cast<size_t>(kMaxPolicyTiers))
          return fail(at(item), "too many tiers: a policy declares at most " +
                                    std::to_string(kMaxPolicyTiers) +
                                    " tiers (over all its files)");
        TW_RETURN_IF_ERROR(parseTier(item));
        draft_->vms += draft_->policy.tiers.back().replicas;
        if (draft_->vms > kMaxPolicyVms)
          return fail(at(item), "too many VMs: with tier '" + draft_->policy.tiers.back().name +
                                    "' the tiers' replicas add up to " +
                                    std::to_string(draft_->vms) + "; a policy runs at most " +
                                    std::to_string(kMaxPolicyVms) + " VMs (over all its files)");
      }
    }
  }
  return Status::ok();
}

Status FileParser::parseCluster(const Field& cluster) {
  if (draft_->cluster_at)
    return fail(at(cluster.key_node),
                "'cluster' may be declared only once (first at " + draft_->cluster_at->str() + ")");
  draft_->cluster_at = at(cluster.key_node);
  std::vector<Field> fields;
  TW_RETURN_IF_ERROR(mapFields(
      cluster.value, at(cluster), "'cluster'", "cluster",
      {"heartbeat_interval", "suspect_after_missed", "dead_after", "lease", "fence_margin",
       "tier_order_timeout", "n_plus_one", "event_retention", "event_retention_rows"},
      &fields));
  ClusterSettings& s = draft_->policy.settings;
  std::map<std::string, SourceLocation> seen;
  for (const auto& f : fields) {
    seen[f.key] = at(f);
    if (f.key == "heartbeat_interval") {
      TW_RETURN_IF_ERROR(readDuration(f, f.key, true, &s.heartbeat_interval_ms));
    } else if (f.key == "suspect_after_missed") {
      TW_RETURN_IF_ERROR(readInt(f, f.key, 1, 1000, &s.suspect_after_missed));
    } else if (f.key == "dead_after") {
      TW_RETURN_IF_ERROR(readDuration(f, f.key, true, &s.dead_after_ms));
    } else if (f.key == "lease") {
      TW_RETURN_IF_ERROR(readDuration(f, f.key, true, &s.lease_ms));
    } else if (f.key == "fence_margin") {
      TW_RETURN_IF_ERROR(readDuration(f, f.key, false, &s.fence_margin_ms));
    } else if (f.key == "tier_order_timeout") {
      TW_RETURN_IF_ERROR(readDuration(f, f.key, true, &s.tier_order_timeout_ms));
    } else if (f.key == "event_retention") {
      TW_RETURN_IF_ERROR(readDuration(f, f.key, true, &s.event_retention_ms));
    } else if (f.key == "event_retention_rows") {
      TW_RETURN_IF_ERROR(readInt(f, f.key, 1000, 1000000, &s.event_retention_rows));
    } else if (f.key == "n_plus_one") {
      TW_RETURN_IF_ERROR(readEnum<NPlusOneMode>(f, f.key,
                                                {{"refuse", NPlusOneMode::kRefuse},
                                                 {"warn", NPlusOneMode::kWarn},
                                                 {"off", NPlusOneMode::kOff}},
                                                &s.n_plus_one));
    }
  }
  // Point at what was written: the longer setting if given, else the interval.
  auto pick = [&](const char* key) {
    if (seen.count(key)) return seen[key];
    if (seen.count("heartbeat_interval")) return seen["heartbeat_interval"];
    return at(cluster.key_node);
  };
  for (auto [key, value] : {std::pair<const char*, Millis>{"dead_after", s.dead_after_ms},
                            std::pair<const char*, Millis>{"lease", s.lease_ms}}) {
    if (value <= s.heartbeat_interval_ms)
      return fail(pick(key), std::string("'") + key + "' (" + formatDuration(value) +
                                 ") must be longer than 'heartbeat_interval' (" +
                                 formatDuration(s.heartbeat_interval_ms) + ")");
  }
  return Status::ok();
}

std::string FileParser::itemLabel(const YAML::Node& item, const char* kind, size_t ordinal) {
  if (item.IsMap()) {
    for (auto it = item.begin(); it != item.end(); ++it) {
      if (it->first.IsScalar() && it->first.Scalar() == "name" && it->second.IsScalar() &&
          isValidName(it->second.Scalar()))
        return std::string(kind) + " '" + it->second.Scalar() + "'";
    }
  }
  return std::string(kind) + " #" + std::to_string(ordinal);
}

Status FileParser::parseHost(const YAML::Node& item) {
  HostSpec h;
  h.where = at(item);
  std::string label = itemLabel(item, "host", ++host_ordinal_);
  if (!item.IsMap())
    return fail(h.where, "expected a mapping for " + label + " (name, uri, role, ...), got " +
                             describe(item));
  std::vector<std::string> keys = {"name", "uri", "role", "capacity", "fence"};
  if (options_.legacy_fence_command) {
    keys.emplace_back("fence_command");
  } else {
    // Said before the unknown-key check, so that a policy written for fence
    // commands learns where they went.
    for (auto it = item.begin(); it != item.end(); ++it) {
      const YAML::Node key = it->first;
      if (key.IsScalar() && key.Scalar() == "fence_command")
        return fail(at(key), "'fence_command' (of " + label +
                                 ") is no longer supported: " + kFenceAgentsInstead);
    }
  }
  std::vector<Field> fields;
  TW_RETURN_IF_ERROR(mapFields(item, h.where, label, label, keys, &fields));
  SourceLocation name_at;
  std::optional<SourceLocation> fence_at;
  bool fence_set = false;
  for (const auto& f : fields) {
    if (f.key == "name") {
      name_at = at(f);
      TW_RETURN_IF_ERROR(readName(f.value, name_at, "'name'", &h.name));
    } else if (f.key == "uri") {
      TW_RETURN_IF_ERROR(readString(f, "uri", &h.uri));
      if (h.uri.find("://") == std::string::npos)
        return fail(at(f),
                    "expected a libvirt URI like qemu+ssh://host/system for 'uri', "
                    "got " +
                        describe(f.value));
    } else if (f.key == "role") {
      TW_RETURN_IF_ERROR(readEnum<HostRole>(
          f, "role", {{"active", HostRole::kActive}, {"spare", HostRole::kSpare}}, &h.role));
    } else if (f.key == "capacity") {
      TW_RETURN_IF_ERROR(parseCapacity(f, label, &h));
    } else if (f.key == "fence") {
      fence_set = true;
      fence_at = at(f);
      TW_RETURN_IF_ERROR(readFence(f, label, &h));
    } else if (f.key == "fence_command") {  // legacy_fence_command only
      h.fence_legacy_command = true;
    }
  }
  if (h.name.empty()) return fail(h.where, label + " has no 'name'");
  if (h.fence_legacy_command) fence_set = false;  // its command is not run: the default
  if (!fence_set) h.fence = h.uri.empty() ? FenceMethod::kNone : FenceMethod::kLibvirt;
  if (h.fence == FenceMethod::kLibvirt && h.uri.empty())
    return fail(*fence_at, "fence: libvirt needs a 'uri' for host '" + h.name + "'");
  draft_->policy.hosts.push_back(std::move(h));
  draft_->host_name_at.push_back(name_at);
  return Status::ok();
}

Status FileParser::readFence(const Field& f, const std::string& label, HostSpec* h) const {
  if (f.value.IsMap()) {
    std::vector<Field> fields;
    TW_RETURN_IF_ERROR(
        mapFields(f.value, at(f), "'fence'", "fence of " + label, {"agent"}, &fields));
    if (fields.empty())
      return fail(at(f), "fence of " + label + " names no agent: write fence: { agent: NAME }");
    const Field& agent = fields.front();
    h->fence_agent_at = at(agent);
    TW_RETURN_IF_ERROR(readName(agent.value, at(agent), "'fence.agent'", &h->fence_agent));
    h->fence = FenceMethod::kAgent;
    return Status::ok();
  }
  if (f.value.IsScalar() && f.value.Scalar() == "command") {
    if (options_.legacy_fence_command) {
      h->fence_legacy_command = true;
      return Status::ok();
    }
    return fail(at(f),
                "fence: command (of " + label + ") is no longer supported: " + kFenceAgentsInstead);
  }
  if (f.value.IsScalar() && f.value.Scalar() == "none") {
    h->fence = FenceMethod::kNone;
  } else if (f.value.IsScalar() && f.value.Scalar() == "libvirt") {
    h->fence = FenceMethod::kLibvirt;
  } else {
    return fail(at(f),
                "expected none, libvirt or { agent: NAME } for 'fence', got " + describe(f.value));
  }
  return Status::ok();
}

Status FileParser::parseCapacity(const Field& capacity, const std::string& label,
                                 HostSpec* h) const {
  std::vector<Field> fields;
  TW_RETURN_IF_ERROR(mapFields(capacity.value, at(capacity), "'capacity'", "capacity of " + label,
                               {"cpus", "memory"}, &fields));
  for (const auto& f : fields) {
    if (f.key == "cpus") {
      TW_RETURN_IF_ERROR(readInt(f, "capacity.cpus", 1, 4096, &h->cpus));
    } else if (f.key == "memory") {
      TW_RETURN_IF_ERROR(readSize(f, "capacity.memory", kMinTierMemoryMib, &h->memory_mib));
    }
  }
  return Status::ok();
}

}  // namespace tw::policy_parser
