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
void to_json(Json& j, const FloatingAddressSpec& v);
void from_json(const Json& j, FloatingAddressSpec& v);
void from_json(const Json& j, StorageSpec& v);
void to_json(Json& j, const BackupSpec& v);
void from_json(const Json& j, BackupSpec& v);
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
void to_json(Json& j, const HostReport& v);
void from_json(const Json& j, HostReport& v);
void to_json(Json& j, const HostChecks& v);
void from_json(const Json& j, HostChecks& v);
void to_json(Json& j, const PeerInfo& v);
void from_json(const Json& j, PeerInfo& v);
void to_json(Json& j, const AssignmentSet& v);
void from_json(const Json& j, AssignmentSet& v);
void to_json(Json& j, const DomainReport& v);
void from_json(const Json& j, DomainReport& v);
void to_json(Json& j, const Heartbeat& v);
void from_json(const Json& j, Heartbeat& v);
void to_json(Json& j, const BackupRecord& v);
void from_json(const Json& j, BackupRecord& v);
void to_json(Json& j, const AgentEvent& v);
void from_json(const Json& j, AgentEvent& v);

// The text of j as sent on the wire (compact, or indented when indent >= 0).
// Every JSON answer and request goes through here: a string that is not valid
// UTF-8 (a user's bytes quoted in an error message) comes out with U+FFFD in
// place of each bad byte instead of throwing (nlohmann's type_error.316).
std::string jsonText(const Json& j, int indent = -1);

// Parses text; kInvalidArgument on anything nlohmann refuses: a syntax error
// (with line/column), a number out of range (1e400), invalid UTF-8.
Result<Json> parseJson(const std::string& text);

// kInvalidArgument when j holds a floating-point number that no integer field
// could take (outside the range of int32, NaN): the wire format has no
// fractional fields, and converting such a number to an int is undefined
// behaviour in nlohmann's get<int>(). Walks j without recursion.
Status checkNumbersFitIntegers(const Json& j);

// Decodes a value of type T from j; kInvalidArgument naming the field on error.
template <typename T>
Result<T> decode(const Json& j) {
  Status numbers = checkNumbersFitIntegers(j);
  if (!numbers.isOk()) return numbers;
  try {
    return j.get<T>();
  } catch (const nlohmann::json::exception& e) {
    return invalidArgument(std::string("bad JSON: ") + e.what());
  }
}

}  // namespace tw
