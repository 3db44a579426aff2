// What the API integration tests share (api_test.cc, api_bad_input_test.cc,
// api_auth_test.cc): the test credentials, the server options of a demo-like
// controller, and raw HTTP exchanges that no client library re-encodes.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cstdint>
#include <memory>
#include <string>

#include "controller/api_server.h"
#include "controller/auth.h"

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

}  // namespace tw::testing_api
