// The REST API over a real HTTP server (cpp-httplib) and real SQLite: status
// codes, auth, JSON errors with file:line:column, static files confined to web/.
#include <gtest/gtest.h>
#include <httplib.h>

#include <sys/wait.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <thread>
#include <tuple>
#include <utility>

#include "controller/api_server.h"
#include "api_fixture.h"
#include "controller/controller.h"
#include "controller/service.h"
#include "tw/json.h"
#include "tw/store.h"

namespace tw {
namespace {

using namespace testing_api;  // NOLINT: the shared test credentials

const char* kHosts = R"(hosts:
  - { name: h1, uri: "test:///default" }
  - { name: h2, uri: "test:///default" }
)";
const char* kTiers = R"(tiers:
  - { name: web, image: tiny-web, replicas: 2 }
)";

class ApiTest : public ApiServerTest {
 protected:
  void SetUp() override {
    namespace fs = std::filesystem;
    web_dir_ = fs::temp_directory_path() / ("tw-web-" + std::to_string(::getpid()));
    fs::create_directories(web_dir_ / "css");
    std::ofstream(web_dir_ / "index.html") << "<!doctype html><title>tierwarden</title>";
    std::ofstream(web_dir_ / "css" / "app.css") << "body{}";
    std::ofstream(web_dir_.parent_path() / ("tw-secret-" + std::to_string(::getpid()))) << "TOPSECRET-CONTENT";
    ASSERT_NO_FATAL_FAILURE(startServer(serverOptions(web_dir_.string())));
  }

  void TearDown() override {
    stopServer();
    std::filesystem::remove_all(web_dir_);
    std::filesystem::remove(web_dir_.parent_path() / ("tw-secret-" + std::to_string(::getpid())));
  }

  httplib::Headers auth() { return {{"Authorization", std::string("Bearer ") + kToken}}; }
  httplib::Headers agentAuth(const std::string& h) { return {{"Authorization", "Bearer " + agentToken(h)}}; }

  // GET path: {status, body}; {0, ""} (and a failure) when no answer came.
  std::pair<int, std::string> get(const std::string& path) {
    auto r = client_->Get(path.c_str());
    EXPECT_TRUE(r) << path;
    return r ? std::make_pair(r->status, r->body) : std::make_pair(0, std::string());
  }

