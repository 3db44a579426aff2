// ApiClient and HttpControllerLink against a real httplib::Server on
// 127.0.0.1 (ephemeral port, its own thread).
#include "tw/http_client.h"

#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>

#include "tw/json.h"

namespace tw {
namespace {

using std::chrono::milliseconds;

// A one-shot gate a handler waits on until the test opens it (or a deadline
// passes, so that a broken client cannot hang the suite).
class Gate {
 public:
  void open() {
    std::lock_guard<std::mutex> lock(mu_);
    open_ = true;
    cv_.notify_all();
  }
  bool waitOpen(milliseconds deadline) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, deadline, [this] { return open_; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = false;  // GUARDED_BY(mu_)
};

class HttpClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    port_ = server_.bind_to_any_port("127.0.0.1");
    ASSERT_GT(port_, 0);
  }

  // REQUIRES: handlers registered. The socket already listens (bind_to_any_port),
  // so requests made before the loop runs wait in the backlog.
  void start() {
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (!server_.is_running() && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::yield();
    }
    ASSERT_TRUE(server_.is_running());
  }

  void TearDown() override {
    server_.stop();
    if (thread_.joinable()) thread_.join();
  }

  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }

  ApiClientOptions options(const std::string& token = "") const {
    ApiClientOptions o;
    o.base_url = url();
    o.token = token;
    o.connect_timeout_ms = 2000;
    o.read_timeout_ms = 5000;
    return o;
  }

  static void answerJson(httplib::Response& res, int status, const Json& body) {
    res.status = status;
    res.set_content(body.dump(), "application/json");
  }

  httplib::Server server_;
  std::thread thread_;
  int port_ = 0;
};

// Pins: each HTTP status maps to its Code, and the message is the server's
// "error" text.
TEST_F(HttpClientTest, MapsStatusCodesAndErrorText) {
  server_.Get(R"(/status/(\d+))", [](const httplib::Request& req, httplib::Response& res) {
    int code = std::stoi(req.matches[1].str());
    answerJson(res, code, Json{{"error", "answer " + std::to_string(code)}});
  });
  start();
  ApiClient api(options());
  const std::pair<int, Code> cases[] = {
      {400, Code::kInvalidArgument},    {401, Code::kPermissionDenied}, {404, Code::kNotFound},
      {409, Code::kFailedPrecondition}, {503, Code::kUnavailable},      {500, Code::kInternal},
      {418, Code::kInternal},
  };
  for (const auto& [http, code] : cases) {
    Result<Json> r = api.get("/status/" + std::to_string(http));
    ASSERT_FALSE(r.isOk()) << http;
    EXPECT_EQ(r.status().code(), code) << http;
    EXPECT_EQ(r.status().message(), "answer " + std::to_string(http));
    EXPECT_FALSE(r.status().where().has_value());
  }
}

// Pins: a 400 with file/line/column puts them into the Status's SourceLocation.
TEST_F(HttpClientTest, PolicyErrorCarriesFileLineColumn) {
  server_.Post("/api/v1/policies", [](const httplib::Request&, httplib::Response& res) {
    answerJson(
        res, 400,
        Json{{"error", "expected an integer"}, {"file", "demo.yaml"}, {"line", 3}, {"column", 7}});
  });
  start();
  ApiClient api(options("t"));
  Result<Json> r = api.post("/api/v1/policies", Json{{"files", Json::array()}});
  ASSERT_FALSE(r.isOk());
  EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
  ASSERT_TRUE(r.status().where().has_value());
  EXPECT_EQ(r.status().where()->file, "demo.yaml");
  EXPECT_EQ(r.status().where()->line, 3);
  EXPECT_EQ(r.status().where()->column, 7);
  EXPECT_EQ(r.status().toString(), "demo.yaml:3:7: expected an integer");
}

// Pins: an error without a JSON body still says what failed, and a 2xx body
// that is not JSON is an internal error, not a crash.
TEST_F(HttpClientTest, NonJsonBodies) {
  server_.Get("/proxy", [](const httplib::Request&, httplib::Response& res) {
    res.status = 502;
    res.set_content("upstream went away\n<html>", "text/plain");
  });
  server_.Get("/html", [](const httplib::Request&, httplib::Response& res) {
    res.set_content("<html>hello</html>", "text/html");
  });
  start();
  ApiClient api(options());
  Result<Json> r = api.get("/proxy");
  ASSERT_FALSE(r.isOk());
  EXPECT_EQ(r.status().code(), Code::kInternal);
  EXPECT_EQ(r.status().message(), "GET /proxy: HTTP 502 bad gateway: upstream went away");
  r = api.get("/html");
  ASSERT_FALSE(r.isOk());
  EXPECT_EQ(r.status().code(), Code::kInternal);
  EXPECT_NE(r.status().message().find("not JSON"), std::string::npos);
}

