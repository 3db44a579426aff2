// JSON codecs for the shared types (nlohmann::json). The API server, the HTTP
// link, twctl and the simulator all encode and decode through these, so the
// wire format has one definition. from_json throws nlohmann::json::exception
// on bad input; callers at a boundary use parseJson()/decode() instead.
#pragma once

#include <nlohmann/json.hpp>

#include "tw/model.h"
#include "tw/protocol.h"
#include "tw/status.h"

namespace tw {

using Json = nlohmann::json;

void to_json(Json& j, const Capacity& v);
void from_json(const Json& j, Capacity& v);
void to_json(Json& j, const HealthCheckSpec& v);
void from_json(const Json& j, HealthCheckSpec& v);
void to_json(Json& j, const RestartBudget& v);
void from_json(const Json& j, RestartBudget& v);
void to_json(Json& j, const ServicePort& v);
void from_json(const Json& j, ServicePort& v);
void to_json(Json& j, const StorageSpec& v);
void from_json(const Json& j, StorageSpec& v);
void to_json(Json& j, const PlacementSpec& v);
void to_json(Json& j, const TierSpec& v);
void to_json(Json& j, const HostSpec& v);
void to_json(Json& j, const ClusterSettings& v);
void to_json(Json& j, const PolicyFile& v);
void from_json(const Json& j, PolicyFile& v);
void to_json(Json& j, const VmRecord& v);
void to_json(Json& j, const HostRecord& v);
void to_json(Json& j, const EventRecord& v);
void from_json(const Json& j, EventRecord& v);
void to_json(Json& j, const Assignment& v);
void from_json(const Json& j, Assignment& v);
void to_json(Json& j, const AssignmentSet& v);
void from_json(const Json& j, AssignmentSet& v);
void to_json(Json& j, const DomainReport& v);
void from_json(const Json& j, DomainReport& v);
void to_json(Json& j, const Heartbeat& v);
void from_json(const Json& j, Heartbeat& v);
void to_json(Json& j, const AgentEvent& v);
void from_json(const Json& j, AgentEvent& v);

// Parses text; kInvalidArgument with line/column on a syntax error.
Result<Json> parseJson(const std::string& text);

// Decodes a value of type T from j; kInvalidArgument naming the field on error.
template <typename T>
Result<T> decode(const Json& j) {
  try {
    return j.get<T>();
  } catch (const nlohmann::json::exception& e) {
    return invalidArgument(std::string("bad JSON: ") + e.what());
  }
}

}  // namespace tw
