// Who may call what, over a real HTTP server (issue #12, section 2): the
// operator's token changes things, a viewer's only reads, a host's agent token
// speaks for its own host only; reads need a token unless --public-read;
// every refusal is a JSON 401/403 that changes nothing.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "api_fixture.h"
#include "controller/api_server.h"
#include "controller/auth.h"
#include "controller/controller.h"
#include "controller/service.h"
#include "tw/json.h"
#include "tw/store.h"

namespace tw {
namespace {

const char* kOperator = "operator-token-0123456789abcdef";
const char* kViewer = "viewer-token-0123456789abcdef";
using testing_api::agentToken;

const char* kHosts = R"(hosts:
  - { name: h1 }
  - { name: h2 }
)";

httplib::Headers bearer(const std::string& token, const std::string& scheme = "Bearer") {
  return {{"Authorization", scheme + " " + token}};
}

// Status code of a raw request (exact bytes, e.g. a NUL in a header); 0 when
// no HTTP answer came.
int rawStatus(int port, const std::string& request, std::string* body = nullptr) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return 0;
  }
  timeval tv{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  (void)::send(fd, request.data(), request.size(), MSG_NOSIGNAL);
  std::string all;
  char buf[4096];
  ssize_t n;
  while ((n = ::recv(fd, buf, sizeof buf, 0)) > 0) {
    all.append(buf, static_cast<size_t>(n));
    if (all.find("\r\n\r\n") != std::string::npos && request.find("events/stream") != std::string::npos) break;
  }
  ::close(fd);
  if (all.rfind("HTTP/1.1 ", 0) != 0) return 0;
  if (body) {
    size_t end = all.find("\r\n\r\n");
    *body = end == std::string::npos ? "" : all.substr(end + 4);
  }
  return std::stoi(all.substr(9, 3));
}

class ApiAuthTest : public testing_api::ApiServerTest {
 protected:
  void start(bool public_read) {
    namespace fs = std::filesystem;
    web_dir_ = fs::temp_directory_path() / ("tw-web-auth-" + std::to_string(::getpid()));
    fs::create_directories(web_dir_);
    std::ofstream(web_dir_ / "index.html") << "<!doctype html><title>tierwarden</title>";
    ApiServerOptions options{"127.0.0.1", 0, "", web_dir_.string()};
    CredentialSet credentials;
    credentials.add(Principal{Role::kOperator, ""}, kOperator);
    credentials.add(Principal{Role::kViewer, ""}, kViewer);
    for (const char* h : {"h1", "h2"}) credentials.add(Principal{Role::kAgent, h}, agentToken(h));
    options.auth = std::make_shared<StaticAuthenticator>(std::move(credentials));
    options.public_read = public_read;
    ASSERT_NO_FATAL_FAILURE(startServer(options));
    Json body{{"files", std::vector<PolicyFile>{{"hosts.yaml", kHosts}}}};
    auto r = client_->Post("/api/v1/policies", bearer(kOperator), body.dump(), "application/json");
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200) << r->body;
  }

  void TearDown() override {
    if (!server_) return;
    stopServer();
    std::filesystem::remove_all(web_dir_);
  }

  std::string heartbeatBody(const std::string& host) {
    Heartbeat hb;
    hb.host = host;
    hb.agent_id = "a-" + host;
    hb.capacity = {2, 2048};
    return Json(hb).dump();
  }

  // The host's last heartbeat time as the API shows it (0: none).
  int64_t lastHeartbeat(const std::string& host) {
    Json hosts = service_->call([](Controller& c) { return c.hostsJson(); });
    for (const auto& h : hosts["hosts"]) {
      if (h["name"] == host) return h["last_heartbeat_ms"].is_number() ? h["last_heartbeat_ms"].get<int64_t>() : 0;
    }
    return -1;
  }

  // `status`, with a JSON object body holding "error".
  static void expectJsonError(const httplib::Result& r, int status) {
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, status) << r->body;
    auto j = parseJson(r->body);
    ASSERT_TRUE(j.isOk()) << r->body;
    EXPECT_TRUE(j->is_object() && j->contains("error")) << r->body;
  }
};

