#include "render.h"

#include <algorithm>
#include <cctype>
#include <set>
#include <vector>

#include "table.h"

namespace tw::cli {

namespace {

// The array under `key`, or an empty one.
const Json& listOf(const Json& answer, const std::string& key) {
  static const Json kEmpty = Json::array();
  if (!answer.is_object()) return kEmpty;
  auto it = answer.find(key);
  if (it == answer.end() || !it->is_array()) return kEmpty;
  return *it;
}

// "used/capacity" of host[section][key].
std::string usedOfCapacity(const Json& host, const std::string& key) {
  auto part = [&](const char* section) {
    return host.is_object() && host.contains(section) ? field(host[section], key) : "";
  };
  std::string used = part("used");
  std::string capacity = part("capacity");
  if (used.empty() && capacity.empty()) return "";
  return (used.empty() ? "-" : used) + "/" + (capacity.empty() ? "-" : capacity);
}

int64_t intField(const Json& object, const std::string& key, int64_t fallback = 0) {
  if (!object.is_object()) return fallback;
  auto it = object.find(key);
  if (it == object.end() || !it->is_number()) return fallback;
  return it->get<int64_t>();
}

bool boolField(const Json& object, const std::string& key) {
  if (!object.is_object()) return false;
  auto it = object.find(key);
  return it != object.end() && it->is_boolean() && it->get<bool>();
}

// "updated_ms" -> "Updated", "state_since_ms" -> "State since".
std::string labelOf(std::string key) {
  if (key.size() > 3 && key.compare(key.size() - 3, 3, "_ms") == 0) key.resize(key.size() - 3);
  std::replace(key.begin(), key.end(), '_', ' ');
  if (!key.empty()) key[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(key[0])));
  return key;
}

std::string renderEventTable(const Json& events, bool with_subject) {
  std::vector<std::string> headers = {"id", "time", "level", "kind"};
  if (with_subject) headers.emplace_back("subject");
  headers.emplace_back("message");
  Table table(headers);
  for (const auto& e : events) {
    std::vector<std::string> row = {field(e, "id"), field(e, "t_ms"), field(e, "level"),
                                    field(e, "kind")};
    if (with_subject) row.push_back(field(e, "subject"));
    row.push_back(field(e, "message"));
    table.addRow(row);
  }
  return table.render();
}

}  // namespace

std::string renderPlan(const Json& answer) {
  const Json empty_object = Json::object();
  const Json& plan = answer.is_object() && answer.contains("plan") ? answer["plan"] : empty_object;
  Table table({"vm", "tier", "host", "action", "reason"});
  for (const auto& vm : listOf(plan, "vms")) {
    table.addRow({field(vm, "vm"), field(vm, "tier"), field(vm, "host"), field(vm, "action"),
                  field(vm, "reason")});
  }
  std::string out = table.render();

  if (plan.is_object() && plan.contains("n_plus_one") && plan["n_plus_one"].is_object()) {
    const Json& n1 = plan["n_plus_one"];
    std::string summary = field(n1, "summary");
    bool safe = boolField(n1, "safe");
    if (summary.empty()) summary = safe ? "safe" : "not safe";
    out += "\nN+1: " + summary + "\n";
    if (n1.contains("breaking") && n1["breaking"].is_object()) {
      for (const auto& [host, vms] : n1["breaking"].items()) {
        out += "  if host " + host + " fails, these cannot be placed: " + cellText("", vms) + "\n";
      }
    }
  }
  for (const auto& warning : listOf(answer, "warnings")) {
    out += "warning: " + cellText("", warning) + "\n";
  }
  if (boolField(answer, "dry_run")) {
    out += "dry run: nothing changed\n";
  } else if (boolField(answer, "changed")) {
    out += "applied policy version " + field(answer, "version") + "\n";
  } else {
    out += "no change\n";
  }
  return out;
}

std::string renderHosts(const Json& answer) {
  Table table(
      {"name", "role", "state", "since", "cpus", "memory_mib", "vms", "last_heartbeat", "reason",
       "self_fenced"});
  for (const auto& h : listOf(answer, "hosts")) {
    // Why the host last fenced itself (docs/fencing.md), when it ever did.
    std::string self_fenced = field(h, "self_fence_reason");
    if (!self_fenced.empty() && self_fenced != "-") self_fenced = field(h, "self_fenced_ms") + " " + self_fenced;
    table.addRow({field(h, "name"), field(h, "role"), field(h, "state"), field(h, "state_since_ms"),
                  usedOfCapacity(h, "cpus"), usedOfCapacity(h, "memory_mib"), field(h, "vms"),
                  field(h, "last_heartbeat_ms"), field(h, "reason"), self_fenced});
  }
  return table.render();
}

std::string renderTiers(const Json& answer) {
  Table table(
      {"name", "image", "replicas", "running", "healthy", "order", "after", "vcpus", "memory_mib"});
  for (const auto& t : listOf(answer, "tiers")) {
    table.addRow({field(t, "name"), field(t, "image"), field(t, "replicas"), field(t, "running"),
                  field(t, "healthy"), field(t, "order"), field(t, "after"), field(t, "vcpus"),
                  field(t, "memory_mib")});
  }
  std::string warnings;
  for (const auto& t : listOf(answer, "tiers")) {
    for (const char* key : {"backup_warnings", "site_warnings"}) {
      for (const auto& w : listOf(t, key)) {
        if (w.is_string()) warnings += "warning: tier '" + field(t, "name") + "': " + w.get<std::string>() + "\n";
      }
    }
  }
  return table.render() + warnings;
}