// Pins: the bearer token goes in the Authorization header (and no header
// without a token); a POST body arrives as JSON; an empty answer is null.
TEST_F(HttpClientTest, SendsBearerTokenAndJsonBody) {
  server_.Post("/echo", [](const httplib::Request& req, httplib::Response& res) {
    answerJson(res, 200,
               Json{{"auth", req.get_header_value("Authorization")},
                    {"has_auth", req.has_header("Authorization")},
                    {"type", req.get_header_value("Content-Type")},
                    {"body", Json::parse(req.body, nullptr, false)}});
  });
  server_.Post("/empty", [](const httplib::Request& req, httplib::Response& res) {
    res.status = req.body.empty() ? 204 : 400;
  });
  start();
  ApiClient with_token(options("s3cret"));
  Result<Json> r = with_token.post("/echo", Json{{"to", "h2"}});
  ASSERT_TRUE(r.isOk()) << r.status().toString();
  EXPECT_EQ((*r)["auth"], "Bearer s3cret");
  EXPECT_EQ((*r)["type"], "application/json");
  EXPECT_EQ((*r)["body"], (Json{{"to", "h2"}}));

  ApiClient without(options());
  r = without.post("/echo", Json::object());
  ASSERT_TRUE(r.isOk());
  EXPECT_EQ((*r)["has_auth"], false);

  r = without.post("/empty", Json());
  ASSERT_TRUE(r.isOk()) << r.status().toString();
  EXPECT_TRUE(r->is_null());
}

// Pins: a base URL path prefix is put before every request path.
TEST_F(HttpClientTest, BaseUrlPrefix) {
  server_.Get("/tw/api/v1/vms", [](const httplib::Request&, httplib::Response& res) {
    answerJson(res, 200, Json{{"vms", Json::array()}});
  });
  start();
  ApiClientOptions o = options();
  o.base_url = url() + "/tw/";
  ApiClient api(o);
  Result<Json> r = api.get("/api/v1/vms");
  ASSERT_TRUE(r.isOk()) << r.status().toString();
  EXPECT_TRUE((*r)["vms"].is_array());
}

// Pins: a server that does not answer within the read timeout is kUnavailable.
TEST_F(HttpClientTest, ReadTimeoutIsUnavailable) {
  Gate gate;
  server_.Get("/slow", [&gate](const httplib::Request&, httplib::Response& res) {
    gate.waitOpen(milliseconds(5000));
    answerJson(res, 200, Json::object());
  });
  start();
  ApiClientOptions o = options();
  o.read_timeout_ms = 200;
  ApiClient api(o);
  Result<Json> r = api.get("/slow");
  gate.open();
  ASSERT_FALSE(r.isOk());
  EXPECT_EQ(r.status().code(), Code::kUnavailable);
  EXPECT_NE(r.status().message().find("no answer within 200 ms"), std::string::npos)
      << r.status().message();
}

// Pins: nothing listening is kUnavailable with the documented message. The
// port is held by a bound socket that does not listen, so it refuses for sure.
TEST(HttpClientRefusedTest, ConnectionRefusedIsUnavailable) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  socklen_t len = sizeof(addr);
  ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  std::string base = "http://127.0.0.1:" + std::to_string(ntohs(addr.sin_port));

  ApiClientOptions o;
  o.base_url = base;
  ApiClient api(o);
  Result<Json> r = api.get("/api/v1/cluster");
  ::close(fd);
  ASSERT_FALSE(r.isOk());
  EXPECT_EQ(r.status().code(), Code::kUnavailable);
  EXPECT_EQ(r.status().message(), "controller unreachable: cannot reach it at " + base + ": connection refused");
}

// Pins: base URLs are checked up front; a client with a bad one fails every
// call with kInvalidArgument instead of connecting somewhere odd.
TEST(HttpClientUrlTest, BadBaseUrls) {
  EXPECT_TRUE(checkBaseUrl("http://127.0.0.1:7800").isOk());
  EXPECT_TRUE(checkBaseUrl("https://ctl.example/").isOk());
  EXPECT_TRUE(checkBaseUrl("http://[::1]:7800").isOk());
  for (const char* bad : {"127.0.0.1:7800", "ftp://x", "http://", "http://h:99999", "http://h:port",
                          "http://[::1", "http://u@h"}) {
    EXPECT_EQ(checkBaseUrl(bad).code(), Code::kInvalidArgument) << bad;
  }
  ApiClientOptions o;
  o.base_url = "localhost:7800";
  ApiClient api(o);
  Result<Json> r = api.get("/api/v1/vms");
  ASSERT_FALSE(r.isOk());
  EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
  EXPECT_NE(r.status().message().find("'localhost:7800'"), std::string::npos);
}