// Pins: a (stolen) agent token applies nothing and calls no operator
// endpoint: 403 JSON, the policy version is unchanged; it reads nothing either.
TEST_F(ApiAuthTest, AgentTokenCannotApplyOrOperate) {
  start(false);
  const int64_t version = controller_->policyVersion();
  Json body{{"files", std::vector<PolicyFile>{{"more.yaml", "hosts:\n  - { name: h3 }\n"}}}};
  expectJsonError(client_->Post("/api/v1/policies", bearer(agentToken("h1")), body.dump(), "application/json"),
                  403);
  expectJsonError(client_->Post("/api/v1/policies?dry_run=1", bearer(agentToken("h1")), body.dump(),
                                "application/json"),
                  403);
  expectJsonError(client_->Post("/api/v1/hosts/h2/drain", bearer(agentToken("h1")), "", "application/json"), 403);
  expectJsonError(client_->Post("/api/v1/auth/check", bearer(agentToken("h1")), "", "application/json"), 403);
  expectJsonError(client_->Get("/api/v1/cluster", bearer(agentToken("h1"))), 403);
  EXPECT_EQ(controller_->policyVersion(), version);
  Json hosts = service_->call([](Controller& c) { return c.hostsJson(); });
  EXPECT_EQ(hosts["hosts"].size(), 2u);
  for (const auto& h : hosts["hosts"]) EXPECT_NE(h["state"], "maintenance");
}

// Pins: h1's token cannot speak for h2 — not on h2's path, not with
// "host": "h2" in a heartbeat on its own path, not for h2's events or
// assignments: 403 JSON, nothing stored; on its own path it is served.
TEST_F(ApiAuthTest, HostTokenSpeaksOnlyForItsHost) {
  start(false);
  const auto h1 = bearer(agentToken("h1"));
  expectJsonError(agent_->Post("/api/v1/agents/h2/heartbeat", h1, heartbeatBody("h2"), "application/json"), 403);
  expectJsonError(agent_->Post("/api/v1/agents/h1/heartbeat", h1, heartbeatBody("h2"), "application/json"), 403);
  expectJsonError(agent_->Post("/api/v1/agents/h2/events", h1, R"({"kind":"vm.crashed","vm":"x"})",
                               "application/json"),
                  403);
  expectJsonError(agent_->Post("/api/v1/agents/h1/events", h1, R"({"host":"h2","kind":"vm.crashed","vm":"x"})",
                               "application/json"),
                  403);
  expectJsonError(agent_->Get("/api/v1/agents/h2/assignments?after=0&wait_ms=0", h1), 403);
  EXPECT_EQ(lastHeartbeat("h2"), 0);
  EXPECT_EQ(lastHeartbeat("h1"), 0);
  // The operator's token is not an agent's either.
  expectJsonError(agent_->Post("/api/v1/agents/h2/heartbeat", bearer(kOperator), heartbeatBody("h2"),
                               "application/json"),
                  403);
  EXPECT_EQ(lastHeartbeat("h2"), 0);

  auto ok = agent_->Post("/api/v1/agents/h1/heartbeat", h1, heartbeatBody("h1"), "application/json");
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200) << ok->body;
  EXPECT_GT(lastHeartbeat("h1"), 0);
  auto set = agent_->Get("/api/v1/agents/h1/assignments?after=0&wait_ms=0", h1);
  ASSERT_TRUE(set);
  EXPECT_EQ(set->status, 200) << set->body;
}

// Pins: a viewer reads everything but changes nothing (403 JSON); the
// dashboard's token check says 403 with its role.
TEST_F(ApiAuthTest, ViewerReadsButCannotMutate) {
  start(false);
  const auto viewer = bearer(kViewer);
  for (const char* path : {"/api/v1/cluster", "/api/v1/hosts", "/api/v1/tiers", "/api/v1/vms", "/api/v1/events",
                           "/api/v1/incidents", "/metrics"}) {
    auto r = client_->Get(path, viewer);
    ASSERT_TRUE(r) << path;
    EXPECT_EQ(r->status, 200) << path;
  }
  const int64_t version = controller_->policyVersion();
  Json body{{"files", std::vector<PolicyFile>{{"more.yaml", "hosts:\n  - { name: h3 }\n"}}}};
  expectJsonError(client_->Post("/api/v1/policies", viewer, body.dump(), "application/json"), 403);
  expectJsonError(client_->Post("/api/v1/hosts/h1/drain", viewer, "", "application/json"), 403);
  auto check = client_->Post("/api/v1/auth/check", viewer, "", "application/json");
  expectJsonError(check, 403);
  EXPECT_EQ((*parseJson(check->body))["role"], "viewer");
  EXPECT_EQ(controller_->policyVersion(), version);
  auto op = client_->Post("/api/v1/auth/check", bearer(kOperator), "", "application/json");
  ASSERT_TRUE(op);
  EXPECT_EQ(op->status, 204);
}

