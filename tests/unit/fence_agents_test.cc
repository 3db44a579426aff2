// The controller's fence agents file: `name = command template` lines split
// into argv words at load time (no shell), placeholders, refusals with
// file:line:column, and the file's permissions.
#include "controller/fence_agents.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "tw/policy.h"

namespace tw {
namespace {

using Words = std::vector<std::string>;

Words wordsOf(const std::string& line) {
  auto agents = parseFenceAgents(line + "\n", "f.conf");
  EXPECT_TRUE(agents.isOk()) << agents.status().toString();
  if (!agents.isOk() || agents->size() != 1) return {};
  return agents->begin()->second.argv;
}

void expectRefused(const std::string& text, const std::string& expected) {
  auto agents = parseFenceAgents(text, "f.conf");
  ASSERT_FALSE(agents.isOk()) << text;
  EXPECT_EQ(agents.status().code(), Code::kInvalidArgument);
  EXPECT_EQ(agents.status().toString(), expected);
}

// Pins the word splitting: blanks separate, quotes group, backslash escapes,
// shell operators inside quotes are plain characters of one word.
TEST(FenceAgentsParse, SplitsWordsLikeAShellWithoutOne) {
  EXPECT_EQ(wordsOf("ipmi = ipmitool -I lanplus  -H bmc-{host}\t-U fence"),
            (Words{"ipmitool", "-I", "lanplus", "-H", "bmc-{host}", "-U", "fence"}));
  EXPECT_EQ(wordsOf("a = prog 'two words' \"and \\\"three\\\" \\\\ here\" x'y'\"z\" ''"),
            (Words{"prog", "two words", "and \"three\" \\ here", "xyz", ""}));
  EXPECT_EQ(wordsOf("a = prog ';' '|' 'a && b' '$(reboot)' \"a;b\" \\; \\$HOME"),
            (Words{"prog", ";", "|", "a && b", "$(reboot)", "a;b", ";", "$HOME"}));
  EXPECT_EQ(wordsOf("a = env TW_HOSTS_DIR=/tmp/x /opt/tw/scripts/hosts fence {host}"),
            (Words{"env", "TW_HOSTS_DIR=/tmp/x", "/opt/tw/scripts/hosts", "fence", "{host}"}));
  // '=' after the first belongs to the command; braces that are no
  // placeholder are plain characters.
  EXPECT_EQ(wordsOf("redfish=curl -d '{\"ResetType\": \"ForceOff\"}' https://{host}-bmc/x=1"),
            (Words{"curl", "-d", "{\"ResetType\": \"ForceOff\"}", "https://{host}-bmc/x=1"}));
}

// Pins comments, blank lines, several agents, where each was defined, and
// whether it uses {uri}.
TEST(FenceAgentsParse, ReadsAFile) {
  auto agents = parseFenceAgents(
      "# fence agents\n\n  ipmi = ipmitool -H bmc-{host} power off\r\n"
      "   # indented comment\nvirsh-destroy = virsh -c {uri} list\n",
      "f.conf");
  ASSERT_TRUE(agents.isOk()) << agents.status().toString();
  ASSERT_EQ(agents->size(), 2u);
  const FenceAgent& ipmi = agents->at("ipmi");
  EXPECT_EQ(ipmi.where.str(), "f.conf:3:3");
  EXPECT_FALSE(ipmi.uses_uri);
  EXPECT_EQ(ipmi.argv, (Words{"ipmitool", "-H", "bmc-{host}", "power", "off"}));
  EXPECT_TRUE(agents->at("virsh-destroy").uses_uri);
  EXPECT_EQ(fenceAgentNames(*agents), "'ipmi', 'virsh-destroy'");
  EXPECT_EQ(fenceAgentNames({}), "none");
  auto empty = parseFenceAgents("", "f.conf");
  ASSERT_TRUE(empty.isOk());
  EXPECT_TRUE(empty->empty());
}

// Pins every refusal: what is wrong and where (file:line:column).
TEST(FenceAgentsParse, RefusesBadLines) {
  expectRefused("ipmi ipmitool\n", "f.conf:1:1: expected 'name = command', got no '='");
  expectRefused(
      "\nIPMI = x\n",
      "f.conf:2:1: expected a fence agent name before '=' (a lowercase letter, then up to "
      "62 lowercase letters, digits or '-'), got 'IPMI'");
  expectRefused(" = x\n",
                "f.conf:1:2: expected a fence agent name before '=' (a lowercase "
                "letter, then up to 62 lowercase letters, digits or '-'), got ''");
  expectRefused("a =   \n", "f.conf:1:3: fence agent 'a' has no command after '='");
  expectRefused("a = '' x\n", "f.conf:1:3: fence agent 'a': the program name is empty");
  expectRefused("a = x\nb = y\na = z\n",
                "f.conf:3:1: fence agent 'a' is defined twice (first at line 1)");
  expectRefused("a = x 'open\n", "f.conf:1:7: this ' is never closed");
  expectRefused("a = x \"open\n", "f.conf:1:7: this \" is never closed");
  expectRefused("a = x y\\\n",
                "f.conf:1:8: the line ends with '\\' (one fence agent a line; no "
                "continuation lines)");
  expectRefused("a = x {hostname}\n",
                "f.conf:1:7: unknown placeholder '{hostname}' (known: "
                "{host}, {uri})");
  expectRefused("a = x 'pre{port}'\n",
                "f.conf:1:11: unknown placeholder '{port}' (known: "
                "{host}, {uri})");
  expectRefused("a = x # off\n",
                "f.conf:1:7: '#' starts a comment only at the start of a line; "
                "quote it to pass it as an argument");
  for (const char* op : {";", "|", "&", "<", ">", "(", ")", "$", "`"}) {
    expectRefused(std::string("a = x y") + op + "z\n",
                  std::string("f.conf:1:8: '") + op +
                      "' outside quotes: a fence agent runs without a shell (no pipes, lists, "
                      "redirections, variables or substitutions); quote it to pass it as an "
                      "argument, or put the shell logic into a script and name the script");
  }
  expectRefused("a = x \"$PASS\"\n",
                "f.conf:1:8: '$' inside \"...\": a fence agent runs without "
                "a shell, nothing expands it; write it inside '...' to pass "
                "it as it is");
}

// Pins the substitution: inside words, quoted or not; a value with blanks or
// shell syntax stays one word; {uri} must be a uri with a scheme.
TEST(FenceAgentsParse, FillsInPlaceholders) {
  auto agents = parseFenceAgents("a = fence '--target={host}' -c {uri} {host}{host}\n", "f.conf");
  ASSERT_TRUE(agents.isOk());
  const FenceAgent& a = agents->at("a");
  auto argv = fenceArgv(a, FenceTarget{"h1", "qemu+ssh://root@h1 x;y/system"});
  ASSERT_TRUE(argv.isOk()) << argv.status().toString();
  EXPECT_EQ(*argv, (Words{"fence", "--target=h1", "-c", "qemu+ssh://root@h1 x;y/system", "h1h1"}));
  EXPECT_EQ(fenceArgv(a, FenceTarget{"h1", ""}).status().toString(),
            "fence agent 'a' uses {uri}, but host 'h1' has no uri");
  EXPECT_EQ(fenceArgv(a, FenceTarget{"h1", "-oProxyCommand=x://"}).status().toString(),
            "fence agent 'a' uses {uri}, but the uri of host 'h1' does not start with a scheme "
            "like qemu+ssh://");
  // Without {uri}, a host without a uri is fine.
  auto b = parseFenceAgents("b = off {host}\n", "f.conf");
  ASSERT_TRUE(b.isOk());
  EXPECT_EQ(*fenceArgv(b->at("b"), FenceTarget{"h2", ""}), (Words{"off", "h2"}));
}

class FenceAgentsFile : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (std::filesystem::temp_directory_path() / "tw-fence-XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    ::chmod(dir_.c_str(), 0700);
    path_ = dir_ + "/fence-agents.conf";
  }
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  void write(const std::string& text, mode_t mode) {
    std::ofstream(path_) << text;
    ::chmod(path_.c_str(), mode);
  }
  std::string dir_, path_;
};

// Pins the permissions check: the file's commands run as the controller's
// user, so a file (or directory) that others may write is refused with a
// message that says why and how to fix it; a missing file is kNotFound.
TEST_F(FenceAgentsFile, RefusesAFileOthersMayWrite) {
  write("off = /bin/true {host}\n", 0644);
  auto ok = loadFenceAgents(path_);
  ASSERT_TRUE(ok.isOk()) << ok.status().toString();
  EXPECT_EQ(ok->at("off").where.str(), path_ + ":1:1");

  for (mode_t mode : {0664, 0646, 0666}) {
    ::chmod(path_.c_str(), mode);
    auto r = loadFenceAgents(path_);
    ASSERT_FALSE(r.isOk()) << std::oct << mode;
    EXPECT_EQ(r.status().code(), Code::kPermissionDenied);
    EXPECT_NE(r.status().message().find("is writable by its group or by others (mode 0" +
                                        [&] {
                                          char b[8];
                                          std::snprintf(b, sizeof b, "%o", mode);
                                          return std::string(b);
                                        }() +
                                        ")"),
              std::string::npos)
        << r.status().message();
    EXPECT_NE(r.status().message().find("chmod go-w"), std::string::npos);
  }
  ::chmod(path_.c_str(), 0600);
  ::chmod(dir_.c_str(), 0777);  // anyone may replace the file
  auto dir = loadFenceAgents(path_);
  ASSERT_FALSE(dir.isOk());
  EXPECT_NE(dir.status().message().find("which its group or others may write to"),
            std::string::npos)
      << dir.status().message();
  ::chmod(dir_.c_str(), 01777);  // sticky, as /tmp: only the owner may replace it
  EXPECT_TRUE(loadFenceAgents(path_).isOk());
  ::chmod(dir_.c_str(), 0700);

  auto missing = loadFenceAgents(dir_ + "/nope.conf");
  EXPECT_EQ(missing.status().code(), Code::kNotFound);
}

// Pins that a file's parse errors and a program that cannot be found are
// refused at load (at start), not when a host has died.
TEST_F(FenceAgentsFile, RefusesBadContentAndMissingPrograms) {
  write("off = /bin/true\nbad = x; y\n", 0600);
  EXPECT_EQ(loadFenceAgents(path_).status().toString(),
            path_ +
                ":2:8: ';' outside quotes: a fence agent runs without a shell (no pipes, "
                "lists, redirections, variables or substitutions); quote it to pass it as an "
                "argument, or put the shell logic into a script and name the script");
  write("off = /nonexistent/ipmitool {host}\n", 0600);
  EXPECT_EQ(loadFenceAgents(path_).status().toString(),
            path_ +
                ":1:1: fence agent 'off': cannot find the program '/nonexistent/ipmitool' "
                "(not an executable file)");
  write("off = no-such-fence-tool-xyz {host}\n", 0600);
  EXPECT_EQ(loadFenceAgents(path_).status().toString(),
            path_ +
                ":1:1: fence agent 'off': cannot find the program 'no-such-fence-tool-xyz' "
                "(not in PATH)");
  write("off = true {host}\n", 0600);  // found in PATH
  EXPECT_TRUE(loadFenceAgents(path_).isOk());
}

// Pins that the example fence agents file parses and defines every agent
// that the example policies name.
TEST(FenceAgentsExample, DefinesWhatTheExamplePoliciesName) {
  std::ifstream in(TW_SOURCE_DIR "/policies/examples/fence-agents.conf");
  ASSERT_TRUE(in.good());
  std::stringstream text;
  text << in.rdbuf();
  auto agents = parseFenceAgents(text.str(), "fence-agents.conf");
  ASSERT_TRUE(agents.isOk()) << agents.status().toString();
  auto files = readPolicyFiles(TW_SOURCE_DIR "/policies/examples");
  ASSERT_TRUE(files.isOk());
  int named = 0;
  for (const auto& f : *files) {
    auto p = parsePolicy({f});
    ASSERT_TRUE(p.isOk()) << p.status().toString();
    for (const auto& h : p->hosts) {
      if (h.fence != FenceMethod::kAgent) continue;
      ++named;
      ASSERT_TRUE(agents->count(h.fence_agent)) << f.name << ": " << h.fence_agent;
      EXPECT_TRUE(fenceArgv(agents->at(h.fence_agent), FenceTarget{h.name, h.uri}).isOk());
    }
  }
  EXPECT_GE(named, 1);
}

}  // namespace
}  // namespace tw