// Pins: path segments are percent-encoded except unreserved characters.
TEST(HttpClientUrlTest, UrlEncode) {
  EXPECT_EQ(urlEncode("web-1.a_b~"), "web-1.a_b~");
  EXPECT_EQ(urlEncode("a b/c?d%"), "a%20b%2Fc%3Fd%25");
}

// ------------------------------------------------------- HttpControllerLink ---

Heartbeat sampleHeartbeat(const std::string& host) {
  Heartbeat hb;
  hb.host = host;
  hb.agent_id = "agent-42";
  hb.seq = 17;
  hb.capacity.cpus = 4;
  hb.capacity.memory_mib = 8192;
  hb.assignments_version = 3;
  DomainReport d;
  d.vm = "db-1";
  d.tier = "db";
  d.epoch = 2;
  d.state = DomainState::kRunning;
  d.health = Health::kHealthy;
  hb.domains.push_back(d);
  return hb;
}

AssignmentSet sampleSet(const std::string& host, int64_t version) {
  AssignmentSet set;
  set.host = host;
  set.version = version;
  set.lease_ms = 5000;
  set.heartbeat_interval_ms = 1000;
  Assignment a;
  a.vm = "db-1";
  a.tier = "db";
  a.epoch = 2;
  a.image = "debian-db";
  a.memory_mib = 512;
  set.assignments.push_back(a);
  return set;
}

// Pins: a heartbeat is POSTed with the token to the host's (encoded) path, the
// server can decode it, and the answer decodes into an AssignmentSet.
TEST_F(HttpClientTest, LinkHeartbeatRoundTrip) {
  std::mutex mu;
  Heartbeat seen;
  std::string seen_host, seen_target, seen_auth;
  server_.Post(R"(/api/v1/agents/([^/]+)/heartbeat)",
               [&](const httplib::Request& req, httplib::Response& res) {
                 Result<Heartbeat> hb = decode<Heartbeat>(Json::parse(req.body));
                 if (!hb.isOk()) return answerJson(res, 400, Json{{"error", "bad heartbeat"}});
                 std::lock_guard<std::mutex> lock(mu);
                 seen = *hb;
                 seen_host = req.matches[1].str();
                 seen_target = req.target;
                 seen_auth = req.get_header_value("Authorization");
                 answerJson(res, 200, Json(sampleSet(hb->host, 4)));
               });
  start();
  HttpControllerLink link(options("agent-token"));
  Result<AssignmentSet> set = link.heartbeat(sampleHeartbeat("rack 1"));
  ASSERT_TRUE(set.isOk()) << set.status().toString();
  EXPECT_EQ(set->host, "rack 1");
  EXPECT_EQ(set->version, 4);
  EXPECT_EQ(set->lease_ms, 5000);
  ASSERT_EQ(set->assignments.size(), 1u);
  EXPECT_EQ(set->assignments[0].vm, "db-1");
  EXPECT_EQ(set->assignments[0].memory_mib, 512);

  std::lock_guard<std::mutex> lock(mu);
  EXPECT_EQ(seen_target, "/api/v1/agents/rack%201/heartbeat");
  EXPECT_EQ(seen_host, "rack 1");
  EXPECT_EQ(seen_auth, "Bearer agent-token");
  EXPECT_EQ(seen.agent_id, "agent-42");
  EXPECT_EQ(seen.seq, 17);
  ASSERT_EQ(seen.domains.size(), 1u);
  EXPECT_EQ(seen.domains[0].state, DomainState::kRunning);
}

// Pins: heartbeat errors keep their codes (404 unknown host), an answer that is
// not an AssignmentSet is kInternal, and sendEvent accepts 204.
TEST_F(HttpClientTest, LinkErrorsAndEvents) {
  server_.Post(R"(/api/v1/agents/ghost/heartbeat)",
               [](const httplib::Request&, httplib::Response& res) {
                 answerJson(res, 404, Json{{"error", "host 'ghost' is not declared"}});
               });
  server_.Post(R"(/api/v1/agents/odd/heartbeat)",
               [](const httplib::Request&, httplib::Response& res) {
                 answerJson(res, 200, Json{{"version", "not a number"}});
               });
  std::mutex mu;
  Json event_seen;
  server_.Post(R"(/api/v1/agents/h1/events)",
               [&](const httplib::Request& req, httplib::Response& res) {
                 std::lock_guard<std::mutex> lock(mu);
                 event_seen = Json::parse(req.body, nullptr, false);
                 res.status = 204;
               });
  start();
  HttpControllerLink link(options("t"));
  Result<AssignmentSet> r = link.heartbeat(sampleHeartbeat("ghost"));
  ASSERT_FALSE(r.isOk());
  EXPECT_EQ(r.status().code(), Code::kNotFound);
  EXPECT_EQ(r.status().message(), "host 'ghost' is not declared");

  r = link.heartbeat(sampleHeartbeat("odd"));
  ASSERT_FALSE(r.isOk());
  EXPECT_EQ(r.status().code(), Code::kInternal);

  AgentEvent event;
  event.host = "h1";
  event.vm = "db-1";
  event.kind = "vm.crashed";
  event.message = "domain crashed";
  Status s = link.sendEvent(event);
  ASSERT_TRUE(s.isOk()) << s.toString();
  std::lock_guard<std::mutex> lock(mu);
  EXPECT_EQ(event_seen["kind"], "vm.crashed");
  EXPECT_EQ(event_seen["vm"], "db-1");
}

