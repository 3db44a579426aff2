// The one logging facade (over spdlog), to stderr. Under systemd (stderr is
// the journal's stream) lines carry no time of their own but a syslog
// priority prefix ("<3>" error ...), which journald takes. INFO for state changes,
// DEBUG for loops. Quote ids: "restarting vm 'apache-1' on host 'h2': domain crashed".
#pragma once

#include <spdlog/spdlog.h>

namespace tw::log {

// Sets up the default stderr logger with the component name ("controller",
// "agent h1", "twctl") and a level name ("debug", "info", "warn", "error").
void init(const std::string& component, const std::string& level = "info");

// Logs `message` at the level an event carries: "error", "warn", else info.
void at(const std::string& level, const std::string& message);

using spdlog::debug;
using spdlog::error;
using spdlog::info;
using spdlog::warn;

}  // namespace tw::log
