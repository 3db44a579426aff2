// The scenario script parser (sim/script.h): times, comments, commands, and
// errors that name file:line.
#include <gtest/gtest.h>

#include "sim/script.h"

namespace tw::sim {
namespace {

ScriptNames names() {
  ScriptNames n;
  n.hosts = std::set<std::string>{"h1", "h2"};
  n.vms = std::set<std::string>{"web-1", "db-1"};
  n.files = std::set<std::string>{"policy.yaml", "v2/policy.yaml"};
  return n;
}

// The error text of a script that must be refused.
std::string errorOf(const std::string& text) {
  Result<Script> s = parseScript(text, "sc/script", names());
  EXPECT_FALSE(s.isOk()) << "accepted:\n" << text;
  return s.isOk() ? "" : s.status().toString();
}

// Pins the units and forms a time may take.
TEST(SimScriptTest, ParsesTimes) {
  EXPECT_EQ(parseScriptTime("0s").value(), 0);
  EXPECT_EQ(parseScriptTime("1500ms").value(), 1500);
  EXPECT_EQ(parseScriptTime("2m").value(), 120000);
  EXPECT_EQ(parseScriptTime("1.5s").value(), 1500);
  EXPECT_EQ(parseScriptTime("1h").value(), 3600000);
  EXPECT_EQ(parseScriptTime("0.25m").value(), 15000);
}

// Pins what a time may not be: no unit, unknown unit, fractions of a ms, junk.
TEST(SimScriptTest, RefusesBadTimes) {
  EXPECT_FALSE(parseScriptTime("10").isOk());
  EXPECT_FALSE(parseScriptTime("10d").isOk());
  EXPECT_FALSE(parseScriptTime("1.5ms").isOk());
  EXPECT_FALSE(parseScriptTime("s").isOk());
  EXPECT_FALSE(parseScriptTime("-1s").isOk());
  EXPECT_FALSE(parseScriptTime(".s").isOk());
}

// Pins that comments and blank lines are skipped, commands keep file order and
// line numbers, and `end` sets the end time.
TEST(SimScriptTest, ParsesCommandsAndComments) {
  Result<Script> s = parseScript(
      "# a scenario\n"
      "\n"
      "0s     apply policy.yaml   # hosts and tiers\n"
      "1500ms vm web-1 crash\n"
      "2s     host h1 power off\n"
      "2s     vm db-1 health fail-always\n"
      "1m     migrate web-1 h2\n"
      "2m     end\n",
      "sc/script", names());
  ASSERT_TRUE(s.isOk()) << s.status().toString();
  ASSERT_EQ(s->commands.size(), 6u);
  EXPECT_EQ(s->commands[0].op, Op::kApply);
  EXPECT_EQ(s->commands[0].files, std::vector<std::string>{"policy.yaml"});
  EXPECT_EQ(s->commands[0].line, 3);
  EXPECT_EQ(s->commands[0].text, "apply policy.yaml");
  EXPECT_EQ(s->commands[1].t_ms, 1500);
  EXPECT_EQ(s->commands[1].op, Op::kVmCrash);
  EXPECT_EQ(s->commands[1].target, "web-1");
  EXPECT_EQ(s->commands[2].op, Op::kHostPower);
  EXPECT_EQ(s->commands[2].arg, "off");
  EXPECT_EQ(s->commands[3].arg, "fail-always");
  EXPECT_EQ(s->commands[4].op, Op::kMigrate);
  EXPECT_EQ(s->commands[4].arg, "h2");
  EXPECT_EQ(s->commands[5].op, Op::kEnd);
  EXPECT_EQ(s->end_ms, 120000);
}

// Pins that every command form parses (counts included).
TEST(SimScriptTest, ParsesEveryCommand) {
  Result<Script> s = parseScript(
      "0s apply policy.yaml v2/policy.yaml\n"
      "0s host h1 network off\n"
      "0s host h2 fail-migrations 2\n"
      "0s agent h1 stop\n"
      "0s vm web-1 fail-start 3\n"
      "0s controller restart\n"
      "0s drain h1\n"
      "0s undrain h1\n"
      "0s reset web-1\n"
      "0s restart db-1\n"
      "0s end\n",
      "sc/script", names());
  ASSERT_TRUE(s.isOk()) << s.status().toString();
  ASSERT_EQ(s->commands.size(), 11u);
  EXPECT_EQ(s->commands[0].files.size(), 2u);
  EXPECT_EQ(s->commands[1].op, Op::kHostNetwork);
  EXPECT_EQ(s->commands[2].count, 2);
  EXPECT_EQ(s->commands[3].op, Op::kAgent);
  EXPECT_EQ(s->commands[4].count, 3);
  EXPECT_EQ(s->commands[5].op, Op::kController);
  EXPECT_EQ(s->commands[9].op, Op::kRestart);
}

// Pins the errors of malformed scripts, each with file:line.
TEST(SimScriptTest, RefusesMalformedScriptsWithFileAndLine) {
  EXPECT_EQ(errorOf("0s apply policy.yaml\n1s explode h1\n2s end\n"),
            "sc/script:2: unknown command 'explode' (expected apply, host, agent, vm, "
            "controller, controllers, link, drain, undrain, migrate, reset, restart or end)");
  EXPECT_EQ(errorOf("0s apply policy.yaml\nsoon vm web-1 crash\n1s end\n"),
            "sc/script:2: expected a time like 0s, 1500ms, 1.5s or 2m, got 'soon'");
  EXPECT_EQ(errorOf("5s apply policy.yaml\n# c\n2s vm web-1 crash\n9s end\n"),
            "sc/script:3: time '2s' is earlier than the line before (5000 ms)");
  EXPECT_EQ(errorOf("0s apply policy.yaml\n1s host h9 power off\n2s end\n"),
            "sc/script:2: unknown host 'h9' (declared: h1, h2)");
  EXPECT_EQ(errorOf("0s vm web-7 crash\n2s end\n"),
            "sc/script:1: unknown vm 'web-7' (the applied policies declare: db-1, web-1)");
  EXPECT_EQ(errorOf("0s apply nope.yaml\n2s end\n"),
            "sc/script:1: no file 'nope.yaml' in the scenario folder");
  EXPECT_EQ(errorOf("0s apply policy.yaml\n1s host h1 power maybe\n2s end\n"),
            "sc/script:2: expected 'host H power on|off', got 'maybe'");
  EXPECT_EQ(errorOf("0s vm web-1 fail-start many\n2s end\n"),
            "sc/script:1: expected a count for 'vm V fail-start N', got 'many'");
  EXPECT_EQ(errorOf("15ms apply policy.yaml\n2s end\n"),
            "sc/script:1: time '15ms' is not a multiple of the 10 ms step");
  EXPECT_EQ(errorOf("0s end\n1s vm web-1 crash\n"), "sc/script:2: command after 'end'");
  EXPECT_EQ(errorOf("0s apply policy.yaml\n\n1s vm web-1 crash\n"),
            "sc/script:3: the script must end with an 'end' command");
  EXPECT_EQ(errorOf("3s\n4s end\n"), "sc/script:1: expected a command after the time '3s'");
}

// Pins the fault commands of the fencing work: stalls (agent, controller) with
// a duration, slow libvirt per call (a bare number is ms, 0 ends it), the
// controller's network, and one-way links between hosts or the controller.
TEST(SimScriptTest, ParsesStallsSlowLibvirtAndLinks) {
  Result<Script> s = parseScript(
      "0s agent h1 stall 4s\n"
      "0s host h2 libvirt slow 250ms\n"
      "0s host h2 libvirt slow 0\n"
      "0s host h2 libvirt slow 40\n"
      "0s controller stall 10m\n"
      "0s controller network off\n"
      "0s link h1 h2 off\n"
      "0s link controller h2 on\n"
      "0s end\n",
      "sc/script", names());
  ASSERT_TRUE(s.isOk()) << s.status().toString();
  ASSERT_EQ(s->commands.size(), 9u);
  EXPECT_EQ(s->commands[0].op, Op::kAgent);
  EXPECT_EQ(s->commands[0].arg, "stall");
  EXPECT_EQ(s->commands[0].duration, 4000);
  EXPECT_EQ(s->commands[1].op, Op::kHostLibvirtSlow);
  EXPECT_EQ(s->commands[1].duration, 250);
  EXPECT_EQ(s->commands[2].duration, 0);
  EXPECT_EQ(s->commands[3].duration, 40);
  EXPECT_EQ(s->commands[4].op, Op::kController);
  EXPECT_EQ(s->commands[4].arg, "stall");
  EXPECT_EQ(s->commands[4].duration, 600000);
  EXPECT_EQ(s->commands[5].op, Op::kControllerNetwork);
  EXPECT_EQ(s->commands[5].arg, "off");
  EXPECT_EQ(s->commands[6].op, Op::kLink);
  EXPECT_EQ(s->commands[6].target, "h1");
  EXPECT_EQ(s->commands[6].other, "h2");
  EXPECT_EQ(s->commands[6].arg, "off");
  EXPECT_EQ(s->commands[7].target, "controller");
  EXPECT_EQ(s->commands[7].text, "link controller h2 on");
}

// Pins the errors of the fault commands.
TEST(SimScriptTest, RefusesBadFaultCommands) {
  EXPECT_EQ(errorOf("0s agent h1 stall\n2s end\n"),
            "sc/script:1: expected 'agent H stall DURATION', got 'agent h1 stall'");
  EXPECT_EQ(errorOf("0s agent h1 stall 0s\n2s end\n"),
            "sc/script:1: expected a duration for 'agent H stall DURATION' that is a positive "
            "multiple of the 10 ms step, got '0s'");
  EXPECT_EQ(errorOf("0s agent h1 stop now\n2s end\n"),
            "sc/script:1: expected 'agent H stop', got 'agent h1 stop now'");
  EXPECT_EQ(errorOf("0s controller stall 5\n2s end\n"),
            "sc/script:1: expected a duration for 'controller stall DURATION': time '5' needs a "
            "unit: ms, s, m or h");
  EXPECT_EQ(errorOf("0s controller network maybe\n2s end\n"),
            "sc/script:1: expected 'controller network on|off', got 'maybe'");
  EXPECT_EQ(errorOf("0s host h1 libvirt fast 1\n2s end\n"),
            "sc/script:1: expected 'host H libvirt slow MS', got 'fast'");
  EXPECT_EQ(errorOf("0s link h1 h9 off\n2s end\n"),
            "sc/script:1: unknown host 'h9' (declared: h1, h2)");
  EXPECT_EQ(errorOf("0s link h1 h1 off\n2s end\n"),
            "sc/script:1: 'link' needs two different ends, got 'h1' twice");
}

// Pins that names are not checked when the caller gives no list.
TEST(SimScriptTest, ChecksNamesOnlyWhenGiven) {
  Result<Script> s = parseScript("0s vm any-1 crash\n1s host any power on\n2s end\n", "s");
  EXPECT_TRUE(s.isOk()) << s.status().toString();
}

}  // namespace
}  // namespace tw::sim