// Pins: a long poll names the peer list its last answer carried
// (&peers_digest=), none before the first; an answer that leaves the list out
// does not change what it names, one that carries another list does.
TEST_F(HttpClientTest, LinkLongPollNamesThePeerListItHolds) {
  std::mutex mu;
  std::vector<std::string> named;  // the peers_digest of each poll ("-" = none)
  int polls = 0;
  server_.Get(R"(/api/v1/agents/([^/]+)/assignments)",
              [&](const httplib::Request& req, httplib::Response& res) {
                AssignmentSet set = sampleSet(req.matches[1].str(), 6);
                std::lock_guard<std::mutex> lock(mu);
                named.push_back(req.has_param("peers_digest") ? req.get_param_value("peers_digest") : "-");
                ++polls;
                // 1: list A; 2: A again, left out; 3: list B.
                set.peers_digest = polls < 3 ? "aaaa" : "bbbb";
                if (polls == 2) {
                  set.peers_omitted = true;
                } else {
                  set.peers.push_back(PeerInfo{"h2", "10.0.0.2:7803"});
                }
                answerJson(res, 200, Json(set));
              });
  start();
  HttpControllerLink link(options("t"));
  for (int i = 0; i < 4; ++i) {
    Result<AssignmentSet> polled = link.waitAssignments("h1", 0, 0);
    ASSERT_TRUE(polled.isOk()) << polled.status().toString();
  }
  std::lock_guard<std::mutex> lock(mu);
  EXPECT_EQ(named, (std::vector<std::string>{"-", "aaaa", "aaaa", "bbbb"}));
}

// Pins: waitAssignments sends after/wait_ms, returns when the server answers,
// waits longer than the plain read timeout, and does not block heartbeats made
// meanwhile from another thread.
TEST_F(HttpClientTest, LinkWaitAssignmentsReturnsWhenServerAnswers) {
  Gate poll_arrived;
  Gate release_poll;
  std::mutex mu;
  std::string after, wait_ms;
  server_.Get(R"(/api/v1/agents/([^/]+)/assignments)",
              [&](const httplib::Request& req, httplib::Response& res) {
                {
                  std::lock_guard<std::mutex> lock(mu);
                  after = req.get_param_value("after");
                  wait_ms = req.get_param_value("wait_ms");
                }
                poll_arrived.open();
                release_poll.waitOpen(milliseconds(3000));
                answerJson(res, 200, Json(sampleSet(req.matches[1].str(), 6)));
              });
  server_.Post(R"(/api/v1/agents/([^/]+)/heartbeat)",
               [](const httplib::Request& req, httplib::Response& res) {
                 answerJson(res, 200, Json(sampleSet(req.matches[1].str(), 5)));
               });
  start();
  ApiClientOptions o = options("t");
  o.read_timeout_ms = 300;  // shorter than the poll is held: the link must add wait_ms
  HttpControllerLink link(o);

  Result<AssignmentSet> polled = internalError("not run");
  std::atomic<bool> poll_returned{false};
  std::thread poller([&] {
    polled = link.waitAssignments("h1", 5, 20000);
    poll_returned = true;
  });
  ASSERT_TRUE(poll_arrived.waitOpen(milliseconds(5000)));

  // The poll is parked in the server; a heartbeat still goes through, before
  // the poll returns (a shared connection would queue it behind the poll).
  Result<AssignmentSet> hb = link.heartbeat(sampleHeartbeat("h1"));
  EXPECT_FALSE(poll_returned);
  ASSERT_TRUE(hb.isOk()) << hb.status().toString();
  EXPECT_EQ(hb->version, 5);

  // Hold the poll past the plain read timeout (what this waits for is time
  // itself), then answer it.
  std::this_thread::sleep_for(milliseconds(500));
  release_poll.open();
  poller.join();
  ASSERT_TRUE(polled.isOk()) << polled.status().toString();
  EXPECT_EQ(polled->version, 6);
  EXPECT_EQ(polled->host, "h1");
  std::lock_guard<std::mutex> lock(mu);
  EXPECT_EQ(after, "5");
  EXPECT_EQ(wait_ms, "20000");
}

}  // namespace
}  // namespace tw
