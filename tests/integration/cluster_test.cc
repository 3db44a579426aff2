// A real cluster in miniature: tierwarden-controller and one tierwarden-agent
// per host as real processes over HTTP; each host is a real libvirtd in its own
// namespace (scripts/hosts) serving libvirt's test driver. Applies
// policies/demo.yaml with twctl and checks what an operator would: VMs running
// and spread, a VM destroyed through libvirt comes back, re-apply changes
// nothing, a broken file is refused with file:line:column and changes nothing.
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <thread>

#include "child_process.h"
#include "free_port.h"
#include "tw/hypervisor.h"
#include "tw/json.h"

extern char** environ;

namespace tw {
namespace {

namespace fs = std::filesystem;

using testing_process::CommandResult;
using testing_process::eventually;
using testing_process::run;

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

// A child process with its output in a log file; killed on destruction.
class Process {
 public:
  Process(const std::vector<std::string>& argv, const std::string& log) {
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    if (posix_spawn(&pid_, args[0], &fa, nullptr, args.data(), environ) != 0) pid_ = -1;
    posix_spawn_file_actions_destroy(&fa);
  }
  ~Process() { stop(); }
  void stop() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGTERM);
    int st;
    ::waitpid(pid_, &st, 0);
    pid_ = -1;
  }
  bool alive() const { return pid_ > 0 && ::waitpid(pid_, nullptr, WNOHANG) == 0; }

 private:
  pid_t pid_ = -1;
};

class ClusterTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (::geteuid() != 0) return;
    dir_ = fs::temp_directory_path() / ("tw-cluster-" + std::to_string(::getpid()));
    fs::create_directories(dir_ / "state");
    // The QEMU capabilities cache outlives the test: later runs start hosts in ~0.5 s.
    hosts_env_ = "TW_HOSTS_DIR=" + (dir_ / "hosts").string() + " TW_HOSTS_CAPS_CACHE=" +
                 std::string(TW_BIN_DIR) + "/../hosts-caps-cache ";
    auto started = run(hosts_env_ + std::string(TW_SOURCE_DIR) + "/scripts/hosts start 3");
    ASSERT_EQ(started.exit_code, 0) << started.out;
    for (const char* h : {"h1", "h2", "h3"}) {
      auto uri = run(hosts_env_ + std::string(TW_SOURCE_DIR) + "/scripts/hosts test-uri " + h);
      ASSERT_EQ(uri.exit_code, 0) << uri.out;
      uris_[h] = trim(uri.out);
    }
    port_ = testing_ports::freeLoopbackPort();
    url_ = "http://127.0.0.1:" + std::to_string(port_);
    int agent_port = testing_ports::freeLoopbackPort();
    agent_url_ = "http://127.0.0.1:" + std::to_string(agent_port);
    // Each agent with its own token (issue-host, before the first start).
    for (const char* h : {"h1", "h2", "h3"}) {
      auto issued = run(std::string(TW_BIN_DIR) + "/tierwarden-controller issue-host " + h + " --state-dir " +
                        (dir_ / "state").string());
      ASSERT_EQ(issued.exit_code, 0) << issued.out;
    }
    controller_ = new Process({std::string(TW_BIN_DIR) + "/tierwarden-controller", "--state-dir",
                               (dir_ / "state").string(), "--listen", "127.0.0.1:" + std::to_string(port_),
                               "--agent-listen", "127.0.0.1:" + std::to_string(agent_port), "--tick-ms", "50",
                               "--insecure-http"},
                              (dir_ / "controller.log").string());
    token_file_ = (dir_ / "state" / "token").string();
    ASSERT_TRUE(eventually([] { return fs::exists(token_file_) && fs::file_size(token_file_) > 0; }, 10));
    {
      std::ifstream in(token_file_);
      std::getline(in, token_);
    }
    for (const char* h : {"h1", "h2", "h3"}) {
      agents_[h] = new Process({std::string(TW_BIN_DIR) + "/tierwarden-agent", "--host", h, "--libvirt-uri",
                                uris_[h], "--controller", agent_url_, "--token-file",
                                (dir_ / "state" / "hosts" / h / "token").string()},
                               (dir_ / (std::string("agent-") + h + ".log")).string());
    }
  }

  static void TearDownTestSuite() {
    for (auto& [_, p] : agents_) delete p;
    agents_.clear();
    delete controller_;
    controller_ = nullptr;
    if (!dir_.empty()) {
      run(hosts_env_ + std::string(TW_SOURCE_DIR) + "/scripts/hosts stop");
      if (!failed_) fs::remove_all(dir_);
    }
  }

  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root to start libvirt hosts";
  }
  // Keeps the logs of a failed run in dir_ (printed at the end).
  void TearDown() override {
    if (HasFailure()) {
      failed_ = true;
      std::printf("cluster test logs kept in %s\n", dir_.c_str());
    }
  }

  CommandResult twctl(const std::string& args) {
    return run(std::string(TW_BIN_DIR) + "/twctl --controller " + url_ + " --token-file " + token_file_ + " " + args);
  }

  Json vms() {
    httplib::Client c("127.0.0.1", port_);
    auto r = c.Get("/api/v1/vms", httplib::Headers{{"Authorization", "Bearer " + token_}});
    if (!r || r->status != 200) return Json::object({{"vms", Json::array()}});
    return *parseJson(r->body);
  }

  std::map<std::string, Json> vmsByName() {
    std::map<std::string, Json> out;
    Json all = vms();
    for (const auto& v : all["vms"]) out[v["name"].get<std::string>()] = v;
    return out;
  }

  bool allRunning(size_t n) {
    auto all = vms()["vms"];
    if (all.size() != n) return false;
    for (const auto& v : all)
      if (v["state"] != "running") return false;
    return true;
  }

  static inline bool failed_ = false;
  static inline fs::path dir_;
  static inline std::string hosts_env_;
  static inline std::map<std::string, std::string> uris_;
  static inline int port_ = 0;
  static inline std::string url_;
  static inline std::string agent_url_;  // the controller's agents' listener
  static inline std::string token_file_;
  static inline std::string token_;  // the operator's
  static inline Process* controller_ = nullptr;
  static inline std::map<std::string, Process*> agents_;
};

