// The scenario assert language (sim/assertions.h): parsing with file:line
// errors, and checking against a final state and an event log.
#include <gtest/gtest.h>

#include "sim/assertions.h"

namespace tw::sim {
namespace {

Json state() {
  return Json{{"time_ms", 60000},
              {"max_running_copies", 1},
              {"collateral_destroys", 0},
              {"hosts", Json::array({Json{{"name", "h1"}, {"state", "fenced"}, {"power", "off"}}})},
              {"vms", Json::array({Json{{"name", "web-1"},
                                        {"state", "running"},
                                        {"host", "h3"},
                                        {"healthy", true},
                                        {"relocations", 1},
                                        {"restarts", 0},
                                        {"running_on", Json::array({"h3"})}},
                                   Json{{"name", "web-2"},
                                        {"state", "pending"},
                                        {"host", ""},
                                        {"healthy", false},
                                        {"relocations", 0},
                                        {"restarts", 0},
                                        {"running_on", Json::array()}}})},
              {"incidents", Json::array({Json::object()})}};
}

std::vector<std::string> check(const std::string& text) {
  Result<std::vector<Assertion>> a = parseAssertions(text, "assert");
  EXPECT_TRUE(a.isOk()) << a.status().toString();
  if (!a.isOk()) return {"parse error"};
  return checkAssertions(*a, "assert", state(),
                         {"5000 warn controller host 'h1' self-fenced",
                          "6000 info controller placed vm 'web-1' on host 'h3'"});
}

// Pins that true assertions of every kind hold.
TEST(SimAssertionsTest, HoldingAssertionsPass) {
  EXPECT_EQ(check("max_running_copies == 1\n"
                  "collateral_destroys == 0\n"
                  "incidents >= 1\n"
                  "time_ms == 60000\n"
                  "vms running == 1\n"
                  "vms pending < 2\n"
                  "vm web-1 state running\n"
                  "vm web-1 host != h1\n"
                  "vm web-1 healthy true\n"
                  "vm web-1 relocations >= 1\n"
                  "vm web-1 running_on h3\n"
                  "vm web-2 running_on none\n"
                  "host h1 state fenced\n"
                  "log contains self-fenced\n"
                  "log lacks runs on 2 hosts  # comment\n"
                  "log order self-fenced before placed vm 'web-1'\n"),
            std::vector<std::string>{});
}

// Pins the failure messages: file:line, the assertion, what was found.
TEST(SimAssertionsTest, FailingAssertionsSayWhatWasFound) {
  EXPECT_EQ(check("max_running_copies == 2\n"
                  "\n"
                  "vm web-1 state pending\n"
                  "vm web-9 state running\n"
                  "log contains moved from\n"
                  "log lacks self-fenced\n"
                  "vm web-1 relocations 0\n"
                  "log order placed vm before self-fenced\n"
                  "log order placed vm before nowhere\n"),
            (std::vector<std::string>{
                "assert:1: max_running_copies == 2: got 1",
                "assert:3: vm web-1 state pending: got 'running'",
                "assert:4: vm web-9 state running: no vm named 'web-9' in the final state",
                "assert:5: log contains moved from: no line of the event log contains it",
                "assert:6: log lacks self-fenced: found in: 5000 warn controller host 'h1' "
                "self-fenced",
                "assert:7: vm web-1 relocations 0: got 1",
                "assert:8: log order placed vm before self-fenced: found in the other order: "
                "5000 warn controller host 'h1' self-fenced / 6000 info controller placed vm "
                "'web-1' on host 'h3'",
                "assert:9: log order placed vm before nowhere: no line contains 'nowhere'",
            }));
}

// Pins parse errors with file:line and the checks of names and fields.
TEST(SimAssertionsTest, RefusesMalformedAssertions) {
  AssertNames names{std::set<std::string>{"h1"}, std::set<std::string>{"web-1"}};
  auto error = [&](const std::string& text) {
    Result<std::vector<Assertion>> a = parseAssertions(text, "sc/assert", names);
    return a.isOk() ? std::string("accepted") : a.status().toString();
  };
  EXPECT_EQ(error("\nfrobnicate 3\n"),
            "sc/assert:2: unknown assertion 'frobnicate' (expected max_running_copies, "
            "collateral_destroys, lease_lapses, incidents, time_ms, vms, vm, host or log)");
  EXPECT_EQ(error("vm web-2 state running\n"), "sc/assert:1: unknown vm 'web-2'");
  EXPECT_EQ(error("host h1 colour red\n"),
            "sc/assert:1: unknown host field 'colour' (expected state, power, network or agent)");
  EXPECT_EQ(error("max_running_copies == one\n"), "sc/assert:1: expected a number, got 'one'");
  EXPECT_EQ(error("vm web-1 state > running\n"),
            "sc/assert:1: '>' compares numbers; use == or != for 'running'");
  EXPECT_EQ(error("log says hello\n"),
            "sc/assert:1: expected 'log contains TEXT', 'log lacks TEXT' or 'log order TEXT "
            "before TEXT'");
  EXPECT_EQ(error("log order a after b\n"), "sc/assert:1: expected 'log order TEXT before TEXT'");
}

}  // namespace
}  // namespace tw::sim