  httplib::Result applyFiles(const std::vector<PolicyFile>& files, bool dry = false) {
    Json body{{"files", files}};
    return client_->Post(dry ? "/api/v1/policies?dry_run=1" : "/api/v1/policies", auth(), body.dump(),
                         "application/json");
  }
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
  r = agent_->Post("/api/v1/agents/h1/heartbeat", R"({"host":"h1"})", "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 401);
  r = agent_->Get("/api/v1/agents/h1/assignments");
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
  r = agent_->Post("/api/v1/agents/h1/heartbeat", agentAuth("h1"), R"({"nohost": 1})", "application/json");
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
  r = agent_->Post("/api/v1/agents/h9/heartbeat", agentAuth("h9"), R"({"host":"h9"})", "application/json");
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
    auto b = agent_->Post((std::string("/api/v1/agents/") + h + "/heartbeat").c_str(), agentAuth(h), Json(hb).dump(),
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

  auto a = agent_->Get("/api/v1/agents/h1/assignments?after=0&wait_ms=2000", agentAuth("h1"));
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

// Pins: GET /api/v1/tiers/{tier}/endpoints needs no token (a balancer VM
// calls it), answers the documented JSON built from the agents' heartbeats
// (service address, forwarded ports, health), and 404s an unknown tier.
TEST_F(ApiTest, TierEndpointsOpenJsonAnd404) {
  auto r = client_->Get("/api/v1/tiers/web/endpoints");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 404);  // no policy yet
  ASSERT_EQ(applyFiles({{"hosts.yaml", kHosts}})->status, 200);
  auto heartbeat = [&](const std::string& host, const std::vector<DomainReport>& domains) {
    Heartbeat hb;
    hb.host = host;
    hb.agent_id = "a-" + host;
    hb.capacity = {2, 2048};
    hb.service_address = host == "h1" ? "192.0.2.1" : "192.0.2.2";
    hb.domains = domains;
    auto b = agent_->Post(("/api/v1/agents/" + host + "/heartbeat").c_str(), agentAuth(host),
                           Json(hb).dump(), "application/json");
    ASSERT_TRUE(b);
    ASSERT_EQ(b->status, 200) << b->body;
  };
  heartbeat("h1", {});
  heartbeat("h2", {});
  ASSERT_EQ(applyFiles({{"tiers.yaml", R"(tiers:
  - { name: web, image: tiny-web, replicas: 2, ports: [{ name: http, port: 80 }] }
)"}})->status, 200);
  // Each host reports its VM running at the assigned epoch, port 80 forwarded.
  for (const std::string host : {"h1", "h2"}) {
    AssignmentSet set = service_->call([&](Controller& c) { return c.assignmentsFor(host); });
    ASSERT_EQ(set.assignments.size(), 1u) << host;
    DomainReport d;
    d.vm = set.assignments[0].vm;
    d.tier = "web";
    d.epoch = set.assignments[0].epoch;
    d.state = DomainState::kRunning;
    d.health = host == "h1" ? Health::kHealthy : Health::kUnhealthy;
    d.ports = {{80, host == "h1" ? 20001 : 20002}};
    heartbeat(host, {d});
  }
  r = client_->Get("/api/v1/tiers/web/endpoints");  // no Authorization header
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(r->get_header_value("Content-Type"), "application/json");
  auto j = parseJson(r->body);
  ASSERT_TRUE(j.isOk());
  EXPECT_EQ((*j)["tier"], "web");
  ASSERT_EQ((*j)["endpoints"].size(), 2u) << r->body;
  std::string web1_host = service_->call([](Controller& c) { return c.vm("web-1")->host; });
  const Json& e = (*j)["endpoints"][0];
  EXPECT_EQ(e["vm"], "web-1");
  EXPECT_EQ(e["hypervisor"], web1_host);
  EXPECT_EQ(e["host"], web1_host == "h1" ? "192.0.2.1" : "192.0.2.2");
  EXPECT_EQ(e["port"], web1_host == "h1" ? 20001 : 20002);
  EXPECT_EQ(e["name"], "http");
  EXPECT_EQ(e["guest_port"], 80);
  EXPECT_EQ(e["healthy"], web1_host == "h1");
  EXPECT_EQ((*j)["endpoints"][1]["vm"], "web-2");

  r = client_->Get("/api/v1/tiers/nope/endpoints");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 404);
  auto err = parseJson(r->body);
  ASSERT_TRUE(err.isOk());
  EXPECT_NE((*err)["error"].get<std::string>().find("'nope'"), std::string::npos) << r->body;
}

// Runs `command` (stderr joined to stdout); returns its output and exit code.
std::pair<std::string, int> runCommand(const std::string& command) {
  std::string out;
  FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  if (!pipe) return {"popen failed", -1};
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, pipe)) > 0) out.append(buf, n);
  int status = ::pclose(pipe);
  return {out, WIFEXITED(status) ? WEXITSTATUS(status) : -1};
}

// Pins: `twctl get endpoints TIER` prints the endpoints table without a token;
// an unknown tier is one error line and exit 1; a missing tier is exit 2.
// Pins (issue #16): GET /api/v1/vms and /hosts page with ?limit=&after=:
// "next" names the last item while more follow; bad values are 400 JSON;
// twctl get pages through the whole list.
TEST_F(ApiTest, ListsPageWithLimitAndAfter) {
  ASSERT_EQ(applyFiles({{"hosts.yaml", kHosts}})->status, 200);
  ASSERT_EQ(applyFiles({{"tiers.yaml", kTiers}})->status, 200);
  auto [status, body] = get("/api/v1/vms?limit=1");
  ASSERT_EQ(status, 200) << body;
  Json j = *parseJson(body);
  ASSERT_EQ(j["vms"].size(), 1u);
  EXPECT_EQ(j["vms"][0]["name"], "web-1");
  EXPECT_EQ(j["next"], "web-1");
  std::tie(status, body) = get("/api/v1/vms?limit=1&after=web-1");
  j = *parseJson(body);
  ASSERT_EQ(j["vms"].size(), 1u);
  EXPECT_EQ(j["vms"][0]["name"], "web-2");
  EXPECT_FALSE(j.contains("next"));  // the last page
  std::tie(status, body) = get("/api/v1/vms");  // no limit: the whole list
  EXPECT_EQ(parseJson(body)->at("vms").size(), 2u);
  std::tie(status, body) = get("/api/v1/hosts?limit=1&after=h1");
  ASSERT_EQ(status, 200) << body;
  j = *parseJson(body);
  ASSERT_EQ(j["hosts"].size(), 1u);
  EXPECT_EQ(j["hosts"][0]["name"], "h2");
  for (const char* bad : {"/api/v1/vms?limit=0", "/api/v1/vms?limit=-1", "/api/v1/vms?limit=x",
                          "/api/v1/vms?limit=5001", "/api/v1/hosts?after=h9",
                          "/api/v1/vms?after=%2Fetc", "/api/v1/hosts?after="}) {
    std::tie(status, body) = get(bad);
    EXPECT_EQ(status, 400) << bad << ": " << body;
    auto e = parseJson(body);
    ASSERT_TRUE(e.isOk()) << bad << ": " << body;
    EXPECT_TRUE(e->contains("error")) << body;
  }
  std::string twctl = std::string(TW_BIN_DIR) + "/twctl";
  if (!std::filesystem::exists(twctl)) GTEST_SKIP() << "no " << twctl;
  std::string base = "env -u TW_TOKEN -u TW_TOKEN_FILE -u TW_CONFIG -u TW_CONTROLLER HOME=" +
                     web_dir_.string() + " " + twctl +
                     " --controller http://127.0.0.1:" + std::to_string(server_->port());
  auto [out, code] = runCommand(base + " get vms -o json");
  EXPECT_EQ(code, 0) << out;
  EXPECT_EQ(parseJson(out)->at("vms").size(), 2u) << out;
}

// Pins: ?names= gives only the VMs named (missing ones left out), and
// ?tail=N the newest N events with the newest id; bad values are 400 JSON.
TEST_F(ApiTest, ListsNamedVmsAndTheNewestEvents) {
  ASSERT_EQ(applyFiles({{"hosts.yaml", kHosts}})->status, 200);
  ASSERT_EQ(applyFiles({{"tiers.yaml", kTiers}})->status, 200);
  auto [status, body] = get("/api/v1/vms?names=web-2,nope,web-2");
  ASSERT_EQ(status, 200) << body;
  Json j = *parseJson(body);
  ASSERT_EQ(j["vms"].size(), 1u) << body;
  EXPECT_EQ(j["vms"][0]["name"], "web-2");

  std::tie(status, body) = get("/api/v1/events?since=0&limit=5000");
  ASSERT_EQ(status, 200) << body;
  Json all = *parseJson(body);
  ASSERT_GE(all["events"].size(), 2u);
  std::tie(status, body) = get("/api/v1/events?tail=2");
  ASSERT_EQ(status, 200) << body;
  j = *parseJson(body);
  ASSERT_EQ(j["events"].size(), 2u) << body;
  const size_t n = all["events"].size();
  EXPECT_EQ(j["events"][0]["id"], all["events"][n - 2]["id"]);
  EXPECT_EQ(j["events"][1]["id"], all["events"][n - 1]["id"]);
  EXPECT_EQ(j["last_id"], all["last_id"]);

  for (const char* bad : {"/api/v1/vms?names=", "/api/v1/vms?names=a,,b", "/api/v1/vms?names=%2Fetc",
                          "/api/v1/vms?names=web-1&limit=1", "/api/v1/events?tail=0",
                          "/api/v1/events?tail=5001", "/api/v1/events?tail=x", "/api/v1/events?tail=2&since=1"}) {
    std::tie(status, body) = get(bad);
    EXPECT_EQ(status, 400) << bad << ": " << body;
    auto e = parseJson(body);
    ASSERT_TRUE(e.isOk()) << bad << ": " << body;
    EXPECT_TRUE(e->contains("error")) << body;
  }
}

TEST_F(ApiTest, TwctlGetEndpoints) {
  std::string twctl = std::string(TW_BIN_DIR) + "/twctl";
  if (!std::filesystem::exists(twctl)) {
    GTEST_SKIP() << "no " << twctl << " (build the twctl target)";
  }
  ASSERT_EQ(applyFiles({{"hosts.yaml", kHosts}})->status, 200);
  ASSERT_EQ(applyFiles({{"tiers.yaml", kTiers}})->status, 200);
  // Without a token source, so that none is read from the environment or a config file.
  std::string base = "env -u TW_TOKEN -u TW_TOKEN_FILE -u TW_CONFIG -u TW_CONTROLLER HOME=" +
                     web_dir_.string() + " " + twctl +
                     " --controller http://127.0.0.1:" + std::to_string(server_->port());
  auto [out, code] = runCommand(base + " get endpoints web");
  EXPECT_EQ(code, 0) << out;
  EXPECT_EQ(out, "VM   HOST   ADDRESS   PORT   NAME   HEALTHY\n");  // nothing reported yet
  std::tie(out, code) = runCommand(base + " get endpoints nope");
  EXPECT_EQ(code, 1) << out;
  EXPECT_EQ(out, "twctl: no tier named 'nope'\n");
  std::tie(out, code) = runCommand(base + " get endpoints");
  EXPECT_EQ(code, 2) << out;
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1) << out;
  std::tie(out, code) = runCommand(base + " get endpoints web -o json");
  EXPECT_EQ(code, 0) << out;
  auto j = parseJson(out);
  ASSERT_TRUE(j.isOk()) << out;
  EXPECT_EQ((*j)["tier"], "web");
  EXPECT_TRUE((*j)["endpoints"].is_array());
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
