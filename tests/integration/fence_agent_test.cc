// Fence agents as real processes: the controller's configuration file, the
// daemon's LibvirtHostConnector running an agent without a shell, the
// Controller fencing a dead host through it, and the daemon refusing a bad
// or unsafe configuration at start. No root, no libvirt.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "controller/controller.h"
#include "controller/fence_agents.h"
#include "controller/libvirt_host_connector.h"
#include "tw/store.h"

namespace tw {
namespace {

namespace fs = std::filesystem;

class FenceAgentTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "tw-fence-agent-XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    ::chmod(dir_.c_str(), 0700);
    // The fence agent's program: writes each argument it got on a line of
    // the file named by its first argument.
    recorder_ = dir_ + "/record";
    std::ofstream(recorder_)
        << "#!/bin/sh\nout=$1\nshift\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; "
           "done >\"$out\"\n";
    ::chmod(recorder_.c_str(), 0700);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  std::string writeConf(const std::string& text, mode_t mode = 0600) {
    std::string path = dir_ + "/fence-agents.conf";
    std::ofstream(path) << text;
    ::chmod(path.c_str(), mode);
    return path;
  }

  std::vector<std::string> recorded() {
    std::vector<std::string> lines;
    std::ifstream in(dir_ + "/out");
    for (std::string line; std::getline(in, line);) lines.push_back(line);
    return lines;
  }

  // A template whose arguments a shell would act on: ';', '&&', '$(...)', blanks.
  std::string hostileTemplate() {
    return "rec = " + recorder_ + " " + dir_ + "/out {host} 'a;b' \"x y\" '$(touch " + dir_ +
           "/pwned)' --uri={uri} ';' touch " + dir_ + "/pwned2 '&&' 'touch " + dir_ + "/pwned3'\n";
  }

