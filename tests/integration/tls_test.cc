// TLS over real sockets (issue #12, section 2 "TLS"; docs/auth.md): the
// controller's listeners serve HTTPS with the certificates that `init` and
// `issue-host` make (controller/pki.h); the agents' listener verifies client
// certificates, and an agent call of host X needs the certificate of X; the
// clients (the agent's link, twctl, a real agent process) verify the
// controller by its CA and name; a client that connects and sends no
// ClientHello holds no thread past the request deadline.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <thread>

#include "controller/api_server.h"
#include "controller/auth.h"
#include "controller/controller.h"
#include "controller/pki.h"
#include "controller/service.h"
#include "controller/tls.h"
#include "tw/http_client.h"
#include "tw/json.h"
#include "tw/store.h"

extern char** environ;

namespace tw {
namespace {

namespace fs = std::filesystem;

const char* kOperator = "tls-operator-token-0123456789abcdef";
std::string hostToken(const std::string& h) { return "tls-agent-" + h + "-0123456789abcdef"; }

std::string runCommand(const std::string& cmd, int& exit_code) {
  std::string out;
  FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
  if (!p) {
    exit_code = -1;
    return out;
  }
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  int st = ::pclose(p);
  exit_code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return out;
}

// A TCP connection from 127.0.0.1 that sends nothing; -1 on failure.
int silentConnection(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// True when the server closes `fd` (EOF or reset) within `seconds`.
bool closedByServerWithin(int fd, int seconds) {
  timeval tv{seconds, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  char buf[256];
  for (;;) {
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n == 0) return true;
    if (n < 0) return errno == ECONNRESET;
    // An alert or a refusal: read on until the close.
  }
}

class TlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("tw-tls-" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "web");
    std::ofstream(dir_ / "web" / "index.html") << "<!doctype html><title>tierwarden</title>";
    // The cluster's PKI as `init --san 127.0.0.1 --san tw-test.invalid` and
    // `issue-host` make it; and a second, unrelated one.
    paths_ = std::make_unique<TlsPaths>((dir_ / "state").string());
    ASSERT_TRUE(initPki(*paths_, {"127.0.0.1", "tw-test.invalid"}).isOk());
    for (const char* h : {"h1", "h2"}) {
      fs::create_directories(dir_ / h);
      auto written = writeHostCert(*paths_, h, (dir_ / h).string());
      ASSERT_TRUE(written.isOk() && *written) << written.status().toString();
      std::ofstream(dir_ / h / "token") << hostToken(h) << "\n";
    }
    TlsPaths other((dir_ / "other").string());
    ASSERT_TRUE(initPki(other, {"127.0.0.1"}).isOk());
    other_ca_ = other.ca_cert;
    fs::create_directories(dir_ / "rogue-h1");
    auto rogue = writeHostCert(other, "h1", (dir_ / "rogue-h1").string());
    ASSERT_TRUE(rogue.isOk() && *rogue);
  }

  void start(ListenerLimits agent_limits = ApiServerOptions().agent_limits,
             ListenerLimits public_limits = ApiServerOptions().public_limits) {
    auto s = Store::open(":memory:");
    ASSERT_TRUE(s.isOk());
    store_ = std::move(s).value();
    controller_ = std::make_unique<Controller>(*store_, SystemClock::instance());
    ASSERT_TRUE(controller_->recover().isOk());
    service_ = std::make_unique<ControllerService>(*controller_, 50);
    ApiServerOptions options{"127.0.0.1", 0, "", (dir_ / "web").string()};
    CredentialSet credentials;
    credentials.add(Principal{Role::kOperator, ""}, kOperator);
    for (const char* h : {"h1", "h2"}) credentials.add(Principal{Role::kAgent, h}, hostToken(h));
    options.auth = std::make_shared<StaticAuthenticator>(std::move(credentials));
    options.agent_limits = agent_limits;
    options.public_limits = public_limits;
    auto public_tls = ServerTls::load({paths_->server_cert, paths_->server_key, ""});
    ASSERT_TRUE(public_tls.isOk()) << public_tls.status().toString();
    auto agent_tls = ServerTls::load({paths_->server_cert, paths_->server_key, paths_->ca_cert});
    ASSERT_TRUE(agent_tls.isOk()) << agent_tls.status().toString();
    options.public_tls = *public_tls;
    options.agent_tls = *agent_tls;
    options.guest_port = 0;
    server_ = std::make_unique<ApiServer>(*service_, options);
    ASSERT_TRUE(server_->bind().isOk());
    service_->start();
    thread_ = std::thread([this] { server_->serve(); });
    ApiClient op(operatorOptions());
    Json body{{"files", std::vector<PolicyFile>{{"hosts.yaml", "hosts:\n  - { name: h1 }\n  - { name: h2 }\n"}}}};
    auto applied = op.post("/api/v1/policies", body);
    ASSERT_TRUE(applied.isOk()) << applied.status().toString();
  }

