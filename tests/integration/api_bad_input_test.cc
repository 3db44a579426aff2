// Bad input over real HTTP (the ApiServer of tests/integration/api_test.cc,
// real SQLite): every refusal is a 4xx with a JSON body that is valid JSON,
// the controller survives every request, and request and policy sizes are
// bounded with a message naming the limit (docs/api.md, "Limits").
#include <gtest/gtest.h>
#include <httplib.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include "controller/api_server.h"
#include "api_fixture.h"
#include "controller/controller.h"
#include "controller/service.h"
#include "tw/json.h"
#include "tw/policy.h"
#include "tw/store.h"
#include "tw/text.h"

namespace tw {
namespace {

using namespace testing_api;  // NOLINT: the shared test credentials, raw requests


class ApiBadInputTest : public ApiServerTest {
 protected:
  void SetUp() override {
    namespace fs = std::filesystem;
    web_dir_ = fs::temp_directory_path() / ("tw-web-bad-" + std::to_string(::getpid()));
    fs::create_directories(web_dir_);
    std::ofstream(web_dir_ / "index.html") << "<!doctype html><title>tierwarden</title>";
    ASSERT_NO_FATAL_FAILURE(startServer(serverOptions(web_dir_.string())));
  }

  void TearDown() override {
    stopServer();
    std::filesystem::remove_all(web_dir_);
  }

  httplib::Headers auth() { return {{"Authorization", std::string("Bearer ") + kToken}}; }
  httplib::Headers agentAuth(const std::string& h) { return {{"Authorization", "Bearer " + agentToken(h)}}; }

  // A POST of `body` (as JSON) to the public API with the token.
  httplib::Result post(const std::string& path, const std::string& body) {
    return client_->Post(path.c_str(), auth(), body, "application/json");
  }