namespace tw::sim {
namespace {

// Pins the replica commands: `controllers N` first, at 0s; `controller C
// kill|start|restart|overstay [window]|store off|on` with C one of c1..cN or leader.
TEST(SimScriptTest, ParsesControllerReplicaCommands) {
  Result<Script> s = parseScript(
      "0s controllers 3\n"
      "0s controller c1 kill\n"
      "1s controller leader restart\n"
      "2s controller c3 start\n"
      "3s controller c2 store off\n"
      "4s controller c2 store on\n"
      "5s controller leader overstay\n"
      "6s controller network off\n"
      "7s end\n",
      "sc/script", names());
  ASSERT_TRUE(s.isOk()) << s.status().toString();
  EXPECT_EQ(s->controllers, 3);
  ASSERT_EQ(s->commands.size(), 9u);
  EXPECT_EQ(s->commands[0].op, Op::kControllers);
  EXPECT_EQ(s->commands[0].count, 3);
  EXPECT_EQ(s->commands[1].op, Op::kReplica);
  EXPECT_EQ(s->commands[1].target, "c1");
  EXPECT_EQ(s->commands[1].arg, "kill");
  EXPECT_EQ(s->commands[2].target, "leader");
  EXPECT_EQ(s->commands[2].arg, "restart");
  EXPECT_EQ(s->commands[3].arg, "start");
  EXPECT_EQ(s->commands[4].arg, "store-off");
  EXPECT_EQ(s->commands[5].arg, "store-on");
  EXPECT_EQ(s->commands[6].arg, "overstay");
  EXPECT_EQ(s->commands[7].op, Op::kControllerNetwork);

  Result<Script> one = parseScript("0s controller restart\n1s end\n", "sc/script", names());
  ASSERT_TRUE(one.isOk());
  EXPECT_EQ(one->controllers, 0);
}

// Pins the errors of the replica commands.
TEST(SimScriptTest, RefusesBadControllerReplicaCommands) {
  EXPECT_EQ(errorOf("0s apply policy.yaml\n0s controllers 3\n1s end\n"),
            "sc/script:2: 'controllers N' must be the script's first command, at 0s");
  EXPECT_EQ(errorOf("1s controllers 3\n2s end\n"),
            "sc/script:1: 'controllers N' must be the script's first command, at 0s");
  EXPECT_EQ(errorOf("0s controllers 1\n2s end\n"),
            "sc/script:1: expected 2 to 7 replicas for 'controllers N', got '1'");
  EXPECT_EQ(errorOf("0s controllers 8\n2s end\n"),
            "sc/script:1: expected 2 to 7 replicas for 'controllers N', got '8'");
  EXPECT_EQ(errorOf("0s controllers 3\n1s controller restart\n2s end\n"),
            "sc/script:2: with 'controllers 3', name a replica: expected 'controller c1..c3|leader "
            "kill|start|restart|overstay [window]|store off|on', got 'controller restart'");
  EXPECT_EQ(errorOf("0s controllers 3\n1s controller c4 kill\n2s end\n"),
            "sc/script:2: with 'controllers 3', name a replica: expected 'controller c1..c3|leader "
            "kill|start|restart|overstay [window]|store off|on', got 'controller c4 kill'");
  EXPECT_EQ(errorOf("0s controllers 2\n1s controller c1 explode\n2s end\n"),
            "sc/script:2: expected 'controller C kill|start|restart|overstay [window]|store off|on', got "
            "'explode'");
  EXPECT_EQ(errorOf("0s controllers 2\n1s controller c1 store\n2s end\n"),
            "sc/script:2: expected 'controller C store off|on', got 'controller c1 store'");
  EXPECT_EQ(errorOf("0s controllers 2\n1s controller c1 kill now\n2s end\n"),
            "sc/script:2: expected 'controller C kill', got 'controller c1 kill now'");
  // `overstay window` (the daemon's window not hidden); nothing else after overstay.
  EXPECT_TRUE(parseScript("0s controllers 2\n1s controller c1 overstay window\n2s end\n", "sc/script", names()).isOk());
  EXPECT_NE(errorOf("0s controllers 2\n1s controller c1 overstay wide\n2s end\n").find("overstay [window]"),
            std::string::npos);
  // Without `controllers N` a replica name is no controller command.
  EXPECT_EQ(errorOf("0s controller c1 kill\n1s end\n"),
            "sc/script:1: expected 'controller restart|stop|start|stall DURATION|network on|off', "
            "got 'c1'");
}

}  // namespace
}  // namespace tw::sim