  std::string dir_;
  std::string recorder_;
};

// Pins (the security fix): a fence agent runs without a shell. Every word of
// the template, ';' and '$(...)' included, reaches argv as one literal
// argument; {host} and {uri} are filled in inside their words; nothing the
// shell would have done happens.
TEST_F(FenceAgentTest, RunsWithoutAShell) {
  auto agents = loadFenceAgents(writeConf(hostileTemplate()));
  ASSERT_TRUE(agents.isOk()) << agents.status().toString();
  auto argv = fenceArgv(agents->at("rec"), FenceTarget{"h1", "qemu+ssh://h1/system"});
  ASSERT_TRUE(argv.isOk());
  std::string detail;
  EXPECT_EQ(runFenceAgent(*argv, 10000, detail), 0) << detail;
  EXPECT_EQ(detail, "exited 0");
  EXPECT_EQ(recorded(),
            (std::vector<std::string>{"h1", "a;b", "x y", "$(touch " + dir_ + "/pwned)",
                                      "--uri=qemu+ssh://h1/system", ";", "touch", dir_ + "/pwned2",
                                      "&&", "touch " + dir_ + "/pwned3"}));
  for (const char* f : {"/pwned", "/pwned2", "/pwned3"}) EXPECT_FALSE(fs::exists(dir_ + f)) << f;
}

// Pins what the runner reports (exit status, signal, timeout, a program that
// cannot run) and that stdin is /dev/null (cat ends at once), never argv.
TEST_F(FenceAgentTest, ReportsExitStatusOnly) {
  std::string detail;
  EXPECT_EQ(runFenceAgent({"false", "--password=S3cret"}, 10000, detail), 1);
  EXPECT_EQ(detail, "exited 1");
  EXPECT_EQ(runFenceAgent({"cat"}, 10000, detail), 0);
  EXPECT_EQ(detail, "exited 0");
  auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(runFenceAgent({"sleep", "30"}, 200, detail), -1);
  EXPECT_EQ(detail, "timed out after 0.2s");
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  EXPECT_EQ(runFenceAgent({"/nonexistent/fence", "S3cret"}, 10000, detail), -1);
  EXPECT_EQ(detail, "cannot run it: No such file or directory");
  EXPECT_EQ(runFenceAgent({"sh", "-c", "kill -9 $$"}, 10000, detail), -1);
  EXPECT_EQ(detail, "killed by signal 9");
}

// Pins the whole path in the daemon's pieces: a dead host with fence:
// { agent: rec } is fenced by the real LibvirtHostConnector running the
// agent (a real process, no shell); the events name the agent and its exit
// status, never its command or arguments.
TEST_F(FenceAgentTest, ControllerFencesADeadHostByItsAgent) {
  auto agents = loadFenceAgents(writeConf(hostileTemplate()));
  ASSERT_TRUE(agents.isOk()) << agents.status().toString();
  auto store = Store::open(":memory:");
  ASSERT_TRUE(store.isOk());
  ManualClock clock(1000);
  LibvirtHostConnector connector;
  Controller controller(**store, clock, &connector, *agents);
  ASSERT_TRUE(controller.recover().isOk());
  auto applied = controller.applyPolicy(
      {{"hosts.yaml",
        "hosts:\n  - { name: h1, uri: \"qemu+unix:///system?socket=/nonexistent/tw.sock\", "
        "fence: { agent: rec } }\n  - { name: h2 }\n"}},
      false);
  ASSERT_TRUE(applied.isOk()) << applied.status().toString();
  // h1 goes silent (its libvirt is never reached); h2 goes on and reports
  // h1 unreachable: with the controller's vote, a quorum.
  auto beat = [&](const std::string& host) {
    Heartbeat hb;
    hb.host = host;
    hb.agent_id = "agent-" + host;
    hb.capacity = {4, 4096};
    if (host == "h2") hb.peers_unreachable["h1"] = 60000;
    ASSERT_TRUE(controller.handleHeartbeat(hb).isOk());
  };
  beat("h1");
  beat("h2");
  controller.runOnce();
  for (int i = 0; i < 35 && controller.host("h1")->state != HostState::kOffline; ++i) {
    clock.advance(100);
    beat("h2");
    controller.runOnce();
  }
  ASSERT_EQ(controller.host("h1")->state, HostState::kOffline);
  // The agent runs on the connector's thread; its outcome comes back on a
  // later pass. Real time: a process has to start and end.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (controller.host("h1")->state != HostState::kFenced &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    beat("h2");
    controller.runOnce();
  }
  ASSERT_EQ(controller.host("h1")->state, HostState::kFenced);
  EXPECT_EQ(controller.host("h1")->reason, "fenced by fence agent 'rec': exited 0");
  ASSERT_FALSE(recorded().empty());
  EXPECT_EQ(recorded()[0], "h1");
  EXPECT_EQ(recorded()[4], "--uri=qemu+unix:///system?socket=/nonexistent/tw.sock");
  auto events = (*store)->eventsSince(0, 1000);
  ASSERT_TRUE(events.isOk());
  std::string all;
  for (const auto& e : *events) all += e.message + "\n";
  EXPECT_NE(all.find("fencing host 'h1' by fence agent 'rec'\n"), std::string::npos) << all;
  for (const std::string& secret : {dir_, std::string("a;b"), std::string("pwned"), recorder_})
    EXPECT_EQ(all.find(secret), std::string::npos) << secret << " in:\n" << all;
}

struct Exit {
  int code = -1;
  std::string out;
};

Exit runController(const std::string& args) {
  Exit r;
  std::string cmd = std::string(TW_BIN_DIR) + "/tierwarden-controller " + args + " 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  int st = ::pclose(p);
  r.code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

// Pins that the daemon refuses to start on a fence agents file that others
// may write, that has a bad line (file:line:column), or that is missing
// when named; the message says what is wrong.
TEST_F(FenceAgentTest, DaemonRefusesABadConfiguration) {
  const std::string common = "--state-dir " + dir_ + "/state --listen 127.0.0.1:0 --insecure-http --fence-agents ";
  std::string conf = writeConf("off = /bin/true {host}\n", 0664);
  Exit r = runController(common + conf);
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("fence agents file " + conf +
                       " is writable by its group or by others (mode 0664)"),
            std::string::npos)
      << r.out;
  conf = writeConf("off = /bin/true {host}\nbad = /bin/true {port}\n", 0600);
  r = runController(common + conf);
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find(conf + ":2:17: unknown placeholder '{port}' (known: {host}, {uri})"),
            std::string::npos)
      << r.out;
  r = runController(common + dir_ + "/missing.conf");
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("fence agents file " + dir_ + "/missing.conf does not exist"),
            std::string::npos)
      << r.out;
}

}  // namespace
}  // namespace tw
