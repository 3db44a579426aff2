// twctl, the operator's command line: parses flags, resolves where the
// controller is, runs one command (cli/commands.h). Every error is one line on
// stderr, "twctl: <message>", and exit code 2 (usage, bad input) or 1.
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdint>
#include <iostream>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "backup_commands.h"
#include "commands.h"
#include "config.h"
#include "tw/http_client.h"

namespace {

constexpr tw::Millis kConnectTimeoutMs = 3000;
constexpr tw::Millis kReadTimeoutMs = 60000;  // an apply plans the whole cluster
constexpr auto kFollowInterval = std::chrono::milliseconds(500);

int fail(const tw::Status& status) {
  std::cerr << tw::cli::errorLine(status) << std::endl;
  return tw::cli::exitCodeFor(status);
}

std::optional<std::string> given(const CLI::Option* option, const std::string& value) {
  if (option->count() == 0) return std::nullopt;
  return value;
}

int run(int argc, char** argv) {
  CLI::App app{"twctl: operate a tierwarden cluster", "twctl"};
  app.require_subcommand(1);
  app.fallthrough();  // global options may follow the subcommand

  std::string controller_flag, token_flag, token_file_flag, ca_flag;
  std::string output = "table";
  CLI::Option* controller_opt =
      app.add_option("--controller", controller_flag,
                     "controller URL (env TW_CONTROLLER; default https://127.0.0.1:7800; http:// "
                     "only for a controller run with --insecure-http); several replicas: URL,URL,... "
                     "(twctl follows the leader, docs/ha.md)");
  CLI::Option* ca_opt = app.add_option(
      "--ca", ca_flag,
      "the controller's CA certificate, <state-dir>/tls/ca.pem on its machine (env TW_CA; default: "
      "the system's CAs)");
  CLI::Option* token_opt = app.add_option("--token", token_flag, "API token (env TW_TOKEN)");
  CLI::Option* token_file_opt = app.add_option("--token-file", token_file_flag,
                                               "file holding the API token (env TW_TOKEN_FILE)");
  token_opt->excludes(token_file_opt);
  app.add_option("-o,--output", output, "output format: table or json")
      ->check(CLI::IsMember({"table", "json"}));
  app.footer(
      "Settings: flags > environment > config file ($TW_CONFIG or "
      "~/.config/tierwarden/twctl.conf: controller, token, token_file, ca) > defaults.");

  std::vector<std::string> apply_files;
  bool dry_run = false;
  CLI::App* apply = app.add_subcommand("apply", "apply policy files (YAML)");
  apply->add_option("-f,--filename", apply_files, "a policy file, or a directory of *.yaml")
      ->required();
  apply->add_flag("--dry-run", dry_run, "show the plan, change nothing");

  std::string resource, get_name;
  int64_t since = 0;
  CLI::App* get = app.add_subcommand(
      "get", "list hosts, tiers, vms, events, incidents, controllers or backups, or a tier's endpoints");
  get->add_option("resource", resource,
                  "hosts, tiers, vms, events, incidents, controllers, endpoints or backups")
      ->required();
  CLI::Option* get_name_opt =
      get->add_option("name", get_name,
                      "endpoints: the tier (twctl get endpoints TIER); backups: a vm");
  CLI::Option* get_since_opt =
      get->add_option("--since", since, "events: only those after this id");

  std::string kind, name, to_host;
  auto add_object = [&](CLI::App* sub, const char* expected_kind, const char* what) {
    std::string expected = expected_kind;
    std::string usage = "twctl " + sub->get_name() + " " + expected + " NAME";
    sub->add_option("kind", kind, expected)
        ->required()
        ->check(CLI::Validator(
            [expected, usage](std::string& value) {
              return value == expected
                         ? std::string()
                         : "expected '" + expected + "' (" + usage + "), got '" + value + "'";
            },
            expected));
    sub->add_option("name", name, what)->required();
    return sub;
  };
  CLI::App* describe =
      add_object(app.add_subcommand("describe", "show a vm and its events"), "vm", "vm name");
  CLI::App* restart =
      add_object(app.add_subcommand("restart", "restart a vm in place"), "vm", "vm name");
  CLI::App* kill =
      add_object(app.add_subcommand("kill", "kill a vm (the system heals it)"), "vm", "vm name");
  CLI::App* reset = add_object(
      app.add_subcommand("reset", "reset a vm's restart budget and error state"), "vm", "vm name");
  CLI::App* drain =
      add_object(app.add_subcommand("drain", "move every vm off a host and keep it empty"), "host",
                 "host name");
  CLI::App* undrain = add_object(app.add_subcommand("undrain", "let a drained host take vms again"),
                                 "host", "host name");
  CLI::App* migrate =
      add_object(app.add_subcommand("migrate", "live-migrate a vm"), "vm", "vm name");
  migrate->add_option("--to", to_host, "target host")->required();
  CLI::App* backup =
      add_object(app.add_subcommand("backup", "back up a vm's disk now"), "vm", "vm name");
  std::string restore_from;
  CLI::App* restore = add_object(
      app.add_subcommand("restore", "stop a vm, replace its disk from a backup, start it"), "vm",
      "vm name");
  restore->add_option("--from", restore_from, "backup id (twctl get backups VM)")->required();

  bool follow = false;
  int64_t events_since = 0;
  CLI::App* events = app.add_subcommand("events", "print events; --follow keeps polling");
  events->add_flag("-f,--follow", follow, "print new events as they come, until interrupted");
  CLI::Option* events_since_opt =
      events->add_option("--since", events_since, "only events after this id");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help
    return fail(tw::invalidArgument(e.what()));
  }