  void TearDown() override {
    if (server_) {
      service_->releaseWaiters();  // an agent's long poll ends now
      server_->stop();
      thread_.join();
      service_->stop();
    }
    fs::remove_all(dir_);
  }

  std::string publicUrl(const std::string& host = "127.0.0.1") const {
    return "https://" + host + ":" + std::to_string(server_->port());
  }
  std::string agentUrl() const { return "https://127.0.0.1:" + std::to_string(server_->agentPort()); }

  ApiClientOptions operatorOptions() const {
    ApiClientOptions o;
    o.base_url = publicUrl();
    o.token = kOperator;
    o.ca_file = paths_->ca_cert;
    o.read_timeout_ms = 5000;
    return o;
  }

  // The agent's link with `bundle`'s certificate (empty: none) and `token`.
  ApiClientOptions agentOptions(const std::string& bundle, const std::string& token) const {
    ApiClientOptions o;
    o.base_url = agentUrl();
    o.token = token;
    o.ca_file = paths_->ca_cert;
    if (!bundle.empty()) {
      o.cert_file = (dir_ / bundle / "host.pem").string();
      o.key_file = (dir_ / bundle / "host.key").string();
    }
    o.read_timeout_ms = 5000;
    o.connect_timeout_ms = 2000;
    return o;
  }

  Result<AssignmentSet> heartbeat(const ApiClientOptions& o, const std::string& host) {
    HttpControllerLink link(o);
    Heartbeat hb;
    hb.host = host;
    hb.agent_id = "a-" + host;
    hb.capacity = {2, 2048};
    return link.heartbeat(hb);
  }

  int64_t lastHeartbeat(const std::string& host) {
    Json hosts = service_->call([](Controller& c) { return c.hostsJson(); });
    for (const auto& h : hosts["hosts"]) {
      if (h["name"] == host) return h["last_heartbeat_ms"].is_number() ? h["last_heartbeat_ms"].get<int64_t>() : 0;
    }
    return -1;
  }

