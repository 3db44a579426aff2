// What the API integration tests share (api_test.cc, api_bad_input_test.cc,
// api_auth_test.cc, heartbeat_paths_test.cc): the test credentials, the server
// options of a demo-like controller, a controller with its ApiServer in this
// process (ApiServerTest), and raw HTTP exchanges that no client library
// re-encodes.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <httplib.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>

#include "controller/api_server.h"
#include "controller/auth.h"
#include "controller/controller.h"
#include "controller/service.h"
#include "tw/clock.h"
#include "tw/store.h"

namespace tw::testing_api {

inline const char* kToken = "0123456789abcdef0123456789abcdef";  // the operator's

// Host h's agent token (controller/auth.h): agent calls speak for h only.
inline std::string agentToken(const std::string& h) { return "agent-" + h + "-0123456789abcdef"; }

// The operator's token, and one agent token for each host these tests use.
// Reads are public (--public-read), as in the demo: auth has tests of its
// own (api_auth_test.cc).
inline ApiServerOptions serverOptions(const std::string& web_dir) {
  ApiServerOptions options{"127.0.0.1", 0, kToken, web_dir};
  CredentialSet credentials;
  credentials.add(Principal{Role::kOperator, ""}, kToken);
  for (const char* h : {"h1", "h2", "h9"}) credentials.add(Principal{Role::kAgent, h}, agentToken(h));
  options.auth = std::make_shared<StaticAuthenticator>(std::move(credentials));
  options.public_read = true;
  return options;
}

// The status and body of a raw HTTP/1.1 exchange: `request` is sent as is
// (exact bytes: an invalid path, a NUL in a header), the answer read until the
// server closes (so send "Connection: close", or a request it refuses).
// status 0: no answer.
struct RawAnswer {
  int status = 0;
  std::string head;
  std::string body;
};

inline RawAnswer rawRequest(int port, const std::string& request) {
  RawAnswer out;
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  timeval tv{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return out;
  }
  size_t sent = 0;
  while (sent < request.size()) {
    ssize_t n = ::send(fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) break;
    sent += static_cast<size_t>(n);
  }
  std::string all;
  char buf[65536];
  ssize_t n;
  while ((n = ::recv(fd, buf, sizeof(buf), 0)) > 0) all.append(buf, static_cast<size_t>(n));
  ::close(fd);
  size_t end = all.find("\r\n\r\n");
  if (all.rfind("HTTP/1.1 ", 0) != 0 || end == std::string::npos) return out;
  out.status = std::stoi(all.substr(9, 3));
  out.head = all.substr(0, end);
  out.body = all.substr(end + 4);
  return out;
}

// A controller on an in-memory store, its service and its ApiServer on
// loopback ports, served by a thread of this process; client_ speaks to the
// API, agent_ to the agents' listener. A fixture derives from it, makes its
// web_dir_ and calls startServer() in SetUp (under ASSERT_NO_FATAL_FAILURE),
// stopServer() in TearDown.
class ApiServerTest : public ::testing::Test {
 protected:
  void startServer(const ApiServerOptions& options) {
    auto s = Store::open(":memory:");
    ASSERT_TRUE(s.isOk());
    store_ = std::move(s).value();
    controller_ = std::make_unique<Controller>(*store_, SystemClock::instance());
    ASSERT_TRUE(controller_->recover().isOk());
    service_ = std::make_unique<ControllerService>(*controller_, 50);
    server_ = std::make_unique<ApiServer>(*service_, options);
    ASSERT_TRUE(server_->bind().isOk());
    service_->start();
    thread_ = std::thread([this] { server_->serve(); });
    client_ = std::make_unique<httplib::Client>("127.0.0.1", server_->port());
    client_->set_read_timeout(10, 0);
    agent_ = std::make_unique<httplib::Client>("127.0.0.1", server_->agentPort());
    agent_->set_read_timeout(10, 0);
  }

  // Stops what startServer() started (nothing when it did not get as far).
  void stopServer() {
    if (!server_) return;
    server_->stop();
    if (thread_.joinable()) thread_.join();
    if (service_) service_->stop();
  }

  std::filesystem::path web_dir_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<Controller> controller_;
  std::unique_ptr<ControllerService> service_;
  std::unique_ptr<ApiServer> server_;
  std::thread thread_;
  std::unique_ptr<httplib::Client> client_;
  std::unique_ptr<httplib::Client> agent_;  // the agents' listener
};

}  // namespace tw::testing_api
