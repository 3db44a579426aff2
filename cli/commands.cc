#include "commands.h"

#include <algorithm>
#include <map>

#include "render.h"
#include "tw/json.h"
#include "tw/policy.h"

namespace tw::cli {

namespace {

constexpr int kEventPage = 500;
constexpr int kPageLimit = 500;  // vms and hosts per GET (the API allows 5000)

void printJson(const CommandContext& ctx, const Json& answer) {
  ctx.out << answer.dump(2, ' ', false, Json::error_handler_t::replace) << "\n";
}

// Prints an action's answer.
Status printAction(const CommandContext& ctx, const Result<Json>& answer,
                   const std::string& fallback) {
  if (!answer.isOk()) return answer.status();
  if (ctx.format == OutputFormat::kJson) {
    printJson(ctx, answer->is_null() ? Json::object() : *answer);
  } else {
    ctx.out << renderMessage(*answer, fallback);
  }
  return Status::ok();
}

}  // namespace

Status applyPolicies(const CommandContext& ctx, const std::vector<std::string>& paths,
                     bool dry_run) {
  std::vector<PolicyFile> files;
  std::map<std::string, std::string> given_by;  // base name -> the -f that gave it
  for (const auto& path : paths) {
    Result<std::vector<PolicyFile>> read = readPolicyFiles(path);
    if (!read.isOk()) {
      // A missing file is the operator's input too: exit code 2.
      const Status& s = read.status();
      return s.where() ? Status(Code::kInvalidArgument, s.message(), *s.where())
                       : invalidArgument(s.message());
    }
    if (read->empty()) return invalidArgument("no policy files (*.yaml, *.yml) in " + path);
    for (auto& file : *read) {
      auto [it, inserted] = given_by.emplace(file.name, path);
      if (!inserted) {
        return invalidArgument("two policy files are named '" + file.name + "' (from " +
                               it->second + " and " + path + ")");
      }
      files.push_back(std::move(file));
    }
  }
  Json body = Json::object();
  body["files"] = files;
  Result<Json> answer =
      ctx.api.post(std::string("/api/v1/policies") + (dry_run ? "?dry_run=1" : ""), body);
  if (!answer.isOk()) return answer.status();
  if (ctx.format == OutputFormat::kJson) {
    printJson(ctx, *answer);
  } else {
    ctx.out << renderPlan(*answer);
  }
  return Status::ok();
}

std::optional<std::string> canonicalResource(const std::string& name) {
  static const std::map<std::string, std::string> kNames = {
      {"hosts", "hosts"},       {"host", "hosts"},   {"tiers", "tiers"},
      {"tier", "tiers"},        {"vms", "vms"},      {"vm", "vms"},
      {"events", "events"},     {"event", "events"}, {"incidents", "incidents"},
      {"incident", "incidents"}, {"endpoints", "endpoints"}, {"endpoint", "endpoints"},
      {"controllers", "controllers"}, {"controller", "controllers"}};
  auto it = kNames.find(name);
  if (it == kNames.end()) return std::nullopt;
  return it->second;
}

namespace {

// GET /api/v1/<resource> (vms or hosts) page by page (?limit=&after=), as
// one answer: {"<resource>": [every item]}. Stops at the first error.
Result<Json> getPaged(const CommandContext& ctx, const std::string& resource) {
  Json all = Json::array();
  std::string after;
  for (int pages = 0;; ++pages) {
    // A controller that keeps naming a next page (its list growing faster
    // than we read) must not keep us here for ever.
    if (pages > 100000) return unavailable("listing " + resource + ": too many pages");
    std::string path = "/api/v1/" + resource + "?limit=" + std::to_string(kPageLimit);
    if (!after.empty()) path += "&after=" + urlEncode(after);
    Result<Json> page = ctx.api.get(path);
    if (!page.isOk()) return page.status();
    if (!page->is_object() || !(*page)[resource].is_array()) {
      return unavailable("listing " + resource + ": the controller's answer has no '" + resource +
                         "' list");
    }
    for (auto& item : (*page)[resource]) all.push_back(std::move(item));
    if (!page->contains("next") || !(*page)["next"].is_string()) break;
    std::string next = (*page)["next"].get<std::string>();
    if (next.empty() || next == after) break;
    after = next;
  }
  return Json{{resource, all}};
}

}  // namespace

Status getResource(const CommandContext& ctx, const std::string& resource,
                   std::optional<int64_t> since) {
  if (resource == "endpoints") return invalidArgument("usage: twctl get endpoints TIER");
  std::string path = "/api/v1/" + resource;
  if (since) {
    if (resource != "events") return invalidArgument("--since applies to events only");
    path += "?since=" + std::to_string(*since);
  }
  Result<Json> answer =
      resource == "vms" || resource == "hosts" ? getPaged(ctx, resource) : ctx.api.get(path);
  if (!answer.isOk()) return answer.status();
  if (ctx.format == OutputFormat::kJson) {
    printJson(ctx, *answer);
    return Status::ok();
  }
  if (resource == "hosts") {
    ctx.out << renderHosts(*answer);
  } else if (resource == "tiers") {
    ctx.out << renderTiers(*answer);
  } else if (resource == "vms") {
    ctx.out << renderVms(*answer);
  } else if (resource == "events") {
    ctx.out << renderEvents(*answer);
  } else if (resource == "controllers") {
    ctx.out << renderControllers(*answer);
  } else {
    ctx.out << renderIncidents(*answer);
  }
  return Status::ok();
}

Status getEndpoints(const CommandContext& ctx, const std::string& tier) {
  if (tier.empty()) return invalidArgument("usage: twctl get endpoints TIER");
  Result<Json> answer = ctx.api.get("/api/v1/tiers/" + urlEncode(tier) + "/endpoints");
  if (!answer.isOk()) return answer.status();
  if (ctx.format == OutputFormat::kJson) {
    printJson(ctx, *answer);
  } else {
    ctx.out << renderEndpoints(*answer);
  }
  return Status::ok();
}

Status describeVm(const CommandContext& ctx, const std::string& name) {
  Result<Json> answer = ctx.api.get("/api/v1/vms/" + urlEncode(name));
  if (!answer.isOk()) return answer.status();
  if (ctx.format == OutputFormat::kJson) {
    printJson(ctx, *answer);
  } else {
    ctx.out << renderVm(*answer);
  }
  return Status::ok();
}

Status vmAction(const CommandContext& ctx, const std::string& action, const std::string& name) {
  return printAction(ctx, ctx.api.post("/api/v1/vms/" + urlEncode(name) + "/" + action, Json()),
                     action + " of vm '" + name + "' requested");
}

Status hostAction(const CommandContext& ctx, const std::string& action, const std::string& name) {
  return printAction(ctx, ctx.api.post("/api/v1/hosts/" + urlEncode(name) + "/" + action, Json()),
                     action + " of host '" + name + "' requested");
}

Status migrateVm(const CommandContext& ctx, const std::string& name, const std::string& to) {
  Json body = {{"to", to}};
  return printAction(ctx, ctx.api.post("/api/v1/vms/" + urlEncode(name) + "/migrate", body),
                     "migration of vm '" + name + "' to host '" + to + "' requested");
}

Status followEvents(const CommandContext& ctx, int64_t since, const std::function<bool()>& wait) {
  int64_t last = since;
  while (true) {
    Result<Json> answer = ctx.api.get("/api/v1/events?since=" + std::to_string(last) +
                                      "&limit=" + std::to_string(kEventPage));
    if (!answer.isOk()) return answer.status();
    size_t count = 0;
    if (answer->is_object() && answer->contains("events") && (*answer)["events"].is_array()) {
      for (const auto& event : (*answer)["events"]) {
        ++count;
        if (event.is_object() && event.contains("id") && event["id"].is_number_integer()) {
          last = std::max(last, event["id"].get<int64_t>());
        }
        if (ctx.format == OutputFormat::kJson) {
          ctx.out << event.dump(-1, ' ', false, Json::error_handler_t::replace) << "\n";
        } else {
          ctx.out << eventLine(event) << "\n";
        }
      }
    }
    ctx.out.flush();
    if (count < static_cast<size_t>(kEventPage) && !wait()) return Status::ok();
  }
}

std::string errorLine(const Status& status) {
  std::string line = "twctl: " + status.toString();
  std::replace(line.begin(), line.end(), '\n', ' ');
  std::replace(line.begin(), line.end(), '\r', ' ');
  return line;
}

int exitCodeFor(const Status& status) {
  if (status.isOk()) return 0;
  return status.code() == Code::kInvalidArgument ? 2 : 1;
}

}  // namespace tw::cli