  // Where the controller is.
  tw::cli::EnvLookup env = tw::cli::processEnv();
  tw::cli::ConnectionValues flags;
  flags.source = "command line";
  flags.controller = given(controller_opt, controller_flag);
  flags.token = given(token_opt, token_flag);
  flags.token_file = given(token_file_opt, token_file_flag);
  flags.ca = given(ca_opt, ca_flag);
  tw::Result<tw::cli::ConnectionValues> file = tw::cli::loadConfigFile(env);
  if (!file.isOk()) {
    const tw::Status& s = file.status();
    return fail(s.where() ? tw::Status(tw::Code::kInvalidArgument, s.message(), *s.where())
                          : tw::invalidArgument(s.message()));
  }
  tw::Result<tw::cli::ConnectionSettings> settings =
      tw::cli::resolveSettings(flags, tw::cli::envValues(env), *file);
  if (!settings.isOk()) return fail(settings.status());

  tw::ApiClientOptions options;
  options.base_url = settings->controller;
  options.token = settings->token;
  options.ca_file = settings->ca_file;
  options.connect_timeout_ms = kConnectTimeoutMs;
  options.read_timeout_ms = kReadTimeoutMs;
  options.no_leader_retry_ms = 5000;  // a failover's election (docs/ha.md)
  tw::ApiClient api(options);
  tw::cli::CommandContext ctx{
      api, output == "json" ? tw::cli::OutputFormat::kJson : tw::cli::OutputFormat::kTable,
      std::cout};

  tw::Status status;
  if (apply->parsed()) {
    status = tw::cli::applyPolicies(ctx, apply_files, dry_run);
  } else if (get->parsed()) {
    std::optional<std::string> canonical = tw::cli::canonicalResource(resource);
    if (resource == "backups" || resource == "backup") {
      status = get_since_opt->count() > 0 ? tw::invalidArgument("--since applies to events only")
                                          : tw::cli::getBackups(ctx, get_name);
    } else if (!canonical) {
      status = tw::invalidArgument(
          "unknown resource '" + resource +
          "' (expected hosts, tiers, vms, events, incidents, controllers, endpoints or backups)");
    } else if (*canonical == "endpoints") {
      status = get_since_opt->count() > 0
                   ? tw::invalidArgument("--since applies to events only")
                   : tw::cli::getEndpoints(ctx, get_name);
    } else if (get_name_opt->count() > 0) {
      status = tw::invalidArgument("twctl get " + *canonical + " takes no name, got '" +
                                   get_name + "'");
    } else {
      status = tw::cli::getResource(
          ctx, *canonical,
          get_since_opt->count() > 0 ? std::optional<int64_t>(since) : std::nullopt);
    }
  } else if (describe->parsed()) {
    status = tw::cli::describeVm(ctx, name);
  } else if (restart->parsed()) {
    status = tw::cli::vmAction(ctx, "restart", name);
  } else if (kill->parsed()) {
    status = tw::cli::vmAction(ctx, "kill", name);
  } else if (reset->parsed()) {
    status = tw::cli::vmAction(ctx, "reset", name);
  } else if (drain->parsed()) {
    status = tw::cli::hostAction(ctx, "drain", name);
  } else if (undrain->parsed()) {
    status = tw::cli::hostAction(ctx, "undrain", name);
  } else if (migrate->parsed()) {
    status = tw::cli::migrateVm(ctx, name, to_host);
  } else if (backup->parsed()) {
    status = tw::cli::backupVm(ctx, name);
  } else if (restore->parsed()) {
    status = tw::cli::restoreVm(ctx, name, restore_from);
  } else if (events->parsed()) {
    if (follow) {
      status = tw::cli::followEvents(ctx, events_since, [] {
        std::this_thread::sleep_for(kFollowInterval);
        return true;  // until interrupted
      });
    } else {
      status = tw::cli::getResource(
          ctx, "events",
          events_since_opt->count() > 0 ? std::optional<int64_t>(events_since) : std::nullopt);
    }
  }
  if (!status.isOk()) {
    if (status.code() == tw::Code::kPermissionDenied && settings->token.empty()) {
      status = tw::Status(status.code(), status.message() +
                                             " (no token given: use --token, --token-file, "
                                             "TW_TOKEN or the config file)");
    }
    return fail(status);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {  // a bug or out of memory: still one line
    return fail(tw::internalError(e.what()));
  }
}
