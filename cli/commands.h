// twctl's commands, each a function of an ApiClient and an output stream;
// cli/main.cc only parses the command line and calls one of them.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "tw/http_client.h"
#include "tw/status.h"

namespace tw::cli {

enum class OutputFormat { kTable, kJson };

struct CommandContext {
  ApiClient& api;
  OutputFormat format;
  std::ostream& out;
};

// twctl apply -f PATH... [--dry-run]: reads the files (tw::readPolicyFiles),
// sends them to POST /api/v1/policies and prints the plan. Local read errors
// and two files with the same base name are kInvalidArgument.
Status applyPolicies(const CommandContext& ctx, const std::vector<std::string>& paths,
                     bool dry_run);

// "hosts", "tiers", "vms", "events", "incidents", "endpoints" for a name twctl
// accepts (also the singular); nullopt for anything else.
std::optional<std::string> canonicalResource(const std::string& name);

// twctl get RESOURCE [--since ID]. REQUIRES: resource is canonical and not
// "endpoints" (getEndpoints). --since applies to events only (kInvalidArgument
// otherwise).
Status getResource(const CommandContext& ctx, const std::string& resource,
                   std::optional<int64_t> since);

// twctl get endpoints TIER: GET /api/v1/tiers/TIER/endpoints. An unknown tier
// is the controller's kNotFound.
Status getEndpoints(const CommandContext& ctx, const std::string& tier);

// twctl describe vm NAME.
Status describeVm(const CommandContext& ctx, const std::string& name);

// twctl restart|kill|reset vm NAME: POST /api/v1/vms/NAME/ACTION.
Status vmAction(const CommandContext& ctx, const std::string& action, const std::string& name);

// twctl drain|undrain host NAME: POST /api/v1/hosts/NAME/ACTION.
Status hostAction(const CommandContext& ctx, const std::string& action, const std::string& name);

// twctl migrate vm NAME --to HOST: POST /api/v1/vms/NAME/migrate {"to": HOST}.
Status migrateVm(const CommandContext& ctx, const std::string& name, const std::string& to);

// twctl events --follow: polls GET /api/v1/events?since=LAST and prints one line
// per event (one compact JSON object per line with -o json). After a poll that
// did not fill a page it calls `wait`, which returns false to stop.
Status followEvents(const CommandContext& ctx, int64_t since, const std::function<bool()>& wait);

// The one line twctl prints for an error: "twctl: [file:line:column: ]message".
std::string errorLine(const Status& status);

// 2 for bad input (kInvalidArgument), 1 for every other error, 0 for ok.
int exitCodeFor(const Status& status);

}  // namespace tw::cli
