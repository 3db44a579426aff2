// twctl's table output: one function per answer of docs/api.md. Each takes
// the server's JSON and returns the text to print. Missing fields show as "-",
// so an older or newer controller still gets readable output.
#pragma once

#include <string>

#include "tw/json.h"

namespace tw::cli {

// POST /api/v1/policies: the plan table (VM, TIER, HOST, ACTION, REASON), the
// N+1 summary with the hosts whose loss would strand VMs, "warning: ..." lines,
// and a last line: "dry run: nothing changed", "applied policy version N" or
// "no change".
std::string renderPlan(const Json& answer);

// GET /api/v1/hosts, /tiers, /vms, /events, /incidents: a table.
std::string renderHosts(const Json& answer);
std::string renderTiers(const Json& answer);
std::string renderVms(const Json& answer);
std::string renderEvents(const Json& answer);
std::string renderIncidents(const Json& answer);
// GET /api/v1/controllers: one row per replica (IDENTITY, ROLE leader or
// follower, URL, AGENT URL, LAST SEEN), then "term N".
std::string renderControllers(const Json& answer);

// GET /api/v1/tiers/{tier}/endpoints: VM, HOST (the hypervisor), ADDRESS and
// PORT (where clients connect), NAME (the service port), HEALTHY.
std::string renderEndpoints(const Json& answer);

// GET /api/v1/vms/{name}: "Key:  value" lines, then its events as a table.
std::string renderVm(const Json& vm);

// One event as one line (twctl events --follow): time, level, kind, subject, message.
std::string eventLine(const Json& event);

// The answer of an action (restart, kill, drain, ...): its "message" field, else
// `fallback` when the answer has no body, else the answer as compact JSON.
// Ends in '\n'.
std::string renderMessage(const Json& answer, const std::string& fallback);

}  // namespace tw::cli