// Pins: without --public-read every read and the event stream need a token
// (401 JSON with WWW-Authenticate: Bearer); the dashboard's files do not.
TEST_F(ApiAuthTest, ReadsNeedTokenUnlessPublicRead) {
  start(false);
  for (const char* path : {"/api/v1/cluster", "/api/v1/hosts", "/api/v1/tiers", "/api/v1/vms", "/api/v1/vms/x",
                           "/api/v1/events", "/api/v1/incidents", "/metrics", "/api/v1/tiers/web/endpoints"}) {
    auto r = client_->Get(path);
    expectJsonError(r, 401);
    EXPECT_EQ(r->get_header_value("WWW-Authenticate"), "Bearer") << path;
  }
  std::string body;
  EXPECT_EQ(rawStatus(server_->port(), "GET /api/v1/events/stream HTTP/1.1\r\nHost: x\r\n\r\n", &body), 401);
  EXPECT_TRUE(parseJson(body).isOk()) << body;
  EXPECT_EQ(rawStatus(server_->port(), "GET /api/v1/events/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
                                           agentToken("h1") + "\r\n\r\n"),
            403);
  EXPECT_EQ(rawStatus(server_->port(), std::string("GET /api/v1/events/stream HTTP/1.1\r\nHost: x\r\n") +
                                           "Authorization: Bearer " + kViewer + "\r\n\r\n"),
            200);
  auto page = client_->Get("/");
  ASSERT_TRUE(page);
  EXPECT_EQ(page->status, 200);
  // Guests poll tier endpoints on the agents' listener without a token.
  auto endpoints = agent_->Get("/api/v1/tiers/web/endpoints");
  ASSERT_TRUE(endpoints);
  EXPECT_EQ(endpoints->status, 404) << endpoints->body;  // no such tier: but not 401
}

// Pins: with --public-read reads and the stream need no token, changes still
// do, and a token that is sent must be valid (401 for a wrong one).
TEST_F(ApiAuthTest, PublicReadOpensReadsOnly) {
  start(true);
  auto r = client_->Get("/api/v1/cluster");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(rawStatus(server_->port(), "GET /api/v1/events/stream HTTP/1.1\r\nHost: x\r\n\r\n"), 200);
  expectJsonError(client_->Get("/api/v1/cluster", bearer("wrong-token-0123456789")), 401);
  expectJsonError(client_->Post("/api/v1/hosts/h1/drain", "", "application/json"), 401);
}

// Pins: the Bearer scheme is matched in any case (RFC 7235): "bearer",
// "BEARER", "bEaReR"; other schemes are refused.
TEST_F(ApiAuthTest, BearerSchemeInAnyCase) {
  start(false);
  for (const char* scheme : {"Bearer", "bearer", "BEARER", "bEaReR"}) {
    auto r = client_->Post("/api/v1/auth/check", bearer(kOperator, scheme), "", "application/json");
    ASSERT_TRUE(r) << scheme;
    EXPECT_EQ(r->status, 204) << scheme;
    auto hb = agent_->Post("/api/v1/agents/h1/heartbeat", bearer(agentToken("h1"), scheme), heartbeatBody("h1"),
                           "application/json");
    ASSERT_TRUE(hb) << scheme;
    EXPECT_EQ(hb->status, 200) << scheme << " " << hb->body;
  }
  expectJsonError(client_->Post("/api/v1/auth/check", bearer(kOperator, "Basic"), "", "application/json"), 401);
  expectJsonError(client_->Post("/api/v1/auth/check", bearer(kOperator, "Bearerx"), "", "application/json"), 401);
}

// Pins: a token is compared over its exact bytes: the right token followed
// by a NUL (or anything else) is refused, on the API, the agents' listener
// and the stream (httplib's get_header_value() cut the header at the NUL:
// "<token>\0junk" was accepted as the token), and so is a second
// Authorization header.
TEST_F(ApiAuthTest, TokenWithNulSuffixRefused) {
  start(false);
  const std::string nul(1, '\0');
  for (const std::string& suffix : {nul, nul + "x", std::string("x")}) {
    std::string body;
    int status = rawStatus(server_->port(), "POST /api/v1/auth/check HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
                                                std::string(kOperator) + suffix +
                                                "\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                           &body);
    EXPECT_EQ(status, 401) << body;
    EXPECT_TRUE(parseJson(body).isOk()) << body;
    status = rawStatus(server_->port(), "GET /api/v1/events/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
                                            std::string(kViewer) + suffix + "\r\n\r\n");
    EXPECT_EQ(status, 401);
    status = rawStatus(server_->agentPort(),
                       "POST /api/v1/agents/h1/heartbeat HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
                           agentToken("h1") + suffix + "\r\nContent-Type: application/json\r\nContent-Length: " +
                           std::to_string(heartbeatBody("h1").size()) + "\r\nConnection: close\r\n\r\n" +
                           heartbeatBody("h1"));
    EXPECT_EQ(status, 401);
  }
  EXPECT_EQ(lastHeartbeat("h1"), 0);
  std::string body;
  EXPECT_EQ(rawStatus(server_->port(), "POST /api/v1/auth/check HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
                                           std::string(kOperator) + "\r\nAuthorization: Bearer wrong\r\n"
                                           "Content-Length: 0\r\nConnection: close\r\n\r\n",
                      &body),
            401)
      << body;
}

}  // namespace
}  // namespace tw