std::string renderVms(const Json& answer) {
  Table table({"name", "tier", "host", "epoch", "state", "health", "restarts", "relocations",
               "updated", "reason"});
  for (const auto& v : listOf(answer, "vms")) {
    table.addRow({field(v, "name"), field(v, "tier"), field(v, "host"), field(v, "epoch"),
                  field(v, "state"), field(v, "health"), field(v, "restarts"),
                  field(v, "relocations"), field(v, "updated_ms"), field(v, "reason")});
  }
  return table.render();
}

std::string renderEvents(const Json& answer) {
  return renderEventTable(listOf(answer, "events"), /*with_subject=*/true);
}

std::string renderIncidents(const Json& answer) {
  Table table({"id", "subject", "kind", "opened", "closed", "duration", "steps"});
  for (const auto& incident : listOf(answer, "incidents")) {
    int64_t opened = intField(incident, "opened_ms");
    int64_t closed = intField(incident, "closed_ms");
    std::string steps;
    for (const auto& step : listOf(incident, "steps")) {
      if (!steps.empty()) steps += ",";
      steps += field(step, "step");
      int64_t t = intField(step, "t_ms", -1);
      if (t >= 0 && opened > 0) steps += "@+" + formatDurationMs(t - opened);
    }
    std::string duration = opened > 0 && closed > 0 ? formatDurationMs(closed - opened) : "";
    table.addRow({field(incident, "id"), field(incident, "subject"), field(incident, "kind"),
                  field(incident, "opened_ms"), field(incident, "closed_ms"), duration, steps});
  }
  return table.render();
}

std::string renderControllers(const Json& answer) {
  Table table({"identity", "role", "url", "agent url", "last seen"});
  for (const auto& r : listOf(answer, "replicas")) {
    const bool leads = r.contains("leader") && r["leader"].is_boolean() && r["leader"].get<bool>();
    const bool self = r.contains("self") && r["self"].is_boolean() && r["self"].get<bool>();
    std::string seen = "-";
    if (r.contains("last_seen_s") && r["last_seen_s"].is_number()) {
      seen = formatDurationMs(static_cast<int64_t>(r["last_seen_s"].get<double>() * 1000)) + " ago";
    }
    table.addRow({field(r, "identity") + (self ? " (answered)" : ""), leads ? "leader" : "follower",
                  field(r, "public_url"), field(r, "agent_url"), seen});
  }
  std::string out = table.render();
  out += "term " + field(answer, "term") + ", store " + field(answer, "store") +
         (answer.contains("leader") && answer["leader"].is_null() ? ", no leader now" : "") + "\n";
  return out;
}

std::string renderEndpoints(const Json& answer) {
  Table table({"vm", "host", "address", "port", "name", "healthy"});
  for (const auto& e : listOf(answer, "endpoints")) {
    table.addRow({field(e, "vm"), field(e, "hypervisor"), field(e, "host"), field(e, "port"),
                  field(e, "name"), field(e, "healthy")});
  }
  return table.render();
}

std::string renderVm(const Json& vm) {
  static const std::vector<std::string> kOrder = {"name",        "tier",   "ordinal",   "host",
                                                  "epoch",       "state",  "health",    "restarts",
                                                  "relocations", "reason", "updated_ms"};
  std::vector<std::pair<std::string, std::string>> lines;
  std::set<std::string> shown;
  for (const auto& key : kOrder) {
    lines.emplace_back(labelOf(key), field(vm, key));
    shown.insert(key);
  }
  if (vm.is_object()) {
    // Fields this twctl does not know yet, after the known ones (Json keeps keys sorted).
    for (const auto& [key, value] : vm.items()) {
      if (shown.count(key) != 0 || key == "events") continue;
      lines.emplace_back(labelOf(key), cellText(key, value));
    }
  }
  size_t width = 0;
  for (const auto& [label, value] : lines) width = std::max(width, label.size());
  std::string out;
  for (auto& [label, value] : lines) {
    out += label + ":" + std::string(width - label.size() + 2, ' ') + (value.empty() ? "-" : value);
    out += "\n";
  }
  const Json& events = listOf(vm, "events");
  if (events.empty()) {
    out += "\nEvents: none\n";
  } else {
    out += "\nEvents:\n" + renderEventTable(events, /*with_subject=*/false);
  }
  return out;
}

std::string eventLine(const Json& event) {
  std::string level = field(event, "level");
  if (level.size() < 5) level.resize(5, ' ');
  std::string line = formatTimeMs(intField(event, "t_ms")) + "  " + level + "  " +
                     field(event, "kind") + "  " + field(event, "subject") + "  " +
                     field(event, "message");
  for (char& c : line) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  while (!line.empty() && line.back() == ' ') line.pop_back();
  return line;
}

std::string renderMessage(const Json& answer, const std::string& fallback) {
  if (answer.is_object() && answer.contains("message") && answer["message"].is_string()) {
    return answer["message"].get<std::string>() + "\n";
  }
  if (answer.is_null()) return fallback + "\n";
  return answer.dump(-1, ' ', false, Json::error_handler_t::replace) + "\n";
}

}  // namespace tw::cli
