// The tierwarden-agent process and its lab host watchdog (--watchdog
// lab:FILE): it arms the file, its pet thread touches it while the agent is
// entitled, a clean stop disarms it only when no managed VM runs, and a
// kill -9 leaves it armed with the touches stopped. Real processes on
// libvirt's test driver, no controller (nothing answers its heartbeats).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tw/hypervisor.h"

extern char** environ;

namespace tw {
namespace {

namespace fs = std::filesystem;

bool eventually(const std::function<bool()>& cond, double seconds) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(int(seconds * 1000));
  while (std::chrono::steady_clock::now() < deadline) {
    if (cond()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return cond();
}

std::string firstLine(const fs::path& p) {
  std::ifstream f(p);
  std::string line;
  std::getline(f, line);
  return line;
}

std::string slurp(const fs::path& p) {
  std::ifstream f(p);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

// Modification time in ms (0: no file).
int64_t mtimeMs(const fs::path& p) {
  struct stat st {};
  if (::stat(p.c_str(), &st) != 0) return 0;
  return static_cast<int64_t>(st.st_mtim.tv_sec) * 1000 + st.st_mtim.tv_nsec / 1000000;
}

class AgentWatchdogProcessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("tw-agent-wd-" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "state");
    fs::create_directories(dir_ / "disks");
  }
  void TearDown() override {
    stopAgent(SIGKILL);
    if (!HasFailure()) fs::remove_all(dir_);
  }

  // A test-driver host whose one domain, web-1, is a running managed VM.
  std::string managedHostUri() {
    const fs::path node = dir_ / "node.xml";
    std::ofstream(node) << "<node><cpu><nodes>1</nodes><sockets>1</sockets><cores>4</cores>"
                           "<threads>1</threads><active>4</active><mhz>2000</mhz>"
                           "<model>x86_64</model></cpu><memory>8388608</memory>"
                           "<domain type='test'><name>web-1</name><memory unit='MiB'>256</memory>"
                           "<vcpu>1</vcpu><os><type>hvm</type></os><metadata><tw:instance xmlns:tw='"
                        << kMetadataNamespace
                        << "' vm='web-1' tier='web' epoch='1' policy_version='1' "
                           "spec_digest='d1'/></metadata></domain></node>\n";
    return "test://" + node.string();
  }

  void startAgent(const std::string& uri) {
    const std::vector<std::string> argv = {std::string(TW_BIN_DIR) + "/tierwarden-agent",
                                           "--host", "h1", "--libvirt-uri", uri,
                                           "--controller", "http://127.0.0.1:9",  // nothing listens
                                           "--token", "t", "--peer-listen", "127.0.0.1:0",
                                           "--disk-dir", (dir_ / "disks").string(),
                                           "--state-dir", (dir_ / "state").string(),
                                           "--watchdog", "lab:" + wd().string(),
                                           "--watchdog-timeout", "2"};
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, log().c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ASSERT_EQ(posix_spawn(&pid_, args[0], &fa, nullptr, args.data(), environ), 0);
    posix_spawn_file_actions_destroy(&fa);
  }
  int stopAgent(int sig) {
    if (pid_ <= 0) return -1;
    ::kill(pid_, sig);
    int st = 0;
    ::waitpid(pid_, &st, 0);
    pid_ = -1;
    return st;
  }
  fs::path wd() const { return dir_ / "watchdog"; }
  fs::path log() const { return dir_ / "agent.log"; }
  bool petted() {  // the file was touched in the last 600 ms
    const int64_t before = mtimeMs(wd());
    return eventually([&] { return mtimeMs(wd()) > before; }, 0.6);
  }

  fs::path dir_;
  pid_t pid_ = -1;
};

// Pins: the agent arms the lab file with W, its pet thread touches it while
// a managed VM runs under a valid start-up lease, and a clean stop with that
// VM running leaves it armed (nothing else would enforce the lease), saying so.
TEST_F(AgentWatchdogProcessTest, CleanStopWithVmsRunningLeavesItArmed) {
  startAgent(managedHostUri());
  ASSERT_TRUE(eventually([&] { return firstLine(wd()) == "armed 2000"; }, 10)) << slurp(log());
  EXPECT_TRUE(petted()) << slurp(log());
  EXPECT_TRUE(petted());
  EXPECT_EQ(stopAgent(SIGTERM), 0);
  EXPECT_EQ(firstLine(wd()), "armed 2000");
  EXPECT_NE(slurp(log()).find("host watchdog left armed: 1 managed VMs run here"), std::string::npos)
      << slurp(log());
}

// Pins: with no managed VM on the host a clean stop disarms the watchdog
// (the magic close of the lab file: "disarmed").
TEST_F(AgentWatchdogProcessTest, CleanStopWithNothingRunningDisarms) {
  startAgent("test:///default");  // its one domain is not ours
  ASSERT_TRUE(eventually([&] { return firstLine(wd()) == "armed 2000"; }, 10)) << slurp(log());
  EXPECT_TRUE(petted());
  EXPECT_EQ(stopAgent(SIGTERM), 0);
  EXPECT_EQ(firstLine(wd()), "disarmed");
}

// Pins: kill -9 leaves the watchdog armed and the touches stop (the lab
// watcher then crashes the host W later); a new agent arms and pets it again
// and reads the state its predecessor kept.
TEST_F(AgentWatchdogProcessTest, KilledAgentStopsPettingAndARestartPetsAgain) {
  startAgent(managedHostUri());
  ASSERT_TRUE(eventually([&] { return firstLine(wd()) == "armed 2000"; }, 10)) << slurp(log());
  ASSERT_TRUE(petted());
  stopAgent(SIGKILL);
  const int64_t last = mtimeMs(wd());
  std::this_thread::sleep_for(std::chrono::milliseconds(700));
  EXPECT_EQ(mtimeMs(wd()), last);
  EXPECT_EQ(firstLine(wd()), "armed 2000");
  startAgent(managedHostUri());
  EXPECT_TRUE(eventually([&] { return mtimeMs(wd()) > last; }, 10)) << slurp(log());
  EXPECT_TRUE(petted());
}

}  // namespace
}  // namespace tw
