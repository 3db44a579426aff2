// Three real tierwarden-controller processes on one real etcd (docs/ha.md):
// followers answer reads, a change sent to a follower gets 307 to the leader,
// twctl with the three URLs works through a follower, GET /api/v1/controllers
// lists three with one leader; the leader killed with SIGKILL is replaced
// within seconds, /controllers shows the new one, and twctl still works.
// Skipped when etcd is not installed. ≈ 15 s.
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "child_process.h"
#include "controller_process.h"
#include "etcd_process.h"
#include "tw/json.h"

namespace tw {
namespace {

namespace fs = std::filesystem;
using testing_etcd::EtcdProcess;
using testing_etcd::freeLoopbackPort;

using testing_process::Child;
using testing_process::CommandResult;
using testing_process::eventually;
using testing_process::run;
using testing_replicas::replicaCommand;
using testing_replicas::stateDirToken;

const char* kPolicy = R"(cluster:
  n_plus_one: warn
hosts:
  - name: h1
    uri: test:///default
tiers:
  - name: web
    image: tiny-web
    replicas: 1
    memory: 128MiB
)";

class HaControllersTest : public ::testing::Test {
 protected:
  void SetUp() override {
    etcd_ = EtcdProcess::shared();
    if (etcd_ == nullptr) GTEST_SKIP() << "etcd is not installed (Debian: etcd-server)";
    dir_ = fs::temp_directory_path() / ("tw-ha-" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    cluster_ = "ha-" + std::to_string(::getpid());
    std::ofstream(dir_ / "policy.yaml") << kPolicy;
    for (int i = 1; i <= 3; ++i) {
      const std::string name = "c" + std::to_string(i);
      ports_[name] = freeLoopbackPort();
      urls_[name] = "http://127.0.0.1:" + std::to_string(ports_[name]);
    }
  }

  void TearDown() override {
    children_.clear();
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  // Controller `name` on the shared state dir (the tokens every replica needs).
  void startController(const std::string& name) {
    children_[name] = std::make_unique<Child>(
        replicaCommand(dir_, name, ports_[name], freeLoopbackPort(), etcd_->storeUrl(), cluster_, 2000),
        (dir_ / (name + ".log")).string());
  }

  std::string token() { return stateDirToken(dir_); }

  // GET path on one replica, without following redirects.
  httplib::Result get(const std::string& name, const std::string& path) {
    httplib::Client c(urls_[name]);
    c.set_connection_timeout(1, 0);
    c.set_read_timeout(3, 0);
    c.set_bearer_token_auth(token());
    return c.Get(path);
  }

  // The replica's GET /api/v1/controllers; null when it does not answer.
  Json controllers(const std::string& name) {
    auto r = get(name, "/api/v1/controllers");
    if (!r || r->status != 200) return Json();
    return Json::parse(r->body, nullptr, false);
  }

  CommandResult twctl(const std::string& urls, const std::string& args) {
    return run(std::string(TW_BIN_DIR) + "/twctl --controller " + urls + " --token-file " +
               (dir_ / "token").string() + " " + args);
  }

  std::string log(const std::string& name) {
    std::ifstream in(dir_ / (name + ".log"));
    return std::string(std::istreambuf_iterator<char>(in), {});
  }

  EtcdProcess* etcd_ = nullptr;
  fs::path dir_;
  std::string cluster_;
  std::map<std::string, int> ports_;
  std::map<std::string, std::string> urls_;
  std::map<std::string, std::unique_ptr<Child>> children_;
};

TEST_F(HaControllersTest, FollowersServeRedirectAndTakeOverFromAKilledLeader) {
  startController("c1");
  ASSERT_TRUE(eventually([&] { return controllers("c1").is_object(); }, 15)) << log("c1");
  startController("c2");
  startController("c3");
  // All three registered, one of them leads (the same one for every replica).
  std::string leader;
  ASSERT_TRUE(eventually(
      [&] {
        for (const char* n : {"c1", "c2", "c3"}) {
          Json j = controllers(n);
          if (!j.is_object() || j["replicas"].size() != 3 || !j["leader"].is_string()) return false;
          if (!leader.empty() && j["leader"] != leader) return false;
          leader = j["leader"].get<std::string>();
        }
        return true;
      },
      20))
      << log("c1") << log("c2") << log("c3");
  Json view = controllers(leader);
  int leaders = 0;
  for (const auto& r : view["replicas"]) leaders += r["leader"].get<bool>() ? 1 : 0;
  EXPECT_EQ(leaders, 1);
  std::vector<std::string> followers;
  for (const char* n : {"c1", "c2", "c3"}) {
    if (n != leader) followers.push_back(n);
  }
  const std::string follower = followers[0];

  // A follower answers reads, and sends a change to the leader with 307.
  auto vms = get(follower, "/api/v1/vms");
  ASSERT_TRUE(vms);
  EXPECT_EQ(vms->status, 200);
  auto metrics = get(follower, "/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_NE(metrics->body.find("tierwarden_leader 0\n"), std::string::npos);
  {
    httplib::Client c(urls_[follower]);
    c.set_bearer_token_auth(token());
    auto r = c.Post("/api/v1/policies?dry_run=1", R"({"files":[]})", "application/json");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 307) << r->body;
    EXPECT_EQ(r->get_header_value("Location"), urls_[leader] + "/api/v1/policies?dry_run=1");
    Json body = Json::parse(r->body, nullptr, false);
    EXPECT_EQ(body["leader"]["identity"], leader);
  }

  // twctl with the three URLs, a follower first: the apply reaches the leader.
  const std::string all = urls_[follower] + "," + urls_[followers[1]] + "," + urls_[leader];
  CommandResult applied = twctl(all, "apply -f " + (dir_ / "policy.yaml").string());
  ASSERT_EQ(applied.exit_code, 0) << applied.out << log(leader);
  // The follower's view shows the applied VM within about a second.
  EXPECT_TRUE(eventually(
      [&] {
        auto r = get(follower, "/api/v1/vms");
        return r && r->body.find("\"web-1\"") != std::string::npos;
      },
      5));

  // kill -9 the leader: another replica leads within a few seconds.
  const auto killed_at = std::chrono::steady_clock::now();
  children_[leader]->kill(SIGKILL);
  std::string next;
  ASSERT_TRUE(eventually(
      [&] {
        Json j = controllers(follower);
        if (!j.is_object() || !j["leader"].is_string() || j["leader"] == leader) return false;
        next = j["leader"].get<std::string>();
        return true;
      },
      15))
      << log(follower);
  const double took_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - killed_at).count();
  // Acting: recovered from the store and serving changes (tierwarden_leader 1).
  EXPECT_TRUE(eventually(
      [&] {
        auto m = get(next, "/metrics");
        return m && m->body.find("tierwarden_leader 1\n") != std::string::npos;
      },
      10));
  const double acting_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - killed_at).count();
  std::printf("new leader '%s' seen %.2f s, acting %.2f s after the SIGKILL of '%s' (leader TTL 2 s)\n",
              next.c_str(), took_s, acting_s, leader.c_str());
  EXPECT_NE(next, leader);
  EXPECT_LT(took_s, 10.0);
  Json after = controllers(next);
  EXPECT_EQ(after["leader"], next);
  EXPECT_GT(after["term"].get<int64_t>(), view["term"].get<int64_t>());

  // twctl, its first URL the dead leader's, still works: reads and a change.
  const std::string dead_first = urls_[leader] + "," + urls_[followers[0]] + "," + urls_[followers[1]];
  CommandResult got = twctl(dead_first, "-o json get controllers");
  ASSERT_EQ(got.exit_code, 0) << got.out;
  Json listed = Json::parse(got.out, nullptr, false);
  EXPECT_EQ(listed["leader"], next);
  CommandResult again = twctl(dead_first, "apply --dry-run -f " + (dir_ / "policy.yaml").string());
  EXPECT_EQ(again.exit_code, 0) << again.out << log(next);
  CommandResult table = twctl(dead_first, "get controllers");
  EXPECT_EQ(table.exit_code, 0) << table.out;
  EXPECT_NE(table.out.find("leader"), std::string::npos);
}

}  // namespace
}  // namespace tw
