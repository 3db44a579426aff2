// How heartbeats are answered over real HTTP (issue #16): the
// tierwarden_heartbeats_total{path} counters of /metrics
// (controller/heartbeat_counters.h), and compact heartbeats
// (controller/heartbeat_compact.h) end to end.
#include <gtest/gtest.h>
#include <httplib.h>
#include <unistd.h>

#include <filesystem>
#include <memory>
#include <string>
#include <thread>

#include "api_fixture.h"
#include "controller/api_server.h"
#include "controller/controller.h"
#include "controller/service.h"
#include "tw/http_client.h"
#include "tw/json.h"
#include "tw/store.h"

namespace tw {
namespace {

using namespace testing_api;  // NOLINT: the shared test credentials

const char* kHosts = R"(hosts:
  - { name: h1, uri: "test:///default" }
  - { name: h2, uri: "test:///default" }
)";

class HeartbeatPathsTest : public ApiServerTest {
 protected:
  void SetUp() override {
    web_dir_ = std::filesystem::temp_directory_path() / ("tw-hbpaths-" + std::to_string(::getpid()));
    std::filesystem::create_directories(web_dir_);
    ASSERT_NO_FATAL_FAILURE(startServer(serverOptions(web_dir_.string())));
    Json body{{"files", std::vector<PolicyFile>{{"hosts.yaml", kHosts}}}};
    auto r = client_->Post("/api/v1/policies", {{"Authorization", std::string("Bearer ") + kToken}}, body.dump(),
                           "application/json");
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200) << r->body;
  }

  void TearDown() override {
    stopServer();
    std::filesystem::remove_all(web_dir_);
  }

  // POSTs `body` as h1's heartbeat: {status, body}.
  std::pair<int, std::string> post(const std::string& body, const std::string& as = "h1") {
    auto r = agent_->Post("/api/v1/agents/h1/heartbeat", {{"Authorization", "Bearer " + agentToken(as)}}, body,
                          "application/json");
    EXPECT_TRUE(r);
    return r ? std::make_pair(r->status, r->body) : std::make_pair(0, std::string());
  }

  // h1's heartbeat as an agent that applied `set` sends it.
  static Heartbeat heartbeatAfter(const AssignmentSet& set, int64_t seq) {
    Heartbeat hb;
    hb.host = "h1";
    hb.agent_id = "a1";
    hb.seq = seq;
    hb.capacity = {2, 2048};
    hb.assignments_version = set.version;
    hb.assignments_controller = set.controller_id;
    hb.peers_digest = set.peers_digest;
    return hb;
  }

  // The value of tierwarden_heartbeats_total{path="PATH"} in /metrics (-1: absent).
  int64_t counted(const std::string& path) {
    auto r = client_->Get("/metrics");
    if (!r || r->status != 200) return -1;
    const std::string key = "tierwarden_heartbeats_total{path=\"" + path + "\"} ";
    size_t at = r->body.find(key);
    if (at == std::string::npos) return -1;
    return std::stoll(r->body.substr(at + key.size()));
  }

  // Sends unchanged heartbeats (taking each answer's version) until one is
  // answered off the loop; the last answer.
  AssignmentSet untilFast(int64_t* seq) {
    AssignmentSet set;
    for (int i = 0; i < 40 && server_->heartbeatCounters().get(HeartbeatPath::kFast) == 0; ++i) {
      auto [status, body] = post(Json(heartbeatAfter(set, ++*seq)).dump());
      EXPECT_EQ(status, 200) << body;
      auto decoded = decode<AssignmentSet>(*parseJson(body));
      if (decoded.isOk()) set = *decoded;
      std::this_thread::sleep_for(std::chrono::milliseconds(60));  // a loop tick
    }
    return set;
  }
};

// Pins: /metrics counts each heartbeat by how it was answered: the first ones
// by the loop, an unchanged one off the loop (fast), a heartbeat with
// another host's token or a bad body as refused.
TEST_F(HeartbeatPathsTest, MetricsCountHowHeartbeatsWereAnswered) {
  EXPECT_EQ(counted("fast"), 0);
  EXPECT_EQ(counted("loop"), 0);
  EXPECT_EQ(counted("refused"), 0);
  int64_t seq = 0;
  untilFast(&seq);
  EXPECT_GE(counted("fast"), 1);
  EXPECT_GE(counted("loop"), 1);
  EXPECT_EQ(counted("refused"), 0);
  EXPECT_EQ(post(R"({"host":"h1"})", "h2").first, 403);  // h2's token for h1's path
  EXPECT_EQ(post("{not json").first, 400);
  EXPECT_EQ(counted("refused"), 2);
  EXPECT_EQ(counted("follower"), 0);
}

// Pins: the agent's link (HttpControllerLink) sends unchanged heartbeats
// compact and they are answered off the loop; when the controller no longer
// holds the report (an apply forgets the fast path's sets, as a restart or a
// new leader would hold none), the compact heartbeat is answered "report
// wanted" and the link sends the full one at once: the agent sees a set.
TEST_F(HeartbeatPathsTest, LinkSendsCompactAndFullWhenTheReportIsWanted) {
  ApiClientOptions options;
  options.base_url = "http://127.0.0.1:" + std::to_string(server_->agentPort());
  options.token = agentToken("h1");
  HttpControllerLink link(options);
  AssignmentSet set;
  auto beat = [&](int64_t seq) {
    Heartbeat hb = heartbeatAfter(set, seq);
    Result<AssignmentSet> answer = link.heartbeat(hb);
    EXPECT_TRUE(answer.isOk()) << answer.status().toString();
    if (answer.isOk()) set = *answer;
  };
  int64_t seq = 0;
  for (int i = 0; i < 40 && server_->heartbeatCounters().get(HeartbeatPath::kFast) < 3; ++i) {
    beat(++seq);
    std::this_thread::sleep_for(std::chrono::milliseconds(60));
  }
  ASSERT_GE(server_->heartbeatCounters().get(HeartbeatPath::kFast), 3);
  EXPECT_EQ(server_->heartbeatCounters().get(HeartbeatPath::kRefused), 0);
  const int64_t wanted = server_->heartbeatCounters().get(HeartbeatPath::kReportWanted);
  Json body{{"files", std::vector<PolicyFile>{{"hosts.yaml", std::string(kHosts) + "  - { name: h9, uri: \"test:///default\" }\n"}}}};
  auto r = client_->Post("/api/v1/policies", {{"Authorization", std::string("Bearer ") + kToken}}, body.dump(),
                         "application/json");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  beat(++seq);
  EXPECT_EQ(server_->heartbeatCounters().get(HeartbeatPath::kReportWanted), wanted + 1);
  EXPECT_EQ(server_->heartbeatCounters().get(HeartbeatPath::kRefused), 0);
}

}  // namespace
}  // namespace tw