  // The controller still answers.
  void expectAlive() {
    auto r = client_->Get("/api/v1/cluster");
    ASSERT_TRUE(r) << "the controller no longer answers";
    EXPECT_EQ(r->status, 200);
  }
};

// Asserts a refusal with `status` whose body is valid JSON (strict UTF-8)
// with an "error" message containing `part`.
void expectJsonError(int status, const std::string& body, int want, const std::string& part = "") {
  EXPECT_EQ(status, want) << body;
  auto j = parseJson(body);
  ASSERT_TRUE(j.isOk()) << "not JSON: " << body;
  ASSERT_TRUE(j->contains("error")) << body;
  EXPECT_NE((*j)["error"].get<std::string>().find(part), std::string::npos) << body;
}

// Pins: the backup endpoints refuse bad input with 4xx JSON and change
// nothing: no token (401), an unknown VM (404), a body without "from" or a
// malformed id (400), an unknown VM in ?vm= (404); the catalogue stays empty.
TEST_F(ApiBadInputTest, BackupEndpoints) {
  auto r = client_->Post("/api/v1/vms/db-1/backup", "", "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 401) << r->body;
  r = post("/api/v1/vms/db-1/backup", "");
  ASSERT_TRUE(r);
  expectJsonError(r->status, r->body, 404, "no vm named 'db-1'");
  r = post("/api/v1/vms/db-1/restore", "{}");
  ASSERT_TRUE(r);
  expectJsonError(r->status, r->body, 400, "expected {\"from\"");
  r = post("/api/v1/vms/db-1/restore", R"({"from": 7})");
  ASSERT_TRUE(r);
  expectJsonError(r->status, r->body, 400, "expected {\"from\"");
  r = post("/api/v1/vms/db-1/restore", R"({"from": "../../etc/passwd"})");
  ASSERT_TRUE(r);
  expectJsonError(r->status, r->body, 400, "expected a backup id like");
  r = post("/api/v1/vms/db-1/restore", R"({"from": "20261206T180000Z-0000beef"})");
  ASSERT_TRUE(r);
  expectJsonError(r->status, r->body, 404, "no vm named 'db-1'");
  r = client_->Get("/api/v1/backups?vm=nope-1", auth());
  ASSERT_TRUE(r);
  expectJsonError(r->status, r->body, 404, "no vm named 'nope-1'");
  r = client_->Get("/api/v1/backups", auth());
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, R"({"backups":[]})");
  expectAlive();
}

// Pins: a path with an invalid UTF-8 byte under any method answers a JSON
// 404/405 and the controller lives on (POST /%ce used to abort it: the error
// handler's JSON dump threw outside httplib's exception handler).
TEST_F(ApiBadInputTest, InvalidUtf8PathIsAnswered) {
  for (const char* method : {"DELETE", "PUT", "PATCH", "OPTIONS", "POST", "GET"}) {
    for (const char* path : {"/%ce", "/api/v1/%ff", "/api/v1/vms/%c3"}) {
      for (int port : {server_->port(), server_->agentPort()}) {
        RawAnswer a = rawRequest(port, std::string(method) + " " + path +
                                           " HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
        ASSERT_NE(a.status, 0) << method << " " << path << ": no answer";
        EXPECT_GE(a.status, 400) << method << " " << path;
        EXPECT_LT(a.status, 500) << method << " " << path << ": " << a.body;
        expectJsonError(a.status, a.body, a.status);
      }
    }
  }
  expectAlive();
}

// Pins: invalid UTF-8 quoted in an error message gives a 4xx with U+FFFD in
// its place, not a 500 (a query parameter, a static file path, a JSON body
// of one 0xFF byte).
TEST_F(ApiBadInputTest, InvalidUtf8InMessagesIs4xx) {
  auto r = client_->Get("/api/v1/events?since=%ff");
  ASSERT_TRUE(r);
  expectJsonError(r->status, r->body, 400, "'since' must be a non-negative integer, got '\xEF\xBF\xBD'");
  r = client_->Get("/x%ff.html");
  ASSERT_TRUE(r);
  expectJsonError(r->status, r->body, 404, "not found");
  r = post("/api/v1/policies", "\xFF");
  ASSERT_TRUE(r);
  expectJsonError(r->status, r->body, 400, "malformed JSON");
  r = agent_->Post("/api/v1/agents/h1/heartbeat", agentAuth("h1"), "\xFF", "application/json");
  ASSERT_TRUE(r);
  expectJsonError(r->status, r->body, 400, "malformed JSON");
  r = post("/api/v1/policies?dry_run=%fe", R"({"files": []})");
  ASSERT_TRUE(r);
  expectJsonError(r->status, r->body, 400, "dry_run");
  expectAlive();
}

// Pins: a YAML error whose quoted value would be cut inside a multi-byte
// character answers 400 with file:line:column (it was a 500: the message was
// not valid UTF-8 and the user lost the position).
TEST_F(ApiBadInputTest, YamlErrorQuotingMultiByteValueKeepsPosition) {
  std::string value = std::string(56, 'a') + "\xC3\xA9" + std::string(20, 'b');
  Json body{{"files", std::vector<PolicyFile>{
                          {"bad.yaml", "tiers:\n  - name: web\n    image: x\n    replicas: " + value + "\n"}}}};
  auto r = post("/api/v1/policies", jsonText(body));
  ASSERT_TRUE(r);
  expectJsonError(r->status, r->body, 400, "expected an integer for 'replicas'");
  auto j = *parseJson(r->body);
  EXPECT_EQ(j["file"], "bad.yaml");
  EXPECT_EQ(j["line"], 4);
  EXPECT_EQ(j["column"], 15);
}

// Pins: JSON that nlohmann parses but cannot hold (1e400: out_of_range.406)
// and values of the wrong type are 400, never 500.
TEST_F(ApiBadInputTest, NumberOverflowAndWrongTypesAre400) {
  auto r = post("/api/v1/policies", R"({"files":1e400})");
  ASSERT_TRUE(r);
  expectJsonError(r->status, r->body, 400, "1e400");
  for (const char* body : {R"({"files": [1]})", R"({"files": [{"name": "a.yaml", "content": 5}]})",
                           R"({"files": [{"name": "a.yaml"}]})", R"([{"files": []}])"}) {
    r = post("/api/v1/policies", body);
    ASSERT_TRUE(r);
    expectJsonError(r->status, r->body, 400);
  }
  for (const char* body : {R"({"host": "h1", "seq": 1e30})", R"({"host": 7})", R"({"host": "h1", "domains": {}})",
                           R"({"host": "h1", "domains": [{"vm": "a", "ports": {"80": "x"}}]})", R"([])"}) {
    r = agent_->Post("/api/v1/agents/h1/heartbeat", agentAuth("h1"), body, "application/json");
    ASSERT_TRUE(r);
    expectJsonError(r->status, r->body, 400);
  }
  r = agent_->Post("/api/v1/agents/h1/events", agentAuth("h1"), R"({"kind": 1})", "application/json");
  ASSERT_TRUE(r);
  expectJsonError(r->status, r->body, 400);
  r = post("/api/v1/vms/web-1/migrate", R"({"to": 5})");
  ASSERT_TRUE(r);
  expectJsonError(r->status, r->body, 400);
  expectAlive();
}

// Pins: request sizes are bounded with a JSON 413 that names the limit: a
// policy body over 1 MiB, any body over 8 MiB (httplib refuses it before
// reading), a form-encoded body over httplib's 8 KiB; a request line over
// 8 KiB is a JSON 414.
TEST_F(ApiBadInputTest, OversizedRequestsAre413WithTheLimit) {
  std::string big(1024 * 1024 + 1, ' ');
  auto r = post("/api/v1/policies", big);
  ASSERT_TRUE(r);
  expectJsonError(r->status, r->body, 413, "at most 1024 KiB (1048576 bytes)");
  // httplib reads (and drops) the body before it answers.
  std::string huge(8 * 1024 * 1024 + 1, ' ');
  for (int port : {server_->port(), server_->agentPort()}) {
    for (const char* path : {"/api/v1/policies", "/api/v1/agents/h1/heartbeat"}) {
      RawAnswer a = rawRequest(port, std::string("POST ") + path + " HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
                                         kToken + "\r\nContent-Type: application/json\r\nConnection: close\r\n"
                                         "Content-Length: " + std::to_string(huge.size()) + "\r\n\r\n" + huge);
      expectJsonError(a.status, a.body, 413, "at most 8192 KiB (8388608 bytes)");
    }
  }
  r = client_->Post("/api/v1/policies", auth(), std::string(10000, 'a'), "application/x-www-form-urlencoded");
  ASSERT_TRUE(r);
  expectJsonError(r->status, r->body, 413, "application/json");
  RawAnswer a = rawRequest(server_->port(),
                           "GET /" + std::string(9000, 'a') + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  expectJsonError(a.status, a.body, 414, "request line too long");
  expectAlive();
}

// Pins: a policy over the tier limit (30,000 tiers blocked the controller's
// loop for 4 s) is refused at once with 400 naming the limit, also as a dry
// run; nothing is applied.
TEST_F(ApiBadInputTest, PolicyOverTheTierLimitIs400) {
  std::string yaml = "tiers:\n";
  for (int i = 0; i <= kMaxPolicyTiers; ++i) yaml += "- {name: t" + std::to_string(i) + ", image: x}\n";
  Json body{{"files", std::vector<PolicyFile>{{"big.yaml", yaml}}}};
  ASSERT_LT(jsonText(body).size(), 1024u * 1024u);
  for (const char* path : {"/api/v1/policies?dry_run=1", "/api/v1/policies"}) {
    auto start = std::chrono::steady_clock::now();
    auto r = post(path, jsonText(body));
    ASSERT_TRUE(r);
    expectJsonError(r->status, r->body, 400, "at most 1000 tiers");
    EXPECT_EQ((*parseJson(r->body))["line"], kMaxPolicyTiers + 2);
    EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
  }
  EXPECT_EQ(controller_->policyVersion(), 0);
}

}  // namespace
}  // namespace tw