// policies/demo.yaml with its DR place (backup.to, the lab's
// /srv/tierwarden/shared/dr) in this test's directory: these agents run on
// this machine's file system, and the controller refuses a policy whose
// backup.to the hosts report missing (controller/apply_checks.h).
std::string demoPolicyText(const fs::path& dir) {
  std::ifstream in(std::string(TW_SOURCE_DIR) + "/policies/demo.yaml");
  std::stringstream text;
  text << in.rdbuf();
  std::string policy = text.str();
  const std::string dr = "/srv/tierwarden/shared/dr";
  fs::create_directories(dir / "dr");
  auto at = policy.find(dr);
  if (at != std::string::npos) policy.replace(at, dr.size(), (dir / "dr").string());
  return policy;
}

// Pins the whole steady-state story of the foundation, in order.
TEST_F(ClusterTest, DemoPolicyRunsSpreadHealsAndRefusesBadInput) {
  // 1. apply the demo policy: five VMs running, replicas on distinct hosts, none on the spare.
  const fs::path demo = dir_ / "demo.yaml";
  std::ofstream(demo) << demoPolicyText(dir_);
  auto applied = twctl("apply -f " + demo.string());
  ASSERT_EQ(applied.exit_code, 0) << applied.out;
  ASSERT_TRUE(eventually([&] { return allRunning(5); }, 60)) << vms().dump(2);
  auto by = vmsByName();
  EXPECT_NE(by["mysql-1"]["host"], by["mysql-2"]["host"]);
  EXPECT_NE(by["apache-1"]["host"], by["apache-2"]["host"]);
  for (const auto& [name, v] : by) EXPECT_NE(v["host"], "h3") << name << " placed on the spare";

  // The domains really exist in each host's libvirt, with our metadata and epoch.
  std::map<std::string, std::unique_ptr<Hypervisor>> hv;
  for (const char* h : {"h1", "h2", "h3"}) {
    auto c = connectLibvirt(uris_[h]);
    ASSERT_TRUE(c.isOk()) << c.status().toString();
    hv[h] = std::move(c).value();
  }
  for (const auto& [name, v] : by) {
    auto st = hv[v["host"].get<std::string>()]->domainState(name);
    ASSERT_TRUE(st.isOk()) << name << ": " << st.status().toString();
    EXPECT_EQ(st->state, DomainState::kRunning) << name;
    EXPECT_EQ(st->meta.epoch, v["epoch"].get<int64_t>()) << name;
  }
  auto on_spare = hv["h3"]->listManaged();
  ASSERT_TRUE(on_spare.isOk());
  EXPECT_TRUE(on_spare->empty());

  // 2. destroy one VM behind tierwarden's back, through libvirt: the agent
  // sees the lifecycle event and starts it again.
  std::string victim_host = by["apache-1"]["host"];
  ASSERT_TRUE(hv[victim_host]->destroy("apache-1").isOk());
  ASSERT_TRUE(eventually(
      [&] {
        auto st = hv[victim_host]->domainState("apache-1");
        return st.isOk() && st->state == DomainState::kRunning;
      },
      20));
  ASSERT_TRUE(eventually([&] { return allRunning(5); }, 20));
  auto events = twctl("get events -o json");
  ASSERT_EQ(events.exit_code, 0) << events.out;
  EXPECT_NE(events.out.find("apache-1"), std::string::npos);

  // 3. the same file again: nothing changes (no new version, same hosts and epochs).
  auto before = vmsByName();
  auto again = twctl("apply -f " + demo.string());
  ASSERT_EQ(again.exit_code, 0) << again.out;
  EXPECT_NE(again.out.find("no change"), std::string::npos) << again.out;
  auto after = vmsByName();
  for (const auto& [name, v] : before) {
    EXPECT_EQ(v["host"], after[name]["host"]) << name;
    EXPECT_EQ(v["epoch"], after[name]["epoch"]) << name;
  }

  // 4. a broken file: a one-line error with file:line:column, exit non-zero, nothing changed.
  fs::path bad = dir_ / "demo.yaml";
  std::string broken = demoPolicyText(dir_);
  auto pos = broken.find("replicas: 2");
  ASSERT_NE(pos, std::string::npos);
  broken.replace(pos, 11, "replicas: two");
  std::ofstream(bad) << broken;
  int line = 1 + static_cast<int>(std::count(broken.begin(), broken.begin() + pos, '\n'));
  auto refused = twctl("apply -f " + bad.string());
  EXPECT_NE(refused.exit_code, 0);
  EXPECT_NE(refused.out.find("demo.yaml:" + std::to_string(line) + ":"), std::string::npos) << refused.out;
  auto unchanged = vmsByName();
  for (const auto& [name, v] : before) {
    EXPECT_EQ(v["host"], unchanged[name]["host"]) << name;
    EXPECT_EQ(v["epoch"], unchanged[name]["epoch"]) << name;
  }
  httplib::Client c("127.0.0.1", port_);
  auto cluster = c.Get("/api/v1/cluster", httplib::Headers{{"Authorization", "Bearer " + token_}});
  ASSERT_TRUE(cluster);
  EXPECT_EQ((*parseJson(cluster->body))["policy_version"], 1);
}

