// twctl's testable parts: table formatting, settings resolution, rendering of
// the API's answers, error lines and exit codes.
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <optional>
#include <string>

#include "cli/backup_commands.h"
#include "cli/commands.h"
#include "cli/config.h"
#include "cli/render.h"
#include "cli/table.h"

namespace tw::cli {
namespace {

constexpr int64_t kNoonMay1 = 1714564800000;  // 2024-05-01T12:00:00Z

EnvLookup fakeEnv(std::map<std::string, std::string> vars) {
  return [vars = std::move(vars)](const std::string& name) -> std::optional<std::string> {
    auto it = vars.find(name);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

std::string writeTemp(const std::string& name, const std::string& content) {
  std::string path = ::testing::TempDir() + "twctl_test_" + name;
  std::ofstream(path) << content;
  return path;
}

// ----------------------------------------------------------------- table ---

// Pins: columns are as wide as their widest cell plus three spaces, headers are
// upper-cased, and the last column carries no padding.
TEST(TwctlTable, AlignsColumnsToContent) {
  Table t({"name", "state", "reason"});
  t.addRow({"apache-1", "running", "ok"});
  t.addRow({"db-1", "crashed", "domain crashed"});
  EXPECT_EQ(t.render(),
            "NAME       STATE     REASON\n"
            "apache-1   running   ok\n"
            "db-1       crashed   domain crashed\n");
}

// Pins: a table without rows prints its header line only.
TEST(TwctlTable, EmptyTableIsItsHeader) {
  Table t({"vm", "host"});
  EXPECT_TRUE(t.empty());
  EXPECT_EQ(t.render(), "VM   HOST\n");
}

// Pins: empty and missing cells show "-", newlines in a cell never break the
// row, and a header wider than its cells sets the width.
TEST(TwctlTable, EmptyCellsAndNewlinesKeepOneLinePerRow) {
  Table t({"name", "reason"});
  t.addRow({"web-1"});
  t.addRow({"", "line one\nline two"});
  EXPECT_EQ(t.render(),
            "NAME    REASON\n"
            "web-1   -\n"
            "-       line one line two\n");
}

// Pins: *_ms timestamps render as ISO-8601 UTC with milliseconds; 0 means never.
TEST(TwctlTable, FormatsTimesAsIsoUtc) {
  EXPECT_EQ(formatTimeMs(kNoonMay1 + 250), "2024-05-01T12:00:00.250Z");
  EXPECT_EQ(formatTimeMs(0), "-");
  EXPECT_EQ(cellText("updated_ms", Json(kNoonMay1 + 2000)), "2024-05-01T12:00:02.000Z");
  EXPECT_EQ(cellText("epoch", Json(kNoonMay1)), "1714564800000");
}

// Pins: how other JSON values become cell text.
TEST(TwctlTable, CellTextOfJsonValues) {
  EXPECT_EQ(cellText("vms", Json::array({"db-1", "web-2"})), "db-1,web-2");
  EXPECT_EQ(cellText("reason", Json()), "");
  EXPECT_EQ(cellText("safe", Json(true)), "true");
  EXPECT_EQ(cellText("placement", Json{{"spread", "required"}}), R"({"spread":"required"})");
  EXPECT_EQ(field(Json{{"name", "h1"}}, "missing"), "");
  EXPECT_EQ(field(Json::array(), "name"), "");
}

// Pins: durations are short and human.
TEST(TwctlTable, FormatsDurations) {
  EXPECT_EQ(formatDurationMs(850), "850ms");
  EXPECT_EQ(formatDurationMs(1250), "1.2s");
  EXPECT_EQ(formatDurationMs(185000), "3m05s");
  EXPECT_EQ(formatDurationMs(7800000), "2h10m");
}

// ---------------------------------------------------------------- config ---

// Pins: the config syntax: comments, blank lines, spaces, quotes, and a
// relative or ~/ token_file resolved against the config's directory or $HOME.
TEST(TwctlConfig, ParsesKeyValueLines) {
  Result<ConnectionValues> v = parseConfig(
      "# my cluster\n\n  controller = http://ctl:7800  \ntoken_file=\"secrets/token\"\n",
      "/etc/tw/twctl.conf", "/home/op");
  ASSERT_TRUE(v.isOk()) << v.status().toString();
  EXPECT_EQ(v->source, "/etc/tw/twctl.conf");
  EXPECT_EQ(v->controller, "http://ctl:7800");
  EXPECT_EQ(v->token_file, "/etc/tw/secrets/token");
  EXPECT_FALSE(v->token.has_value());

  Result<ConnectionValues> home = parseConfig("token_file = ~/tw.token\n", "/x/c.conf", "/home/op");
  ASSERT_TRUE(home.isOk());
  EXPECT_EQ(home->token_file, "/home/op/tw.token");
}

// Pins: each kind of bad line is refused with the file and its line number.
TEST(TwctlConfig, BadLinesNameTheirLine) {
  struct Case {
    std::string text;
    int line;
    std::string message_part;
  };
  const Case cases[] = {
      {"controller = http://a\nthis is not a setting\n", 2, "expected 'key = value'"},
      {"# c\ncontroler = http://a\n", 2, "unknown key 'controler'"},
      {"token = a\n\ntoken = b\n", 3, "'token' is set twice"},
      {"token =   \n", 1, "empty value"},
  };
  for (const auto& c : cases) {
    Result<ConnectionValues> v = parseConfig(c.text, "twctl.conf", std::nullopt);
    ASSERT_FALSE(v.isOk()) << c.text;
    EXPECT_EQ(v.status().code(), Code::kInvalidArgument);
    ASSERT_TRUE(v.status().where().has_value());
    EXPECT_EQ(v.status().where()->line, c.line) << c.text;
    EXPECT_NE(v.status().toString().find("twctl.conf:" + std::to_string(c.line) + ": "),
              std::string::npos)
        << v.status().toString();
    EXPECT_NE(v.status().message().find(c.message_part), std::string::npos) << v.status().message();
  }
}

// Pins: flags beat the environment, which beats the config file, which beats
// the default, for the controller URL and the token independently.
TEST(TwctlConfig, PrecedenceFlagsEnvFileDefault) {
  ConnectionValues flags{"command line", {}, {}, {}, {}};
  ConnectionValues env{"environment", {}, {}, {}, {}};
  ConnectionValues file{"twctl.conf", {}, {}, {}, {}};

  Result<ConnectionSettings> s = resolveSettings(flags, env, file);
  ASSERT_TRUE(s.isOk());
  EXPECT_EQ(s->controller, "https://127.0.0.1:7800");
  EXPECT_EQ(s->token, "");

  file.controller = "http://file:1";
  file.token = "file-token";
  s = resolveSettings(flags, env, file);
  ASSERT_TRUE(s.isOk());
  EXPECT_EQ(s->controller, "http://file:1");
  EXPECT_EQ(s->token, "file-token");

  env.controller = "http://env:2";
  env.token = "env-token";
  s = resolveSettings(flags, env, file);
  ASSERT_TRUE(s.isOk());
  EXPECT_EQ(s->controller, "http://env:2");
  EXPECT_EQ(s->token, "env-token");

  flags.controller = "http://flag:3";
  s = resolveSettings(flags, env, file);
  ASSERT_TRUE(s.isOk());
  EXPECT_EQ(s->controller, "http://flag:3");
  EXPECT_EQ(s->token, "env-token");  // no token flag: the environment's still wins
}

// Pins: the controller's CA comes from the highest layer that names one
// (--ca, TW_CA, `ca =`); none: empty (the system's CAs).
TEST(TwctlConfig, CaFromHighestLayer) {
  ConnectionValues flags{"command line", {}, {}, {}, {}};
  ConnectionValues env{"environment", {}, {}, {}, {}};
  ConnectionValues file{"twctl.conf", {}, {}, {}, "/etc/tierwarden/ca.pem"};
  Result<ConnectionSettings> s = resolveSettings(flags, env, ConnectionValues{});
  ASSERT_TRUE(s.isOk());
  EXPECT_EQ(s->ca_file, "");
  s = resolveSettings(flags, env, file);
  ASSERT_TRUE(s.isOk());
  EXPECT_EQ(s->ca_file, "/etc/tierwarden/ca.pem");
  env.ca = "/env/ca.pem";
  s = resolveSettings(flags, env, file);
  EXPECT_EQ(s->ca_file, "/env/ca.pem");
  flags.ca = "/flag/ca.pem";
  s = resolveSettings(flags, env, file);
  EXPECT_EQ(s->ca_file, "/flag/ca.pem");
  // The config file's key, relative to the file; and the environment variable.
  auto parsed = parseConfig("ca = tls/ca.pem\n", "/home/u/.config/tierwarden/twctl.conf", "/home/u");
  ASSERT_TRUE(parsed.isOk()) << parsed.status().toString();
  EXPECT_EQ(parsed->ca, "/home/u/.config/tierwarden/tls/ca.pem");
  EnvLookup lookup = [](const std::string& name) -> std::optional<std::string> {
    if (name == "TW_CA") return std::string("/x/ca.pem");
    return std::nullopt;
  };
  EXPECT_EQ(envValues(lookup).ca, "/x/ca.pem");
}

// Pins: a token file at a higher layer beats a token at a lower one; the file
// is read and trimmed; one layer giving both is refused.
TEST(TwctlConfig, TokenFileFromHigherLayerWins) {
  std::string path = writeTemp("token", "  s3cret\n");
  ConnectionValues flags{"command line", {}, {}, path, {}};
  ConnectionValues env{"environment", {}, "env-token", {}, {}};
  ConnectionValues file{"twctl.conf", {}, {}, {}, {}};
  Result<ConnectionSettings> s = resolveSettings(flags, env, file);
  ASSERT_TRUE(s.isOk()) << s.status().toString();
  EXPECT_EQ(s->token, "s3cret");

  env.token_file = path;
  flags.token_file.reset();
  s = resolveSettings(flags, env, file);
  ASSERT_FALSE(s.isOk());
  EXPECT_EQ(s.status().code(), Code::kInvalidArgument);
  EXPECT_NE(s.status().message().find("environment"), std::string::npos);
}

// Pins: unreadable or empty token files and bad URLs are refused, naming where
// the setting came from.
TEST(TwctlConfig, BadTokenFileAndUrlAreRefused) {
  ConnectionValues none{"environment", {}, {}, {}, {}};
  ConnectionValues file{"/etc/twctl.conf", {}, {}, "/nonexistent/token", {}};
  Result<ConnectionSettings> s = resolveSettings(none, none, file);
  ASSERT_FALSE(s.isOk());
  EXPECT_EQ(s.status().message().rfind("/etc/twctl.conf: cannot read token file", 0), 0u)
      << s.status().message();

  file.token_file = writeTemp("empty_token", " \n");
  s = resolveSettings(none, none, file);
  ASSERT_FALSE(s.isOk());
  EXPECT_NE(s.status().message().find("is empty"), std::string::npos);

  ConnectionValues flags{"command line", "127.0.0.1:7800", {}, {}, {}};
  s = resolveSettings(flags, none, ConnectionValues{});
  ASSERT_FALSE(s.isOk());
  EXPECT_EQ(s.status().code(), Code::kInvalidArgument);
  EXPECT_EQ(s.status().message().rfind("command line: bad controller URL '127.0.0.1:7800'", 0), 0u)
      << s.status().message();
}

// Pins: the environment layer reads TW_CONTROLLER / TW_TOKEN / TW_TOKEN_FILE and
// treats empty variables as unset.
TEST(TwctlConfig, EnvironmentLayer) {
  ConnectionValues v = envValues(
      fakeEnv({{"TW_CONTROLLER", "http://e:1"}, {"TW_TOKEN", ""}, {"TW_TOKEN_FILE", "/t"}}));
  EXPECT_EQ(v.controller, "http://e:1");
  EXPECT_FALSE(v.token.has_value());
  EXPECT_EQ(v.token_file, "/t");
}

// Pins: TW_CONFIG names the file (and must exist); without it the default
// ~/.config/tierwarden/twctl.conf may be absent.
TEST(TwctlConfig, LoadsConfigFileFromTwConfigOrHome) {
  std::string path = writeTemp("conf", "controller = http://cfg:9\n");
  Result<ConnectionValues> v = loadConfigFile(fakeEnv({{"TW_CONFIG", path}}));
  ASSERT_TRUE(v.isOk()) << v.status().toString();
  EXPECT_EQ(v->controller, "http://cfg:9");

  v = loadConfigFile(fakeEnv({{"HOME", "/nonexistent-home"}}));
  ASSERT_TRUE(v.isOk());
  EXPECT_FALSE(v->controller.has_value());

  v = loadConfigFile(fakeEnv({{"TW_CONFIG", "/nonexistent/twctl.conf"}}));
  ASSERT_FALSE(v.isOk());
  EXPECT_EQ(v.status().code(), Code::kNotFound);
  EXPECT_NE(v.status().message().find("TW_CONFIG"), std::string::npos);
}

// ---------------------------------------------------------------- render ---

Json planAnswer() {
  return Json::parse(R"({
    "dry_run": false, "applied": true, "changed": true, "version": 4,
    "plan": {
      "vms": [
        {"vm": "db-1", "tier": "db", "host": "h1", "action": "keep", "reason": ""},
        {"vm": "apache-1", "tier": "apache", "host": "h2", "action": "create",
         "reason": "new replica"},
        {"vm": "apache-2", "tier": "apache", "host": "", "action": "pending",
         "reason": "no host has 512 MiB free"}
      ],
      "n_plus_one": {"safe": false, "summary": "losing h1 strands 1 vm",
                     "breaking": {"h1": ["db-1"]}}
    },
    "warnings": ["tier 'apache' has spread: preferred but only one host fits"]
  })");
}

// Pins: the apply report: plan table, N+1 summary with the breaking hosts,
// warnings, then the applied version.
TEST(TwctlRender, PlanTableSummaryWarningsAndVersion) {
  EXPECT_EQ(renderPlan(planAnswer()),
            "VM         TIER     HOST   ACTION    REASON\n"
            "db-1       db       h1     keep      -\n"
            "apache-1   apache   h2     create    new replica\n"
            "apache-2   apache   -      pending   no host has 512 MiB free\n"
            "\n"
            "N+1: losing h1 strands 1 vm\n"
            "  if host h1 fails, these cannot be placed: db-1\n"
            "warning: tier 'apache' has spread: preferred but only one host fits\n"
            "applied policy version 4\n");
}

// Pins: the last line of a dry run and of an apply that changed nothing.
TEST(TwctlRender, PlanLastLineForDryRunAndNoChange) {
  Json dry = planAnswer();
  dry["dry_run"] = true;
  dry["applied"] = false;
  std::string out = renderPlan(dry);
  EXPECT_EQ(out.substr(out.rfind('\n', out.size() - 2) + 1), "dry run: nothing changed\n");

  Json same = planAnswer();
  same["changed"] = false;
  out = renderPlan(same);
  EXPECT_EQ(out.substr(out.rfind('\n', out.size() - 2) + 1), "no change\n");
  EXPECT_EQ(out.find("applied policy version"), std::string::npos);
}

// Pins: the vms table's columns, ISO times and "-" for missing fields.
TEST(TwctlRender, VmsTable) {
  Json answer = {{"vms",
                  {{{"name", "web-1"},
                    {"tier", "web"},
                    {"host", "h1"},
                    {"epoch", 3},
                    {"state", "running"},
                    {"health", "healthy"},
                    {"restarts", 0},
                    {"relocations", 1},
                    {"updated_ms", kNoonMay1},
                    {"reason", ""}},
                   {{"name", "web-2"}, {"tier", "web"}, {"state", "pending"}}}}};
  EXPECT_EQ(renderVms(answer),
            "NAME    TIER   HOST   EPOCH   STATE     HEALTH    RESTARTS   RELOCATIONS   "
            "UPDATED                    REASON\n"
            "web-1   web    h1     3       running   healthy   0          1             "
            "2024-05-01T12:00:00.000Z   -\n"
            "web-2   web    -      -       pending   -         -          -             "
            "-                          -\n");
}

// Pins: hosts show used/capacity and their vms; an unexpected answer is an empty table.
TEST(TwctlRender, HostsTable) {
  Json answer = {{"hosts",
                  {{{"name", "h1"},
                    {"role", "active"},
                    {"state", "online"},
                    {"state_since_ms", kNoonMay1},
                    {"capacity", {{"cpus", 4}, {"memory_mib", 4096}}},
                    {"used", {{"cpus", 2}, {"memory_mib", 1024}}},
                    {"vms", {"db-1", "web-1"}},
                    {"last_heartbeat_ms", kNoonMay1 + 1500},
                    {"reason", ""}},
                   {{"name", "h2"},
                    {"role", "active"},
                    {"state", "online"},
                    {"state_since_ms", kNoonMay1},
                    {"capacity", {{"cpus", 4}, {"memory_mib", 4096}}},
                    {"used", {{"cpus", 0}, {"memory_mib", 0}}},
                    {"vms", Json::array()},
                    {"last_heartbeat_ms", kNoonMay1 + 1500},
                    {"reason", ""},
                    {"self_fence_reason", "lease expired (isolated)"},
                    {"self_fenced_ms", kNoonMay1}}}}};
  EXPECT_EQ(renderHosts(answer),
            "NAME   ROLE     STATE    SINCE                      CPUS   MEMORY_MIB   VMS          "
            "LAST_HEARTBEAT             REASON   SELF_FENCED\n"
            "h1     active   online   2024-05-01T12:00:00.000Z   2/4    1024/4096    db-1,web-1   "
            "2024-05-01T12:00:01.500Z   -        -\n"
            "h2     active   online   2024-05-01T12:00:00.000Z   0/4    0/4096       -            "
            "2024-05-01T12:00:01.500Z   -        2024-05-01T12:00:00.000Z lease expired (isolated)\n");
  EXPECT_EQ(renderHosts(Json{{"error", "x"}}),
            "NAME   ROLE   STATE   SINCE   CPUS   MEMORY_MIB   VMS   LAST_HEARTBEAT   REASON   SELF_FENCED\n");
}

// Pins: describe vm prints aligned fields, then the vm's events without the
// redundant subject column.
TEST(TwctlRender, DescribeVm) {
  Json vm = {{"name", "db-1"},
             {"tier", "db"},
             {"ordinal", 1},
             {"host", "h1"},
             {"epoch", 2},
             {"state", "running"},
             {"health", "healthy"},
             {"restarts", 1},
             {"relocations", 0},
             {"reason", ""},
             {"updated_ms", kNoonMay1},
             {"ip", "10.0.0.5"},
             {"events",
              {{{"id", 7},
                {"t_ms", kNoonMay1},
                {"level", "warn"},
                {"kind", "vm.crashed"},
                {"subject", "vm/db-1"},
                {"message", "domain crashed"}}}}};
  EXPECT_EQ(renderVm(vm),
            "Name:         db-1\n"
            "Tier:         db\n"
            "Ordinal:      1\n"
            "Host:         h1\n"
            "Epoch:        2\n"
            "State:        running\n"
            "Health:       healthy\n"
            "Restarts:     1\n"
            "Relocations:  0\n"
            "Reason:       -\n"
            "Updated:      2024-05-01T12:00:00.000Z\n"
            "Ip:           10.0.0.5\n"
            "\n"
            "Events:\n"
            "ID   TIME                       LEVEL   KIND         MESSAGE\n"
            "7    2024-05-01T12:00:00.000Z   warn    vm.crashed   domain crashed\n");
  vm.erase("events");
  EXPECT_NE(renderVm(vm).find("\nEvents: none\n"), std::string::npos);
}

// Pins: incidents show open/close times, the duration and the steps relative
// to the opening; an open incident has no close time or duration.
TEST(TwctlRender, IncidentsTable) {
  Json answer = {{"incidents",
                  {{{"id", 1},
                    {"subject", "vm/db-1"},
                    {"kind", "vm.crash"},
                    {"opened_ms", kNoonMay1},
                    {"closed_ms", kNoonMay1 + 2100},
                    {"steps",
                     {{{"step", "detected"}, {"t_ms", kNoonMay1}},
                      {{"step", "restarted"}, {"t_ms", kNoonMay1 + 150}}}}},
                   {{"id", 2},
                    {"subject", "host/h2"},
                    {"kind", "host.dead"},
                    {"opened_ms", kNoonMay1},
                    {"closed_ms", nullptr},
                    {"steps", Json::array()}}}}};
  EXPECT_EQ(renderIncidents(answer),
            "ID   SUBJECT   KIND        OPENED                     CLOSED                     "
            "DURATION   STEPS\n"
            "1    vm/db-1   vm.crash    2024-05-01T12:00:00.000Z   2024-05-01T12:00:02.100Z   "
            "2.1s       detected@+0ms,restarted@+150ms\n"
            "2    host/h2   host.dead   2024-05-01T12:00:00.000Z   -                          "
            "-          -\n");
}

// Pins: the controllers table (docs/ha.md): one row per replica, the one
// that answered marked, its role, URLs and last seen; then the term.
TEST(TwctlRender, ControllersTable) {
  Json answer = {{"store", "etcd"},
                 {"leader", "c1"},
                 {"term", 42},
                 {"self", "c2"},
                 {"replicas",
                  {{{"identity", "c1"}, {"public_url", "https://c1:7800"}, {"agent_url", "https://c1:7801"},
                    {"leader", true}, {"self", false}, {"last_seen_s", 0.5}},
                   {{"identity", "c2"}, {"public_url", "https://c2:7800"}, {"agent_url", "https://c2:7801"},
                    {"leader", false}, {"self", true}, {"last_seen_s", 1.25}}}}};
  const std::string out = renderControllers(answer);
  EXPECT_NE(out.find("c1 "), std::string::npos) << out;
  EXPECT_NE(out.find("c2 (answered)"), std::string::npos) << out;
  const size_t c1 = out.find("c1 ");
  EXPECT_NE(out.find("leader", c1), std::string::npos);
  EXPECT_NE(out.find("follower"), std::string::npos);
  EXPECT_NE(out.find("https://c2:7801"), std::string::npos);
  EXPECT_NE(out.find("1.2s ago"), std::string::npos) << out;
  EXPECT_NE(out.find("term 42, store etcd\n"), std::string::npos) << out;
  answer["leader"] = nullptr;
  EXPECT_NE(renderControllers(answer).find(", no leader now"), std::string::npos);
}

// Pins: the endpoints table: VM, HOST (the hypervisor), ADDRESS and PORT
// (where to connect), NAME, HEALTHY; an unexpected answer is an empty table.
TEST(TwctlRender, EndpointsTable) {
  Json answer = {{"tier", "web"},
                 {"endpoints",
                  {{{"vm", "web-1"},
                    {"host", "127.0.0.1"},
                    {"port", 20001},
                    {"hypervisor", "h1"},
                    {"name", "http"},
                    {"guest_port", 80},
                    {"healthy", true}},
                   {{"vm", "web-2"},
                    {"host", "192.0.2.2"},
                    {"port", 20002},
                    {"hypervisor", "h2"},
                    {"name", "http"},
                    {"guest_port", 80},
                    {"healthy", false}}}}};
  EXPECT_EQ(renderEndpoints(answer),
            "VM      HOST   ADDRESS     PORT    NAME   HEALTHY\n"
            "web-1   h1     127.0.0.1   20001   http   true\n"
            "web-2   h2     192.0.2.2   20002   http   false\n");
  EXPECT_EQ(renderEndpoints(Json{{"error", "x"}}), "VM   HOST   ADDRESS   PORT   NAME   HEALTHY\n");
}

// Pins: the --follow line format, one line even for a multi-line message.
TEST(TwctlRender, EventLine) {
  Json e = {{"id", 9},
            {"t_ms", kNoonMay1},
            {"level", "info"},
            {"kind", "vm.restarted"},
            {"subject", "vm/web-1"},
            {"message", "restarted\nafter crash"}};
  EXPECT_EQ(eventLine(e),
            "2024-05-01T12:00:00.000Z  info   vm.restarted  vm/web-1  restarted after crash");
}

// Pins: an action prints the server's message, or the fallback for an empty answer.
TEST(TwctlRender, ActionMessage) {
  EXPECT_EQ(renderMessage(Json{{"message", "restarting vm 'web-1'"}}, "fallback"),
            "restarting vm 'web-1'\n");
  EXPECT_EQ(renderMessage(Json(), "restart of vm 'web-1' requested"),
            "restart of vm 'web-1' requested\n");
  EXPECT_EQ(renderMessage(Json{{"queued", true}}, "x"), "{\"queued\":true}\n");
}

// ------------------------------------------------------- errors and names ---

// Pins: errors are one line, policy positions first; exit code 2 only for bad input.
TEST(TwctlErrors, OneLineAndExitCodes) {
  Status policy(Code::kInvalidArgument, "expected an integer\nfor replicas",
                SourceLocation{"demo.yaml", 3, 7});
  EXPECT_EQ(errorLine(policy), "twctl: demo.yaml:3:7: expected an integer for replicas");
  EXPECT_EQ(exitCodeFor(policy), 2);
  EXPECT_EQ(exitCodeFor(unavailable("cannot reach controller")), 1);
  EXPECT_EQ(exitCodeFor(notFound("no vm 'x'")), 1);
  EXPECT_EQ(exitCodeFor(Status::ok()), 0);
}

// Pins: the resource names `twctl get` accepts, singular or plural.
TEST(TwctlErrors, CanonicalResourceNames) {
  EXPECT_EQ(canonicalResource("vm"), "vms");
  EXPECT_EQ(canonicalResource("incidents"), "incidents");
  EXPECT_EQ(canonicalResource("endpoint"), "endpoints");
  EXPECT_EQ(canonicalResource("controller"), "controllers");
  EXPECT_FALSE(canonicalResource("pods").has_value());
}


// Pins: the backups table (size in MiB) and the tier table's backup warnings
// printed under it, one line each.
TEST(TwctlRender, BackupsAndTierWarnings) {
  Json backups = Json::parse(R"({"backups":[{"id":"20261206T180000Z-0000beef","vm":"db-1",
      "host":"h1","bytes":1441792,"duration_ms":90,"method":"backup-api",
      "path":"/b/db-1/20261206T180000Z-0000beef.qcow2"}]})");
  EXPECT_EQ(renderBackups(backups),
            "ID                          VM     HOST   SIZE      TOOK_MS   METHOD       PATH\n"
            "20261206T180000Z-0000beef   db-1   h1     1.4 MiB   90        backup-api   "
            "/b/db-1/20261206T180000Z-0000beef.qcow2\n");
  Json tiers = Json::parse(R"J({"tiers":[{"name":"db","image":"tiny-db","replicas":1,
      "backup_warnings":["vm 'db-1' has no good backup yet (every 1h 0m)"],
      "site_warnings":["backup.to /dr of tier 'db' is no writable directory on host 'h2'"]},
      {"name":"web"}]})J");
  const std::string out = renderTiers(tiers);
  EXPECT_NE(out.find("\nwarning: tier 'db': backup.to /dr of tier 'db' is no writable directory "
                     "on host 'h2'\n"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("\nwarning: tier 'db': vm 'db-1' has no good backup yet (every 1h 0m)\n"),
            std::string::npos)
      << out;
  EXPECT_EQ(renderTiers(Json::parse(R"({"tiers":[{"name":"web"}]})")).find("warning"),
            std::string::npos);
}

}  // namespace
}  // namespace tw::cli
