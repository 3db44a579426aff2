// The REST API over a real HTTP server (cpp-httplib) and real SQLite: status
// codes, auth, JSON errors with file:line:column, static files confined to web/.
#include <gtest/gtest.h>
#include <httplib.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "controller/api_server.h"
#include "controller/controller.h"
#include "controller/service.h"
#include "tw/json.h"
#include "tw/store.h"

namespace tw {
namespace {

const char* kToken = "0123456789abcdef0123456789abcdef";

const char* kHosts = R"(hosts:
  - { name: h1, uri: "test:///default" }
  - { name: h2, uri: "test:///default" }
)";
const char* kTiers = R"(tiers:
  - { name: web, image: tiny-web, replicas: 2 }
)";

class ApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    namespace fs = std::filesystem;
    web_dir_ = fs::temp_directory_path() / ("tw-web-" + std::to_string(::getpid()));
    fs::create_directories(web_dir_ / "css");
    std::ofstream(web_dir_ / "index.html") << "<!doctype html><title>tierwarden</title>";
    std::ofstream(web_dir_ / "css" / "app.css") << "body{}";
    std::ofstream(web_dir_.parent_path() / ("tw-secret-" + std::to_string(::getpid()))) << "TOPSECRET-CONTENT";
    auto s = Store::open(":memory:");
    ASSERT_TRUE(s.isOk());
    store_ = std::move(s).value();
    controller_ = std::make_unique<Controller>(*store_, SystemClock::instance());
    ASSERT_TRUE(controller_->recover().isOk());
    service_ = std::make_unique<ControllerService>(*controller_, 50);
    server_ = std::make_unique<ApiServer>(*service_, ApiServerOptions{"127.0.0.1", 0, kToken, web_dir_.string()});
    ASSERT_TRUE(server_->bind().isOk());
    service_->start();
    thread_ = std::thread([this] { server_->serve(); });
    client_ = std::make_unique<httplib::Client>("127.0.0.1", server_->port());
    client_->set_read_timeout(10, 0);
  }

  void TearDown() override {
    server_->stop();
    thread_.join();
    service_->stop();
    std::filesystem::remove_all(web_dir_);
    std::filesystem::remove(web_dir_.parent_path() / ("tw-secret-" + std::to_string(::getpid())));
  }

  httplib::Headers auth() { return {{"Authorization", std::string("Bearer ") + kToken}}; }

  httplib::Result applyFiles(const std::vector<PolicyFile>& files, bool dry = false) {
    Json body{{"files", files}};
    return client_->Post(dry ? "/api/v1/policies?dry_run=1" : "/api/v1/policies", auth(), body.dump(),
                         "application/json");
  }

  std::filesystem::path web_dir_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<Controller> controller_;
  std::unique_ptr<ControllerService> service_;
  std::unique_ptr<ApiServer> server_;
  std::thread thread_;
  std::unique_ptr<httplib::Client> client_;
};

// Pins: reads are open and answer JSON with the documented top-level keys.
TEST_F(ApiTest, ReadsAreOpenJson) {
  for (const char* path : {"/api/v1/cluster", "/api/v1/hosts", "/api/v1/tiers", "/api/v1/vms", "/api/v1/events"}) {
    auto r = client_->Get(path);
    ASSERT_TRUE(r) << path;
    EXPECT_EQ(r->status, 200) << path;
    EXPECT_EQ(r->get_header_value("Content-Type"), "application/json") << path;
    auto j = parseJson(r->body);
    ASSERT_TRUE(j.isOk()) << path;
  }
  auto r = client_->Get("/metrics");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_NE(r->body.find("tierwarden_events_total"), std::string::npos);
}

