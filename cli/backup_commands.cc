#include "backup_commands.h"

#include <cstdio>

#include "render.h"
#include "table.h"

namespace tw::cli {

namespace {

void print(const CommandContext& ctx, const Json& answer) {
  ctx.out << answer.dump(2, ' ', false, Json::error_handler_t::replace) << "\n";
}

Status printActionAnswer(const CommandContext& ctx, const Result<Json>& answer,
                         const std::string& fallback) {
  if (!answer.isOk()) return answer.status();
  if (ctx.format == OutputFormat::kJson) {
    print(ctx, answer->is_null() ? Json::object() : *answer);
  } else {
    ctx.out << renderMessage(*answer, fallback);
  }
  return Status::ok();
}

std::string number(const Json& b, const char* key) {
  if (!b.is_object() || !b.contains(key) || !b[key].is_number()) return "";
  return std::to_string(b[key].get<int64_t>());
}

std::string mib(const Json& b) {
  if (!b.is_object() || !b.contains("bytes") || !b["bytes"].is_number()) return "";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f MiB", b["bytes"].get<double>() / (1024.0 * 1024.0));
  return buf;
}

}  // namespace

Status backupVm(const CommandContext& ctx, const std::string& name) {
  return printActionAnswer(ctx, ctx.api.post("/api/v1/vms/" + urlEncode(name) + "/backup", Json()),
                           "backup of vm '" + name + "' requested");
}

Status getBackups(const CommandContext& ctx, const std::string& vm) {
  std::string path = "/api/v1/backups";
  if (!vm.empty()) path += "?vm=" + urlEncode(vm);
  Result<Json> answer = ctx.api.get(path);
  if (!answer.isOk()) return answer.status();
  if (ctx.format == OutputFormat::kJson) {
    print(ctx, *answer);
  } else {
    ctx.out << renderBackups(*answer);
  }
  return Status::ok();
}

Status restoreVm(const CommandContext& ctx, const std::string& name, const std::string& from) {
  if (from.empty()) return invalidArgument("usage: twctl restore vm NAME --from BACKUP_ID");
  Json body = {{"from", from}};
  return printActionAnswer(ctx,
                           ctx.api.post("/api/v1/vms/" + urlEncode(name) + "/restore", body),
                           "restore of vm '" + name + "' from backup '" + from + "' requested");
}

std::string renderBackups(const Json& answer) {
  Table table({"id", "vm", "host", "size", "took_ms", "method", "path"});
  if (answer.is_object() && answer.contains("backups") && answer["backups"].is_array()) {
    for (const auto& b : answer["backups"]) {
      table.addRow({field(b, "id"), field(b, "vm"), field(b, "host"), mib(b),
                    number(b, "duration_ms"), field(b, "method"), field(b, "path")});
    }
  }
  return table.render();
}

}  // namespace tw::cli
