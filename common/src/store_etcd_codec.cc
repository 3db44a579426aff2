// EtcdStore's values: ids as zero-padded key parts, numbers, and the records
// as the JSON values stored under their keys (to_json of tw/json.h where it
// exists).
#include "store_etcd_store.h"

#include <cinttypes>
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

namespace tw::etcd_store {

std::string padded(int64_t id) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%020" PRId64, id);
  return buf;
}

Result<int64_t> parseInt(const std::string& key, const std::string& text) {
  if (text.empty() || text.size() > 19 || text.find_first_not_of("0123456789") != std::string::npos) {
    return internalError("etcd key " + inQuotes(key) + " holds " + inQuotes(text) + ", not a number");
  }
  return static_cast<int64_t>(std::stoll(text));
}

Result<std::string> dumpValue(const Json& j) {
  try {
    return j.dump();
  } catch (const Json::exception& e) {
    return invalidArgument(std::string("cannot encode as JSON: ") + e.what());
  }
}

// ---- records <-> JSON values (to_json of tw/json.h where it exists) ----

Json policyJson(const PolicyRecord& p) {
  Json files = Json::array();
  for (const PolicyFile& f : p.files) files.push_back(f);
  return Json{{"version", p.version}, {"applied_ms", p.applied_ms}, {"digest", p.digest}, {"files", files}};
}
PolicyRecord policyFrom(const Json& j) {
  PolicyRecord p;
  p.version = j.at("version").get<int64_t>();
  p.applied_ms = j.at("applied_ms").get<int64_t>();
  p.digest = j.at("digest").get<std::string>();
  p.files = j.at("files").get<std::vector<PolicyFile>>();
  return p;
}

HostRecord hostFrom(const Json& j) {
  HostRecord h;
  h.name = j.at("name").get<std::string>();
  std::string state = j.at("state").get<std::string>();
  std::optional<HostState> parsed = hostStateFromString(state);
  if (!parsed) throw Json::other_error::create(501, "unknown host state '" + state + "'", &j);
  h.state = *parsed;
  h.state_since_ms = j.at("state_since_ms").get<int64_t>();
  h.capacity.cpus = j.at("capacity").at("cpus").get<int>();
  h.capacity.memory_mib = j.at("capacity").at("memory_mib").get<int64_t>();
  h.reason = j.at("reason").get<std::string>();
  h.watchdog_ms = j.contains("watchdog_ms") ? j.at("watchdog_ms").get<int64_t>() : -1;
  return h;
}

VmRecord vmFrom(const Json& j) {
  VmRecord v;
  v.name = j.at("name").get<std::string>();
  v.tier = j.at("tier").get<std::string>();
  v.ordinal = j.at("ordinal").get<int>();
  v.host = j.at("host").get<std::string>();
  v.epoch = j.at("epoch").get<int64_t>();
  std::string state = j.at("state").get<std::string>();
  std::optional<VmState> s = vmStateFromString(state);
  if (!s) throw Json::other_error::create(501, "unknown vm state '" + state + "'", &j);
  v.state = *s;
  std::string health = j.at("health").get<std::string>();
  std::optional<Health> h = healthFromString(health);
  if (!h) throw Json::other_error::create(501, "unknown health '" + health + "'", &j);
  v.health = *h;
  v.restarts = j.at("restarts").get<int>();
  v.relocations = j.at("relocations").get<int>();
  v.reason = j.at("reason").get<std::string>();
  v.updated_ms = j.at("updated_ms").get<int64_t>();
  return v;
}

Json incidentJson(const IncidentRecord& i) {
  Json steps = Json::array();
  for (const IncidentStep& st : i.steps) steps.push_back(Json{{"step", st.step}, {"t_ms", st.t_ms}, {"detail", st.detail}});
  return Json{{"id", i.id},           {"subject", i.subject}, {"kind", i.kind}, {"opened_ms", i.opened_ms},
              {"closed_ms", i.closed_ms}, {"summary", i.summary}, {"steps", steps}};
}
IncidentRecord incidentFrom(const Json& j) {
  IncidentRecord i;
  i.id = j.at("id").get<int64_t>();
  i.subject = j.at("subject").get<std::string>();
  i.kind = j.at("kind").get<std::string>();
  i.opened_ms = j.at("opened_ms").get<int64_t>();
  i.closed_ms = j.at("closed_ms").get<int64_t>();
  i.summary = j.at("summary").get<std::string>();
  for (const Json& st : j.at("steps")) {
    i.steps.push_back(IncidentStep{st.at("step").get<std::string>(), st.at("t_ms").get<int64_t>(),
                                   st.at("detail").get<std::string>()});
  }
  return i;
}

Json actionJson(const ActionRecord& a) {
  return Json{{"id", a.id}, {"kind", a.kind}, {"subject", a.subject}, {"data_json", a.data_json},
              {"started_ms", a.started_ms}};
}
ActionRecord actionFrom(const Json& j) {
  return ActionRecord{j.at("id").get<int64_t>(), j.at("kind").get<std::string>(),
                      j.at("subject").get<std::string>(), j.at("data_json").get<std::string>(),
                      j.at("started_ms").get<int64_t>()};
}

Json tierJson(int64_t policy_version, int64_t ord, const Json& spec) {
  return Json{{"policy_version", policy_version}, {"ord", ord}, {"spec", spec}};
}

}  // namespace tw::etcd_store