// Pins: mutating calls and agent calls need the bearer token: 401 without, 401 with a wrong one.
TEST_F(ApiTest, MutationsNeedToken) {
  Json body{{"files", std::vector<PolicyFile>{{"hosts.yaml", kHosts}}}};
  auto r = client_->Post("/api/v1/policies", body.dump(), "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 401);
  EXPECT_TRUE(parseJson(r->body)->contains("error"));
  r = client_->Post("/api/v1/policies", {{"Authorization", "Bearer wrong"}}, body.dump(), "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 401);
  r = client_->Post("/api/v1/agents/h1/heartbeat", R"({"host":"h1"})", "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 401);
  r = client_->Get("/api/v1/agents/h1/assignments");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 401);
  r = client_->Post("/api/v1/vms/web-1/restart", "", "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 401);
  EXPECT_EQ(controller_->policyVersion(), 0);
}

// Pins: a bad policy answers 400 with file, line and column; nothing is applied.
TEST_F(ApiTest, BadPolicyIs400WithPosition) {
  auto r = applyFiles({{"bad.yaml", "tiers:\n  - name: web\n    image: tiny-web\n    replicas: two\n"}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400);
  auto j = parseJson(r->body);
  ASSERT_TRUE(j.isOk());
  EXPECT_EQ((*j)["file"], "bad.yaml");
  EXPECT_EQ((*j)["line"], 4);
  EXPECT_TRUE((*j)["column"].is_number());
  EXPECT_NE((*j)["error"].get<std::string>().find("replicas"), std::string::npos);
  EXPECT_EQ(controller_->policyVersion(), 0);
}

// Pins: malformed JSON and a wrong body shape are 400, never 500.
TEST_F(ApiTest, MalformedBodiesAre400) {
  auto r = client_->Post("/api/v1/policies", auth(), "{not json", "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400);
  r = client_->Post("/api/v1/policies", auth(), R"({"files": "x"})", "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400);
  r = client_->Post("/api/v1/policies", auth(), R"({"files": [{"name": 3}]})", "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400);
  r = client_->Post("/api/v1/policies", auth(), R"({"files": [{"name": "../x.yaml", "content": ""}]})",
                    "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400);
  r = client_->Post("/api/v1/agents/h1/heartbeat", auth(), R"({"nohost": 1})", "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400);
  r = client_->Get("/api/v1/events?since=abc");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400);
}

// Pins: unknown names and paths are 404 with a JSON message.
TEST_F(ApiTest, UnknownIs404) {
  auto r = client_->Get("/api/v1/vms/nope");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 404);
  EXPECT_TRUE(parseJson(r->body)->contains("error"));
  r = client_->Get("/api/v1/nothing");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 404);
  r = client_->Post("/api/v1/vms/nope/restart", auth(), "", "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 404);
  // A heartbeat from a host no policy declares.
  r = client_->Post("/api/v1/agents/h9/heartbeat", auth(), R"({"host":"h9"})", "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 404);
}

// Pins: apply, dry run and the agent protocol over HTTP: a heartbeat answers
// the host's assignments; the same apply twice is "no change".
TEST_F(ApiTest, ApplyAndHeartbeatRoundTrip) {
  auto r = applyFiles({{"hosts.yaml", kHosts}});
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  for (const char* h : {"h1", "h2"}) {
    Heartbeat hb;
    hb.host = h;
    hb.agent_id = "a";
    hb.capacity = {2, 2048};
    auto b = client_->Post((std::string("/api/v1/agents/") + h + "/heartbeat").c_str(), auth(), Json(hb).dump(),
                           "application/json");
    ASSERT_TRUE(b);
    ASSERT_EQ(b->status, 200) << b->body;
  }
  r = applyFiles({{"tiers.yaml", kTiers}}, /*dry=*/true);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  auto j = *parseJson(r->body);
  EXPECT_EQ(j["dry_run"], true);
  EXPECT_EQ(j["plan"]["vms"].size(), 2u);
  EXPECT_EQ(controller_->policyVersion(), 1);

  r = applyFiles({{"tiers.yaml", kTiers}});
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  j = *parseJson(r->body);
  EXPECT_EQ(j["applied"], true);
  EXPECT_EQ(j["version"], 2);

  auto a = client_->Get("/api/v1/agents/h1/assignments?after=0&wait_ms=2000", auth());
  ASSERT_TRUE(a);
  ASSERT_EQ(a->status, 200);
  auto set = decode<AssignmentSet>(*parseJson(a->body));
  ASSERT_TRUE(set.isOk());
  EXPECT_EQ(set->assignments.size(), 1u);
  EXPECT_GT(set->lease_ms, 0);

  r = applyFiles({{"tiers.yaml", kTiers}});
  ASSERT_TRUE(r);
  j = *parseJson(r->body);
  EXPECT_EQ(j["changed"], false);
  EXPECT_EQ(j["version"], 2);

  auto vm = client_->Get("/api/v1/vms/web-1");
  ASSERT_TRUE(vm);
  EXPECT_EQ(vm->status, 200);
  auto restart = client_->Post("/api/v1/vms/web-1/restart", auth(), "", "application/json");
  ASSERT_TRUE(restart);
  EXPECT_EQ(restart->status, 202);
}

// Pins: the dashboard files are served with content types, and nothing
// outside web/ is ever served (dot-dot, encoded dot-dot, absolute paths).
TEST_F(ApiTest, StaticFilesConfinedToWebDir) {
  auto r = client_->Get("/");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->get_header_value("Content-Type"), "text/html; charset=utf-8");
  r = client_->Get("/css/app.css");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->get_header_value("Content-Type"), "text/css; charset=utf-8");
  std::string secret = "tw-secret-" + std::to_string(::getpid());
  for (const std::string& path : std::vector<std::string>{"/../" + secret, "/%2e%2e/" + secret, "/css/../../" + secret,
                           "/..%2f" + secret, "//etc/passwd", "/%2fetc%2fpasswd"}) {
    auto x = client_->Get(path.c_str());
    ASSERT_TRUE(x) << path;
    EXPECT_NE(x->status, 200) << path;
    EXPECT_EQ(x->body.find("TOPSECRET"), std::string::npos) << path;
  }
  std::string resolved;
  EXPECT_FALSE(resolveWebPath(web_dir_.string(), "../" + secret, resolved));
  EXPECT_FALSE(resolveWebPath(web_dir_.string(), "/etc/passwd", resolved));
  EXPECT_TRUE(resolveWebPath(web_dir_.string(), "css/app.css", resolved));
}

}  // namespace
}  // namespace tw