// Pins the self-healing path through the real daemons: a host dies (its
// agent stops and its libvirtd is killed, so both signals agree); the
// controller fences it by lease expiry and rebuilds its VMs elsewhere — the
// replicated tiers on the spare (spread: required), the single balancer on
// the remaining active host — and the host's incident has its timeline.
TEST_F(ClusterTest, HostCrashRebuildsItsVmsOnTheSpare) {
  // Re-apply demo.yaml with the hosts' real libvirt URIs (the controller's
  // second signal) and required spread (so that the spare is the only choice).
  std::string policy = demoPolicyText(dir_);
  for (const char* h : {"h1", "h2", "h3"}) {
    std::string key = std::string("name: ") + h;
    auto at = policy.find(key);
    ASSERT_NE(at, std::string::npos) << h;
    auto uri_at = policy.find("uri: ", at);
    auto eol = policy.find('\n', uri_at);
    policy.replace(uri_at, eol - uri_at, "uri: \"" + uris_[h] + "\"");
  }
  for (size_t at = policy.find("  - name: "); at != std::string::npos; at = policy.find("  - name: ", at + 1)) {
    if (policy.compare(at, 11, "  - name: h") == 0) continue;  // a host
    auto eol = policy.find('\n', at);
    policy.insert(eol + 1, "    placement: { spread: required }\n");
  }
  fs::path file = dir_ / "demo.yaml";
  std::ofstream(file) << policy;
  auto applied = twctl("apply -f " + file.string());
  ASSERT_EQ(applied.exit_code, 0) << applied.out << "\n" << policy;
  ASSERT_TRUE(eventually([&] { return allRunning(5); }, 30)) << vms().dump(2);
  auto before = vmsByName();
  std::vector<std::string> on_h1;
  for (const auto& [name, v] : before)
    if (v["host"] == "h1") on_h1.push_back(name);
  ASSERT_FALSE(on_h1.empty());

  // The host dies: its agent and its libvirtd.
  agents_["h1"]->stop();
  auto crashed = run(hosts_env_ + std::string(TW_SOURCE_DIR) + "/scripts/hosts crash h1");
  ASSERT_EQ(crashed.exit_code, 0) << crashed.out;

  ASSERT_TRUE(eventually(
      [&] {
        auto now = vmsByName();
        for (const auto& name : on_h1) {
          bool replicated = name.rfind("balancer", 0) != 0;
          std::string host = now[name]["host"].is_string() ? now[name]["host"].get<std::string>() : "";
          if (host == "h1" || host.empty() || now[name]["state"] != "running") return false;
          if (replicated && host != "h3") return false;
        }
        return true;
      },
      40))
      << vms().dump(2);
  auto after = vmsByName();
  for (const auto& name : on_h1) EXPECT_GT(after[name]["epoch"].get<int64_t>(), before[name]["epoch"].get<int64_t>());
  for (const auto& [name, v] : after) EXPECT_NE(v["host"], "h1") << name;

  httplib::Client c("127.0.0.1", port_);
  auto hosts = c.Get("/api/v1/hosts", httplib::Headers{{"Authorization", "Bearer " + token_}});
  ASSERT_TRUE(hosts);
  Json host_list = *parseJson(hosts->body);
  for (const auto& h : host_list["hosts"])
    if (h["name"] == "h1") {
      EXPECT_EQ(h["state"], "fenced");
    }
  // The incident reaches "started" at the controller's next pass after the
  // VMs run: wait for it rather than race it.
  std::vector<std::string> steps;
  bool found = eventually(
      [&] {
        auto incidents = c.Get("/api/v1/incidents", httplib::Headers{{"Authorization", "Bearer " + token_}});
        if (!incidents) return false;
        Json incident_list = *parseJson(incidents->body);
        for (const auto& inc : incident_list["incidents"]) {
          if (inc["subject"] != "host/h1") continue;
          steps.clear();
          for (const auto& st : inc["steps"]) steps.push_back(st["step"]);
          return std::find(steps.begin(), steps.end(), "started") != steps.end();
        }
        return false;
      },
      10);
  ASSERT_TRUE(found) << "host/h1 incident steps so far: " << steps.size();
  EXPECT_EQ(steps.front(), "detected");
  EXPECT_NE(std::find(steps.begin(), steps.end(), "fenced"), steps.end());
  EXPECT_LT(std::find(steps.begin(), steps.end(), "fenced"), std::find(steps.begin(), steps.end(), "started"));
}

}  // namespace
}  // namespace tw