  fs::path dir_;
  std::unique_ptr<TlsPaths> paths_;
  std::string other_ca_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<Controller> controller_;
  std::unique_ptr<ControllerService> service_;
  std::unique_ptr<ApiServer> server_;
  std::thread thread_;
};

// Pins: an agent with its host's certificate (CN h1, signed by the CA) and
// token heartbeats over mTLS: the link the agent uses, and a real
// tierwarden-agent process started with --bundle (issue-host's files).
TEST_F(TlsTest, AgentWithItsHostCertificateHeartbeatsOverMutualTls) {
  start();
  auto set = heartbeat(agentOptions("h1", hostToken("h1")), "h1");
  ASSERT_TRUE(set.isOk()) << set.status().toString();
  EXPECT_GT(lastHeartbeat("h1"), 0);

  const std::string agent = std::string(TW_BIN_DIR) + "/tierwarden-agent";
  if (!fs::exists(agent)) GTEST_SKIP() << "no " << agent << " (build the tierwarden-agent target)";
  ASSERT_EQ(lastHeartbeat("h2"), 0);
  const std::string bundle = (dir_ / "h2").string();
  const std::string log = (dir_ / "agent-h2.log").string();
  std::vector<std::string> argv = {agent, "--host", "h2", "--libvirt-uri", "test:///default",
                                   "--controller", agentUrl(), "--bundle", bundle,
                                   "--peer-listen", "127.0.0.1:0"};
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  std::vector<char*> args;
  for (auto& a : argv) args.push_back(a.data());
  args.push_back(nullptr);
  pid_t pid = -1;
  ASSERT_EQ(posix_spawn(&pid, args[0], &fa, nullptr, args.data(), environ), 0);
  posix_spawn_file_actions_destroy(&fa);
  bool seen = false;
  for (int i = 0; i < 100 && !seen; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    seen = lastHeartbeat("h2") > 0;
  }
  ::kill(pid, SIGTERM);
  int st = 0;
  ::waitpid(pid, &st, 0);
  std::ifstream in(log);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_TRUE(seen) << "the agent's heartbeats did not arrive; its log:\n" << text;
}

// Pins: without a client certificate, with a certificate from another CA
// (even with CN h1), or with h2's certificate speaking for h1 (with h1's
// token), an agent call is refused — the handshake fails, or 403 JSON — and
// no heartbeat is stored.
TEST_F(TlsTest, AgentCallsNeedTheirOwnHostsCertificate) {
  start();
  auto none = heartbeat(agentOptions("", hostToken("h1")), "h1");
  EXPECT_FALSE(none.isOk());
  EXPECT_EQ(none.status().code(), Code::kUnavailable) << none.status().toString();

  auto rogue = heartbeat(agentOptions("rogue-h1", hostToken("h1")), "h1");
  EXPECT_FALSE(rogue.isOk());
  EXPECT_EQ(rogue.status().code(), Code::kUnavailable) << rogue.status().toString();

  auto other_host = heartbeat(agentOptions("h2", hostToken("h1")), "h1");
  ASSERT_FALSE(other_host.isOk());
  EXPECT_EQ(other_host.status().code(), Code::kForbidden) << other_host.status().toString();
  EXPECT_NE(other_host.status().message().find("client certificate of host 'h2'"), std::string::npos)
      << other_host.status().toString();
  // The same for events and assignments.
  {
    HttpControllerLink link(agentOptions("h2", hostToken("h1")));
    AgentEvent e;
    e.host = "h1";
    e.kind = "test";
    EXPECT_EQ(link.sendEvent(e).code(), Code::kForbidden);
    EXPECT_EQ(link.waitAssignments("h1", 0, 0).status().code(), Code::kForbidden);
  }
  EXPECT_EQ(lastHeartbeat("h1"), 0);

  // Raw: h2's certificate, h1's path and token: a JSON 403.
  httplib::Client raw(agentUrl(), (dir_ / "h2" / "host.pem").string(), (dir_ / "h2" / "host.key").string());
  raw.set_ca_cert_path(paths_->ca_cert);
  raw.enable_server_certificate_verification(true);
  auto r = raw.Post("/api/v1/agents/h1/heartbeat", {{"Authorization", "Bearer " + hostToken("h1")}}, "{}",
                    "application/json");
  ASSERT_TRUE(r) << httplib::to_string(r.error());
  EXPECT_EQ(r->status, 403);
  auto j = parseJson(r->body);
  ASSERT_TRUE(j.isOk() && j->contains("error")) << r->body;
}

// Pins: clients verify the controller: a CA that did not sign its
// certificate, or a name its certificate does not carry (init's --san), is
// refused by the client library and by twctl; the right CA (--ca or TW_CA)
// is accepted, and the dashboard is served over HTTPS.
TEST_F(TlsTest, ClientsRefuseAControllerTheyCannotVerify) {
  start();
  ApiClientOptions o = operatorOptions();
  ASSERT_TRUE(ApiClient(o).get("/api/v1/cluster").isOk());

  o.ca_file = other_ca_;
  auto wrong_ca = ApiClient(o).get("/api/v1/cluster");
  ASSERT_FALSE(wrong_ca.isOk());
  EXPECT_NE(wrong_ca.status().message().find("not signed by the trusted CA"), std::string::npos)
      << wrong_ca.status().toString();

  o.ca_file.clear();  // the system's CAs
  EXPECT_FALSE(ApiClient(o).get("/api/v1/cluster").isOk());

  o = operatorOptions();
  o.base_url = publicUrl("localhost");  // not among the SANs (127.0.0.1, tw-test.invalid)
  auto wrong_name = ApiClient(o).get("/api/v1/cluster");
  ASSERT_FALSE(wrong_name.isOk());
  EXPECT_NE(wrong_name.status().message().find("does not name 'localhost'"), std::string::npos)
      << wrong_name.status().toString();

  httplib::Client browser(publicUrl());
  browser.set_ca_cert_path(paths_->ca_cert);
  browser.enable_server_certificate_verification(true);
  auto page = browser.Get("/");
  ASSERT_TRUE(page) << httplib::to_string(page.error());
  EXPECT_EQ(page->status, 200);
  EXPECT_NE(page->body.find("<title>tierwarden"), std::string::npos);

  const std::string twctl = std::string(TW_BIN_DIR) + "/twctl";
  if (!fs::exists(twctl)) GTEST_SKIP() << "no " << twctl << " (build the twctl target)";
  auto twctlWith = [&](const std::string& env) {
    return "env -u TW_CA -u TW_CONTROLLER TW_CONFIG=/dev/null " + env + " " + twctl + " --controller " +
           publicUrl() + " --token " + kOperator + " ";
  };
  const std::string base = twctlWith("");
  int code = 0;
  std::string out = runCommand(base + "--ca " + paths_->ca_cert + " get hosts", code);
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(out.find("h1"), std::string::npos) << out;
  out = runCommand(twctlWith("TW_CA=" + paths_->ca_cert) + "get hosts", code);
  EXPECT_EQ(code, 0) << out;
  out = runCommand(base + "--ca " + other_ca_ + " get hosts", code);
  EXPECT_NE(code, 0) << out;
  EXPECT_NE(out.find("not signed by the trusted CA"), std::string::npos) << out;
  out = runCommand(base + "get hosts", code);  // no CA: the system's, which never signed it
  EXPECT_NE(code, 0) << out;
}

// Pins: the event stream is served over TLS too, off the request threads
// (GuardedHttpServer diverts it after the handshake).
TEST_F(TlsTest, EventStreamOverTls) {
  start();
  httplib::Client client(publicUrl());
  client.set_ca_cert_path(paths_->ca_cert);
  client.enable_server_certificate_verification(true);
  client.set_read_timeout(5, 0);
  std::string got;
  auto r = client.Get("/api/v1/events/stream", {{"Authorization", std::string("Bearer ") + kOperator}},
                      [&got](const char* data, size_t n) {
                        got.append(data, n);
                        return got.find("event: event") == std::string::npos;  // stop at the first
                      });
  EXPECT_NE(got.find("event: event"), std::string::npos) << got;
  EXPECT_EQ(server_->publicStats().diverted, 1);
}

// Pins: a client that opens TCP to the agents' listener and never sends a
// ClientHello is shut down at the request deadline (1 s here), not held for
// ever; while such clients fill the listener, an agent's heartbeats over
// mTLS are answered (they evict the unauthenticated, silent connections).
TEST_F(TlsTest, SilentTlsClientsDoNotBlockHeartbeats) {
  // 4 threads, at most 3 connections, 1 s to shake hands and send a request.
  start(ListenerLimits{4, 8, 3, 1000, 100, 5, 5000});
  std::vector<int> silent;
  for (int i = 0; i < 3; ++i) {
    int fd = silentConnection(server_->agentPort());
    ASSERT_GE(fd, 0);
    silent.push_back(fd);
  }
  for (int i = 0; i < 3; ++i) {
    auto set = heartbeat(agentOptions("h1", hostToken("h1")), "h1");
    EXPECT_TRUE(set.isOk()) << set.status().toString();
  }
  for (int fd : silent) {
    EXPECT_TRUE(closedByServerWithin(fd, 10)) << "a silent TLS client was held past its deadline";
    ::close(fd);
  }
  // And with none left to evict: a new silent client is closed at its deadline too.
  int fd = silentConnection(server_->agentPort());
  ASSERT_GE(fd, 0);
  EXPECT_TRUE(closedByServerWithin(fd, 10));
  ::close(fd);
  EXPECT_GE(server_->agentStats().tls_failures, 1);
  auto set = heartbeat(agentOptions("h1", hostToken("h1")), "h1");
  EXPECT_TRUE(set.isOk()) << set.status().toString();
}

// Pins: on the agents' listener a connection whose client certificate the
// CA signed counts as authenticated from its handshake: a newer anonymous
// connection that needs room evicts an older anonymous one, not it, and its
// first request, sent afterwards, is served.
TEST_F(TlsTest, CertifiedConnectionIsNotEvictedBeforeItsRequest) {
  start(ListenerLimits{4, 8, 2, 5000, 100, 5, 5000});  // room for 2 connections
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  ASSERT_NE(ctx, nullptr);
  ASSERT_EQ(SSL_CTX_use_certificate_file(ctx, (dir_ / "h1" / "host.pem").c_str(), SSL_FILETYPE_PEM), 1);
  ASSERT_EQ(SSL_CTX_use_PrivateKey_file(ctx, (dir_ / "h1" / "host.key").c_str(), SSL_FILETYPE_PEM), 1);
  ASSERT_EQ(SSL_CTX_load_verify_locations(ctx, paths_->ca_cert.c_str(), nullptr), 1);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  int fd = silentConnection(server_->agentPort());
  ASSERT_GE(fd, 0);
  SSL* ssl = SSL_new(ctx);
  SSL_set_fd(ssl, fd);
  ASSERT_EQ(SSL_connect(ssl), 1);
  auto waitFor = [this](const std::function<bool(const ListenerStats&)>& cond) {
    for (int i = 0; i < 100; ++i) {  // the server's threads cannot tell this test
      if (cond(server_->agentStats())) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  };
  ASSERT_TRUE(waitFor([](const ListenerStats& s) { return s.certified == 1; }));
  int older = silentConnection(server_->agentPort());  // the listener is full now
  ASSERT_TRUE(waitFor([](const ListenerStats& s) { return s.open == 2; }));
  int newer = silentConnection(server_->agentPort());  // evicts one to get in
  ASSERT_TRUE(waitFor([](const ListenerStats& s) { return s.evicted == 1; }));
  EXPECT_TRUE(closedByServerWithin(older, 10));  // the anonymous one went
  Heartbeat hb;
  hb.host = "h1";
  hb.agent_id = "a-h1";
  const std::string body = Json(hb).dump();
  const std::string request = "POST /api/v1/agents/h1/heartbeat HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
                              hostToken("h1") + "\r\nContent-Type: application/json\r\nContent-Length: " +
                              std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
  ASSERT_EQ(SSL_write(ssl, request.data(), static_cast<int>(request.size())), static_cast<int>(request.size()));
  std::string answer;
  char buf[4096];
  int n;
  while ((n = SSL_read(ssl, buf, sizeof buf)) > 0) answer.append(buf, static_cast<size_t>(n));
  EXPECT_EQ(answer.rfind("HTTP/1.1 200", 0), 0u) << answer;
  SSL_free(ssl);
  SSL_CTX_free(ctx);
  ::close(fd);
  ::close(older);
  ::close(newer);
  EXPECT_GT(lastHeartbeat("h1"), 0);
}

// Pins: event streams over TLS hold no request thread and no admission slot:
// with 4 threads and room for 3 connections on the public listener, 8 open
// TLS streams still leave it answering requests.
TEST_F(TlsTest, TlsEventStreamsHoldNoRequestThread) {
  start(ApiServerOptions().agent_limits, ListenerLimits{4, 16, 3, 5000, 1, 5, 5000});
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  ASSERT_NE(ctx, nullptr);
  ASSERT_EQ(SSL_CTX_load_verify_locations(ctx, paths_->ca_cert.c_str(), nullptr), 1);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  std::vector<std::pair<int, SSL*>> streams;
  const std::string request = std::string("GET /api/v1/events/stream HTTP/1.1\r\nHost: x\r\n") +
                              "Authorization: Bearer " + kOperator + "\r\n\r\n";
  for (int i = 0; i < 8; ++i) {
    int fd = silentConnection(server_->port());
    ASSERT_GE(fd, 0);
    SSL* ssl = SSL_new(ctx);
    SSL_set_fd(ssl, fd);
    streams.emplace_back(fd, ssl);
    ASSERT_EQ(SSL_connect(ssl), 1) << "stream " << i;
    ASSERT_EQ(SSL_write(ssl, request.data(), static_cast<int>(request.size())), static_cast<int>(request.size()));
    std::string head;
    char buf[1024];
    while (head.find("\r\n\r\n") == std::string::npos) {
      int n = SSL_read(ssl, buf, sizeof buf);
      ASSERT_GT(n, 0) << "stream " << i << ": " << head;
      head.append(buf, static_cast<size_t>(n));
    }
    ASSERT_EQ(head.rfind("HTTP/1.1 200", 0), 0u) << head;
  }
  EXPECT_EQ(server_->eventStreams(), 8);
  auto cluster = ApiClient(operatorOptions()).get("/api/v1/cluster");
  EXPECT_TRUE(cluster.isOk()) << cluster.status().toString();
  for (auto& [fd, ssl] : streams) {
    SSL_free(ssl);
    ::close(fd);
  }
  SSL_CTX_free(ctx);
}

// Pins: the guests' listener serves tier endpoints over plain HTTP without a
// token or certificate (balancer VMs hold neither), and nothing else.
TEST_F(TlsTest, GuestsListenerServesEndpointsOnly) {
  start();
  ASSERT_GT(server_->guestPort(), 0);
  httplib::Client guest("127.0.0.1", server_->guestPort());
  auto r = guest.Get("/api/v1/tiers/none/endpoints");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 404) << r->body;  // no such tier, but the route answers
  EXPECT_NE(r->body.find("error"), std::string::npos);
  auto hb = guest.Post("/api/v1/agents/h1/heartbeat", {{"Authorization", "Bearer " + hostToken("h1")}}, "{}",
                       "application/json");
  ASSERT_TRUE(hb);
  EXPECT_EQ(hb->status, 404);
  auto cluster = guest.Get("/api/v1/cluster", {{"Authorization", std::string("Bearer ") + kOperator}});
  ASSERT_TRUE(cluster);
  EXPECT_EQ(cluster->status, 404);
  EXPECT_EQ(lastHeartbeat("h1"), 0);
}

// Pins: the daemon serves HTTPS by default, so without init's certificate it
// refuses to start and says what to do (init, or --insecure-http).
TEST(TlsDaemonTest, RefusesToStartWithoutACertificate) {
  const std::string bin = std::string(TW_BIN_DIR) + "/tierwarden-controller";
  if (!fs::exists(bin)) GTEST_SKIP() << "no " << bin;
  const fs::path dir = fs::temp_directory_path() / ("tw-tls-nocert-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  int code = 0;
  std::string out = runCommand(bin + " --state-dir " + dir.string() + " --listen 127.0.0.1:0", code);
  EXPECT_EQ(code, 1) << out;
  EXPECT_NE(out.find("no TLS certificate " + dir.string() + "/tls/controller.pem: run 'tierwarden-controller init"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("--insecure-http"), std::string::npos) << out;
  fs::remove_all(dir);
}

}  // namespace
}  // namespace tw
