// twctl's backup commands (docs/backups.md): backup vm, get backups [VM],
// restore vm NAME --from ID. Kept apart from commands.cc.
#pragma once

#include <string>

#include "commands.h"
#include "tw/json.h"

namespace tw::cli {

// twctl backup vm NAME: POST /api/v1/vms/NAME/backup.
Status backupVm(const CommandContext& ctx, const std::string& name);

// twctl get backups [VM]: GET /api/v1/backups[?vm=VM].
Status getBackups(const CommandContext& ctx, const std::string& vm);

// twctl restore vm NAME --from ID: POST /api/v1/vms/NAME/restore {"from": ID}.
// An empty ID is kInvalidArgument (nothing sent).
Status restoreVm(const CommandContext& ctx, const std::string& name, const std::string& from);

// The table of GET /api/v1/backups: id, vm, host, taken, size, took, method, path.
std::string renderBackups(const Json& answer);

}  // namespace tw::cli
